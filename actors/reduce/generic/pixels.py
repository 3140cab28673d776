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

from actors.reduce.base import Batch, ReducerSettings


class PixelSettings(ReducerSettings):
    """Settings every generic reducer shares."""

    saturation_value: float | None = Field(
        None, allow_inf_nan=False,
        description="pixels >= this value are excluded (default: dtype max for integers)")


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


def valid_pixels(batch: Batch, limit: Any) -> npt.NDArray[np.bool_] | None:
    """(n, rows, cols) or broadcastable (1, rows, cols) validity; None when all are valid."""
    valid: npt.NDArray[np.bool_] | None = None
    if limit is not None:
        valid = batch.frames < limit
    if batch.mask is not None:
        keep = ~batch.mask[None]
        valid = keep if valid is None else valid & keep
    return valid


def cleaned(batch: Batch, valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[Any]:
    """The frames with excluded pixels set to 0 (the frames themselves when none are)."""
    if valid is None:
        return batch.frames
    return np.where(valid, batch.frames, batch.frames.dtype.type(0))


def valid_counts(batch: Batch, valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
    """Per-pixel number of frames in which the pixel is valid."""
    if valid is None:
        return np.full(batch.frames.shape[1:], batch.n, np.int64)
    counts = np.add.reduce(valid, axis=0, dtype=np.int64)
    return np.broadcast_to(counts * (batch.n if valid.shape[0] == 1 else 1),
                           batch.frames.shape[1:]).copy()


def cleaned_block(frames: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None,
                  limit: Any) -> npt.NDArray[Any]:
    """Like :func:`cleaned` for a block of frames ``(n, r, c)`` and its ``mask`` ``(r, c)``."""
    valid: npt.NDArray[np.bool_] | None = None
    if limit is not None:
        valid = frames < limit
    if mask is not None:
        valid = ~mask[None] if valid is None else valid & ~mask[None]
    if valid is None:
        return frames
    return np.where(valid, frames, frames.dtype.type(0))
