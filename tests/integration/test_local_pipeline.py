"""Simulator → local backend (processes + shared memory) over real ZMQ: results equal the
sequential reference and the Ray backend; a killed worker process loses nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq

from actors.local.pipeline import LocalPipeline
from actors.reduce.base import Series
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.sockets import bound_endpoint
from actors.wire import dectris_v2
from actors.wire.model import Geometry, Protocol
from tests.conftest import SenderThread
from tests.reference.moench_sequential import run_moench_reference

pytestmark = [pytest.mark.slow]

MOENCH = {"type": "moench", "split_pump": True, "pedestal_epoch": 20, "pedestal_lag": 1,
          "pedestal_frames": 50, "threshold": 40.0, "counting_sigma": 4.0}
SCENE = {"rows": 48, "cols": 64, "photons": 6.0, "pump_photons": 6.0, "spot": (24.0, 32.0, 6.0)}


def config(endpoint: str, protocol: Protocol, reducers: list[dict[str, Any]], *,
           workers: int = 2, **extra: Any) -> dict[str, Any]:
    return {"backend": "local", "source": {"endpoint": endpoint, "protocol": str(protocol)},
            "reducers": reducers, "workers": workers, "max_inflight": max(4, workers),
            "batch": {"max_frames": 8, "max_delay": 0.05}, "tango": {"enabled": False},
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


def assert_identical(got: dict[str, Any], want: dict[str, Any]) -> None:
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


def moench_run(sim: Simulator, n: int) -> dict[str, Any]:
    frames = np.stack([sim.scene.frame(i) for i in range(n)])
    settings = {k: v for k, v in MOENCH.items() if k != "type"}
    return run_moench_reference(frames, np.arange(n), settings)


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], Any]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_moench_sls_sub_equals_reference(workers: int,
                                         sender_threads: Callable[..., SenderThread]) -> None:
    n = 120
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=11, scene=SCENE)
    with Simulator(sim_settings) as sim, LocalPipeline(
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
def test_eiger_pull_bslz4_generic_reducers(protocol: Protocol,
                                           sender_threads: Callable[..., SenderThread]) -> None:
    """Compressed payloads travel through the slots; workers decompress them."""
    n = 30
    sim_settings = SimulatorSettings(protocol=protocol, detector="eiger", frames=n,
                                     scene={"rows": 120, "cols": 150, "dtype": "uint16",
                                            "centre": (60.0, 75.0), "rings": (30.0, 50.0)})
    reducers = [{"type": "sum"}, {"type": "total"}]
    with Simulator(sim_settings) as sim, LocalPipeline(
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


def test_killed_worker_process_loses_nothing(sender_threads: Callable[..., SenderThread]
                                             ) -> None:
    n = 240
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=5, rate=300.0, scene=SCENE)
    with Simulator(sim_settings) as sim, LocalPipeline(
            config(sim.endpoint, Protocol.SLS, [MOENCH], workers=2)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        wait_for(lambda: pipe.status()["processed"] >= 24, 60, pipe.status)
        victim = pipe.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        result = pipe.wait_acquisition(timeout=180)
        sender.join()
        assert pipe.restarts >= 1
        assert victim not in pipe.worker_pids() and len(pipe.worker_pids()) == 2
    led = result.ledger
    assert (led["received"], led["processed"], led["lost"], led["dropped_total"]) == (n, n, 0, 0)
    assert_outputs_equal(result.outputs, moench_run(sim, n))


def test_malformed_messages_mid_stream_are_counted_and_harmless() -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    geom = Geometry(32, 40, "uint16")
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 1000, size=(20, 32, 40), dtype=np.uint16)
    try:
        with LocalPipeline(config(bound_endpoint(push), Protocol.DECTRIS_V2,
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
        sender_threads: Callable[..., SenderThread]) -> None:
    n = 50
    sim_settings = SimulatorSettings(frames=n, lossless=True, end_of_series=False, scene=SCENE)
    with Simulator(sim_settings) as sim, LocalPipeline(
            config(sim.endpoint, Protocol.SLS, [{"type": "sum"}])) as pipe:
        pipe.start_acquisition()
        sender_threads(sim.run).join()
        wait_for(lambda: pipe.status()["received"] >= n, 60, pipe.status)
        result = pipe.stop_acquisition(timeout=60)
        assert result.ledger["processed"] == n
        frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
        np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
        status = pipe.status()
        assert status["state"] == "idle"
        assert set(status) == {"state", "acquisition", "received", "processed", "dropped",
                               "lost", "rejected", "pending", "frame_rate", "idle_dropped",
                               "fault", "ledger", "receiver"}
        # a second acquisition on the same pipeline (and ring); an empty one finishes too
        pipe.start_acquisition()
        empty = pipe.stop_acquisition(timeout=60)
        assert empty.outcome == "finished" and empty.ledger["processed"] == 0
        assert pipe.acquisition == 2


def test_abort_then_next_acquisition(sender_threads: Callable[..., SenderThread]) -> None:
    """abort() discards the running acquisition; the next one starts clean."""
    sim_settings = SimulatorSettings(frames=400, lossless=True, seed=3, rate=400.0,
                                     scene=SCENE)
    with Simulator(sim_settings) as sim, LocalPipeline(
            config(sim.endpoint, Protocol.SLS, [{"type": "sum"}])) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        wait_for(lambda: pipe.status()["processed"] >= 16, 60, pipe.status)
        pipe.abort()
        aborted = pipe.wait_acquisition(timeout=30)
        assert aborted.outcome == "aborted" and aborted.outputs == {}
        led = aborted.ledger
        assert led["processed"] + led["dropped"].get("aborted", 0) <= led["received"]
        sender.join()
        wait_for(lambda: pipe.status()["state"] == "idle", 30, pipe.status)
        pipe.start_acquisition()  # nothing arrives: an empty, finished acquisition
        assert pipe.stop_acquisition(timeout=30).outcome == "finished"


def test_runtime_parameter_applies_from_the_returned_batch() -> None:
    """set() reaches the workers between batches, as with the Ray backend."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    geom = Geometry(16, 16, "uint16")
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 100, size=(40, 16, 16), dtype=np.uint16)
    hits = {"type": "hits", "threshold": 90.0, "min_pixels": 10}
    try:
        with LocalPipeline(config(bound_endpoint(push), Protocol.DECTRIS_V2, [hits])) as pipe:
            with pytest.raises(ValueError, match="unknown runtime parameter"):
                pipe.set("no_such_parameter", 1)
            with pytest.raises(ValueError, match="threshold"):
                pipe.set("threshold", "not a number")
            pipe.start_acquisition()
            push.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=40))
            for i in range(21):
                push.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
            wait_for(lambda: pipe.status()["received"] >= 21, 60, pipe.status)
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


