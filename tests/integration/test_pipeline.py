"""Simulator → pipeline over real ZMQ, on both backends (one test, parametrised): results
equal the sequential reference, every frame is accounted for, faults cost nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from actors import Pipeline
from actors.core.api import PipelineApi
from actors.core.status import Status
from actors.reduce.base import Series
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.sockets import bound_endpoint
from actors.wire import dectris_v2
from actors.wire.model import Geometry, Protocol
from tests.conftest import SenderThread
from tests.helpers import (
    MOENCH,
    SCENE,
    assert_identical,
    assert_outputs_equal,
    moench_run,
    pipeline_config,
    wait_until,
)

pytestmark = [pytest.mark.slow]


class Push:
    """A PUSH socket on a free port, closed with linger 0."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = bound_endpoint(self.sock)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def push() -> Any:
    p = Push()
    yield p
    p.close()


def open_pipeline(backend: str, endpoint: str, protocol: Protocol,
                  reducers: list[dict[str, Any]], **extra: Any) -> PipelineApi:
    return Pipeline(pipeline_config(endpoint, protocol, reducers, backend=backend, **extra))


@pytest.mark.parametrize("workers", [1, 2])
def test_moench_sls_sub_equals_reference(backend: str, workers: int,
                                         sender_threads: Callable[..., SenderThread]) -> None:
    n = 120
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=11, scene=SCENE)
    with Simulator(sim_settings) as sim, open_pipeline(backend, sim.endpoint, Protocol.SLS,
                                                        [MOENCH], workers=workers) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=180)  # the end-of-series header ends it
        sender.join()
        status = pipe.status()
    assert result.outcome == "finished"
    led = result.ledger
    assert (led.received, led.processed, led.lost, led.dropped_total, led.rejected_total) == \
        (n, n, 0, 0, 0)
    assert status.state == "idle"
    assert_outputs_equal(result.outputs, moench_run(sim, n))


@pytest.mark.parametrize("protocol", [Protocol.DECTRIS_V1, Protocol.DECTRIS_V2])
def test_eiger_pull_bslz4_generic_reducers(backend: str, protocol: Protocol,
                                           sender_threads: Callable[..., SenderThread]) -> None:
    """Compressed payloads travel to the workers, which decompress them."""
    n = 30
    sim_settings = SimulatorSettings(protocol=protocol, detector="eiger", frames=n,
                                     scene={"rows": 120, "cols": 150, "dtype": "uint16",
                                            "centre": (60.0, 75.0), "rings": (30.0, 50.0)})
    with Simulator(sim_settings) as sim, open_pipeline(
            backend, sim.endpoint, protocol, [{"type": "sum"}, {"type": "total"}]) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=120)
        sender.join()
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    frames[sim.scene.mask[None] | (frames >= np.iinfo(np.uint16).max)] = 0
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.frame_numbers, np.arange(n))
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    assert result.ledger.processed == n and result.ledger.lost == 0


def kill_a_worker(pipe: Any) -> Callable[[], bool]:
    """SIGKILL one worker mid-acquisition; returns 'has it been replaced?'."""
    if pipe.config.backend == "ray":
        import ray

        victim = pipe.workers[0]
        pid = ray.get(victim.ready.remote())["pid"]
        ray.kill(victim, no_restart=False)
        return lambda: bool(ray.get(victim.ready.remote(), timeout=60)["pid"] != pid)
    pid = pipe.worker_pids()[0]
    os.kill(pid, signal.SIGKILL)
    return lambda: pipe.restarts >= 1 and pid not in pipe.worker_pids() and \
        len(pipe.worker_pids()) == pipe.config.workers


