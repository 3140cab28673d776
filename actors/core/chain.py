"""The configured reducers of a pipeline, run and merged as one unit.

Partials, states and carried values are dicts keyed by reducer name. Output names are the
reducers' own names when unique across the chain, else ``<reducer>.<output>``. Runtime
parameters are addressed as ``<reducer>.<setting>`` or, when only one reducer has that
setting, by the bare setting name (``threshold``), as the seed's Tango interface does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from actors.reduce.base import (
    Batch,
    FrameConverter,
    OutputSpec,
    OutputValue,
    Reducer,
    ReducerConfigError,
)
from actors.wire.model import Geometry

Partials = dict[str, Any]


@dataclass(frozen=True)
class Parameter:
    """A runtime-changeable reducer setting (exposed as a writable Tango attribute)."""

    name: str  # public name: bare setting name when unique, else reducer.setting
    reducer: str
    setting: str
    value: Any
    annotation: Any
    description: str
    minimum: float | int | None = None  # an int setting keeps int bounds
    maximum: float | int | None = None


class ReducerChain:
    """An ordered list of reducers over one frame geometry."""

    def __init__(self, reducers: Sequence[Reducer[Any, Any]]) -> None:
        if not reducers:
            raise ReducerConfigError("a pipeline needs at least one reducer")
        names = [r.name for r in reducers]
        if len(set(names)) != len(names):
            raise ReducerConfigError(f"reducer names must be unique, got {names}")
        self.reducers = list(reducers)
        self.geometry = reducers[0].geometry
        self._by_name = {r.name: r for r in self.reducers}
        counts = Counter(spec.name for r in self.reducers for spec in r.outputs_spec())
        self._output_names = {
            (r.name, spec.name): spec.name if counts[spec.name] == 1 else f"{r.name}.{spec.name}"
            for r in self.reducers for spec in r.outputs_spec()}

    @classmethod
    def from_specs(cls, specs: Sequence[Mapping[str, Any]], geometry: Geometry) -> ReducerChain:
        """Build every entry; an entry with ``input: <name>`` is built for the converted
        frames of that earlier converting reducer (their geometry) and reads them."""
        from actors.reduce.registry import build_reducer

        built: list[Reducer[Any, Any]] = []
        for spec in specs:
            source = spec.get("input")
            if source is None:
                built.append(build_reducer(spec, geometry))
                continue
            converter = next((r for r in built if r.name == source), None)
            if not isinstance(converter, FrameConverter):
                label = spec.get("name") or spec.get("type")
                kinds = [r.name for r in built if isinstance(r, FrameConverter)]
                raise ReducerConfigError(
                    f"reducer {label!r}: input {source!r} is not a converting reducer earlier "
                    f"in the chain (those before it: {kinds or 'none'})")
            converter.frames_wanted = True
            built.append(build_reducer(spec, converter.output_geometry))
        return cls(built)

    def specs(self) -> list[dict[str, Any]]:
        """Config entries that rebuild this chain (current settings included)."""
        out = []
        for r in self.reducers:
            type_name = r.type_name or f"{type(r).__module__}:{type(r).__qualname__}"
            out.append({"type": type_name, "name": r.name, **r.settings.model_dump()})
        return out

    # -- declarations -------------------------------------------------------------------
    @property
    def epochs(self) -> list[int | None]:
        return [r.epoch_length for r in self.reducers]

    def outputs_spec(self) -> list[OutputSpec]:
        return [OutputSpec(self._output_names[(r.name, s.name)], s.kind, s.dtype, s.shape,
                           s.unit, s.description)
                for r in self.reducers for s in r.outputs_spec()]

    def parameters(self) -> list[Parameter]:
        return runtime_parameters(self.specs())

    # -- per batch (workers) --------------------------------------------------------------
    def state_needed(self, first_frame: int, last_frame: int) -> dict[str, tuple[int, ...]]:
        needed = {r.name: r.state_needed(first_frame, last_frame) for r in self.reducers}
        return {k: v for k, v in needed.items() if v}

    def process(self, batch: Batch, states: Mapping[str, Mapping[int, Any]] | None = None
                ) -> Partials:
        states = states or {}
        return {r.name: r.process(self._input(r, batch), states.get(r.name))
                for r in self.reducers}

    def _input(self, reducer: Reducer[Any, Any], batch: Batch) -> Batch:
        """The raw batch, or the converted one the reducer's ``input`` names."""
        source = getattr(reducer.settings, "input", None)
        if source is None:
            return batch
        converter = self._by_name[source]
        assert isinstance(converter, FrameConverter)
        return converter.converted_batch(batch)

    # -- merging (coordinator) ------------------------------------------------------------
    def empty(self) -> Partials:
        return {r.name: r.empty() for r in self.reducers}

    def initial(self, carried: Mapping[str, Any] | None = None) -> Partials:
        carried = carried or {}
        return {r.name: r.initial(carried.get(r.name)) for r in self.reducers}

    def merge(self, a: Partials, b: Partials) -> Partials:
        return {r.name: r.merge(a[r.name], b[r.name]) for r in self.reducers}

    def merge_into(self, acc: Partials, b: Partials) -> Partials:
        """:meth:`merge` for the owner of ``acc`` (see :meth:`Reducer.merge_into`)."""
        return {r.name: r.merge_into(acc[r.name], b[r.name]) for r in self.reducers}

    def advance(self, prefix: Partials, next_frame: int) -> Partials:
        return {r.name: r.advance(prefix[r.name], next_frame) for r in self.reducers}

    def published_states(self, prefix: Partials) -> dict[str, dict[int, Any]]:
        return {r.name: r.published_states(prefix[r.name]) for r in self.reducers}

    def carry_over(self, prefix: Partials) -> dict[str, Any]:
        return {r.name: r.carry_over(prefix[r.name]) for r in self.reducers}

    def outputs(self, prefix: Partials) -> dict[str, OutputValue]:
        out: dict[str, OutputValue] = {}
        for r in self.reducers:
            for name, value in r.outputs(prefix[r.name]).items():
                out[self._output_names[(r.name, name)]] = value
        return out

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        """Every reducer's :meth:`~actors.reduce.base.Reducer.warnings` about the chain's
        ``outputs`` (those present)."""
        out: list[str] = []
        for r in self.reducers:
            own = {spec.name: outputs[public] for spec in r.outputs_spec()
                   if (public := self._output_names[(r.name, spec.name)]) in outputs}
            if own:
                out.extend(r.warnings(own))
        return out


