"""The device's :class:`~actors.tango.control.Control` over a synchronous pipeline object.

Wraps anything with the ``RayPipeline`` method names (``start_acquisition``,
``stop_acquisition(timeout)``, ``wait_acquisition(timeout)``, ``abort``, ``set``,
``reset_pedestal``, ``status``, ``results``; optionally ``snapshot`` and ``set_output``):
the standalone server with the Ray backend and the local backend. Calls run in a small
thread pool, so the pipeline must accept a status or results call while a stop waits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from actors.config import PipelineConfig
from actors.core.chain import Parameter, ReducerChain
from actors.reduce.base import OutputSpec
from actors.tango.control import PipelineStatus, Snapshot, StopSummary, StopTimeout
from actors.tango.counters import CounterBook
from actors.tango.declare import chain_for

logger = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 30.0


class PipelineControl:
    """Runs a synchronous pipeline's calls in an executor, each with a timeout."""

    def __init__(self, pipeline: Any, config: PipelineConfig | None = None,
                 call_timeout: float = CALL_TIMEOUT, threads: int = 4) -> None:
        self.pipeline = pipeline
        self.config: PipelineConfig = config if config is not None else pipeline.config
        self.call_timeout = call_timeout
        self._chain: ReducerChain = chain_for(self.config)
        self._book = CounterBook()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="rayline-control")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- declarations ------------------------------------------------------------------------
    def outputs_spec(self) -> list[OutputSpec]:
        return self._chain.outputs_spec()

    def parameters(self) -> list[Parameter]:
        return self._chain.parameters()

    # -- commands ------------------------------------------------------------------------------
    async def start(self) -> int:
        return int(await self._run(self.pipeline.start_acquisition))

    async def stop(self, timeout: float) -> StopSummary:
        try:
            result = await self._run(functools.partial(self.pipeline.stop_acquisition, timeout),
                                     timeout + self.call_timeout)
        except TimeoutError as exc:
            raise StopTimeout(str(exc) or f"not finished after {timeout:g} s") from None
        self._book.finished(result.acquisition, result.ledger)
        return StopSummary.of(result)

    async def abort(self) -> None:
        await self._run(self.pipeline.abort)

    async def set(self, name: str, value: Any) -> None:
        chain = self._chain.reconfigure({name: value})  # validates; raises ReducerConfigError
        await self._run(functools.partial(self.pipeline.set, name, value))
        self._chain = chain

    async def reset_pedestal(self) -> None:
        await self._run(self.pipeline.reset_pedestal)

    async def set_output(self, filename: str, filepath: str, file_index: int) -> None:
        method = getattr(self.pipeline, "set_output", None)
        if method is not None:
            await self._run(functools.partial(method, filename, filepath, file_index))

    # -- queries -------------------------------------------------------------------------------
    async def status(self) -> PipelineStatus:
        st: dict[str, Any] = await self._run(self.pipeline.status)
        acq = st.get("acquisition") or None
        if st.get("state", "idle") != "idle" and acq is not None:
            ledger = {"received": st.get("received", 0), "dropped_total": st.get("dropped", 0),
                      "lost": st.get("lost", 0), "rejected_total": st.get("rejected", 0)}
            return self._book.running(st["state"], acq, ledger, int(st.get("processed", 0)),
                                      float(st.get("frame_rate", 0.0)), st.get("fault"))
        if self._book.needs_final(acq):
            try:
                result = await self._run(functools.partial(self.pipeline.wait_acquisition, 0.0))
                self._book.finished(result.acquisition, result.ledger)
            except TimeoutError:
                pass  # ending: counters of the last running status until it has ended
        return self._book.idle(float(st.get("frame_rate", 0.0)), st.get("fault"))

    async def snapshot(self) -> Snapshot:
        method = getattr(self.pipeline, "snapshot", None)
        if method is not None:
            snap: dict[str, Any] = await self._run(method)
            return Snapshot(snap.get("acquisition"), bool(snap.get("running")),
                            int(snap.get("processed", 0)), dict(snap.get("outputs", {})),
                            float(snap.get("time", 0.0)))
        st, outputs = await asyncio.gather(self._run(self.pipeline.status),
                                           self._run(self.pipeline.results))
        return Snapshot(st.get("acquisition") or None, st.get("state", "idle") != "idle",
                        int(st.get("processed", 0)), dict(outputs), time.time())

    async def _run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        limit = self.call_timeout if timeout is None else timeout
        return await asyncio.wait_for(loop.run_in_executor(self._executor, fn), limit)
