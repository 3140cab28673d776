"""The Jungfrau dark-run workflow's decisions (pure): which reducers and parameters a dark
run uses, where its pedestal goes, and what its result says.

:meth:`actors.pipeline.PipelineBase.record_pedestal` carries them out: it sets the
``jungfrau_pedestal`` reducer's ``gain`` and ``record`` for one acquisition, waits for the
detector's dark series, writes the per-pixel mean, σ and sample count into the pedestal file
(:mod:`actors.reduce.jungfrau.pedestal_file`) and makes every ``jungfrau`` reducer reread it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.core.chain import runtime_parameters
from actors.reduce.base import OutputValue, Series

#: a dark run where more than this fraction of the pixel samples are in another gain was
#: not taken as intended (a forced gain not applied, light on the detector): a warning
WRONG_GAIN_WARN = 0.01


@dataclass(frozen=True)
class DarkRunPlan:
    """Public parameter names a dark run sets, and the pedestal file it writes."""

    gain: str  # the dark reducer's 'gain' parameter
    record: str  # ... and its 'record'
    file: str  # where the pedestal goes
    reload: tuple[tuple[str, str], ...]  # (jungfrau pedestal_file parameter, its value)
    reducer: str  # the jungfrau_pedestal reducer's name

    def output(self, outputs: Mapping[str, OutputValue], name: str) -> OutputValue:
        """The dark reducer's output ``name`` (``<reducer>.<name>`` when another reducer
        has an output of that name)."""
        qualified = f"{self.reducer}.{name}"
        return outputs[qualified if qualified in outputs else name]


def plan_dark_run(specs: Sequence[Mapping[str, Any]], current: Mapping[str, Any],
                  file: str | None = None) -> DarkRunPlan:
    """The plan for ``specs`` (the chain's reducers) with the parameters' ``current``
    values; ValueError (saying what to add) when the chain cannot take a dark run."""
    darks = [s for s in specs if s.get("type") == "jungfrau_pedestal"]
    if len(darks) != 1:
        raise ValueError(
            "a dark run needs exactly one jungfrau_pedestal reducer in the chain "
            f"(found {len(darks)}): add {{type: jungfrau_pedestal}} to the reducers")
    dark_name = str(darks[0].get("name") or "jungfrau_pedestal")
    params = {(p.reducer, p.setting): p.name for p in runtime_parameters(specs)}
    converters = [str(s.get("name") or "jungfrau") for s in specs
                  if s.get("type") == "jungfrau"]
    reload = tuple((params[(c, "pedestal_file")],
                    str(current.get(params[(c, "pedestal_file")], "")))
                   for c in converters)
    path = file or current.get(params[(dark_name, "file")]) or next(
        (value for _, value in reload if value), None)
    if not path:
        raise ValueError("no pedestal file to write: give one (file=...), or set the "
                         "jungfrau_pedestal reducer's 'file' or a jungfrau reducer's "
                         "'pedestal_file'")
    return DarkRunPlan(params[(dark_name, "gain")], params[(dark_name, "record")], str(path),
                       reload, dark_name)


@dataclass(frozen=True)
class DarkRunRecord:
    """What one dark run recorded."""

    file: str
    gain: int
    acquisition: int
    frames: int
    wrong_gain_fraction: float  # samples not in the recorded gain / all pixel samples
    missing: tuple[str, ...]  # gains the file still lacks (g0, g1, g2)
    warnings: tuple[str, ...] = ()


def dark_arrays(outputs: Mapping[str, OutputValue], plan: DarkRunPlan
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                           npt.NDArray[np.int64], int, float]:
    """(mean, σ, count, frames, wrong-gain fraction) of a dark run's outputs."""
    mean = np.asarray(plan.output(outputs, "pedestal_mean"), np.float64)
    std = np.asarray(plan.output(outputs, "pedestal_std"), np.float64)
    count = np.asarray(plan.output(outputs, "pedestal_count"), np.int64)
    frames = int(plan.output(outputs, "dark_frames"))  # type: ignore[arg-type]
    wrong = plan.output(outputs, "wrong_gain_pixels")
    wrong_total = int(np.sum(wrong.values)) if isinstance(wrong, Series) else 0
    fraction = wrong_total / (frames * mean.size) if frames else 0.0
    return mean, std, count, frames, fraction


def dark_run_warnings(gain: int, fraction: float, count: npt.NDArray[np.int64]) -> list[str]:
    out = []
    if fraction > WRONG_GAIN_WARN:
        out.append(f"dark run of G{gain}: {fraction:.1%} of the pixel samples were in another "
                   "gain (was the gain forced, the detector dark?)")
    empty = int(np.count_nonzero(count == 0))
    if empty:
        out.append(f"dark run of G{gain}: {empty} pixel(s) had no sample in G{gain}: their "
                   "pedestal reads 0")
    return out