@pytest.mark.ray
def test_local_and_ray_backends_give_identical_results(
        sender_threads: Callable[..., SenderThread]) -> None:
    """The same simulator stream through both backends: bit-identical outputs and ledgers."""
    ray = pytest.importorskip("ray")
    from actors.pipeline.driver import RayPipeline

    n = 100
    reducers = [MOENCH, {"type": "sum"}, {"type": "total"}, {"type": "max"},
                {"type": "roi", "rois": [{"name": "spot", "row0": 4, "row1": 20,
                                          "col0": 4, "col1": 30}]}]
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=21, scene=SCENE)
    outputs: dict[str, dict[str, Any]] = {}
    ledgers: dict[str, dict[str, Any]] = {}
    for backend in ("local", "ray"):
        with Simulator(sim_settings) as sim:
            cfg = config(sim.endpoint, Protocol.SLS, reducers, backend=backend,
                         ray={"worker_cpus": 0.5, "num_cpus": 2,
                              "object_store_memory": 200_000_000})
            pipe: Any = LocalPipeline(cfg) if backend == "local" else RayPipeline(cfg)
            try:
                with pipe:
                    pipe.start_acquisition()
                    sender = sender_threads(sim.run)
                    result = pipe.wait_acquisition(timeout=180)
                    sender.join()
            finally:
                if backend == "ray" and ray.is_initialized():
                    ray.shutdown()
        assert result.outcome == "finished", backend
        outputs[backend] = result.outputs
        ledgers[backend] = {k: result.ledger[k] for k in  # batch counts depend on timing
                            ("received", "processed", "lost", "dropped_total",
                             "rejected_total", "dispatched")}
    assert ledgers["local"] == ledgers["ray"] and ledgers["local"]["processed"] == n
    assert_identical(outputs["local"], outputs["ray"])
    assert_outputs_equal(outputs["local"], moench_run(sim, n))  # sim: closed, scene usable


def test_acquisition_file_holds_the_results_and_frames(
        tmp_path: Any, sender_threads: Callable[..., SenderThread]) -> None:
    """output.frames: per-frame stacks in the acquisition file, as with the Ray backend."""
    from actors.output import read_frames, read_ledger, read_outputs

    n = 40
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=3, scene=SCENE)
    out = {"enabled": True, "directory": str(tmp_path), "filename": "scan", "frames": True}
    with Simulator(sim_settings) as sim, LocalPipeline(
            config(sim.endpoint, Protocol.SLS, [MOENCH, {"type": "sum"}], output=out)) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=180)
        sender.join()
    assert result.file == str(tmp_path / "scan_000000.h5")
    assert_outputs_equal(read_outputs(result.file), result.outputs)
    numbers, frames = read_frames(result.file)
    np.testing.assert_array_equal(numbers, np.arange(n))
    np.testing.assert_array_equal(frames, np.stack([sim.scene.frame(i) for i in range(n)]))
    assert read_ledger(result.file)["processed"] == n


def test_larger_frames_in_the_next_acquisition_get_a_larger_ring(
        sender_threads: Callable[..., SenderThread]) -> None:
    """sls declares the geometry per frame: an acquisition of bigger frames replaces the
    ring of shared-memory slots, and both acquisitions are exact."""
    small, big = {**SCENE}, {**SCENE, "rows": 96, "cols": 128, "spot": (48.0, 64.0, 6.0)}
    n = 24
    with Simulator(SimulatorSettings(frames=n, lossless=True, scene=small)) as sim, \
            LocalPipeline(config(sim.endpoint, Protocol.SLS, [{"type": "sum"}])) as pipe:
        for scene in (small, big):
            if scene is big:
                sim.restart(scene=scene, series_id=2)
            pipe.start_acquisition()
            sender_threads(sim.run).join()
            result = pipe.wait_acquisition(timeout=60)
            frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
            assert result.ledger["processed"] == n
            np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
