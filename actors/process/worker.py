"""The process stage: a worker turns a :class:`FrameBatch` into partials (pure).

:class:`Worker` keeps the reducer chains it built, one per chain setup version; the Ray
processing actor and the local worker process are thin shells around it, so a restarted
worker rebuilds everything from the setup that travels with each batch.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.core.batch import FrameBatch
from actors.core.chain import Partials, ReducerChain
from actors.core.modules import ModuleLayout, Policy, assemble_batches
from actors.core.setup import DROPPED_KEY, FRAMES_KEY, ChainSetup
from actors.reduce.base import Batch
from actors.wire.model import Geometry
from actors.wire.reorder import IndexArray


@dataclass(frozen=True)
class Built:
    """What a worker builds once per chain setup."""

    chain: ReducerChain
    reorder_map: IndexArray | None
    mask: npt.NDArray[np.bool_] | None


@dataclass
class Worker:
    """A worker's cache of built chains (pure; wrapped by the Ray actor / worker process)."""

    chains: dict[tuple[int, int], Built] = field(default_factory=dict)

    def chain_for(self, setup: ChainSetup) -> Built:
        """The chain, reorder map and mask of a setup, built once per (acquisition,
        version): every batch of a setup then gets the same read-only mask object (Ray
        deserialises a new one per call), which the kernels cache what they derive on."""
        key = (setup.acquisition, setup.version)
        if key not in self.chains:
            if len(self.chains) > 8:  # keep the cache small across acquisitions
                self.chains.pop(next(iter(self.chains)))
            mask = None
            if setup.mask is not None:
                mask = np.array(setup.mask, dtype=bool)
                mask.flags.writeable = False
            self.chains[key] = Built(setup.build(), setup.reorder_map(), mask)
        return self.chains[key]

    def warm_up(self, specs: tuple[dict[str, Any], ...], geometry: Geometry | None,
                dtype: str) -> float:
        """Run the chain once on a small dummy batch so compiled kernels are loaded (or
        compiled) before the first real batch; returns the seconds it took, or -1 when the
        chain cannot be built for a stand-in geometry (e.g. ROIs of a larger frame): then
        the first real batch pays for it."""
        t0 = time.perf_counter()
        geometry = geometry or Geometry(16, 16, dtype)
        try:
            chain = ReducerChain.from_specs(specs, geometry)
        except ValueError:
            return -1.0
        rows, cols = geometry.shape
        frames = np.zeros((2, rows, cols), dtype=geometry.dtype)
        published = chain.published_states(chain.initial(None))
        states = {name: {k: published[name][k] for k in keys}
                  for name, keys in chain.state_needed(0, 1).items()}
        chain.process(Batch(0, frames, np.arange(2, dtype=np.int64)), states)
        return time.perf_counter() - t0

    def process(self, batch: FrameBatch, states: dict[str, dict[int, Any]] | None,
                setup: ChainSetup) -> Partials:
        built = self.chain_for(setup)
        reducer_batch, dropped = batch.to_batch(built.mask, built.reorder_map)
        if reducer_batch is None:  # not one frame decodes: an empty partial
            partials = built.chain.empty()
        else:
            partials = built.chain.process(reducer_batch, states)
        if dropped:
            partials[DROPPED_KEY] = dropped
        if setup.keep_frames and reducer_batch is not None:
            frames = reducer_batch.frames
            if batch.views is not None:  # a view through the batch's buffers: own a copy
                frames = np.array(frames)
            partials[FRAMES_KEY] = (frames, reducer_batch.frame_numbers)
        return partials

    def process_event(self, parts: Mapping[str, FrameBatch], layout: ModuleLayout,
                      policy: Policy, index: int, states: dict[str, dict[int, Any]] | None,
                      setup: ChainSetup) -> Partials:
        """One range of a multi-module detector: its modules' batches are assembled into
        full frames here (the one assembling copy), then reduced as one batch; frames a
        module lacks are dropped as ``incomplete`` or reduced masked (``policy``)."""
        batch, dropped, _ = assemble_batches(layout, parts, index=index, policy=policy)
        if batch is None:
            partials = self.chain_for(setup).chain.empty()
        else:
            partials = self.process(batch, states, setup)
        if dropped:
            counts: Counter[str] = Counter(partials.get(DROPPED_KEY, {}))
            counts.update(dropped)
            partials[DROPPED_KEY] = dict(counts)
        return partials
