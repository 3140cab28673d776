"""The ``jungfrau_pedestal`` reducer: one dark run's per-pixel pedestal for one gain.

A Jungfrau calibration takes three dark acquisitions: normal (the pixels stay in G0),
forced G1 and forced G2. In each, this reducer sums, per pixel, the 14-bit ADC values of
the frames whose gain bits are the ones it was told (``gain``: 0, 1 or 2; bits 00, 01, 11)
— count, Σ ADC and Σ ADC², exact in int64 — and gives their mean and σ. A pixel in another
gain is not a sample (counted per frame in ``wrong_gain_pixels``: a forced-gain run where
many pixels are not in the forced gain was not taken as intended).

It does nothing unless ``record`` is true: :meth:`PipelineBase.record_pedestal` (Python,
the Tango command, ``rayline pedestal``) sets ``gain`` and ``record`` for one acquisition
and writes the result to the pedestal file (:mod:`actors.reduce.jungfrau.pedestal_file`).

Outputs: ``pedestal_mean`` and ``pedestal_std`` (ADU), ``pedestal_count`` (samples per
pixel), the series ``wrong_gain_pixels`` and the scalars ``dark_frames`` and ``dark_gain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from actors.reduce.base import (
    Batch,
    OutputSpec,
    OutputValue,
    Reducer,
    ReducerConfigError,
    ReducerSettings,
    readonly,
)
from actors.reduce.jit import jit, numba_available
from actors.reduce.jungfrau.convert import ADC_MASK
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry

I64 = npt.NDArray[np.int64]
#: gain index → the gain bits a pixel in that gain carries
GAIN_BITS = (0, 1, 3)
#: up to this many samples per pixel n·Σx² and (Σx)² of 14-bit values fit in int64
EXACT_FRAMES = 2**17


class DarkSettings(ReducerSettings):
    """Settings of a Jungfrau dark run."""

    gain: int = Field(0, ge=0, le=2, description="the gain this dark run records: 0 "
                      "(normal), 1 (forced G1) or 2 (forced G2)")
    record: bool = Field(False, description="accumulate this acquisition's frames as a "
                         "dark run (set for one acquisition by record_pedestal)")
    file: str | None = Field(None, description="the pedestal file record_pedestal writes "
                             "(default: the jungfrau reducer's pedestal_file)")


@dataclass(frozen=True, eq=False)
class DarkPartial:
    count: I64 | None = None
    s: I64 | None = None
    q: I64 | None = None
    frames: int = 0
    wrong: SeriesChunks = SeriesChunks("int64")


def moments(count: I64, s: I64, q: I64) -> tuple[npt.NDArray[np.float64],
                                                 npt.NDArray[np.float64]]:
    """(mean, σ) per pixel from exact sums: σ² = (n·Σx² − (Σx)²) / n² (integers until the
    division, so no cancellation); 0 where there is no sample."""
    n = count.astype(np.float64)
    has = count > 0
    mean = np.divide(s, n, out=np.zeros(count.shape), where=has)
    if int(count.max(initial=0)) <= EXACT_FRAMES:
        var_num = (q * count - s * s).astype(np.float64)
    else:  # n·Σx² would overflow int64: float64 (relative error ~1e-16 of n·Σx²)
        var_num = q.astype(np.float64) * n - s.astype(np.float64) ** 2
    var = np.divide(var_num, n * n, out=np.zeros(count.shape), where=has)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _accumulate_py(frames: Any, bits: int, count: Any, s: Any, q: Any, wrong: Any) -> None:
    n, R, C = frames.shape
    for t in range(n):
        w = np.int64(0)
        for i in range(R):
            row = frames[t, i]
            cr = count[i]
            sr = s[i]
            qr = q[i]
            for c in range(C):
                v = np.int64(row[c])
                m = np.int64((v >> 14) == bits)
                x = (v & 0x3FFF) * m
                cr[c] += m
                sr[c] += x
                qr[c] += x * x
                w += 1 - m
        wrong[t] = w


_accumulate = jit(_accumulate_py)


def accumulate(frames: npt.NDArray[Any], gain: int, count: I64, s: I64, q: I64,
               wrong: I64) -> None:
    """Add the samples of ``frames`` whose gain is ``gain`` into (count, s, q); the number
    of pixels in another gain per frame into ``wrong``."""
    bits = GAIN_BITS[gain]
    if numba_available():
        _accumulate(frames, bits, count, s, q, wrong)
        return
    for t in range(frames.shape[0]):
        m = (frames[t] >> 14) == bits
        x = np.where(m, frames[t] & ADC_MASK, 0).astype(np.int64)
        count += m
        s += x
        q += x * x
        wrong[t] = m.size - int(np.count_nonzero(m))


class DarkReducer(Reducer[DarkSettings, DarkPartial]):
    """One dark run's pedestal for one gain (see the module docstring)."""

    Settings = DarkSettings
    type_name = "jungfrau_pedestal"
    runtime_settings = frozenset({"gain", "record", "file"})

    def __init__(self, settings: DarkSettings, geometry: Geometry, *,
                 name: str | None = None):
        super().__init__(settings, geometry, name=name)
        if np.dtype(geometry.dtype) != np.uint16:
            raise ReducerConfigError(f"reducer {self.name!r}: Jungfrau frames are uint16, "
                                     f"the stream's are {geometry.dtype}")

    def outputs_spec(self) -> list[OutputSpec]:
        shape = self.geometry.shape
        return [OutputSpec("pedestal_mean", "image", "float64", shape, "ADU",
                           "dark run: mean ADC of the frames in the recorded gain"),
                OutputSpec("pedestal_std", "image", "float64", shape, "ADU",
                           "dark run: σ of the ADC of the frames in the recorded gain"),
                OutputSpec("pedestal_count", "image", "int64", shape, "frames",
                           "dark run: frames in the recorded gain, per pixel"),
                OutputSpec("wrong_gain_pixels", "series", "int64", (), "pixels",
                           "dark run: pixels not in the recorded gain, per frame"),
                OutputSpec("dark_frames", "scalar", "int64", (), "frames",
                           "frames of the dark run"),
                OutputSpec("dark_gain", "scalar", "int64", (), "",
                           "the gain the dark run records (0, 1, 2)")]

    def empty(self) -> DarkPartial:
        return DarkPartial()

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> DarkPartial:
        if not self.settings.record or batch.n == 0:
            return self.empty()
        shape = self.geometry.shape
        if batch.frames.shape[1:] != shape:
            raise ValueError(f"reducer {self.name!r}: frame shape {batch.frames.shape[1:]} "
                             f"!= geometry {shape}")
        count, s, q = (np.zeros(shape, np.int64) for _ in range(3))
        wrong = np.zeros(batch.n, np.int64)
        accumulate(batch.frames, self.settings.gain, count, s, q, wrong)
        return DarkPartial(readonly(count), readonly(s), readonly(q), batch.n,
                           SeriesChunks.of(batch.frame_numbers, wrong, "int64"))

    def merge(self, a: DarkPartial, b: DarkPartial) -> DarkPartial:
        if not b.frames:
            return a
        if not a.frames:
            return b
        assert a.count is not None and b.count is not None and a.s is not None
        assert b.s is not None and a.q is not None and b.q is not None
        return DarkPartial(readonly(a.count + b.count), readonly(a.s + b.s),
                           readonly(a.q + b.q), a.frames + b.frames, a.wrong.concat(b.wrong))

    def outputs(self, partial: DarkPartial) -> dict[str, OutputValue]:
        shape = self.geometry.shape
        if partial.count is None or partial.s is None or partial.q is None:
            mean, std, count = np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64)
        else:
            mean, std = moments(partial.count, partial.s, partial.q)
            count = partial.count
        return {"pedestal_mean": mean, "pedestal_std": std, "pedestal_count": count,
                "wrong_gain_pixels": partial.wrong.to_series(),
                "dark_frames": partial.frames, "dark_gain": self.settings.gain}
