"""From reducer declarations to Tango attribute declarations (pure: no Tango import).

Outputs become attributes by kind: ``image`` → IMAGE, ``spectrum`` → SPECTRUM, ``scalar``
→ SCALAR, ``series`` → SPECTRUM of the last N values (an IMAGE of the last N rows for
per-frame spectra) plus ``<name>_frame_numbers``. Runtime parameters become writable
attributes of their annotated type; an optional number is a double where NaN means None,
anything else is JSON text. Names that are not valid Tango names are rewritten (``.`` →
``_``) and clashes (Tango names ignore case) are errors that say which names collide.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from actors.config import PipelineConfig
from actors.core.chain import Parameter, ReducerChain
from actors.reduce.base import OutputKind, OutputSpec, OutputValue, Series
from actors.reduce.registry import frame_for, min_frame, reducer_class
from actors.wire.model import Geometry

#: image and spectrum bounds when the configuration does not fix the frame geometry
MAX_IMAGE_DIM = 4096
MAX_SPECTRUM = 65536
#: placeholder geometry to build the chain's declarations when none is configured
DEFAULT_GEOMETRY = Geometry(400, 400, "uint16")
#: units of well-known settings that do not declare one (``json_schema_extra={"unit": …}``)
KNOWN_UNITS = {"threshold": "ADU", "counting_sigma": "sigma", "saturation_value": "ADU"}

#: numpy dtypes Tango has no type for, and what they are published as
_TANGO_DTYPE = {"int8": "int16", "float16": "float32"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

ParamType = Literal["bool", "int", "float", "str", "optional_float", "json"]


@dataclass(frozen=True)
class OutputAttr:
    """One output attribute: ``rows`` × ``cols`` bound an image, ``cols`` a spectrum."""

    attr: str
    output: str
    kind: OutputKind
    dtype: str
    rows: int = 0
    cols: int = 0
    unit: str = ""
    description: str = ""
    frame_numbers: bool = False  # the frame numbers of a series, not its values
    series_length: int = 0

    @property
    def format(self) -> Literal["scalar", "spectrum", "image"]:
        if self.kind == "image" or (self.kind == "series" and self.rows and
                                    not self.frame_numbers):
            return "image"
        return "scalar" if self.kind == "scalar" else "spectrum"

    def value(self, value: OutputValue | None) -> Any:
        """The value as Tango publishes it (None: not available yet)."""
        if value is None:
            return None
        if isinstance(value, Series):
            n = self.series_length
            if self.frame_numbers:
                return np.ascontiguousarray(value.frame_numbers[-n:], dtype=np.int64)
            return np.ascontiguousarray(value.values[-n:], dtype=self.dtype)
        if self.kind == "scalar":
            return np.asarray(value).astype(self.dtype).item()
        return np.ascontiguousarray(value, dtype=self.dtype)


@dataclass(frozen=True)
class ParameterAttr:
    """One writable runtime parameter."""

    attr: str
    parameter: str
    type: ParamType
    value: Any
    minimum: float | int | None = None  # an int attribute has int limits (Tango's rule)
    maximum: float | int | None = None
    unit: str = ""
    description: str = ""

    def to_tango(self, value: Any) -> Any:
        if self.type == "optional_float":
            return math.nan if value is None else float(value)
        if self.type == "json":
            return json.dumps(value)
        return value

    def from_tango(self, value: Any) -> Any:
        """The written Tango value as the pipeline takes it (ValueError if malformed)."""
        if self.type == "optional_float":
            return None if math.isnan(value) else float(value)
        if self.type == "json":
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.attr}: not valid JSON ({exc.msg}); write e.g. "
                                 f"{json.dumps(self.value)}") from None
        return value


@dataclass(frozen=True)
class Declarations:
    outputs: tuple[OutputAttr, ...]
    parameters: tuple[ParameterAttr, ...]
    geometry_known: bool


def declaration_geometry(config: PipelineConfig) -> Geometry:
    """The configured frame geometry, else the MOENCH default grown to what the reducers'
    settings need (an ROI beyond it); only bounds depend on it."""
    geom = config.source.geometry
    if geom is not None:
        return geom.to_geometry()
    for spec in config.reducers:  # a calibration made for one detector says its frame
        exact = frame_for(spec)
        if exact is not None:
            return Geometry(*exact, DEFAULT_GEOMETRY.dtype)
    rows, cols = DEFAULT_GEOMETRY.rows, DEFAULT_GEOMETRY.cols
    for spec in config.reducers:
        r, c = min_frame(spec)
        rows, cols = max(rows, r), max(cols, c)
    return Geometry(rows, cols, DEFAULT_GEOMETRY.dtype)


def chain_for(config: PipelineConfig) -> ReducerChain:
    """The configured reducer chain, built only to read its declarations."""
    return ReducerChain.from_specs(config.reducers, declaration_geometry(config))


def declare(outputs: Sequence[OutputSpec], parameters: Sequence[Parameter], *,
            geometry_known: bool, series_length: int, specs: Sequence[dict[str, Any]] = (),
            reserved: Iterable[str] = ()) -> Declarations:
    """Attribute declarations; ``reserved`` are the device's own names (case-insensitive)."""
    taken = {name.lower(): f"the device's {name!r}" for name in reserved}
    out = tuple(a for spec in outputs
                for a in _output_attrs(spec, geometry_known, series_length))
    for a in out:
        _claim(taken, a.attr, f"output {a.output!r}")
    units = _units(specs)
    params = tuple(_parameter_attr(p, units.get((p.reducer, p.setting), "")) for p in parameters)
    for p in params:
        _claim(taken, p.attr, f"parameter {p.parameter!r}")
    return Declarations(out, params, geometry_known)


