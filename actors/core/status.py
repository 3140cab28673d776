"""The typed values the stages report: ledgers, stage status, pipeline status, snapshots.

Pure and backend-independent: the ingest reports an :class:`IngestStatus`, the dispatcher its
drops and batches in flight (:class:`DispatchCounts`), the results stage a
:class:`ResultsStatus` and :class:`Snapshot`; :func:`pipeline_status` joins them into the one
:class:`Status` that ``Pipeline.status()`` returns and the Tango device shows, on both
backends.

Each value is a frozen dataclass that also reads as a read-only mapping
(``status["processed"]``, ``ledger.items()``), so scripts, notebooks and the NeXus writer that
index them by name keep working.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from actors.reduce.base import OutputValue

State = Literal["idle", "running", "draining"]


class Record(Mapping[str, Any]):
    """A dataclass that reads as a mapping of its fields (and of ``_computed`` properties)."""

    _computed: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @functools.cache
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls)) + cls._computed  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dicts (for JSON, logs and files)."""
        return {k: _plain(v) for k, v in self.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, eq=True)
class Ledger(Record):
    """Every frame of one acquisition: received, processed, dropped (by reason) or lost, and
    the messages rejected as malformed (by reason). ``dispatched``, ``pending`` (frames in the
    open batch) and ``inflight_batches`` say where the frames not processed yet are."""

    _computed = ("dropped_total", "rejected_total")

    acquisition: int
    received: int = 0
    processed: int = 0
    processed_batches: int = 0
    dispatched: int = 0
    dispatched_batches: int = 0
    pending: int = 0
    inflight_batches: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    lost: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    #: a multi-module detector: each module's own ledger (its frames, losses, rejections)
    sources: Mapping[str, Ledger] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def with_drops(self, drops: Mapping[str, int]) -> Ledger:
        """This ledger with more dropped frames (e.g. the dispatcher's ``processing_failed``)."""
        total = Counter(self.dropped)
        total.update(drops)
        return dataclasses.replace(self, dropped=dict(+total))

    def with_processed(self, frames: int, batches: int) -> Ledger:
        return dataclasses.replace(self, processed=frames, processed_batches=batches)


@dataclass(frozen=True)
class DispatchCounts:
    """What the dispatcher adds to an acquisition's ledger: frames it dropped (by reason)
    and batches it holds (waiting for states or a worker, or in flight)."""

    dropped: Mapping[str, int] = field(default_factory=dict)
    inflight_batches: int = 0


@dataclass(frozen=True)
class IngestStatus(Record):
    """The ingest: its state, the current (else last) acquisition's ledger, rates, faults,
    and the runtime parameters it owns (``setup_version`` moves on every change)."""

    state: State = "idle"
    acquisition: int | None = None  # the running one, else the last; None before the first
    ledger: Ledger | None = None
    frame_rate: float = 0.0
    idle_dropped: int = 0
    fault: str | None = None
    receiver: Mapping[str, Any] = field(default_factory=dict)
    setup_version: int = 0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inflight_bytes: int = 0
    #: a multi-module detector: each module ingest's ledger of the acquisition
    sources: Mapping[str, Ledger] = field(default_factory=dict)
    peak_inflight_bytes: int = 0
    geometry: Any = None
    dispatch: DispatchCounts | None = None  # when the dispatcher runs with the ingest
    #: the running acquisition's wall-clock times so far (started, first_frame, last_frame)
    timing: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultsStatus(Record):
    """The results stage: the acquisition it merges (if any) and the last one it finished."""

    running: int | None = None
    processed: int = 0
    processed_batches: int = 0
    processing_rate: float = 0.0
    dropped: Mapping[str, int] = field(default_factory=dict)  # frames workers could not use
    last: int | None = None  # the last acquisition with a result
    last_ledger: Ledger | None = None  # its final ledger
    last_outcome: str | None = None
    last_warnings: tuple[str, ...] = ()  # what makes its outputs not to be trusted
    last_file: str | None = None  # the file it wrote
    last_writing: bool = False  # its file is still being written
    timing: Mapping[str, float] = field(default_factory=dict)  # the running one's merges
    last_timings: Mapping[str, float] = field(default_factory=dict)  # the last result's


