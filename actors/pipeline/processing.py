"""ProcessingActor: decode, decompress, reorder and reduce one batch; return partials."""

from __future__ import annotations

import logging
from typing import Any

import ray

from actors.core.batch import FrameBatch
from actors.core.chain import Partials
from actors.core.setup import ChainSetup, Worker
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)


class Processing:
    """One worker: a thin shell around :class:`actors.core.setup.Worker`.

    Restartable: it keeps no state that cannot be rebuilt from the arguments of a call
    (the chain setup travels as an ObjectRef with every batch and is cached here).
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker = Worker()
        self.batches = 0

    def ready(self) -> dict[str, Any]:
        """Where this actor runs (and proof that it has started)."""
        ctx = ray.get_runtime_context()
        return {"index": self.index, "node_id": ctx.get_node_id(), "pid": _pid()}

    def warm_up(self, specs: tuple[dict[str, Any], ...], geometry: Geometry | None,
                dtype: str) -> float:
        """Load (or compile) the reducers' kernels before the first batch arrives."""
        return self.worker.warm_up(specs, geometry, dtype)

    def process(self, batch: FrameBatch, states: dict[str, dict[int, Any]] | None,
                setup: ChainSetup) -> Partials:
        self.batches += 1
        return self.worker.process(batch, states, setup)


def _pid() -> int:
    import os

    return os.getpid()


ProcessingActor: Any = ray.remote(max_restarts=-1, max_task_retries=0)(Processing)
