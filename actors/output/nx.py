"""Small NeXus/HDF5 helpers: classed groups, fields with units, storable values, names."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from enum import Enum
from pathlib import PurePath
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from actors.output.narrow import narrowest, storage_options

#: attribute holding the original numpy dtype when the stored one differs (bool -> uint8)
DTYPE_ATTR = "rayline_dtype"
#: attribute holding the original (unsanitised) name of an output or a settings key
NAME_ATTR = "rayline_name"
#: attribute holding the output kind (image, spectrum, scalar, series)
KIND_ATTR = "rayline_kind"
#: attribute marking a string field that holds JSON
ENCODING_ATTR = "rayline_encoding"


def nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    """The child group ``name`` (created if missing) with its ``NX_class``."""
    group = parent.require_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def set_attrs(obj: h5py.HLObject, **attrs: Any) -> None:
    """Set the non-empty attributes (empty strings and None are skipped)."""
    for key, value in attrs.items():
        if value is None or (isinstance(value, str) and not value):
            continue
        obj.attrs[key] = value


def storable(value: Any) -> tuple[npt.NDArray[Any], str]:
    """``value`` as an array h5py stores portably, and the numpy dtype name it came as.

    bool becomes uint8 (NeXus NX_BOOLEAN; the dtype attribute restores it), str arrays
    become variable-length UTF-8 strings.
    """
    array = np.asarray(value)
    original = array.dtype.name if array.dtype.kind != "U" else "str"
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind == "U":
        array = array.astype(h5py.string_dtype())
    return array, original


def write_field(group: h5py.Group, name: str, value: Any, *, units: str = "",
                long_name: str = "", compact: bool = False, **attrs: Any) -> h5py.Dataset:
    """A dataset with ``units``/``long_name``; the original dtype kept when it changes.

    ``compact``: stored in the narrowest exact dtype, compressed when large
    (:mod:`actors.output.narrow`)."""
    array, original = storable(value)
    options: dict[str, Any] = {}
    if compact:
        array = narrowest(array)
        options = storage_options(array)
    dataset = group.create_dataset(name, data=array, **options)
    if original != dataset.dtype.name and original != "str":
        dataset.attrs[DTYPE_ATTR] = original
    set_attrs(dataset, units=units, long_name=long_name, **attrs)
    return dataset


def write_text(group: h5py.Group, name: str, text: str, **attrs: Any) -> h5py.Dataset:
    dataset = group.create_dataset(name, data=text, dtype=h5py.string_dtype())
    set_attrs(dataset, **attrs)
    return dataset


def iso8601(timestamp: float) -> str:
    """Local time with its UTC offset, e.g. ``2026-05-01T12:00:00.123456+02:00``."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).astimezone().isoformat()


def hdf_name(name: object, taken: Iterable[str] = ()) -> str:
    """A valid, unused HDF5 link name for ``name`` ('/' and '.'-only names replaced)."""
    text = str(name).replace("/", "_").replace("\0", "_")
    if text in ("", ".", ".."):
        text = f"_{text.replace('.', 'dot')}"
    used = set(taken)
    candidate, n = text, 2
    while candidate in used:
        candidate, n = f"{text}_{n}", n + 1
    return candidate


def to_json(value: Any) -> str:
    """JSON text of ``value``; numpy values, paths and enums are converted."""
    return json.dumps(value, default=_json_default, sort_keys=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
