"""The narrowest exact dtype of an output array, and compressed storage that reads back exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest

from actors.output.narrow import COMPRESS_MIN_ELEMENTS, narrowest
from actors.output.nx import DTYPE_ATTR, write_field
from actors.output.reader import read_array

CASES: list[tuple[str, npt.NDArray[Any], str]] = [
    ("sum of uint16 frames", np.array([[0.0, 3.0], [65535.0, 12.0]]), "uint16"),
    ("photon counts", np.array([0.0, 1.0, 200.0]), "uint8"),
    ("signed integers", np.array([-3.0, 100.0]), "int8"),
    ("large integers float32 holds", np.array([0.0, 2.0 ** 40]), "float32"),
    ("large integers only float64 holds", np.array([0.0, 2.0 ** 40 + 1]), "float64"),
    ("beyond 2**53: not integers for sure", np.array([0.0, 2.0 ** 60]), "float32"),
    ("halves: float32 exact", np.array([0.5, 1.25, -3.0]), "float32"),
    ("a mean: float64 needed", np.array([1 / 3, 2.0]), "float64"),
    ("negative zero keeps its sign", np.array([-0.0, 1.0]), "float32"),
    ("nan and inf survive float32", np.array([np.nan, np.inf, 1.0]), "float32"),
    ("nan beside a mean stays float64", np.array([np.nan, 0.1]), "float64"),
    ("int64 of small values", np.array([1, 2, 300], dtype=np.int64), "uint16"),
    ("already narrow", np.array([1, 2], dtype=np.uint8), "uint8"),
    ("float32 ints are not widened", np.array([1.0, 2.0], dtype=np.float32), "uint8"),
    ("uint32 that needs it", np.array([0, 2 ** 32 - 1], dtype=np.uint32), "uint32"),
    ("empty", np.zeros((0, 3)), "float64"),
]


@pytest.mark.parametrize(("what", "values", "dtype"), CASES, ids=[c[0] for c in CASES])
def test_narrowest_is_exact(what: str, values: npt.NDArray[Any], dtype: str) -> None:
    stored = narrowest(values)
    assert stored.dtype == np.dtype(dtype), what
    back = stored.astype(values.dtype)
    assert np.array_equal(back, values, equal_nan=True)
    assert np.array_equal(np.signbit(back), np.signbit(values))


def test_a_large_image_is_stored_narrow_and_compressed_and_reads_back_bit_identical(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.poisson(5.0, (512, 256)).astype(np.float64) * 7  # a sum of counts
    assert image.size >= COMPRESS_MIN_ELEMENTS
    with h5py.File(tmp_path / "f.h5", "w") as f:
        dataset = write_field(f, "data", image, compact=True)
        assert dataset.dtype == np.uint8 and dataset.attrs[DTYPE_ATTR] == "float64"
        assert "32008" in dataset._filters  # bitshuffle
        assert dataset.chunks is not None
        f.flush()
        stored = dataset.id.get_storage_size()
        assert stored < image.nbytes / 8
    with h5py.File(tmp_path / "f.h5", "r") as f:
        back = read_array(f["data"])
    assert back.dtype == np.float64 and np.array_equal(back, image)


def test_small_arrays_stay_contiguous(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as f:
        dataset = write_field(f, "data", np.arange(10, dtype=np.float64), compact=True)
        assert dataset.chunks is None and dataset.dtype == np.uint8
