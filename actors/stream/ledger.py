"""Frame accounting for one source: every frame is received, rejected or lost.

Pure logic (no sockets). ``lost`` counts gaps in frame numbers: frame numbers are 0-based
within a series, so a series whose first received frame is 5 has lost frames 0..4. A frame
that arrives late (after it was counted lost) is moved back from ``lost`` to ``received``;
a frame number seen twice in a series is rejected as a duplicate. When a series declares
its length (DECTRIS ``nimages``/``number_of_images``), frames missing at the tail are counted
lost at the series end.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from actors.wire.errors import Reason

logger = logging.getLogger(__name__)

#: how many individual missing frame numbers are remembered per series (late arrivals)
MISSING_MEMORY = 100_000


@dataclass
class SeriesTracker:
    """Gap bookkeeping within one series."""

    series_id: int
    expected: int | None = None  # number of frames the series declares, if any
    next_frame: int = 0
    missing: set[int] = field(default_factory=set)

    def observe(self, frame: int) -> tuple[bool, int]:
        """Register ``frame``; returns (accepted, change in lost count)."""
        if frame >= self.next_frame:
            gap = frame - self.next_frame
            if gap and len(self.missing) + gap <= MISSING_MEMORY:
                self.missing.update(range(self.next_frame, frame))
            self.next_frame = frame + 1
            return True, gap
        if frame in self.missing:
            self.missing.discard(frame)
            return True, -1
        return False, 0

    def tail_lost(self) -> int:
        if self.expected is None or self.expected <= self.next_frame:
            return 0
        return self.expected - self.next_frame


@dataclass
class Ledger:
    """Counters of one source; all updates are O(1) (amortised)."""

    source: str = ""
    messages: int = 0
    bytes: int = 0
    received: int = 0
    lost: int = 0
    series_started: int = 0
    series_ended: int = 0
    disconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    series: SeriesTracker | None = None
    restartable: bool = False  # the series may restart its numbering without an end
    #: one of several clients of a stream (each gets a share of the frames): gaps are the
    #: others' frames, not lost (the event stage counts what no client received)
    share: bool = False

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def message(self, nbytes: int) -> None:
        self.messages += 1
        self.bytes += nbytes

    def reject(self, reason: Reason | str, detail: str) -> None:
        """Count a rejection; the first of each reason is logged as a warning."""
        key = str(reason)
        self.rejected[key] += 1
        if self.rejected[key] == 1:
            logger.warning("%s: rejected message (%s): %s (further '%s' rejections are "
                           "counted, not logged)", self.source or "source", key, detail, key)
        else:
            logger.debug("%s: rejected (%s): %s", self.source, key, detail)

    def start_series(self, series_id: int, expected: int | None = None) -> None:
        """A new series begins (explicitly, or implicitly with its first image)."""
        if self.series is not None:
            self.end_series()
        self.series = SeriesTracker(series_id, expected)
        self.series_started += 1

    def end_series(self) -> None:
        """Close the current series, counting frames missing at its declared tail."""
        if self.series is None:
            return
        if not self.share:
            self.lost += self.series.tail_lost()
        self.series = None
        self.series_ended += 1

    def may_restart(self) -> None:
        """The current series may have ended without its end message (an acquisition
        stopped by hand): if the next image's number goes back, a new series starts there
        (not duplicates); if it goes on, the series continues (no false gap)."""
        self.restartable = self.series is not None

    def image(self, series_id: int, frame: int) -> bool:
        """Account one decoded image; False means it was rejected (duplicate)."""
        if self.restartable:
            self.restartable = False
            if self.series is not None and self.series.series_id == series_id and \
                    frame < self.series.next_frame:
                self.end_series()
        if self.series is None or self.series.series_id != series_id:
            self.start_series(series_id)
        assert self.series is not None
        accepted, lost_delta = self.series.observe(frame)
        if not accepted:
            self.reject(Reason.DUPLICATE, f"frame {frame} of series {series_id} seen twice")
            return False
        self.received += 1
        if not self.share:
            self.lost += lost_delta
        return True

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict copy of the counters (for status, logs and tests)."""
        return {
            "source": self.source,
            "messages": self.messages,
            "bytes": self.bytes,
            "received": self.received,
            "lost": self.lost,
            "rejected": dict(self.rejected),
            "rejected_total": self.rejected_total,
            "series_started": self.series_started,
            "series_ended": self.series_ended,
            "disconnects": self.disconnects,
        }
