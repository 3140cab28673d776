"""The processing actor: a thin shell around :class:`actors.process.worker.Worker`.

Restartable: it keeps nothing that cannot be rebuilt from the arguments of a call (the chain
setup travels as an ObjectRef with every batch and is cached by the worker).
"""

from __future__ import annotations

import os
from typing import Any

import ray

from actors.backends.ray.runtime import ACTOR_OPTIONS
from actors.core.batch import FrameBatch
from actors.core.chain import Partials
from actors.core.modules import ModuleLayout, Policy
from actors.core.setup import ChainSetup
from actors.process.worker import Worker
from actors.wire.model import Geometry


class Processing:
    """One processing actor (``ProcessingActor``)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker = Worker()

    def ready(self) -> dict[str, Any]:
        """Where this actor runs (and proof that it has started)."""
        return {"index": self.index, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    def warm_up(self, specs: tuple[dict[str, Any], ...], geometry: Geometry | None,
                dtype: str) -> float:
        """Load (or compile) the reducers' kernels before the first batch arrives."""
        return self.worker.warm_up(specs, geometry, dtype)

    def process(self, batch: FrameBatch, states: dict[str, dict[int, Any]] | None,
                setup: ChainSetup) -> Partials:
        return self.worker.process(batch, states, setup)

    def process_event(self, layout: ModuleLayout, policy: Policy, index: int,
                      states: dict[str, dict[int, Any]] | None, setup: ChainSetup,
                      sources: tuple[str, ...], *parts: FrameBatch) -> Partials:
        """One range of a multi-module detector: its modules' batches (read from the
        object store wherever their ingests put them) assembled here and reduced."""
        return self.worker.process_event(dict(zip(sources, parts, strict=True)), layout,
                                         policy, index, states, setup)


ProcessingActor: Any = ray.remote(**ACTOR_OPTIONS)(Processing)
