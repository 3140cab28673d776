"""The calibration an acquisition was converted with, recorded in its NeXus entry.

For every ``jungfrau`` reducer of the chain::

    /entry/calibration/<reducer>/          NXcollection
        gain_file, pedestal_file, mask_file/   NXcollection per role: path (one per file,
                                               in module order), size (bytes), modified
                                               (ISO 8601), sha256
        dark_runs/g0, g1, g2/                  NXcollection: the pedestal file's record of
                                               each dark run (date, frames, exposure_time,
                                               modules, acquisition, detector)

so the file says which gain maps and which dark runs made its energies, even after the
calibration files are replaced. A file that cannot be read is recorded with its error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import h5py
import numpy as np

from actors.output.nx import iso8601, nx_group, write_field, write_text
from actors.reduce.jungfrau.calibration import file_stamp

logger = logging.getLogger(__name__)

ROLES = ("gain_file", "pedestal_file", "mask_file")


def write_calibration(entry: h5py.Group, settings: Mapping[str, Any]) -> None:
    """``/entry/calibration`` for the converting reducers in ``settings["reducers"]``."""
    specs = [s for s in settings.get("reducers", ()) if s.get("type") == "jungfrau"]
    if not specs:
        return
    top = nx_group(entry, "calibration", "NXcollection")
    for spec in specs:
        group = nx_group(top, str(spec.get("name") or "jungfrau"), "NXcollection")
        for role in ROLES:
            value = spec.get(role)
            if value:
                _write_files(nx_group(group, role, "NXcollection"),
                             [value] if isinstance(value, str) else list(value))
        pedestal = spec.get("pedestal_file")
        if isinstance(pedestal, str):
            _write_dark_runs(group, pedestal)


def _write_files(group: h5py.Group, paths: Sequence[str]) -> None:
    write_text(group, "path", "\n".join(paths), long_name="one path per line")
    facts = [_file_facts(*file_stamp(p)) for p in paths]
    write_field(group, "size", np.asarray([f[0] for f in facts], np.int64), units="B")
    write_text(group, "modified", "\n".join(f[1] for f in facts))
    write_text(group, "sha256", "\n".join(f[2] for f in facts))


@lru_cache(maxsize=16)
def _file_facts(path: str, size: int, mtime_ns: int) -> tuple[int, str, str]:
    """(size, modified, sha256) of a file, hashed once per version of it."""
    if size < 0:
        return (-1, "", "missing")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return (size, iso8601(mtime_ns / 1e9), f"unreadable: {exc.strerror}")
    return (size, iso8601(mtime_ns / 1e9), digest.hexdigest())


def _write_dark_runs(group: h5py.Group, path: str) -> None:
    if not path.lower().endswith((".h5", ".hdf5", ".nxs", ".hdf")):
        return
    runs = nx_group(group, "dark_runs", "NXcollection")
    try:
        with h5py.File(path, "r") as f:
            for gain in ("g0", "g1", "g2"):
                if gain not in f:
                    continue
                out = nx_group(runs, gain, "NXcollection")
                for key, value in f[gain].attrs.items():
                    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
                        write_text(out, key, "\n".join(
                            v.decode() if isinstance(v, bytes) else str(v) for v in value))
                    elif isinstance(value, (str, bytes)):
                        write_text(out, key, value.decode() if isinstance(value, bytes)
                                   else value)
                    else:
                        write_field(out, key, value)
    except OSError as exc:
        write_text(runs, "error", f"pedestal file unreadable: {exc}")
