"""The Python API both backends share: :class:`PipelineBase`, over two stage ports.

A backend opens its stages and hands this class an :class:`IngestPort` and a
:class:`ResultsPort` (Ray: typed clients of the actors; local: calls into the ingest process
and the driver's results stage). Everything a user calls — start, stop, wait, abort, status,
results, set — is written once, here, and returns the typed values of
:mod:`actors.core.status`. The Tango device drives the same methods through
:class:`~actors.tango.pipeline_control.PipelineControl`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from actors.config import PipelineConfig, as_config
from actors.core.acquisition import AcquisitionResult
from actors.core.api import Control, StageDied
from actors.core.darkrun import (
    DarkRunRecord,
    dark_arrays,
    dark_run_warnings,
    plan_dark_run,
)
from actors.core.status import IngestStatus, ResultsStatus, Snapshot, Status, pipeline_status
from actors.reduce.base import OutputValue

logger = logging.getLogger(__name__)

#: seconds :meth:`PipelineBase.abort` waits for the aborted result
ABORT_WAIT = 5.0


class IngestPort(Protocol):
    """The ingest stage's commands (numbers acquisitions, owns the runtime parameters)."""

    def start(self) -> int: ...

    def stop(self, acquisition: int) -> None: ...

    def abort(self, acquisition: int) -> None: ...

    def set(self, changes: dict[str, Any]) -> int | None: ...

    def status(self) -> IngestStatus: ...


class ResultsPort(Protocol):
    """The results stage's queries and file settings."""

    def wait(self, acquisition: int, timeout: float) -> AcquisitionResult | None: ...

    def snapshot(self) -> Snapshot: ...

    def status(self) -> ResultsStatus: ...

    def reset_pedestal(self) -> None: ...

    def output_state(self) -> dict[str, Any]: ...

    def set_output(self, name: str, value: Any) -> dict[str, Any]: ...


class NotOpen(RuntimeError):
    """The pipeline is not open (call ``open()`` or use it in a ``with`` block)."""