def test_killed_worker_loses_nothing(backend: str,
                                     sender_threads: Callable[..., SenderThread]) -> None:
    n = 240
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=5, rate=300.0, scene=SCENE)
    with Simulator(sim_settings) as sim, open_pipeline(backend, sim.endpoint, Protocol.SLS,
                                                        [MOENCH]) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        wait_until(lambda: pipe.status().processed >= 24, 60, pipe.status)
        replaced = kill_a_worker(pipe)
        result = pipe.wait_acquisition(timeout=180)
        sender.join()
        wait_until(replaced, 60, "the killed worker replaced")
    led = result.ledger
    assert (led.received, led.processed, led.lost, led.dropped_total) == (n, n, 0, 0)
    assert_outputs_equal(result.outputs, moench_run(sim, n))


def test_malformed_messages_mid_stream_are_counted_and_harmless(backend: str,
                                                                push: Push) -> None:
    geom = Geometry(32, 40, "uint16")
    frames = np.random.default_rng(2).integers(0, 1000, size=(20, 32, 40), dtype=np.uint16)
    with open_pipeline(backend, push.endpoint, Protocol.DECTRIS_V2, [{"type": "sum"}]) as pipe:
        pipe.start_acquisition()
        push.sock.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=20))
        for i, f in enumerate(frames):
            push.sock.send_multipart(dectris_v2.encode_image(1, i, f))
            if i % 4 == 1:
                push.sock.send(b"\xd9\xd9\xf7garbage")
                push.sock.send_multipart([b"two", b"parts"])
        push.sock.send_multipart(dectris_v2.encode_end(1))
        result = pipe.wait_acquisition(timeout=120)
    np.testing.assert_array_equal(result.outputs["sum"], frames.astype(np.int64).sum(axis=0))
    assert (result.ledger.processed, result.ledger.rejected_total, result.ledger.lost) == \
        (20, 10, 0)


def test_stop_and_status_keeps_the_last_ledger_until_the_next_acquisition(
        backend: str, sender_threads: Callable[..., SenderThread]) -> None:
    n = 50
    sim_settings = SimulatorSettings(frames=n, lossless=True, end_of_series=False, scene=SCENE)
    with Simulator(sim_settings) as sim, open_pipeline(backend, sim.endpoint, Protocol.SLS,
                                                        [{"type": "sum"}]) as pipe:
        assert pipe.acquisition == 0 and pipe.status().acquisition is None
        assert pipe.start_acquisition() == 1
        sender_threads(sim.run).join()
        wait_until(lambda: pipe.status().received >= n, 60, pipe.status)
        running = pipe.status()
        assert isinstance(running, Status) and running.state == "running"
        result = pipe.stop_acquisition(timeout=60)
        assert result.ledger.processed == n
        frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
        np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
        status = pipe.status()  # the ended acquisition's counters, and which one it was
        assert (status.state, status.acquisition, status.outcome) == ("idle", 1, "finished")
        assert (status.received, status.processed, status.pending) == (n, n, 0)
        assert status["processed"] == n and status.ledger == result.ledger
        # a second acquisition on the same pipeline: counters start again; an empty one
        # finishes too
        assert pipe.start_acquisition() == 2
        assert (pipe.status().acquisition, pipe.status().received) == (2, 0)
        empty = pipe.stop_acquisition(timeout=60)
        assert empty.outcome == "finished" and empty.ledger.processed == 0
        assert pipe.acquisition == 2


def test_abort_discards_and_the_next_acquisition_starts_clean(
        backend: str, sender_threads: Callable[..., SenderThread]) -> None:
    sim_settings = SimulatorSettings(frames=400, lossless=True, seed=3, rate=400.0,
                                     scene=SCENE)
    with Simulator(sim_settings) as sim, open_pipeline(backend, sim.endpoint, Protocol.SLS,
                                                        [{"type": "sum"}]) as pipe:
        pipe.start_acquisition()
        pipe.abort()  # before the first frame: it has ended, as aborted, when abort returns
        assert pipe.status().state == "idle"
        early = pipe.wait_acquisition(timeout=10)
        assert early.outcome == "aborted" and early.ledger.received == 0
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        wait_until(lambda: pipe.status().processed >= 16, 60, pipe.status)
        pipe.abort()
        assert pipe.status().state == "idle"
        aborted = pipe.wait_acquisition(timeout=30)
        assert aborted.outcome == "aborted" and aborted.outputs == {}
        led = aborted.ledger
        assert led.processed + led.dropped.get("aborted", 0) == led.received  # each once
        sender.join()
        wait_until(lambda: pipe.status().state == "idle", 30, pipe.status)
        pipe.start_acquisition()  # nothing arrives: an empty, finished acquisition
        assert pipe.stop_acquisition(timeout=30).outcome == "finished"


