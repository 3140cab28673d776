"""The batch-cut rule for stateful reducers (epoch-synchronous pedestal tracking).

Rule: a batch never contains frames of two epochs unless it starts at the beginning of an
epoch, i.e. either the whole batch lies inside one epoch, or its first frame belongs to an
epoch that no earlier batch touched (it may then span several whole epochs). Epoch of
frame *f* = ``f // epoch_length``. This keeps workers independent: a batch spanning
epochs holds *all* frames of every epoch it covers except possibly the last one, so it
can fold its own pedestal samples into any later state it needs.

The ingest either calls the pure :func:`batch_boundary_needed` or keeps a
:class:`BatchCutter` per acquisition::

    cutter = BatchCutter([r.epoch_length for r in reducers])
    for frame in frames:                    # frame numbers, increasing
        if cutter.must_cut(frame):
            close_and_dispatch_batch(); cutter.close()
        add_to_open_batch(frame); cutter.add(frame)
        if batch_full or delay_expired:
            close_and_dispatch_batch(); cutter.close()
"""

from __future__ import annotations

from collections.abc import Iterable


def batch_boundary_needed(current_first_frame: int, current_last_frame: int,
                          next_frame: int, epoch: int | None,
                          batch_started_at_epoch_start: bool) -> bool:
    """True if the open batch ``current_first_frame..current_last_frame`` must be closed
    before ``next_frame`` is added.

    ``batch_started_at_epoch_start`` is True when no earlier batch of the acquisition
    touched the epoch of ``current_first_frame``. ``epoch`` None means no constraint.
    """
    if epoch is None:
        return False
    if epoch < 1:
        raise ValueError(f"epoch length must be >= 1, got {epoch}")
    if next_frame <= current_last_frame or current_last_frame < current_first_frame:
        raise ValueError(
            f"frames must increase: batch {current_first_frame}..{current_last_frame}, "
            f"next {next_frame}")
    if next_frame // epoch == current_last_frame // epoch:
        return False
    return not batch_started_at_epoch_start


class BatchCutter:
    """Tracks the open batch of one acquisition and applies the rule for every epoch length.

    ``epochs`` lists the epoch lengths of the pipeline's stateful reducers (None entries,
    from stateless reducers, are ignored).
    """

    def __init__(self, epochs: Iterable[int | None]):
        self.epochs = tuple(sorted({e for e in epochs if e is not None}))
        for e in self.epochs:
            if e < 1:
                raise ValueError(f"epoch length must be >= 1, got {e}")
        self._first: int | None = None
        self._last: int | None = None
        self._prev_last: int | None = None  # last frame of the previous (closed) batch

    @property
    def is_open(self) -> bool:
        return self._first is not None

    def must_cut(self, next_frame: int) -> bool:
        """True if the open batch must be closed before ``next_frame`` joins it."""
        if self._first is None or self._last is None:
            return False
        return any(
            batch_boundary_needed(self._first, self._last, next_frame, e,
                                  self._started_at_epoch_start(e))
            for e in self.epochs)

    def add(self, frame: int) -> None:
        """``frame`` joined the open batch (opening one if none is open)."""
        if self._last is not None and frame <= self._last:
            raise ValueError(f"frame {frame} does not follow {self._last}")
        if self._prev_last is not None and frame <= self._prev_last:
            raise ValueError(f"frame {frame} does not follow {self._prev_last}")
        if self._first is None:
            self._first = frame
        self._last = frame

    def close(self) -> None:
        """The open batch was closed (for any reason: cut, size, delay)."""
        if self._last is not None:
            self._prev_last = self._last
        self._first = None
        self._last = None

    def _started_at_epoch_start(self, epoch: int) -> bool:
        assert self._first is not None
        return self._prev_last is None or self._prev_last // epoch < self._first // epoch
