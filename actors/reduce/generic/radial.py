"""Radial profile around a centre, with a precomputed integer bin index per pixel.

Bins are ``bins`` equal-width rings from 0 to ``r_max`` (default: the distance from the
centre to the farthest frame corner) or explicit increasing ``edges``; a pixel belongs to
bin k when edges[k] ≤ r < edges[k+1] (the last edge is included), r being the distance of
the pixel centre (row, col indices) from ``center`` = (row, col).

Outputs: ``<name>`` the accumulated profile (mean of the valid pixels of each bin over all
frames), ``<name>_radius`` the bin centres, ``<name>_last`` the profile of the last frame
and, with ``per_frame``, ``<name>_frames``: a series of one profile per frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer, readonly
from actors.reduce.generic.kernels import ring_sums
from actors.reduce.generic.pixels import PixelSettings, saturation_limit
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry

F64 = npt.NDArray[np.float64]


class RadialSettings(PixelSettings):
    """Settings of the radial profile reducer."""

    center: tuple[float, float] = Field(description="(row, col) of the centre, pixels")
    bins: int | None = Field(None, gt=0, description="number of equal-width rings")
    r_max: float | None = Field(None, gt=0, allow_inf_nan=False,
                                description="outer radius of the rings (pixels)")
    edges: list[float] | None = Field(None, min_length=2,
                                      description="explicit increasing bin edges (pixels)")
    per_frame: bool = Field(False, description="also report one profile per frame")

    @model_validator(mode="after")
    def _one_binning(self) -> Self:
        if self.edges is not None:
            if self.bins is not None or self.r_max is not None:
                raise ValueError("give either 'edges' or 'bins'/'r_max', not both")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
                raise ValueError("'edges' must be strictly increasing")
        elif self.bins is None:
            raise ValueError("give 'bins' (number of rings > 0) or 'edges'")
        return self


def bin_index(geometry: Geometry, center: tuple[float, float],
              edges: F64) -> npt.NDArray[np.intp]:
    """Flat bin index of every pixel; ``len(edges) - 1`` (the dropped bin) outside."""
    nb = len(edges) - 1
    rr, cc = np.indices(geometry.shape, dtype=np.float64)
    r = np.hypot(rr - center[0], cc - center[1]).ravel()
    idx = np.searchsorted(edges, r, side="right") - 1
    idx[r == edges[-1]] = nb - 1
    idx[(idx < 0) | (idx >= nb)] = nb
    return idx.astype(np.intp)


@dataclass(frozen=True, eq=False)
class RadialPartial:
    sums: F64 | None = None
    counts: npt.NDArray[np.int64] | None = None
    last: tuple[int, F64] | None = None
    frames: SeriesChunks | None = None


class RadialReducer(Reducer[RadialSettings, RadialPartial]):
    """Azimuthally averaged intensity in rings around ``center``."""

    Settings = RadialSettings
    type_name = "radial"
    runtime_settings = frozenset({"saturation_value"})

    def __init__(self, settings: RadialSettings, geometry: Geometry, *,
                 name: str | None = None):
        super().__init__(settings, geometry, name=name)
        if settings.edges is not None:
            edges = np.asarray(settings.edges, dtype=np.float64)
        else:
            assert settings.bins is not None
            r_max = settings.r_max
            if r_max is None:
                corners = np.array([(0, 0), (0, geometry.cols - 1), (geometry.rows - 1, 0),
                                    (geometry.rows - 1, geometry.cols - 1)], dtype=np.float64)
                r_max = float(np.hypot(*(corners - np.asarray(settings.center)).T).max())
                r_max = max(r_max, 1.0)
            edges = np.linspace(0.0, r_max, settings.bins + 1)
        self.edges = edges
        self.nbins = len(edges) - 1
        self.index = bin_index(geometry, settings.center, edges)
        if not np.any(self.index < self.nbins):
            raise ValueError("setting 'center'/'edges': no pixel of the frame falls in a bin")
        self._limit = saturation_limit(geometry.dtype, settings.saturation_value)

    def outputs_spec(self) -> list[OutputSpec]:
        nb = (self.nbins,)
        specs = [OutputSpec(self.name, "spectrum", "float64", nb, "counts/pixel",
                            "mean of the valid pixels per ring over all frames"),
                 OutputSpec(f"{self.name}_radius", "spectrum", "float64", nb, "pixels",
                            "ring centres"),
                 OutputSpec(f"{self.name}_last", "spectrum", "float64", nb, "counts/pixel",
                            "profile of the last frame")]
        if self.settings.per_frame:
            specs.append(OutputSpec(f"{self.name}_frames", "series", "float64", nb,
                                    "counts/pixel", "profile of every frame"))
        return specs

    def empty(self) -> RadialPartial:
        return RadialPartial()

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> RadialPartial:
        nb = self.nbins
        sums, counts = ring_sums(batch.frames, batch.mask, self._limit, self.index, nb)
        profiles = _ratio(sums, counts)
        fn = batch.frame_numbers
        return RadialPartial(
            readonly(sums.sum(axis=0)), readonly(counts.sum(axis=0)),
            (int(fn[-1]), readonly(profiles[-1].copy())),
            SeriesChunks.of(fn, profiles, "float64", (nb,)) if self.settings.per_frame
            else None)

    def merge(self, a: RadialPartial, b: RadialPartial) -> RadialPartial:
        if a.sums is None:
            return b
        if b.sums is None:
            return a
        assert a.counts is not None and b.counts is not None
        frames = a.frames.concat(b.frames) if a.frames and b.frames else a.frames or b.frames
        return RadialPartial(readonly(a.sums + b.sums), readonly(a.counts + b.counts),
                             b.last, frames)

    def outputs(self, partial: RadialPartial) -> dict[str, OutputValue]:
        nb = self.nbins
        out: dict[str, OutputValue] = {
            self.name: (np.zeros(nb) if partial.sums is None or partial.counts is None
                        else _ratio(partial.sums, partial.counts)),
            f"{self.name}_radius": 0.5 * (self.edges[:-1] + self.edges[1:]),
            f"{self.name}_last": np.zeros(nb) if partial.last is None else partial.last[1].copy(),
        }
        if self.settings.per_frame:
            chunks = partial.frames or SeriesChunks("float64", (nb,))
            out[f"{self.name}_frames"] = chunks.to_series()
        return out


def _ratio(sums: F64, counts: npt.NDArray[np.int64]) -> F64:
    out = np.zeros(sums.shape)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out