class PipelineBase:
    """The user-facing pipeline over its stages' ports (see the module doc).

    Use as a context manager (or call :meth:`open` / :meth:`close`)::

        with Pipeline(config) as p:
            p.start_acquisition()
            ...                       # the detector sends frames
            result = p.stop_acquisition(timeout=30)
            result.outputs["analog_img"]
    """

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | Path | None = None
                 ) -> None:
        self.config = as_config(config)
        self.ingest_port: IngestPort | None = None
        self.results_port: ResultsPort | None = None

    # -- lifecycle (the backend's) ----------------------------------------------------------
    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def tango_address(self) -> str | None:
        """The full address of the Tango device (None when disabled)."""
        return None

    def control(self) -> Control:
        """The Tango device's view of this pipeline."""
        from actors.tango.pipeline_control import PipelineControl

        return PipelineControl(self, self.config)

    # -- acquisitions -------------------------------------------------------------------------
    @property
    def acquisition(self) -> int:
        """The number of the running (else the last) acquisition; 0 before the first."""
        return self._ingest().status().acquisition or 0

    def start_acquisition(self) -> int:
        """Start accepting frames; an end-of-series message or :meth:`stop_acquisition`
        ends the acquisition. Returns its number."""
        return self._ingest().start()

    def stop_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Stop accepting frames, wait until every received frame is processed, finish;
        returns the result of the running (else the last) acquisition."""
        ingest = self._ingest()
        status = ingest.status()
        if status.acquisition is None:
            raise RuntimeError("no acquisition has been started")
        if status.state == "running":
            with contextlib.suppress(StageDied):  # it died: the acquisition failed
                ingest.stop(status.acquisition)
        return self._wait(status.acquisition, timeout)

    def wait_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Wait for the running (else the last) acquisition to end (by end-of-series or a
        stop) and return its result; TimeoutError after ``timeout`` seconds."""
        acquisition = self.acquisition
        if not acquisition:
            raise RuntimeError("no acquisition has been started")
        return self._wait(acquisition, timeout)

    def abort(self) -> None:
        """Stop and discard the running acquisition (nothing when none runs); returns once
        it has ended (its result says ``aborted``), so the state reads idle, or after
        :data:`ABORT_WAIT` seconds with a warning (batches in flight are dropped as they
        return; nothing waits for them)."""
        ingest = self._ingest()
        status = ingest.status()
        if status.state == "idle" or status.acquisition is None:
            return
        with contextlib.suppress(StageDied):  # it died: the acquisition failed
            ingest.abort(status.acquisition)
        try:
            self._wait(status.acquisition, ABORT_WAIT)
        except TimeoutError:
            logger.warning("acquisition %d: no aborted result after %g s",
                           status.acquisition, ABORT_WAIT)

    def reset_pedestal(self) -> None:
        """The next acquisition starts without the pedestal carried from the last one."""
        self._results().reset_pedestal()

    def set_output(self, filename: str | None = None, filepath: str | None = None,
                   file_index: int | None = None) -> dict[str, Any]:
        """Change the file name, directory or next index (applies to the next file)."""
        results = self._results()
        state: dict[str, Any] = {}
        for name, value in (("filename", filename), ("filepath", filepath),
                            ("file_index", file_index)):
            if value is not None:
                state = results.set_output(name, value)
        return state or results.output_state()

    # -- queries and parameters ---------------------------------------------------------------
    def status(self) -> Status:
        """State, counters (received, processed, dropped, lost, pending), rates, fault,
        runtime parameters; after an acquisition, its final counters until the next."""
        ingest, results = self._stage_status()
        return pipeline_status(ingest, results)

    def snapshot(self) -> Snapshot:
        """Outputs of the running acquisition (else of the last one), with their time."""
        return self._results().snapshot()

    def results(self) -> dict[str, OutputValue]:
        """Named outputs of the running acquisition (else of the last finished one)."""
        return dict(self.snapshot().outputs)

    def set(self, name: str, value: Any) -> int | None:
        """Change a runtime parameter; returns the first batch it applies to (None: from the
        next acquisition's first batch). A bad name or value raises ValueError."""
        return self._ingest().set({name: value})

    # -- the Jungfrau dark runs ----------------------------------------------------------------
    def record_pedestal(self, gain: int, file: str | None = None,
                        timeout: float | None = None) -> DarkRunRecord:
        """Take one Jungfrau dark run of ``gain`` (0: normal, 1 or 2: the detector forced
        into G1/G2) and write its pedestal into the pedestal file.

        Starts an acquisition with the chain's ``jungfrau_pedestal`` reducer recording,
        waits for the detector's series (send it after calling this; ``timeout`` as
        :meth:`wait_acquisition`), writes the per-pixel mean, σ and sample count for that
        gain into ``file`` (default: the reducer's ``file``, else the ``jungfrau`` reducer's
        ``pedestal_file``; the other gains already in it stay), and makes every ``jungfrau``
        reducer read the file again. Raises if the acquisition does not complete or no frame
        came; warns (in the returned record and the log) when many pixels were not in the
        gain."""
        from actors.reduce.jungfrau.pedestal_file import DarkRun, missing_gains, write_dark_run

        if gain not in (0, 1, 2):
            raise ValueError(f"gain must be 0, 1 or 2, got {gain!r}")
        specs = self.config.reducers
        status = self.status()
        if status.running:  # (its next batches would be recorded as dark frames)
            raise RuntimeError(f"acquisition {status.acquisition} is running: stop or abort it "
                               "before a dark run")
        plan = plan_dark_run(specs, dict(status.parameters), file)
        ingest = self._ingest()
        ingest.set({plan.gain: gain, plan.record: True})
        try:
            acquisition = self.start_acquisition()
            logger.info("dark run of G%d: acquisition %d started, waiting for the detector's "
                        "dark series", gain, acquisition)
            try:
                result = self.wait_acquisition(timeout)
            except TimeoutError:  # no series came: the dark run must not go on recording
                self.abort()
                raise
        finally:
            ingest.set({plan.record: False})
        if result.outcome != "finished":
            raise RuntimeError(f"dark run of G{gain} (acquisition {acquisition}) "
                               f"{result.outcome}: {result.error or 'no result'}")
        mean, std, count, frames, wrong = dark_arrays(result.outputs, plan)
        if not frames:
            raise RuntimeError(f"dark run of G{gain} (acquisition {acquisition}): no frame "
                               "was received; nothing written")
        detector = result.detector
        write_dark_run(plan.file, DarkRun(
            gain, mean, std, count, frames,
            exposure_time=None if detector is None else detector.count_time,
            modules=tuple(result.ledger.sources) if result.ledger.sources else (),
            acquisition=acquisition,
            detector="" if detector is None else (detector.description or "")))
        if plan.reload:
            ingest.set(dict(plan.reload))  # same paths: a new setup rereads the file
        if gain == 0:  # a tracked G0 pedestal restarts from this dark run, not the carried one
            self.reset_pedestal()
        warnings = dark_run_warnings(gain, wrong, count)
        for text in warnings:
            logger.warning("%s", text)
        return DarkRunRecord(plan.file, gain, acquisition, frames, wrong,
                             missing_gains(plan.file), tuple(warnings))

    # -- internals ------------------------------------------------------------------------------
    def _ingest(self) -> IngestPort:
        if self.ingest_port is None:
            raise NotOpen("the pipeline is not open")
        return self.ingest_port

    def _results(self) -> ResultsPort:
        if self.results_port is None:
            raise NotOpen("the pipeline is not open")
        return self.results_port

    def _stage_status(self) -> tuple[IngestStatus, ResultsStatus]:
        """Both stages' status (a backend may ask both at once)."""
        return self._ingest().status(), self._results().status()

    def _wait(self, acquisition: int, timeout: float | None) -> AcquisitionResult:
        limit = self.config.acquisition_timeout if timeout is None else timeout
        result = self._results().wait(acquisition, limit)
        if result is None:
            raise TimeoutError(f"acquisition {acquisition} did not finish within {limit:g} s: "
                               f"{self.status().as_dict()}")
        return result
