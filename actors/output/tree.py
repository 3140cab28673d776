"""Nested mappings (settings, metadata, ledger) as NXcollection trees.

Mappings become NXcollection groups; a list of mappings becomes a group with one child
per item (named by the item's ``name`` key when it has one); numbers, booleans, strings and
homogeneous lists of them become fields; anything else (None, empty or mixed lists) is
stored as a JSON string marked ``rayline_encoding = "json"``. Keys that are not valid HDF5
names are sanitised and the original kept in ``rayline_name``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from actors.output.nx import ENCODING_ATTR, NAME_ATTR, hdf_name, nx_group, to_json, write_text


def write_tree(group: h5py.Group, mapping: Mapping[Any, Any]) -> None:
    """Write ``mapping`` into ``group`` (which already exists)."""
    for key, value in mapping.items():
        name = hdf_name(key, group.keys())
        if isinstance(value, Mapping):
            child: h5py.HLObject = nx_group(group, name, "NXcollection")
            write_tree(child, value)
        elif _is_list_of_mappings(value):
            child = nx_group(group, name, "NXcollection")
            write_tree(child, _items_by_name(value))
        else:
            child = write_leaf(group, name, value)
        if name != str(key):
            child.attrs[NAME_ATTR] = str(key)


def write_leaf(group: h5py.Group, name: str, value: Any) -> h5py.Dataset:
    """One field: native when numpy can type it as bool/int/float/str, else JSON text."""
    if isinstance(value, str):
        return write_text(group, name, value)
    array = _native(value)
    if array is None:
        return write_text(group, name, to_json(value), **{ENCODING_ATTR: "json"})
    if array.dtype.kind == "U":
        return group.create_dataset(name, data=array.astype(h5py.string_dtype()))
    return group.create_dataset(name, data=array)


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The mapping of a tree written by :func:`write_tree` (lists of mappings as mappings)."""
    out: dict[str, Any] = {}
    for name, obj in group.items():
        key = str(obj.attrs.get(NAME_ATTR, name))
        if isinstance(obj, h5py.Group):
            out[key] = read_tree(obj)
        else:
            out[key] = read_leaf(obj)
    return out


def read_leaf(dataset: h5py.Dataset) -> Any:
    if dataset.attrs.get(ENCODING_ATTR) == "json":
        return json.loads(dataset.asstr()[()])
    if h5py.check_string_dtype(dataset.dtype) is not None:
        value = dataset.asstr()[()]
        return value.tolist() if isinstance(value, np.ndarray) else value
    value = dataset[()]
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _native(value: Any) -> np.ndarray[Any, Any] | None:
    if value is None or (isinstance(value, Sequence | np.ndarray) and len(value) == 0):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not (
            -(2**63) <= value < 2**63):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged
        return None
    if array.dtype.kind not in "biufU":
        return None
    if array.dtype.kind == "U" and not (array.ndim == 1 and all(isinstance(v, str)
                                                                for v in value)):
        return None  # numbers and strings mixed, or nested: numpy would stringify
    return array


def _is_list_of_mappings(value: Any) -> bool:
    return (isinstance(value, list | tuple) and bool(value)
            and all(isinstance(v, Mapping) for v in value))


def _items_by_name(items: Sequence[Mapping[Any, Any]]) -> dict[str, Any]:
    names = [item.get("name") for item in items]
    usable = all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
    return {str(n) if usable else f"item_{i}": item for i, (n, item) in enumerate(zip(
        names, items))}
