"""Shared-memory hygiene of the local backend, checked from the outside.

Each scenario runs the pipeline in a child Python process (normal run, abort, a killed
worker, Ctrl-C to the whole process group). Afterwards every shared-memory block the child
created is gone from /dev/shm and its stderr holds no resource-tracker warning, no leak
report and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.sim.simulator import Simulator, SimulatorSettings
from tests.conftest import SenderThread

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHM = Path("/dev/shm")
SCENE = {"rows": 48, "cols": 64, "photons": 6.0, "pump_photons": 6.0, "spot": (24.0, 32.0, 6.0)}

#: the child: python -c SCRIPT scenario endpoint frames
SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    from actors.backends.local.pipeline import LocalPipeline

    scenario, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = {"backend": "local", "source": {"endpoint": endpoint, "protocol": "sls"},
           "reducers": [{"type": "sum"}, {"type": "total"}], "workers": 2,
           "max_inflight": 4, "batch": {"max_frames": 8, "max_delay": 0.05},
           "tango": {"enabled": False}, "output": {"enabled": False}}

    def say(**kw):
        print(json.dumps(kw), flush=True)

    def until(cond, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(scenario)
            time.sleep(0.02)

    try:
        with LocalPipeline(cfg) as pipe:
            pipe.start_acquisition()
            say(event="open")
            until(lambda: pipe.coordinator.slots.segments())  # the ring exists
            if scenario != "normal":
                until(lambda: pipe.status()["processed"] >= 16)
            say(event="running", segments=pipe.coordinator.slots.segments())
            if scenario == "abort":
                pipe.abort()
            elif scenario == "crash":
                os.kill(pipe.worker_pids()[0], signal.SIGKILL)
            elif scenario == "kill-ingest":
                os.kill(pipe.coordinator.ingest.process.pid, signal.SIGKILL)
            elif scenario in ("ctrl-c", "kill-driver"):
                until(lambda: False, timeout=120)  # until the test sends a signal
            result = pipe.wait_acquisition(timeout=120)
            segments = pipe.coordinator.slots.segments()
            say(event="result", outcome=result.outcome, segments=segments,
                processed=result.ledger["processed"], received=result.ledger["received"],
                restarts=pipe.restarts)
    except KeyboardInterrupt:
        say(event="interrupted")
        sys.exit(130)
""")


