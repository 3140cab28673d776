"""Shared helpers of the Tango tests: a fake pipeline, event collection, bounded waits."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tango

from actors.config import PipelineConfig
from actors.core.acquisition import AcquisitionResult
from actors.core.api import Control
from actors.core.chain import ReducerChain, reconfigure_specs, runtime_parameters
from actors.core.status import Ledger, Snapshot, Status
from actors.reduce.base import OutputValue, Series
from actors.tango.pipeline_control import PipelineControl

SMALL = {"rows": 48, "cols": 64}


def base_config(**extra: Any) -> dict[str, Any]:
    """A MOENCH pipeline config with a small geometry and no files."""
    return {"source": {"geometry": SMALL}, "reducers": [{"type": "moench"}],
            "output": {"enabled": False}, "live_period": 0.2, **extra}


class FakePipeline:
    """A pipeline's Python API over made-up results: each ``status()`` call while an
    acquisition runs receives and processes 10 more frames; images hold the frame count.
    Runtime parameters are validated and versioned as the real ingest does."""

    def __init__(self, config: PipelineConfig, stop_delay: float = 0.0) -> None:
        self.config = config
        self.stop_delay = stop_delay
        self.specs = tuple(dict(s) for s in config.reducers)
        self.version = 0
        geom = config.source.geometry
        assert geom is not None
        self.chain = ReducerChain.from_specs(self.specs, geom.to_geometry())
        self.acquisition = 0
        self.running = False
        self.frames = 0
        self.done: dict[int, AcquisitionResult] = {}
        self.output_settings: tuple[str | None, str | None, int | None] | None = None
        self._lock = threading.Lock()
        self._aborted = threading.Event()

    def start_acquisition(self) -> int:
        with self._lock:
            if self.running:
                raise RuntimeError("already running")
            self.acquisition += 1
            self.running, self.frames = True, 0
            self._aborted.clear()
            return self.acquisition

    def stop_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        slow = self.stop_delay and timeout is not None and timeout < self.stop_delay
        if self.stop_delay and not self._aborted.wait(min(self.stop_delay, timeout or 1e9)) \
                and slow:
            raise TimeoutError(f"{self.frames} of {self.frames + 5} frames processed")
        with self._lock:
            return self._finish("aborted" if self._aborted.is_set() else "finished")

    def _finish(self, outcome: str) -> AcquisitionResult:
        if self.running:
            self.running = False
            now = time.time()
            self.done[self.acquisition] = AcquisitionResult(
                self.acquisition, outcome, self.outputs(), self.ledger(), now, now)  # type: ignore[arg-type]
        return self.done[self.acquisition]

    def wait_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        with self._lock:
            if self.acquisition in self.done:
                return self.done[self.acquisition]
        raise TimeoutError("not finished")

    def abort(self) -> None:
        with self._lock:
            self._aborted.set()
            self._finish("aborted")

    def set(self, name: str, value: Any) -> None:
        with self._lock:
            self.specs = reconfigure_specs(self.specs, {name: value})
            self.version += 1

    def set_output(self, filename: str | None = None, filepath: str | None = None,
                   file_index: int | None = None) -> dict[str, Any]:
        self.output_settings = (filename, filepath, file_index)
        return {}

    def reset_pedestal(self) -> None:
        pass

    def ledger(self) -> Ledger:
        return Ledger(self.acquisition, received=self.frames, processed=self.frames)

    def status(self) -> Status:
        with self._lock:
            params = {p.name: p.value for p in runtime_parameters(self.specs)}
            if self.running:
                self.frames += 10
                return Status("running", self.acquisition, self.frames, self.frames,
                              frame_rate=100.0, ledger=self.ledger(),
                              setup_version=self.version, parameters=params)
            last = self.done.get(self.acquisition)
            led = last.ledger if last is not None else Ledger(self.acquisition)
            return Status("idle", self.acquisition or None, led.received, led.processed,
                          ledger=led, setup_version=self.version, parameters=params,
                          outcome=last.outcome if last is not None else None)

    def outputs(self) -> dict[str, OutputValue]:
        n = self.frames
        out: dict[str, OutputValue] = {}
        for spec in self.chain.outputs_spec():
            if spec.kind == "series":
                values = np.arange(n).astype(spec.dtype).reshape(n, *[1] * len(spec.shape))
                out[spec.name] = Series(np.arange(n, dtype=np.int64),
                                        np.broadcast_to(values, (n, *spec.shape)).copy())
            elif spec.kind == "scalar":
                out[spec.name] = n
            else:
                out[spec.name] = np.full(spec.shape, float(n))
        return out

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self.running:
                return Snapshot(self.acquisition, True, self.frames, self.outputs(), time.time())
            last = self.done.get(self.acquisition)
            if last is None:
                return Snapshot(time=time.time())
            return Snapshot(last.acquisition, False, last.ledger.processed, last.outputs,
                            last.finished)


def fake_control(config: PipelineConfig) -> Control:
    """ServerProcess factory: a PipelineControl over a FakePipeline."""
    return PipelineControl(FakePipeline(config), config)


def slow_stop_control(config: PipelineConfig) -> Control:
    """ServerProcess factory: stop takes 5 s unless aborted."""
    return PipelineControl(FakePipeline(config, stop_delay=5.0), config)


class _StuckAtClose(PipelineControl):
    def close(self) -> None:
        time.sleep(600)  # a shutdown that never finishes (the server is killed first)


def stuck_close_control(config: PipelineConfig) -> Control:
    """ServerProcess factory: closing the control hangs, so SIGTERM never ends the server."""
    return _StuckAtClose(FakePipeline(config), config)


class Events:
    """Collects events of a sync DeviceProxy subscription (callbacks run in a Tango thread)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Any]] = []  # (receive time, event)
        self._cond = threading.Condition()

    def push_event(self, event: Any) -> None:
        with self._cond:
            self.events.append((time.time(), event))
            self._cond.notify_all()

    def values(self, name: str | None = None) -> list[Any]:
        with self._cond:
            return [ev.attr_value.value for _, ev in self.events
                    if not ev.err and ev.attr_value is not None and
                    (name is None or ev.attr_name.rsplit("/", 1)[-1].split("#")[0].lower() ==
                     name.lower())]

    def describe(self, last: int = 5) -> str:
        """The last events, briefly (for failure messages)."""
        out = []
        for t, ev in self.events[-last:]:
            value = getattr(getattr(ev, "attr_value", None), "value", None)
            out.append(f"{t:.3f} err={ev.err} ctr={getattr(ev, 'ctr', None)} "
                       f"{type(value).__name__}")
        return "; ".join(out)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                         f"{len(self.events)} events: {self.describe()}")
                self._cond.wait(min(left, 0.1))


