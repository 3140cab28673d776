"""What only the Ray backend has: batches in the object store within a byte budget."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from actors.backends.ray.driver import RayPipeline
from actors.reduce.base import Series
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread
from tests.helpers import pipeline_config, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_uncompressed_frames_within_the_store_budget(
        ray_runtime: None, sender_threads: Callable[..., SenderThread]) -> None:
    """Raw frames travel zero-copy (views stored by ray.put, read back as one strided
    array) and the ingest never holds more than ``ray.inflight_bytes`` of batches: batches
    shrink so that ``max_inflight`` of them fit (8 frames -> 5)."""
    n, rows, cols = 80, 256, 256
    sim_settings = SimulatorSettings(protocol=Protocol.DECTRIS_V1, detector="eiger", frames=n,
                                     v1_encoding="<", scene={
                                         "rows": rows, "cols": cols, "dtype": "uint16",
                                         "centre": (128.0, 128.0), "rings": (40.0, 90.0)})
    batch_bytes = 8 * rows * cols * 2
    budget = int(2.5 * batch_bytes)
    with Simulator(sim_settings) as sim, RayPipeline(pipeline_config(
            sim.endpoint, Protocol.DECTRIS_V1, [{"type": "sum"}, {"type": "total"}],
            ray={"worker_cpus": 0.5, "inflight_bytes": budget})) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=120)
        sender.join()
        peak = pipe.status().peak_inflight_bytes
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    frames[sim.scene.mask[None] | (frames >= np.iinfo(np.uint16).max)] = 0
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    assert result.outputs["sum"].dtype == np.int64
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    assert result.ledger.processed == n and result.ledger.lost == 0
    assert batch_bytes <= peak <= budget  # unbounded, 4 batches of 8 (max_inflight) go
    assert result.ledger.processed_batches >= n // 5  # 10 with 8-frame batches


def test_every_stage_actor_can_be_restarted_from_its_arguments(
        ray_runtime: None, capfd: pytest.CaptureFixture[str]) -> None:
    """Ray restarts a dead actor from its constructor arguments; arguments it had to keep in
    the object store may be gone by then (ray-project/ray#53727: a list of actor handles is
    one), and Ray says so when it creates the actor. No rayline actor has such arguments."""
    with Simulator(SimulatorSettings(frames=1)) as sim, RayPipeline(pipeline_config(
            sim.endpoint, Protocol.SLS, [{"type": "sum"}], workers=3,
            tango={"enabled": True, "database": False})) as pipe:
        assert pipe.status().state == "idle"
    err = capfd.readouterr().err
    assert "constructor arguments in the object store" not in err, err[-2000:]


@pytest.mark.tango
def test_rayline_status_reads_a_running_service(ray_runtime: None) -> None:
    """`rayline status DEVICE` (a separate process, through Tango) and the cluster view
    (the stage actors by name) show the same pipeline, idle after its acquisition."""
    import json
    import subprocess
    import sys

    from actors.app.status import cluster_status

    with Simulator(SimulatorSettings(frames=10, lossless=True)) as sim, RayPipeline(
            pipeline_config(sim.endpoint, Protocol.SLS, [{"type": "sum"}],
                            tango={"enabled": True, "database": False})) as pipe:
        pipe.start_acquisition()
        sim.run()
        pipe.wait_acquisition(timeout=60)
        # the device shows what its last status poll saw: wait until it saw this acquisition
        import tango

        proxy = tango.DeviceProxy(pipe.tango_address)
        wait_until(lambda: (proxy.read_attribute("acquisition").value,
                            proxy.read_attribute("received_frames").value) == (1, 10)
                   and "result" in json.loads(proxy.read_attribute("timings").value),
                   30, "the device to see the acquisition's end")
        out = subprocess.run([sys.executable, "-m", "actors", "status", pipe.tango_address,
                              "--json"], capture_output=True, text=True, timeout=60,
                             check=True)
        device = json.loads(out.stdout)
        assert device["acquisition"] == 1 and device["received_frames"] == 10
        steps = device["timings"]  # the last acquisition's, through the device
        assert steps["started"] <= steps["first_frame"] <= steps["last_frame"] <= steps["result"]
        import ray

        namespace = ray.get_runtime_context().namespace
        (found,) = [s for s in cluster_status("", namespace)
                    if s["pipeline"] == pipe.names.prefix]
        assert (found["state"], found["received"], found["processed"]) == ("idle", 10, 10)
