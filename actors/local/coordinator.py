"""The driver's coordinator thread: registers batches, hands them to workers once their
states exist, merges partials, replaces dead workers and resends their batches.

It waits on every connection and process sentinel at once (``multiprocessing.connection.
wait``) and never blocks on a send (each connection has an :class:`Outbox`). All its state
is guarded by the results stage's lock, which API threads take to read.

Exactly-once processing: a batch is in :attr:`Coordinator.waiting` (its states or a worker
are missing) or in :attr:`Coordinator.inflight` (sent to one live worker) until its partial
is merged, it is given up, or its acquisition is aborted; its slot goes back to the ingest
only then. When a worker dies, its batches go back to ``waiting`` (their slots are untouched)
and are sent again; a dead worker's connection is dropped, so a partial can never arrive
twice.
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

from actors.core.setup import ChainSetup
from actors.local import processes
from actors.local.channel import Calls, Outbox
from actors.local.messages import (
    Aborted,
    Begin,
    Call,
    Closed,
    Detach,
    Done,
    End,
    Failed,
    Fault,
    Finished,
    Free,
    Ready,
    Reconfigure,
    Reply,
    ResultBlock,
    ResultFree,
    SetupKey,
    SetupMsg,
    Skip,
    SlotBatch,
    Stop,
    Task,
)
from actors.local.results import LocalResults
from actors.local.shm import Attachments, RingSpec, SlotManager
from actors.local.worker import worker_main

logger = logging.getLogger(__name__)

#: attempts per batch before it is given up (dropped with reason "processing_failed")
MAX_ATTEMPTS = 5
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
    batches: set[tuple[int, int]] = field(default_factory=set)
    result: tuple[str, int] | None = None  # its result block (name, size)


@dataclass
class Pending:
    """A batch between the ingest and its merged partial."""

    batch: SlotBatch
    attempts: int = 0
    worker: int | None = None
    aborted: bool = False


@dataclass
class IngestHandle:
    process: SpawnProcess
    conn: Connection
    outbox: Outbox
    calls: Calls = field(default_factory=Calls)
    ready: threading.Event = field(default_factory=threading.Event)
    fault: str | None = None


def start_worker(index: int, log_level: int) -> WorkerHandle:
    parent, child = processes.context().Pipe(duplex=True)
    process = processes.start(worker_main, (index, child, log_level), f"rayline-worker-{index}")
    child.close()  # only the worker holds its end: its death is an EOF here
    return WorkerHandle(index, process, parent, Outbox(parent, f"worker {index}"))


class Coordinator:
    """Owns the processes' connections and the dispatch state; runs in one thread."""

    def __init__(self, results: LocalResults, ingest: IngestHandle, workers: list[WorkerHandle],
                 slots: SlotManager, log_level: int) -> None:
        self.results = results
        self.lock = results.changed
        self.ingest = ingest
        self.workers = workers
        self.slots = slots
        self.log_level = log_level
        self.waiting: dict[tuple[int, int], Pending] = {}
        self.inflight: dict[tuple[int, int], Pending] = {}
        self.setups: dict[SetupKey, ChainSetup] = {}
        self.ending: dict[int, End] = {}
        self.drops: dict[int, Counter[str]] = {}
        self.ring: RingSpec | None = None
        self.generation = 0
        self.startup_failures: Counter[int] = Counter()
        self.restarts = 0
        self.fault: str | None = None
        self.ingest_alive = True
        self.result_blocks = Attachments()  # the workers' result blocks, mapped here
        self.closing = False  # set by the pipeline before it asks the processes to exit
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="rayline-coordinator",
                                        daemon=True)

    # -- thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
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
            for w in self.workers:
                watched += [w.conn, w.process.sentinel]
            ready = wait(watched, timeout=1.0)
            if self._stop.is_set():
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            try:
                with self.lock:
                    self._step()
            except Exception:  # a bug here must not leave the pipeline silently stuck
                logger.exception("coordinator step failed")
                self.fault = "coordinator error (see log)"

    def wake(self) -> None:
        os.write(self._wake_w, b"x")

    def _step(self) -> None:
        """Read every complete message, then handle exits, then dispatch and finish."""
        if self.ingest_alive:
            self._drain(self.ingest.conn, self._on_ingest)
        for w in list(self.workers):
            self._drain(w.conn, partial(self._on_worker, w))
        if self.ingest_alive and not self.ingest.process.is_alive():
            self._ingest_lost()
        for w in list(self.workers):
            if not w.process.is_alive():
                self._worker_died(w)
        self._dispatch()
        self._finish_endings()

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
        ing = self.ingest
        self.ingest_alive = False
        ing.fault = ing.fault or f"ingest process exited with code {ing.process.exitcode}"
        if not self.closing:
            logger.error("%s", ing.fault)
        ing.calls.fail_all(RuntimeError(ing.fault))
        ing.ready.set()

    def _on_ingest(self, msg: object) -> None:
        if isinstance(msg, Closed):
            self._on_closed(msg.batch)
        elif isinstance(msg, Reply):
            self.ingest.calls.resolve(msg)
        elif isinstance(msg, Begin):
            self._on_begin(msg.setup)
        elif isinstance(msg, Reconfigure):
            self.results.reconfigure(msg.setup)
            self._add_setup(msg.setup)
        elif isinstance(msg, Skip):
            self.results.skip(msg.acquisition, msg.info)
        elif isinstance(msg, End):
            self.ending[msg.acquisition] = msg
        elif isinstance(msg, Aborted):
            self._on_aborted(msg)
        elif isinstance(msg, Call):
            self._answer_ingest(msg)
        elif isinstance(msg, Ready):
            self.ingest.ready.set()
        elif isinstance(msg, Fault):
            self.ingest.fault = msg.error
            self.ingest.ready.set()
        else:
            logger.error("coordinator: unexpected message from the ingest: %r", msg)

    def _answer_ingest(self, call: Call) -> None:
        try:
            if call.method != "ring":
                raise ValueError(f"unknown call {call.method!r}")
            value: Any = self._new_ring(*call.args)
        except Exception as exc:
            self.ingest.outbox.send(Reply(call.id, False, exc))
        else:
            self.ingest.outbox.send(Reply(call.id, True, value))

    def _new_ring(self, slot_bytes: int, nslots: int, old: int | None) -> RingSpec:
        """A ring of ``nslots`` blocks of ``slot_bytes``; the ingest no longer uses the old
        one (it asks only when every slot of it is back)."""
        if self.ring is not None:
            for w in self.workers:
                w.outbox.send(Detach(self.ring.names))
            for name in self.ring.names:
                self.slots.release(name)
        self.generation += 1
        names: list[str] = []
        try:
            for _ in range(nslots):
                names.append(self.slots.create(slot_bytes))
        except Exception:
            for name in names:
                self.slots.release(name)
            self.ring = None
            raise
        self.ring = RingSpec(self.generation, tuple(names), slot_bytes)
        logger.info("ring %d: %d slots of %.1f MB in shared memory", self.generation, nslots,
                    slot_bytes / 1e6)
        return self.ring

    def _on_begin(self, setup: ChainSetup) -> None:
        live = {setup.acquisition} | {k[0] for k in (*self.waiting, *self.inflight)}
        self.setups = {k: v for k, v in self.setups.items() if k[0] in live}
        self.results.begin(setup)
        self.drops[setup.acquisition] = Counter()
        self._add_setup(setup)

    def _add_setup(self, setup: ChainSetup) -> None:
        key = (setup.acquisition, setup.version)
        self.setups[key] = setup
        for w in self.workers:  # workers build the chain before the first batch arrives
            w.outbox.send(SetupMsg(setup))
            w.setups.add(key)

    def _on_closed(self, batch: SlotBatch) -> None:
        if not self.results.register(batch.acquisition, batch.info):
            self._free(batch)  # aborted meanwhile
            return
        self.waiting[batch.key] = Pending(batch)

    def _on_aborted(self, msg: Aborted) -> None:
        acq = msg.acquisition
        lost = 0
        for key, p in list(self.waiting.items()):
            if key[0] == acq:
                del self.waiting[key]
                lost += p.batch.n
                self._free(p.batch)
        for key, p in self.inflight.items():
            if key[0] == acq and not p.aborted:
                p.aborted = True  # its worker still reads the slot: freed when it is done
                lost += p.batch.n
        drops = self.drops.pop(acq, Counter())
        drops["aborted"] += lost
        self.ending.pop(acq, None)
        self.results.abort(acq, _with_drops(msg.ledger, drops))

    # -- workers ----------------------------------------------------------------------------------
    def _on_worker(self, w: WorkerHandle, msg: object) -> None:
        if isinstance(msg, Done):
            partial = self._unpack(w, msg)
            p = self._settle(w, (msg.acquisition, msg.index))
            if p is not None and not p.aborted:
                self.results.merge(msg.acquisition, msg.index, partial)
        elif isinstance(msg, Failed):
            p = self._settle(w, (msg.acquisition, msg.index))
            if p is not None and not p.aborted:
                logger.error("batch %d (frames %d..%d) failed: %s", msg.index,
                             p.batch.info.first_frame, p.batch.info.last_frame, msg.error)
                self._give_up(p)
        elif isinstance(msg, Ready):
            w.ready, w.pid = True, msg.pid
            self.startup_failures[w.index] = 0
            self.lock.notify_all()  # open() waits for every worker
        else:
            logger.error("coordinator: unexpected message from worker %d: %r", w.index, msg)

    def _unpack(self, w: WorkerHandle, msg: Done) -> Any:
        """The partial of a Done: copied out of the worker's result block (which is then
        free again), or from the message. Grows the block when a partial did not fit."""
        if msg.block is not None and msg.meta is not None:
            buf = self.result_blocks.get(msg.block).buf
            assert buf is not None
            copies = [bytearray(buf[offset:offset + size]) for offset, size in msg.layout]
            del buf
            partial = pickle.loads(msg.meta, buffers=copies)
            w.outbox.send(ResultFree())
        elif msg.meta is not None:
            partial = pickle.loads(msg.meta)
        else:
            partial = msg.partial
        if msg.want > 0 and not self.closing:
            self._release_result(w)
            size = msg.want + msg.want // 4 + (1 << 20)
            name = self.slots.create(size)
            w.result = (name, size)
            w.outbox.send(ResultBlock(name, size))
        return partial

    def _release_result(self, w: WorkerHandle) -> None:
        if w.result is not None:
            name, w.result = w.result[0], None
            self.result_blocks.close([name])
            self.slots.release(name)

    def _settle(self, w: WorkerHandle, key: tuple[int, int]) -> Pending | None:
        """A worker is done with a batch: take it out of flight and free its slot."""
        w.batches.discard(key)
        p = self.inflight.pop(key, None)
        if p is None:
            logger.error("worker %d answered for batch %s it was not given", w.index, key)
            return None
        self._free(p.batch)
        return p

    def _give_up(self, p: Pending) -> None:
        acq = p.batch.acquisition
        self.drops.setdefault(acq, Counter())["processing_failed"] += p.batch.n
        self.results.give_up(acq, p.batch.index)

    def _worker_died(self, w: WorkerHandle) -> None:
        self._drain(w.conn, partial(self._on_worker, w))  # what it sent before dying
        code = processes.stop(w.process, 0.1)
        self._release_result(w)
        self.workers.remove(w)
        w.outbox.close(timeout=1.0)
        if not w.conn.closed:
            w.conn.close()
        if self._stop.is_set() or self.closing:
            return
        resend = [self.inflight.pop(key) for key in sorted(w.batches) if key in self.inflight]
        logger.warning("worker %d (pid %s) died (exit code %s); sending its %d batch(es) "
                       "again", w.index, w.pid, code, len(resend))
        for p in resend:
            p.worker = None
            if p.aborted:
                self._free(p.batch)
            elif p.attempts >= MAX_ATTEMPTS:
                logger.error("batch %d given up after %d attempts", p.batch.index, p.attempts)
                self._free(p.batch)
                self._give_up(p)
            else:
                self.waiting[p.batch.key] = p
        if not w.ready:
            self.startup_failures[w.index] += 1
        if self.startup_failures[w.index] >= MAX_STARTUP_FAILURES:
            self.fault = f"worker {w.index} died {MAX_STARTUP_FAILURES} times while starting"
            logger.error("%s: not restarting it", self.fault)
            self.lock.notify_all()
            return
        self.restarts += 1
        replacement = start_worker(w.index, self.log_level)
        self.workers.append(replacement)
        self.workers.sort(key=lambda h: h.index)

    # -- dispatching -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if not self.waiting:
            return
        for key in sorted(self.waiting):
            p = self.waiting[key]
            b = p.batch
            states = None
            if b.info.keys:
                states = self.results.states_for(b.acquisition, b.index)
                if states is None:
                    continue  # published once earlier batches are merged
            w = self._pick_worker(b.index)
            if w is None:
                return
            setup = self.setups.get(b.setup_key)
            if setup is None:  # cannot happen: setups arrive before their batches
                logger.error("no chain setup %s for batch %d", b.setup_key, b.index)
                del self.waiting[key]
                self._free(b)
                self._give_up(p)
                continue
            if b.setup_key not in w.setups:
                w.outbox.send(SetupMsg(setup))
                w.setups.add(b.setup_key)
            del self.waiting[key]
            p.attempts += 1
            p.worker = w.index
            self.inflight[key] = p
            w.batches.add(key)
            w.outbox.send(Task(b, states, p.attempts))

    def _pick_worker(self, index: int) -> WorkerHandle | None:
        live = [w for w in self.workers if len(w.batches) < PER_WORKER]
        if not live:
            return None
        n = max(len(self.workers), 1)
        return min(live, key=lambda w: (len(w.batches), (w.index - index) % n))

    def _free(self, batch: SlotBatch) -> None:
        self.ingest.outbox.send(Free(batch.generation, batch.slot))

    # -- ending ---------------------------------------------------------------------------------
    def _finish_endings(self) -> None:
        for acq, end in list(self.ending.items()):
            if any(k[0] == acq for k in (*self.waiting, *self.inflight)):
                continue
            del self.ending[acq]
            drops = self.drops.pop(acq, Counter())
            ledger = _with_drops({**end.ledger, "inflight_batches": 0, "pending": 0}, drops)
            self.results.end(acq, end.batches, ledger)
            self.ingest.outbox.send(Finished(acq))

    # -- queries (API threads, under the lock) ------------------------------------------------
    def extra(self, acquisition: int | None) -> tuple[Counter[str], int]:
        """Drops decided here and batches in flight, for an acquisition's live ledger."""
        if acquisition is None:
            return Counter(), 0
        inflight = sum(1 for k in (*self.waiting, *self.inflight) if k[0] == acquisition)
        return Counter(self.drops.get(acquisition, Counter())), inflight

    def shutdown_workers(self, timeout: float) -> None:
        for w in self.workers:
            w.outbox.send(Stop())
        for w in self.workers:
            processes.stop(w.process, timeout)
            w.outbox.close(timeout=1.0)
            if not w.conn.closed:
                w.conn.close()
        self.workers = []
        self.result_blocks.close()  # the manager unlinks the blocks at shutdown


def _with_drops(ledger: dict[str, Any], drops: Counter[str]) -> dict[str, Any]:
    if not +drops:
        return ledger
    dropped = Counter(ledger.get("dropped", {}))
    dropped.update(drops)
    return {**ledger, "dropped": dict(+dropped), "dropped_total": sum(dropped.values())}
