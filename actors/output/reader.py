"""Reading an acquisition file back: outputs, settings, ledger and frame stacks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter compressed outputs use)
import numpy as np
import numpy.typing as npt

from actors.output.nx import DTYPE_ATTR, KIND_ATTR, NAME_ATTR
from actors.output.tree import read_tree
from actors.reduce.base import OutputValue, Series

Source: TypeAlias = "str | os.PathLike[str] | h5py.File"


@contextmanager
def _opened(source: Source) -> Iterator[h5py.File]:
    if isinstance(source, h5py.File):
        yield source
        return
    with h5py.File(source, "r") as file:
        yield file


def read_array(dataset: h5py.Dataset) -> npt.NDArray[Any]:
    """The dataset's values in the dtype they were written from (bool restored)."""
    values = np.asarray(dataset[()])
    original = dataset.attrs.get(DTYPE_ATTR)
    return values.astype(str(original)) if original is not None else values


def read_outputs(source: Source) -> dict[str, OutputValue]:
    """Every output of ``/entry``: images and spectra as arrays, series, scalars."""
    out: dict[str, OutputValue] = {}
    with _opened(source) as file:
        entry = file["entry"]
        for group in entry.values():
            kind = group.attrs.get(KIND_ATTR) if isinstance(group, h5py.Group) else None
            if kind not in ("image", "spectrum", "series"):
                continue
            name = str(group.attrs[NAME_ATTR])
            values = read_array(group["data"])
            out[name] = (Series(np.asarray(group["frame_number"][()]), values)
                         if kind == "series" else values)
        for dataset in entry["results"].values():
            out[str(dataset.attrs[NAME_ATTR])] = read_array(dataset).item()
    return out


def read_settings(source: Source) -> dict[str, Any]:
    """The settings mapping the file was written with (from ``/entry/settings/json``)."""
    with _opened(source) as file:
        value: dict[str, Any] = json.loads(file["entry/settings/json"].asstr()[()])
        return value


def read_ledger(source: Source) -> dict[str, Any]:
    """``/entry/ledger`` as a mapping (totals as numbers, ``*_by_reason`` as mappings)."""
    with _opened(source) as file:
        return read_tree(file["entry/ledger"])


def read_frames(source: Source, name: str = "frames"
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """``(frame_numbers, frames)`` of the stack ``/entry/<name>``."""
    with _opened(source) as file:
        group = file["entry"][name]
        return np.asarray(group["frame_number"][()]), np.asarray(group["data"][()])
