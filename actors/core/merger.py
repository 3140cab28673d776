"""In-order merging of batch partials and the pedestal-state hand-off (pure logic).

The results stage (:mod:`actors.results`) owns one :class:`OrderedMerger` per acquisition:

* :meth:`register` — every batch before it is merged (frame range and the state keys its
  reducers need); a batch that needs states is registered before it is dispatched;
* :meth:`states_for` — the states a registered batch needs, or None while they are not
  published yet (the caller waits and retries after the next :meth:`add`);
* :meth:`add` — a finished partial (any order); partials are merged strictly in batch
  order, so results never depend on timing or on the number of workers.

Published states are cached until no later batch can need them, so a batch whose states
were published long ago still gets them after the prefix has moved on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.core.chain import Partials, ReducerChain
from actors.reduce.base import OutputValue


@dataclass(frozen=True, slots=True)
class BatchInfo:
    index: int
    first_frame: int
    last_frame: int
    n: int
    keys: dict[str, tuple[int, ...]]


class OrderedMerger:
    """Merges partials of one acquisition in batch order."""

    def __init__(self, chain: ReducerChain, carried: dict[str, Any] | None = None) -> None:
        self.chain = chain
        self.prefix: Partials = chain.initial(carried)
        self.merged_through = -1  # highest index merged with all earlier ones
        self.processed_frames = 0
        self.processed_batches = 0
        self._info: dict[int, BatchInfo] = {}
        self._pending: dict[int, Partials] = {}
        self._cache: dict[str, dict[int, Any]] = {}
        self._advanced_to = -1
        self._merged_floor: dict[str, int] = {}  # smallest key the last merged batch needed
        self._refresh()

    def register(self, info: BatchInfo) -> None:
        """A batch about to be dispatched (in any order: concurrent callers may reorder)."""
        if info.index <= self.merged_through or info.index in self._info:
            raise ValueError(f"batch {info.index} registered twice")
        self._info[info.index] = info
        self._advance()

    def states_for(self, index: int) -> dict[str, dict[int, Any]] | None:
        """The states batch ``index`` needs, or None if some are not published yet."""
        info = self._info[index]
        out: dict[str, dict[int, Any]] = {}
        for reducer, keys in info.keys.items():
            have = self._cache.get(reducer, {})
            if any(k not in have for k in keys):
                return None
            out[reducer] = {k: have[k] for k in keys}
        return out

    def add(self, index: int, partial: Partials, count: bool = True, dropped: int = 0) -> int:
        """Accept a finished partial; returns how many batches got merged now.

        ``count`` False merges it without counting its frames as processed (a batch that
        could not be processed and is merged as empty); ``dropped`` frames of it were not
        processed (the worker could not decode them)."""
        if index <= self.merged_through or index in self._pending:
            raise ValueError(f"batch {index} merged twice")
        if index not in self._info:
            raise ValueError(f"batch {index} was never registered")
        self._pending[index] = partial
        if not count or dropped:
            info = self._info[index]
            self._info[index] = BatchInfo(index, info.first_frame, info.last_frame,
                                          0 if not count else info.n - dropped, info.keys)
        merged = 0
        while self.merged_through + 1 in self._pending:
            i = self.merged_through + 1
            # the prefix is this merger's own: reducers may add into it in place
            self.prefix = self.chain.merge_into(self.prefix, self._pending.pop(i))
            info = self._info.pop(i)
            for reducer, keys in info.keys.items():
                self._merged_floor[reducer] = min(keys)
            self.merged_through = i
            self.processed_frames += info.n
            self.processed_batches += 1
            merged += 1
        if merged:
            self._advance()
        return merged

    def is_registered(self, index: int) -> bool:
        return index in self._info

    @property
    def outstanding(self) -> int:
        """Registered batches not merged yet."""
        return len(self._info)

    def finish(self) -> Partials:
        """Fold everything (end of acquisition); the prefix is then final."""
        if self._info:
            raise ValueError(f"{len(self._info)} batches were never merged")
        return self.prefix

    def outputs(self) -> dict[str, OutputValue]:
        return self.chain.outputs(self.prefix)

    def carry_over(self) -> dict[str, Any]:
        return self.chain.carry_over(self.prefix)

    # -- internals ------------------------------------------------------------------------
    def _advance(self) -> None:
        """Fold every epoch before the next unmerged batch, then cache what is published."""
        nxt = self._info.get(self.merged_through + 1)
        if nxt is not None and nxt.first_frame > self._advanced_to:
            self.prefix = self.chain.advance(self.prefix, nxt.first_frame)
            self._advanced_to = nxt.first_frame
        self._refresh()

    def _refresh(self) -> None:
        for reducer, states in self.chain.published_states(self.prefix).items():
            self._cache.setdefault(reducer, {}).update(states)
        # drop states no registered or future batch can need. Needed keys never decrease
        # with the batch index, so a batch not registered yet needs none below what the
        # last merged batch needed; batches may register in any order, so while one before
        # the latest registered is missing, only that bound is safe
        top = max(self._info, default=self.merged_through)
        contiguous = all(i in self._info for i in range(self.merged_through + 1, top + 1))
        for reducer, cache in self._cache.items():
            needed = [min(info.keys[reducer]) for info in self._info.values()
                      if reducer in info.keys] if contiguous else []
            if reducer in self._merged_floor:
                needed.append(self._merged_floor[reducer])
            floor = min(needed) if needed else None
            if floor is not None:
                for k in [k for k in cache if k < floor]:
                    del cache[k]
