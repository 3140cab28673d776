"""Measurement, not a check: latency from a result to a Tango client.

Run with ``RAYLINE_TANGO_LATENCY=1 pytest tests/integration/test_tango_latency.py``. The
device stamps each output event with the time the results actor took the snapshot, so
(client receive time - event time) covers the snapshot, its transfer to the device actor,
the conversion, every push before it in the same snapshot, ZMQ and the client side. The
wait for the next ``live_period`` tick is not included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import ray
import tango

from actors.backends.ray.driver import RayPipeline
from actors.backends.ray.tango import start_tango_actor
from actors.config import parse_config
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread
from tests.helpers import wait_until
from tests.tango_helpers import Events, Subscriptions, read

pytestmark = [
    pytest.mark.tango, pytest.mark.ray, pytest.mark.slow,
    pytest.mark.timeout(600, method="thread"),
    pytest.mark.skipif(not os.environ.get("RAYLINE_TANGO_LATENCY"),
                       reason="a measurement: set RAYLINE_TANGO_LATENCY=1"),
]

CASES = {
    "moench-400x400": (SimulatorSettings(frames=1, lossless=True, seed=1),
                       [{"type": "moench"}], ("analog_img", "pedestal_std")),
    "eiger-1030x1065": (SimulatorSettings(protocol=Protocol.DECTRIS_V2, detector="eiger",
                                          frames=1, seed=1),
                        [{"type": "mean"}], ("mean",)),
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, object_store_memory=500_000_000,
             include_dashboard=False, namespace="rayline-tango-latency", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("case", list(CASES))
def test_event_latency(local_ray: None, case: str, sender_threads: Callable[..., SenderThread],
                       capsys: pytest.CaptureFixture[str]) -> None:
    settings, reducers, names = CASES[case]
    frames, rate = 240, 30.0
    with Simulator(settings) as sim:
        config = parse_config({
            "source": {"endpoint": sim.endpoint, "protocol": str(settings.protocol),
                       "geometry": {"rows": sim.geometry.rows, "cols": sim.geometry.cols,
                                    "dtype": sim.geometry.dtype}},
            "reducers": reducers, "workers": 2, "max_inflight": 4,
            "batch": {"max_frames": 8, "max_delay": 1.0}, "ray": {"worker_cpus": 0.5},
            "output": {"enabled": False}, "live_period": 0.5})
        with RayPipeline(config) as pipe:
            device = start_tango_actor(config, pipe.names)
            try:
                dev = tango.DeviceProxy(device.address)
                dev.set_timeout_millis(60_000)
                wait_until(lambda: dev.state() == tango.DevState.ON, 30, dev.status)
                events = {name: Events() for name in names}
                with Subscriptions(dev) as subs:
                    for name, ev in events.items():
                        subs.add(name, ev)
                    first = {name: len(ev.events) for name, ev in events.items()}
                    dev.start_receiver()
                    sim.settings = replace(sim.settings, frames=frames, rate=rate,
                                           end_of_series=False)
                    sender_threads(sim.run).join(timeout=120)
                    wait_until(lambda: read(dev, "processed_frames")
                               + read(dev, "lost_frames") == frames, 120,
                               dev.status)
                    dev.stop_receiver()
                    lat = {name: _latencies(ev.events[first[name]:])
                           for name, ev in events.items()}
            finally:
                device.stop()
    with capsys.disabled():
        for name, values in lat.items():
            print(f"\n{case} {name}: {len(values)} events, latency ms "
                  f"median {np.median(values):.1f} p95 {np.percentile(values, 95):.1f} "
                  f"max {np.max(values):.1f}")


def _latencies(events: list[tuple[float, Any]]) -> list[float]:
    out = []
    for received, ev in events:
        if not ev.err and ev.attr_value is not None and ev.attr_value.value is not None:
            out.append(1000.0 * (received - ev.attr_value.time.totime()))
    assert out, "no events"
    return out
