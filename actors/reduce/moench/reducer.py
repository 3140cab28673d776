"""The MOENCH reducer: pedestal tracking, analog / threshold / counting images, pump-probe.

Semantics (design.md §Pedestal semantics, moench.md §2.7): frame *t* has type
``pattern[t mod len(pattern)]`` and lies in epoch ``t // E``. A frame of epoch *e* is
classified (3×3 SLS rule, :mod:`.classify`) with the pedestal state published after epoch
``e − 1 − L`` (the initial state when negative). Pedestal samples are all pixels of
pedestal frames and class-0 pixels of the others (when ``update_pedestal_img``), raw x;
each epoch's samples are folded into the MovingStat (:mod:`.pedestal`) once the epoch is
complete. Non-pedestal frames add x − μ to the analog image, [x − μ > threshold] to the
threshold image and [class = 2] to the counting image of their set (unpumped/pumped).

State hand-off between coordinator and workers (keys are epoch numbers; key k is "the
pedestal state after epoch k", −1 is the initial state of the acquisition):

* ingest: cut batches with :class:`actors.reduce.cutter.BatchCutter` (``epoch_length``).
* coordinator: ``prefix = r.initial(carried)``; for batch *b* with frames f..l:
  ``keys = r.state_needed(f, l)``; before dispatching, ``prefix = r.advance(prefix, f)``
  once every earlier batch is merged (or earlier, when the keys are already published);
  pass ``{k: r.published_states(prefix)[k] for k in keys}`` to the worker. On each
  partial, in batch order: ``prefix = r.merge(prefix, partial)``. The keys a batch needs
  are always published once all earlier batches are merged and ``advance`` was called
  with its first frame, so the protocol never deadlocks; with L ≥ 1 they are usually
  published long before. ``published_states`` returns the L + 1 most recent states.
* worker: ``partial = r.process(batch, states)``; states after epochs inside the batch
  are computed locally from its own samples (possible thanks to the cut rule).
* end: ``r.outputs(prefix)``; ``carried = r.carry_over(prefix)`` (a :class:`PedestalState`)
  for the next acquisition, or None after ``reset_pedestal``.

``merge`` never mutates its inputs. ``batch.mask`` is ignored (sls streams carry none).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer, readonly
from actors.reduce.jit import Backend
from actors.reduce.moench.classify import Accumulators, Flags, count_dtype, process_segment
from actors.reduce.moench.partial import (
    MoenchPartial,
    advance_prefix,
    final_state,
    initial_partial,
    merge_partials,
)
from actors.reduce.moench.pattern import frame_types
from actors.reduce.moench.pedestal import (
    EpochSamples,
    PedestalState,
    StateChain,
    states_needed,
)
from actors.reduce.moench.settings import MoenchSettings
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)

IMAGES = ("analog_img", "analog_img_pumped", "threshold_img", "threshold_img_pumped",
          "counting_img", "counting_img_pumped")


class MoenchReducer(Reducer[MoenchSettings, MoenchPartial]):
    """Drop-in for the seed server's processing, with deterministic parallel pedestal."""

    Settings = MoenchSettings
    type_name = "moench"
    runtime_settings = frozenset({
        "threshold", "counting_sigma", "processing_pattern", "split_pump", "normalize",
        "process_pedestal_img", "update_pedestal_img", "process_analog_img",
        "process_threshold_img", "process_counting_img"})

    def __init__(self, settings: MoenchSettings, geometry: Geometry, *,
                 name: str | None = None, backend: Backend = "auto"):
        super().__init__(settings, geometry, name=name)
        self.backend: Backend = backend
        self._pattern = settings.pattern
        self._E = settings.pedestal_epoch
        self._L = settings.pedestal_lag
        self._N = settings.pedestal_frames

    # -- declarations -------------------------------------------------------------------
    def outputs_spec(self) -> list[OutputSpec]:
        img = self.geometry.shape
        norm = "per frame when normalize is set"
        specs = [
            OutputSpec("analog_img", "image", "float64", img, "ADU",
                       f"sum of x - pedestal over unpumped frames ({norm})"),
            OutputSpec("analog_img_pumped", "image", "float64", img, "ADU",
                       f"sum of x - pedestal over pumped frames ({norm})"),
            OutputSpec("threshold_img", "image", "float64", img, "",
                       f"unpumped frames with x - pedestal > threshold ({norm})"),
            OutputSpec("threshold_img_pumped", "image", "float64", img, "",
                       f"pumped frames with x - pedestal > threshold ({norm})"),
            OutputSpec("counting_img", "image", "float64", img, "photons",
                       f"photon maxima in unpumped frames ({norm})"),
            OutputSpec("counting_img_pumped", "image", "float64", img, "photons",
                       f"photon maxima in pumped frames ({norm})"),
            OutputSpec("pedestal", "image", "float64", img, "ADU", "pedestal mean"),
            OutputSpec("pedestal_std", "image", "float64", img, "ADU", "pedestal sigma"),
            OutputSpec("pumped_frames", "scalar", "int64", (), "", "pumped frames"),
            OutputSpec("unpumped_frames", "scalar", "int64", (), "", "unpumped frames"),
            OutputSpec("pedestal_frames", "scalar", "int64", (), "", "pedestal frames"),
            OutputSpec("pedestal_samples", "scalar", "int64", (), "",
                       "frames in the pedestal (median over pixels, dark runs carried over "
                       "included)"),
            OutputSpec("pedestal_ready", "scalar", "bool", (), "",
                       "the pedestal has pedestal_min_frames frames"),
            OutputSpec("frame_photons", "series", "int64", (), "photons",
                       "photon maxima per frame (0 for pedestal frames)"),
            OutputSpec("frame_type", "series", "int8", (), "",
                       "0 pedestal, 1 unpumped, 2 pumped"),
        ]
        return specs

    @property
    def epoch_length(self) -> int:
        return self._E

    # -- partials -----------------------------------------------------------------------
    def empty(self) -> MoenchPartial:
        return MoenchPartial()

    def initial(self, carried: Any = None) -> MoenchPartial:
        if carried is None:
            state = PedestalState.empty(self.geometry.shape)
        elif isinstance(carried, PedestalState) and carried.shape == self.geometry.shape:
            state = carried
        else:
            raise ValueError(f"reducer {self.name!r}: initial state must be a PedestalState "
                             f"of shape {self.geometry.shape}")
        return initial_partial(state, self._L)

    def merge(self, a: MoenchPartial, b: MoenchPartial) -> MoenchPartial:
        return merge_partials(a, b, self._E, self._N)

    # -- state hand-off -----------------------------------------------------------------
    def state_needed(self, first_frame: int, last_frame: int) -> tuple[int, ...]:
        return states_needed(first_frame, last_frame, self._E, self._L)

    def advance(self, prefix: MoenchPartial, next_frame: int) -> MoenchPartial:
        return advance_prefix(prefix, next_frame, self._E, self._N)

    def published_states(self, prefix: MoenchPartial) -> dict[int, Any]:
        if prefix.prefix is None:
            raise ValueError("published_states needs a prefix partial (from initial())")
        return dict(prefix.prefix.published())

    def carry_over(self, prefix: MoenchPartial) -> PedestalState:
        return final_state(prefix, self._N)

    # -- the work -----------------------------------------------------------------------
    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> MoenchPartial:
        if batch.frames.shape[1:] != self.geometry.shape:
            raise ValueError(f"reducer {self.name!r}: frame shape {batch.frames.shape[1:]} "
                             f"!= geometry {self.geometry.shape}")
        if batch.n == 0:
            return self.empty()
        s = self.settings
        fn = np.asarray(batch.frame_numbers, dtype=np.int64)
        types = frame_types(fn, self._pattern, split_pump=s.split_pump,
                            process_pedestal_img=s.process_pedestal_img)
        states = StateChain(dict(state or {}), fn[0] // self._E, self._N)
        counts_dtype = count_dtype(batch.n)
        acc = Accumulators.zeros(self.geometry.shape, counts_dtype)
        photons = np.zeros(batch.n, np.int64)
        flags = Flags(s.threshold, s.process_analog_img, s.process_threshold_img,
                      s.process_counting_img, s.update_pedestal_img)
        epochs = fn // self._E
        cuts = np.flatnonzero(np.diff(epochs)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, batch.n]):
            e = int(epochs[lo])
            ped = states.after(e - 1 - self._L)
            mu, sd = ped.moments()
            thr = self.settings.counting_sigma * sd
            smp = EpochSamples.zeros(self.geometry.shape, counts_dtype)
            process_segment(batch.frames[lo:hi], types[lo:hi], mu, thr, flags, acc,
                            (smp.c, smp.s, smp.q), photons[lo:hi], self.backend)
            states.add(e, smp.frozen())
        counts = np.bincount(types, minlength=3)
        return MoenchPartial(
            analog=readonly(acc.analog) if s.process_analog_img else None,
            threshold=readonly(acc.threshold) if s.process_threshold_img else None,
            counting=readonly(acc.counting) if s.process_counting_img else None,
            frame_counts=(int(counts[0]), int(counts[1]), int(counts[2])),
            pending=states.samples,
            first_frame=int(fn[0]), last_frame=int(fn[-1]),
            local_fold_epoch=states.local_fold_epoch,
            photons=SeriesChunks.of(fn, photons, "int64"),
            types=SeriesChunks.of(fn, types, "int8"))

    # -- outputs ------------------------------------------------------------------------
    def outputs(self, partial: MoenchPartial) -> dict[str, OutputValue]:
        shape = self.geometry.shape
        ped_n, up_n, p_n = partial.frame_counts
        out: dict[str, OutputValue] = {}
        for base, arr in (("analog_img", partial.analog), ("threshold_img", partial.threshold),
                          ("counting_img", partial.counting)):
            for st, suffix, count in ((0, "", up_n), (1, "_pumped", p_n)):
                img = np.zeros(shape) if arr is None else arr[st].astype(np.float64)
                if self.settings.normalize and count > 0:
                    img = img / count
                out[base + suffix] = img
        ped = (final_state(partial, self._N) if partial.prefix is not None
               else PedestalState.empty(shape))
        out["pedestal"] = ped.mean()
        out["pedestal_std"] = ped.std()
        out["pumped_frames"] = p_n
        out["unpumped_frames"] = up_n
        out["pedestal_frames"] = ped_n
        samples = int(np.median(ped.n)) if ped.n.size else 0
        out["pedestal_samples"] = samples
        out["pedestal_ready"] = samples >= self.min_pedestal_frames
        out["frame_photons"] = partial.photons.to_series()
        out["frame_type"] = partial.types.to_series()
        return out


    @property
    def min_pedestal_frames(self) -> int:
        return min(self.settings.pedestal_min_frames, self._N)

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        if outputs.get("pedestal_ready", True):
            return []
        return [f"{self.name}: the pedestal has {outputs.get('pedestal_samples', 0)} of the "
                f"{self.min_pedestal_frames} frames it needs: its analog, threshold and "
                "counting images are not to be trusted (take a dark run first: "
                "process_pedestal_img true, or processing_pattern ped without split_pump)"]