def runtime_parameters(specs: Sequence[Mapping[str, Any]]) -> list[Parameter]:
    """The runtime parameters of a chain's config entries, with their current values (no
    geometry needed). The one naming rule: the bare setting name when exactly one reducer has
    that runtime setting, else ``reducer.setting``."""
    from actors.reduce.registry import reducer_class

    classes = [reducer_class(str(spec["type"])) for spec in specs]
    counts = Counter(s for cls in classes for s in cls.runtime_settings)
    params = []
    for spec, cls in zip(specs, classes):
        name = str(spec.get("name") or cls.default_name())
        settings = cls.Settings.model_validate(
            {k: v for k, v in spec.items() if k not in ("type", "name")})
        fields = cls.Settings.model_fields
        for setting in sorted(cls.runtime_settings):
            info = fields[setting]
            lo = hi = None
            for meta in info.metadata:
                lo = getattr(meta, "ge", getattr(meta, "gt", lo))
                hi = getattr(meta, "le", getattr(meta, "lt", hi))
            params.append(Parameter(
                setting if counts[setting] == 1 else f"{name}.{setting}", name, setting,
                getattr(settings, setting), info.annotation, info.description or "", lo, hi))
    return params


def reconfigure_specs(specs: Sequence[Mapping[str, Any]], changes: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], ...]:
    """Config entries with runtime parameters changed (public names, see
    :func:`runtime_parameters`); every value is validated by its reducer's settings model,
    strictly (no bool or text taken for a number; an int is a float), and all changes apply
    or none (:class:`ReducerConfigError` names the bad one)."""
    from actors.reduce.registry import reducer_class

    by_public = {p.name: p for p in runtime_parameters(specs)}
    index = {str(spec.get("name") or reducer_class(str(spec["type"])).default_name()): i
             for i, spec in enumerate(specs)}
    out = [dict(spec) for spec in specs]
    for key, value in changes.items():
        param = by_public.get(key)
        if param is None:
            raise ReducerConfigError(f"unknown runtime parameter {key!r}; known: "
                                     f"{', '.join(sorted(by_public)) or '(none)'}")
        i = index[param.reducer]
        cls = reducer_class(str(out[i]["type"]))
        if isinstance(value, np.generic):  # numpy scalars as their Python values
            value = value.item()
        out[i][param.setting] = value
        try:
            annotation = cls.Settings.model_fields[param.setting].rebuild_annotation()
            TypeAdapter(annotation).validate_python(value, strict=True)
            cls.Settings.model_validate({k: v for k, v in out[i].items()
                                         if k not in ("type", "name")})
        except ValidationError as exc:
            raise ReducerConfigError(f"parameter {key!r}: {_first_error(exc)}") from None
    return tuple(out)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err["msg"])