def test_a_stop_while_the_reading_lags_keeps_every_frame_sent(
        backend: str, sender_threads: Callable[..., SenderThread]) -> None:
    """The seed's Sardana sequence on a loaded machine: the detector has sent its frames
    (and its end-of-acquisition header), the stop comes at once, but the ingest has read only
    some: here its one worker is frozen (SIGSTOP), so the ingest, out of room, stops reading
    and the frames wait in ZMQ. The stop still takes every frame sent; the results equal an
    unhurried run's."""
    import threading

    n = 120
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=9, scene=SCENE)
    results: list[Any] = []
    with Simulator(sim_settings) as sim, open_pipeline(
            backend, sim.endpoint, Protocol.SLS, [{"type": "sum"}], workers=1,
            max_inflight=1, overflow="block") as pipe:
        pid = pipe.placement[0]["pid"] if backend == "ray" else pipe.worker_pids()[0]
        pipe.start_acquisition()
        os.kill(pid, signal.SIGSTOP)
        try:
            sender_threads(sim.run).join()  # every frame handed to ZMQ
            stopping = threading.Thread(
                target=lambda: results.append(pipe.stop_acquisition(timeout=60)))
            stopping.start()
            wait_until(lambda: pipe.status().state == "draining", 30, pipe.status)
            assert pipe.status().received < n  # the reading lags the sender
        finally:
            os.kill(pid, signal.SIGCONT)
        stopping.join(90)
    (result,) = results
    led = result.ledger
    assert (result.outcome, led.received, led.processed, led.dropped_total) == \
        ("finished", n, n, 0)
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))


@pytest.mark.tango
def test_the_device_over_a_real_pipeline_tells_the_truth(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    """One device per backend (the local backend's runs in this process: one at a time).

    Start, Abort, Stop with no frame sent: the device reads ON as soon as Abort returns,
    Stop returns at once, Start works again and no file index is used up. Then a MOENCH run
    without its dark run: the result, the status, the NeXus file, Tango's Status and its
    pedestal_ready attribute say the images are not to be trusted; after a dark run the same
    data run is clean."""
    import h5py
    import tango

    n = 60
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=2, scene=SCENE)
    out = {"enabled": True, "directory": str(tmp_path)}
    with Simulator(sim_settings) as sim, open_pipeline(
            backend, sim.endpoint, Protocol.SLS, [{**MOENCH, "split_pump": False}],
            output=out, tango={"enabled": True, "database": False}) as pipe:
        assert pipe.tango_address is not None
        dev = tango.DeviceProxy(pipe.tango_address)
        dev.set_timeout_millis(20_000)
        index = dev.read_attribute("file_index").value
        for _ in range(2):
            dev.Start()
            assert dev.state() == tango.DevState.RUNNING
            dev.Abort()
            assert dev.state() == tango.DevState.ON, dev.status()
            dev.Stop()  # a stop after the abort: nothing runs, nothing to wait for
            assert dev.state() == tango.DevState.ON, dev.status()
        assert pipe.wait_acquisition(timeout=10).outcome == "aborted"
        assert pipe.acquisition == 2
        assert dev.read_attribute("file_index").value == index  # no file: no index used

        def run(mode: str = "pumpprobe") -> Any:
            if sim.sent:
                sim.restart(scene={**SCENE, "mode": mode})
            pipe.start_acquisition()
            sender_threads(sim.run).join()
            result = pipe.wait_acquisition(timeout=120)
            wait_until(lambda: dev.read_attribute("acquisition").value == result.acquisition
                       and dev.state() == tango.DevState.ON, 30, dev.status)
            return result

        bare = run()
        assert bare.warnings and "pedestal has 0 of the 50 frames" in bare.warnings[0]
        assert pipe.status().warnings == bare.warnings
        assert "WARNING: moench: the pedestal has 0" in dev.status()
        assert dev.read_attribute("pedestal_ready").value is False
        with h5py.File(bare.file) as f:
            assert "dark run" in f["entry/warnings"][()].decode()
        assert dev.read_attribute("previous_file_index").value == index  # its file
        pipe.set("processing_pattern", "ped")  # the dark run
        assert not run("dark").warnings
        pipe.set("processing_pattern", "up")
        clean = run()
        assert clean.warnings == () and pipe.status().warnings == ()
        assert "WARNING" not in dev.status()
        assert dev.read_attribute("pedestal_ready").value is True
        with h5py.File(clean.file) as f:
            assert "warnings" not in f["entry"]


