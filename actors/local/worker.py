"""The worker process: map a slot, run the reducer chain on its batch, send the partial.

A worker keeps nothing that cannot be rebuilt from its messages (chain setups arrive before
the first task that needs them; states travel with each task), so a replacement worker
picks up the batches of a dead one unchanged. Slots are only read (read-only views), and
the partial is pickled before the driver hears about it, so the slot can be reused as soon
as the driver gets :class:`~actors.local.messages.Done`.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from multiprocessing.connection import Connection

from actors.core.setup import ChainSetup, Worker
from actors.local.messages import Detach, Done, Failed, Ready, SetupKey, SetupMsg, Stop, Task
from actors.local.shm import Attachments, ignore_sigint

logger = logging.getLogger(__name__)

#: chain setups kept per worker
KEEP_SETUPS = 16


class WorkerLoop:
    """One worker's state; :meth:`handle` takes one message and may return a reply."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker = Worker()
        self.setups: dict[SetupKey, ChainSetup] = {}
        self.blocks = Attachments()
        self.batches = 0

    def handle(self, msg: object) -> Done | Failed | None:
        if isinstance(msg, Task):
            return self.process(msg)
        if isinstance(msg, SetupMsg):
            s = msg.setup
            self.setups[(s.acquisition, s.version)] = s
            while len(self.setups) > KEEP_SETUPS:
                self.setups.pop(next(iter(self.setups)))
        elif isinstance(msg, Detach):
            self.blocks.close(msg.names)
        else:
            raise TypeError(f"worker {self.index}: unexpected message {msg!r}")
        return None

    def process(self, task: Task) -> Done | Failed:
        b = task.batch
        t0 = time.perf_counter()
        try:
            setup = self.setups[b.setup_key]
            buffer = None if b.inline is not None else self.blocks.get(b.segment).buf
            partial = self.worker.process(b.frame_batch(buffer), task.states, setup)
            del buffer
        except Exception as exc:
            logger.error("worker %d: batch %d of acquisition %d failed: %s", self.index,
                         b.index, b.acquisition, exc)
            return Failed(b.acquisition, b.index,
                          "".join(traceback.format_exception_only(exc)).strip())
        self.batches += 1
        return Done(b.acquisition, b.index, partial, time.perf_counter() - t0)

    def close(self) -> None:
        self.blocks.close()


def worker_main(index: int, conn: Connection, log_level: int) -> None:
    """Entry point of a worker process (``spawn``)."""
    ignore_sigint()
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)-7s %(processName)s %(name)s: "
                               "%(message)s")
    loop = WorkerLoop(index)
    try:
        conn.send(Ready(os.getpid(), index))
        while True:
            try:
                msg = conn.recv()
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
