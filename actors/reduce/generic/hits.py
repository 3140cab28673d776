"""Hit finding: a frame is a hit when more than ``min_pixels`` valid pixels exceed
``threshold``. Outputs ``<name>`` (per-frame flag), ``<name>_pixels`` (per-frame count of
pixels above threshold), ``<name>_count`` (number of hits) and ``<name>_frames``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer
from actors.reduce.generic.kernels import count_above
from actors.reduce.generic.pixels import PixelSettings, saturation_limit
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry


class HitsSettings(PixelSettings):
    """Settings of the hit finder."""

    threshold: float = Field(allow_inf_nan=False, description="pixel value to exceed")
    min_pixels: int = Field(ge=0, description="a hit has more than this many pixels above")


@dataclass(frozen=True, eq=False)
class HitsPartial:
    pixels: SeriesChunks
    flags: SeriesChunks
    hits: int = 0
    frames: int = 0


class HitsReducer(Reducer[HitsSettings, HitsPartial]):
    """Per-frame hit flag and count of bright pixels."""

    Settings = HitsSettings
    type_name = "hits"
    runtime_settings = frozenset({"threshold", "min_pixels", "saturation_value"})

    def __init__(self, settings: HitsSettings, geometry: Geometry, *, name: str | None = None):
        super().__init__(settings, geometry, name=name)
        self._limit = saturation_limit(geometry.dtype, settings.saturation_value)

    def outputs_spec(self) -> list[OutputSpec]:
        s = self.settings
        return [OutputSpec(self.name, "series", "bool", (), "",
                           f"more than {s.min_pixels} pixels above {s.threshold}"),
                OutputSpec(f"{self.name}_pixels", "series", "int64", (), "pixels",
                           f"valid pixels above {s.threshold}"),
                OutputSpec(f"{self.name}_count", "scalar", "int64", (), "frames", "hits"),
                OutputSpec(f"{self.name}_frames", "scalar", "int64", (), "frames",
                           "frames examined")]

    def empty(self) -> HitsPartial:
        return HitsPartial(SeriesChunks("int64"), SeriesChunks("bool"))

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> HitsPartial:
        pixels = count_above(batch.frames, batch.mask, self._limit, self.settings.threshold)
        flags = pixels > self.settings.min_pixels
        fn = batch.frame_numbers
        return HitsPartial(SeriesChunks.of(fn, pixels, "int64"),
                           SeriesChunks.of(fn, flags, "bool"), int(flags.sum()), batch.n)

    def merge(self, a: HitsPartial, b: HitsPartial) -> HitsPartial:
        return HitsPartial(a.pixels.concat(b.pixels), a.flags.concat(b.flags),
                           a.hits + b.hits, a.frames + b.frames)

    def outputs(self, partial: HitsPartial) -> dict[str, OutputValue]:
        return {self.name: partial.flags.to_series(),
                f"{self.name}_pixels": partial.pixels.to_series(),
                f"{self.name}_count": partial.hits, f"{self.name}_frames": partial.frames}
