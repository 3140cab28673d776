"""The results actor: the shared :class:`~actors.results.stage.ResultsStage`, hosted as a
threaded Ray actor (its waits block a thread each, its file work runs on its I/O thread)."""

from __future__ import annotations

from typing import Any

import ray

from actors.backends.ray.runtime import ACTOR_OPTIONS
from actors.config import OutputConfig
from actors.output import AcquisitionWriter
from actors.results.stage import ResultsStage

#: threads of the results actor beyond one per batch that may wait for its states
SPARE_THREADS = 32


class Results(ResultsStage):
    """The results stage with its NeXus writer, built inside the actor."""

    def __init__(self, output: OutputConfig, settings: dict[str, Any]) -> None:
        super().__init__(AcquisitionWriter(output), settings)


ResultsActor: Any = ray.remote(num_cpus=0, **ACTOR_OPTIONS)(Results)


def results_options(max_inflight: int) -> dict[str, Any]:
    """Actor options: enough threads that batches waiting for their states (at most
    ``max_inflight``) never starve the merges that publish them."""
    return {"max_concurrency": max_inflight + SPARE_THREADS}
