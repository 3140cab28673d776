"""Starting and stopping the local backend's processes (``spawn``, Ctrl-C and SIGTERM left
to the driver).

Children are started with SIGINT and SIGTERM blocked, so a signal that reaches the whole
process group while a child is still starting cannot kill it: the child ignores them before
unblocking them (:func:`actors.backends.local.shm.leave_signals_to_driver`) and the driver
shuts everything down in order. They are also started with the parent's ``__main__``
hidden (:func:`main_hidden`), so a user's script without ``if __name__ == "__main__":``
runs on this backend as it does on Ray.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.managers import BaseManager, State  # type: ignore[attr-defined]
from typing import Any

from actors.backends.local.shm import STOP_SIGNALS

logger = logging.getLogger(__name__)

#: the start method of every local-backend process (fork is unsafe with threads and zmq)
START_METHOD = "spawn"


def context() -> SpawnContext:
    ctx = multiprocessing.get_context(START_METHOD)
    assert isinstance(ctx, SpawnContext)
    return ctx


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread (children inherit the mask) while starting
    children."""
    # start the resource tracker first: ensure_running() unblocks its signals when it starts
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def main_hidden() -> Iterator[None]:
    """Children started meanwhile do not run the parent's ``__main__`` again.

    ``spawn`` re-imports the parent's main script in every child (for what it defines), so a
    script that opens a pipeline at its top level, without ``if __name__ == "__main__":``,
    would open it again in each child and fail. rayline's children run functions of this
    package and need nothing from ``__main__``: it is replaced by an empty module while they
    start."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def start(target: Callable[..., Any], args: tuple[Any, ...], name: str) -> SpawnProcess:
    process = context().Process(target=target, args=args, name=name, daemon=True)
    with stop_signals_blocked(), main_hidden():
        process.start()
    return process


def shutdown_manager(manager: BaseManager) -> None:
    """Shut a manager down if it started (a manager whose start failed has nothing to
    shut down); for a SharedMemoryManager this unlinks every block it made."""
    if manager._state.value != State.STARTED:  # type: ignore[attr-defined]
        return
    try:
        manager.shutdown()
    except Exception:
        logger.exception("the shared-memory manager did not shut down cleanly")


def stop(process: SpawnProcess, timeout: float) -> int | None:
    """Join ``process`` within ``timeout`` s, else terminate it, else kill it (the children
    ignore SIGTERM; terminating matters for a child still starting)."""
    process.join(timeout)
    if process.is_alive():
        logger.warning("%s (pid %s) did not exit within %.0f s: terminating", process.name,
                       process.pid, timeout)
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        logger.warning("%s (pid %s) ignored SIGTERM: killing", process.name, process.pid)
        process.kill()
        process.join(2.0)
    code = process.exitcode
    with contextlib.suppress(ValueError):
        process.close()
    return code
