"""Connections between the driver and its processes: non-blocking sends, calls with replies.

Every child process has its own ``Pipe`` to the driver, so a process that dies (even in the
middle of a message) can only break its own connection, never a queue shared with others.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from actors.backends.local.messages import Call, Reply

logger = logging.getLogger(__name__)

_STOP = object()


class Outbox:
    """Sends on a connection from a background thread, so the caller never blocks (a
    child busy writing a large result can never deadlock against the driver)."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.broken = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"outbox {name}", daemon=True)
        self._thread.start()

    def send(self, msg: Any) -> None:
        self._queue.put(msg)

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is _STOP:
                return
            if self.broken:
                continue
            try:
                self.conn.send(msg)
            except (OSError, EOFError, ValueError) as exc:  # the peer is gone
                self.broken = True
                logger.debug("%s: connection lost (%s)", self.name, exc)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender thread (after what is queued) and close the connection."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():  # still blocked on a peer that never reads
            logger.warning("%s: sender still blocked after %.0f s", self.name, timeout)
            return
        self.conn.close()


class Calls:
    """Outstanding calls over one connection, by id (thread-safe)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._closed: BaseException | None = None

    def new(self, method: str, *args: Any) -> tuple[Call, Future[Any]]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed is not None:
                future.set_exception(self._closed)
                return Call(0, method, args), future
            call = Call(next(self._ids), method, args)
            self._pending[call.id] = future
        return call, future

    def resolve(self, reply: Reply) -> None:
        with self._lock:
            future = self._pending.pop(reply.id, None)
        if future is None:
            logger.warning("reply to unknown call %d", reply.id)
        elif reply.ok:
            future.set_result(reply.value)
        else:
            future.set_exception(reply.value)

    def fail_all(self, exc: BaseException) -> None:
        """The peer is gone: every outstanding and future call raises ``exc``."""
        with self._lock:
            self._closed = exc
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(exc)
