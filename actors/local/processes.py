"""Starting and stopping the local backend's processes (``spawn``, Ctrl-C left to the driver).

Children are started with SIGINT blocked, so a Ctrl-C that reaches the whole process group
while a child is still starting cannot kill it: the child ignores SIGINT before unblocking
it (:func:`actors.local.shm.ignore_sigint`) and the driver shuts everything down in order.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

logger = logging.getLogger(__name__)

#: the start method of every local-backend process (fork is unsafe with threads and zmq)
START_METHOD = "spawn"


def context() -> SpawnContext:
    ctx = multiprocessing.get_context(START_METHOD)
    assert isinstance(ctx, SpawnContext)
    return ctx


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread (children inherit the mask) while starting children."""
    # start the resource tracker first: ensure_running() unblocks its signals when it starts
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start(target: Callable[..., Any], args: tuple[Any, ...], name: str) -> SpawnProcess:
    process = context().Process(target=target, args=args, name=name, daemon=True)
    with sigint_blocked():
        process.start()
    return process


def stop(process: SpawnProcess, timeout: float) -> int | None:
    """Join ``process`` within ``timeout`` s, else terminate it, else kill it."""
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
