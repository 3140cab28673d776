"""The ingest process: receive, account, batch straight into shared-memory slots, hand on.

The receive loop, batch cuts, ledger and runtime parameters are
:class:`actors.stream.ingest_base.IngestBase`'s, as for the Ray ingest (same overflow policy,
same commands); what differs is where batches go. Raw pixels are
copied once, from the ZMQ frame into a free slot (the batch assembler's buffer factory);
compressed payloads are copied into a slot when the batch closes and workers decompress
them. A closed batch is handed to the driver as a :class:`SlotBatch`; the driver registers
it, hands it to a worker once its pedestal states exist, and sends the slot back when the
worker is done. Work in flight is the number of slots handed on and not back yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from actors.config import PipelineConfig
from actors.core.batch import BatchAssembler, FrameBatch
from actors.core.merger import BatchInfo
from actors.core.setup import ChainSetup
from actors.local.messages import (
    Aborted,
    Begin,
    Call,
    Closed,
    End,
    Fault,
    Finished,
    Free,
    Ready,
    Reconfigure,
    Reply,
    Skip,
    SlotBatch,
)
from actors.local.shm import RingSpec, ignore_sigint
from actors.local.slots import IngestSlots, ring_slots
from actors.stream.ingest_base import IngestAcquisition, IngestBase
from actors.wire.model import Message

logger = logging.getLogger(__name__)

#: how long the ingest waits for the driver to answer one of its own calls (a new ring)
CALL_TIMEOUT = 60.0


class DriverLink:
    """The ingest's end of its connection to the driver (on the ingest's event loop)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = asyncio.Event()
        self._ids = 0
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self.on_message: Callable[[object], None] = lambda msg: None

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._readable)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    def send(self, msg: object) -> None:
        """Blocking send (messages to the driver are small; the driver always reads)."""
        try:
            self.conn.send(msg)
        except (OSError, EOFError):
            self.closed.set()

    async def call(self, method: str, *args: Any) -> Any:
        self._ids += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[self._ids] = future
        self.send(Call(self._ids, method, args))
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        finally:
            self._calls.pop(self._ids, None)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if isinstance(msg, Reply):
                    future = self._calls.pop(msg.id, None)
                    if future is not None and not future.done():
                        if msg.ok:
                            future.set_result(msg.value)
                        else:
                            future.set_exception(msg.value)
                else:
                    self.on_message(msg)
        except (EOFError, OSError):  # the driver is gone
            self.stop()
            self.closed.set()


