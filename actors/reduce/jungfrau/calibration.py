"""Jungfrau calibration inputs: per-pixel gains, pedestals and the bad-pixel mask, read from
the files facilities use and checked against the detector geometry.

* **Gains** (ADU/keV per pixel and gain G0, G1, G2):
  - per-module binary files (PSI's and Diamond's ``gainMaps_M<id>.bin``): float64 planes of
    512 × 1024, gains 0, 1, 2 first (files with 6 planes — the HG0 gains after them — are
    read too; only the first 3 are used). A list of files is one per module, in the order
    of the detector's module grid, row by row (the module at ``row`` r, ``column`` c of the
    slsDetector headers is number ``r * columns + c``);
  - ``.npy``: an array (3, rows, cols) of the whole detector;
  - HDF5 (``.h5``, ``.hdf5``, ``.nxs``): the dataset ``gain`` (3, rows, cols).
* **Pedestals** (ADU per pixel and gain): the HDF5 file a dark run writes
  (:mod:`actors.reduce.jungfrau.pedestal_file`), or ``.npy`` (3, rows, cols). A file not
  written yet, or without some gains, is not an error (the dark runs are taken with the
  pipeline itself): those gains read 0 and :attr:`Calibration.missing` names them.
* **Bad pixels**: ``.npy`` or HDF5 dataset ``mask`` (rows, cols), nonzero = excluded.

Pixels with a zero or non-finite gain or a non-finite pedestal in any gain are added to the
bad pixels (counted in :attr:`Calibration.unusable`), as a calibration marks dead pixels.
Every error names the file and what does not fit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import ReducerConfigError, readonly

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
MODULE_ROWS, MODULE_COLS = 512, 1024
PLANE_BYTES = MODULE_ROWS * MODULE_COLS * 8
HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".hdf")


class CalibrationError(ReducerConfigError):
    """A calibration file is missing, unreadable or does not fit the detector."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """What the conversion needs: (3, rows, cols) pedestals and gains, (rows, cols) bad."""

    pedestal: F64
    gain: F64
    bad: npt.NDArray[np.bool_]
    unusable: int = 0  # pixels made bad by a zero/non-finite gain or pedestal
    files: dict[str, str] = field(default_factory=dict)  # role -> path(s), for the record
    pedestal_info: dict[str, Any] = field(default_factory=dict)  # the dark runs' provenance
    #: the G0 dark run's (mean, σ, samples per pixel), when the pedestal file has them: the
    #: start of G0 pedestal tracking
    g0_run: tuple[F64, F64, npt.NDArray[np.int64]] | None = None

    @property
    def missing(self) -> list[str]:
        """The gains (g0, g1, g2) the pedestal file has no dark run for yet."""
        return list(self.pedestal_info.get("missing", []))


def module_grid(shape: tuple[int, int], what: str) -> tuple[int, int]:
    """(module rows, module columns) of a detector frame of ``shape``."""
    rows, cols = shape
    if rows % MODULE_ROWS or cols % MODULE_COLS:
        raise CalibrationError(f"{what}: the frame {rows}×{cols} is not a grid of "
                               f"{MODULE_ROWS}×{MODULE_COLS} Jungfrau modules")
    return rows // MODULE_ROWS, cols // MODULE_COLS


def _hdf5(path: str) -> bool:
    return path.lower().endswith(HDF5_SUFFIXES)


def _check_exists(path: str, role: str) -> None:
    if not os.path.isfile(path):
        raise CalibrationError(f"{role} file {path!r} does not exist")


def read_module_gains(path: str) -> F64:
    """One module's (3, 512, 1024) gains from a PSI/Diamond binary file."""
    _check_exists(path, "gain")
    size = os.path.getsize(path)
    if size == 0 or size % PLANE_BYTES:
        raise CalibrationError(
            f"gain file {path!r}: {size} bytes is not a whole number of "
            f"{MODULE_ROWS}×{MODULE_COLS} float64 planes ({PLANE_BYTES} bytes each)")
    planes = size // PLANE_BYTES
    if planes < 3:
        raise CalibrationError(f"gain file {path!r}: {planes} plane(s) of "
                               f"{MODULE_ROWS}×{MODULE_COLS}, needs 3 (G0, G1, G2)")
    data = np.fromfile(path, dtype="<f8", count=3 * MODULE_ROWS * MODULE_COLS)
    return data.reshape(3, MODULE_ROWS, MODULE_COLS)


def _read_array(path: str, role: str, dataset: str) -> npt.NDArray[Any]:
    _check_exists(path, role)
    try:
        if _hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                if dataset not in f:
                    raise CalibrationError(f"{role} file {path!r} has no dataset "
                                           f"{dataset!r} (has: {', '.join(f)})")
                return np.asarray(f[dataset][()])
        if path.lower().endswith(".npy"):
            return np.asarray(np.load(path, allow_pickle=False))
    except CalibrationError:
        raise
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{role} file {path!r} cannot be read: {exc}") from exc
    raise CalibrationError(f"{role} file {path!r}: unknown format (expected .npy, "
                           f"HDF5 {'/'.join(HDF5_SUFFIXES)}"
                           f"{' or per-module .bin files' if role == 'gain' else ''})")


def _check_stack(array: npt.NDArray[Any], path: str, role: str,
                 shape: tuple[int, int]) -> F64:
    want = (3, *shape)
    if array.shape != want:
        raise CalibrationError(f"{role} file {path!r}: shape {array.shape} does not fit the "
                               f"detector: expected {want} (gains 0, 1, 2 × "
                               f"{shape[0]}×{shape[1]})")
    if array.dtype.kind not in "fiu":
        raise CalibrationError(f"{role} file {path!r}: dtype {array.dtype} is not numeric")
    return np.ascontiguousarray(array, dtype=np.float64)


