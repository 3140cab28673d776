"""Pixel validity shared by the generic reducers.

A pixel is excluded when the batch mask says so (DECTRIS pixel mask, True = excluded) or
when its value is at or above the saturation value (setting ``saturation_value``; default:
the dtype maximum for integer detectors, no limit for float detectors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from actors.reduce.base import ReducerSettings


class PixelSettings(ReducerSettings):
    """Settings every generic reducer shares."""

    saturation_value: float | None = Field(
        None, allow_inf_nan=False,
        description="pixels >= this value are excluded (default: dtype max for integers)")
    input: str | None = Field(
        None, description="read the converted frames of this earlier reducer of the chain "
        "(e.g. 'jungfrau': energies in keV) instead of the raw frames")


def accumulator_dtype(dtype: str) -> type[np.int64] | type[np.float64]:
    """int64 for integer detectors (exact), float64 for float detectors."""
    return np.int64 if np.dtype(dtype).kind in "ui" else np.float64


def saturation_limit(dtype: str, value: float | None) -> Any:
    """The value (in the detector dtype) from which pixels are excluded, or None."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        top = int(np.iinfo(dt).max)
        limit = top if value is None else math.ceil(value)
        if limit > top:
            return None
        return dt.type(max(limit, int(np.iinfo(dt).min)))
    return None if value is None else dt.type(value)


def cleaned_block(frames: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None,
                  limit: Any) -> npt.NDArray[Any]:
    """Frames ``(n, r, c)`` with pixels excluded by ``mask`` ``(r, c)`` or ``limit`` set to 0."""
    valid: npt.NDArray[np.bool_] | None = None
    if limit is not None:
        valid = frames < limit
    if mask is not None:
        valid = ~mask[None] if valid is None else valid & ~mask[None]
    if valid is None:
        return frames
    return np.where(valid, frames, frames.dtype.type(0))
