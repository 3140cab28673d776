"""What the Tango device needs from a pipeline: a small async protocol and its value types.

The device never touches Ray, processes or reducers directly; it awaits a :class:`Control`
on its own event loop. Implementations: :class:`actors.tango.ray_control.RayControl` (the
Ray actor handles) and :class:`actors.tango.pipeline_control.PipelineControl` (any object
with the synchronous ``RayPipeline`` API, run in an executor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from actors.core.acquisition import AcquisitionResult
from actors.core.chain import Parameter
from actors.reduce.base import OutputSpec, OutputValue

PipelineState = Literal["idle", "running", "draining"]


@dataclass(frozen=True)
class PipelineStatus:
    """Counters of the running acquisition, else of the last finished one."""

    state: PipelineState = "idle"
    acquisition: int | None = None
    received: int = 0
    processed: int = 0
    dropped: int = 0
    lost: int = 0
    rejected: int = 0
    frame_rate: float = 0.0
    processing_rate: float = 0.0
    fault: str | None = None

    @property
    def running(self) -> bool:
        return self.state != "idle"


@dataclass(frozen=True)
class Snapshot:
    """Named outputs of the running acquisition (else of the last finished one)."""

    acquisition: int | None
    running: bool
    processed: int
    outputs: dict[str, OutputValue] = field(default_factory=dict)
    time: float = 0.0  # wall-clock time the outputs were taken (the event timestamp)


@dataclass(frozen=True)
class StopSummary:
    """How an acquisition ended."""

    acquisition: int
    outcome: str
    received: int
    processed: int
    dropped: int
    lost: int
    duration: float
    file: str | None = None

    @classmethod
    def of(cls, result: AcquisitionResult) -> StopSummary:
        led = result.ledger
        return cls(result.acquisition, result.outcome, int(led.get("received", 0)),
                   int(led.get("processed", 0)), int(led.get("dropped_total", 0)),
                   int(led.get("lost", 0)), result.duration, result.file)


class StopTimeout(TimeoutError):
    """Stop gave up waiting; the acquisition is still draining (``status`` tells how far)."""


@runtime_checkable
class Control(Protocol):
    """The pipeline as the device sees it. Every coroutine returns within its timeouts."""

    def outputs_spec(self) -> list[OutputSpec]:
        """Declared outputs (available before the server starts)."""

    def parameters(self) -> list[Parameter]:
        """Runtime parameters with their current values (available before the server starts)."""

    async def start(self) -> int:
        """Start an acquisition; returns its number."""

    async def stop(self, timeout: float) -> StopSummary:
        """Stop accepting frames and wait until every received frame is processed;
        raises :class:`StopTimeout` after ``timeout`` seconds."""

    async def abort(self) -> None:
        """Stop and discard the current acquisition."""

    async def set(self, name: str, value: Any) -> None:
        """Change a runtime parameter (validated by the pipeline)."""

    async def reset_pedestal(self) -> None:
        """The next acquisition starts without the carried pedestal."""

    async def status(self) -> PipelineStatus: ...

    async def snapshot(self) -> Snapshot: ...


@runtime_checkable
class OutputControl(Protocol):
    """Optional: a pipeline that writes files takes the seed's file settings at start."""

    async def set_output(self, filename: str, filepath: str, file_index: int) -> None: ...
