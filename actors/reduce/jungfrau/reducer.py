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
from dataclasses import dataclass, replace
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
from actors.reduce.jungfrau.convert import Accumulated, Samples, convert
from actors.reduce.moench.partial import (
    MoenchPartial,
    advance_prefix,
    final_state,
    initial_partial,
    merge_partials,
)
from actors.reduce.moench.pedestal import (
    EpochSamples,
    PedestalState,
    StateChain,
    states_needed,
)
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
    track_pedestal: bool = Field(
        False, description="track the G0 pedestal during the run from the G0 pixels without "
        "a photon (epoch-synchronous, as the MOENCH pedestal: results do not depend on the "
        "number of workers), starting from the G0 dark run")
    track_threshold: float | None = Field(
        None, gt=0, allow_inf_nan=False, json_schema_extra={"unit": "keV"},
        description="a G0 pixel with |E| below this is a pedestal sample (default: half the "
        "photon energy, else 3 keV)")
    pedestal_epoch: int = Field(100, ge=1, description="frames per pedestal epoch E")
    pedestal_lag: int = Field(1, ge=0, description="epochs of lag L before a state is used")
    pedestal_frames: int = Field(1000, ge=1, description="MovingStat capacity N (frames)")


@dataclass(frozen=True, eq=False)
class JungfrauPartial:
    energy: F64 | None = None
    photons: I64 | None = None
    frames: int = 0
    series: tuple[SeriesChunks, ...] = tuple(SeriesChunks(dt) for _, dt, _, _ in SERIES)
    #: G0 pedestal tracking: the epochs' samples and, in a prefix, the pedestal state (the
    #: MOENCH pedestal's partial with no images: the same exact, associative folding)
    tracker: MoenchPartial | None = None


