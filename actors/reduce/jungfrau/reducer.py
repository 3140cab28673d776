"""The ``jungfrau`` reducer: raw gain-switching frames → energy and photons, live.

Config::

    reducers:
      - type: jungfrau
        gain_file: [/calib/gainMaps_M420.bin, /calib/gainMaps_M421.bin]   # or .npy / HDF5
        pedestal_file: /calib/pedestal.h5     # written by the dark runs (rayline pedestal)
        mask_file: /calib/bad_pixels.npy      # optional
        photon_energy: 12.4                   # keV, optional: enables the photon image
      - {type: sum, input: jungfrau}          # later reducers may read the converted frames

Outputs: ``energy_img`` (Σ E per pixel, keV), ``photon_img`` (Σ photons per pixel; zeros
without ``photon_energy``), per-frame series ``energy_total`` (keV), ``photon_total``,
``g1_pixels``, ``g2_pixels`` (valid pixels that left G0: saturation monitoring) and
``invalid_pixels`` (gain bits 10), scalars ``bad_pixels`` (excluded by the calibration:
mask, zero or non-finite gains) and ``converted_frames``. The conversion rule is in
:mod:`actors.reduce.jungfrau.convert`; the files in
:mod:`actors.reduce.jungfrau.calibration`.

**Converted frames for later reducers.** A reducer whose settings say ``input: <name of a
jungfrau reducer earlier in the chain>`` processes that reducer's converted frames (float32
keV, 0 at excluded pixels, which its batch mask also marks) instead of the raw ones; one
conversion per batch serves them all (:meth:`JungfrauReducer.converted`). Without ``input``
a reducer reads the raw frames, as before.
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
from actors.reduce.jit import Backend
from actors.reduce.jungfrau.calibration import (
    Calibration,
    gain_shape,
    load_calibration,
)
from actors.reduce.jungfrau.convert import Accumulated, convert
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SERIES = (("energy_total", "float64", "keV", "Σ E over the valid pixels of each frame"),
          ("photon_total", "int64", "photons", "photons in each frame"),
          ("g1_pixels", "int64", "pixels", "valid pixels in gain G1 in each frame"),
          ("g2_pixels", "int64", "pixels", "valid pixels in gain G2 in each frame"),
          ("invalid_pixels", "int64", "pixels",
           "pixels with invalid gain bits (10) in each frame"))


class JungfrauSettings(ReducerSettings):
    """Settings of the Jungfrau conversion."""

    gain_file: str | list[str] = Field(
        description="gain maps, ADU/keV: one .bin per module (module grid order, row by "
        "row), or one .npy / HDF5 ('gain' dataset) of shape (3, rows, cols)")
    pedestal_file: str = Field(
        description="pedestals, ADU: the HDF5 file the dark runs write, or .npy "
        "(3, rows, cols)")
    mask_file: str | None = Field(
        None, description="bad pixels (nonzero = excluded): .npy or HDF5 'mask' dataset")
    photon_energy: float | None = Field(
        None, gt=0, allow_inf_nan=False, json_schema_extra={"unit": "keV"},
        description="photon energy (keV): photons = floor(E / photon_energy + 0.5) for "
        "E > 0; unset: no photon image")


@dataclass(frozen=True, eq=False)
class JungfrauPartial:
    energy: F64 | None = None
    photons: I64 | None = None
    frames: int = 0
    series: tuple[SeriesChunks, ...] = tuple(SeriesChunks(dt) for _, dt, _, _ in SERIES)


@dataclass(frozen=True, eq=False)
class Converted:
    """One batch's conversion: what it adds up, and the frames when asked for."""

    acc: Accumulated
    frames: npt.NDArray[np.float32] | None