@dataclass(frozen=True)
class Status(Record):
    """What ``Pipeline.status()`` returns: state, the counters of the running acquisition
    (else of the last one, until the next starts), rates, fault, parameters."""

    _computed = ("running",)

    state: State = "idle"
    acquisition: int | None = None
    received: int = 0
    processed: int = 0
    dropped: int = 0
    lost: int = 0
    rejected: int = 0
    pending: int = 0  # received, neither processed nor dropped yet
    frame_rate: float = 0.0
    processing_rate: float = 0.0
    idle_dropped: int = 0
    fault: str | None = None
    ledger: Ledger | None = None
    receiver: Mapping[str, Any] = field(default_factory=dict)
    setup_version: int = 0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inflight_bytes: int = 0
    peak_inflight_bytes: int = 0
    #: a multi-module detector: each module's ledger (its own received, lost, rejected)
    sources: Mapping[str, Ledger] = field(default_factory=dict)
    outcome: str | None = None  # of the last acquisition, once it has ended
    warnings: tuple[str, ...] = ()  # the last acquisition's, once it has ended
    file: str | None = None  # the file the last acquisition wrote, once it has ended
    writing: bool = False  # ... and whether that file is still being written
    #: wall-clock times of the running acquisition so far (``started``, ``first_frame``,
    #: ``first_merged``, ``last_frame``, ``last_merged``), else the last one's
    #: (``AcquisitionResult.timings``, with ``closed`` and ``result``)
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state != "idle"


@dataclass(frozen=True)
class Snapshot(Record):
    """Named outputs of the running acquisition (else of the last finished one)."""

    acquisition: int | None = None
    running: bool = False
    processed: int = 0
    outputs: Mapping[str, OutputValue] = field(default_factory=dict)
    time: float = 0.0  # wall-clock time the outputs were taken (the event timestamp)


def pipeline_status(ingest: IngestStatus, results: ResultsStatus,
                    dispatch: DispatchCounts | None = None, fault: str | None = None
                    ) -> Status:
    """The pipeline's status from its stages' (one rule for both backends).

    While an acquisition runs, its ledger is the ingest's with the dispatcher's drops and the
    results stage's processed count. Once it has ended, the results stage's final ledger is
    shown (which acquisition it is, and how it ended), until the next acquisition starts."""
    acq = ingest.acquisition
    ledger = ingest.ledger
    dispatch = dispatch or ingest.dispatch
    outcome = None
    warnings: tuple[str, ...] = ()
    file, writing = None, False
    timings: Mapping[str, float] = {**ingest.timing, **results.timing} \
        if results.running == acq else dict(ingest.timing)
    if ingest.state == "idle" and acq is not None and results.last == acq and \
            results.last_ledger is not None:
        ledger, outcome = results.last_ledger, results.last_outcome
        warnings, file = tuple(results.last_warnings), results.last_file
        writing, timings = results.last_writing, results.last_timings
    elif ledger is not None:
        if dispatch is not None:
            ledger = dataclasses.replace(ledger.with_drops(dispatch.dropped),
                                         inflight_batches=dispatch.inflight_batches)
        if results.running == acq:
            ledger = ledger.with_processed(results.processed, results.processed_batches
                                           ).with_drops(results.dropped)
    received = ledger.received if ledger else 0
    processed = ledger.processed if ledger else 0
    dropped = ledger.dropped_total if ledger else 0
    return Status(
        state=ingest.state, acquisition=acq, received=received, processed=processed,
        dropped=dropped, lost=ledger.lost if ledger else 0,
        rejected=ledger.rejected_total if ledger else 0,
        pending=max(0, received - processed - dropped) if outcome is None else 0,
        frame_rate=ingest.frame_rate,
        processing_rate=results.processing_rate if results.running == acq else 0.0,
        idle_dropped=ingest.idle_dropped, fault=ingest.fault or fault, ledger=ledger,
        receiver=ingest.receiver, setup_version=ingest.setup_version,
        parameters=ingest.parameters, inflight_bytes=ingest.inflight_bytes,
        peak_inflight_bytes=ingest.peak_inflight_bytes,
        sources=ledger.sources if outcome is not None and ledger is not None else
        ingest.sources, outcome=outcome, warnings=warnings, file=file, writing=writing,
        timings=timings)