@dataclass(frozen=True, eq=False)
class Converted:
    """One batch's conversion: what it adds up, the frames when asked for, and the pedestal
    samples when tracking."""

    acc: Accumulated
    frames: npt.NDArray[np.float32] | None
    tracker: MoenchPartial | None = None


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
        #: tracking: the pedestals a segment converts with (the file's G1, G2; the tracked
        #: G0 written per segment), allocated once instead of stacked per segment
        self._tracked: F64 | None = None

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
                OutputSpec("pedestal_g0", "image", "float64", shape, "ADU",
                           "the G0 pedestal the conversion ended with (tracked, or the "
                           "dark run's)"),
                OutputSpec("bad_pixels", "scalar", "int64", (), "pixels",
                           "pixels the calibration excludes (mask, zero or non-finite gain "
                           "or pedestal)"),
                OutputSpec("converted_frames", "scalar", "int64", (), "frames",
                           "frames converted")]

    def empty(self) -> JungfrauPartial:
        return JungfrauPartial()

    # -- G0 pedestal tracking (the MOENCH pedestal's epoch hand-off) --------------------------
    @property
    def epoch_length(self) -> int | None:
        return self.settings.pedestal_epoch if self.settings.track_pedestal else None

    def _dark_state(self) -> PedestalState:
        """The G0 dark run as a MovingStat state (n = its samples, at most the capacity);
        pixels without one start empty and take the file's pedestal until sampled."""
        run = self.calibration.g0_run
        shape = self.geometry.shape
        if run is None:  # a pedestal without σ or counts: full weight, σ = 0
            n = np.full(shape, self.settings.pedestal_frames, np.int64)
            mean = self.calibration.pedestal[0]
            return PedestalState(readonly(n), readonly(mean * n), readonly(mean * mean * n))
        mean, std, count = run
        n = np.minimum(count, self.settings.pedestal_frames)
        return PedestalState(readonly(n), readonly(mean * n),
                             readonly((std * std + mean * mean) * n))

    def initial(self, carried: Any = None) -> JungfrauPartial:
        if not self.settings.track_pedestal:
            return self.empty()
        if carried is None:
            state = self._dark_state()
        elif isinstance(carried, PedestalState) and carried.shape == self.geometry.shape:
            state = carried
        else:
            raise ValueError(f"reducer {self.name!r}: initial state must be a PedestalState "
                             f"of shape {self.geometry.shape}")
        return JungfrauPartial(tracker=initial_partial(state, self.settings.pedestal_lag))

    def state_needed(self, first_frame: int, last_frame: int) -> tuple[int, ...]:
        if not self.settings.track_pedestal:
            return ()
        return states_needed(first_frame, last_frame, self.settings.pedestal_epoch,
                             self.settings.pedestal_lag)

    def advance(self, prefix: JungfrauPartial, next_frame: int) -> JungfrauPartial:
        if prefix.tracker is None:
            return prefix
        return replace(prefix, tracker=advance_prefix(
            prefix.tracker, next_frame, self.settings.pedestal_epoch,
            self.settings.pedestal_frames))

    def published_states(self, prefix: JungfrauPartial) -> dict[int, Any]:
        if prefix.tracker is None or prefix.tracker.prefix is None:
            return {}
        return dict(prefix.tracker.prefix.published())

    def carry_over(self, prefix: JungfrauPartial) -> PedestalState | None:
        if prefix.tracker is None or prefix.tracker.prefix is None:
            return None
        return final_state(prefix.tracker, self.settings.pedestal_frames)

    def _g0(self, state: PedestalState) -> F64:
        """The G0 pedestal of a tracked state (the file's where a pixel has no sample)."""
        return np.where(state.n > 0, state.mean(), self.calibration.pedestal[0])

    # -- the work -----------------------------------------------------------------------
    def converted(self, batch: Batch, state: Mapping[int, Any] | None = None) -> Converted:
        """This batch's conversion (computed once per batch, whoever asks first: the chain
        runs this reducer before the ones that read its frames)."""
        return batch.shared(("jungfrau", id(self), self.frames_wanted),
                            lambda: self._convert(batch, state))

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

    def _convert(self, batch: Batch, state: Mapping[int, Any] | None) -> Converted:
        cal = self.calibration
        s = self.settings
        acc = Accumulated.zeros(batch.n, self.geometry.shape)
        out = (np.empty((batch.n, *self.geometry.shape), np.float32)
               if self.frames_wanted else None)
        if not s.track_pedestal:
            convert(batch.frames, cal.pedestal, cal.gain, self._bad(batch), s.photon_energy,
                    acc, out, self.backend)
            return Converted(acc, None if out is None else readonly(out))
        # per epoch segment: the G0 pedestal of the state after epoch e - 1 - L, and the
        # segment's samples for epoch e (as the MOENCH pedestal)
        E, L, N = s.pedestal_epoch, s.pedestal_lag, s.pedestal_frames
        fn = np.asarray(batch.frame_numbers, np.int64)
        states = StateChain(dict(state or {}), int(fn[0]) // E, N)
        threshold = s.track_threshold or (0.5 * s.photon_energy if s.photon_energy else 3.0)
        epochs = fn // E
        cuts = np.flatnonzero(np.diff(epochs)) + 1
        bad = self._bad(batch)
        if self._tracked is None:  # G1 and G2 planes once; the G0 plane per segment
            self._tracked = cal.pedestal.copy()
        pedestal = self._tracked
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, batch.n], strict=True):
            e = int(epochs[lo])
            pedestal[0] = self._g0(states.after(e - 1 - L))
            smp = EpochSamples.zeros(self.geometry.shape)
            part = Accumulated(acc.energy, acc.photons, acc.energy_total[lo:hi],
                               acc.photon_total[lo:hi], acc.g1[lo:hi], acc.g2[lo:hi],
                               acc.invalid[lo:hi])
            convert(batch.frames[lo:hi], pedestal, cal.gain, bad, s.photon_energy, part,
                    None if out is None else out[lo:hi], self.backend,
                    Samples(threshold, smp.c, smp.s, smp.q))
            states.add(e, smp.frozen())
        tracker = MoenchPartial(pending=states.samples, first_frame=int(fn[0]),
                                last_frame=int(fn[-1]),
                                local_fold_epoch=states.local_fold_epoch)
        return Converted(acc, None if out is None else readonly(out), tracker)

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None
                ) -> JungfrauPartial:
        if batch.frames.shape[1:] != self.geometry.shape:
            raise ValueError(f"reducer {self.name!r}: frame shape {batch.frames.shape[1:]} "
                             f"!= geometry {self.geometry.shape}")
        if batch.n == 0:
            return self.empty()
        done = self.converted(batch, state)
        a = done.acc
        fn = batch.frame_numbers
        values = (a.energy_total, a.photon_total, a.g1, a.g2, a.invalid)
        return JungfrauPartial(
            readonly(a.energy), readonly(a.photons), batch.n,
            tuple(SeriesChunks.of(fn, v, dt) for v, (_, dt, _, _) in zip(values, SERIES,
                                                                         strict=True)),
            done.tracker)

    def merge(self, a: JungfrauPartial, b: JungfrauPartial) -> JungfrauPartial:
        tracker = self._merge_tracker(a.tracker, b.tracker)
        if not b.frames:
            return a if tracker is a.tracker else replace(a, tracker=tracker)
        if not a.frames:
            return b if tracker is b.tracker else replace(b, tracker=tracker)
        assert a.energy is not None and b.energy is not None
        assert a.photons is not None and b.photons is not None
        return JungfrauPartial(readonly(a.energy + b.energy), readonly(a.photons + b.photons),
                               a.frames + b.frames,
                               tuple(x.concat(y) for x, y in zip(a.series, b.series,
                                                                 strict=True)), tracker)

    def _merge_tracker(self, a: MoenchPartial | None, b: MoenchPartial | None
                       ) -> MoenchPartial | None:
        if a is None or b is None:
            return b if a is None else a
        return merge_partials(a, b, self.settings.pedestal_epoch, self.settings.pedestal_frames)

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
        tracker = partial.tracker
        if tracker is not None and tracker.prefix is not None:
            out["pedestal_g0"] = self._g0(final_state(tracker, self.settings.pedestal_frames))
        else:
            out["pedestal_g0"] = self.calibration.pedestal[0]
        out["bad_pixels"] = int(np.count_nonzero(self.calibration.bad))
        out["converted_frames"] = partial.frames
        return out
