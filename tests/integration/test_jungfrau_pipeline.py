"""Jungfrau end to end, on both backends: the three dark runs (record_pedestal) recover the
simulated detector's pedestals, then a gain-switching run is converted to the photons the
simulator injected."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from actors import Pipeline
from actors.core.api import PipelineApi
from actors.core.darkrun import DarkRunRecord
from actors.reduce.base import Batch
from actors.reduce.jungfrau.pedestal_file import read_pedestal
from actors.sim.content import JungfrauScene
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread
from tests.helpers import pipeline_config, wait_until

pytestmark = [pytest.mark.slow]

ROWS, COLS = 64, 128
DARK_FRAMES = 48
SCENE: dict[str, Any] = {"rows": ROWS, "cols": COLS}
PHOTONS: dict[str, Any] = {**SCENE, "mode": "photons", "photons": 60.0, "spot_photons": 900.0,
                           "spot_radius": 5.0}


def dark_run(pipe: PipelineApi, sim: Simulator, gain: int,
             sender_threads: Callable[..., SenderThread]) -> DarkRunRecord:
    """record_pedestal(gain) while the simulated detector sends a dark series forced into
    that gain (the acquisition must be running before a PUB sender sends)."""
    sim.restart(frames=DARK_FRAMES, scene={**SCENE, "mode": "dark", "forced_gain": gain})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pipe.acquisition
        future = pool.submit(pipe.record_pedestal, gain, None, 120.0)
        wait_until(lambda: pipe.status().state == "running" and pipe.acquisition > first
                   or future.done(), 60, "the dark run to start")
        sender_threads(sim.run).join()
        return future.result(timeout=120)


def test_dark_runs_then_photons_equal_the_injected_ones(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    truth = JungfrauScene(**PHOTONS, seed=3)
    np.save(tmp_path / "gain.npy", truth.calibration.gain)
    pedestal = str(tmp_path / "pedestal.h5")
    reducers = [{"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
                 "pedestal_file": pedestal, "photon_energy": truth.photon_energy,
                 "track_pedestal": True, "pedestal_epoch": 4},
                {"type": "jungfrau_pedestal"}]
    settings = SimulatorSettings(detector="jungfrau", frames=DARK_FRAMES, lossless=True,
                                 seed=3, scene=SCENE)
    output = {"enabled": True, "directory": str(tmp_path / "data")}
    with Simulator(settings) as sim, Pipeline(pipeline_config(
            sim.endpoint, Protocol.SLS, reducers, backend=backend, output=output)) as pipe:
        for gain in (0, 1, 2):
            record = dark_run(pipe, sim, gain, sender_threads)
            assert (record.gain, record.frames, record.file) == (gain, DARK_FRAMES, pedestal)
            assert record.wrong_gain_fraction == 0 and not record.warnings
            assert record.missing == tuple(f"g{k}" for k in range(gain + 1, 3))
        # the pedestals recovered, within the statistics of 48 dark frames
        ped, info = read_pedestal(pedestal, (ROWS, COLS))
        for g, noise in enumerate(truth.noise):
            error = np.abs(ped[g] - truth.calibration.pedestal[g])
            assert error.max() < 6 * noise / np.sqrt(DARK_FRAMES) + 0.5, (g, error.max())
            assert info[f"g{g}"]["frames"] == DARK_FRAMES
        # a gain-switching run: photons as injected (exact where no frame reached G2, whose
        # ADC step is ~9 keV: there within a photon or two)
        n = 12
        sim.restart(frames=n, scene=PHOTONS)
        pipe.start_acquisition()
        sender_threads(sim.run).join()
        result = pipe.wait_acquisition(timeout=120)
    assert result.outcome == "finished" and result.ledger.processed == n
    assert not result.warnings, result.warnings
    counts = np.stack([truth.photon_counts(i) for i in range(n)])
    stages = np.stack([truth.gain_stage(c * truth.photon_energy) for c in counts])
    assert (stages == 1).any() and (stages == 2).any()  # the run did switch gains
    got = np.asarray(result.outputs["photon_img"])
    low = ~(stages == 2).any(axis=0)
    np.testing.assert_array_equal(got[low], counts.sum(axis=0)[low])
    assert abs(int(got.sum()) - int(counts.sum())) <= 0.002 * counts.sum()
    np.testing.assert_array_equal(result.outputs["g1_pixels"].values,
                                  (stages == 1).sum(axis=(1, 2)))
    np.testing.assert_array_equal(result.outputs["g2_pixels"].values,
                                  (stages == 2).sum(axis=(1, 2)))
    assert result.outputs["dark_frames"] == 0  # not recording outside a dark run
    # the tracked G0 pedestal started from the G0 dark run (not from anything carried over
    # from the dark runs) and stays on the detector's
    tracked = np.asarray(result.outputs["pedestal_g0"])
    assert np.abs(tracked - truth.calibration.pedestal[0]).max() < 3.0
    # the file says which calibration made its energies
    assert result.file is not None
    with h5py.File(result.file) as f:
        cal = f["entry/calibration/jungfrau"]
        assert cal["pedestal_file/path"].asstr()[()] == pedestal
        assert len(cal["gain_file/sha256"].asstr()[()]) == 64
        assert cal["dark_runs/g2/frames"][()] == DARK_FRAMES
        assert cal["dark_runs/g1/acquisition"][()] == 2


def test_a_dark_run_needs_its_reducer_and_a_file(tmp_path: Path) -> None:
    config = pipeline_config("tcp://127.0.0.1:1", Protocol.SLS, [{"type": "sum"}],
                             backend="local")
    with Pipeline(config) as pipe:
        with pytest.raises(ValueError, match="jungfrau_pedestal"):
            pipe.record_pedestal(0)
        pipe.start_acquisition()
        with pytest.raises(RuntimeError, match="acquisition 1 is running"):
            pipe.record_pedestal(0)
        pipe.abort()
    # no dark series comes: the dark run is aborted, not left recording
    dark = [{"type": "jungfrau_pedestal", "file": str(tmp_path / "p.h5")}]
    config = pipeline_config("tcp://127.0.0.1:1", Protocol.SLS, dark, backend="local")
    with Pipeline(config) as pipe:
        with pytest.raises(TimeoutError):
            pipe.record_pedestal(2, timeout=0.5)
        status = pipe.status()
        assert status.state == "idle" and status.parameters["record"] is False
        assert pipe.wait_acquisition(timeout=10).outcome == "aborted"
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.tango
@pytest.mark.ray
def test_the_tango_command_takes_a_dark_run(ray_runtime: None, tmp_path: Path,
                                            sender_threads: Callable[..., SenderThread]) -> None:
    """record_pedestal(1) on the device returns once the dark run's acquisition runs; the
    series sent then, dark_run says what was recorded, and the file has it. (On Ray: the
    device runs in its own actor. A local backend's device would be this test process's
    one Tango server, which test_pipeline's device test needs.)"""
    import json

    import tango

    scene = {**SCENE, "mode": "dark", "forced_gain": 1}
    settings = SimulatorSettings(detector="jungfrau", frames=DARK_FRAMES, lossless=True,
                                 seed=4, scene=scene)
    pedestal = str(tmp_path / "pedestal.h5")
    with Simulator(settings) as sim:
        np.save(tmp_path / "gain.npy", sim.scene.calibration.gain)  # type: ignore[union-attr]
        reducers = [{"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
                     "pedestal_file": pedestal}, {"type": "jungfrau_pedestal"}]
        with Pipeline(pipeline_config(sim.endpoint, Protocol.SLS, reducers, backend="ray",
                                      tango={"enabled": True, "database": False})) as pipe:
            assert pipe.tango_address is not None
            dev = tango.DeviceProxy(pipe.tango_address)
            dev.set_timeout_millis(30_000)
            attrs = set(dev.get_attribute_list())
            assert {"energy_img", "photon_img", "g1_pixels", "g2_pixels", "invalid_pixels",
                    "pedestal_mean", "dark_run", "photon_energy"} <= attrs, attrs
            with pytest.raises(tango.DevFailed, match="gain must be 0, 1 or 2"):
                dev.record_pedestal(3)
            assert dev.record_pedestal(1) == 1
            assert json.loads(dev.read_attribute("dark_run").value)["state"] == "waiting"
            sender_threads(sim.run).join()
            wait_until(lambda: json.loads(dev.read_attribute("dark_run").value)["state"]
                       != "waiting", 60, lambda: dev.read_attribute("dark_run").value)
            done = json.loads(dev.read_attribute("dark_run").value)
    assert done["state"] == "recorded", done
    assert (done["gain"], done["frames"], done["file"]) == (1, DARK_FRAMES, pedestal)
    ped, _ = read_pedestal(pedestal, (ROWS, COLS), allow_missing=True)
    truth = sim.scene.calibration.pedestal[1]  # type: ignore[union-attr]
    assert np.abs(ped[1] - truth).max() < 1.0


def test_module_streams_are_converted_on_the_assembled_frames(backend: str,
                                                              tmp_path: Path) -> None:
    """Two module streams (one PUB each), a frame range where module 1 is missing processed
    with incomplete: mask: the converter excludes the missing module's pixels of those
    frames and counts every other photon."""
    import threading

    from actors.config import parse_config
    from actors.sim.modules import ModuleSettings, ModuleSimulator

    n, lose = 16, [3, 4]
    scene = {**PHOTONS, "rows": 2 * ROWS}
    truth = JungfrauScene(**scene, seed=6)
    np.save(tmp_path / "gain.npy", truth.calibration.gain)
    np.save(tmp_path / "pedestal.npy", truth.calibration.pedestal)
    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=n, lossless=True,
                                                seed=6, scene=scene),
                              modules=(2, 1), lose={1: lose})
    with ModuleSimulator(settings) as sim:
        config = {"backend": backend, "workers": 2, "tango": {"enabled": False},
                  "ray": {"worker_cpus": 0.5}, "output": {"enabled": False},
                  "sources": [{"endpoint": ep, "protocol": "sls", "name": f"m{i}"}
                              for i, ep in enumerate(sim.endpoints)],
                  "reducers": [{"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
                                "pedestal_file": str(tmp_path / "pedestal.npy"),
                                "photon_energy": truth.photon_energy}],
                  "batch": {"max_frames": 4},
                  "modules": {"timeout": 2.0, "incomplete": "mask"}}
        with Pipeline(parse_config(config)) as pipe:
            pipe.start_acquisition()
            sender = threading.Thread(target=sim.run)
            sender.start()
            result = pipe.wait_acquisition(timeout=120)
            sender.join(60)
    assert result.outcome == "finished" and result.ledger.processed == n, result.error
    counts = np.stack([truth.photon_counts(i) for i in range(n)])
    stages = np.stack([truth.gain_stage(c * truth.photon_energy) for c in counts])
    counts[lose, ROWS:] = 0  # module 1 (the lower half) never sent those frames
    got = np.asarray(result.outputs["photon_img"])
    low = ~(stages == 2).any(axis=0)
    np.testing.assert_array_equal(got[low], counts.sum(axis=0)[low])
    excluded = np.asarray(result.outputs["invalid_pixels"].values)  # (not the masked ones)
    assert not excluded.any()


