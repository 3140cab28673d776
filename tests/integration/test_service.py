"""`rayline run` as a service: ready, serving, clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import yaml

from actors.app.service import READY_LINE
from actors.sim.simulator import Simulator, SimulatorSettings
from tests.conftest import SenderThread
from tests.helpers import service_process

pytestmark = [pytest.mark.slow]


@pytest.mark.ray
def test_run_serves_and_stops_cleanly_on_sigterm(
        tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    settings = SimulatorSettings(frames=300, rate=200, lossless=True, end_of_series=False,
                                 scene={"rows": 64, "cols": 64})
    with Simulator(settings) as sim:
        cfg = {"source": {"endpoint": sim.endpoint, "protocol": "sls"},
               "reducers": [{"type": "sum"}], "workers": 1,
               "ray": {"num_cpus": 2, "object_store_memory": 100_000_000},
               "output": {"directory": str(tmp_path / "out")}, "tango": {"enabled": False}}
        path = tmp_path / "service.yaml"
        path.write_text(yaml.safe_dump(cfg))
        command = [sys.executable, "-m", "actors", "run", str(path), "--auto"]
        with service_process(command) as (proc, lines):
            lines.wait_for(READY_LINE, 180)
            children = psutil.Process(proc.pid).children(recursive=True)
            assert children, "the service started no Ray processes?"
            lines.wait_for("acquisition 1 started", 60)
            sender = sender_threads(sim.run)
            sender.join(120)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, "".join(lines.seen)
            lines.wait_for("rayline service stopped", 10)
    text = "".join(lines.seen)
    assert "signal SIGTERM: stopping" in text
    assert "acquisition 1 finished: received 300, processed 300" in text, text
    files = list((tmp_path / "out").glob("run_*.h5"))
    assert [f.name for f in files] == ["run_000000.h5"]
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    deadline = time.monotonic() + 60
    while alive and time.monotonic() < deadline:  # Ray's own processes exit asynchronously
        time.sleep(0.2)
        alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.cmdline() for c in alive]


@pytest.mark.tango
@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.ray), "local"])
def test_sigint_drains_the_acquisition_a_tango_client_started(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    """The service learns of acquisitions started through its device: SIGINT drains that
    one (not a stale number), its frames all processed, and the service exits."""
    import tango

    n = 120
    settings = SimulatorSettings(frames=n, rate=400, lossless=True, end_of_series=False,
                                 scene={"rows": 32, "cols": 32})
    with Simulator(settings) as sim:
        cfg = {"backend": backend, "source": {"endpoint": sim.endpoint, "protocol": "sls"},
               "reducers": [{"type": "sum"}], "workers": 1,
               "ray": {"num_cpus": 2, "object_store_memory": 100_000_000},
               "output": {"enabled": False},
               "tango": {"enabled": True, "database": False}}
        path = tmp_path / "service.yaml"
        path.write_text(yaml.safe_dump(cfg))
        command = [sys.executable, "-m", "actors", "run", str(path)]
        with service_process(command) as (proc, lines):
            ready = lines.wait_for(READY_LINE, 180)
            address = ready.rsplit("Tango ", 1)[1].strip()
            dev = tango.DeviceProxy(address)
            dev.set_timeout_millis(20_000)
            sim.wait_for_subscribers()  # the service's SUB has joined, once
            sim.settings = replace(sim.settings, wait_subscribers=0)
            for _ in range(2):  # the second acquisition is the one running at the signal
                dev.Start()
                sender = sender_threads(sim.run)
                sender.join(120)
                deadline = time.monotonic() + 60
                while dev.read_attribute("processed_frames").value < n:
                    assert time.monotonic() < deadline, dev.status()
                    time.sleep(0.05)
                if dev.read_attribute("acquisition").value == 1:
                    dev.Stop()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 0, "".join(lines.seen)
            lines.wait_for("rayline service stopped", 10)
    text = "".join(lines.seen)
    assert "draining acquisition 2" in text, text
    assert f"acquisition 2 finished: received {n}, processed {n}" in text, text
    assert "did not drain" not in text


def test_sigterm_to_the_whole_process_group_drains_on_the_local_backend(
        tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    """``systemctl stop``, ``timeout`` or a terminal signal every process of the group: the
    worker, ingest and shared-memory processes leave the signal to the driver, which drains
    the running acquisition (every frame processed) and stops them in order."""
    import os

    n = 300
    settings = SimulatorSettings(frames=n, rate=300, lossless=True, end_of_series=False,
                                 scene={"rows": 64, "cols": 64})
    with Simulator(settings) as sim:
        cfg = {"backend": "local", "source": {"endpoint": sim.endpoint, "protocol": "sls"},
               "reducers": [{"type": "sum"}], "workers": 2,
               "output": {"directory": str(tmp_path / "out")}, "tango": {"enabled": False}}
        path = tmp_path / "service.yaml"
        path.write_text(yaml.safe_dump(cfg))
        command = [sys.executable, "-m", "actors", "run", str(path), "--auto"]
        with service_process(command, new_session=True) as (proc, lines):
            lines.wait_for(READY_LINE, 180)
            lines.wait_for("acquisition 1 started", 60)
            sender = sender_threads(sim.run)
            sender.join(120)
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, "".join(lines.seen)
            lines.wait_for("rayline service stopped", 10)
    text = "".join(lines.seen)
    assert f"acquisition 1 finished: received {n}, processed {n}" in text, text
    assert "died" not in text and "ERROR" not in text, text
