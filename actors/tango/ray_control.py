"""The device's :class:`~actors.tango.control.Control` over the Ray actor handles.

Every call is an actor method whose ObjectRef is awaited on the device's own event loop
(``asyncio.wrap_future(ref.future())``) with a timeout. Acquisition numbers are shared with
any other driver of the same actors: a new number is above every number seen, and one the
results actor already knows is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.config import PipelineConfig
from actors.core.acquisition import AcquisitionResult
from actors.core.chain import Parameter, ReducerChain
from actors.reduce.base import OutputSpec, ReducerConfigError
from actors.tango.control import PipelineStatus, Snapshot, StopSummary, StopTimeout
from actors.tango.counters import CounterBook
from actors.tango.declare import chain_for

logger = logging.getLogger(__name__)

#: seconds any single actor call may take (stop waits longer, by its own timeout)
CALL_TIMEOUT = 30.0


class RayControl:
    """Drives the ingest and results actors of a running :class:`RayPipeline`."""

    def __init__(self, config: PipelineConfig, ingest: Any, results: Any,
                 call_timeout: float = CALL_TIMEOUT) -> None:
        self.config = config
        self.ingest = ingest
        self.results = results
        self.call_timeout = call_timeout
        self._chain: ReducerChain = chain_for(config)
        self._acquisition = 0  # the highest acquisition number seen
        self._book = CounterBook()

    # -- declarations ------------------------------------------------------------------------
    def outputs_spec(self) -> list[OutputSpec]:
        return self._chain.outputs_spec()

    def parameters(self) -> list[Parameter]:
        return self._chain.parameters()

    # -- commands ------------------------------------------------------------------------------
    async def start(self) -> int:
        # the ingest hands out the number (one more than any acquisition it started)
        n = int(await self._call(self.ingest.start.remote(None)))
        self._acquisition = n
        return n

    async def set_output(self, filename: str, filepath: str, file_index: int) -> None:
        for name, value in (("filename", filename), ("filepath", filepath),
                            ("file_index", file_index)):
            await self._call(self.results.set_output.remote(name, value))

    async def stop(self, timeout: float) -> StopSummary:
        running = (await self._call(self.ingest.status.remote()))["acquisition"]
        n = running if running is not None else self._acquisition
        if not n:
            raise RuntimeError("no acquisition has run yet")
        if running is not None:
            await self._call(self.ingest.stop.remote(n))
        result: AcquisitionResult | None = await self._call(
            self.results.wait.remote(n, timeout), timeout + self.call_timeout)
        if result is None:
            st = await self.status()
            raise StopTimeout(f"acquisition {n}: {st.processed} of {st.received} received "
                              f"frames processed after {timeout:g} s (still draining)")
        self._book.finished(n, result.ledger)
        return StopSummary.of(result)

    async def abort(self) -> None:
        running = (await self._call(self.ingest.status.remote()))["acquisition"]
        if running is not None:
            await self._call(self.ingest.abort.remote(running))

    async def set(self, name: str, value: Any) -> None:
        chain = self._chain.reconfigure({name: value})  # validates; raises ReducerConfigError
        try:
            await self._call(self.ingest.set.remote({name: value}))
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ValueError):
                raise ReducerConfigError(str(cause)) from None
            raise
        self._chain = chain

    async def reset_pedestal(self) -> None:
        await self._call(self.results.reset_pedestal.remote())

    # -- queries -------------------------------------------------------------------------------
    async def status(self) -> PipelineStatus:
        ingest, processed = await asyncio.gather(self._call(self.ingest.status.remote()),
                                                 self._call(self.results.processed.remote()))
        acq = ingest["acquisition"]
        if acq is not None:
            self._acquisition = max(self._acquisition, acq)
            return self._book.running(ingest["state"], acq, ingest.get("ledger", {}),
                                      processed, ingest["frame_rate"], ingest["fault"])
        last = self._acquisition or None
        if self._book.needs_final(last):
            result = await self._call(self.results.wait.remote(last, 0.0))
            if result is not None:
                self._book.finished(result.acquisition, result.ledger)
        return self._book.idle(ingest["frame_rate"], ingest["fault"])

    async def snapshot(self) -> Snapshot:
        snap = await self._call(self.results.snapshot.remote())
        acq = snap["acquisition"]
        if acq is not None:
            self._acquisition = max(self._acquisition, acq)
        return Snapshot(acq, bool(snap["running"]), int(snap["processed"]), snap["outputs"],
                        float(snap["time"]))

    async def _call(self, ref: Any, timeout: float | None = None) -> Any:
        limit = self.call_timeout if timeout is None else timeout
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), limit)
