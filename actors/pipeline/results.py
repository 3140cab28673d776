"""ResultsActor: merges partials in batch order, hands out pedestal states, finalises."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from actors.config import OutputConfig
from actors.core.acquisition import Acquisition, AcquisitionResult
from actors.core.chain import Partials
from actors.core.merger import BatchInfo
from actors.core.ordered import InBatchOrder
from actors.core.setup import FRAMES_KEY, ChainSetup
from actors.output import AcquisitionWriter

logger = logging.getLogger(__name__)


class Results:
    """The single owner of merged results (async actor: all methods share one loop)."""

    def __init__(self, output: OutputConfig | None = None,
                 config: dict[str, Any] | None = None, keep: int = 16) -> None:
        self.current: Acquisition | None = None
        self.carried: dict[str, Any] | None = None
        self.done: dict[int, AcquisitionResult] = {}
        self.keep = keep
        self.writer = AcquisitionWriter(output or OutputConfig(enabled=False))
        self.config_dump = config or {}
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rayline-output")  # ordered I/O
        self._frames: InBatchOrder[tuple[Any, Any]] = InBatchOrder()  # (frames, numbers)
        # merges run concurrently on this actor's loop: one writer of frame blocks at a time
        # keeps them in batch order across the awaits of the file I/O
        self._frames_lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    async def _run_io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _acq(self, acquisition: int) -> Acquisition | None:
        cur = self.current
        return cur if cur is not None and cur.acquisition == acquisition else None

    # -- acquisition lifecycle (called by the ingest) --------------------------------------
    async def begin(self, setup: ChainSetup) -> None:
        if self.current is not None:
            logger.warning("acquisition %d replaced by %d before it ended",
                           self.current.acquisition, setup.acquisition)
        self.current = Acquisition.begin(setup.acquisition, setup.build(), self.carried)
        self._frames.clear()
        if self.writer.enabled:
            await self._run_io(self.writer.prepare, setup.acquisition)
        await self._notify()

    async def reconfigure(self, setup: ChainSetup) -> None:
        acq = self._acq(setup.acquisition)
        if acq is not None:
            acq.chain = acq.merger.chain = setup.build()

    async def register(self, acquisition: int, info: BatchInfo, timeout: float = 600.0) -> bool:
        """Register a batch; returns once the states it needs are published (False if the
        acquisition was aborted meanwhile). The ingest dispatches a stateful batch only
        after this, so no processing task ever waits for another batch."""
        acq = self._acq(acquisition)
        if acq is None:
            return False
        acq.register(info)
        async with asyncio.timeout(timeout), self._changed:
            while acq.merger.states_for(info.index) is None:
                await self._changed.wait()
                if self._acq(acquisition) is None:
                    return False
        return True

    async def states(self, acquisition: int, index: int) -> dict[str, dict[int, Any]] | None:
        """The published states a registered batch needs (None if aborted)."""
        acq = self._acq(acquisition)
        return acq.merger.states_for(index) if acq is not None else None

    async def merge(self, acquisition: int, info: BatchInfo, partial: Partials) -> int:
        """A finished partial; returns the acquisition's processed-frame count. Batches
        without states are registered here (async actor calls may arrive out of order)."""
        acq = self._acq(acquisition)
        if acq is None:
            return -1
        index = info.index
        if not acq.merger.is_registered(index):
            acq.register(info)
        frames = partial.pop(FRAMES_KEY, None)
        acq.merger.add(index, partial)
        if frames is not None:
            self._frames.put(index, frames)
        await self._finish_if_complete(acq)
        await self._notify()
        return acq.merger.processed_frames

    async def skip(self, acquisition: int, info: BatchInfo) -> None:
        acq = self._acq(acquisition)
        if acq is not None:
            acq.skip(info)
            await self._finish_if_complete(acq)
            await self._notify()

    async def give_up(self, acquisition: int, index: int) -> None:
        """A registered batch that could not be processed: merged as empty, not counted."""
        acq = self._acq(acquisition)
        if acq is not None:
            acq.merger.add(index, acq.chain.empty(), count=False)
            await self._finish_if_complete(acq)
            await self._notify()

    async def end(self, acquisition: int, batches: int, ingest_ledger: dict[str, Any]) -> None:
        """The ingest will send no more batches for this acquisition."""
        acq = self._acq(acquisition)
        if acq is None:
            if acquisition not in self.done:  # no frame arrived: an empty result
                now = time.time()
                self._store(AcquisitionResult(acquisition, "finished", {}, {
                    **ingest_ledger, "processed": 0, "processed_batches": 0}, now, now))
                await self._notify()
            return
        acq.end(batches, ingest_ledger)
        await self._finish_if_complete(acq)
        await self._notify()

    async def abort(self, acquisition: int, ingest_ledger: dict[str, Any]) -> None:
        acq = self._acq(acquisition)
        if acq is None:
            return
        acq.ingest_ledger = ingest_ledger
        self._store(acq.result("aborted"))
        self.current = None
        self._frames.clear()
        await self._run_io(self.writer.close)  # an aborted acquisition writes no results
        await self._notify()

    async def _finish_if_complete(self, acq: Acquisition) -> None:
        async with self._frames_lock:
            for block in self._frames.due(acq.merger.merged_through):  # in batch order
                await self._run_io(self.writer.append_frames, *block)
        if not acq.complete or self.current is not acq:  # not yet, or finished meanwhile
            return
        self.carried = acq.merger.carry_over()
        result = acq.result("finished")
        self.current = None
        if self.writer.enabled:
            settings = {"reducers": acq.chain.specs(), "config": self.config_dump}
            path = await self._run_io(self.writer.finish, result, acq.chain.outputs_spec(),
                                      settings)
            result.file = None if path is None else str(path)
        self._store(result)  # after the file, so wait() sees result.file / result.error
        logger.info("acquisition %d finished: %d frames processed in %.2f s",
                    acq.acquisition, result.ledger["processed"], result.duration)

    def _store(self, result: AcquisitionResult) -> None:
        self.done[result.acquisition] = result
        while len(self.done) > self.keep:
            self.done.pop(next(iter(self.done)))

    # -- queries (driver, Tango) -----------------------------------------------------------
    async def wait(self, acquisition: int, timeout: float) -> AcquisitionResult | None:
        """The result of an acquisition once it has ended (None on timeout)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while acquisition not in self.done:
                    await self._changed.wait()
        except TimeoutError:
            return None
        return self.done[acquisition]

    async def snapshot(self) -> dict[str, Any]:
        """Current outputs (running acquisition, else the last finished one) + counters."""
        cur = self.current
        if cur is not None:
            return {"acquisition": cur.acquisition, "running": True,
                    "outputs": cur.merger.outputs(),
                    "processed": cur.merger.processed_frames, "time": time.time()}
        if self.done:
            last = self.done[next(reversed(self.done))]
            return {"acquisition": last.acquisition, "running": False,
                    "outputs": last.outputs, "processed": last.ledger.get("processed", 0),
                    "time": last.finished}
        return {"acquisition": None, "running": False, "outputs": {}, "processed": 0,
                "time": time.time()}

    async def processed(self) -> int:
        cur = self.current
        return cur.merger.processed_frames if cur is not None else 0

    async def output_state(self) -> dict[str, Any]:
        """The file settings (the seed's filename, filepath, file_index attributes)."""
        return self.writer.state()

    async def set_output(self, name: str, value: Any) -> dict[str, Any]:
        """Change ``filename``, ``filepath`` or ``file_index`` (applies to the next file)."""
        return self.writer.set(name, value)

    async def reset_pedestal(self) -> None:
        """Forget the state carried between acquisitions (the next one starts fresh)."""
        self.carried = None


ResultsActor: Any = ray.remote(num_cpus=0, max_restarts=0)(Results)