def test_a_frame_just_before_the_start_is_idle_not_a_gap(backend: str, push: Push) -> None:
    """A frame that arrives just before start_acquisition is counted as idle_dropped; the
    acquisition's frames continue its series with no invented loss."""
    geom = Geometry(8, 8, "uint16")
    frames = np.arange(10 * 64, dtype=np.uint16).reshape(10, 8, 8)
    with open_pipeline(backend, push.endpoint, Protocol.DECTRIS_V2, [{"type": "sum"}]) as pipe:
        push.sock.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=10))
        push.sock.send_multipart(dectris_v2.encode_image(1, 0, frames[0]))
        wait_until(lambda: pipe.status().idle_dropped == 1, 60, pipe.status)
        pipe.start_acquisition()
        for i in range(1, 10):
            push.sock.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
        push.sock.send_multipart(dectris_v2.encode_end(1))
        result = pipe.wait_acquisition(timeout=60)
    led = result.ledger
    assert (led.received, led.processed, led.lost, led.rejected_total) == (9, 9, 0, 0)
    np.testing.assert_array_equal(result.outputs["sum"], frames[1:].astype(np.int64).sum(0))


def test_runtime_parameter_applies_from_the_returned_batch(backend: str, push: Push) -> None:
    """set() reaches the workers between batches, deterministically: every frame received
    before the call uses the old value, every later one the new value; status reports the
    parameters and their version."""
    geom = Geometry(16, 16, "uint16")
    frames = np.random.default_rng(4).integers(0, 100, size=(40, 16, 16), dtype=np.uint16)
    hits = {"type": "hits", "threshold": 90.0, "min_pixels": 10}
    with open_pipeline(backend, push.endpoint, Protocol.DECTRIS_V2, [hits]) as pipe:
        with pytest.raises(ValueError, match="unknown runtime parameter"):
            pipe.set("no_such_parameter", 1)
        with pytest.raises(ValueError, match="threshold"):
            pipe.set("threshold", "not a number")
        assert pipe.status().setup_version == 0
        pipe.start_acquisition()
        push.sock.send_multipart(dectris_v2.encode_start(1, geometry=geom, number_of_images=40))
        for i in range(21):
            push.sock.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
        wait_until(lambda: pipe.status().received >= 21, 60, pipe.status)
        # 21 frames = batches 0..2 (8 + 8 + 5), or more when a slow arrival let the open
        # batch close on max_delay: the new value applies from the next one either way
        assert pipe.set("threshold", 50) >= 3
        status = pipe.status()
        assert status.setup_version == 1 and status.parameters["threshold"] == 50.0
        for i in range(21, 40):
            push.sock.send_multipart(dectris_v2.encode_image(1, i, frames[i]))
        push.sock.send_multipart(dectris_v2.encode_end(1))
        result = pipe.wait_acquisition(timeout=120)
    thresholds = np.where(np.arange(40) < 21, 90.0, 50.0)
    above = (frames > thresholds[:, None, None]).sum(axis=(1, 2))
    flags = result.outputs["hits"]
    assert isinstance(flags, Series)
    np.testing.assert_array_equal(flags.values, above > 10)
    assert result.outputs["hits_count"] == int((above > 10).sum())