def tango_name(name: str) -> str:
    """A valid Tango attribute name for an output or parameter name."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return clean if _NAME.match(clean) else f"o_{clean}"


def _claim(taken: dict[str, str], attr: str, what: str) -> None:
    other = taken.get(attr.lower())
    if other is not None:
        raise ValueError(f"Tango attribute {attr!r} of {what} clashes with {other} (Tango "
                         "names ignore case); rename the reducer output or give the reducer "
                         "a 'name'")
    taken[attr.lower()] = what


def _output_attrs(spec: OutputSpec, known: bool, n: int) -> list[OutputAttr]:
    attr = tango_name(spec.name)
    dtype = _TANGO_DTYPE.get(spec.dtype, spec.dtype)
    base = OutputAttr(attr, spec.name, spec.kind, dtype, unit=spec.unit,
                      description=spec.description)
    if spec.kind == "image":
        rows, cols = spec.shape
        if not known:
            rows, cols = max(rows, MAX_IMAGE_DIM), max(cols, MAX_IMAGE_DIM)
        return [replace(base, rows=rows, cols=cols)]
    if spec.kind == "spectrum":
        return [replace(base, cols=spec.shape[0] if known else max(spec.shape[0], MAX_SPECTRUM))]
    if spec.kind == "scalar":
        return [base]
    if len(spec.shape) > 1:
        raise ValueError(f"output {spec.name!r}: per-frame values of shape {spec.shape} "
                         "cannot be published (at most one dimension)")
    width = spec.shape[0] if spec.shape else 0
    if width and not known:
        width = max(width, MAX_SPECTRUM)
    values = replace(base, rows=n if width else 0, cols=width or n, series_length=n,
                     description=f"{spec.description} (last {n} frames)")
    frames = OutputAttr(f"{attr}_frame_numbers", output=spec.name, kind="series",
                        dtype="int64", cols=n, frame_numbers=True, series_length=n,
                        description=f"frame numbers of {attr} (last {n} frames)")
    return [values, frames]


def _units(specs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Units declared by reducer settings (``json_schema_extra={"unit": ...}``)."""
    units: dict[tuple[str, str], str] = {}
    for spec in specs:
        try:
            cls = reducer_class(str(spec["type"]))
        except ValueError:
            continue
        name = str(spec.get("name", cls.type_name or spec["type"]))
        for setting, info in cls.Settings.model_fields.items():
            extra = info.json_schema_extra
            unit = extra.get("unit") if isinstance(extra, dict) else None
            if isinstance(unit, str):
                units[(name, setting)] = unit
    return units


def _parameter_attr(p: Parameter, unit: str) -> ParameterAttr:
    kind = _param_type(p.annotation)
    lo, hi = (p.minimum, p.maximum) if kind in ("int", "float", "optional_float") else (None,
                                                                                          None)
    cast: type[int] | type[float] = int if kind == "int" else float
    return ParameterAttr(tango_name(p.name), p.name, kind, p.value, _num(lo, cast),
                         _num(hi, cast),
                         unit or KNOWN_UNITS.get(p.setting, ""), p.description)


def _param_type(annotation: Any) -> ParamType:
    simple: dict[Any, ParamType] = {bool: "bool", int: "int", float: "float", str: "str"}
    if annotation in simple:
        return simple[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal and args and all(isinstance(a, str) for a in args):
        return "str"
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in (int, float):
            return "optional_float"
    return "json"


def _num(value: Any, cast: type[int] | type[float]) -> float | int | None:
    return None if value is None else cast(value)
