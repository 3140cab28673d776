"""The device's :class:`~actors.core.api.Control` over a pipeline's Python API.

Both backends hand their device one of these (``PipelineApi.control()``): the local backend
over its own pipeline, the Ray backend's device actor over a client of the stage actors.
Calls run in a small thread pool, each with a timeout, so the device's event loop never
blocks and a status or snapshot call is answered while a stop waits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from actors.config import PipelineConfig
from actors.core.api import PipelineApi, StopSummary, StopTimeout
from actors.core.chain import Parameter, ReducerChain
from actors.core.darkrun import DarkRunRecord
from actors.core.status import Snapshot, Status
from actors.reduce.base import OutputSpec, OutputValue
from actors.tango.declare import chain_for

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds any call may take (stop waits longer, by its own timeout)
CALL_TIMEOUT = 30.0


class PipelineControl:
    """Runs a pipeline's calls in an executor, each with a timeout."""

    def __init__(self, pipeline: PipelineApi, config: PipelineConfig,
                 call_timeout: float = CALL_TIMEOUT, threads: int = 4) -> None:
        self.pipeline = pipeline
        self.config = config
        self.call_timeout = call_timeout
        self._chain: ReducerChain = chain_for(config)  # declarations only
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="rayline-control")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- declarations ------------------------------------------------------------------------
    def outputs_spec(self) -> list[OutputSpec]:
        return self._chain.outputs_spec()

    def parameters(self) -> list[Parameter]:
        return self._chain.parameters()

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        return self._chain.warnings(outputs)

    # -- commands ------------------------------------------------------------------------------
    async def start(self) -> int:
        return await self._run(self.pipeline.start_acquisition)

    async def stop(self, timeout: float) -> StopSummary:
        try:
            result = await self._run(functools.partial(self.pipeline.stop_acquisition, timeout),
                                     timeout + self.call_timeout)
        except TimeoutError as exc:
            raise StopTimeout(str(exc) or f"not finished after {timeout:g} s") from None
        return StopSummary.of(result)

    async def abort(self) -> None:
        await self._run(self.pipeline.abort)

    async def set(self, name: str, value: Any) -> None:
        await self._run(functools.partial(self.pipeline.set, name, value))

    async def reset_pedestal(self) -> None:
        await self._run(self.pipeline.reset_pedestal)

    async def record_pedestal(self, gain: int, timeout: float) -> DarkRunRecord:
        return await self._run(functools.partial(self.pipeline.record_pedestal, gain, None,
                                                 timeout), timeout + self.call_timeout)

    async def set_output(self, filename: str, filepath: str, file_index: int) -> None:
        await self._run(functools.partial(self.pipeline.set_output, filename, filepath,
                                          file_index))

    # -- queries -------------------------------------------------------------------------------
    async def status(self) -> Status:
        return await self._run(self.pipeline.status)

    async def snapshot(self) -> Snapshot:
        return await self._run(self.pipeline.snapshot)

    async def _run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        limit = self.call_timeout if timeout is None else timeout
        return await asyncio.wait_for(loop.run_in_executor(self._executor, fn), limit)
