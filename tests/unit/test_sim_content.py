"""Simulated scenes: deterministic and physically plausible."""

import numpy as np
import pytest

from actors.sim.content import EigerScene, JungfrauScene, MoenchScene, eiger_gap_mask, make_scene


def test_scenes_are_deterministic_for_a_seed() -> None:
    a, b = MoenchScene(seed=5), MoenchScene(seed=5)
    np.testing.assert_array_equal(a.frame(7), b.frame(7))
    assert not np.array_equal(a.frame(7), MoenchScene(seed=6).frame(7))
    assert not np.array_equal(a.frame(7), a.frame(8))


def test_pool_cycles_frames_and_keeps_parity() -> None:
    s = MoenchScene(pool=4)
    np.testing.assert_array_equal(s.frame(1), s.frame(5))
    np.testing.assert_array_equal(s.frame(1), MoenchScene().frame(1))


def test_moench_dark_frames_have_pedestal_and_noise_statistics() -> None:
    s = MoenchScene(mode="dark", pedestal_spread=0.0)
    f = np.stack([s.frame(i) for i in range(4)]).astype(float)
    assert f.dtype == float and f.shape == (4, 400, 400)
    assert abs(f.mean() - 5400) < 1
    assert abs(f.std() - 19) < 0.5


def test_moench_pump_signal_only_on_odd_frames() -> None:
    s = MoenchScene(mode="pumpprobe", photons=0, pump_photons=200, pedestal_spread=0, noise=0)
    even, odd = s.frame(2).astype(int) - 5400, s.frame(3).astype(int) - 5400
    assert even.sum() == 0
    assert 150 * 110 < odd.sum() < 250 * 110
    r, c = np.nonzero(odd)
    assert abs(r.mean() - 200) < 10 and abs(c.mean() - 200) < 10


def test_eiger_mask_matches_real_detector_gaps() -> None:
    # EIGER1 1M: 2 modules of 514 rows with a 37-row gap; the real dump masks ~38k pixels
    m = eiger_gap_mask(1065, 1030)
    assert m[514:551].all() and not m[:514].any() and not m[551:].any()
    e = EigerScene()
    f = e.frame(0)
    assert f.dtype == np.uint32 and f.shape == (1065, 1030)
    assert 37_000 < (f == 0xFFFFFFFF).sum() < 39_500
    assert ((f == 0xFFFFFFFF) == e.mask).all()
    big = eiger_gap_mask(2167, 2070)  # 4M: 4 x 2 modules
    assert big[:, 1030:1040].all() and big[514:551].all()
    assert big[1065:1102].all() and big[1616:1653].all()


def test_jungfrau_has_14_bit_adc_and_zero_gain_bits() -> None:
    f = JungfrauScene().frame(0)
    assert f.shape == (512, 1024) and f.dtype == np.uint16
    assert (f >> 14).max() == 0


def test_make_scene_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="unknown moench scene settings"):
        make_scene("moench", colour="red")
    with pytest.raises(ValueError, match="not one of"):
        make_scene("pilatus")  # type: ignore[arg-type]


def test_jungfrau_pixels_switch_gain_with_the_energy_they_receive() -> None:
    scene = JungfrauScene(rows=64, cols=64, spot_photons=800.0, spot_radius=4.0)
    raw = scene.frame(3)
    counts = scene.photon_counts(3)
    stage = scene.gain_stage(counts * scene.photon_energy)
    bits = raw >> 14
    assert set(np.unique(bits)) == {0, 1, 3}  # G0, G1, G2 and never the invalid 10
    np.testing.assert_array_equal(bits, np.array([0, 1, 3])[stage])
    cal = scene.calibration
    assert cal.pedestal.shape == cal.gain.shape == (3, 64, 64)
    assert (cal.gain[0] > 0).all() and (cal.gain[1:] < 0).all()
    np.testing.assert_array_equal(raw, scene.frame(3))  # deterministic


@pytest.mark.parametrize("gain", [0, 1, 2])
def test_a_jungfrau_dark_run_is_forced_into_its_gain(gain: int) -> None:
    scene = JungfrauScene(rows=32, cols=64, mode="dark", forced_gain=gain)
    raw = scene.frame(0)
    assert ((raw >> 14) == (0, 1, 3)[gain]).all()
    assert not scene.photon_counts(0).any()
    adc = (raw & 0x3FFF).astype(float)
    assert abs(adc - scene.calibration.pedestal[gain]).max() < 6 * scene.noise[gain] + 1
    with pytest.raises(ValueError, match="forced_gain"):
        JungfrauScene(mode="dark", forced_gain=3)
