"""Shared-memory slots for the local backend (Python 3.11 hygiene included).

The driver starts a :class:`SlotManager` (a ``SharedMemoryManager``) whose server process
tracks every block and owns its unlink, on :meth:`SlotManager.release` or at ``shutdown()``,
so nothing is left in ``/dev/shm`` whichever process dies. The processes that write a block
create it through the manager (:meth:`SlotManager.new_block`, with the manager's
:class:`ManagerAddress`): the ingest its ring of slots, each worker its result block; the
processes that only read map blocks with :func:`attach`.

Resource tracker (Python < 3.13, no ``track=False``): ``SharedMemory(name)`` registers the
block with the resource tracker even when it only attaches. Processes started with the
``spawn`` start method share their parent's tracker, which keeps one *set* of names, so the
usual recipe "attach, then ``resource_tracker.unregister``" (perf.md fact 10) breaks as soon
as two processes attach the same block: the first unregister removes the creator's entry and
the second makes the tracker print a ``KeyError`` traceback. :func:`attach` therefore never
talks to the tracker at all: the only REGISTER is the creation, balanced by the manager's
unlink, so the tracker has nothing to unlink or warn about at exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import managers, resource_tracker
from multiprocessing.managers import SharedMemoryManager, SharedMemoryServer
from multiprocessing.shared_memory import SharedMemory
from typing import Any

logger = logging.getLogger(__name__)

_ATTACH_LOCK = threading.Lock()


#: the signals that stop the service; children leave them to the driver
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def leave_signals_to_driver() -> None:
    """Child processes leave Ctrl-C and SIGTERM to the driver, which shuts everything down
    in order: a signal sent to the whole process group (Ctrl-C in a terminal, ``systemctl
    stop``, a ``timeout`` command) must not kill workers under a draining acquisition. A
    child whose driver is gone (SIGKILL) still ends: its connection to the driver closes."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


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


@dataclass(frozen=True)
class ManagerAddress:
    """How a child process reaches the driver's manager (passed when it is started)."""

    address: Any
    authkey: bytes

    def client(self) -> SlotManager:
        return SlotManager(address=self.address, authkey=self.authkey)


#: seconds between the manager server's looks at whether the driver is still alive
PARENT_POLL = 0.2


class _ParentWatchingServer(SharedMemoryServer):
    """The manager's server, which unlinks every block it tracks and exits as soon as the
    driver that started it is gone (a SIGKILLed driver leaves nothing behind: the ingest
    and workers end on their pipes' EOF, the resource tracker once they all have)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parent = os.getppid()
        threading.Thread(target=self._watch, args=(parent,), name="parent watch",
                         daemon=True).start()

    def _watch(self, parent: int) -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        try:  # (a block already gone must not keep this server alive: exit whatever)
            for name in list(self.shared_memory_context.segment_names):  # type: ignore[attr-defined]
                with contextlib.suppress(OSError):
                    SharedMemory(name).unlink()
        finally:
            os._exit(0)


class SlotManager(SharedMemoryManager):
    """A SharedMemoryManager that can also release single blocks before shutdown, and whose
    server ends with the driver; in a child process, a client of the driver's
    (:meth:`ManagerAddress.client`)."""

    _Server = _ParentWatchingServer

    def where(self) -> ManagerAddress:
        me: Any = self
        return ManagerAddress(me._address, bytes(me._authkey))

    def new_block(self, size: int) -> SharedMemory:
        """A new block of ``size`` bytes, mapped here, unlinked by the manager."""
        return self.SharedMemory(size)

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