def test_a_tracked_pedestal_is_the_same_whatever_the_workers_and_batches(
        backend: str, tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    from actors.core.chain import ReducerChain
    from actors.wire.model import Geometry
    from tests.reference.moench_data import run_batches

    n = 60
    truth = JungfrauScene(**PHOTONS, seed=8)
    np.save(tmp_path / "gain.npy", truth.calibration.gain)
    np.save(tmp_path / "pedestal.npy", truth.calibration.pedestal)
    spec = {"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
            "pedestal_file": str(tmp_path / "pedestal.npy"), "photon_energy": 12.4,
            "track_pedestal": True, "pedestal_epoch": 10, "pedestal_lag": 1,
            "pedestal_frames": 20}
    settings = SimulatorSettings(detector="jungfrau", frames=n, lossless=True, seed=8,
                                 scene=PHOTONS)
    with Simulator(settings) as sim, Pipeline(pipeline_config(
            sim.endpoint, Protocol.SLS, [spec], backend=backend, workers=2)) as pipe:
        pipe.start_acquisition()
        sender_threads(sim.run).join()
        result = pipe.wait_acquisition(timeout=120)
    assert result.outcome == "finished" and result.ledger.processed == n
    frames = np.stack([truth.frame(i) for i in range(n)])
    reducer = ReducerChain.from_specs([spec], Geometry(ROWS, COLS, "uint16")).reducers[0]
    whole = Batch(0, frames, np.arange(n, dtype=np.int64))
    prefix, _ = run_batches(reducer, [whole])
    want = reducer.outputs(prefix)
    np.testing.assert_array_equal(result.outputs["pedestal_g0"], want["pedestal_g0"])
    np.testing.assert_array_equal(result.outputs["photon_img"], want["photon_img"])


def test_a_calibration_for_another_detector_fails_the_acquisition_naming_the_file(
        tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    """Gain maps made for a 32×64 detector, a 64×128 stream: the first frame ends the
    acquisition 'failed', and the error names the file and both shapes."""
    truth = JungfrauScene(**PHOTONS, seed=9)
    np.save(tmp_path / "small.npy", np.ones((3, 32, 64)))
    np.save(tmp_path / "pedestal.npy", truth.calibration.pedestal)
    spec = {"type": "jungfrau", "gain_file": str(tmp_path / "small.npy"),
            "pedestal_file": str(tmp_path / "pedestal.npy")}
    settings = SimulatorSettings(detector="jungfrau", frames=8, lossless=True, seed=9,
                                 scene=PHOTONS)
    with Simulator(settings) as sim, Pipeline(pipeline_config(
            sim.endpoint, Protocol.SLS, [spec], backend="local")) as pipe:
        pipe.start_acquisition()
        sender_threads(sim.run).join()
        failed = pipe.wait_acquisition(timeout=60)
    assert failed.outcome == "failed", failed
    assert "small.npy" in str(failed.error) and "(3, 32, 64)" in str(failed.error)
    assert "(3, 64, 128)" in str(failed.error), failed.error
