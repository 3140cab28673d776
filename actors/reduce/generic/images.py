"""Accumulated images: ``sum`` (exact), ``mean`` (per-pixel over valid frames) and ``max``.

Outputs (``<name>`` is the reducer instance name): ``<name>`` the image and
``<name>_frames`` the number of frames. Excluded pixels (mask, saturation) never
contribute; a pixel that was never valid reads 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer, readonly
from actors.reduce.generic.kernels import accumulate, masked_max, masked_sums, sums_and_totals
from actors.reduce.generic.pixels import PixelSettings, accumulator_dtype, saturation_limit
from actors.wire.model import Geometry


class ImageSettings(PixelSettings):
    """Settings of the sum / mean / max image reducers."""


@dataclass(frozen=True, eq=False)
class ImagePartial:
    """``image`` (None until the first frame), per-pixel valid ``count``, ``frames``.

    ``owned``: the arrays were allocated by :meth:`Reducer.merge_into` for an accumulator
    nobody else sees, so the next ``merge_into`` may add into them in place.
    """

    image: npt.NDArray[Any] | None = None
    count: npt.NDArray[np.int64] | None = None
    frames: int = 0
    owned: bool = False


def _add(x: npt.NDArray[Any] | None, y: npt.NDArray[Any] | None,
         dtype: Any = None) -> npt.NDArray[Any] | None:
    if x is None:
        return y
    if y is None:
        return x
    return readonly(np.add(x, y, dtype=dtype))


def _merge_into(acc: ImagePartial, b: ImagePartial, op: Any,
                dtype: np.dtype[Any] | None) -> ImagePartial | None:
    """``op`` of both images (counts add), into ``acc``'s arrays when it owns them, else
    into new arrays the result owns; None when either side is empty (plain merge)."""
    if acc.image is None or b.image is None or (acc.count is None) != (b.count is None):
        return None
    frames = acc.frames + b.frames
    if acc.owned:
        if op is np.add:
            accumulate(acc.image, b.image)
        else:
            op(acc.image, b.image, out=acc.image)
        if acc.count is not None and b.count is not None:
            np.add(acc.count, b.count, out=acc.count)
        return ImagePartial(acc.image, acc.count, frames, True)
    image = op(acc.image, b.image, dtype=dtype)
    count = None if acc.count is None or b.count is None else np.add(acc.count, b.count)
    return ImagePartial(image, count, frames, True)


def batch_sums(batch: Batch, limit: Any, acc: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(sum image, per-frame totals) of the batch's valid pixels: one pass over the pixels
    per batch however many reducers (``sum``, ``total``) ask for it."""
    return batch.shared(("sums_and_totals", limit, np.dtype(acc).name),
                        lambda: sums_and_totals(batch.frames, batch.mask, limit, acc))


class _ImageReducer(Reducer[ImageSettings, ImagePartial]):
    Settings = ImageSettings
    runtime_settings = frozenset({"saturation_value"})
    unit = "counts"
    description = ""

    def __init__(self, settings: ImageSettings, geometry: Geometry, *,
                 name: str | None = None):
        super().__init__(settings, geometry, name=name)
        self._limit = saturation_limit(geometry.dtype, settings.saturation_value)
        self._acc = accumulator_dtype(geometry.dtype)

    def outputs_spec(self) -> list[OutputSpec]:
        return [OutputSpec(self.name, "image", self._image_dtype(), self.geometry.shape,
                           self.unit, self.description),
                OutputSpec(f"{self.name}_frames", "scalar", "int64", (), "",
                           "frames accumulated")]

    def _image_dtype(self) -> str:
        return np.dtype(self._acc).name

    def empty(self) -> ImagePartial:
        return ImagePartial()

    def merge(self, a: ImagePartial, b: ImagePartial) -> ImagePartial:
        # a batch's image may be narrower than the accumulator (uint32 for uint16 frames)
        return ImagePartial(_add(a.image, b.image, self._acc), _add(a.count, b.count),
                            a.frames + b.frames)

    def merge_into(self, acc: ImagePartial, b: ImagePartial) -> ImagePartial:
        # the results stage adds every batch's image into one accumulator instead of
        # allocating a new 8-byte-per-pixel image per batch
        return _merge_into(acc, b, np.add, np.dtype(self._acc)) or self.merge(acc, b)

    def _check(self, batch: Batch) -> None:
        if batch.frames.shape[1:] != self.geometry.shape:
            raise ValueError(f"reducer {self.name!r}: frame shape {batch.frames.shape[1:]} "
                             f"!= geometry {self.geometry.shape}")

    def _image(self, partial: ImagePartial) -> npt.NDArray[Any]:
        if partial.image is None:
            return np.zeros(self.geometry.shape, self._image_dtype())
        return np.array(partial.image, dtype=self._image_dtype())

    def outputs(self, partial: ImagePartial) -> dict[str, OutputValue]:
        return {self.name: self._image(partial), f"{self.name}_frames": partial.frames}


class SumReducer(_ImageReducer):
    """Sum image, exact: int64 for integer detectors, float64 for float detectors."""

    type_name = "sum"
    description = "sum over frames of the valid pixels"

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> ImagePartial:
        self._check(batch)
        image, _ = batch_sums(batch, self._limit, self._acc)
        return ImagePartial(readonly(image), None, batch.n)


class MeanReducer(_ImageReducer):
    """Mean image: per pixel, the sum over the frames in which it is valid / their count."""

    type_name = "mean"
    description = "mean over the frames in which the pixel is valid"

    def _image_dtype(self) -> str:
        return "float64"

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> ImagePartial:
        self._check(batch)
        image, count, _ = masked_sums(batch.frames, batch.mask, self._limit, self._acc)
        return ImagePartial(readonly(image), readonly(count), batch.n)

    def _image(self, partial: ImagePartial) -> npt.NDArray[Any]:
        out = np.zeros(self.geometry.shape)
        if partial.image is None or partial.count is None:
            return out
        np.divide(partial.image, partial.count, out=out, where=partial.count > 0)
        return out


class MaxReducer(_ImageReducer):
    """Maximum image over the valid pixels of all frames (detector dtype)."""

    type_name = "max"
    description = "maximum over frames of the valid pixels"

    def _image_dtype(self) -> str:
        return self.geometry.dtype

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> ImagePartial:
        self._check(batch)
        image, count = masked_max(batch.frames, batch.mask, self._limit)
        return ImagePartial(readonly(image), count, batch.n)

    def merge(self, a: ImagePartial, b: ImagePartial) -> ImagePartial:
        if a.image is None:
            return ImagePartial(b.image, b.count, a.frames + b.frames)
        if b.image is None:
            return ImagePartial(a.image, a.count, a.frames + b.frames)
        # count None: every pixel was valid in some frame
        count = None if a.count is None or b.count is None else _add(a.count, b.count)
        return ImagePartial(readonly(np.maximum(a.image, b.image)), count,
                            a.frames + b.frames)

    def merge_into(self, acc: ImagePartial, b: ImagePartial) -> ImagePartial:
        return _merge_into(acc, b, np.maximum, None) or self.merge(acc, b)

    def _image(self, partial: ImagePartial) -> npt.NDArray[Any]:
        img = super()._image(partial)
        if partial.count is not None:
            img[partial.count == 0] = 0
        return img
