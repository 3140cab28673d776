"""Immutable per-frame series for partials, cheap to merge over a long acquisition.

A :class:`SeriesChunks` is a tuple of (frame_numbers, values) chunks in frame order.
Concatenation appends chunks and then merges neighbouring chunks while the last is at
least as long as the one before (a binary counter), so an acquisition of *n* frames
merged batch by batch copies O(n log n) values in total and holds O(log n) chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import Series

Chunk = tuple[npt.NDArray[np.int64], npt.NDArray[Any]]


@dataclass(frozen=True)
class SeriesChunks:
    """Per-frame values in frame order; ``value_shape`` is the shape of one frame's value."""

    dtype: str
    value_shape: tuple[int, ...] = ()
    chunks: tuple[Chunk, ...] = ()

    @classmethod
    def of(cls, frame_numbers: npt.NDArray[np.int64], values: npt.NDArray[Any],
           dtype: str, value_shape: tuple[int, ...] = ()) -> SeriesChunks:
        fn = np.asarray(frame_numbers, dtype=np.int64)
        vals = np.asarray(values, dtype=dtype).reshape((fn.shape[0], *value_shape))
        if fn.shape[0] == 0:
            return cls(dtype, value_shape)
        return cls(dtype, value_shape, ((fn, vals),))

    def __len__(self) -> int:
        return sum(int(fn.shape[0]) for fn, _ in self.chunks)

    def concat(self, other: SeriesChunks) -> SeriesChunks:
        """``self`` followed by ``other`` (inputs unchanged)."""
        if not other.chunks:
            return self
        if not self.chunks:
            return other
        chunks = list(self.chunks)
        for chunk in other.chunks:
            chunks.append(chunk)
            while len(chunks) >= 2 and len(chunks[-1][0]) >= len(chunks[-2][0]):
                right = chunks.pop()
                left = chunks.pop()
                chunks.append((np.concatenate([left[0], right[0]]),
                               np.concatenate([left[1], right[1]])))
        return SeriesChunks(self.dtype, self.value_shape, tuple(chunks))

    def to_series(self) -> Series:
        if not self.chunks:
            return Series(np.zeros(0, np.int64),
                          np.zeros((0, *self.value_shape), dtype=self.dtype))
        if len(self.chunks) == 1:
            fn, vals = self.chunks[0]
            return Series(fn.copy(), vals.copy())
        return Series(np.concatenate([c[0] for c in self.chunks]),
                      np.concatenate([c[1] for c in self.chunks]))
