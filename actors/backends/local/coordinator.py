"""The driver's coordinator thread: the local backend's transport between the ingest
process, the worker processes and the results stage.

Transport only: the shared :class:`~actors.dispatch.dispatcher.Dispatcher` decides which
worker gets which batch, resends a dead worker's batches and gives up failed ones; the
shared :class:`~actors.results.stage.ResultsStage` merges. Here the ingest's actions arrive
over its connection (a handed-on batch as a slot descriptor), tasks go to the workers over
theirs, partials come back (copied out of each worker's result block), slots go back to the
ingest (:class:`~actors.backends.local.messages.Free`) once their batch has left, and dead
worker processes are replaced. The thread waits on every connection and process sentinel at once
and never blocks on a send (each connection has an :class:`Outbox`).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from typing import Any

from actors.backends.local import processes
from actors.backends.local.channel import Calls, Outbox
from actors.backends.local.ingest import GENERATIONS_PER_EPOCH, Recall, ingest_main
from actors.backends.local.messages import (
    Closed,
    Done,
    Failed,
    Fault,
    Finished,
    Free,
    ModuleBatch,
    Ready,
    Reply,
    ResultFree,
    Ring,
    SetupKey,
    SetupMsg,
    SlotBatch,
    Stop,
    Task,
)
from actors.backends.local.shm import Attachments, ManagerAddress, SlotManager
from actors.backends.local.worker import worker_main
from actors.config import PipelineConfig
from actors.core.api import StageDied
from actors.core.events import (
    Aborted,
    Announce,
    Begin,
    Checkpoint,
    End,
    PeerEnd,
    SeriesSeen,
    Skip,
)
from actors.core.setup import ChainSetup
from actors.core.status import DispatchCounts, Ledger
from actors.dispatch.dispatcher import Dispatcher, GiveUp, Job
from actors.ingest.events import EventHandOn, ModuleEvents, ModulePart
from actors.results.stage import ResultsStage

logger = logging.getLogger(__name__)

#: batches sent to one worker at a time (one running, one queued so it never idles)
PER_WORKER = 2
#: a worker slot that dies this many times in a row before becoming ready is not restarted
MAX_STARTUP_FAILURES = 3


@dataclass
class WorkerHandle:
    index: int
    process: SpawnProcess
    conn: Connection
    outbox: Outbox
    ready: bool = False
    pid: int | None = None
    setups: set[SetupKey] = field(default_factory=set)
    result: str | None = None  # its result block, mapped here


@dataclass
class IngestHandle:
    process: SpawnProcess
    conn: Connection
    outbox: Outbox
    epoch: int = 0  # how many ingest processes came before this one
    calls: Calls = field(default_factory=Calls)
    ready: threading.Event = field(default_factory=threading.Event)
    fault: str | None = None
    source: str = "source0"  # the stream it reads


#: ingest epochs of the i-th source start at i * SOURCE_EPOCHS: the ring generations of the
#: ingests of a multi-module detector never meet
SOURCE_EPOCHS = 1000


def start_ingest(config: PipelineConfig, manager: ManagerAddress, log_level: int,
                 recall: Recall = (None, True), epoch: int = 0, *, module: bool = False,
                 source: str = "source0") -> IngestHandle:
    parent, child = processes.context().Pipe(duplex=True)
    process = processes.start(ingest_main, (config, child, manager, log_level, recall, epoch,
                                            module),
                              f"rayline-ingest-{source}" if module else "rayline-ingest")
    child.close()
    return IngestHandle(process, parent, Outbox(parent, f"ingest {source}"), epoch,
                        source=source)


def start_worker(index: int, manager: ManagerAddress, log_level: int) -> WorkerHandle:
    parent, child = processes.context().Pipe(duplex=True)
    process = processes.start(worker_main, (index, child, manager, log_level),
                              f"rayline-worker-{index}")
    child.close()  # only the worker holds its end: its death is an EOF here
    return WorkerHandle(index, process, parent, Outbox(parent, f"worker {index}"))


class Coordinator:
    """Owns the processes' connections and the dispatch state; runs in one thread."""

    def __init__(self, results: ResultsStage, config: PipelineConfig, slots: SlotManager,
                 log_level: int) -> None:
        self.results = results
        self.config = config
        manager = slots.where()
        self.names = config.source_names
        modular = config.modular
        self.modules: ModuleEvents[SlotBatch] | None = ModuleEvents.for_config(config) \
            if modular else None
        self.ingest = start_ingest(config, manager, log_level, module=modular,
                                   source=self.names[0])
        #: the other modules' ingests (a multi-module detector); the first source's is
        #: ``ingest``, which numbers the acquisitions and keeps the checkpoint
        self.secondaries: dict[str, IngestHandle] = {
            name: start_ingest(config.for_source(i), manager, log_level,
                               epoch=i * SOURCE_EPOCHS, module=True, source=name)
            for i, name in enumerate(self.names) if i > 0}
        workers = [start_worker(i, manager, log_level) for i in range(config.workers)]
        self.workers = {w.index: w for w in workers}
        self.slots = slots
        self.log_level = log_level
        self.dispatcher: Dispatcher[SlotBatch | ModuleBatch] = Dispatcher(
            len(workers), per_worker=PER_WORKER)
        self.setups: dict[SetupKey, ChainSetup] = {}
        self.startup_failures: Counter[int] = Counter()
        self.restarts = 0  # worker processes started to replace dead ones
        self.ingest_restarts = 0
        self.rings: dict[int, tuple[str, ...]] = {}  # the ingest's rings, by generation
        self.dead_rings: dict[int, tuple[str, ...]] = {}  # of a dead ingest, until unread
        self.fault: str | None = None
        self.ingest_alive = True
        self.result_blocks = Attachments()  # the workers' result blocks, mapped here
        self.closing = False  # set by the pipeline before it asks the processes to exit
        self.lock = threading.Condition()  # the dispatch state, for API threads
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="rayline-coordinator",
                                        daemon=True)

    # -- thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("coordinator thread did not stop within %.0f s", timeout)
            return
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stop.is_set():
            watched: list[Any] = [self._wake_r]
            if self.ingest_alive:
                watched += [self.ingest.conn, self.ingest.process.sentinel]
            for h in self.secondaries.values():
                if not h.conn.closed:
                    watched += [h.conn, h.process.sentinel]
            for w in self.workers.values():
                watched += [w.conn, w.process.sentinel]
            ready = wait(watched, timeout=1.0)
            if self._stop.is_set():
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            try:
                with self.lock:
                    self._step()
                    self.lock.notify_all()
            except Exception:  # a bug here must not leave the pipeline silently stuck
                logger.exception("coordinator step failed")
                self.fault = "coordinator error (see log)"

    def _step(self) -> None:
        """Read every complete message, then handle exits, then dispatch and finish."""
        if self.ingest_alive:
            self._drain(self.ingest.conn, self._on_ingest)
        for h in list(self.secondaries.values()):
            self._drain(h.conn, partial(self._on_secondary, h))
        for w in list(self.workers.values()):
            self._drain(w.conn, partial(self._on_worker, w))
        if self.ingest_alive and not self.ingest.process.is_alive():
            self._ingest_lost()
        for h in list(self.secondaries.values()):
            if not h.conn.closed and not h.process.is_alive():
                self._secondary_lost(h)
        if self.modules is not None:
            self._module_events(self.modules.due())
        for w in list(self.workers.values()):
            if not w.process.is_alive():
                self._worker_died(w)
        self._dispatch()
        self._release_dead_rings()

    @staticmethod
    def _drain(conn: Connection, handle: Callable[[Any], None]) -> None:
        """Handle every message already there; a broken connection is left to the exit
        check (its process is dead or dying)."""
        try:
            while not conn.closed and conn.poll():
                handle(conn.recv())
        except (EOFError, OSError):
            pass

    # -- the ingest ------------------------------------------------------------------------------
    def _ingest_lost(self) -> None:
        """The ingest process died: what it had running fails now (unless it had ended it),
        its ring goes once no batch reads it, and a new ingest resumes from its checkpoint;
        calls to the dead one fail (StageDied) once the new one takes calls."""
        old = self.ingest
        self._drain(old.conn, self._on_ingest)  # what it sent before dying
        code = processes.stop(old.process, 0.1)
        why = (f"the ingest process died (exit code {code}); frames it held in its open "
               "batch are not counted")
        started = old.ready.is_set() and old.fault is None
        old.fault = old.fault or why
        old.ready.set()
        old.outbox.close(timeout=1.0)
        if not old.conn.closed:
            old.conn.close()
        self._rings_died(old)
        try:
            self._restart_ingest(old, why, started)
        finally:
            old.calls.fail_all(StageDied(old.fault))

    def _restart_ingest(self, old: IngestHandle, why: str, started: bool) -> None:
        if self._stop.is_set() or self.closing:
            self.ingest_alive = False
            return
        self._fail_running(why)
        if not started:
            self.startup_failures[-1] += 1
        if self.startup_failures[-1] >= MAX_STARTUP_FAILURES:
            self.ingest_alive = False
            self.fault = f"the ingest process died {MAX_STARTUP_FAILURES} times while starting"
            logger.error("%s: not restarting it", self.fault)
            return
        logger.error("%s: restarting it", why)
        checkpoint, _ = self.results.recall()
        self.ingest = start_ingest(self.config, self.slots.where(), self.log_level,
                                   (checkpoint, True), old.epoch + 1,
                                   module=self.config.modular, source=self.names[0])
        self.ingest_restarts += 1

    def _fail_running(self, why: str) -> None:
        """Fail the acquisition a dead ingest had running (not one it had ended: the batches
        it handed on still complete here)."""
        checkpoint, ended = self.results.recall()
        if checkpoint is None or checkpoint.running is None or ended or \
                self.dispatcher.ending(checkpoint.running):
            return
        running = checkpoint.running
        ledger = checkpoint.ledger or Ledger(running)
        if self.modules is not None:  # the other modules' ingests let it go (idle again)
            ledger = self.modules.failed_ledger(running, ledger)
            self.modules.discard(running)
            for part in self.modules.take_refused():
                self._free_slot(part.stored, part.source)
            for h in [self.ingest, *self.secondaries.values()]:
                if not h.conn.closed:
                    call, _ = h.calls.new("abort", running)
                    h.outbox.send(call)
        event, released = self.dispatcher.route(Aborted(running, ledger, why))
        for job in released:
            self._free(job)
        if event is not None:
            self.results.apply(event)

    def _release_dead_rings(self) -> None:
        """Unlink a dead ingest's ring once no batch in it is left to read."""
        for generation in list(self.dead_rings):
            if not any(generation in _generations(j.payload) for j in self.dispatcher.jobs()):
                for name in self.dead_rings.pop(generation):
                    try:
                        self.slots.release(name)
                    except (OSError, EOFError) as exc:  # already gone
                        logger.debug("ring block %s not released: %s", name, exc)

    def _on_ingest(self, msg: object) -> None:
        if isinstance(msg, SeriesSeen | PeerEnd):
            self._tell_others(self.ingest, msg)
        elif self.modules is not None and isinstance(msg, Closed | Begin | End | Aborted):
            self._on_module(self.ingest, msg)
        elif self.modules is not None and isinstance(msg, Announce):
            logger.debug("module ingest: %s (runtime parameters apply between "
                         "acquisitions)", msg)
        elif isinstance(msg, Closed):
            self._on_closed(msg.batch)
        elif isinstance(msg, Reply):
            self.ingest.calls.resolve(msg)
        elif isinstance(msg, Begin | Announce | Skip | End | Aborted | Checkpoint):
            if isinstance(msg, Begin | Announce):
                self._add_setup(msg)
            event, released = self.dispatcher.route(msg)
            for job in released:
                self._free(job)
            if event is not None:
                self.results.apply(event)
        elif isinstance(msg, Ring):
            self.rings[msg.generation] = msg.names
        elif isinstance(msg, Ready):
            self.ingest.ready.set()
            self.startup_failures[-1] = 0
        elif isinstance(msg, Fault):
            self.ingest.fault = msg.error
            self.ingest.ready.set()
        else:
            logger.error("coordinator: unexpected message from the ingest: %r", msg)

    # -- a multi-module detector -----------------------------------------------------------------
    def _on_secondary(self, h: IngestHandle, msg: object) -> None:
        if isinstance(msg, SeriesSeen | PeerEnd):
            self._tell_others(h, msg)
        elif isinstance(msg, Closed | Begin | End | Aborted):
            self._on_module(h, msg)
        elif isinstance(msg, Reply):
            h.calls.resolve(msg)
        elif isinstance(msg, Ring):
            self.rings[msg.generation] = msg.names
        elif isinstance(msg, Ready):
            h.ready.set()
        elif isinstance(msg, Fault):
            h.fault = msg.error
            h.ready.set()
        elif not isinstance(msg, Checkpoint | Announce):  # the first source's count
            logger.error("coordinator: unexpected message from ingest %s: %r", h.source, msg)

    def _tell_others(self, h: IngestHandle, msg: SeriesSeen | PeerEnd) -> None:
        """(Clients sharing a stream) what one client read of the series, for the others."""
        for other in [self.ingest, *self.secondaries.values()]:
            if other.source == h.source or other.conn.closed:
                continue
            call, _ = (other.calls.new("series_start", msg.start)
                       if isinstance(msg, SeriesSeen)
                       else other.calls.new("drain", msg.acquisition))
            other.outbox.send(call)

    def _on_module(self, h: IngestHandle, msg: Closed | Begin | End | Aborted) -> None:
        """A module's ingest action, through the event stage (:class:`ModuleEvents`)."""
        m = self.modules
        assert m is not None
        if isinstance(msg, Closed):
            b = msg.batch
            out = m.hand_on(ModulePart(h.source, b.index, b.frame_numbers, b,
                                       b.setup_version, b.acquisition), b.acquisition)
        elif isinstance(msg, Begin):
            out = m.begin(h.source, msg)
        elif isinstance(msg, End):
            out = m.end(h.source, msg)
        else:
            out = m.aborted(h.source, msg)
        self._module_events(out)

    def _module_events(self, events: list[Any]) -> None:
        m = self.modules
        assert m is not None
        for event in events:
            if isinstance(event, EventHandOn):
                self._on_closed(ModuleBatch(event.acquisition, event.info.index,
                                            event.setup_version, event.info,
                                            dict(event.parts), event.layout, event.policy))
                continue
            if isinstance(event, Begin):
                self._add_setup(event)
            routed, released = self.dispatcher.route(event)
            for job in released:
                self._free(job)
            if routed is not None:
                self.results.apply(routed)
        for part in m.take_refused():  # late, or of a failed acquisition: its slot is back
            self._free_slot(part.stored, part.source)

    def _rings_died(self, h: IngestHandle) -> None:
        """The rings of a dead ingest go once no batch in them is left to read (the other
        modules' ingests keep theirs)."""
        for generation in [g for g in self.rings if g // GENERATIONS_PER_EPOCH == h.epoch]:
            self.dead_rings[generation] = self.rings.pop(generation)

    @property
    def _kind(self) -> str:
        """What each source is: a module of the detector, or a client of its stream."""
        return "client" if self.config.shared else "module"

    def _handle(self, source: str) -> IngestHandle:
        return self.secondaries.get(source, self.ingest)

    def _secondary_lost(self, h: IngestHandle) -> None:
        """A module's ingest died: the running acquisition fails (naming it), and it is
        started again for the next one."""
        self._drain(h.conn, partial(self._on_secondary, h))
        code = processes.stop(h.process, 0.1)
        why = (f"the ingest process of {self._kind} {h.source} died (exit code {code}); the "
               "acquisition cannot be assembled")
        h.fault = h.fault or why
        h.ready.set()
        h.outbox.close(timeout=1.0)
        if not h.conn.closed:
            h.conn.close()
        h.calls.fail_all(StageDied(h.fault))
        self._rings_died(h)
        if self._stop.is_set() or self.closing:
            return
        logger.error("%s: restarting it", why)
        self._fail_running(why)
        index = self.names.index(h.source)
        self.secondaries[h.source] = start_ingest(
            self.config.for_source(index), self.slots.where(), self.log_level,
            epoch=h.epoch + 1, module=True, source=h.source)
        self.ingest_restarts += 1

    def _add_setup(self, event: Begin | Announce) -> None:
        setup = event.setup
        if isinstance(event, Begin):  # forget the setups nothing in flight uses
            active = self.dispatcher.active()
            self.setups = {k: v for k, v in self.setups.items() if k[0] in active}
        key = (setup.acquisition, setup.version)
        self.setups[key] = setup
        for w in self.workers.values():  # workers build the chain before the first batch
            w.outbox.send(SetupMsg(setup))
            w.setups.add(key)

    def _on_closed(self, batch: SlotBatch | ModuleBatch) -> None:
        job = Job(batch.acquisition, batch.info, batch, needs_states=bool(batch.info.keys))
        if not self.results.register(batch.acquisition, batch.info):
            self._free(job)  # aborted meanwhile
            return
        self.dispatcher.add(job)

    # -- workers ----------------------------------------------------------------------------------
    def _on_worker(self, w: WorkerHandle, msg: object) -> None:
        if isinstance(msg, Done):
            partial = self._unpack(w, msg)
            job = self.dispatcher.done((msg.acquisition, msg.index))
            if job is not None:
                self._free(job)
                if not job.aborted:
                    self.results.merge(job.acquisition, job.info, partial)
        elif isinstance(msg, Failed):
            out = self.dispatcher.failed((msg.acquisition, msg.index), msg.error)
            if out is not None:
                self._settle(out)
        elif isinstance(msg, Ready):
            w.ready, w.pid = True, msg.pid
            self.startup_failures[w.index] = 0
            self.dispatcher.worker_up(w.index)
        else:
            logger.error("coordinator: unexpected message from worker %d: %r", w.index, msg)

    def _unpack(self, w: WorkerHandle, msg: Done) -> Any:
        """The partial of a Done: copied out of the worker's result block (which is then
        free again), or from the message."""
        if msg.block is None:
            return pickle.loads(msg.meta) if msg.meta is not None else msg.partial
        if w.result != msg.block:  # the worker replaced its block (and released the old)
            self._drop_result(w)
            w.result = msg.block
        buf = self.result_blocks.get(msg.block).buf
        assert buf is not None and msg.meta is not None
        copies = [bytearray(buf[offset:offset + size]) for offset, size in msg.layout]
        del buf
        w.outbox.send(ResultFree())
        return pickle.loads(msg.meta, buffers=copies)

    def _drop_result(self, w: WorkerHandle, release: bool = False) -> None:
        """Unmap a worker's result block here (and unlink it, for a dead worker's)."""
        if w.result is not None:
            name, w.result = w.result, None
            self.result_blocks.close([name])
            if release:
                self.slots.release(name)

    def _worker_died(self, w: WorkerHandle) -> None:
        self._drain(w.conn, partial(self._on_worker, w))  # what it sent before dying
        code = processes.stop(w.process, 0.1)
        self._drop_result(w, release=True)
        del self.workers[w.index]
        w.outbox.close(timeout=1.0)
        if not w.conn.closed:
            w.conn.close()
        if self._stop.is_set() or self.closing:
            return
        lost = self.dispatcher.worker_lost(w.index, f"worker process {w.pid} died (exit code "
                                           f"{code})", restarting=False)
        logger.warning("worker %d (pid %s) died (exit code %s); its batches go again",
                       w.index, w.pid, code)
        for out in lost:
            self._settle(out)
        if not w.ready:
            self.startup_failures[w.index] += 1
        if self.startup_failures[w.index] >= MAX_STARTUP_FAILURES:
            self.fault = f"worker {w.index} died {MAX_STARTUP_FAILURES} times while starting"
            logger.error("%s: not restarting it", self.fault)
            return
        self.restarts += 1
        self.workers[w.index] = start_worker(w.index, self.slots.where(), self.log_level)

    # -- dispatching -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for job in self.dispatcher.needing_states():
            states = self.results.states_now(job.acquisition, job.info.index)
            if states is not None:
                self.dispatcher.ready(job.key, states)
        for send in self.dispatcher.dispatch():
            job, w = send.job, self.workers[send.worker]
            key = (job.acquisition, job.payload.setup_version)
            if key not in w.setups:  # a restarted worker
                w.outbox.send(SetupMsg(self.setups[key]))
                w.setups.add(key)
            w.outbox.send(Task(job.payload, job.states, job.attempts))
        for end in self.dispatcher.ended():
            for h in [self.ingest, *self.secondaries.values()]:
                h.outbox.send(Finished(end.acquisition))  # idle before the result
            self.results.apply(end)

    def _settle(self, out: GiveUp[SlotBatch | ModuleBatch] | Job[SlotBatch | ModuleBatch]
                ) -> None:
        """A job that leaves without a merge: given up (merged as empty) or aborted."""
        if isinstance(out, GiveUp):
            logger.error("batch %d of acquisition %d (frames %d..%d) given up: %s",
                         out.job.info.index, out.job.acquisition, out.job.info.first_frame,
                         out.job.info.last_frame, out.error)
            self.results.give_up(out.job.acquisition, out.job.info)
            out = out.job
        self._free(out)

    def _free(self, job: Job[SlotBatch | ModuleBatch]) -> None:
        b = job.payload
        if isinstance(b, ModuleBatch):
            for source, part in b.parts.items():
                self._free_slot(part, source)
        else:
            self._free_slot(b, self.names[0])

    def _free_slot(self, b: SlotBatch, source: str) -> None:
        """The batch has left: its slot (and room) go back to the ingest that filled it."""
        self._handle(source).outbox.send(Free(b.generation, b.slot, b.acquisition, b.index))

    # -- queries (API threads) -------------------------------------------------------------------
    def counts(self, acquisition: int | None) -> DispatchCounts:
        with self.lock:
            return self.dispatcher.counts(acquisition)

    def ready(self, timeout: float) -> bool:
        """Wait until every worker has started (False: timeout or a worker cannot start)."""
        with self.lock:
            return self.lock.wait_for(
                lambda: self.fault is not None or all(w.ready for w in self.workers.values()),
                timeout) and self.fault is None

    def worker_pids(self) -> list[int]:
        with self.lock:
            return [w.process.pid for _, w in sorted(self.workers.items())
                    if w.process.pid is not None]

    def shutdown_workers(self, timeout: float) -> None:
        for w in self.workers.values():
            w.outbox.send(Stop())
        for w in self.workers.values():
            processes.stop(w.process, timeout)
            w.outbox.close(timeout=1.0)
            if not w.conn.closed:
                w.conn.close()
        self.workers = {}
        self.result_blocks.close()  # the manager unlinks the blocks at shutdown


def _generations(payload: SlotBatch | ModuleBatch) -> frozenset[int]:
    return payload.generations if isinstance(payload, ModuleBatch) else frozenset(
        [payload.generation])