def test_acquisition_file_holds_the_results_and_frames(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    from actors.output import read_frames, read_ledger, read_outputs

    n = 40
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=3, scene=SCENE)
    out = {"enabled": True, "directory": str(tmp_path), "filename": "scan", "frames": True}
    (tmp_path / "scan_000004.h5").write_bytes(b"")  # an earlier file: the index continues
    with Simulator(sim_settings) as sim, open_pipeline(
            backend, sim.endpoint, Protocol.SLS, [MOENCH, {"type": "sum"}], output=out) as pipe:
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


def test_larger_frames_in_the_next_acquisition(
        backend: str, sender_threads: Callable[..., SenderThread]) -> None:
    """sls declares the geometry per frame: an acquisition of bigger frames follows a small
    one on the same pipeline (the local backend replaces its ring), both exact. The big
    frames are over 1 MB: the Ray ingest puts them in row chunks, read back whole."""
    small, big = {**SCENE}, {**SCENE, "rows": 600, "cols": 1000, "spot": (48.0, 64.0, 6.0)}
    n = 24
    with Simulator(SimulatorSettings(frames=n, lossless=True, scene=small)) as sim, \
            open_pipeline(backend, sim.endpoint, Protocol.SLS, [{"type": "sum"}]) as pipe:
        for scene in (small, big):
            if scene is big:
                sim.restart(scene=scene, series_id=2)
            pipe.start_acquisition()
            sender_threads(sim.run).join()
            result = pipe.wait_acquisition(timeout=60)
            frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
            assert result.ledger.processed == n
            np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))


@pytest.mark.ray
def test_both_backends_give_identical_results(
        ray_runtime: None, sender_threads: Callable[..., SenderThread]) -> None:
    """The same simulator stream through both backends: bit-identical outputs and ledgers."""
    n = 100
    reducers = [MOENCH, {"type": "sum"}, {"type": "total"}, {"type": "max"},
                {"type": "roi", "rois": [{"name": "spot", "row0": 4, "row1": 20,
                                          "col0": 4, "col1": 30}]}]
    sim_settings = SimulatorSettings(frames=n, lossless=True, seed=21, scene=SCENE)
    outputs: dict[str, Any] = {}
    ledgers: dict[str, Any] = {}
    for backend in ("local", "ray"):
        with Simulator(sim_settings) as sim, open_pipeline(backend, sim.endpoint, Protocol.SLS,
                                                            reducers) as pipe:
            pipe.start_acquisition()
            sender = sender_threads(sim.run)
            result = pipe.wait_acquisition(timeout=180)
            sender.join()
        assert result.outcome == "finished", backend
        outputs[backend] = result.outputs
        ledgers[backend] = {k: result.ledger[k] for k in  # batch counts depend on timing
                            ("received", "processed", "lost", "dropped_total",
                             "rejected_total", "dispatched")}
    assert ledgers["local"] == ledgers["ray"] and ledgers["local"]["processed"] == n
    assert_identical(outputs["local"], outputs["ray"])
    assert_outputs_equal(outputs["local"], moench_run(sim, n))


