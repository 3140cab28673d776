"""The narrowest dtype that holds an array exactly, and how large arrays are compressed.

Reduced images are accumulated in float64 (sums, means), yet most of them hold integers
(a sum of uint16 frames, a photon count) or values float32 represents exactly. Stored in
the narrowest exact dtype and compressed with bitshuffle+LZ4 (hdf5plugin, HDF5 filter 32008,
as DECTRIS writes EIGER data) a 4M sum image takes a fraction of its float64 size; the
original dtype is kept in the ``rayline_dtype`` attribute, so :func:`actors.output.reader.
read_array` gives back the values bit for bit.

Exact means every value, compared as the original dtype, is unchanged: integer-valued floats
become the smallest integer type holding their range (not when a value is -0.0, whose sign
an integer cannot keep), other float64 arrays become float32 when each value survives the
round trip (NaN and infinities included), and integer arrays the smallest integer type of
their range. Anything else is stored as it is.
"""

from __future__ import annotations

from typing import Any

import hdf5plugin
import numpy as np
import numpy.typing as npt

#: arrays with fewer elements are stored contiguous and uncompressed (a filter costs more)
COMPRESS_MIN_ELEMENTS = 4096

_INTEGER_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
                  np.int64)
#: integers a float64 holds exactly
_FLOAT64_EXACT = 2 ** 53


def narrowest(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` in the narrowest dtype that holds each of its values exactly (itself if
    none is narrower)."""
    if array.size == 0 or array.dtype.kind not in "fiu":
        return array
    if array.dtype.kind in "iu":
        return _as_integer(array, int(array.min()), int(array.max()))
    if not np.isfinite(array).all():
        return _as_float32(array)
    low, high = float(array.min()), float(array.max())
    if (max(abs(low), abs(high)) < _FLOAT64_EXACT and np.array_equal(np.trunc(array), array)
            and not np.signbit(array[array == 0]).any()):
        integer = _as_integer(array, int(low), int(high))
        if integer is not array:
            return integer
    return _as_float32(array)


def _as_integer(array: npt.NDArray[Any], low: int, high: int) -> npt.NDArray[Any]:
    for candidate in _INTEGER_TYPES:
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            if np.dtype(candidate).itemsize >= array.dtype.itemsize:
                return array
            return array.astype(candidate)
    return array


def _as_float32(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype.itemsize <= 4:
        return array
    with np.errstate(over="ignore"):
        single = array.astype(np.float32)
    if np.array_equal(single.astype(array.dtype), array, equal_nan=True):
        return single
    return array


def storage_options(array: npt.NDArray[Any]) -> dict[str, Any]:
    """``create_dataset`` options for ``array``: chunked bitshuffle+LZ4 when it is large
    enough to gain from it (numbers only), else none."""
    if array.size < COMPRESS_MIN_ELEMENTS or array.dtype.kind not in "fiub" or \
            array.ndim == 0:
        return {}
    return {"chunks": True, **hdf5plugin.Bitshuffle(cname="lz4")}
