"""Jungfrau conversion: numba kernel and numpy path against a per-pixel reference on raw
frames covering every gain code."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actors.reduce.jit import numba_available
from actors.reduce.jungfrau.convert import Accumulated, convert, energies

BACKENDS = ["numpy", "numba"] if numba_available() else ["numpy"]


def calibration(rng: np.random.Generator, shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pedestals (ADU) and gains (ADU/keV, G1 and G2 negative as on the detector)."""
    ped = np.stack([rng.uniform(1000, 3000, shape), rng.uniform(13000, 15000, shape),
                    rng.uniform(14000, 15500, shape)])
    gain = np.stack([rng.uniform(38, 44, shape), rng.uniform(-1.6, -1.4, shape),
                     rng.uniform(-0.12, -0.10, shape)])
    bad = rng.random(shape) < 0.02
    return ped, gain, bad


def raw_frames(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    code = rng.choice(np.array([0, 1, 2, 3], np.uint16), size=(n, *shape),
                      p=[0.7, 0.15, 0.05, 0.1])
    adc = rng.integers(0, 0x4000, size=(n, *shape), dtype=np.uint16)
    return (code << np.uint16(14)) | adc


def pixel_reference(frames: np.ndarray, ped: np.ndarray, gain: np.ndarray, bad: np.ndarray,
                    eph: float) -> dict[str, Any]:
    """The rule, pixel by pixel in plain Python floats."""
    n, rows, cols = frames.shape
    e = np.zeros((n, rows, cols))
    out: dict[str, Any] = {k: np.zeros(n, np.int64) for k in ("g1", "g2", "invalid", "ph")}
    photons = np.zeros((rows, cols), np.int64)
    for t in range(n):
        for i in range(rows):
            for c in range(cols):
                v = int(frames[t, i, c])
                code, adc = v >> 14, v & 0x3FFF
                if code == 2:
                    out["invalid"][t] += 0 if bad[i, c] else 1
                    continue
                if bad[i, c]:
                    continue
                g = {0: 0, 1: 1, 3: 2}[code]
                x = (float(adc) - float(ped[g, i, c])) / float(gain[g, i, c])
                e[t, i, c] = x
                out["g1"][t] += code == 1
                out["g2"][t] += code == 3
                k = int(np.floor(x / eph + 0.5)) if x > 0 else 0
                photons[i, c] += k
                out["ph"][t] += k
    out["e"], out["photons"] = e, photons
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_conversion_equals_the_per_pixel_rule(backend: str) -> None:
    rng = np.random.default_rng(1)
    shape = (6, 11)
    ped, gain, bad = calibration(rng, shape)
    frames = raw_frames(rng, 5, shape)
    eph = 8.0
    want = pixel_reference(frames, ped, gain, bad, eph)
    acc = Accumulated.zeros(5, shape)
    out = np.full((5, *shape), np.nan, np.float32)
    convert(frames, ped, gain, bad, eph, acc, out, backend=backend)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, want["e"].astype(np.float32))
    e64, _, _ = energies(frames, ped, gain, bad)
    np.testing.assert_array_equal(e64, want["e"])  # exact in float64
    sums = np.zeros(shape)
    for k in range(5):
        sums += want["e"][k]
    np.testing.assert_array_equal(acc.energy, sums)
    np.testing.assert_allclose(acc.energy_total, want["e"].sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(acc.g1, want["g1"])
    np.testing.assert_array_equal(acc.g2, want["g2"])
    np.testing.assert_array_equal(acc.invalid, want["invalid"])
    np.testing.assert_array_equal(acc.photons, want["photons"])
    np.testing.assert_array_equal(acc.photon_total, want["ph"])
    assert want["invalid"].sum() > 0 and want["g2"].sum() > 0 and want["ph"].sum() > 0


@pytest.mark.skipif(not numba_available(), reason="numba not importable")
def test_numba_and_numpy_agree_on_a_module() -> None:
    rng = np.random.default_rng(2)
    shape = (512, 1024)
    ped, gain, bad = calibration(rng, shape)
    frames = raw_frames(rng, 3, shape)
    got, want = Accumulated.zeros(3, shape), Accumulated.zeros(3, shape)
    convert(frames, ped, gain, bad, 12.4, got, backend="numba")
    convert(frames, ped, gain, bad, 12.4, want, backend="numpy")
    for name in ("energy", "photons", "photon_total", "g1", "g2", "invalid"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_allclose(got.energy_total, want.energy_total, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_a_photon_energy_no_photons_are_counted(backend: str) -> None:
    rng = np.random.default_rng(3)
    shape = (4, 8)
    ped, gain, bad = calibration(rng, shape)
    acc = Accumulated.zeros(2, shape)
    convert(raw_frames(rng, 2, shape), ped, gain, bad, None, acc,
            backend=backend)  # type: ignore[arg-type]
    assert not acc.photons.any() and not acc.photon_total.any() and acc.energy.any()


def test_frames_that_are_not_uint16_are_refused() -> None:
    shape = (2, 3)
    ped, gain, bad = calibration(np.random.default_rng(4), shape)
    with pytest.raises(ValueError, match="uint16"):
        convert(np.zeros((1, *shape), np.uint32), ped, gain, bad, None,
                Accumulated.zeros(1, shape))


@pytest.mark.skipif(not numba_available(), reason="numba not importable")
def test_pedestal_samples_are_the_g0_pixels_without_a_photon_on_both_paths() -> None:
    from actors.reduce.jungfrau.convert import Samples

    rng = np.random.default_rng(5)
    shape = (16, 40)
    ped, gain, bad = calibration(rng, shape)
    frames = raw_frames(rng, 6, shape)
    got = []
    for backend in ("numba", "numpy"):
        smp = Samples(3.0, *(np.zeros(shape, np.int64) for _ in range(3)))
        convert(frames, ped, gain, bad, None, Accumulated.zeros(6, shape), None,
                backend, smp)  # type: ignore[arg-type]
        got.append(smp)
    e, excluded, g = energies(frames, ped, gain, bad)
    z = ~excluded & (g == 0) & (np.abs(e) < 3.0)
    adc = np.where(z, frames & 0x3FFF, 0).astype(np.int64)
    for smp in got:
        np.testing.assert_array_equal(smp.c, z.sum(axis=0))
        np.testing.assert_array_equal(smp.s, adc.sum(axis=0))
        np.testing.assert_array_equal(smp.q, (adc * adc).sum(axis=0))
    assert z.any()
