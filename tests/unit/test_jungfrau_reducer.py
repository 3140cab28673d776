"""The jungfrau reducer in a chain (later reducers on its converted frames), calibration files
(per-module .bin, npy, HDF5 pedestal file) and their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.core.chain import ReducerChain
from actors.reduce.base import Batch, ReducerConfigError, Series
from actors.reduce.jungfrau.calibration import (
    MODULE_COLS,
    MODULE_ROWS,
    CalibrationError,
    load_gains,
)
from actors.reduce.jungfrau.convert import energies, photons_of
from actors.reduce.jungfrau.pedestal_file import DarkRun, read_pedestal, write_dark_run
from actors.wire.model import Geometry
from tests.reference.moench_data import cut_batches, merge_grouped, run_batches
from tests.unit.test_jungfrau_convert import calibration, raw_frames

SHAPE = (8, 12)


def write_calibration(tmp_path: Path, shape: tuple[int, int] = SHAPE, seed: int = 0
                      ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ped, gain, bad = calibration(rng, shape)
    np.save(tmp_path / "gain.npy", gain)
    np.save(tmp_path / "mask.npy", bad.astype(np.uint8))
    for g in range(3):
        write_dark_run(str(tmp_path / "pedestal.h5"), DarkRun(
            g, ped[g], np.ones(shape), np.full(shape, 100, np.int64), 100,
            exposure_time=1e-5, modules=["M420"], acquisition=g + 1))
    return {"ped": ped, "gain": gain, "bad": bad,
            "spec": {"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
                     "pedestal_file": str(tmp_path / "pedestal.h5"),
                     "mask_file": str(tmp_path / "mask.npy"), "photon_energy": 6.0}}


def run_chain(chain: ReducerChain, frames: np.ndarray, cuts: list[int]) -> dict[str, Any]:
    acc = chain.initial()
    lo = 0
    for k, hi in enumerate([*cuts, frames.shape[0]]):
        acc = chain.merge(acc, chain.process(Batch(k, frames[lo:hi],
                                                   np.arange(lo, hi, dtype=np.int64))))
        lo = hi
    return chain.outputs(acc)


def test_a_chain_converts_once_and_later_reducers_read_energies(tmp_path: Path) -> None:
    cal = write_calibration(tmp_path)
    chain = ReducerChain.from_specs([cal["spec"], {"type": "sum", "input": "jungfrau"},
                                     {"type": "total", "input": "jungfrau"},
                                     {"type": "total", "name": "raw_total"}],
                                    Geometry(*SHAPE, "uint16"))
    frames = raw_frames(np.random.default_rng(5), 10, SHAPE)
    out = run_chain(chain, frames, [3, 7])
    e, excluded, g = energies(frames, cal["ped"], cal["gain"], cal["bad"])
    e32 = e.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(out["energy_img"], e.sum(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(out["photon_img"], photons_of(e, 6.0).sum(axis=0))
    np.testing.assert_allclose(out["sum"], e32.sum(axis=0), rtol=1e-12)
    assert isinstance(out["total"], Series)
    np.testing.assert_allclose(out["total"].values, e32.sum(axis=(1, 2)), rtol=1e-9)
    np.testing.assert_array_equal(out["raw_total"].values,
                                  frames.astype(np.int64).sum(axis=(1, 2)))
    valid = ~excluded
    np.testing.assert_array_equal(out["g1_pixels"].values,
                                  (valid & (g == 1)).sum(axis=(1, 2)))
    np.testing.assert_array_equal(out["g2_pixels"].values,
                                  (valid & (g == 2)).sum(axis=(1, 2)))
    np.testing.assert_array_equal(out["invalid_pixels"].values,
                                  (excluded & ~cal["bad"]).sum(axis=(1, 2)))
    assert out["bad_pixels"] == int(cal["bad"].sum()) and out["converted_frames"] == 10
    # the batching does not change the result
    whole = run_chain(ReducerChain.from_specs(chain.specs(), Geometry(*SHAPE, "uint16")),
                      frames, [])
    np.testing.assert_allclose(whole["energy_img"], out["energy_img"], rtol=1e-12)
    np.testing.assert_array_equal(whole["photon_img"], out["photon_img"])


def test_the_pedestal_file_keeps_each_gain_and_its_provenance(tmp_path: Path) -> None:
    cal = write_calibration(tmp_path)
    ped, info = read_pedestal(str(tmp_path / "pedestal.h5"), SHAPE)
    np.testing.assert_array_equal(ped, cal["ped"])
    assert info["g1"]["frames"] == 100 and info["g1"]["modules"] == ["M420"]
    assert info["g2"]["acquisition"] == 3 and info["g0"]["exposure_time"] == 1e-5
    # a new dark run of one gain replaces that gain only
    write_dark_run(str(tmp_path / "pedestal.h5"), DarkRun(
        1, np.zeros(SHAPE), np.ones(SHAPE), np.ones(SHAPE, np.int64), 7))
    ped2, info2 = read_pedestal(str(tmp_path / "pedestal.h5"), SHAPE)
    assert not ped2[1].any() and np.array_equal(ped2[0], cal["ped"][0])
    assert info2["g1"]["frames"] == 7 and info2["g0"]["frames"] == 100


def test_per_module_gain_files_fill_the_module_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    planes = []
    for m in range(2):
        data = rng.uniform(-2, 45, (6, MODULE_ROWS, MODULE_COLS))  # 6 planes, as PSI's
        path = tmp_path / f"gainMaps_M{m}.bin"
        data.astype("<f8").tofile(path)
        paths.append(str(path))
        planes.append(data[:3])
    got = load_gains(paths, (2 * MODULE_ROWS, MODULE_COLS))
    np.testing.assert_array_equal(got[:, :MODULE_ROWS], planes[0])
    np.testing.assert_array_equal(got[:, MODULE_ROWS:], planes[1])


@pytest.mark.parametrize("case, match", [
    ("short_bin", r"gainMaps_M0\.bin.*not a whole number"),
    ("two_planes", r"gainMaps_M0\.bin.*needs 3"),
    ("module_count", r"1 file\(s\) for a detector of 2 modules"),
    ("npy_shape", r"gain\.npy.*shape \(3, 4, 4\).*expected \(3, 8, 12\)"),
    ("pedestal_shape", r"pedestal\.h5.*8×12 pedestals"),
    ("no_file", r"gain file .*nowhere\.npy.* does not exist"),
    ("mask_shape", r"mask\.npy.*shape \(2, 2\)"),
])
def test_calibration_files_that_do_not_fit_say_which_and_why(tmp_path: Path, case: str,
                                                              match: str) -> None:
    cal = write_calibration(tmp_path)
    spec = dict(cal["spec"])
    shape = SHAPE
    if case in ("short_bin", "two_planes", "module_count"):
        shape = (2 * MODULE_ROWS, MODULE_COLS)
        path = tmp_path / "gainMaps_M0.bin"
        n = {"short_bin": 1000, "two_planes": 2 * MODULE_ROWS * MODULE_COLS,
             "module_count": 3 * MODULE_ROWS * MODULE_COLS}[case]
        np.zeros(n).tofile(path)
        spec["gain_file"] = [str(path)] if case == "module_count" else [str(path)] * 2
    elif case == "npy_shape":
        np.save(tmp_path / "gain.npy", np.ones((3, 4, 4)))
    elif case == "pedestal_shape":
        with pytest.raises(CalibrationError, match=match):
            write_dark_run(str(tmp_path / "pedestal.h5"), DarkRun(
                0, np.zeros((4, 4)), np.ones((4, 4)), np.ones((4, 4), np.int64), 1))
        return
    elif case == "no_file":
        spec["gain_file"] = str(tmp_path / "nowhere.npy")
    elif case == "mask_shape":
        np.save(tmp_path / "mask.npy", np.zeros((2, 2)))
    with pytest.raises(ReducerConfigError, match=match):
        ReducerChain.from_specs([spec], Geometry(*shape, "uint16"))


def test_unusable_calibration_pixels_are_excluded_not_divided_by(tmp_path: Path) -> None:
    cal = write_calibration(tmp_path)
    gain = cal["gain"].copy()
    gain[1, 2, 3] = 0.0
    gain[0, 4, 5] = np.nan
    np.save(tmp_path / "gain.npy", gain)
    spec = {**cal["spec"], "mask_file": None}
    chain = ReducerChain.from_specs([spec], Geometry(*SHAPE, "uint16"))
    out = run_chain(chain, raw_frames(np.random.default_rng(2), 4, SHAPE), [])
    assert out["bad_pixels"] == 2 and np.isfinite(out["energy_img"]).all()
    assert out["energy_img"][2, 3] == 0 and out["energy_img"][4, 5] == 0


def test_input_must_name_an_earlier_converting_reducer(tmp_path: Path) -> None:
    cal = write_calibration(tmp_path)
    geometry = Geometry(*SHAPE, "uint16")
    with pytest.raises(ReducerConfigError, match="input 'jungfrau' is not a converting"):
        ReducerChain.from_specs([{"type": "sum", "input": "jungfrau"}, cal["spec"]], geometry)
    with pytest.raises(ReducerConfigError, match="input 'sum'"):
        ReducerChain.from_specs([{"type": "sum"}, {"type": "max", "input": "sum"}], geometry)
    with pytest.raises(ReducerConfigError, match="uint16"):
        ReducerChain.from_specs([cal["spec"]], Geometry(*SHAPE, "uint32"))


def test_a_pedestal_file_still_to_be_recorded_is_a_warning_not_an_error(
        tmp_path: Path) -> None:
    cal = write_calibration(tmp_path)
    write_dark_run(str(tmp_path / "p2.h5"), DarkRun(0, cal["ped"][0], np.ones(SHAPE),
                                                    np.ones(SHAPE, np.int64), 1))
    geometry = Geometry(*SHAPE, "uint16")
    for path, missing in ((tmp_path / "p2.h5", "G1, G2"), (tmp_path / "none.h5", "G0, G1, G2")):
        chain = ReducerChain.from_specs([{**cal["spec"], "pedestal_file": str(path)}], geometry)
        out = run_chain(chain, raw_frames(np.random.default_rng(3), 2, SHAPE), [])
        (warning,) = chain.warnings(out)
        assert str(path) in warning and f"no dark run for {missing}" in warning
    with pytest.raises(CalibrationError, match=r"p2\.h5.*no pedestal for gain\(s\) g1, g2"):
        read_pedestal(str(tmp_path / "p2.h5"), SHAPE)


def drifting_run(tmp_path: Path, n: int = 240, drift: float = 0.2
                 ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """G0 frames whose pedestal drifts by ``drift`` ADU per frame (40 ADU/keV: 0.2 ADU per
    frame is 1.2 keV over 240 frames), 1 % of the pixels hit by a 12 keV photon."""
    cal = write_calibration(tmp_path)
    rng = np.random.default_rng(7)
    t = np.arange(n, dtype=np.float64)[:, None, None]
    hits = rng.random((n, *SHAPE)) < 0.01
    gain0 = cal["gain"][0]
    adc = cal["ped"][0] + drift * t + rng.normal(0, 3.0, (n, *SHAPE)) + hits * 12.0 * gain0
    frames = np.clip(np.rint(adc), 0, 0x3FFF).astype(np.uint16)  # all in G0
    return cal, frames, hits


def test_tracked_g0_pedestal_follows_a_drift_and_photons_stay_right(tmp_path: Path) -> None:
    cal, frames, hits = drifting_run(tmp_path)
    spec = {**cal["spec"], "mask_file": None, "photon_energy": 12.0}
    geometry = Geometry(*SHAPE, "uint16")
    fixed = ReducerChain.from_specs([spec], geometry)
    tracked = ReducerChain.from_specs([{**spec, "track_pedestal": True, "pedestal_epoch": 20,
                                        "pedestal_lag": 0, "pedestal_frames": 40}], geometry)
    numbers = np.arange(frames.shape[0], dtype=np.int64)
    outs = []
    for chain in (fixed, tracked):
        r = chain.reducers[0]
        prefix, _ = run_batches(r, cut_batches(frames, numbers, 16, r.epoch_length))
        outs.append(r.outputs(prefix))
    last = frames.shape[0] - 1
    true_end = cal["ped"][0] + 0.2 * last
    # tracking ends within a few ADU of the drifted pedestal (the MovingStat over the last
    # 40 samples lags ~20 frames: 4 ADU); the fixed pedestal is 48 ADU off
    assert np.abs(outs[1]["pedestal_g0"] - true_end).max() < 8.0
    assert np.abs(outs[0]["pedestal_g0"] - true_end).min() > 40.0
    want = hits.sum(axis=0)
    np.testing.assert_array_equal(outs[1]["photon_img"], want)


@pytest.mark.parametrize("max_frames, seed", [(1, 0), (7, 1), (33, 2), (240, 3)])
def test_tracking_does_not_depend_on_the_batching_or_merge_order(
        tmp_path: Path, max_frames: int, seed: int) -> None:
    cal, frames, _ = drifting_run(tmp_path, n=120)
    spec = {**cal["spec"], "mask_file": None, "photon_energy": 12.0, "track_pedestal": True,
            "pedestal_epoch": 10, "pedestal_lag": 1, "pedestal_frames": 30}
    r = ReducerChain.from_specs([spec], Geometry(*SHAPE, "uint16")).reducers[0]
    numbers = np.arange(frames.shape[0], dtype=np.int64)
    ref, _ = run_batches(r, cut_batches(frames, numbers, 240, 10))
    prefix, partials = run_batches(r, cut_batches(frames, numbers, max_frames, 10))
    grouped = merge_grouped(r, partials, np.random.default_rng(seed))
    for got in (prefix, grouped):
        assert r.carry_over(got).equals(r.carry_over(ref))
        a, b = r.outputs(got), r.outputs(ref)
        np.testing.assert_array_equal(a["photon_img"], b["photon_img"])
        np.testing.assert_array_equal(a["pedestal_g0"], b["pedestal_g0"])
        np.testing.assert_allclose(a["energy_img"], b["energy_img"], rtol=1e-12)
