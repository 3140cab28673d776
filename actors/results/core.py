"""The results stage's logic (pure, single-threaded): merging, acquisition lifecycle, queries.

:class:`ResultsCore` owns the merged results of the running acquisition and the results of
the last ones. The ingest side tells it about acquisitions (:meth:`~ResultsCore.begin`,
:meth:`~ResultsCore.reconfigure`, :meth:`~ResultsCore.end`, :meth:`~ResultsCore.abort`) and
batches (:meth:`~ResultsCore.register`, :meth:`~ResultsCore.skip`,
:meth:`~ResultsCore.give_up`); processed partials arrive through :meth:`~ResultsCore.merge`,
in any order, and are merged in batch order. Callers read :meth:`~ResultsCore.snapshot`,
:meth:`~ResultsCore.status` and :meth:`~ResultsCore.result`.

File work is not done here: every mutation may queue :data:`IoOp` values (prepare a file,
append a block of frames in batch order, write the finished acquisition, discard an aborted
one) that the caller takes with :meth:`~ResultsCore.take_io` and runs, in order, against an
:class:`~actors.results.stage.AcquisitionSink`; a finished acquisition's result becomes
visible to :meth:`~ResultsCore.result` once :meth:`~ResultsCore.io_done` reports its file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from actors.core.acquisition import Acquisition, AcquisitionResult, Outcome
from actors.core.chain import Partials
from actors.core.events import Aborted, Announce, Begin, Checkpoint, End, ResultsEvent, Skip
from actors.core.merger import BatchInfo
from actors.core.ordered import InBatchOrder
from actors.core.rates import RateMeter
from actors.core.setup import DROPPED_KEY, FRAMES_KEY, ChainSetup
from actors.core.status import Ledger, ResultsStatus, Snapshot
from actors.reduce.base import OutputSpec
from actors.wire.detector import DetectorInfo

logger = logging.getLogger(__name__)

States = dict[str, dict[int, Any]]


@dataclass(frozen=True)
class Prepare:
    """Reserve the file of a new acquisition."""

    acquisition: int


@dataclass(frozen=True)
class AppendFrames:
    """Store a block of decoded frames (per-frame stacks), in batch order."""

    frames: Any
    frame_numbers: Any


@dataclass(frozen=True)
class Finish:
    """Write the finished acquisition; its result is stored once this is done."""

    result: AcquisitionResult
    outputs: list[OutputSpec]
    settings: dict[str, Any]


@dataclass(frozen=True)
class Discard:
    """Close an aborted acquisition's file as it is (no results written)."""

    acquisition: int


IoOp = Prepare | AppendFrames | Finish | Discard