def test_an_eiger_acquisition_file_is_nxmx_with_the_stream_s_detector(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    """The series start's detector facts reach the file, which validates against NXmx; the
    frames are the detector's data, images are stored narrow, compressed and exact."""
    import h5py

    from actors.output import read_outputs
    from tests.nexus_validation import application_errors

    n = 12
    sim_settings = SimulatorSettings(protocol=Protocol.DECTRIS_V2, detector="eiger", frames=n,
                                     scene={"rows": 120, "cols": 150, "dtype": "uint16",
                                            "centre": (60.0, 75.0), "rings": (30.0, 50.0)})
    out = {"enabled": True, "directory": str(tmp_path), "frames": True,
           "instrument_name": "ID00", "sample_name": "test crystal"}
    with Simulator(sim_settings) as sim, open_pipeline(
            backend, sim.endpoint, Protocol.DECTRIS_V2, [{"type": "sum"}],
            output=out) as pipe:
        pipe.start_acquisition()
        sender = sender_threads(sim.run)
        result = pipe.wait_acquisition(timeout=120)
        sender.join()
    assert result.detector is not None and result.detector.x_pixel_size == 7.5e-05
    assert result.file is not None
    errors, report = application_errors(Path(result.file))
    assert errors == 0, report
    with h5py.File(result.file) as f:
        entry = f["entry"]
        assert entry["definition"].asstr()[()] == "NXmx"
        assert entry["instrument/name"].asstr()[()] == "ID00"
        det = entry["instrument/detector"]
        assert det["description"].asstr()[()] == "Dectris EIGER2 Si (simulated)"
        assert det["data"].shape == (n, 120, 150)  # the frame stack
        np.testing.assert_array_equal(det["pixel_mask"][()] != 0, sim.scene.mask)
        stored = entry["sum/data"]
        assert stored.dtype.itemsize < 8 and "32008" in stored._filters and stored.chunks
    assert_outputs_equal(read_outputs(result.file), result.outputs)


def test_the_real_eiger_recording_replayed_sums_exactly_and_ends(
        backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        sender_threads: Callable[..., SenderThread]) -> None:
    """The recorded EIGER1 1M series (tests/data; it has no end-of-series message) replayed
    into a pipeline: replay closes the series, the acquisition ends by itself with every
    frame, the sums equal numpy's on the decoded frames, and the file, built from the real
    detector header, is NXmx."""
    from actors.record.dumps import iter_dump_messages
    from actors.record.recording import replay
    from actors.stream.sockets import free_tcp_endpoint
    from actors.wire import dectris_v1
    from actors.wire.model import Image
    from actors.wire.pixels import decode_pixels
    from tests.nexus_validation import application_errors

    dump = Path(__file__).resolve().parents[1] / "data" / "eiger_legacy_dump.zip"
    messages = [dectris_v1.decode(m) for m in iter_dump_messages(dump)]
    images = [m for m in messages if isinstance(m, Image)]
    frames = np.stack([decode_pixels(m.payload) for m in images]).astype(np.int64)
    mask = messages[0].arrays["pixel_mask"] != 0  # type: ignore[union-attr]
    frames[mask[None] | (frames >= np.iinfo(np.uint32).max)] = 0

    endpoint = free_tcp_endpoint()  # the pipeline connects first, the detector binds later
    out = {"enabled": True, "directory": str(tmp_path)}
    with caplog.at_level("WARNING", logger="actors.record.recording"), open_pipeline(
            backend, endpoint, Protocol.DECTRIS_V1, [{"type": "sum"}, {"type": "total"}],
            output=out) as pipe:
        pipe.start_acquisition()
        player = sender_threads(lambda: replay(dump, endpoint, "push", rate=0))
        result = pipe.wait_acquisition(timeout=120)  # no stop: the series' end ends it
        assert player.join() == len(messages) + 1  # the recording and the end it lacked
    assert any("no end-of-series message" in r.getMessage() for r in caplog.records)
    assert result.outcome == "finished"
    # the header declares 100000 images (nimages): the 99991 the recording lacks are lost
    assert (result.ledger.received, result.ledger.processed, result.ledger.lost) == \
        (9, 9, 100000 - 9)
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    assert result.detector is not None
    assert result.detector.serial_number == "E-02-0153"
    assert result.file is not None
    errors, report = application_errors(Path(result.file))
    assert errors == 0, report
