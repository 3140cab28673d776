"""The MOENCH partial and its exact, associative merge with epoch folding.

A partial holds the accumulated images (index 0 = unpumped set, 1 = pumped set), frame
counts, per-frame series, and the pedestal samples of every epoch it touched that is not
yet folded (``pending``). A *prefix* partial (the in-order merge of batches 0..b, started
from :func:`initial_partial`) also carries the pedestal state: merging into a prefix folds
every pending epoch older than the newest epoch merged, in epoch order, and
:func:`advance` folds every epoch before a given frame. Integer sums are exact, so the
folded states are a pure function of the frames whatever the grouping of the merges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import readonly
from actors.reduce.moench.pedestal import EpochSamples, PedestalState
from actors.reduce.series import SeriesChunks

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
INT = npt.NDArray[np.int64] | npt.NDArray[np.int32]
History = tuple[tuple[int, PedestalState], ...]


@dataclass(frozen=True, eq=False)
class PrefixState:
    """Pedestal bookkeeping of a prefix partial.

    ``state`` is the state after epoch ``folded_through`` (-1: the initial state);
    ``history`` lists change points (epoch, state after it) from which the state after
    any recent epoch k is the last entry with epoch ≤ k; it is trimmed to what the
    ``lag`` + 1 most recent published states need.
    """

    state: PedestalState
    folded_through: int
    history: History
    lag: int

    def state_after(self, epoch: int) -> PedestalState:
        if epoch > self.folded_through:
            raise KeyError(f"state after epoch {epoch} not published yet "
                           f"(folded through {self.folded_through})")
        found: PedestalState | None = None
        for e, st in self.history:
            if e <= epoch:
                found = st
        if found is None:
            raise KeyError(f"state after epoch {epoch} no longer held")
        return found

    def published(self) -> dict[int, PedestalState]:
        lo = max(-1, self.folded_through - self.lag)
        return {k: self.state_after(k) for k in range(lo, self.folded_through + 1)}


@dataclass(frozen=True, eq=False)
class MoenchPartial:
    analog: F64 | None = None
    threshold: INT | None = None  # int32 in one batch's partial, int64 once merged
    counting: INT | None = None
    frame_counts: tuple[int, int, int] = (0, 0, 0)  # pedestal, unpumped, pumped
    pending: Mapping[int, EpochSamples] = field(default_factory=dict)
    first_frame: int | None = None
    last_frame: int | None = None
    local_fold_epoch: int | None = None  # epoch whose samples the first batch folded locally
    photons: SeriesChunks = SeriesChunks("int64")
    types: SeriesChunks = SeriesChunks("int8")
    prefix: PrefixState | None = None

    @property
    def has_frames(self) -> bool:
        return self.first_frame is not None

    def epochs(self, epoch_length: int) -> tuple[int, int] | None:
        if self.first_frame is None or self.last_frame is None:
            return None
        return self.first_frame // epoch_length, self.last_frame // epoch_length


def initial_partial(state: PedestalState, lag: int) -> MoenchPartial:
    """An empty prefix whose pedestal starts at ``state``."""
    return MoenchPartial(prefix=PrefixState(state, -1, ((-1, state),), lag))


def merge_partials(a: MoenchPartial, b: MoenchPartial, epoch_length: int,
                   capacity: int) -> MoenchPartial:
    """``a`` followed by ``b``; folds complete epochs when ``a`` is a prefix."""
    if b.prefix is not None:
        if not a.has_frames and a.prefix is None:
            return b
        raise ValueError("a prefix partial can only be the left operand of merge")
    if not b.has_frames:
        return a
    if not a.has_frames and a.prefix is None:
        return b
    _check_order(a, b, epoch_length)
    pending = dict(a.pending)
    for e, smp in b.pending.items():
        pending[e] = pending[e] + smp if e in pending else smp
    merged = MoenchPartial(
        analog=_add(a.analog, b.analog), threshold=_add(a.threshold, b.threshold),
        counting=_add(a.counting, b.counting),
        frame_counts=(a.frame_counts[0] + b.frame_counts[0],
                      a.frame_counts[1] + b.frame_counts[1],
                      a.frame_counts[2] + b.frame_counts[2]),
        pending=pending,
        first_frame=a.first_frame if a.has_frames else b.first_frame,
        last_frame=b.last_frame,
        local_fold_epoch=a.local_fold_epoch if a.has_frames else b.local_fold_epoch,
        photons=a.photons.concat(b.photons), types=a.types.concat(b.types),
        prefix=a.prefix)
    if merged.prefix is None:
        return merged
    assert merged.last_frame is not None
    return fold_before(merged, merged.last_frame // epoch_length, capacity)


def _check_order(a: MoenchPartial, b: MoenchPartial, epoch_length: int) -> None:
    assert b.first_frame is not None
    if a.last_frame is not None and a.last_frame >= b.first_frame:
        raise ValueError(f"partials merged out of order: frame {a.last_frame} "
                         f"then frame {b.first_frame}")
    if a.prefix is not None and b.first_frame // epoch_length <= a.prefix.folded_through:
        raise ValueError(f"frame {b.first_frame} lies in epoch "
                         f"{b.first_frame // epoch_length}, already folded into the pedestal "
                         "(advance() was called past it)")
    if (b.local_fold_epoch is not None and a.last_frame is not None
            and a.last_frame // epoch_length >= b.local_fold_epoch):
        raise ValueError(f"batch cut rule violated: the batch starting at frame "
                         f"{b.first_frame} folded epoch {b.local_fold_epoch} locally, but an "
                         "earlier batch has frames of that epoch")


def _add(x: npt.NDArray[Any] | None, y: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
    if x is None:
        return y
    if y is None:
        return x
    if x.dtype.kind == "i":  # per-batch counts may be int32 (classify.count_dtype): widen
        return readonly(np.add(x, y, dtype=np.int64))
    return readonly(x + y)


def fold_before(p: MoenchPartial, epoch: int, capacity: int) -> MoenchPartial:
    """Fold every pending epoch < ``epoch`` into the prefix state (epochs before ``epoch``
    are complete); the prefix then publishes the states after epochs up to ``epoch - 1``."""
    pre = p.prefix
    if pre is None:
        raise ValueError("only a prefix partial (started from initial()) can be folded")
    if epoch - 1 <= pre.folded_through:
        return p
    state = pre.state
    history = list(pre.history)
    pending = dict(p.pending)
    for e in sorted(k for k in pending if k < epoch):
        state = state.fold(pending.pop(e), capacity)
        history.append((e, state))
    through = epoch - 1
    keep_from = through - pre.lag
    base = max((i for i, (e, _) in enumerate(history) if e <= keep_from), default=0)
    new_prefix = PrefixState(state, through, tuple(history[base:]), pre.lag)
    return replace(p, pending=pending, prefix=new_prefix)


def advance_prefix(p: MoenchPartial, next_frame: int, epoch_length: int,
                   capacity: int) -> MoenchPartial:
    """The prefix ``p`` with every epoch before ``next_frame``'s folded (the next batch
    starts at ``next_frame``, which must come after every frame ``p`` holds)."""
    if p.last_frame is not None and next_frame <= p.last_frame:
        raise ValueError(f"advance to frame {next_frame}, but the prefix already holds "
                         f"frame {p.last_frame}")
    return fold_before(p, next_frame // epoch_length, capacity)


def final_state(p: MoenchPartial, capacity: int) -> PedestalState:
    """The pedestal after every epoch of the prefix ``p`` (pending epochs folded)."""
    if p.prefix is None:
        raise ValueError("only a prefix partial (started from initial()) has a pedestal")
    state = p.prefix.state
    for e in sorted(p.pending):
        state = state.fold(p.pending[e], capacity)
    return state