class JungfrauReducer(Reducer[JungfrauSettings, JungfrauPartial]):
    """Gain-switching conversion to energy and photons (see the module docstring)."""

    Settings = JungfrauSettings
    type_name = "jungfrau"
    runtime_settings = frozenset({"photon_energy", "pedestal_file"})

    def __init__(self, settings: JungfrauSettings, geometry: Geometry, *,
                 name: str | None = None, backend: Backend = "auto"):
        super().__init__(settings, geometry, name=name)
        if np.dtype(geometry.dtype) != np.uint16:
            raise ReducerConfigError(f"reducer {self.name!r}: Jungfrau frames are uint16, "
                                     f"the stream's are {geometry.dtype}")
        self.backend = backend
        self.calibration: Calibration = load_calibration(
            settings.gain_file, settings.pedestal_file, settings.mask_file, geometry.shape)
        self.frames_wanted = False  # set by the chain when a later reducer reads them

    @classmethod
    def frame_for(cls, settings: JungfrauSettings) -> tuple[int, int] | None:
        """The frame the gain maps are for (declarations made before the stream's geometry
        is known then fit the calibration)."""
        return gain_shape(settings.gain_file)

    @property
    def output_geometry(self) -> Geometry:
        """The converted frames' geometry (float32 keV)."""
        return Geometry(self.geometry.rows, self.geometry.cols, "float32")

    def outputs_spec(self) -> list[OutputSpec]:
        shape = self.geometry.shape
        return [OutputSpec("energy_img", "image", "float64", shape, "keV",
                           "energy deposited per pixel, summed over the frames"),
                OutputSpec("photon_img", "image", "int64", shape, "photons",
                           "photons per pixel, summed over the frames"),
                *(OutputSpec(name, "series", dtype, (), unit, doc)
                  for name, dtype, unit, doc in SERIES),
                OutputSpec("bad_pixels", "scalar", "int64", (), "pixels",
                           "pixels the calibration excludes (mask, zero or non-finite gain "
                           "or pedestal)"),
                OutputSpec("converted_frames", "scalar", "int64", (), "frames",
                           "frames converted")]

    def empty(self) -> JungfrauPartial:
        return JungfrauPartial()

    # -- the work -----------------------------------------------------------------------
    def converted(self, batch: Batch) -> Converted:
        """This batch's conversion (computed once per batch, whoever asks first)."""
        return batch.shared(("jungfrau", id(self), self.frames_wanted),
                            lambda: self._convert(batch))

    def converted_batch(self, batch: Batch) -> Batch:
        """The batch as later reducers with ``input: <this reducer>`` see it: float32 keV,
        0 at excluded pixels, which the batch mask marks."""
        def build() -> Batch:
            done = self.converted(batch)
            assert done.frames is not None, "the chain did not ask for converted frames"
            return Batch(batch.index, done.frames, batch.frame_numbers, self._bad(batch))
        return batch.shared(("jungfrau-batch", id(self)), build)

    def _bad(self, batch: Batch) -> npt.NDArray[np.bool_]:
        bad = self.calibration.bad
        return bad if batch.mask is None else readonly(bad | batch.mask)

    def _convert(self, batch: Batch) -> Converted:
        cal = self.calibration
        acc = Accumulated.zeros(batch.n, self.geometry.shape)
        out = (np.empty((batch.n, *self.geometry.shape), np.float32)
               if self.frames_wanted else None)
        convert(batch.frames, cal.pedestal, cal.gain, self._bad(batch),
                self.settings.photon_energy, acc, out, self.backend)
        return Converted(acc, None if out is None else readonly(out))

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None
                ) -> JungfrauPartial:
        if batch.frames.shape[1:] != self.geometry.shape:
            raise ValueError(f"reducer {self.name!r}: frame shape {batch.frames.shape[1:]} "
                             f"!= geometry {self.geometry.shape}")
        if batch.n == 0:
            return self.empty()
        a = self.converted(batch).acc
        fn = batch.frame_numbers
        values = (a.energy_total, a.photon_total, a.g1, a.g2, a.invalid)
        return JungfrauPartial(
            readonly(a.energy), readonly(a.photons), batch.n,
            tuple(SeriesChunks.of(fn, v, dt) for v, (_, dt, _, _) in zip(values, SERIES,
                                                                         strict=True)))

    def merge(self, a: JungfrauPartial, b: JungfrauPartial) -> JungfrauPartial:
        if not b.frames:
            return a
        if not a.frames:
            return b
        assert a.energy is not None and b.energy is not None
        assert a.photons is not None and b.photons is not None
        return JungfrauPartial(readonly(a.energy + b.energy), readonly(a.photons + b.photons),
                               a.frames + b.frames,
                               tuple(x.concat(y) for x, y in zip(a.series, b.series,
                                                                 strict=True)))

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        missing = self.calibration.missing
        if not missing:
            return []
        return [f"{self.name}: the pedestal file {self.settings.pedestal_file!r} has no dark "
                f"run for {', '.join(m.upper() for m in missing)}: the energies of pixels in "
                "those gains are not to be trusted (record them: pipe.record_pedestal(gain), "
                "the record_pedestal command or rayline pedestal)"]

    def outputs(self, partial: JungfrauPartial) -> dict[str, OutputValue]:
        shape = self.geometry.shape
        out: dict[str, OutputValue] = {
            "energy_img": np.zeros(shape) if partial.energy is None else partial.energy,
            "photon_img": (np.zeros(shape, np.int64) if partial.photons is None
                           else partial.photons)}
        for chunks, (name, _, _, _) in zip(partial.series, SERIES, strict=True):
            out[name] = chunks.to_series()
        out["bad_pixels"] = int(np.count_nonzero(self.calibration.bad))
        out["converted_frames"] = partial.frames
        return out
