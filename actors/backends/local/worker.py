"""The worker process: map a slot, run the reducer chain on its batch, send the partial.

A worker keeps nothing that cannot be rebuilt from its messages (chain setups arrive before
the first task that needs them; states travel with each task), so a replacement worker
picks up the batches of a dead one unchanged. Slots are only read (read-only views; the maps
of a ring are dropped when a task comes from a newer one). A partial's arrays go into the
worker's own result block (created through the driver's manager, replaced by a larger one
when a partial outgrows it), which the driver copies them out of before it answers
:class:`~actors.backends.local.messages.ResultFree`.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

from actors.backends.local.messages import (
    Done,
    Failed,
    ModuleBatch,
    Ready,
    ResultFree,
    SetupKey,
    SetupMsg,
    Stop,
    Task,
)
from actors.backends.local.shm import (
    Attachments,
    ManagerAddress,
    SlotManager,
    leave_signals_to_driver,
)
from actors.core.chain import Partials
from actors.core.setup import ChainSetup
from actors.process.worker import Worker

logger = logging.getLogger(__name__)

#: chain setups kept per worker
KEEP_SETUPS = 16
#: alignment of the buffers of a partial in the result block
ALIGN = 64


class WorkerLoop:
    """One worker's state; :meth:`handle` takes one message and may return a reply."""

    def __init__(self, index: int, manager: SlotManager) -> None:
        self.index = index
        self.manager = manager
        self.worker = Worker()
        self.setups: dict[SetupKey, ChainSetup] = {}
        self.blocks = Attachments()  # the slots of the current ring(s)
        self.generations: frozenset[int] = frozenset()
        self.batches = 0
        self.result: SharedMemory | None = None
        self.result_free = True
        #: reads control messages that are already waiting (set by the process loop)
        self.read_ahead: Callable[[], None] = lambda: None

    def handle(self, msg: object) -> Done | Failed | None:
        if isinstance(msg, Task):
            return self.process(msg)
        if isinstance(msg, SetupMsg):
            s = msg.setup
            self.setups[(s.acquisition, s.version)] = s
            while len(self.setups) > KEEP_SETUPS:
                self.setups.pop(next(iter(self.setups)))
        elif isinstance(msg, ResultFree):
            self.result_free = True
        else:
            raise TypeError(f"worker {self.index}: unexpected message {msg!r}")
        return None

    def process(self, task: Task) -> Done | Failed:
        b = task.batch
        t0 = time.perf_counter()
        generations = b.generations if isinstance(b, ModuleBatch) else frozenset(
            [b.generation])
        if generations != self.generations:  # new rings: the old ones' slots are gone
            self.blocks.close()
            self.generations = generations
        try:
            setup = self.setups[b.setup_key]
            if isinstance(b, ModuleBatch):
                partial = self._process_event(b, task, setup)
            else:
                buffer = None if b.inline is not None else self.blocks.get(b.segment).buf
                partial = self.worker.process(b.frame_batch(buffer), task.states, setup)
                del buffer
        except Exception as exc:
            logger.error("worker %d: batch %d of acquisition %d failed: %s", self.index,
                         b.index, b.acquisition, exc)
            return Failed(b.acquisition, b.index,
                          "".join(traceback.format_exception_only(exc)).strip())
        self.batches += 1
        return self.pack(b.acquisition, b.index, partial, time.perf_counter() - t0)

    def _process_event(self, b: ModuleBatch, task: Task, setup: ChainSetup) -> Partials:
        """The modules' batches of one range, read in place from their rings."""
        parts = {source: part.frame_batch(None if part.inline is not None else
                                          self.blocks.get(part.segment).buf)
                 for source, part in b.parts.items()}
        return self.worker.process_event(parts, b.layout, b.policy, b.index, task.states,
                                         setup)

    def pack(self, acquisition: int, index: int, partial: Partials, seconds: float) -> Done:
        """The partial's arrays go into the result block when it is free (one copy here,
        one in the driver; a larger block replaces one they do not fit); else the partial
        travels in the message."""
        buffers: list[pickle.PickleBuffer] = []
        meta = pickle.dumps(partial, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        layout, end = [], 0
        for raw in raws:
            layout.append((end, raw.nbytes))
            end += -(-raw.nbytes // ALIGN) * ALIGN
        if not raws:
            return Done(acquisition, index, None, seconds, meta=meta)
        if not self.result_free:
            self.read_ahead()  # a ResultFree may be waiting behind a task
        if not self.result_free:  # the driver is still copying the last partial out
            return Done(acquisition, index, partial, seconds)
        block = self.result
        if block is None or end > block.size:
            self._close_result()
            block = self.result = self.manager.new_block(end + end // 4 + (1 << 20))
        buf = block.buf
        assert buf is not None
        for (offset, size), raw in zip(layout, raws):
            buf[offset:offset + size] = raw
        del buf
        self.result_free = False
        return Done(acquisition, index, None, seconds, meta=meta, block=block.name,
                    layout=tuple(layout))

    def _close_result(self) -> None:
        """Unmap and release the result block (the driver drops its map of it when it sees
        the next one)."""
        if self.result is not None:
            self.result.close()
            try:
                self.manager.release(self.result.name)
            except (OSError, EOFError) as exc:  # the manager is gone: it unlinked it
                logger.debug("result block not released: %s", exc)
            self.result = None

    def close(self) -> None:
        self.blocks.close()
        self._close_result()


def worker_main(index: int, conn: Connection, manager: ManagerAddress, log_level: int) -> None:
    """Entry point of a worker process (``spawn``)."""
    leave_signals_to_driver()
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: "
                               "%(message)s")
    loop = WorkerLoop(index, manager.client())
    backlog: deque[object] = deque()

    def read_ahead() -> None:
        """Apply control messages already waiting (a ResultFree may sit behind a task)."""
        while conn.poll():
            msg = conn.recv()
            if isinstance(msg, Task | Stop):
                backlog.append(msg)
            else:
                loop.handle(msg)

    loop.read_ahead = read_ahead
    try:
        conn.send(Ready(os.getpid(), index))
        while True:
            try:
                msg = backlog.popleft() if backlog else conn.recv()
            except (EOFError, OSError):  # the driver is gone
                break
            if isinstance(msg, Stop):
                break
            reply = loop.handle(msg)
            if reply is not None:
                try:
                    conn.send(reply)
                except (EOFError, OSError):
                    break
                except Exception as exc:  # e.g. an unpicklable partial
                    conn.send(Failed(reply.acquisition, reply.index,
                                     f"partial could not be sent: {exc!r}"))
    finally:
        loop.close()
        conn.close()
