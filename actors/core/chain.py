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

from pydantic import ValidationError

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer, ReducerConfigError
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
    minimum: float | None = None
    maximum: float | None = None


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
        from actors.reduce.registry import build_reducer

        return cls([build_reducer(spec, geometry) for spec in specs])

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
        counts = Counter(s for r in self.reducers for s in r.runtime_settings)
        params = []
        for r in self.reducers:
            fields = type(r.settings).model_fields
            for setting in sorted(r.runtime_settings):
                info = fields[setting]
                lo = hi = None
                for meta in info.metadata:
                    lo = getattr(meta, "ge", getattr(meta, "gt", lo))
                    hi = getattr(meta, "le", getattr(meta, "lt", hi))
                params.append(Parameter(
                    setting if counts[setting] == 1 else f"{r.name}.{setting}", r.name,
                    setting, getattr(r.settings, setting), info.annotation,
                    info.description or "", lo, hi))
        return params

    def reconfigure(self, changes: Mapping[str, Any]) -> ReducerChain:
        """A new chain with runtime parameters changed; unknown names are errors."""
        by_public = {p.name: p for p in self.parameters()}
        per_reducer: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            param = by_public.get(name)
            if param is None:
                raise ReducerConfigError(
                    f"unknown runtime parameter {name!r}; known: {', '.join(sorted(by_public))}")
            per_reducer.setdefault(param.reducer, {})[param.setting] = value
        return ReducerChain([r.reconfigure(**per_reducer[r.name]) if r.name in per_reducer
                             else r for r in self.reducers])

    # -- per batch (workers) --------------------------------------------------------------
    def state_needed(self, first_frame: int, last_frame: int) -> dict[str, tuple[int, ...]]:
        needed = {r.name: r.state_needed(first_frame, last_frame) for r in self.reducers}
        return {k: v for k, v in needed.items() if v}

    def process(self, batch: Batch, states: Mapping[str, Mapping[int, Any]] | None = None
                ) -> Partials:
        states = states or {}
        return {r.name: r.process(batch, states.get(r.name)) for r in self.reducers}

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


def reconfigure_specs(specs: Sequence[Mapping[str, Any]], changes: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], ...]:
    """Apply runtime parameter changes to reducer config entries (no geometry needed).

    Names are ``setting`` (when exactly one reducer has that runtime setting) or
    ``reducer.setting``; values are validated by the reducer's settings model.
    """
    from actors.reduce.registry import reducer_class

    classes = [reducer_class(str(spec["type"])) for spec in specs]
    names = [str(spec.get("name", spec["type"])) for spec in specs]
    counts = Counter(s for cls in classes for s in cls.runtime_settings)
    out = [dict(spec) for spec in specs]
    for key, value in changes.items():
        reducer, _, setting = key.rpartition(".")
        targets = [i for i, (cls, name) in enumerate(zip(classes, names))
                   if setting in cls.runtime_settings and reducer in ("", name)]
        if not targets or (not reducer and counts[setting] > 1):
            known = sorted({s if counts[s] == 1 else f"{n}.{s}" for cls, n in zip(classes, names)
                            for s in cls.runtime_settings})
            raise ReducerConfigError(f"unknown runtime parameter {key!r}; known: "
                                     f"{', '.join(known) or '(none)'}")
        i = targets[0]
        out[i][setting] = value
        settings = {k: v for k, v in out[i].items() if k not in ("type", "name")}
        try:
            classes[i].Settings.model_validate(settings)
        except ValidationError as exc:
            raise ReducerConfigError(f"parameter {key!r}: {_first_error(exc)}") from None
    return tuple(out)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err["msg"])
