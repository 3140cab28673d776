"""The two typed boundaries every backend satisfies.

* :class:`PipelineApi` — what ``actors.Pipeline(config)`` returns (Python API, notebooks, the
  CLI): synchronous, every wait bounded.
* :class:`Control` — what the Tango device awaits on its own event loop. Each backend hands
  its device one (``PipelineApi.control()``); the device never touches Ray, processes or
  reducers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from actors.core.acquisition import AcquisitionResult
from actors.core.chain import Parameter
from actors.core.darkrun import DarkRunRecord
from actors.core.status import Snapshot, Status
from actors.reduce.base import OutputSpec, OutputValue


@dataclass(frozen=True)
class StopSummary:
    """How an acquisition ended (what a Tango stop reports)."""

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
        return cls(result.acquisition, result.outcome, led.received, led.processed,
                   led.dropped_total, led.lost, result.duration, result.file)


class StageDied(RuntimeError):
    """A stage of the pipeline died during the call (it is being restarted; an acquisition
    it had running ends as failed)."""


class StopTimeout(TimeoutError):
    """Stop gave up waiting; the acquisition is still draining (``status`` tells how far)."""


@runtime_checkable
class Control(Protocol):
    """The pipeline as the device sees it. Every coroutine returns within its timeouts."""

    def outputs_spec(self) -> list[OutputSpec]:
        """Declared outputs (available before the server starts)."""

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        """What makes these (live) outputs not to be trusted (the reducers' warnings)."""

    def parameters(self) -> list[Parameter]:
        """Runtime parameters with their start-up values and bounds (declarations)."""

    async def start(self) -> int:
        """Start an acquisition; returns its number."""

    async def stop(self, timeout: float) -> StopSummary:
        """Stop accepting frames and wait until every received frame is processed;
        raises :class:`StopTimeout` after ``timeout`` seconds."""

    async def abort(self) -> None:
        """Stop and discard the current acquisition."""

    async def set(self, name: str, value: Any) -> None:
        """Change a runtime parameter (validated by the pipeline; ValueError if refused)."""

    async def reset_pedestal(self) -> None:
        """The next acquisition starts without the carried pedestal."""

    async def record_pedestal(self, gain: int, timeout: float) -> DarkRunRecord:
        """One Jungfrau dark run of ``gain`` (starts an acquisition, waits up to ``timeout``
        seconds for the detector's series, writes the pedestal file)."""

    async def set_output(self, filename: str, filepath: str, file_index: int) -> None:
        """The file settings for the next acquisition (the seed's attributes)."""

    async def status(self) -> Status: ...

    async def snapshot(self) -> Snapshot: ...

    def close(self) -> None:
        """Release what the control holds (threads); the device is gone."""


class PipelineApi(Protocol):
    """A pipeline of either backend (``backend: ray`` or ``local``)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    @property
    def acquisition(self) -> int:
        """The number of the running (else the last) acquisition; 0 before the first."""

    @property
    def tango_address(self) -> str | None:
        """The full address of the pipeline's Tango device (None when disabled)."""

    def start_acquisition(self) -> int:
        """Start accepting frames; an end-of-series message or a stop ends it."""

    def stop_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Stop accepting frames, wait until every received frame is processed, finish."""

    def wait_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Wait for the running (else the last) acquisition to end; TimeoutError if not."""

    def abort(self) -> None:
        """Stop and discard the running acquisition."""

    def reset_pedestal(self) -> None: ...

    def set_output(self, filename: str | None = None, filepath: str | None = None,
                   file_index: int | None = None) -> dict[str, Any]: ...

    def status(self) -> Status: ...

    def snapshot(self) -> Snapshot: ...

    def results(self) -> dict[str, OutputValue]: ...

    def set(self, name: str, value: Any) -> int | None:
        """Change a runtime parameter; the first batch it applies to (None: from the next
        acquisition's first batch)."""

    def control(self) -> Control:
        """The device's view of this pipeline."""

    def record_pedestal(self, gain: int, file: str | None = None,
                        timeout: float | None = None) -> DarkRunRecord:
        """Take one Jungfrau dark run of ``gain`` and write its pedestal file entry."""