class ResultsCore:
    """Merged results and acquisition lifecycle (see the module doc). Not thread-safe."""

    def __init__(self, settings: Mapping[str, Any] | None = None, keep: int = 16,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = dict(settings or {})
        self.keep = keep
        self.clock = clock
        self.current: Acquisition | None = None
        self.carried: dict[str, Any] | None = None
        self.done: dict[int, AcquisitionResult] = {}
        self.finishing: dict[int, AcquisitionResult] = {}  # waiting for their file
        self._frames: InBatchOrder[tuple[Any, Any]] = InBatchOrder()
        self._io: list[IoOp] = []
        self._rate = RateMeter()
        self._rate_for: int | None = None
        self.last_checkpoint: Checkpoint | None = None

    # -- lifecycle (the ingest side) ----------------------------------------------------------
    def begin(self, setup: ChainSetup, detector: DetectorInfo | None = None) -> None:
        """The first batch of ``setup.acquisition`` is coming (its chain setup, and its
        detector as the stream described it)."""
        cur = self.current
        if cur is not None:
            logger.warning("acquisition %d replaced by %d before it ended",
                           cur.acquisition, setup.acquisition)
            self._store(cur.result("failed", f"replaced by acquisition {setup.acquisition} "
                                   "before it ended"))
            self._io.append(Discard(cur.acquisition))
        self.current = Acquisition.begin(setup.acquisition, setup.build(), self.carried)
        self.current.detector = detector
        self.current.started = self.clock()
        self._frames.clear()
        self._io.append(Prepare(setup.acquisition))

    def reconfigure(self, setup: ChainSetup) -> None:
        """A new chain setup version (runtime parameters) for the running acquisition."""
        acq = self._acq(setup.acquisition)
        if acq is not None:
            acq.chain = acq.merger.chain = setup.build()

    def register(self, acquisition: int, info: BatchInfo) -> bool:
        """A batch about to be processed; False if its acquisition is not running. Registering
        a batch again is harmless (a resend)."""
        acq = self._acq(acquisition)
        if acq is None:
            return False
        if not acq.merger.is_registered(info.index) and info.index > acq.merger.merged_through:
            acq.register(info)
        return True

    def states_for(self, acquisition: int, index: int) -> States | None:
        """The published states a registered batch needs; None while some are missing (or
        when the acquisition is not running: see :meth:`is_running`)."""
        acq = self._acq(acquisition)
        return acq.merger.states_for(index) if acq is not None else None

    def is_running(self, acquisition: int) -> bool:
        return self._acq(acquisition) is not None

    def merge(self, acquisition: int, info: BatchInfo, partial: Partials) -> int:
        """A processed batch (any order); returns the frames processed so far, -1 if the
        acquisition is not running (aborted meanwhile: the partial is dropped)."""
        acq = self._acq(acquisition)
        if acq is None:
            return -1
        self.register(acquisition, info)
        frames = partial.pop(FRAMES_KEY, None)
        dropped: dict[str, int] = partial.pop(DROPPED_KEY, None) or {}
        acq.drops.update(dropped)
        acq.merger.add(info.index, partial, dropped=sum(dropped.values()))
        acq.merged()
        if frames is not None:
            self._frames.put(info.index, frames)
        self._progress(acq)
        return acq.merger.processed_frames

    def skip(self, acquisition: int, info: BatchInfo) -> None:
        """A batch the ingest dropped (overflow): merged as empty, not counted."""
        acq = self._acq(acquisition)
        if acq is not None:
            acq.skip(info)
            self._progress(acq)

    def give_up(self, acquisition: int, info: BatchInfo) -> None:
        """A batch that could not be processed: merged as empty, not counted."""
        acq = self._acq(acquisition)
        if acq is not None:
            self.register(acquisition, info)
            acq.merger.add(info.index, acq.chain.empty(), count=False)
            self._progress(acq)

    def end(self, acquisition: int, batches: int, ledger: Ledger,
            error: str | None = None, timing: Mapping[str, float] | None = None) -> None:
        """No batch after ``batches`` will come; ``ledger`` is the acquisition's ledger
        without its processed counts; ``error``: why it failed."""
        acq = self._acq(acquisition)
        if acq is None:  # no batch ever came: no frame, or its chain could not be built
            if acquisition not in self.done and acquisition not in self.finishing:
                self._empty(acquisition, "failed" if error else "finished", ledger, error)
            return
        acq.end(batches, ledger, timing)
        self._progress(acq)

    def abort(self, acquisition: int, ledger: Ledger, error: str | None = None) -> None:
        """Discard the acquisition (its result says ``aborted``, with its ledger), or, with
        ``error``, fail it: what it merged so far is kept and written, every received frame
        not processed is dropped as ``stage_failed``."""
        acq = self._acq(acquisition)
        if acq is None:
            if acquisition not in self.done and acquisition not in self.finishing:
                # ended before its first batch was merged
                self._empty(acquisition, "failed" if error else "aborted",
                            _unaccounted(ledger, 0, "stage_failed" if error else "aborted"),
                            error)
            return
        self.current = None
        self._frames.clear()
        if error is None:
            acq.ingest_ledger = _unaccounted(ledger.with_drops(acq.drops),
                                             acq.merger.processed_frames, "aborted")
            acq.drops.clear()
            self._store(acq.result("aborted"))
            self._io.append(Discard(acquisition))
            return
        acq.ingest_ledger = _unaccounted(ledger.with_drops(acq.drops),
                                         acq.merger.processed_frames)
        acq.drops.clear()
        result = acq.result("failed", error)
        self.finishing[acquisition] = result
        self._io.append(Finish(result, acq.chain.outputs_spec(),
                               {"reducers": acq.chain.specs(), "config": self.settings}))
        logger.error("acquisition %d failed: %s", acquisition, error)

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep the ingest's latest state (for an ingest that restarts)."""
        if self.last_checkpoint is None or checkpoint.sequence > self.last_checkpoint.sequence:
            self.last_checkpoint = checkpoint

    def recall(self) -> tuple[Checkpoint | None, bool]:
        """The ingest's latest checkpoint, and whether its running acquisition (if any) has
        ended here (else its restarted successor fails it)."""
        cp = self.last_checkpoint
        ended = cp is None or cp.running is None or self.result(cp.running) is not None or \
            cp.running in self.finishing
        return cp, ended

    def apply(self, event: ResultsEvent) -> None:
        """An event of the ingest (through the dispatcher), in order."""
        if isinstance(event, Begin):
            self.begin(event.setup, event.detector)
        elif isinstance(event, Announce):
            self.reconfigure(event.setup)
        elif isinstance(event, Skip):
            self.skip(event.acquisition, event.info)
        elif isinstance(event, End):
            self.end(event.acquisition, event.batches, event.ledger, event.error,
                     event.timing)
        elif isinstance(event, Aborted):
            self.abort(event.acquisition, event.ledger, event.error)
        else:
            self.checkpoint(event)

    def reset_pedestal(self) -> None:
        """Forget the state carried between acquisitions (the next one starts fresh)."""
        self.carried = None

    # -- queries ------------------------------------------------------------------------------
    def result(self, acquisition: int) -> AcquisitionResult | None:
        """The result of an ended acquisition (None while it runs or its file is written)."""
        return self.done.get(acquisition)

    def snapshot(self) -> Snapshot:
        """Outputs of the running acquisition, else of the last one that ended."""
        cur = self.current
        if cur is not None:
            return Snapshot(cur.acquisition, True, cur.merger.processed_frames,
                            cur.merger.outputs(), self.clock())
        last = self._last()
        if last is None:
            return Snapshot(time=self.clock())
        return Snapshot(last.acquisition, False, last.ledger.processed, last.outputs,
                        last.finished)

    def status(self) -> ResultsStatus:
        cur = self.current
        last = self._last()
        running = cur.acquisition if cur is not None else None
        processed = cur.merger.processed_frames if cur is not None else 0
        if running != self._rate_for:
            self._rate.reset()
            self._rate_for = running
        rate = self._rate.update(processed) if cur is not None else 0.0
        return ResultsStatus(
            running, processed, cur.merger.processed_batches if cur is not None else 0, rate,
            dict(cur.drops) if cur is not None else {},
            last.acquisition if last is not None else None,
            last.ledger if last is not None else None,
            last.outcome if last is not None else None,
            last.warnings if last is not None else (),
            last.file if last is not None else None,
            last is not None and last.acquisition in self.finishing,
            dict(cur.timing) if cur is not None else {},
            dict(last.timings) if last is not None else {})

    # -- file work ----------------------------------------------------------------------------
    def take_io(self) -> list[IoOp]:
        """The file operations queued since the last call, in the order they must run."""
        ops, self._io = self._io, []
        return ops

    def io_done(self, op: IoOp, value: Any = None) -> None:
        """``op`` ran (``value``: what it returned); a finished result is stored now."""
        if isinstance(op, Finish):
            result = self.finishing.pop(op.result.acquisition, op.result)
            self._store(result)

    # -- internals ----------------------------------------------------------------------------
    def _acq(self, acquisition: int) -> Acquisition | None:
        cur = self.current
        return cur if cur is not None and cur.acquisition == acquisition else None

    def _progress(self, acq: Acquisition) -> None:
        for frames, numbers in self._frames.due(acq.merger.merged_through):  # batch order
            self._io.append(AppendFrames(frames, numbers))
        if not acq.complete:
            return
        self.carried = acq.merger.carry_over()
        result = acq.result("finished")
        result.finished = self.clock()
        self.current = None
        self.finishing[acq.acquisition] = result
        settings = {"reducers": acq.chain.specs(), "config": self.settings}
        self._io.append(Finish(result, acq.chain.outputs_spec(), settings))
        logger.info("acquisition %d finished: %d frames processed in %.2f s",
                    acq.acquisition, result.ledger.processed, result.duration)

    def _empty(self, acquisition: int, outcome: Outcome, ledger: Ledger,
               error: str | None = None) -> None:
        now = self.clock()
        self._store(AcquisitionResult(acquisition, outcome, {}, ledger.with_processed(0, 0),
                                      now, now, error=error))

    def _store(self, result: AcquisitionResult) -> None:
        self.done[result.acquisition] = result
        while len(self.done) > self.keep:
            self.done.pop(next(iter(self.done)))

    def _last(self) -> AcquisitionResult | None:
        candidates = [*self.done.values(), *self.finishing.values()]
        return max(candidates, key=lambda r: r.acquisition) if candidates else None


def _unaccounted(ledger: Ledger, processed: int, reason: str = "stage_failed") -> Ledger:
    """A failed or aborted acquisition's ledger: every received frame neither processed nor
    dropped for another reason is dropped as ``reason`` (every frame accounted for, once: a
    batch the ingest counted as ``reason`` while it was in flight, whose partial was merged
    before the abort arrived here, is processed)."""
    others = {k: v for k, v in ledger.dropped.items() if k != reason}
    missing = ledger.received - processed - sum(others.values())
    if missing > 0:
        others[reason] = missing
    # a frame processed was received, also when the ledger came from an ingest that knew
    # only part of them (a restarted one, one of several clients sharing a stream)
    received = max(ledger.received, processed + sum(others.values()))
    return replace(ledger, received=received, dropped=others)
