"""Generic reducers against straightforward numpy, masked and saturated pixels excluded."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from actors.reduce.base import Batch, Reducer, ReducerConfigError, Series
from actors.reduce.cutter import BatchCutter, batch_boundary_needed
from actors.reduce.generic import kernels as K
from actors.reduce.jit import numba_available
from actors.reduce.registry import build_reducer
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry

R, C = 24, 30


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 1000, (50, R, C)).astype(np.uint16)
    frames[rng.random(frames.shape) < 0.01] = 65535  # saturated
    mask = rng.random((R, C)) < 0.05
    numbers = np.sort(rng.choice(np.arange(80), 50, replace=False)).astype(np.int64)
    return frames, numbers, mask


def run(r: Reducer[Any, Any], frames: np.ndarray, numbers: np.ndarray,
        mask: np.ndarray | None, sizes: list[int]) -> dict[str, Any]:
    """Process in batches of the given sizes and merge in a nested grouping."""
    partials, start, i = [], 0, 0
    while start < len(frames):
        n = sizes[i % len(sizes)]
        partials.append(r.process(Batch(i, frames[start:start + n], numbers[start:start + n],
                                        mask)))
        start, i = start + n, i + 1
    half = len(partials) // 2
    left = r.empty()
    for p in partials[:half]:
        left = r.merge(left, p)
    right = r.empty()
    for p in partials[half:]:
        right = r.merge(right, p)
    merged = r.merge(left, right)
    return r.outputs(pickle.loads(pickle.dumps(merged)))


def valid_of(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (frames < 65535) & ~mask[None]


def check_declared(r: Reducer[Any, Any], out: dict[str, Any]) -> None:
    specs = {s.name: s for s in r.outputs_spec()}
    assert set(specs) == set(out)
    for name, spec in specs.items():
        v = out[name]
        if spec.kind == "series":
            assert isinstance(v, Series)
            assert v.values.shape[1:] == spec.shape and v.values.dtype == np.dtype(spec.dtype)
        elif spec.kind in ("image", "spectrum"):
            assert v.shape == spec.shape and v.dtype == np.dtype(spec.dtype), name
        else:
            assert np.ndim(v) == 0


@pytest.mark.parametrize("sizes", [[1], [7], [64], [3, 11, 5]])
def test_images_total_match_numpy(stack: tuple[np.ndarray, ...], sizes: list[int]) -> None:
    frames, numbers, mask = stack
    g = Geometry(R, C, "uint16")
    valid = valid_of(frames, mask)
    clean = np.where(valid, frames, 0).astype(np.int64)
    count = valid.sum(axis=0)

    r = build_reducer({"type": "sum"}, g)
    out = run(r, frames, numbers, mask, sizes)
    check_declared(r, out)
    np.testing.assert_array_equal(out["sum"], clean.sum(axis=0))
    assert out["sum_frames"] == 50 and out["sum"].dtype == np.int64

    r = build_reducer({"type": "mean", "name": "avg"}, g)
    out = run(r, frames, numbers, mask, sizes)
    check_declared(r, out)
    want = np.where(count > 0, clean.sum(axis=0) / np.maximum(count, 1), 0.0)
    np.testing.assert_allclose(out["avg"], want, rtol=1e-15)
    assert np.all(out["avg"][mask] == 0)

    r = build_reducer({"type": "max"}, g)
    out = run(r, frames, numbers, mask, sizes)
    check_declared(r, out)
    np.testing.assert_array_equal(out["max"], np.where(valid, frames, 0).max(axis=0))
    assert out["max"].max() < 65535

    r = build_reducer({"type": "total"}, g)
    out = run(r, frames, numbers, mask, sizes)
    check_declared(r, out)
    np.testing.assert_array_equal(out["total"].values, clean.sum(axis=(1, 2)))
    np.testing.assert_array_equal(out["total"].frame_numbers, numbers)
    assert out["total_sum"] == clean.sum()


def test_saturation_value_and_float_frames(stack: tuple[np.ndarray, ...]) -> None:
    frames, numbers, _ = stack
    r = build_reducer({"type": "sum", "saturation_value": 500}, Geometry(R, C))
    out = run(r, frames, numbers, None, [16])
    np.testing.assert_array_equal(out["sum"],
                                  np.where(frames < 500, frames, 0).astype(np.int64).sum(0))
    ff = frames.astype(np.float32)
    r = build_reducer({"type": "total"}, Geometry(R, C, "float32"))
    out = run(r, ff, numbers, None, [16])  # float: no default saturation limit
    np.testing.assert_allclose(out["total"].values, ff.astype(np.float64).sum(axis=(1, 2)))
    assert out["total"].values.dtype == np.float64


def test_roi_sums(stack: tuple[np.ndarray, ...]) -> None:
    frames, numbers, mask = stack
    rois = [dict(name="a", row0=0, row1=5, col0=0, col1=30),
            dict(name="b", row0=10, row1=24, col0=20, col1=30)]
    r = build_reducer({"type": "roi", "name": "rois", "rois": rois}, Geometry(R, C))
    out = run(r, frames, numbers, mask, [7])
    check_declared(r, out)
    clean = np.where(valid_of(frames, mask), frames, 0).astype(np.int64)
    for roi in rois:
        want = clean[:, roi["row0"]:roi["row1"], roi["col0"]:roi["col1"]].sum(axis=(1, 2))
        np.testing.assert_array_equal(out[f"rois_{roi['name']}"].values, want)
        assert out[f"rois_{roi['name']}_sum"] == want.sum()


@pytest.mark.parametrize("per_frame", [False, True])
def test_radial_profile(stack: tuple[np.ndarray, ...], per_frame: bool) -> None:
    frames, numbers, mask = stack
    centre = (10.3, 12.0)
    edges = [0.0, 2.0, 5.0, 9.0, 14.0]
    r = build_reducer({"type": "radial", "center": centre, "edges": edges,
                       "per_frame": per_frame}, Geometry(R, C))
    out = run(r, frames, numbers, mask, [7, 2])
    check_declared(r, out)
    rr, cc = np.indices((R, C))
    radius = np.hypot(rr - centre[0], cc - centre[1])
    valid = valid_of(frames, mask)
    sums, counts, per = np.zeros(4), np.zeros(4), np.zeros((50, 4))
    for k in range(4):
        ring = (radius >= edges[k]) & ((radius < edges[k + 1]) | (k == 3) & (radius == 14.0))
        ok = valid & ring[None]
        s = np.where(ok, frames, 0).sum(axis=(1, 2)).astype(np.float64)
        n = ok.sum(axis=(1, 2))
        sums[k], counts[k] = s.sum(), n.sum()
        per[:, k] = np.where(n > 0, s / np.maximum(n, 1), 0.0)
    np.testing.assert_allclose(out["radial"], sums / counts, rtol=1e-14)
    np.testing.assert_allclose(out["radial_last"], per[-1], rtol=1e-14)
    np.testing.assert_allclose(out["radial_radius"], [1.0, 3.5, 7.0, 11.5])
    if per_frame:
        np.testing.assert_allclose(out["radial_frames"].values, per, rtol=1e-14)


def test_radial_equal_bins_cover_the_frame() -> None:
    r = build_reducer({"type": "radial", "center": (0, 0), "bins": 10}, Geometry(R, C))
    assert r.outputs_spec()[0].shape == (10,)
    frames = np.ones((2, R, C), np.uint16)
    out = r.outputs(r.process(Batch(0, frames, np.arange(2, dtype=np.int64))))
    np.testing.assert_array_equal(out["radial"], np.ones(10))


def test_hits(stack: tuple[np.ndarray, ...]) -> None:
    frames, numbers, mask = stack
    r = build_reducer({"type": "hits", "threshold": 990, "min_pixels": 5}, Geometry(R, C))
    out = run(r, frames, numbers, mask, [7])
    check_declared(r, out)
    pixels = ((frames > 990) & valid_of(frames, mask)).sum(axis=(1, 2))
    np.testing.assert_array_equal(out["hits_pixels"].values, pixels)
    np.testing.assert_array_equal(out["hits"].values, pixels > 5)
    assert out["hits_count"] == int((pixels > 5).sum()) and 0 < out["hits_count"] < 50
    assert out["hits_frames"] == 50


def test_empty_partials_give_zero_outputs() -> None:
    g = Geometry(R, C)
    for spec in ({"type": "sum"}, {"type": "mean"}, {"type": "max"}, {"type": "total"},
                 {"type": "hits", "threshold": 1, "min_pixels": 0},
                 {"type": "radial", "center": (1, 1), "bins": 3},
                 {"type": "roi", "rois": [dict(name="x", row0=0, row1=1, col0=0, col1=1)]}):
        r = build_reducer(spec, g)
        check_declared(r, r.outputs(r.empty()))


@pytest.mark.parametrize("spec, match", [
    ({"type": "roi", "rois": [dict(name="x", row0=0, row1=25, col0=0, col1=5)]},
     "rois.*'x'.*outside"),
    ({"type": "roi", "rois": [dict(name="x", row0=4, row1=2, col0=0, col1=5)]}, "row0 < row1"),
    ({"type": "roi", "rois": []}, "rois"),
    ({"type": "radial", "center": (1, 1), "bins": 0}, "bins"),
    ({"type": "radial", "center": (1, 1), "bins": -3}, "bins"),
    ({"type": "radial", "center": (1, 1), "edges": [3, 1]}, "edges"),
    ({"type": "radial", "center": (500, 500), "bins": 4, "r_max": 10}, "no pixel"),
    ({"type": "hits", "threshold": 1, "min_pixels": -1}, "min_pixels"),
    ({"type": "sum", "saturation": 4}, "saturation"),
])
def test_bad_generic_settings(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ReducerConfigError, match=match):
        build_reducer(spec, Geometry(R, C))


def test_series_chunks_stay_few_and_ordered() -> None:
    s = SeriesChunks("int64")
    for i in range(1000):
        s = s.concat(SeriesChunks.of(np.arange(3 * i, 3 * i + 3), np.full(3, i), "int64"))
    assert len(s.chunks) <= 11 and len(s) == 3000
    out = s.to_series()
    np.testing.assert_array_equal(out.frame_numbers, np.arange(3000))
    np.testing.assert_array_equal(out.values, np.repeat(np.arange(1000), 3))


# ------------------------------------------------------------------ batch cutting -------
def test_batch_boundary_rule() -> None:
    # inside one epoch: never
    assert not batch_boundary_needed(12, 15, 17, 10, batch_started_at_epoch_start=False)
    # crossing into a new epoch: only if the batch did not start a fresh epoch
    assert batch_boundary_needed(12, 15, 21, 10, batch_started_at_epoch_start=False)
    assert not batch_boundary_needed(10, 15, 21, 10, batch_started_at_epoch_start=True)
    assert not batch_boundary_needed(12, 15, 21, None, batch_started_at_epoch_start=False)


def test_batch_cutter_with_lost_frames() -> None:
    cutter = BatchCutter([10, None])
    batches, current = [], []
    for f in [3, 4, 8, 12, 13, 25, 31, 45, 46, 52]:
        if cutter.must_cut(f) or len(current) == 4:
            batches.append(current)
            current = []
            cutter.close()
        current.append(f)
        cutter.add(f)
    batches.append(current)
    # [3,4,8] started epoch 0 fresh but 12 would join it: allowed (spans whole epoch 0)
    assert batches == [[3, 4, 8, 12], [13], [25, 31, 45, 46], [52]]
    with pytest.raises(ValueError):
        cutter.add(40)


# ------------------------------------------------------------------ back ends -----------
@pytest.mark.skipif(not numba_available(), reason="numba not importable")
@pytest.mark.parametrize("dtype", ["uint16", "uint32", "float32"])
@pytest.mark.parametrize("with_mask, limit", [(False, None), (True, None), (True, 900)])
def test_numba_and_numpy_kernels_agree(dtype: str, with_mask: bool, limit: int | None) -> None:
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 1000, (5, R, C)).astype(dtype)
    mask = (rng.random((R, C)) < 0.1) if with_mask else None
    lim = None if limit is None else np.dtype(dtype).type(limit)
    acc = np.float64 if dtype == "float32" else np.int64
    index = rng.integers(0, 7, R * C).astype(np.intp)
    pairs = [(K.masked_sums(frames, mask, lim, acc, backend=b),
              K.masked_max(frames, mask, lim, backend=b),
              K.ring_sums(frames, mask, lim, index, 6, backend=b),
              (K.count_above(frames, mask, lim, 500.5, backend=b),))
             for b in ("numba", "numpy")]
    for got, want in zip(*pairs):
        for g, w in zip(got, want):
            if w is None:
                assert g is None
            else:
                np.testing.assert_allclose(g, w, rtol=1e-12)


# ------------------------------------------------------------------ one pass, narrow ----
def _reference_sums(frames: np.ndarray, mask: np.ndarray | None,
                    limit: Any) -> tuple[np.ndarray, np.ndarray]:
    valid = np.ones(frames.shape, bool)
    if limit is not None:
        valid &= frames < limit
    if mask is not None:
        valid &= ~mask[None]
    clean = np.where(valid, frames, 0).astype(np.int64)
    return clean.sum(axis=0), clean.reshape(len(frames), -1).sum(axis=1)


def _evenly_spaced(frames: np.ndarray, pad: int) -> tuple[np.ndarray, ...]:
    """The frames as separate views into one buffer, ``pad`` bytes apart (ray.put's
    layout of a tuple of arrays)."""
    n = len(frames)
    step = frames[0].nbytes + pad
    buf = np.zeros(n * step, np.uint8)
    views = tuple(np.frombuffer(buf.data, frames.dtype, frames[0].size, offset=i * step)
                  .reshape(frames.shape[1:]) for i in range(n))
    for v, f in zip(views, frames):
        v[...] = f
    return views


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
@pytest.mark.parametrize("with_mask, limit", [(False, None), (True, None), (True, 200),
                                              (False, 0)])
def test_sums_and_totals_exact(backend: str, dtype: str, with_mask: bool,
                               limit: int | None) -> None:
    if backend == "numba" and not numba_available():
        pytest.skip("numba not importable")
    rng = np.random.default_rng(5)
    top = 255 if dtype == "uint8" else 65535
    frames = rng.integers(0, top + 1, (9, R, C)).astype(dtype)
    mask = (rng.random((R, C)) < 0.1) if with_mask else None
    lim = None if limit is None else np.dtype(dtype).type(limit)
    acc = np.float64 if dtype == "float32" else np.int64
    want_image, want_totals = _reference_sums(frames, mask, lim)
    from actors.core.batch import stacked

    flipped = None if mask is None else mask[:, ::-1]
    cases = [(frames, mask, False), (stacked(_evenly_spaced(frames, 12)), mask, False),
             (frames[:, :, ::-1], flipped, True)]  # rows not contiguous: copied first
    for data, m, flip in cases:
        image, totals = K.sums_and_totals(data, m, lim, acc, backend=backend)  # type: ignore[arg-type]
        np.testing.assert_array_equal(image[:, ::-1] if flip else image, want_image)
        np.testing.assert_array_equal(totals, want_totals)
        assert totals.dtype == acc
        assert image.dtype == (np.uint32 if dtype in ("uint8", "uint16") else acc)


def test_narrow_sum_bounds() -> None:
    assert K.narrow_sum("uint16", 65537) and not K.narrow_sum("uint16", 65538)
    assert not K.narrow_sum("uint32", 1) and not K.narrow_sum("int16", 1)
    # the worst case of the narrow image: every pixel at the top valid value
    frames = np.full((300, 2, 3), 65534, np.uint16)
    image, totals = K.sums_and_totals(frames, None, np.uint16(65535), np.int64)
    assert image.dtype == np.uint32 and int(image[0, 0]) == 300 * 65534
    assert int(totals[0]) == 6 * 65534


def test_stacked_views_are_zero_copy_when_evenly_spaced() -> None:
    from actors.core.batch import stacked

    frames = np.arange(4 * 5 * 7, dtype=np.uint16).reshape(4, 5, 7)
    views = _evenly_spaced(frames, 6)
    view = stacked(views)
    np.testing.assert_array_equal(view, frames)
    assert not view.flags.writeable and not view.flags.owndata
    assert view.__array_interface__["data"][0] == views[0].__array_interface__["data"][0]
    # unevenly spaced or mixed frames: a stacked copy
    copy = stacked((views[0], views[2], views[3]))
    np.testing.assert_array_equal(copy, frames[[0, 2, 3]])
    assert copy.flags.owndata
    np.testing.assert_array_equal(stacked(views[:1]), frames[:1])


def test_sum_and_total_share_one_pass(monkeypatch: pytest.MonkeyPatch,
                                      stack: tuple[np.ndarray, ...]) -> None:
    frames, numbers, mask = stack
    g = Geometry(R, C, "uint16")
    calls = []
    real = K.sums_and_totals

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    import actors.reduce.generic.images as images

    monkeypatch.setattr(images, "sums_and_totals", counting)
    reducers = [build_reducer({"type": "sum"}, g), build_reducer({"type": "total"}, g),
                build_reducer({"type": "sum", "name": "sat", "saturation_value": 500}, g)]
    batch = Batch(0, frames, numbers, mask)
    parts = [r.process(batch) for r in reducers]
    assert len(calls) == 2  # sum + total share one pass; another limit needs its own
    image, totals = _reference_sums(frames, mask, np.uint16(65535))
    np.testing.assert_array_equal(parts[0].image, image)
    np.testing.assert_array_equal(parts[1].series.to_series().values, totals)
    # uint32 batch partials merge into the declared int64 image
    merged = reducers[0].merge(reducers[0].merge(reducers[0].empty(), parts[0]), parts[0])
    out = reducers[0].outputs(merged)["sum"]
    assert out.dtype == np.int64 and merged.image.dtype == np.int64
    np.testing.assert_array_equal(out, 2 * image)
    single = reducers[0].outputs(reducers[0].merge(reducers[0].empty(), parts[0]))["sum"]
    assert single.dtype == np.int64


@pytest.mark.parametrize("spec", [{"type": "sum"}, {"type": "mean"}, {"type": "max"},
                                  {"type": "sum", "saturation_value": 400}])
def test_merge_into_equals_merge_and_leaves_partials_alone(
        spec: dict[str, Any], stack: tuple[np.ndarray, ...]) -> None:
    frames, numbers, mask = stack
    r = build_reducer(spec, Geometry(R, C, "uint16"))
    parts = [r.process(Batch(i, frames[i * 10:(i + 1) * 10], numbers[i * 10:(i + 1) * 10],
                             mask)) for i in range(5)]
    before = [pickle.dumps(p) for p in parts]
    plain = into = r.empty()
    for p in parts + [r.empty()] + parts[:2]:
        plain = r.merge(plain, p)
        into = r.merge_into(into, p)
    assert [pickle.dumps(p) for p in parts] == before  # inputs never written
    for name, value in r.outputs(plain).items():
        np.testing.assert_array_equal(r.outputs(into)[name], value)


@pytest.mark.parametrize("acc_dtype, part_dtype", [("int64", "uint32"), ("int64", "int64"),
                                                   ("int64", "uint16"), ("float64", "uint32"),
                                                   ("int64", "uint64")])
def test_accumulate_in_place(acc_dtype: str, part_dtype: str) -> None:
    rng = np.random.default_rng(8)
    acc = rng.integers(0, 1 << 40, (R, C)).astype(acc_dtype)
    part = rng.integers(0, 1 << 15, (R, C)).astype(part_dtype)
    want = acc + part.astype(acc_dtype)
    if part_dtype == "uint64":  # numpy refuses uint64 into int64 ('same_kind')
        with pytest.raises(TypeError):
            K.accumulate(acc, part)
        return
    K.accumulate(acc, part)
    np.testing.assert_array_equal(acc, want)
    assert acc.dtype == acc_dtype


def test_sums_after_a_masked_batch_then_an_unmasked_one() -> None:
    """The kernels' keep-bits cache must tell a mask from no mask (it compared an array
    with a shape and raised)."""
    frames = np.arange(2 * R * C, dtype=np.uint16).reshape(2, R, C)
    mask = np.zeros((R, C), bool)
    mask[0, 0] = True
    mask.flags.writeable = False
    masked, _ = K.sums_and_totals(frames, mask, None, np.int64)
    plain, _ = K.sums_and_totals(frames, None, None, np.int64)
    again, _ = K.sums_and_totals(frames, mask, None, np.int64)
    assert int(masked[0, 0]) == 0 == int(again[0, 0])
    assert int(plain[0, 0]) == int(frames[:, 0, 0].sum())
