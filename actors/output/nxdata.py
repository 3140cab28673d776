"""Reducer outputs as NeXus groups: images, spectra and series as NXdata, scalars as fields.

* image ``N``: NXdata ``N`` with ``data`` (rows, cols), ``@axes = ["y", "x"]`` (pixel
  indices);
* spectrum ``N``: NXdata ``N`` with ``data`` and its axis: the sibling spectrum
  ``<stem>_radius`` of matching length when there is one (``stem`` = ``N`` or a prefix of it
  at an underscore, so ``radial`` and ``radial_last`` use ``radial_radius``), else ``index``;
* series ``N``: NXdata ``N`` with ``data`` (frames, ...) and ``frame_number`` (int64) as the
  first axis;
* scalar ``N``: field ``results/N``.

The original name, kind and (when it changes) dtype are kept in ``rayline_name``,
``rayline_kind`` and ``rayline_dtype`` so :mod:`actors.output.reader` restores the values
exactly. The value decides the kind; a declaration that disagrees is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from actors.output.nx import KIND_ATTR, NAME_ATTR, hdf_name, nx_group, set_attrs, write_field
from actors.reduce.base import OutputKind, OutputSpec, OutputValue, Series

logger = logging.getLogger(__name__)

#: suffixes of spectrum outputs that serve as the axis of their siblings
AXIS_SUFFIXES = ("_radius",)


def write_outputs(entry: h5py.Group, outputs: Mapping[str, OutputValue],
                  specs: Sequence[OutputSpec], *, reserved: Iterable[str] = ()
                  ) -> list[tuple[str, str]]:
    """NXdata groups for images, spectra and series, scalars in ``entry/results``.

    Returns ``(group name, kind)`` of the NXdata groups in the order of ``specs`` (outputs
    nobody declared last); group names avoid ``reserved`` and existing members.
    """
    declared = {s.name for s in specs}
    ordered = [s for s in specs if s.name in outputs]
    ordered += [infer_spec(n, v) for n, v in outputs.items() if n not in declared]
    results = nx_group(entry, "results", "NXcollection")
    taken = set(reserved) | set(entry.keys())
    plots: list[tuple[str, str]] = []
    for spec in ordered:
        value = outputs[spec.name]
        if value is None:  # not produced (e.g. a mode that was off): nothing to store
            logger.warning("output %r has no value; not written", spec.name)
            continue
        kind = _kind(spec, value)
        if kind == "scalar":
            name = hdf_name(spec.name, results.keys())
            dataset = write_field(results, name, value, units=spec.unit,
                                  long_name=spec.description or spec.name)
            set_attrs(dataset, **{NAME_ATTR: spec.name, KIND_ATTR: "scalar"})
            continue
        name = hdf_name(spec.name, taken)
        taken.add(name)
        group = nx_group(entry, name, "NXdata")
        set_attrs(group, **{NAME_ATTR: spec.name, KIND_ATTR: kind})
        if kind == "image":
            _write_image(group, spec, np.asarray(value))
        elif kind == "spectrum":
            _write_spectrum(group, spec, np.asarray(value), outputs, specs)
        else:
            assert isinstance(value, Series)
            _write_series(group, spec, value, outputs, specs)
        plots.append((name, kind))
    return plots


def infer_spec(name: str, value: OutputValue) -> OutputSpec:
    """A spec for an output the reducers did not declare (kind from the value)."""
    logger.warning("output %r is not declared by any reducer; written as found", name)
    if isinstance(value, Series):
        values = np.asarray(value.values)
        return OutputSpec(name, "series", values.dtype.name, values.shape[1:])
    array = np.asarray(value)
    kind: OutputKind = "scalar" if array.ndim == 0 else "image" if array.ndim == 2 \
        else "spectrum"
    return OutputSpec(name, kind, array.dtype.name, array.shape)


def _kind(spec: OutputSpec, value: OutputValue) -> str:
    """The kind the value has (the declaration is checked, the value wins)."""
    if isinstance(value, Series):
        kind = "series"
    else:
        ndim = np.ndim(value)
        kind = "scalar" if ndim == 0 else "image" if ndim == 2 else "spectrum"
    if kind != spec.kind:
        logger.warning("output %r is declared %s but its value is a %s; written as a %s",
                       spec.name, spec.kind, kind, kind)
    return kind


def _signal(group: h5py.Group, spec: OutputSpec, values: npt.NDArray[Any],
            axes: list[str]) -> None:
    write_field(group, "data", values, units=spec.unit, long_name=spec.description or spec.name,
                compact=True)
    group.attrs["signal"] = "data"
    group.attrs["axes"] = axes
    for i, axis in enumerate(axes):
        if axis != ".":
            group.attrs[f"{axis}_indices"] = np.int64(i)


def _write_image(group: h5py.Group, spec: OutputSpec, image: npt.NDArray[Any]) -> None:
    _signal(group, spec, image, ["y", "x"])
    write_field(group, "y", np.arange(image.shape[0], dtype=np.int64), units="pixel",
                long_name="row (pixel index)")
    write_field(group, "x", np.arange(image.shape[1], dtype=np.int64), units="pixel",
                long_name="column (pixel index)")


def _write_spectrum(group: h5py.Group, spec: OutputSpec, values: npt.NDArray[Any],
                    outputs: Mapping[str, OutputValue], specs: Sequence[OutputSpec]) -> None:
    axis = _axis_for(spec.name, values.shape[0], outputs, specs)
    name = axis[0] if axis else "index"
    _signal(group, spec, values, [name] + ["."] * (values.ndim - 1))
    if axis is None:
        write_field(group, "index", np.arange(values.shape[0], dtype=np.int64),
                    long_name="index")
    else:
        _write_axis(group, axis)


def _write_series(group: h5py.Group, spec: OutputSpec, series: Series,
                  outputs: Mapping[str, OutputValue], specs: Sequence[OutputSpec]) -> None:
    values = np.asarray(series.values)
    numbers = np.asarray(series.frame_numbers)
    if values.ndim == 0 or numbers.shape != (values.shape[0],):
        raise ValueError(f"output {spec.name!r}: {numbers.shape} frame numbers for values of "
                         f"shape {values.shape}")
    axis = _axis_for(spec.name, values.shape[1], outputs, specs) if values.ndim == 2 else None
    axes = ["frame_number"] + ([axis[0]] if axis else ["."] * (values.ndim - 1))
    _signal(group, spec, values, axes)
    write_field(group, "frame_number", numbers.astype(np.int64, copy=False),
                long_name="frame number (0-based within the acquisition)")
    if axis is not None:
        _write_axis(group, axis)


_Axis = tuple[str, npt.NDArray[Any], OutputSpec]


def _axis_for(name: str, length: int, outputs: Mapping[str, OutputValue],
              specs: Sequence[OutputSpec]) -> _Axis | None:
    """The sibling spectrum ``<stem><suffix>`` of matching length (stem = name or a prefix)."""
    parts = name.split("_")
    by_name = {s.name: s for s in specs}
    for k in range(len(parts), 0, -1):
        stem = "_".join(parts[:k])
        for suffix in AXIS_SUFFIXES:
            candidate = stem + suffix
            value = outputs.get(candidate)
            if candidate == name or value is None or isinstance(value, Series):
                continue
            array = np.asarray(value)
            if array.shape == (length,):
                spec = by_name.get(candidate) or OutputSpec(candidate, "spectrum",
                                                            array.dtype.name, array.shape)
                return suffix.lstrip("_"), array, spec
    return None


def _write_axis(group: h5py.Group, axis: _Axis) -> None:
    name, values, spec = axis
    write_field(group, name, values, units=spec.unit,
                long_name=spec.description or spec.name)