def load_gains(spec: str | Sequence[str], shape: tuple[int, int]) -> F64:
    """(3, rows, cols) gains in ADU/keV from ``spec`` (see the module docstring)."""
    paths = [spec] if isinstance(spec, str) else list(spec)
    if not paths:
        raise CalibrationError("gain file: none given")
    if all(p.lower().endswith(".bin") for p in paths):
        grid_rows, grid_cols = module_grid(shape, f"gain files {paths}")
        if len(paths) != grid_rows * grid_cols:
            raise CalibrationError(
                f"gain files {paths}: {len(paths)} file(s) for a detector of "
                f"{grid_rows * grid_cols} modules ({shape[0]}×{shape[1]}): give one per "
                "module, row by row")
        out = np.empty((3, *shape))
        for k, path in enumerate(paths):
            r, c = divmod(k, grid_cols)
            out[:, r * MODULE_ROWS:(r + 1) * MODULE_ROWS,
                c * MODULE_COLS:(c + 1) * MODULE_COLS] = read_module_gains(path)
        return out
    if len(paths) != 1:
        raise CalibrationError(f"gain files {paths}: a list is of per-module .bin files; "
                               "a .npy or HDF5 file holds the whole detector")
    return _check_stack(_read_array(paths[0], "gain", "gain"), paths[0], "gain", shape)


def gain_shape(spec: str | Sequence[str]) -> tuple[int, int] | None:
    """The detector frame (rows, cols) the gain file(s) are for, read cheaply (None when it
    cannot be told: the loader then gives the error). Per-module .bin files are taken as a
    column of modules, as a Jungfrau 1M (2 × 1)."""
    paths = [spec] if isinstance(spec, str) else list(spec)
    try:
        if paths and all(p.lower().endswith(".bin") for p in paths):
            return (MODULE_ROWS * len(paths), MODULE_COLS)
        if len(paths) != 1:
            return None
        path = paths[0]
        if path.lower().endswith(".npy"):
            shape = np.load(path, mmap_mode="r").shape
        elif _hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                shape = f["gain"].shape
        else:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return (int(shape[-2]), int(shape[-1])) if len(shape) == 3 else None


def load_mask(path: str, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """(rows, cols) bad pixels (True = excluded)."""
    mask = _read_array(path, "mask", "mask")
    if mask.shape != shape:
        raise CalibrationError(f"mask file {path!r}: shape {mask.shape} does not fit the "
                               f"detector {shape}")
    return np.asarray(mask != 0)


def assemble(pedestal: F64, gain: F64, bad: npt.NDArray[np.bool_] | None,
             files: dict[str, str] | None = None,
             pedestal_info: dict[str, Any] | None = None) -> Calibration:
    """A checked :class:`Calibration`: unusable pixels join the bad ones, read-only arrays."""
    shape = pedestal.shape[1:]
    unusable = (~np.isfinite(gain) | (gain == 0) | ~np.isfinite(pedestal)).any(axis=0)
    all_bad = unusable if bad is None else (bad | unusable)
    extra = int(np.count_nonzero(unusable & ~(np.zeros(shape, bool) if bad is None else bad)))
    if extra:
        logger.warning("Jungfrau calibration: %d pixel(s) with a zero or non-finite gain or "
                       "pedestal are excluded", extra)
    # excluded pixels get harmless values, so the kernel never divides by 0 or meets a NaN
    safe_gain = np.where(unusable, 1.0, gain)
    safe_ped = np.where(unusable, 0.0, pedestal)
    return Calibration(readonly(np.ascontiguousarray(safe_ped)),
                       readonly(np.ascontiguousarray(safe_gain)),
                       readonly(np.ascontiguousarray(all_bad)), extra, dict(files or {}),
                       dict(pedestal_info or {}))


def load_calibration(gain: str | Sequence[str], pedestal: str, mask: str | None,
                     shape: tuple[int, int]) -> Calibration:
    """Read and check every calibration file for a detector frame of ``shape`` (cached by
    path, size and modification time: a worker rebuilding its reducers reads them once)."""
    gains = (gain,) if isinstance(gain, str) else tuple(gain)
    stamp = tuple(file_stamp(p) for p in (*gains, pedestal, *(() if mask is None else (mask,))))
    return _load_cached(gains, pedestal, mask, shape, stamp)


def file_stamp(path: str) -> tuple[str, int, int]:
    """(path, size, modification time in ns) — a version of the file, for caches; size and
    time -1 when it cannot be read (the loader then raises the clear error)."""
    try:
        st = Path(path).stat()
    except OSError:
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _load_cached(gains: tuple[str, ...], pedestal: str, mask: str | None,
                 shape: tuple[int, int], stamp: tuple[Any, ...]) -> Calibration:
    from actors.reduce.jungfrau.pedestal_file import read_gain_run, read_pedestal

    g = load_gains(gains, shape)
    ped, info = read_pedestal(pedestal, shape, allow_missing=True)
    bad = None if mask is None else load_mask(mask, shape)
    files = {"gain": ", ".join(gains), "pedestal": pedestal}
    if mask is not None:
        files["mask"] = mask
    return replace(assemble(ped, g, bad, files, info), g0_run=read_gain_run(pedestal, 0, shape))
