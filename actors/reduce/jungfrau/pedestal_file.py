"""The Jungfrau pedestal file a dark run writes (HDF5), and reading it back.

Layout (one file holds the three gains; each dark run writes or replaces its own gain)::

    /                       attrs: format = "rayline-jungfrau-pedestal", version = 1,
                                   rows, cols
    /g0, /g1, /g2           one group per gain recorded, attrs: date (ISO 8601, UTC),
                            exposure_time (s, NaN if unknown), frames (dark frames taken),
                            modules (module ids or source names), acquisition, detector
        mean   (rows, cols) float64   pedestal, ADU
        std    (rows, cols) float64   σ of the dark frames, ADU
        count  (rows, cols) int64     dark frames that were in this gain, per pixel

A ``.npy`` array (3, rows, cols) is also read as pedestals (no provenance).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.jungfrau.calibration import HDF5_SUFFIXES, CalibrationError

logger = logging.getLogger(__name__)

FORMAT = "rayline-jungfrau-pedestal"
VERSION = 1
GAINS = ("g0", "g1", "g2")


@dataclass(frozen=True)
class DarkRun:
    """One gain's pedestal from a dark run, and where it came from."""

    gain: int  # 0, 1, 2
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    frames: int
    exposure_time: float | None = None
    modules: Sequence[str] = ()
    acquisition: int | None = None
    detector: str = ""
    date: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"))


def write_dark_run(path: str, run: DarkRun) -> None:
    """Write (or replace) ``run``'s gain in the pedestal file ``path`` (created if absent;
    the other gains already in it stay)."""
    import h5py

    if run.gain not in (0, 1, 2):
        raise ValueError(f"gain must be 0, 1 or 2, got {run.gain}")
    rows, cols = run.mean.shape
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with h5py.File(path, "a") as f:
        if f.attrs.get("format", FORMAT) != FORMAT:
            raise CalibrationError(f"pedestal file {path!r} exists and is not a rayline "
                                   "Jungfrau pedestal file: not overwritten")
        if "rows" in f.attrs and (int(f.attrs["rows"]), int(f.attrs["cols"])) != (rows, cols):
            raise CalibrationError(
                f"pedestal file {path!r} holds {int(f.attrs['rows'])}×{int(f.attrs['cols'])} "
                f"pedestals; this dark run is {rows}×{cols}: write it to another file")
        f.attrs.update({"format": FORMAT, "version": VERSION, "rows": rows, "cols": cols})
        name = GAINS[run.gain]
        if name in f:
            del f[name]
        g = f.create_group(name)
        g.attrs.update({
            "date": run.date, "frames": int(run.frames),
            "exposure_time": math.nan if run.exposure_time is None else run.exposure_time,
            "modules": [str(m) for m in run.modules] or [""],
            "acquisition": -1 if run.acquisition is None else int(run.acquisition),
            "detector": run.detector})
        g.create_dataset("mean", data=np.asarray(run.mean, np.float64))
        g.create_dataset("std", data=np.asarray(run.std, np.float64))
        g.create_dataset("count", data=np.asarray(run.count, np.int64))
    logger.info("pedestal file %s: gain %d written (%d dark frames)", path, run.gain,
                run.frames)


def missing_gains(path: str) -> tuple[str, ...]:
    """The gains (g0, g1, g2) a rayline pedestal file has no dark run for (all of them when
    there is no such file); reads no pixel data."""
    if not os.path.isfile(path):
        return GAINS
    import h5py

    with h5py.File(path, "r") as f:
        return tuple(g for g in GAINS if g not in f)


def read_pedestal(path: str, shape: tuple[int, int], *, allow_missing: bool = False
                  ) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """(3, rows, cols) pedestals and the provenance of each gain, checked against the
    detector frame ``shape``. ``allow_missing``: a file not written yet, or without some
    gains, gives 0 for those gains and lists them in ``info["missing"]`` (the dark runs
    that are still to be taken) instead of an error."""
    if not os.path.isfile(path):
        if allow_missing:
            return np.zeros((3, *shape)), {"missing": list(GAINS)}
        raise CalibrationError(f"pedestal file {path!r} does not exist")
    if path.lower().endswith(".npy"):
        try:
            arr = np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"pedestal file {path!r} cannot be read: {exc}") from exc
        if arr.shape != (3, *shape):
            raise CalibrationError(f"pedestal file {path!r}: shape {arr.shape} does not fit "
                                   f"the detector: expected {(3, *shape)}")
        return np.ascontiguousarray(arr, np.float64), {}
    if not path.lower().endswith(HDF5_SUFFIXES):
        raise CalibrationError(f"pedestal file {path!r}: unknown format (expected the HDF5 "
                               "file a dark run writes, or .npy)")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [g for g in GAINS if g not in f]
            if missing and not allow_missing:
                raise CalibrationError(
                    f"pedestal file {path!r} has no pedestal for gain(s) "
                    f"{', '.join(missing)}: record the dark run(s) of "
                    f"{', '.join(m.upper() for m in missing)} first")
            out = np.zeros((3, *shape))
            info: dict[str, Any] = {"missing": missing} if missing else {}
            for k, name in enumerate(GAINS):
                if name in missing:
                    continue
                mean = f[name]["mean"]
                if mean.shape != shape:
                    raise CalibrationError(
                        f"pedestal file {path!r}: {name} is {mean.shape[0]}×{mean.shape[1]}, "
                        f"the detector {shape[0]}×{shape[1]}")
                out[k] = mean[()]
                info[name] = _attrs(f[name].attrs)
            return out, info
    except CalibrationError:
        raise
    except (OSError, KeyError) as exc:
        raise CalibrationError(f"pedestal file {path!r} cannot be read: {exc}") from exc


def _attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else str(v) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, bytes):
            value = value.decode()
        out[key] = value
    return out


def read_gain_run(path: str, gain: int, shape: tuple[int, int]
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                             npt.NDArray[np.int64]] | None:
    """(mean, σ, samples per pixel) of one gain's dark run in a rayline pedestal file, or
    None (no such file, format or gain: a ``.npy`` pedestal has no σ or counts)."""
    if not os.path.isfile(path) or not path.lower().endswith(HDF5_SUFFIXES):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            name = GAINS[gain]
            if name not in f or f[name]["mean"].shape != shape:
                return None
            g = f[name]
            return (np.asarray(g["mean"][()], np.float64), np.asarray(g["std"][()], np.float64),
                    np.asarray(g["count"][()], np.int64))
    except (OSError, KeyError):
        return None
