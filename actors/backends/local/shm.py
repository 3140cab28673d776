"""Shared-memory slots for the local backend (Python 3.11 hygiene included).

The driver creates every block through a :class:`SlotManager` (a ``SharedMemoryManager``):
the manager's server process owns the unlink, on :meth:`SlotManager.release` or at
``shutdown()``. The driver closes its own mapping right after creating a block; the ingest
and worker processes map blocks with :func:`attach`.

Resource tracker (Python < 3.13, no ``track=False``): ``SharedMemory(name)`` registers the
block with the resource tracker even when it only attaches. Processes started with the
``spawn`` start method share their parent's tracker, which keeps one *set* of names, so the
usual recipe "attach, then ``resource_tracker.unregister``" (perf.md fact 10) breaks as soon
as two processes attach the same block: the first unregister removes the creator's entry and
the second makes the tracker print a ``KeyError`` traceback. :func:`attach` therefore never
talks to the tracker at all: the only REGISTER is the driver's creation, balanced by the
manager's unlink, so the tracker has nothing to unlink or warn about at exit.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import managers, resource_tracker
from multiprocessing.managers import SharedMemoryManager
from multiprocessing.shared_memory import SharedMemory
from typing import Any

logger = logging.getLogger(__name__)

_ATTACH_LOCK = threading.Lock()


@dataclass(frozen=True)
class RingSpec:
    """The slots of one ring: one shared-memory block of ``slot_bytes`` per slot."""

    generation: int
    names: tuple[str, ...]
    slot_bytes: int

    @property
    def slots(self) -> int:
        return len(self.names)


def ignore_sigint() -> None:
    """Child processes leave Ctrl-C to the driver, which shuts everything down in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _no_register(name: Any, rtype: str) -> None:
    return None


def attach(name: str) -> SharedMemory:
    """Map an existing block without registering it with the resource tracker."""
    if sys.version_info >= (3, 13):  # pragma: no cover - 3.13 has the switch
        return SharedMemory(name, track=False)  # type: ignore[call-arg,unused-ignore]
    with _ATTACH_LOCK:
        original = resource_tracker.register
        resource_tracker.register = _no_register
        try:
            return SharedMemory(name)
        finally:
            resource_tracker.register = original


class SlotManager(SharedMemoryManager):
    """A SharedMemoryManager that can also release single blocks before shutdown."""

    def create(self, size: int) -> str:
        """A new block of ``size`` bytes owned by the manager; returns its name."""
        shm = self.SharedMemory(size)
        name = shm.name
        shm.close()  # the driver never touches pixels
        return name

    def release(self, name: str) -> None:
        """Unlink one block now and stop tracking it (the server's ``release_segment``)."""
        self._server_call("release_segment", name)

    def segments(self) -> list[str]:
        """Names of the blocks the manager tracks."""
        return list(self._server_call("list_segments"))

    def _server_call(self, method: str, *args: Any) -> Any:
        # SharedMemoryManager exposes these server methods but has no client wrappers
        me: Any = self
        with me._Client(me._address, authkey=me._authkey) as conn:
            return managers.dispatch(conn, None, method, args)  # type: ignore[attr-defined]


class Attachments:
    """The blocks a child process has mapped, by name; closed explicitly, never unlinked."""

    def __init__(self) -> None:
        self._blocks: dict[str, SharedMemory] = {}

    def get(self, name: str) -> SharedMemory:
        shm = self._blocks.get(name)
        if shm is None:
            shm = self._blocks[name] = attach(name)
        return shm

    def close(self, names: Iterable[str] | None = None) -> None:
        """Unmap ``names`` (all when None); every numpy view of them must be gone."""
        for name in list(self._blocks) if names is None else list(names):
            shm = self._blocks.pop(name, None)
            if shm is None:
                continue
            try:
                shm.close()
            except BufferError:  # a view is still alive: keep it mapped (and referenced)
                logger.warning("shared-memory block %s still has views; left mapped", name)
                self._blocks[name] = shm
