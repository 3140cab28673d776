"""MOENCH reducer: batch code against the sequential reference, pedestal, classifier."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from actors.reduce.base import Batch, ReducerConfigError, Series
from actors.reduce.jit import numba_available
from actors.reduce.moench.classify import classify, count_dtype
from actors.reduce.moench.pedestal import EpochSamples, PedestalState
from actors.reduce.moench.reducer import MoenchReducer
from actors.reduce.moench.settings import MoenchSettings
from actors.wire.model import Geometry
from tests.reference.moench_data import cut_batches, merge_grouped, moench_frames, run_batches
from tests.reference.moench_sequential import (
    classify_frame,
    classify_pixel,
    mean_std,
    moench_reference,
)

ROWS, COLS = 32, 40
PATTERN = '["ped", "up", "p", "up", "p"]'


def assert_outputs_equal(got: dict[str, Any], want: dict[str, Any], rtol: float = 0.0) -> None:
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, Series):
            assert isinstance(g, Series), key
            np.testing.assert_array_equal(g.frame_numbers, w.frame_numbers, err_msg=key)
            np.testing.assert_array_equal(g.values, w.values, err_msg=key)
        elif isinstance(w, np.ndarray):
            assert g.shape == w.shape and g.dtype == w.dtype, key
            if rtol and key.startswith("analog"):
                scale = np.abs(w).max() + 1.0
                np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=key)
            else:
                np.testing.assert_array_equal(g, w, err_msg=key)
        else:
            assert g == w, key


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12345)
    frames, _, _ = moench_frames(rng, 300, ROWS, COLS, photons_per_frame=15)
    numbers = np.sort(rng.choice(np.arange(360), 300, replace=False)).astype(np.int64)
    return frames, numbers  # 60 lost frames


@pytest.fixture(scope="module")
def seed_state(data: tuple[np.ndarray, np.ndarray]) -> PedestalState:
    """A pedestal learnt from 150 dark frames (carried in from an earlier acquisition)."""
    rng = np.random.default_rng(7)
    dark, _, _ = moench_frames(rng, 150, ROWS, COLS, photons_per_frame=0)
    x = dark.astype(np.int64)
    smp = EpochSamples(np.full((ROWS, COLS), 150, np.int64), x.sum(0), (x * x).sum(0))
    return PedestalState.empty((ROWS, COLS)).fold(smp, 5000)


CASES = {
    "E1L0": dict(pedestal_epoch=1, pedestal_lag=0, pedestal_frames=200),
    "E100L1": dict(pedestal_epoch=100, pedestal_lag=1, pedestal_frames=5000),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, data: tuple[np.ndarray, np.ndarray],
         seed_state: PedestalState) -> tuple[dict[str, Any], Any]:
    settings = dict(CASES[request.param], processing_pattern=PATTERN, threshold=60.0)
    frames, numbers = data
    return settings, moench_reference(frames, numbers, settings, seed_state)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batches_equal_sequential_reference(case: tuple[dict[str, Any], Any], batch_size: int,
                                            data: tuple[np.ndarray, np.ndarray],
                                            seed_state: PedestalState) -> None:
    settings, ref = case
    frames, numbers = data
    r = MoenchReducer.from_config(settings, Geometry(ROWS, COLS))
    batches = cut_batches(frames, numbers, batch_size, r.epoch_length)
    prefix, partials = run_batches(r, batches, seed_state)
    assert_outputs_equal(r.outputs(prefix), ref.outputs, rtol=1e-12)
    final = r.carry_over(prefix)
    assert final.equals(PedestalState(*ref.state))
    rng = np.random.default_rng(batch_size)
    for _ in range(3):  # any split into groups, merged in any grouping
        regrouped = merge_grouped(r, partials, rng, seed_state)
        assert_outputs_equal(r.outputs(regrouped), ref.outputs, rtol=1e-12)
    assert sum(ref.outputs["frame_photons"].values) > 1000


def test_published_states_are_the_reference_history(
        case: tuple[dict[str, Any], Any], data: tuple[np.ndarray, np.ndarray],
        seed_state: PedestalState) -> None:
    settings, ref = case
    frames, numbers = data
    r = MoenchReducer.from_config(settings, Geometry(ROWS, COLS))
    prefix = r.initial(seed_state)
    for b in cut_batches(frames, numbers, 7, r.epoch_length):
        prefix = r.advance(prefix, b.first_frame)
        published = r.published_states(prefix)
        for key, state in published.items():
            assert state.equals(PedestalState(*ref.history[key])), key
        needed = r.state_needed(b.first_frame, b.last_frame)
        assert set(needed) <= set(published)
        prefix = r.merge(prefix, r.process(b, {k: published[k] for k in needed}))


def test_e1_l0_pedestal_is_plain_sls_moving_stat(data: tuple[np.ndarray, np.ndarray],
                                                 seed_state: PedestalState) -> None:
    frames, numbers = data
    N, k = 200, 4.0
    n, S, Q = (a.copy() for a in (seed_state.n, seed_state.S, seed_state.Q))
    for x_raw, t in zip(frames, numbers):  # the SLS MovingStat, one frame at a time
        x = x_raw.astype(np.float64)
        mu, sigma = mean_std((n, S, Q))
        is_ped = int(t) % 5 == 0
        upd = np.ones(x.shape, bool) if is_ped else classify_frame(x - mu, k * sigma) == 0
        grow = upd & (n < N)
        full = upd & (n >= N)
        n[grow] += 1
        S[grow] += x[grow]
        Q[grow] += x[grow] ** 2
        S[full] = S[full] + x[full] - S[full] / N
        Q[full] = Q[full] + x[full] ** 2 - Q[full] / N
    r = MoenchReducer.from_config(
        dict(pedestal_epoch=1, pedestal_lag=0, pedestal_frames=N, processing_pattern=PATTERN),
        Geometry(ROWS, COLS))
    prefix, _ = run_batches(r, cut_batches(frames, numbers, 16, 1), seed_state)
    final = r.carry_over(prefix)
    np.testing.assert_array_equal(final.n, n)
    np.testing.assert_allclose(final.S, S, rtol=1e-12)
    np.testing.assert_allclose(final.Q, Q, rtol=1e-12)


@pytest.mark.skipif(not numba_available(), reason="numba not importable")
def test_numba_and_numpy_back_ends_agree(data: tuple[np.ndarray, np.ndarray],
                                         seed_state: PedestalState) -> None:
    frames, numbers = data
    settings = dict(processing_pattern=PATTERN, pedestal_epoch=10, pedestal_lag=0)
    outs = []
    for backend in ("numba", "numpy"):
        r = MoenchReducer(MoenchSettings(**settings), Geometry(ROWS, COLS), backend=backend)
        prefix, _ = run_batches(r, cut_batches(frames, numbers, 32, 10), seed_state)
        outs.append(r.outputs(prefix))
    assert_outputs_equal(outs[0], outs[1])


def test_full_size_frames_equal_reference() -> None:
    rng = np.random.default_rng(3)
    frames, ped, sig = moench_frames(rng, 32, 400, 400, photons_per_frame=300)
    x = frames[:8].astype(np.int64)  # seed the pedestal from the first 8 frames
    seed = PedestalState.empty((400, 400)).fold(
        EpochSamples(np.full((400, 400), 8, np.int64), x.sum(0), (x * x).sum(0)), 5000)
    settings = dict(processing_pattern="up p", pedestal_epoch=8, pedestal_lag=0)
    numbers = np.arange(8, 32, dtype=np.int64)
    ref = moench_reference(frames[8:], numbers, settings, seed)
    r = MoenchReducer.from_config(settings, Geometry(400, 400))
    prefix, _ = run_batches(r, cut_batches(frames[8:], numbers, 10, 8), seed)
    assert_outputs_equal(r.outputs(prefix), ref.outputs, rtol=1e-12)


def test_a_pedestal_without_its_dark_run_says_so() -> None:
    """No dark frames: the pedestal is empty, pedestal_ready is false and the reducer warns;
    a dark run of pedestal_min_frames frames carried over makes it ready, silently."""
    rng = np.random.default_rng(5)
    frames, _, _ = moench_frames(rng, 24, 20, 30, photons_per_frame=5)
    numbers = np.arange(24, dtype=np.int64)
    settings = dict(processing_pattern="up", pedestal_epoch=8, pedestal_lag=0,
                    pedestal_min_frames=16)
    r = MoenchReducer.from_config(settings, Geometry(20, 30))
    prefix, _ = run_batches(r, cut_batches(frames, numbers, 8, 8))
    out = r.outputs(prefix)
    assert out["pedestal_ready"] is False and out["pedestal_samples"] == 0
    (warning,) = r.warnings(out)
    assert "0 of the 16 frames" in warning and "dark run" in warning
    dark = MoenchReducer.from_config({**settings, "processing_pattern": "ped"},
                                     Geometry(20, 30))
    dark_prefix, _ = run_batches(dark, cut_batches(frames[:16], numbers[:16], 8, 8))
    prefix, _ = run_batches(r, cut_batches(frames, numbers, 8, 8),
                            dark.carry_over(dark_prefix))
    out = r.outputs(prefix)
    assert out["pedestal_ready"] is True and out["pedestal_samples"] >= 16
    assert r.warnings(out) == []


# ---------------------------------------------------------------- known cases -----------
def _pedestal_run(frames: np.ndarray, capacity: int) -> PedestalState:
    r = MoenchReducer.from_config(dict(process_pedestal_img=True, pedestal_frames=capacity,
                                       pedestal_epoch=10), Geometry(*frames.shape[1:]))
    numbers = np.arange(len(frames), dtype=np.int64)
    prefix, _ = run_batches(r, cut_batches(frames, numbers, 16, 10))
    out = r.outputs(prefix)
    assert out["pedestal_frames"] == len(frames)
    assert out["unpumped_frames"] == out["pumped_frames"] == 0
    state: PedestalState = r.carry_over(prefix)
    np.testing.assert_array_equal(out["pedestal"], state.mean())
    return state


def test_constant_frames_give_zero_sigma_and_exact_mean() -> None:
    frames = np.full((30, 8, 9), 5400, np.uint16)
    state = _pedestal_run(frames, capacity=110)
    assert np.all(state.mean() == 5400.0)
    assert np.all(state.std() == 0.0)
    assert np.all(state.n == 30)


@pytest.mark.parametrize("count", [100, 120])
def test_gaussian_frames_give_sigma_within_tolerance(count: int) -> None:
    rng = np.random.default_rng(count)
    frames = np.rint(rng.normal(5400, 17, (count, 16, 16))).astype(np.uint16)
    state = _pedestal_run(frames, capacity=110)
    assert np.all(state.n == min(110, count))
    sigma, mu = state.std(), state.mean()
    assert np.all(np.abs(sigma - 17) <= 51 / np.sqrt(count))
    assert np.all(np.abs(mu - 5400) <= 3 * sigma)


def _known_state(shape: tuple[int, int], mu: float = 5400.0, sigma: float = 20.0,
                 n: int = 1000) -> PedestalState:
    S = np.full(shape, mu * n)
    Q = np.full(shape, (sigma**2 + mu**2) * n)
    return PedestalState(np.full(shape, n, np.int64), S, Q)


def test_single_photon_counted_once_at_its_maximum() -> None:
    shape = (12, 14)
    state = _known_state(shape)
    frame = np.full(shape, 5400, np.uint16)
    frame[5, 6] += 300  # maximum
    frame[5, 7] += 120  # charge shared with the right neighbour
    frame[6, 6] += 60
    r = MoenchReducer.from_config(dict(processing_pattern="up", pedestal_epoch=1,
                                       pedestal_lag=0, threshold=100.0), Geometry(*shape))
    b = Batch(0, frame[None], np.zeros(1, np.int64))
    out = r.outputs(r.merge(r.initial(state), r.process(b, {-1: state})))
    counting = out["counting_img"]
    assert counting.sum() == 1 and counting[5, 6] == 1
    assert out["frame_photons"].values.tolist() == [1]
    assert out["threshold_img"].sum() == 2  # 300 and 120 ADU above the pedestal
    assert out["analog_img"].sum() == 480
    # photon pixels are not pedestal samples: the neighbourhood keeps n = 1000
    after = r.carry_over(r.merge(r.initial(state), r.process(b, {-1: state})))
    assert after.n[5, 6] == after.n[5, 7] == 1000 and after.n[0, 0] == 1001


def test_negative_pedestal_pixels_are_not_photons() -> None:
    a = np.zeros((7, 7))
    thr = np.full((7, 7), 40.0)
    a[3, 3] = -200.0  # negative pedestal
    a[1, 1] = 100.0  # photon ...
    a[1, 2] = -100.0  # ... next to a negative pixel
    cls = classify(a, thr)
    assert cls[3, 3] == 3 and cls[1, 2] == 3
    assert cls[1, 1] == 2
    assert np.count_nonzero(cls == 2) == 1
    np.testing.assert_array_equal(cls, classify_frame(a, thr))


def test_equal_neighbouring_maxima_are_both_photon_max() -> None:
    a = np.zeros((5, 5))
    a[2, 1] = a[2, 2] = 90.0
    cls = classify(a, np.full((5, 5), 20.0))
    assert cls[2, 1] == cls[2, 2] == 2 and cls[1, 1] == 1


def test_vectorised_classifier_matches_the_rule_pixel_by_pixel() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(0, 20, (9, 11))
    a[rng.integers(0, 9, 6), rng.integers(0, 11, 6)] += 110
    thr = rng.uniform(10, 90, (9, 11))
    want = np.array([[classify_pixel(a, thr, i, j) for j in range(11)] for i in range(9)])
    np.testing.assert_array_equal(classify(a, thr), want)
    np.testing.assert_array_equal(classify_frame(a, thr), want)
    assert {0, 1, 2, 3} <= set(np.unique(want).tolist())


def test_zero_sigma_makes_every_positive_maximum_a_photon() -> None:
    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    cls = classify(a, np.zeros((3, 3)))
    assert cls[0, 1] == 2 and cls[2, 2] == 3 and cls[1, 1] == 1


# ---------------------------------------------------------------- pedestal fold ---------
def test_fold_over_capacity_uses_moving_average() -> None:
    st = PedestalState(np.array([[0, 4]]), np.array([[0.0, 40.0]]), np.array([[0.0, 400.0]]))
    smp = EpochSamples(np.array([[6, 3]]), np.array([[60, 60]]), np.array([[600, 1200]]))
    out = st.fold(smp, capacity=5)
    np.testing.assert_array_equal(out.n, [[5, 5]])
    # pixel 0: n = 0, k = 1: S = 60 - 1*(60/6); pixel 1: k = 2: S = 100 - 2*(40/4)
    np.testing.assert_array_equal(out.S, [[50.0, 80.0]])
    np.testing.assert_array_equal(out.Q, [[500.0, 1400.0]])


def test_reset_and_carry_over_between_acquisitions(data: tuple[np.ndarray, np.ndarray],
                                                  seed_state: PedestalState) -> None:
    frames, numbers = data
    settings = dict(processing_pattern=PATTERN, pedestal_epoch=20, pedestal_lag=1)
    r = MoenchReducer.from_config(settings, Geometry(ROWS, COLS))
    ref1 = moench_reference(frames[:150], numbers[:150], settings, seed_state)
    p1, _ = run_batches(r, cut_batches(frames[:150], numbers[:150], 16, 20), seed_state)
    carried = r.carry_over(p1)
    assert carried.equals(PedestalState(*ref1.state))
    second = numbers[150:] - numbers[150]
    ref2 = moench_reference(frames[150:], second, settings, ref1.state)
    p2, _ = run_batches(r, cut_batches(frames[150:], second, 16, 20), carried)
    assert_outputs_equal(r.outputs(p2), ref2.outputs, rtol=1e-12)
    fresh = r.outputs(r.initial(None))  # reset_pedestal: start from the empty state
    assert np.all(fresh["pedestal"] == 0) and np.all(fresh["pedestal_std"] == 0)


def test_normalize_divides_by_frame_count(data: tuple[np.ndarray, np.ndarray],
                                          seed_state: PedestalState) -> None:
    frames, numbers = data
    base = dict(processing_pattern=PATTERN, pedestal_epoch=50)
    outs = []
    for normalize in (False, True):
        r = MoenchReducer.from_config(dict(base, normalize=normalize), Geometry(ROWS, COLS))
        prefix, _ = run_batches(r, cut_batches(frames, numbers, 64, 50), seed_state)
        outs.append(r.outputs(prefix))
    raw, norm = outs
    for name, count in (("counting_img", raw["unpumped_frames"]),
                        ("threshold_img_pumped", raw["pumped_frames"])):
        np.testing.assert_array_equal(norm[name], raw[name] / count)
    assert raw["unpumped_frames"] + raw["pumped_frames"] + raw["pedestal_frames"] == 300


def test_split_pump_and_disabled_images() -> None:
    rng = np.random.default_rng(2)
    frames, _, _ = moench_frames(rng, 10, 8, 8)
    r = MoenchReducer.from_config(dict(split_pump=True, processing_pattern="ped",
                                       process_analog_img=False), Geometry(8, 8))
    b = Batch(0, frames, np.arange(10, dtype=np.int64))
    out = r.outputs(r.merge(r.initial(), r.process(b, {-1: PedestalState.empty((8, 8))})))
    assert out["unpumped_frames"] == out["pumped_frames"] == 5
    assert out["frame_type"].values.tolist() == [1, 2] * 5
    assert np.all(out["analog_img"] == 0) and out["counting_img"].sum() > 0


# ---------------------------------------------------------------- protocol --------------
def test_state_needed_keys() -> None:
    r = MoenchReducer.from_config(dict(pedestal_epoch=10, pedestal_lag=1), Geometry(4, 4))
    assert r.state_needed(0, 5) == (-1,)
    assert r.state_needed(35, 39) == (1,)  # epoch 3 uses the state after 3 - 1 - L
    assert r.state_needed(30, 49) == (1, 2)  # epoch 4 uses state after 2, published
    assert r.state_needed(30, 59) == (1, 2)  # epoch 5 needs state after 3: local fold
    r0 = MoenchReducer.from_config(dict(pedestal_epoch=10, pedestal_lag=0), Geometry(4, 4))
    assert r0.state_needed(30, 59) == (2,)


def test_merge_rejects_a_batch_that_breaks_the_cut_rule() -> None:
    rng = np.random.default_rng(0)
    frames, _, _ = moench_frames(rng, 20, 6, 6)
    numbers = np.arange(20, dtype=np.int64)
    r = MoenchReducer.from_config(dict(pedestal_epoch=10, pedestal_lag=0), Geometry(6, 6))
    empty = PedestalState.empty((6, 6))
    first = r.process(Batch(0, frames[:5], numbers[:5]), {-1: empty})
    bad = r.process(Batch(1, frames[5:], numbers[5:]), {-1: empty})  # spans epochs 0..1
    with pytest.raises(ValueError, match="cut rule"):
        r.merge(first, bad)
    prefix = r.advance(r.initial(), 10)
    with pytest.raises(ValueError, match="already folded"):
        r.merge(prefix, first)


def test_partials_pickle_and_empty_is_identity(data: tuple[np.ndarray, np.ndarray]) -> None:
    frames, numbers = data
    r = MoenchReducer.from_config(dict(processing_pattern=PATTERN), Geometry(ROWS, COLS))
    p = r.process(Batch(0, frames[:20], numbers[:20]), {-1: PedestalState.empty((ROWS, COLS))})
    q = pickle.loads(pickle.dumps(p))
    pre = r.initial()
    want = r.outputs(r.merge(pre, p))
    assert_outputs_equal(r.outputs(r.merge(pre, q)), want)
    assert_outputs_equal(r.outputs(r.merge(pre, r.merge(r.empty(), p))), want)
    assert_outputs_equal(r.outputs(r.merge(r.merge(pre, p), r.empty())), want)
    assert len(pickle.dumps(p)) < 40 * ROWS * COLS * 8


def test_batch_counts_are_int32_and_merges_widen_without_overflow(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    frames, numbers = data
    r = MoenchReducer.from_config(dict(processing_pattern=PATTERN), Geometry(ROWS, COLS))
    p = r.process(Batch(0, frames[:20], numbers[:20]), {-1: PedestalState.empty((ROWS, COLS))})
    assert p.threshold is not None and p.counting is not None
    assert p.threshold.dtype == p.counting.dtype == np.int32
    assert all(s.c.dtype == s.s.dtype == np.int32 and s.q.dtype == np.int64
               for s in p.pending.values())
    assert count_dtype(2**15 - 1) is np.int32 and count_dtype(2**15) is np.int64
    # a sum past int32 (as many batches would reach) is exact in the merged partial
    big = np.full((2, ROWS, COLS), 2**31 - 1, np.int32)
    hi = replace(p, threshold=big, counting=big, pending={})
    lo = replace(p, threshold=big, counting=big, pending={},
                 first_frame=p.first_frame + 100, last_frame=p.last_frame + 100)
    merged = r.merge(hi, lo)
    assert merged.threshold is not None and merged.threshold.dtype == np.int64
    assert int(merged.threshold.min()) == 2 * (2**31 - 1)
    smp = EpochSamples(np.full((1, 1), 2**31 - 1, np.int32), np.full((1, 1), 2**31 - 1, np.int32),
                       np.zeros((1, 1), np.int64))
    total = smp + smp
    assert total.c.dtype == total.s.dtype == np.int64 and int(total.s[0, 0]) == 2**32 - 2


def test_outputs_match_their_declarations() -> None:
    r = MoenchReducer.from_config({}, Geometry(5, 6))
    out = r.outputs(r.initial())
    for spec in r.outputs_spec():
        value = out[spec.name]
        if spec.kind == "image":
            assert value.shape == spec.shape and value.dtype == np.dtype(spec.dtype)
        elif spec.kind == "series":
            assert isinstance(value, Series) and value.values.dtype == np.dtype(spec.dtype)
        else:
            assert isinstance(value, int)
    assert [s.name for s in r.outputs_spec()][:6] == [
        "analog_img", "analog_img_pumped", "threshold_img", "threshold_img_pumped",
        "counting_img", "counting_img_pumped"]


def test_runtime_settings_rebuild_the_reducer() -> None:
    r = MoenchReducer.from_config(dict(threshold=50), Geometry(4, 4), name="m")
    r2 = r.reconfigure(threshold=70, split_pump=True)
    assert r2.settings.threshold == 70 and r2.name == "m" and r2.settings.split_pump
    with pytest.raises(ReducerConfigError, match="pedestal_epoch"):
        r.reconfigure(pedestal_epoch=5)


# ---------------------------------------------------------------- settings --------------
@pytest.mark.parametrize("pattern, want", [
    ('["ped","p","up"]', [0, 2, 1]), ("ped, p up", [0, 2, 1]),
    ("pedestal,pumped,unpumped", [0, 2, 1]), (["up", "p"], [1, 2]), ("UP", [1])])
def test_pattern_forms(pattern: Any, want: list[int]) -> None:
    s = MoenchSettings(processing_pattern=pattern)
    assert [int(t) for t in s.pattern] == want


@pytest.mark.parametrize("settings, match", [
    (dict(counting_sigma=-1), "counting_sigma"),
    (dict(threshold=-5), "threshold"),
    (dict(processing_pattern=""), "processing_pattern.*empty"),
    (dict(processing_pattern="[]"), "processing_pattern.*empty"),
    (dict(processing_pattern="up, probe"), "processing_pattern.*'probe'"),
    (dict(processing_pattern="__import__('os')"), "processing_pattern.*unknown token"),
    (dict(pedestal_epoch=0), "pedestal_epoch"),
    (dict(pedestal_lag=-1), "pedestal_lag"),
    (dict(pedestal_frames=0), "pedestal_frames"),
    (dict(tresh=3), "tresh"),
])
def test_bad_settings_are_rejected_naming_the_setting(settings: dict[str, Any],
                                                      match: str) -> None:
    with pytest.raises(ReducerConfigError, match=match) as err:
        MoenchReducer.from_config(settings, Geometry(4, 4), name="moench1")
    assert "moench1" in str(err.value)


def test_pedestal_moments_in_one_pass_are_the_same_bits() -> None:
    """``PedestalState.moments`` (the numba pass every batch uses) equals ``mean`` and
    ``std`` bit for bit, zero counts and negative variances included."""
    from actors.reduce.moench.pedestal import EpochSamples, PedestalState

    rng = np.random.default_rng(5)
    shape = (31, 17)
    x = rng.integers(0, 65535, (40, *shape)).astype(np.int64)
    c = rng.integers(0, 40, shape)
    mask = np.arange(40)[:, None, None] < c
    samples = EpochSamples(c.astype(np.int64), (x * mask).sum(0), (x * x * mask).sum(0))
    state = PedestalState.empty(shape).fold(samples, 25)  # (folds over capacity too)
    mu, sd = state.moments()
    assert np.array_equal(mu, state.mean()) and np.array_equal(sd, state.std())
    assert np.any(c == 0) and np.all(mu[c == 0] == 0) and np.all(sd[c == 0] == 0)
