"""The ingest stage as both backends run it: the receive loop and commands around
:class:`~actors.ingest.core.IngestCore`, with a backend's :class:`Transport` moving the
actions it produces.

One asyncio task reads the receiver (stopping while the core holds a batch for lack of room,
which back-pressures the sender), feeds every message to the core and closes batches that
waited ``batch.max_delay``. Commands (start, stop, abort, set, status) come from the Ray
actor's methods or the local ingest process's connection. Core calls and the transport's
execution of their actions happen under one lock, so the transport sees actions in exactly
the order the core produced them. The transport reports back through :meth:`IngestStage.
returned` (a batch's room is free) and :meth:`IngestStage.finished` (an ended acquisition has
settled downstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from actors.config import PipelineConfig
from actors.core.events import Action, Checkpoint
from actors.core.status import IngestStatus
from actors.ingest.core import IngestCore
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire.model import SeriesStart

logger = logging.getLogger(__name__)

#: seconds the receive loop waits for a message before looking at its timers again
IDLE_POLL = 0.2
#: seconds between checks while blocked for room (a return also wakes it at once)
BLOCKED_POLL = 1.0


class Transport(Protocol):
    """What a backend does with the ingest's actions (in order, one call at a time)."""

    async def send(self, actions: list[Action]) -> None: ...


def receiver_for(config: PipelineConfig) -> Receiver:
    src = config.source
    return Receiver(ReceiverSettings(
        src.endpoint, src.socket_kind, src.protocol,
        geometry=src.geometry.to_geometry() if src.geometry else None, bind=src.bind,
        hwm=src.hwm, accept_incomplete=src.accept_incomplete, name="ingest",
        max_pixels=src.max_frame_pixels, max_images=src.max_images,
        queue_bytes=src.receive_buffer_bytes, share=config.shared))


class IngestStage:
    """Receive loop, commands and the transport's callbacks (see the module doc)."""

    def __init__(self, config: PipelineConfig, transport: Transport, *,
                 store_budget: int | None = None, receiver: Receiver | None = None,
                 module: bool = False) -> None:
        self.config = config
        self.transport = transport
        self.receiver = receiver or receiver_for(config)
        self.core = IngestCore(config, store_budget=store_budget,
                               receiver=self.receiver.ledger.snapshot, module=module,
                               share=config.shared)
        self._lock = asyncio.Lock()
        self._room = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        self.receiver.open()
        self._loop_task = asyncio.get_running_loop().create_task(self._receive_loop(),
                                                                  name="ingest receive")

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None
        await self.receiver.close()

    # -- commands -----------------------------------------------------------------------------
    async def start(self, acquisition: int | None = None) -> int:
        """Start an acquisition; returns its number."""
        # the previous series may never have sent its end (an sls acquisition stopped by
        # hand): if the numbers restart, a new series starts (not duplicates of the old);
        # if they go on (frames that came just before this start), no gap is invented
        self.receiver.ledger.may_restart()
        number = self.core.start(acquisition)
        await self._do(lambda: [self.core.checkpoint()])
        return number

    async def stop(self, acquisition: int) -> None:
        await self._do(lambda: self.core.stop(acquisition))

    async def abort(self, acquisition: int) -> None:
        await self._do(lambda: self.core.abort(acquisition))

    async def set(self, changes: Mapping[str, Any]) -> int | None:
        """Runtime parameters; the first batch they apply to (None: the next acquisition)."""
        first: list[int | None] = []

        def apply() -> list[Action]:
            index, actions = self.core.set(changes)
            first.append(index)
            return actions

        await self._do(apply)
        return first[0]

    async def series_start(self, start: SeriesStart) -> None:
        """(A client sharing a stream) another client read the series start."""
        await self._do(lambda: self.core.peer_start(start))

    async def drain(self, acquisition: int) -> None:
        """(A client sharing a stream) another client read the series end."""
        await self._do(lambda: self.core.drain(acquisition))

    async def fail_running(self, why: str) -> None:
        """A stage downstream died: the running acquisition fails (``why``)."""
        await self._do(lambda: self.core.fail(why))

    async def restore(self, checkpoint: Checkpoint | None, ended: bool, why: str) -> None:
        """Resume from a predecessor's checkpoint (a restarted ingest)."""
        await self._do(lambda: self.core.restore(checkpoint, ended, why))

    def status(self) -> IngestStatus:
        return self.core.status(self.receiver.geometry)

    # -- from the transport ---------------------------------------------------------------------
    def returned(self, acquisition: int, index: int) -> None:
        """A batch handed on has left the pipeline (processed, given up or discarded)."""
        self._spawn(self._do(lambda: self.core.returned(acquisition, index)))

    def forget_inflight(self) -> None:
        """The batches handed on will never come back (their holder died): room is free."""
        self._spawn(self._do(self.core.forget_inflight))

    def finished(self, acquisition: int) -> None:
        """Every batch of the ended acquisition has settled: the ingest is idle again."""
        self.core.finished(acquisition)

    # -- the loop -------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        while True:
            try:
                self._room.clear()
                if self.core.blocked:  # stop reading until a batch's room comes back
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), BLOCKED_POLL)
                    continue
                wait = self.core.wake_in()
                msg = await self.receiver.recv(timeout=IDLE_POLL if wait is None else wait)
                await self._do(functools.partial(self._handle, msg))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep receiving; report the fault in the status
                self.core.fault = f"{type(exc).__name__}: {exc}"
                logger.exception("ingest failed to handle a message")

    def _handle(self, msg: Any) -> list[Action]:
        actions = self.core.flush_due()
        if msg is not None:
            actions += self.core.message(msg)
        return actions + self.core.stop_due()  # (a frame that came in time is in)

    async def _do(self, step: Callable[[], list[Action]]) -> None:
        """Run a core step and carry out its actions, in order with every other step."""
        async with self._lock:
            actions = step()
            if actions:
                await self.transport.send(actions)
        self._room.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.core.fault = f"{type(exc).__name__}: {exc}"
            logger.error("ingest step failed", exc_info=exc)
