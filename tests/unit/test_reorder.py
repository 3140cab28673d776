"""MOENCH03 reorder map: a permutation matching the formula of moench.md §1.4."""

import numpy as np
import pytest

from actors.wire import reorder


def test_moench03_map_is_a_permutation() -> None:
    m = reorder.moench03_map()
    assert m.shape == (400, 400)
    assert np.array_equal(np.sort(m.ravel()), np.arange(160_000))
    reorder.validate_map(m, (400, 400))


def test_moench03_map_matches_the_formula_sample_by_sample() -> None:
    m = reorder.moench03_map()
    for i in range(5000):
        for a in range(32):
            c_a = 300 - 100 * (a // 8) + 25 * (a % 4)
            col = c_a + i % 25
            row = 199 - i // 25 if (a // 4) % 2 == 0 else 200 + i // 25
            assert m[row, col] == 32 * i + a


def test_known_corner_value() -> None:
    # moench.md §4: the v7 permutation table has [0, 0] = 159224
    assert reorder.moench03_map()[0, 0] == 159224


def test_apply_and_invert_are_inverse_for_frames_and_batches() -> None:
    m = reorder.moench03_map()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 2**16, size=(400, 400), dtype=np.uint16)
    raw = reorder.invert_map(img, m)
    np.testing.assert_array_equal(reorder.apply_map(raw, m), img)
    batch = np.stack([raw, raw[::-1]])
    out = reorder.apply_map(batch, m)
    np.testing.assert_array_equal(out[0], img)
    np.testing.assert_array_equal(out[1], reorder.apply_map(raw[::-1], m))


def test_load_map_specs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert reorder.load_map("none", (400, 400)) is None
    assert reorder.load_map("moench03", (400, 400)) is reorder.moench03_map()
    ident = np.arange(12).reshape(3, 4)
    np.save(tmp_path / "m.npy", ident)
    np.testing.assert_array_equal(reorder.load_map(str(tmp_path / "m.npy"), (3, 4)), ident)
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="not a permutation"):
        reorder.load_map(str(tmp_path / "bad.npy"), (3, 4))
    with pytest.raises(ValueError, match="shape"):
        reorder.load_map("moench03", (10, 10))
    with pytest.raises(ValueError, match="moench03"):
        reorder.load_map("nonsense", (3, 4))