class Subscriptions:
    """Subscribes a proxy's attributes and always unsubscribes (pytango#302: before the
    proxy goes away)."""

    def __init__(self, proxy: tango.DeviceProxy) -> None:
        self.proxy = proxy
        self.ids: list[int] = []

    def add(self, attr: str, events: Events,
            kind: tango.EventType = tango.EventType.CHANGE_EVENT) -> None:
        self.ids.append(self.proxy.subscribe_event(attr, kind, events))

    def close(self) -> None:
        while self.ids:
            self.proxy.unsubscribe_event(self.ids.pop())

    def __enter__(self) -> Subscriptions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(proxy: tango.DeviceProxy, name: str) -> Any:
    """Read a value, retrying once on the read/push race (tango.md §1, API_AttrValueNotSet)."""
    try:
        return proxy.read_attribute(name).value
    except tango.DevFailed as exc:
        if exc.args[0].reason != "API_AttrValueNotSet":
            raise
        return proxy.read_attribute(name).value


class ProcessOutput:
    """Drains a subprocess's text stdout in a thread (a full pipe would block it)."""

    def __init__(self, proc: Any, name: str) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails after ``timeout`` seconds or
        when the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"no line matching {pattern!r} within {timeout:g} s "
                                         f"(exit code {self.proc.poll()}); output:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the end of the output (after the process ended) and close the pipe."""
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.proc.stdout.close()


def stop_process(proc: Any, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` (a hung Tango process ignores SIGTERM)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


@contextlib.contextmanager
def client_executor_on_this_loop() -> Iterator[None]:
    """pytango's asyncio clients share one global executor, bound to the loop it was made
    on; a device server in this process (the local backend's, in a thread) may have made it
    on its own loop: an asyncio client test makes a fresh one on the running loop, and puts
    the previous one back after (a later in-process server must not find the test's)."""
    import asyncio

    from tango import asyncio_executor

    previous = asyncio_executor._MAIN_EXECUTOR  # (pytango has no getter that does not create)
    asyncio_executor.set_global_executor(
        asyncio_executor.AsyncioExecutor(loop=asyncio.get_running_loop()))
    try:
        yield
    finally:
        asyncio_executor.set_global_executor(previous)
