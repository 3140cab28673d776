"""The one typed client of the Ray backend's stage actors.

:class:`IngestClient` and :class:`ResultsClient` wrap the actor handles (every ``.remote``
of the driver and of the Tango device goes through them, each ``ray.get`` with a timeout);
:class:`ClientPipeline` is the shared Python API over them. The driver
(:class:`~actors.backends.ray.driver.RayPipeline`) adds the actors' lifecycle; the Tango
device actor drives a :class:`ClientPipeline` of the same actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.config import PipelineConfig
from actors.core.acquisition import AcquisitionResult
from actors.core.api import StageDied
from actors.core.status import IngestStatus, ResultsStatus, Snapshot
from actors.pipeline import PipelineBase

#: seconds any single actor call may take (waits add their own timeout)
CALL_TIMEOUT = 60.0


def _get(ref: Any, timeout: float = CALL_TIMEOUT) -> Any:
    """The value of an actor call; StageDied if the actor died meanwhile (Ray restarts it)."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayActorError as exc:
        raise StageDied(f"a stage actor died during the call ({type(exc).__name__}); it is "
                        "being restarted") from exc


def _query(call: Callable[[], Any], timeout: float = CALL_TIMEOUT) -> Any:
    """A query, asked again while its actor is dead or being restarted (the restarted one
    answers), for up to ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            return _get(call(), max(0.1, deadline - time.monotonic()))
        except StageDied:
            if time.monotonic() + pause >= deadline:
                raise
            time.sleep(pause)  # back off while Ray restarts the actor
            pause = min(1.0, 2 * pause)


class IngestClient:
    """The ingest actor's commands (:class:`~actors.pipeline.IngestPort`)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def start(self) -> int:
        return int(_get(self.handle.start.remote(None)))

    def stop(self, acquisition: int) -> None:
        _get(self.handle.stop.remote(acquisition))

    def abort(self, acquisition: int) -> None:
        _get(self.handle.abort.remote(acquisition))

    def set(self, changes: dict[str, Any]) -> int | None:
        first = _get(self.handle.set.remote(changes))
        return None if first is None else int(first)

    def status(self) -> IngestStatus:
        status: IngestStatus = _query(self.handle.status.remote)
        return status


class ResultsClient:
    """The results actor's queries and settings (:class:`~actors.pipeline.ResultsPort`)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def wait(self, acquisition: int, timeout: float) -> AcquisitionResult | None:
        result: AcquisitionResult | None = _query(
            lambda: self.handle.wait.remote(acquisition, timeout), timeout + CALL_TIMEOUT)
        return result

    def snapshot(self) -> Snapshot:
        snapshot: Snapshot = _query(self.handle.snapshot.remote)
        return snapshot

    def status(self) -> ResultsStatus:
        status: ResultsStatus = _query(self.handle.status.remote)
        return status

    def reset_pedestal(self) -> None:
        _get(self.handle.reset_pedestal.remote())

    def output_state(self) -> dict[str, Any]:
        state: dict[str, Any] = _get(self.handle.output_state.remote())
        return state

    def set_output(self, name: str, value: Any) -> dict[str, Any]:
        state: dict[str, Any] = _get(self.handle.set_output.remote(name, value))
        return state


class ClientPipeline(PipelineBase):
    """The Python API over running ingest and results actors (no lifecycle of its own)."""

    def __init__(self, config: PipelineConfig, ingest: Any = None, results: Any = None) -> None:
        super().__init__(config)
        self.ingest: Any = None
        self.results_actor: Any = None
        if ingest is not None and results is not None:
            self.attach(ingest, results)

    def attach(self, ingest: Any, results: Any) -> None:
        self.ingest, self.results_actor = ingest, results
        self.ingest_port = IngestClient(ingest)
        self.results_port = ResultsClient(results)

    def detach(self) -> None:
        self.ingest = self.results_actor = None
        self.ingest_port = self.results_port = None

    def open(self) -> None:
        """Nothing to open: the actors run already."""

    def close(self) -> None:
        self.detach()

    def _stage_status(self) -> tuple[IngestStatus, ResultsStatus]:
        """Both stages' status in one round trip."""
        if self.ingest is None:
            return super()._stage_status()
        ingest, results = _query(lambda: [self.ingest.status.remote(),
                                          self.results_actor.status.remote()])
        return ingest, results
