"""IngestActor: receive, account, batch, store once, dispatch with bounded work in flight.

Only header parsing runs on this actor's event loop; raw pixels are not copied until
``ray.put`` stores each batch (the one copy), compressed payloads are concatenated.
Every batch is registered with the ResultsActor (which hands out the pedestal states it
needs), processed by a ProcessingActor and merged; its ObjectRefs are released as soon as
the merge is acknowledged, so the object store holds at most ``max_inflight`` batches and
at most ``store_budget`` bytes of them (a batch alone may exceed it), and never spills.
A batch whose worker died is sent again (to the restarted or another worker) from the
object store: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.config import PipelineConfig
from actors.core.batch import BatchAssembler, FrameBatch
from actors.core.merger import BatchInfo
from actors.core.setup import ChainSetup
from actors.stream.ingest_base import IngestAcquisition, IngestBase
from actors.wire.model import Message

logger = logging.getLogger(__name__)

#: attempts per batch before it is given up (dropped with reason "processing_failed")
MAX_ATTEMPTS = 5


@dataclass
class InFlight:
    batch: FrameBatch  # without its data: the object store holds that (batch_ref)
    nbytes: int
    info: BatchInfo
    batch_ref: Any
    states_ref: Any
    setup_ref: Any
    ack: asyncio.Future[Any]
    worker: int
    attempts: int = 1


@dataclass
class RayAcquisition(IngestAcquisition):
    """The Ray ingest's state for one acquisition: the stored setup, the batches in flight."""

    setup_ref: Any = None
    inflight: dict[int, InFlight] = field(default_factory=dict)


