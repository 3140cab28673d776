"""Per-frame total intensity: series ``<name>`` and accumulated scalar ``<name>_sum``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer
from actors.reduce.generic.images import batch_sums
from actors.reduce.generic.pixels import PixelSettings, accumulator_dtype, saturation_limit
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry


class TotalSettings(PixelSettings):
    """Settings of the per-frame total intensity reducer."""


@dataclass(frozen=True, eq=False)
class TotalPartial:
    series: SeriesChunks
    total: int | float = 0


class TotalReducer(Reducer[TotalSettings, TotalPartial]):
    """Sum of the valid pixels of every frame (exact for integer detectors)."""

    Settings = TotalSettings
    type_name = "total"
    runtime_settings = frozenset({"saturation_value"})

    def __init__(self, settings: TotalSettings, geometry: Geometry, *,
                 name: str | None = None):
        super().__init__(settings, geometry, name=name)
        self._limit = saturation_limit(geometry.dtype, settings.saturation_value)
        self._acc = np.dtype(accumulator_dtype(geometry.dtype)).name

    def outputs_spec(self) -> list[OutputSpec]:
        return [OutputSpec(self.name, "series", self._acc, (), "counts",
                           "sum of the valid pixels of each frame"),
                OutputSpec(f"{self.name}_sum", "scalar", self._acc, (), "counts",
                           "sum over all frames")]

    def empty(self) -> TotalPartial:
        return TotalPartial(SeriesChunks(self._acc))

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> TotalPartial:
        _, per_frame = batch_sums(batch, self._limit, self._acc)
        total = per_frame.sum(dtype=self._acc).item()
        return TotalPartial(SeriesChunks.of(batch.frame_numbers, per_frame, self._acc), total)

    def merge(self, a: TotalPartial, b: TotalPartial) -> TotalPartial:
        return TotalPartial(a.series.concat(b.series), a.total + b.total)

    def outputs(self, partial: TotalPartial) -> dict[str, OutputValue]:
        return {self.name: partial.series.to_series(), f"{self.name}_sum": partial.total}
