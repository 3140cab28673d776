"""The device's runtime parameters follow the pipeline's one source of truth (the ingest's
versioned setup), on both backends: a Python ``set()`` shows in the Tango attribute and as a
change event, a Tango write shows in ``status()``. And the device starts with every built-in
reducer and the example user reducer in its chain."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tango

from actors.config import parse_config
from actors.reduce.registry import BUILTIN
from actors.tango.host import ServerProcess
from tests.helpers import wait_until
from tests.tango_helpers import SMALL, fake_control, read

pytestmark = [pytest.mark.tango, pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

ROOT = Path(__file__).resolve().parents[2]

EVERY_REDUCER = [
    {"type": "moench"},
    {"type": "sum"},
    {"type": "mean"},
    {"type": "max"},
    {"type": "total"},
    {"type": "roi", "rois": [{"name": "corner", "row0": 0, "row1": 10, "col0": 0, "col1": 12}]},
    {"type": "radial", "center": [24.0, 32.0], "bins": 8, "per_frame": True},
    {"type": "hits", "threshold": 90.0, "min_pixels": 10},
    {"type": "actors.reduce.examples.centre_of_mass:CentreOfMass", "name": "com"},
]


def jungfrau_reducers(directory: Path) -> list[dict[str, Any]]:
    """The Jungfrau converter and dark-run reducers, with calibration files for SMALL."""
    import numpy as np

    shape = (SMALL["rows"], SMALL["cols"])
    np.save(directory / "gain.npy", np.stack([np.full(shape, 40.0), np.full(shape, -1.5),
                                              np.full(shape, -0.1)]))
    np.save(directory / "pedestal.npy", np.stack([np.full(shape, 3000.0),
                                                  np.full(shape, 14000.0),
                                                  np.full(shape, 15000.0)]))
    return [{"type": "jungfrau", "gain_file": str(directory / "gain.npy"),
             "pedestal_file": str(directory / "pedestal.npy"), "photon_energy": 12.4},
            {"type": "jungfrau_pedestal"}]


@pytest.fixture(scope="module")
def every_reducer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reducers = [*EVERY_REDUCER, *jungfrau_reducers(tmp_path_factory.mktemp("calibration"))]
    assert {r["type"] for r in reducers} >= set(BUILTIN)
    config = parse_config({"source": {"geometry": SMALL}, "reducers": reducers,
                           "output": {"enabled": False}, "live_period": 0.2})
    server = ServerProcess(config, fake_control)
    try:
        yield server.start(timeout=60)
    finally:
        assert server.stop(timeout=10) == 0


def test_the_device_starts_with_every_built_in_and_the_example_reducer(
        every_reducer: str) -> None:
    dev = tango.DeviceProxy(every_reducer)
    dev.set_timeout_millis(10_000)
    wait_until(lambda: dev.state() == tango.DevState.ON, 20, lambda: dev.status())
    attrs = {a.lower() for a in dev.get_attribute_list()}
    for name in ("analog_img", "sum", "mean", "max", "total", "roi_corner", "radial",
                 "radial_frames", "hits", "hits_count", "min_pixels", "hits_threshold",
                 "moench_threshold", "sum_saturation_value", "min_value", "com_row",
                 "energy_img", "photon_img", "g2_pixels", "photon_energy", "pedestal_mean",
                 "dark_run", "timings"):
        assert name in attrs, name
    bound = dev.get_attribute_config("min_pixels")  # an int bound stays an int
    assert bound.data_type == tango.CmdArgType.DevLong64 and bound.min_value == "0"
    dev.write_attribute("min_pixels", 12)
    assert read(dev, "min_pixels") == 12
    with pytest.raises(tango.DevFailed):
        dev.write_attribute("min_pixels", -1)
    dev.start_receiver()
    dev.stop_receiver()
    for attr in dev.get_attribute_list():  # every attribute reads after an acquisition
        read(dev, attr)


SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    import tango
    from actors import Pipeline

    backend = sys.argv[1]
    config = {"backend": backend, "workers": 1,
              "source": {"endpoint": "tcp://127.0.0.1:9", "geometry": {"rows": 48, "cols": 64}},
              "reducers": [{"type": "moench", "threshold": 90.0}],
              "output": {"enabled": False}, "live_period": 0.2,
              "ray": {"num_cpus": 2, "object_store_memory": 200000000, "worker_cpus": 0.5}}
    events, cond = [], threading.Condition()

    def on_event(ev):
        if not ev.err and ev.attr_value is not None:
            with cond:
                events.append(ev.attr_value.value)
                cond.notify_all()

    def wait(predicate, what):
        deadline = time.monotonic() + 30
        with cond:
            while not predicate():
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {what}: {events}")
                cond.wait(0.1)

    out = {}
    with Pipeline(config) as pipe:
        dev = tango.DeviceProxy(pipe.tango_address)
        dev.set_timeout_millis(20000)
        eid = dev.subscribe_event("threshold", tango.EventType.CHANGE_EVENT, on_event)
        try:
            wait(lambda: 90.0 in events, "the first event")
            pipe.set("threshold", 55.0)  # Python: the device follows
            wait(lambda: events[-1] == 55.0, "the change event")
            out["read_after_set"] = dev.read_attribute("threshold").value
            dev.write_attribute("counting_sigma", 3.5)  # Tango: the pipeline follows
            status = pipe.status()
            out["status_sigma"] = status.parameters["counting_sigma"]
            out["version"] = status.setup_version
            out["events"] = events
        finally:
            dev.unsubscribe_event(eid)
    print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.ray), "local"])
def test_python_set_shows_in_tango_and_tango_writes_show_in_status(backend: str,
                                                                   tmp_path: Path) -> None:
    """Run in its own process: the local backend hosts the device in a thread of the
    pipeline's process, which changes pytango's asyncio state for later tests."""
    script = tmp_path / "params.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), backend], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    assert out["read_after_set"] == 55.0
    assert out["events"][-1] == 55.0 and out["events"][0] == 90.0
    assert math.isclose(out["status_sigma"], 3.5) and out["version"] == 2