def run_child(scenario: str, n: int, rate: float, lossless: bool,
              sender_threads: Callable[..., SenderThread],
              on_running: Callable[[subprocess.Popen[str]], None] | None = None,
              read_after_running: bool = True) -> tuple[int, list[dict[str, Any]], str]:
    before = set(os.listdir(SHM))
    sim_settings = SimulatorSettings(frames=n, lossless=lossless, seed=1, rate=rate,
                                     scene=SCENE, subscriber_timeout=120)
    with Simulator(sim_settings) as sim, subprocess.Popen(
            [sys.executable, "-c", SCRIPT, scenario, sim.endpoint, str(n)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True) as child:
        events: list[dict[str, Any]] = []
        sender: SenderThread | None = None
        try:
            assert child.stdout is not None
            for line in child.stdout:
                events.append(json.loads(line))
                if events[-1]["event"] == "open":  # the acquisition has started
                    sender = sender_threads(sim.run)
                if events[-1]["event"] == "running" and on_running is not None:
                    on_running(child)
                    if not read_after_running:  # (its output may stay open in orphans)
                        break
            code = child.wait(timeout=180)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
        assert child.stderr is not None
        stderr = child.stderr.read() if read_after_running else ""
        assert sender is not None, stderr
        sender.join(timeout=120)
    created = {s for e in events for s in e.get("segments", [])}
    assert created, (events, stderr)
    deadline = time.monotonic() + 10
    while created & set(os.listdir(SHM)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the manager unlinks before the child exits; this is a margin
    assert not created & set(os.listdir(SHM)), "shared-memory blocks left behind"
    assert not {s.lstrip("/") for s in created} & (set(os.listdir(SHM)) - before)
    return code, events, stderr


def assert_clean(stderr: str) -> None:
    for bad in ("resource_tracker", "leaked", "Traceback", "Exception ignored", "KeyError"):
        assert bad not in stderr, stderr


def test_normal_run_leaves_no_shared_memory(sender_threads: Callable[..., SenderThread]
                                            ) -> None:
    code, events, stderr = run_child("normal", 120, 0.0, True, sender_threads)
    assert code == 0, stderr
    result = events[-1]
    assert (result["outcome"], result["processed"]) == ("finished", 120)
    assert_clean(stderr)


def test_abort_leaves_no_shared_memory(sender_threads: Callable[..., SenderThread]) -> None:
    code, events, stderr = run_child("abort", 1500, 300.0, False, sender_threads)
    assert code == 0, stderr
    assert events[-1]["outcome"] == "aborted"
    assert_clean(stderr)


def test_killed_worker_leaves_no_shared_memory(sender_threads: Callable[..., SenderThread]
                                               ) -> None:
    code, events, stderr = run_child("crash", 400, 300.0, True, sender_threads)
    assert code == 0, stderr
    result = events[-1]
    assert (result["outcome"], result["processed"], result["received"]) == (
        "finished", 400, 400)
    assert result["restarts"] >= 1
    assert "died" in stderr  # the coordinator's warning (not a tracker complaint)
    assert_clean(stderr)


def test_killed_ingest_leaves_no_shared_memory(sender_threads: Callable[..., SenderThread]
                                               ) -> None:
    """The ingest process SIGKILLed mid-acquisition: the acquisition fails with every frame
    accounted for, a new ingest takes over, and the dead one's ring is unlinked."""
    code, events, stderr = run_child("kill-ingest", 1500, 300.0, False, sender_threads)
    assert code == 0, stderr
    result = events[-1]
    assert result["outcome"] == "failed"
    assert "the ingest process died" in stderr and "restarting it" in stderr
    assert_clean(stderr)


def test_ctrl_c_leaves_no_shared_memory(sender_threads: Callable[..., SenderThread]) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C does."""
    def interrupt(child: subprocess.Popen[str]) -> None:
        os.killpg(child.pid, signal.SIGINT)

    code, events, stderr = run_child("ctrl-c", 1500, 300.0, False, sender_threads,
                                     on_running=interrupt)
    assert code == 130, stderr
    assert events[-1]["event"] == "interrupted"
    assert_clean(stderr)


def test_a_killed_driver_leaves_no_process_and_no_shared_memory(
        sender_threads: Callable[..., SenderThread]) -> None:
    """SIGKILL of the driver alone, mid-acquisition: its children (the shared-memory manager,
    the ingest, the workers, the resource tracker) exit by themselves and every block is
    unlinked, within seconds."""
    group: list[int] = []

    def kill_driver(child: subprocess.Popen[str]) -> None:
        group.append(os.getpgid(child.pid))
        os.kill(child.pid, signal.SIGKILL)

    try:
        code, _, _ = run_child("kill-driver", 1500, 300.0, False, sender_threads,
                               on_running=kill_driver, read_after_running=False)
        assert code == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(group[0], 0)  # anyone of the driver's process group alive?
            except ProcessLookupError:
                return
            time.sleep(0.05)
        alive = subprocess.run(["ps", "-o", "pid,args", "-g", str(group[0])],
                               capture_output=True, text=True, check=False).stdout
        raise AssertionError(f"processes of the killed driver are still alive:\n{alive}")
    finally:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group[0], signal.SIGKILL)


def test_the_manager_exits_with_its_driver_even_if_a_block_is_already_gone() -> None:
    """(Seen: a manager server outlived its SIGKILLed driver, because unlinking a block
    someone had already removed raised in its watch thread.) It exits regardless."""
    script = textwrap.dedent("""
        import os, signal
        from multiprocessing.shared_memory import SharedMemory
        from actors.backends.local.shm import SlotManager

        manager = SlotManager()
        manager.start()
        block = manager.new_block(4096)
        SharedMemory(block.name).unlink()  # gone behind the manager's back
        print(manager._process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    pid = int(child.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the manager server outlived its driver")
