"""The jungfrau_pedestal reducer: exact per-gain sums of one dark run, mean and σ."""

from __future__ import annotations

import numpy as np
import pytest

from actors.core.chain import ReducerChain
from actors.reduce.base import Batch
from actors.reduce.jungfrau import dark
from actors.wire.model import Geometry

SHAPE = (6, 9)


def dark_frames(rng: np.random.Generator, n: int, gain: int, stray: float = 0.05
                ) -> np.ndarray:
    """Dark frames forced into ``gain``, with a fraction ``stray`` of pixels in another."""
    bits = np.full((n, *SHAPE), dark.GAIN_BITS[gain], np.uint16)
    other = rng.random((n, *SHAPE)) < stray
    bits[other] = dark.GAIN_BITS[(gain + 1) % 3]
    adc = rng.normal(5000 + 1000 * gain, 4.0, (n, *SHAPE)).round().astype(np.uint16)
    return (bits << np.uint16(14)) | adc


def run(frames: np.ndarray, spec: dict[str, object], cuts: list[int]) -> dict[str, object]:
    chain = ReducerChain.from_specs([spec], Geometry(*SHAPE, "uint16"))
    acc, lo = chain.initial(), 0
    for k, hi in enumerate([*cuts, frames.shape[0]]):
        acc = chain.merge(acc, chain.process(Batch(k, frames[lo:hi],
                                                   np.arange(lo, hi, dtype=np.int64))))
        lo = hi
    return chain.outputs(acc)


@pytest.mark.parametrize("gain", [0, 1, 2])
def test_a_dark_run_gives_the_mean_and_sigma_of_the_frames_in_its_gain(gain: int) -> None:
    rng = np.random.default_rng(gain)
    frames = dark_frames(rng, 40, gain)
    out = run(frames, {"type": "jungfrau_pedestal", "gain": gain, "record": True}, [7, 30])
    inside = (frames >> 14) == dark.GAIN_BITS[gain]
    adc = np.where(inside, frames & 0x3FFF, 0).astype(np.float64)
    n = inside.sum(axis=0)
    mean = adc.sum(axis=0) / n
    std = np.sqrt(((np.where(inside, adc - mean, 0.0)) ** 2).sum(axis=0) / n)
    np.testing.assert_array_equal(out["pedestal_count"], n)
    np.testing.assert_allclose(out["pedestal_mean"], mean, rtol=1e-15)
    np.testing.assert_allclose(out["pedestal_std"], std, rtol=1e-9)
    np.testing.assert_array_equal(out["wrong_gain_pixels"].values,  # type: ignore[attr-defined]
                                  (~inside).sum(axis=(1, 2)))
    assert out["dark_frames"] == 40 and out["dark_gain"] == gain


def test_without_record_a_dark_reducer_does_nothing() -> None:
    frames = dark_frames(np.random.default_rng(0), 5, 0)
    out = run(frames, {"type": "jungfrau_pedestal"}, [])
    assert out["dark_frames"] == 0 and not np.any(out["pedestal_count"])


def test_numpy_path_equals_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = dark_frames(np.random.default_rng(1), 8, 1, stray=0.3)
    sums = []
    for numba_on in (True, False):
        monkeypatch.setattr(dark, "numba_available", lambda on=numba_on: on)
        c, s, q = (np.zeros(SHAPE, np.int64) for _ in range(3))
        w = np.zeros(8, np.int64)
        dark.accumulate(frames, 1, c, s, q, w)
        sums.append((c, s, q, w))
    for a, b in zip(*sums, strict=True):
        np.testing.assert_array_equal(a, b)


def test_moments_past_the_exact_range_fall_back_to_floats() -> None:
    count = np.array([[dark.EXACT_FRAMES + 1, 4]], np.int64)
    x = np.array([16000.0, 100.0])
    s = (x * count[0]).astype(np.int64)[None]
    q = (x * x * count[0]).astype(np.int64)[None]
    mean, std = dark.moments(count, s, q)
    np.testing.assert_allclose(mean[0], x)
    assert std[0, 1] == 0 and std[0, 0] < 1.0
