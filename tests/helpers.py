"""What several test modules share: the small MOENCH scene, pipeline configs for either
backend, output comparisons against the sequential reference, and one bounded wait."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from actors.reduce.base import Series
from actors.sim.simulator import Simulator
from actors.wire.model import Protocol
from tests.reference.moench_sequential import run_moench_reference

MOENCH = {"type": "moench", "split_pump": True, "pedestal_epoch": 20, "pedestal_lag": 1,
          "pedestal_frames": 50, "threshold": 40.0, "counting_sigma": 4.0}
SCENE = {"rows": 48, "cols": 64, "photons": 6.0, "pump_photons": 6.0, "spot": (24.0, 32.0, 6.0)}
#: a local Ray for tests: two CPUs, a small object store
RAY_INIT = {"num_cpus": 2, "object_store_memory": 200_000_000, "include_dashboard": False,
            "log_to_driver": False}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str | Callable[[], Any],
               period: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (or what it returns then) after
    ``timeout`` seconds. Never a sleep used as synchronisation: a condition, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            text = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(period)


def pipeline_config(endpoint: str, protocol: Protocol, reducers: list[dict[str, Any]], *,
                    backend: str = "ray", workers: int = 2, **extra: Any) -> dict[str, Any]:
    """A small test pipeline: 8-frame batches, no files, no Tango, half a CPU per actor."""
    return {"backend": backend, "source": {"endpoint": endpoint, "protocol": str(protocol)},
            "reducers": reducers, "workers": workers, "max_inflight": max(4, workers),
            "batch": {"max_frames": 8, "max_delay": 0.05},
            "ray": {"worker_cpus": 0.5}, "tango": {"enabled": False},
            "output": {"enabled": False}, **extra}


def assert_outputs_equal(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """Equal to the reference (float64 sums to 1e-12 relative: the documented tolerance)."""
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for name, value in want.items():
        g = got[name]
        if isinstance(value, Series):
            assert isinstance(g, Series)
            np.testing.assert_array_equal(g.frame_numbers, value.frame_numbers)
            np.testing.assert_allclose(g.values, value.values, rtol=1e-12, atol=0, err_msg=name)
        else:
            np.testing.assert_allclose(np.asarray(g), np.asarray(value), rtol=1e-12, atol=1e-9,
                                       err_msg=name)


def assert_identical(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """Bit-identical outputs (same names, same values, same dtypes)."""
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        g = got[name]
        if isinstance(value, Series):
            assert isinstance(g, Series), name
            np.testing.assert_array_equal(g.frame_numbers, value.frame_numbers)
            np.testing.assert_array_equal(g.values, value.values, err_msg=name)
            assert g.values.dtype == value.values.dtype, name
        else:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(value), err_msg=name)
            assert np.asarray(g).dtype == np.asarray(value).dtype, name


def moench_run(sim: Simulator, n: int, chain: Mapping[str, Any] = MOENCH) -> dict[str, Any]:
    """The sequential reference on the simulator's first ``n`` frames."""
    frames = np.stack([sim.scene.frame(i) for i in range(n)])
    settings = {k: v for k, v in chain.items() if k != "type"}
    return run_moench_reference(frames, np.arange(n), settings)


class Lines:
    """Collects a child's stderr lines in a thread so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()  # None: the stream ended
        self.seen: list[str] = []
        assert proc.stderr is not None
        self._t = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        self._t.start()

    def _pump(self, stream: object) -> None:
        try:
            for line in stream:  # type: ignore[attr-defined]
                self.lines.put(line)
        except (OSError, ValueError):  # closed under us
            pass
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line with ``text``; TimeoutError after ``timeout``, AssertionError at
        once when the process closed its stderr (it ended) without printing it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                self.lines.put(None)  # later waits end at once too
                try:
                    code: int | None = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = None
                raise AssertionError(f"{text!r} not seen: the process ended (exit code "
                                     f"{code}); got:\n{''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line
        raise TimeoutError(f"{text!r} not seen in {timeout} s; got:\n{''.join(self.seen)}")


@contextlib.contextmanager
def service_process(command: Sequence[str], *, new_session: bool = False
                    ) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """A child process (e.g. ``rayline run``) with its stderr lines collected; killed and
    reaped on the way out, whatever happened. ``new_session``: it leads its own process
    group (for signals sent to the whole group)."""
    proc = subprocess.Popen(list(command), stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    try:
        yield proc, Lines(proc)
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def kill_source_ingest(pipe: Any, backend: str, index: int) -> Callable[[], None]:
    """SIGKILL the ingest of the ``index``-th source of a multi-source pipeline (its Ray
    actor, which Ray restarts, or its local process, which the coordinator restarts);
    returns a wait (at most 60 s) for its successor to be up."""
    if backend == "ray":
        import ray

        actor = pipe.ingest if index == 0 else pipe.module_ingests[index - 1]
        ray.kill(actor, no_restart=False)
        return lambda: ray.get(actor.open.remote(), timeout=60)  # the restarted actor
    import os
    import signal

    c = pipe.coordinator
    name = c.names[index]

    def handle() -> Any:
        return c.ingest if index == 0 else c.secondaries[name]

    victim = handle()
    os.kill(victim.process.pid, signal.SIGKILL)
    return lambda: wait_until(lambda: handle() is not victim and handle().ready.is_set(),
                              60, f"the ingest of {name} to come back")
