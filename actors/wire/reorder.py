"""Pixel reorder maps: raw readout order → image order.

A map ``m`` of shape ``(rows, cols)`` holds, for every image pixel, the index of that pixel
in the raw flat payload: ``image[row, col] = raw[m[row, col]]``.

MOENCH03 firmware before slsDetectorPackage 8.0 streams samples in ADC order
(reference: moench.md §1.4). Since 8.0 frames arrive in pixel order and need no map.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.intp]


@cache
def moench03_map() -> IndexArray:
    """The MOENCH03 (sls <= 7) map, generated from its formula.

    For sample ``i`` in [0, 5000) and ADC ``a`` in [0, 32), raw index ``r = 32 i + a`` goes to
    ``col = c_a + (i mod 25)`` with ``c_a = 300 - 100 (a // 8) + 25 (a mod 4)`` and
    ``row = 199 - i // 25`` if ``(a // 4)`` is even, else ``200 + i // 25``.
    """
    i = np.arange(5000)[:, None]
    a = np.arange(32)[None, :]
    col = 300 - 100 * (a // 8) + 25 * (a % 4) + i % 25
    row = np.where((a // 4) % 2 == 0, 199 - i // 25, 200 + i // 25)
    raw = 32 * i + a
    out = np.empty((400, 400), dtype=np.intp)
    out[row, col] = raw
    out.setflags(write=False)
    return out


def load_map(spec: str, shape: tuple[int, int]) -> IndexArray | None:
    """Resolve a configured reorder map: ``"none"``, ``"moench03"`` or a ``.npy`` file path."""
    if spec in ("", "none"):
        return None
    if spec == "moench03":
        m = moench03_map()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"reorder map {spec!r}: not 'none', 'moench03' or an existing .npy")
        m = np.load(path).astype(np.intp)
    validate_map(m, shape)
    return m


def validate_map(m: npt.NDArray[Any], shape: tuple[int, int]) -> None:
    """A map must have the frame's shape and be a permutation of the raw indices."""
    if m.shape != shape:
        raise ValueError(f"reorder map has shape {m.shape}, frames are {shape}")
    seen = np.zeros(m.size, dtype=bool)
    flat = m.ravel()
    if flat.min() < 0 or flat.max() >= m.size:
        raise ValueError("reorder map indexes outside the raw payload")
    seen[flat] = True
    if not seen.all():
        raise ValueError("reorder map is not a permutation")


def apply_map(raw: npt.NDArray[Any], m: IndexArray) -> npt.NDArray[Any]:
    """Reorder a frame ``(rows, cols)`` or a batch ``(n, rows, cols)`` from raw to image order."""
    flat = raw.reshape(*raw.shape[:-2], -1)
    return flat[..., m]


def invert_map(image: npt.NDArray[Any], m: IndexArray) -> npt.NDArray[Any]:
    """The raw payload a detector would send for ``image`` (used by the simulator)."""
    raw = np.empty(image.size, dtype=image.dtype)
    raw[m.ravel()] = image.ravel()
    return raw.reshape(image.shape)
