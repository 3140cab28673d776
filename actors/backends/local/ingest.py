"""The local backend's ingest process: the shared ingest stage, with each batch copied once
into a shared-memory slot and handed to the driver.

Transport only: :class:`~actors.ingest.stage.IngestStage` decides batches, room and ledger.
A handed-on batch's pixels (or compressed payloads) are copied from the ZMQ frames into a
free slot of the ring, and its descriptor (:class:`~actors.backends.local.messages.
SlotBatch`) goes to the driver; every other action of the stage goes to the driver as it is.
The driver answers :class:`~actors.backends.local.messages.Free` when a batch has left the
pipeline (its slot and its room are back) and :class:`~actors.backends.local.messages.
Finished` when an acquisition has settled. Commands arrive as calls on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from actors.backends.local.messages import (
    Call,
    Closed,
    Fault,
    Finished,
    Free,
    Ready,
    Reply,
    Ring,
    SlotBatch,
)
from actors.backends.local.shm import ManagerAddress, leave_signals_to_driver
from actors.backends.local.slots import IngestSlots
from actors.config import PipelineConfig
from actors.core.events import Action, Checkpoint, HandOn
from actors.ingest.stage import IngestStage
from actors.wire.model import Encoding

logger = logging.getLogger(__name__)

#: ring generations of one ingest process (a restarted one counts on from the next epoch)
GENERATIONS_PER_EPOCH = 1_000_000
#: what a restarted ingest resumes from: its predecessor's checkpoint, and whether the
#: acquisition that one had running has ended (else it fails it)
Recall = tuple[Checkpoint | None, bool]

class DriverLink:
    """The ingest's end of its connection to the driver (on the ingest's event loop)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = asyncio.Event()
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

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self.on_message(self.conn.recv())
        except (EOFError, OSError):  # the driver is gone
            self.stop()
            self.closed.set()


class SlotTransport:
    """The ingest stage's transport in the ingest process (see the module doc)."""

    def __init__(self, link: DriverLink, config: PipelineConfig, slots: IngestSlots) -> None:
        self.link = link
        self.slots = slots
        self.nslots = config.max_inflight
        self.batch = config.batch

    async def send(self, actions: list[Action]) -> None:
        for action in actions:
            self.link.send(Closed(await self._store(action)) if isinstance(action, HandOn)
                           else action)

    async def _store(self, action: HandOn) -> SlotBatch:
        """Copy a batch into a free slot (the one copy of its pixels)."""
        batch, g = action.batch, action.batch.geometry
        await self.slots.ensure(self.batch.frames_for(g.nbytes) * g.nbytes, self.nslots)
        slot = await self.slots.take()
        offsets = inline = None
        if batch.encoding is Encoding.RAW:
            out = self.slots.frames(slot, g, batch.n)
            frames = batch.views if batch.views is not None else batch.pixels
            assert frames is not None
            for i, frame in enumerate(frames):
                out[i] = frame
        else:  # compressed: the payloads, back to back (inline when they do not fit)
            assert batch.blobs is not None
            offsets = batch.offsets
            if batch.nbytes <= self.slots.slot_bytes:
                self.slots.bytes_of(slot)[:batch.nbytes] = batch.blobs
            else:
                inline = batch.blobs
        return SlotBatch(batch.acquisition, batch.index, self.slots.generation, slot,
                         self.slots.name(slot), batch.frame_numbers, g, batch.encoding,
                         batch.nbytes, action.setup_version, action.info, offsets, inline)


async def _serve(config: PipelineConfig, conn: Connection, manager: ManagerAddress,
                 recall: Recall, epoch: int, module: bool) -> None:
    link = DriverLink(conn)
    slots = IngestSlots(manager.client(), lambda generation, names: link.send(
        Ring(generation, names)), first_generation=epoch * GENERATIONS_PER_EPOCH)
    transport = SlotTransport(link, config, slots)
    stage = IngestStage(config, transport, module=module)
    # the ingest's commands, by the names the driver calls them
    commands: dict[str, Callable[..., Any]] = {
        "start": stage.start, "stop": stage.stop, "abort": stage.abort, "set": stage.set,
        "status": stage.status, "series_start": stage.series_start, "drain": stage.drain}
    tasks: set[asyncio.Task[None]] = set()

    async def answer(call: Call) -> None:
        try:
            value = commands[call.method](*call.args)
            if asyncio.iscoroutine(value):
                value = await value
        except Exception as exc:
            link.send(Reply(call.id, False, exc))
        else:
            link.send(Reply(call.id, True, value))

    def on_message(msg: object) -> None:
        if isinstance(msg, Free):
            transport.slots.returned(msg.generation, msg.slot)
            stage.returned(msg.acquisition, msg.index)
        elif isinstance(msg, Finished):
            stage.finished(msg.acquisition)
        elif isinstance(msg, Call) and msg.method == "close":
            link.send(Reply(msg.id, True))
            link.closed.set()
        elif isinstance(msg, Call):
            task = asyncio.get_running_loop().create_task(answer(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            logger.error("ingest: unexpected message %r", msg)

    try:
        await stage.open()
        await stage.restore(*recall, "the ingest process was restarted")
    except Exception as exc:
        logger.exception("ingest could not open %s", config.source.endpoint)
        link.send(Fault(f"{type(exc).__name__}: {exc}"))
        await stage.close()
        return
    link.on_message = on_message
    link.start()
    link.send(Ready(os.getpid()))
    try:
        await link.closed.wait()
    finally:
        link.stop()
        for task in list(tasks):
            task.cancel()
        await stage.close()
        transport.slots.release()


def ingest_main(config: PipelineConfig, conn: Connection, manager: ManagerAddress,
                log_level: int, recall: Recall = (None, True), epoch: int = 0,
                module: bool = False) -> None:
    """Entry point of the ingest process (``spawn``); a restarted one resumes from
    ``recall`` (its predecessor's checkpoint) with ring generations of a new ``epoch``
    (epochs of the several ingests of a multi-module detector never meet: each has its
    own range of them). ``module``: it reads one module's stream (range batches)."""
    leave_signals_to_driver()
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: "
                               "%(message)s")
    try:
        asyncio.run(_serve(config, conn, manager, recall, epoch, module))
    finally:
        conn.close()
