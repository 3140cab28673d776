"""Rectangular regions of interest: per-frame sums and totals.

Each ROI ``r`` is rows [row0, row1) × cols [col0, col1); outputs ``<name>_<r>`` (series of
per-frame sums of the valid pixels) and ``<name>_<r>_sum`` (scalar total).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer
from actors.reduce.generic.pixels import (
    PixelSettings,
    accumulator_dtype,
    cleaned_block,
    saturation_limit,
)
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry


class Roi(BaseModel):
    """One rectangle, half-open: rows [row0, row1) × cols [col0, col1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    row0: int = Field(ge=0)
    row1: int
    col0: int = Field(ge=0)
    col1: int

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.row1 <= self.row0 or self.col1 <= self.col0:
            raise ValueError(f"roi {self.name!r}: needs row0 < row1 and col0 < col1, got "
                             f"rows [{self.row0}, {self.row1}) cols [{self.col0}, {self.col1})")
        return self


class RoiSettings(PixelSettings):
    """Settings of the ROI reducer."""

    rois: list[Roi] = Field(min_length=1, description="named rectangles")

    @field_validator("rois")
    @classmethod
    def _unique(cls, rois: list[Roi]) -> list[Roi]:
        names = [r.name for r in rois]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"roi names must be unique, repeated: {dup}")
        return rois


@dataclass(frozen=True, eq=False)
class RoiPartial:
    series: tuple[SeriesChunks, ...]
    totals: tuple[int | float, ...]


class RoiReducer(Reducer[RoiSettings, RoiPartial]):
    """Per-frame sums over rectangular regions of interest."""

    Settings = RoiSettings
    type_name = "roi"
    runtime_settings = frozenset({"saturation_value"})

    @classmethod
    def min_frame(cls, settings: RoiSettings) -> tuple[int, int]:
        return (max((r.row1 for r in settings.rois), default=1),
                max((r.col1 for r in settings.rois), default=1))

    def __init__(self, settings: RoiSettings, geometry: Geometry, *, name: str | None = None):
        super().__init__(settings, geometry, name=name)
        for r in settings.rois:
            if r.row1 > geometry.rows or r.col1 > geometry.cols:
                raise ValueError(
                    f"setting 'rois': roi {r.name!r} rows [{r.row0}, {r.row1}) x cols "
                    f"[{r.col0}, {r.col1}) lies outside the {geometry.rows}x{geometry.cols} "
                    "frame")
        self._limit = saturation_limit(geometry.dtype, settings.saturation_value)
        self._acc = np.dtype(accumulator_dtype(geometry.dtype)).name

    def outputs_spec(self) -> list[OutputSpec]:
        specs = []
        for r in self.settings.rois:
            where = f"rows [{r.row0}, {r.row1}) x cols [{r.col0}, {r.col1})"
            specs.append(OutputSpec(f"{self.name}_{r.name}", "series", self._acc, (), "counts",
                                    f"per-frame sum over {where}"))
            specs.append(OutputSpec(f"{self.name}_{r.name}_sum", "scalar", self._acc, (),
                                    "counts", f"sum over all frames of {where}"))
        return specs

    def empty(self) -> RoiPartial:
        k = len(self.settings.rois)
        return RoiPartial(tuple(SeriesChunks(self._acc) for _ in range(k)), (0,) * k)

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> RoiPartial:
        series, totals = [], []
        for r in self.settings.rois:
            block = batch.frames[:, r.row0:r.row1, r.col0:r.col1]
            mask = None if batch.mask is None else batch.mask[r.row0:r.row1, r.col0:r.col1]
            clean = cleaned_block(block, mask, self._limit)
            sums = np.add.reduce(clean.reshape(batch.n, -1), axis=1, dtype=self._acc)
            series.append(SeriesChunks.of(batch.frame_numbers, sums, self._acc))
            totals.append(sums.sum(dtype=self._acc).item())
        return RoiPartial(tuple(series), tuple(totals))

    def merge(self, a: RoiPartial, b: RoiPartial) -> RoiPartial:
        return RoiPartial(tuple(x.concat(y) for x, y in zip(a.series, b.series)),
                          tuple(x + y for x, y in zip(a.totals, b.totals)))

    def outputs(self, partial: RoiPartial) -> dict[str, OutputValue]:
        out: dict[str, OutputValue] = {}
        for r, s, t in zip(self.settings.rois, partial.series, partial.totals):
            out[f"{self.name}_{r.name}"] = s.to_series()
            out[f"{self.name}_{r.name}_sum"] = t
        return out
