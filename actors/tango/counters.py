"""Counters for the device: the running acquisition's, else the last finished one's (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.core.rates import RateMeter
from actors.tango.control import PipelineState, PipelineStatus


class CounterBook:
    """Turns pipeline ledgers into :class:`PipelineStatus` values.

    The pipelines report counters only while an acquisition runs; the device keeps showing
    those of the last acquisition once it ended (as the seed server did), taken from its
    result ledger (:meth:`finished`) or, until that is known, from the last running status.
    """

    def __init__(self, window: float = 2.0) -> None:
        self._rate = RateMeter(window)
        self._rate_for: int | None = None
        self._last: PipelineStatus | None = None
        self._final_for: int | None = None

    def running(self, state: PipelineState, acquisition: int, ledger: Mapping[str, Any],
                processed: int, frame_rate: float, fault: str | None) -> PipelineStatus:
        if self._rate_for != acquisition:
            self._rate.reset()
            self._rate_for = acquisition
        status = PipelineStatus(
            state, acquisition, int(ledger.get("received", 0)), processed,
            int(ledger.get("dropped_total", 0)), int(ledger.get("lost", 0)),
            int(ledger.get("rejected_total", 0)), float(frame_rate),
            self._rate.update(processed), fault)
        self._last = status
        return status

    def needs_final(self, acquisition: int | None) -> bool:
        return acquisition is not None and self._final_for != acquisition

    def finished(self, acquisition: int, ledger: Mapping[str, Any]) -> None:
        """The result ledger of a finished (or aborted) acquisition."""
        self._final_for = acquisition
        self._last = PipelineStatus(
            "idle", acquisition, int(ledger.get("received", 0)),
            int(ledger.get("processed", 0)), int(ledger.get("dropped_total", 0)),
            int(ledger.get("lost", 0)), int(ledger.get("rejected_total", 0)))

    def idle(self, frame_rate: float, fault: str | None) -> PipelineStatus:
        last = self._last or PipelineStatus()
        return PipelineStatus("idle", last.acquisition, last.received, last.processed,
                              last.dropped, last.lost, last.rejected, float(frame_rate), 0.0,
                              fault)