class LocalIngest(IngestBase[IngestAcquisition]):
    """Receive loop and commands of the ingest process."""

    def __init__(self, config: PipelineConfig, link: DriverLink) -> None:
        super().__init__(config)
        self.link = link
        self.slots = IngestSlots()
        self.nslots = ring_slots(config.max_inflight)
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self._loop_task: asyncio.Task[None] | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        self.receiver.open()
        self.link.on_message = self._on_message
        self.link.start()
        loop = asyncio.get_running_loop()
        self._read_task = loop.create_task(self._read_loop(), name="ingest read")
        self._loop_task = loop.create_task(self._receive_loop(), name="ingest receive")

    async def close(self) -> None:
        self.link.stop()
        tasks = [t for t in (self._read_task, self._loop_task, *self._commands)
                 if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.receiver.close()
        self.slots.detach()

    # -- messages from the driver --------------------------------------------------------------
    def _on_message(self, msg: object) -> None:
        if isinstance(msg, Free):
            self.slots.returned(msg.generation, msg.slot)
        elif isinstance(msg, Finished):
            acq = self.acq
            if acq is not None and acq.acquisition == msg.acquisition and acq.ending:
                self.acq = None
        elif isinstance(msg, Call):
            task = asyncio.get_running_loop().create_task(self._answer(msg))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)
        else:
            logger.error("ingest: unexpected message %r", msg)

    async def _answer(self, call: Call) -> None:
        try:
            if call.method == "close":
                self.link.send(Reply(call.id, True))
                self.link.closed.set()
                return
            handler = getattr(self, f"cmd_{call.method}")
            value = handler(*call.args)
            if asyncio.iscoroutine(value):
                value = await value
        except Exception as exc:
            self.link.send(Reply(call.id, False, exc))
        else:
            self.link.send(Reply(call.id, True, value))

    # -- commands -----------------------------------------------------------------------------
    def cmd_start(self, acquisition: int) -> None:
        if self.acq is not None:
            raise RuntimeError(f"acquisition {self.acq.acquisition} is still running")
        self.acq = IngestAcquisition(acquisition, self.specs, self.receiver.ledger.snapshot())
        logger.info("acquisition %d started", acquisition)

    async def cmd_stop(self, acquisition: int) -> None:
        """No more frames for this acquisition: flush, then declare the end."""
        acq = self.acq
        if acq is not None and acq.acquisition == acquisition:
            await self._end(acq, "stop")

    async def cmd_abort(self, acquisition: int) -> None:
        acq = self.acq
        if acq is None or acq.acquisition != acquisition:
            return
        self.acq = None
        acq.dropped["aborted"] += acq.assembler.discard() if acq.assembler else 0
        self.slots.give_back_held()
        self.link.send(Aborted(acquisition, self._ledger(acq)))

    async def cmd_set(self, changes: dict[str, Any]) -> int | None:
        return await self.set(changes)

    async def _announce(self, acq: IngestAcquisition) -> None:
        assert acq.setup is not None
        self.link.send(Reconfigure(acq.setup))

    def cmd_status(self) -> dict[str, Any]:
        return self.status()

    # -- receiving ------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        """Read messages into a one-message queue; never cancelled while reading.

        ``Receiver.recv`` with a timeout can lose a message on Python 3.11: when the
        timeout fires in the loop iteration in which the message arrives, the already
        received message is replaced by the cancellation. Reading without a timeout and
        waiting on the queue with one is safe: an ``asyncio.Queue`` keeps an item whose
        getter was cancelled. The queue holds one message, so back-pressure still stops
        reading from the socket.
        """
        while True:
            msg = await self.receiver.recv()
            if msg is not None:
                await self._inbox.put(msg)

    async def _next(self, timeout: float) -> Message | None:
        if not self._inbox.empty():  # the common case under load: no timer, no task
            return self._inbox.get_nowait()
        try:
            return await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return None

    async def _configure(self, acq: IngestAcquisition, setup: ChainSetup) -> None:
        """Make sure the ring fits the first frame's batches, then announce the setup."""
        chain = setup.build()
        await self._ensure_ring(self.config.batch.max_frames * setup.geometry.nbytes)
        acq.setup, acq.chain = setup, chain
        acq.assembler = BatchAssembler(acq.acquisition, setup.geometry,
                                       self.config.batch.max_frames, chain.epochs,
                                       self.config.source.channel, self.slots.pixels)
        self.link.send(Begin(setup))

    async def _ensure_ring(self, slot_bytes: int) -> None:
        if self.slots.fits(slot_bytes):
            return
        while not self.slots.idle:  # the previous acquisition's batches are still out
            await self.slots.changed()
        old = self.slots.spec
        self.slots.detach()
        spec: RingSpec = await self.link.call("ring", slot_bytes, self.nslots,
                                              old.generation if old else None)
        self.slots.install(spec)
        logger.info("ring %d: %d slots of %.1f MB", spec.generation, spec.slots,
                    spec.slot_bytes / 1e6)

    # -- handing batches on ---------------------------------------------------------------------
    async def _dispatch_closed(self, acq: IngestAcquisition, batch: FrameBatch | None) -> None:
        if batch is None:
            return
        assert acq.chain is not None and acq.setup is not None
        info = BatchInfo(batch.index, batch.first_frame, batch.last_frame, batch.n,
                         acq.chain.state_needed(batch.first_frame, batch.last_frame))
        slot = self.slots.slot_of(batch.pixels) if batch.pixels is not None else None
        if len(self.slots.outstanding) >= self.config.max_inflight:
            if self.config.overflow == "drop":
                acq.dropped["overflow"] += batch.n
                if slot is not None:
                    self.slots.give_back(slot)
                self.link.send(Skip(acq.acquisition, info))
                return
            while len(self.slots.outstanding) >= self.config.max_inflight \
                    and self.acq is acq:  # overflow=block: stop reading until a slot is back
                await self.slots.changed()
            if self.acq is not acq:  # aborted meanwhile
                if slot is not None:
                    self.slots.give_back(slot)
                return
        assert self.slots.spec is not None
        offsets = inline = None
        nbytes = batch.nbytes
        if slot is None:  # compressed: the payloads go into a slot (or inline if too big)
            assert batch.blobs is not None
            slot = self.slots.take()
            offsets = batch.offsets
            if nbytes <= self.slots.spec.slot_bytes:
                self.slots.bytes_of(slot)[:nbytes] = batch.blobs
            else:
                inline = batch.blobs
        self.slots.hand_over(slot, batch.n)
        self.link.send(Closed(SlotBatch(
            acq.acquisition, batch.index, self.slots.spec.generation, slot,
            self.slots.spec.names[slot], batch.frame_numbers, batch.geometry, batch.encoding,
            nbytes, acq.setup.version, info, offsets, inline)))
        acq.dispatched_frames += batch.n
        acq.dispatched_batches += 1

    # -- ending ---------------------------------------------------------------------------------
    async def _end(self, acq: IngestAcquisition, why: str) -> None:
        if acq.ending:
            return
        if acq.assembler is not None:
            await self._dispatch_closed(acq, acq.assembler.flush())
        if self.acq is not acq:  # aborted meanwhile
            return
        acq.ending = True  # draining until the driver says Finished
        logger.info("acquisition %d ending (%s): %d frames received", acq.acquisition, why,
                    acq.received)
        batches = acq.assembler.next_index if acq.assembler else 0
        self.link.send(End(acq.acquisition, batches, self._ledger(acq)))

    # -- status ---------------------------------------------------------------------------------
    def _inflight_batches(self, acq: IngestAcquisition) -> int:
        return len(self.slots.outstanding)


async def _serve(config: PipelineConfig, conn: Connection) -> None:
    link = DriverLink(conn)
    ingest = LocalIngest(config, link)
    try:
        await ingest.open()
    except Exception as exc:
        logger.exception("ingest could not open %s", config.source.endpoint)
        link.send(Fault(f"{type(exc).__name__}: {exc}"))
        await ingest.close()
        return
    link.send(Ready(os.getpid()))
    try:
        await link.closed.wait()
    finally:
        await ingest.close()


def ingest_main(config: PipelineConfig, conn: Connection, log_level: int) -> None:
    """Entry point of the ingest process (``spawn``)."""
    ignore_sigint()
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: "
                               "%(message)s")
    try:
        asyncio.run(_serve(config, conn))
    finally:
        conn.close()