class IngestCore(IngestBase[RayAcquisition]):
    """The ingest logic; the Ray actor below is a thin shell around it."""

    def __init__(self, config: PipelineConfig, results: Any, workers: list[Any],
                 store_budget: int | None = None) -> None:
        super().__init__(config)
        self.store_budget = store_budget  # bytes of batches in flight at most (None: any)
        self.results = results
        self.workers = workers
        self.last_acquisition = 0
        self.timing: dict[str, float] = defaultdict(float)  # seconds spent waiting, per cause
        self.inflight_bytes = 0  # bytes of batches this actor holds in the object store
        self.peak_inflight_bytes = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._reaper_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        self.receiver.open()
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._receive_loop(), name="ingest receive")
        self._reaper_task = loop.create_task(self._reap_loop(), name="ingest reaper")

    async def close(self) -> None:
        for task in (self._loop_task, self._reaper_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.receiver.close()

    # -- commands -----------------------------------------------------------------------------
    def start(self, acquisition: int | None = None) -> int:
        """Start an acquisition; numbers are handed out here (the last one + 1) so that every
        driver of these actors (Python API, Tango) gets a fresh one."""
        if self.acq is not None:
            raise RuntimeError(f"acquisition {self.acq.acquisition} is still running")
        if acquisition is None:
            acquisition = self.last_acquisition + 1
        elif acquisition <= self.last_acquisition:
            raise ValueError(f"acquisition {acquisition} already used (last: "
                             f"{self.last_acquisition})")
        self.last_acquisition = acquisition
        series = self.receiver.ledger.series
        if series is not None and series.next_frame > 0:
            # the previous series never sent its end (e.g. an sls acquisition stopped by
            # hand): close it, or the new frames would look like duplicates of the old
            self.receiver.ledger.end_series()
        self.acq = RayAcquisition(acquisition, self.specs, self.receiver.ledger.snapshot())
        self._finished.clear()
        logger.info("acquisition %d started", acquisition)
        return acquisition

    async def stop(self, acquisition: int) -> None:
        """No more frames for this acquisition: flush, then declare the end."""
        acq = self.acq
        if acq is not None and acq.acquisition == acquisition:
            await self._end(acq, "stop")

    async def abort(self, acquisition: int) -> None:
        acq = self.acq
        if acq is None or acq.acquisition != acquisition:
            return
        self.acq = None
        pending = acq.assembler.discard() if acq.assembler else 0
        acq.dropped["aborted"] += pending + sum(f.batch.n for f in acq.inflight.values())
        self.inflight_bytes -= sum(f.nbytes for f in acq.inflight.values())
        acq.inflight.clear()
        await self.results.abort.remote(acquisition, self._ledger(acq))
        self._finished.set()

    async def wait_finished(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- receiving ------------------------------------------------------------------------------
    async def _next(self, timeout: float) -> Message | None:
        return await self.receiver.recv(timeout=timeout)

    async def _configure(self, acq: RayAcquisition, setup: ChainSetup) -> None:
        """Build, store and announce the chain setup of the first frame."""
        acq.setup = setup
        acq.chain = setup.build()
        acq.setup_ref = ray.put(setup)
        acq.assembler = BatchAssembler(acq.acquisition, setup.geometry,
                                       self._batch_frames(setup.geometry.nbytes),
                                       acq.chain.epochs, self.config.source.channel,
                                       buffer_factory=None)
        await self.results.begin.remote(acq.setup_ref)

    def _batch_frames(self, frame_bytes: int) -> int:
        """``batch.max_frames``, or fewer when ``max_inflight`` such batches would not fit
        the store budget (else large frames would leave one batch in flight, one worker
        busy)."""
        frames = self.config.batch.max_frames
        budget = self.store_budget
        if budget is not None and frame_bytes > 0:
            fit = max(1, budget // (self.config.max_inflight * frame_bytes))
            if fit < frames:
                logger.info("batches of %d frames (not %d): %d in flight fit the object-store "
                            "budget of %.0f MB", fit, frames, self.config.max_inflight,
                            budget / 1e6)
                return int(fit)
        return frames

    async def _announce(self, acq: RayAcquisition) -> None:
        acq.setup_ref = ray.put(acq.setup)
        await self.results.reconfigure.remote(acq.setup_ref)

    # -- dispatching ------------------------------------------------------------------------------
    async def _dispatch_closed(self, acq: RayAcquisition, batch: FrameBatch | None) -> None:
        if batch is None:
            return
        assert acq.chain is not None
        info = BatchInfo(batch.index, batch.first_frame, batch.last_frame, batch.n,
                         acq.chain.state_needed(batch.first_frame, batch.last_frame))
        t0 = time.perf_counter()
        if self._full(acq, batch.nbytes):
            if self.config.overflow == "drop":
                acq.dropped["overflow"] += batch.n
                await self.results.skip.remote(acq.acquisition, info)
                return
            await self._wait_for_room(acq, batch.nbytes)
        t1 = time.perf_counter()
        batch_ref = ray.put(batch)  # the one copy into the object store
        t2 = time.perf_counter()
        states_ref = None
        if info.keys:
            # dispatch only once its states exist: a processing task never waits on
            # another batch, so no worker queue can deadlock (e.g. after a resend)
            if not await self.results.register.remote(acq.acquisition, info):
                return  # aborted meanwhile
            states_ref = self.results.states.remote(acq.acquisition, info.index)
        self.timing["wait_room"] += t1 - t0
        self.timing["put"] += t2 - t1
        self.timing["wait_states"] += time.perf_counter() - t2
        nbytes = batch.nbytes
        self.inflight_bytes += nbytes
        self.peak_inflight_bytes = max(self.peak_inflight_bytes, self.inflight_bytes)
        # keep no reference to the received messages: ZMQ frees them now, not when the
        # batch is merged (the heap reuses warm pages instead of faulting in fresh ones)
        self._send(acq, batch.without_data(), nbytes, info, batch_ref, states_ref,
                   attempts=1)
        acq.dispatched_frames += batch.n
        acq.dispatched_batches += 1

    def _send(self, acq: RayAcquisition, batch: FrameBatch, nbytes: int, info: BatchInfo,
              batch_ref: Any, states_ref: Any, attempts: int, avoid: int | None = None) -> None:
        load = Counter(f.worker for f in acq.inflight.values())
        candidates = [i for i in range(len(self.workers)) if i != avoid] or [avoid or 0]
        worker = min(candidates, key=lambda i: (load[i], (i - batch.index) % len(self.workers)))
        partial_ref = self.workers[worker].process.remote(batch_ref, states_ref, acq.setup_ref)
        ack_ref = self.results.merge.remote(acq.acquisition, info, partial_ref)
        acq.inflight[batch.index] = InFlight(batch, nbytes, info, batch_ref, states_ref,
                                             acq.setup_ref,
                                             asyncio.wrap_future(ack_ref.future()), worker,
                                             attempts)
        self._wake.set()

    def _full(self, acq: RayAcquisition, nbytes: int) -> bool:
        """No room for another batch of ``nbytes``: ``max_inflight`` batches in flight, or
        the store budget would be exceeded (a batch may always go when none is in flight)."""
        if len(acq.inflight) >= self.config.max_inflight:
            return True
        budget = self.store_budget
        return bool(acq.inflight) and budget is not None and \
            self.inflight_bytes + nbytes > budget

    async def _wait_for_room(self, acq: RayAcquisition, nbytes: int) -> None:
        """overflow=block: stop reading until a batch in flight finishes."""
        while self._full(acq, nbytes) and self.acq is acq:
            futures = [f.ack for f in acq.inflight.values()]
            await asyncio.wait(futures, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            self._reap(acq)

    async def _reap_loop(self) -> None:
        """Release finished batches promptly and resend those whose worker died."""
        while True:
            acq = self.acq
            if acq is None or not acq.inflight:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            await asyncio.wait([f.ack for f in acq.inflight.values()], timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            self._reap(acq)
            if acq.ending and not acq.inflight and self.acq is acq:
                await self._declare_end(acq)

    def _reap(self, acq: RayAcquisition) -> None:
        for index, f in list(acq.inflight.items()):
            if not f.ack.done():
                continue
            del acq.inflight[index]  # drops the refs: the object store frees the batch
            self.inflight_bytes -= f.nbytes
            exc = f.ack.exception()
            if exc is None:
                continue
            if f.attempts >= MAX_ATTEMPTS or not _is_worker_failure(exc):
                logger.error("batch %d (frames %d..%d) failed after %d attempt(s): %s", index,
                             f.batch.first_frame, f.batch.last_frame, f.attempts, exc)
                acq.dropped["processing_failed"] += f.batch.n
                self.results.give_up.remote(acq.acquisition, index)
                continue
            logger.warning("worker %d failed on batch %d (%s); sending it again", f.worker,
                           index, type(exc).__name__)
            self._send(acq, f.batch, f.nbytes, f.info, f.batch_ref, f.states_ref,
                       f.attempts + 1, avoid=f.worker)

    # -- ending ---------------------------------------------------------------------------------
    async def _end(self, acq: RayAcquisition, why: str) -> None:
        if acq.ending:
            return
        if acq.assembler is not None:
            await self._dispatch_closed(acq, acq.assembler.flush())
        acq.ending = True
        logger.info("acquisition %d ending (%s): %d frames received", acq.acquisition, why,
                    acq.received)
        if not acq.inflight:
            await self._declare_end(acq)
        else:
            self._wake.set()

    async def _declare_end(self, acq: RayAcquisition) -> None:
        if self.acq is not acq:
            return
        self.acq = None
        batches = acq.assembler.next_index if acq.assembler else 0
        await self.results.end.remote(acq.acquisition, batches, self._ledger(acq))
        self._finished.set()

    # -- status ----------------------------------------------------------------------------------
    def _inflight_batches(self, acq: RayAcquisition) -> int:
        return len(acq.inflight)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "last_acquisition": self.last_acquisition,
                "inflight_bytes": self.inflight_bytes,
                "peak_inflight_bytes": self.peak_inflight_bytes, "timing": dict(self.timing)}


def _is_worker_failure(exc: BaseException) -> bool:
    """A dead or unreachable worker (retry elsewhere), not an error in the reducers."""
    if isinstance(exc, RayActorError):
        return True
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        return isinstance(cause, RayActorError)
    return False


class Ingest:
    """The async Ray actor around :class:`IngestCore`."""

    def __init__(self, config: PipelineConfig, results: Any, workers: list[Any],
                 store_budget: int | None = None) -> None:
        self.core = IngestCore(config, results, workers, store_budget)

    async def open(self) -> dict[str, Any]:
        await self.core.open()
        return {"node_id": ray.get_runtime_context().get_node_id()}

    async def close(self) -> None:
        await self.core.close()

    async def start(self, acquisition: int | None = None) -> int:
        return self.core.start(acquisition)

    async def stop(self, acquisition: int) -> None:
        await self.core.stop(acquisition)

    async def abort(self, acquisition: int) -> None:
        await self.core.abort(acquisition)

    async def set(self, changes: dict[str, Any]) -> int | None:
        return await self.core.set(changes)

    async def wait_finished(self, timeout: float) -> bool:
        return await self.core.wait_finished(timeout)

    async def status(self) -> dict[str, Any]:
        return self.core.status()


IngestActor: Any = ray.remote(num_cpus=0, max_restarts=0)(Ingest)

