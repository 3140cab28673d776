"""Simulator → Ray pipeline over real ZMQ: results equal the sequential reference."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import zmq

from actors.pipeline.driver import RayPipeline
from actors.reduce.base import Series
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.sockets import bound_endpoint
from actors.wire import dectris_v2
from actors.wire.model import Geometry, Protocol
from tests.conftest import SenderThread
from tests.reference.moench_sequential import run_moench_reference

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MOENCH = {"type": "moench", "split_pump": True, "pedestal_epoch": 20, "pedestal_lag": 1,
          "pedestal_frames": 50, "threshold": 40.0, "counting_sigma": 4.0}
SCENE = {"rows": 48, "cols": 64, "photons": 6.0, "pump_photons": 6.0, "spot": (24.0, 32.0, 6.0)}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, object_store_memory=200_000_000, include_dashboard=False,
             namespace="rayline-tests", log_to_driver=False)
    yield
    ray.shutdown()


def config(endpoint: str, protocol: Protocol, reducers: list[dict[str, Any]], *,
           workers: int = 2, **extra: Any) -> dict[str, Any]:
    return {"source": {"endpoint": endpoint, "protocol": str(protocol)},
            "reducers": reducers, "workers": workers, "max_inflight": max(4, workers),
            "batch": {"max_frames": 8, "max_delay": 0.05},
            "ray": {"worker_cpus": 0.5}, "tango": {"enabled": False},
            "output": {"enabled": False}, **extra}


def assert_outputs_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
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


def moench_run(sim: Simulator, n: int) -> dict[str, Any]:
    frames = np.stack([sim.scene.frame(i) for i in range(n)])
    settings = {k: v for k, v in MOENCH.items() if k != "type"}
    return run_moench_reference(frames, np.arange(n), settings)


@pytest.mark.parametrize("workers", [1, 2])
def test_moench_sls_sub_equals_reference(local_ray: None, workers: int,
                                         sender_threads: Callable[..., SenderThread]) -> None:
    n = 120
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=11, scene=SCENE)
    with Simulator(sim_settings) as sim, RayPipeline(
            config(sim.endpoint, Protocol.SLS, [MOENCH], workers=workers)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=180)  # the end-of-series header ends it
        sender.join()
        status = pipe.status()
    assert result.outcome == "finished"
    led = result.ledger
    assert (led["received"], led["processed"], led["lost"], led["dropped_total"],
            led["rejected_total"]) == (n, n, 0, 0, 0)
    assert status["state"] == "idle"
    assert_outputs_equal(result.outputs, moench_run(sim, n))


@pytest.mark.parametrize("protocol", [Protocol.DECTRIS_V1, Protocol.DECTRIS_V2])
def test_eiger_pull_bslz4_generic_reducers(local_ray: None, protocol: Protocol,
                                           sender_threads: Callable[..., SenderThread]) -> None:
    n = 30
    sim_settings = SimulatorSettings(protocol=protocol, detector="eiger", frames=n,
                                     scene={"rows": 120, "cols": 150, "dtype": "uint16",
                                            "centre": (60.0, 75.0), "rings": (30.0, 50.0)})
    reducers = [{"type": "sum"}, {"type": "total"}]
    with Simulator(sim_settings) as sim, RayPipeline(
            config(sim.endpoint, protocol, reducers)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=120)
        sender.join()
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    excluded = sim.scene.mask[None] | (frames >= np.iinfo(np.uint16).max)
    frames[excluded] = 0
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.frame_numbers, np.arange(n))
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    assert result.ledger["processed"] == n and result.ledger["lost"] == 0


def test_uncompressed_frames_within_the_store_budget(
        local_ray: None, sender_threads: Callable[..., SenderThread]) -> None:
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
    with Simulator(sim_settings) as sim, RayPipeline(config(
            sim.endpoint, Protocol.DECTRIS_V1, [{"type": "sum"}, {"type": "total"}],
            ray={"worker_cpus": 0.5, "inflight_bytes": budget})) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=120)
        sender.join()
        peak = pipe.status()["peak_inflight_bytes"]
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    frames[sim.scene.mask[None] | (frames >= np.iinfo(np.uint16).max)] = 0
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    assert result.outputs["sum"].dtype == np.int64
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    assert result.ledger["processed"] == n and result.ledger["lost"] == 0
    assert batch_bytes <= peak <= budget  # unbounded, 4 batches of 8 (max_inflight) go
    assert result.ledger["processed_batches"] >= n // 5  # 10 with 8-frame batches


def test_killed_worker_loses_nothing(local_ray: None,
                                     sender_threads: Callable[..., SenderThread]) -> None:
    n = 240
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=5, rate=300.0, scene=SCENE)
    with Simulator(sim_settings) as sim, RayPipeline(
            config(sim.endpoint, Protocol.SLS, [MOENCH], workers=2)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        deadline = time.monotonic() + 60
        while pipe.status()["processed"] < 24:  # wait on the condition, with a deadline
            assert time.monotonic() < deadline, pipe.status()
            time.sleep(0.02)
        victim = pipe.workers[0]
        pid = ray.get(victim.ready.remote())["pid"]
        ray.kill(victim, no_restart=False)
        result = pipe.wait_acquisition(timeout=180)
        sender.join()
        assert ray.get(victim.ready.remote(), timeout=60)["pid"] != pid  # it was restarted
    led = result.ledger
    assert (led["received"], led["processed"], led["lost"], led["dropped_total"]) == (n, n, 0, 0)
    assert_outputs_equal(result.outputs, moench_run(sim, n))


def test_malformed_messages_mid_stream_are_counted_and_harmless(local_ray: None) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    geom = Geometry(32, 40, "uint16")
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 1000, size=(20, 32, 40), dtype=np.uint16)
    try:
        with RayPipeline(config(bound_endpoint(push), Protocol.DECTRIS_V2,
                                [{"type": "sum"}])) as pipe:
            pipe.start_acquisition()
            push.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=20))
            for i, f in enumerate(frames):
                push.send_multipart(dectris_v2.encode_image(1, i, f))
                if i % 4 == 1:
                    push.send(b"\xd9\xd9\xf7garbage")
                    push.send_multipart([b"two", b"parts"])
            push.send_multipart(dectris_v2.encode_end(1))
            result = pipe.wait_acquisition(timeout=120)
    finally:
        push.close(linger=0)
        ctx.term()
    np.testing.assert_array_equal(result.outputs["sum"], frames.astype(np.int64).sum(axis=0))
    assert result.ledger["processed"] == 20
    assert result.ledger["rejected_total"] == 10
    assert result.ledger["lost"] == 0


def test_stop_without_end_of_series_and_status_counters(
        local_ray: None, sender_threads: Callable[..., SenderThread]) -> None:
    n = 50
    sim_settings = SimulatorSettings(frames=n, lossless=True, end_of_series=False, scene=SCENE)
    with Simulator(sim_settings) as sim, RayPipeline(
            config(sim.endpoint, Protocol.SLS, [{"type": "sum"}])) as pipe:
        pipe.start_acquisition()
        sender_threads(sim.run).join()
        deadline = time.monotonic() + 60
        while pipe.status()["received"] < n:
            assert time.monotonic() < deadline, pipe.status()
            time.sleep(0.02)
        result = pipe.stop_acquisition(timeout=60)
        assert result.ledger["processed"] == n
        frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
        np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
        assert pipe.status()["state"] == "idle"


def test_runtime_parameter_applies_from_the_returned_batch(local_ray: None) -> None:
    """set() reaches the workers between batches, deterministically: every frame received
    before the call uses the old value, every later one the new value."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    geom = Geometry(16, 16, "uint16")
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 100, size=(40, 16, 16), dtype=np.uint16)
    hits = {"type": "hits", "threshold": 90.0, "min_pixels": 10}
    try:
        with RayPipeline(config(bound_endpoint(push), Protocol.DECTRIS_V2, [hits])) as pipe:
            with pytest.raises(ValueError, match="unknown runtime parameter"):
                pipe.set("no_such_parameter", 1)
            with pytest.raises(ValueError, match="threshold"):
                pipe.set("threshold", "not a number")
            pipe.start_acquisition()
            push.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=40))
            for i in range(21):
                push.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
            deadline = time.monotonic() + 60
            while pipe.status()["received"] < 21:
                assert time.monotonic() < deadline, pipe.status()
                time.sleep(0.02)
            first = pipe.set("threshold", 50.0)
            assert first == 3  # 21 frames = batches 0..2 (8 + 8 + the flushed 5)
            for i in range(21, 40):
                push.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
            push.send_multipart(dectris_v2.encode_end(1))
            result = pipe.wait_acquisition(timeout=120)
    finally:
        push.close(linger=0)
        ctx.term()
    thresholds = np.where(np.arange(40) < 21, 90.0, 50.0)
    above = (frames > thresholds[:, None, None]).sum(axis=(1, 2))
    flags = result.outputs["hits"]
    assert isinstance(flags, Series)
    np.testing.assert_array_equal(flags.values, above > 10)
    assert result.outputs["hits_count"] == int((above > 10).sum())


def test_acquisition_file_holds_the_results_and_frames(
        local_ray: None, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    from actors.output import read_frames, read_ledger, read_outputs

    n = 40
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=3, scene=SCENE)
    out = {"enabled": True, "directory": str(tmp_path), "filename": "scan", "frames": True}
    (tmp_path / "scan_000004.h5").write_bytes(b"")  # an earlier file: the index continues
    with Simulator(sim_settings) as sim, RayPipeline(
            config(sim.endpoint, Protocol.SLS, [MOENCH, {"type": "sum"}], output=out)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=180)
        sender.join()
    assert result.file == str(tmp_path / "scan_000005.h5")
    assert_outputs_equal(read_outputs(result.file), result.outputs)
    numbers, frames = read_frames(result.file)
    np.testing.assert_array_equal(numbers, np.arange(n))
    np.testing.assert_array_equal(frames, np.stack([sim.scene.frame(i) for i in range(n)]))
    assert read_ledger(result.file)["processed"] == n
