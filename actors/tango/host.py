"""Hosting the device server: in a thread of this process, or in a child process.

* :class:`ServerThread` runs :func:`~actors.tango.server.run_server` in a dedicated thread
  (its own event loop; tango.md §4) and stops it through the admin device's ``Kill``. The
  Ray actor (:mod:`actors.tango.actor`) uses it.
* :class:`ServerProcess` runs it in the main thread of a child started with the ``spawn``
  method (a forked child inherits pytango's executor bound to the parent's loop; tango.md
  §2); the child builds its Control with a picklable ``factory(config)``. The local backend
  uses it. Stopping sends SIGTERM (Tango exits cleanly), then SIGKILL after a timeout.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from actors.config import PipelineConfig
from actors.core.api import Control
from actors.tango.address import SERVER_NAME
from actors.tango.server import run_server

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
STACK_DUMP_WAIT = 1.0  # seconds a stuck server gets to write its stacks before SIGKILL

ControlFactory = Callable[[PipelineConfig], Control]


def admin_address(device: str, instance: str) -> str:
    """The admin device of the server that exports ``device`` (a full address)."""
    if "#dbase=no" in device:
        base = device.split("#", 1)[0]
        host_port = base.removeprefix("tango://").split("/", 1)[0]
        return f"tango://{host_port}/dserver/{SERVER_NAME}/{instance}#dbase=no"
    if device.startswith("tango://"):
        host_port = device.removeprefix("tango://").split("/", 1)[0]
        return f"tango://{host_port}/dserver/{SERVER_NAME}/{instance}"
    return f"dserver/{SERVER_NAME}/{instance}"


def kill_server(admin: str, timeout: float = STOP_TIMEOUT) -> None:
    """Ask a server to exit through its admin device."""
    import tango

    proxy = tango.DeviceProxy(admin)
    proxy.set_timeout_millis(int(timeout * 1000))
    proxy.command_inout("Kill")


class ServerThread:
    """The device server in a thread of this process (one per process)."""

    def __init__(self, config: PipelineConfig, control: Control, *,
                 instance: str | None = None, **run_kwargs: Any) -> None:
        self.config = config
        self.control = control
        self.instance = instance or config.tango.instance
        self.address: str | None = None
        self.error: BaseException | None = None
        self._run_kwargs = run_kwargs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tango-server", daemon=True)

    def _serve(self) -> None:
        try:
            run_server(self.config, self.control, instance=self.instance,
                       on_ready=self._on_ready, **self._run_kwargs)
        except BaseException as exc:  # reported by start() / alive()
            logger.exception("the Tango server failed")
            self.error = exc
        finally:
            self._ready.set()

    def _on_ready(self, address: str) -> None:
        self.address = address
        self._ready.set()

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server; returns the device's full address once it is exported.

        cppTango installs process-wide SIGINT/SIGTERM handlers that would stop only the
        server thread; called from the main thread, this puts the host's Python handlers
        back, so the host keeps its own shutdown (and stops the server with :meth:`stop`).
        """
        saved = _python_signal_handlers()
        self._thread.start()
        ready = self._ready.wait(timeout)
        _restore_signal_handlers(saved)
        if not ready:
            raise TimeoutError(f"the Tango server did not start within {timeout:g} s")
        if self.address is None:
            raise RuntimeError(f"the Tango server did not start: {self.error!r}")
        return self.address

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Kill the server through its admin device and join the thread."""
        if not self._thread.is_alive():
            return
        if self.address is not None:
            try:
                kill_server(admin_address(self.address, self.instance), timeout)
            except Exception:  # joining tells whether it went anyway
                logger.exception("Kill through the admin device failed")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the Tango server thread did not end within {timeout:g} s")
        self.control.close()


def start_tango_thread(config: PipelineConfig, control: Control,
                       timeout: float = START_TIMEOUT) -> ServerThread:
    """The device of a pipeline (its ``control()``) in a thread of this process;
    ``.address``, ``.alive``, ``.stop()``."""
    server = ServerThread(config, control)
    server.start(timeout)
    return server


def _python_signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    return {sig: handler for sig, handler in saved.items() if handler is not None}


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _child(config: PipelineConfig, factory: ControlFactory, conn: Connection,
           instance: str | None) -> None:
    """Child process main: build the Control, serve, report the address or the error."""
    from actors.logs import setup_logging

    setup_logging("INFO")
    # SIGUSR1 dumps every thread's stack to stderr: what ServerProcess.stop shows before it
    # kills a server that did not stop on SIGTERM
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    control: Control | None = None
    try:
        control = factory(config)
        run_server(config, control, instance=instance,
                   on_ready=lambda address: conn.send(("ready", address)))
    except BaseException as exc:
        logger.exception("the Tango server process failed")
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if control is not None:
            control.close()
        conn.close()


class ServerProcess:
    """The device server in a spawned child process."""

    def __init__(self, config: PipelineConfig, factory: ControlFactory, *,
                 instance: str | None = None) -> None:
        self.config = config
        self.instance = instance or config.tango.instance
        self.address: str | None = None
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_child, name="rayline-tango",
                                   args=(config, factory, child_conn, instance), daemon=True)
        self._child_conn = child_conn

    def start(self, timeout: float = START_TIMEOUT) -> str:
        self.process.start()
        self._child_conn.close()
        if not self._conn.poll(timeout):
            self.stop()
            raise TimeoutError(f"the Tango server process did not start within {timeout:g} s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            kind, value = "error", f"exited with code {self.process.exitcode}"
        if kind != "ready":
            self.stop()
            raise RuntimeError(f"the Tango server process did not start: {value}")
        self.address = str(value)
        return self.address

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self.process
        if proc.pid is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout)
            if proc.is_alive():
                logger.warning("Tango server process %d did not stop within %g s of SIGTERM; "
                               "its threads' stacks follow on its stderr, then it is killed",
                               proc.pid, timeout)
                os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: where is it stuck?
                proc.join(STACK_DUMP_WAIT)
                proc.kill()
                proc.join(timeout)
        self._conn.close()
        return proc.exitcode
