"""Reducer types by name, user reducers by ``package.module:Class``, and the builder.

``build_reducer({"type": "moench", "name": "m1", "threshold": 50}, geometry)``; ``type``
is a built-in name (:data:`BUILTIN`) or ``package.module:Class`` of a user reducer that
follows :class:`actors.reduce.base.Reducer`. Errors name the reducer and the setting.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Mapping
from typing import Any, cast

from actors.reduce.base import Reducer, ReducerConfigError
from actors.reduce.generic.hits import HitsReducer
from actors.reduce.generic.images import MaxReducer, MeanReducer, SumReducer
from actors.reduce.generic.radial import RadialReducer
from actors.reduce.generic.roi import RoiReducer
from actors.reduce.generic.total import TotalReducer
from actors.reduce.jungfrau.dark import DarkReducer
from actors.reduce.jungfrau.reducer import JungfrauReducer
from actors.reduce.moench.reducer import MoenchReducer
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)

ReducerClass = type[Reducer[Any, Any]]

BUILTIN: dict[str, ReducerClass] = {
    "moench": MoenchReducer,
    "jungfrau": JungfrauReducer,
    "jungfrau_pedestal": DarkReducer,
    "sum": SumReducer,
    "mean": MeanReducer,
    "max": MaxReducer,
    "total": TotalReducer,
    "roi": RoiReducer,
    "radial": RadialReducer,
    "hits": HitsReducer,
}

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
REQUIRED = ("outputs_spec", "empty", "process", "merge", "outputs")


def load_reducer_class(spec: str) -> ReducerClass:
    """Import ``package.module:Class`` and check that it follows the reducer interface."""
    if not _SPEC.match(spec):
        raise ReducerConfigError(
            f"reducer type {spec!r}: expected a built-in name ({', '.join(BUILTIN)}) or "
            "'package.module:Class'")
    module_name, qualname = spec.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ReducerConfigError(f"reducer type {spec!r}: cannot import module "
                                 f"{module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ReducerConfigError(f"reducer type {spec!r}: module {module_name!r} has no "
                                     f"attribute {qualname!r}") from exc
    if not inspect.isclass(obj):
        raise ReducerConfigError(f"reducer type {spec!r}: {qualname!r} is not a class")
    check_reducer_class(obj, spec)
    return cast(ReducerClass, obj)


def check_reducer_class(cls: type, label: str) -> None:
    """Raise ReducerConfigError unless ``cls`` follows the reducer interface."""
    missing = [m for m in REQUIRED if not callable(getattr(cls, m, None))]
    settings = getattr(cls, "Settings", None)
    if not (inspect.isclass(settings) and hasattr(settings, "model_validate")):
        missing.append("Settings (a pydantic model)")
    if not issubclass(cls, Reducer):
        missing.append("subclass of actors.reduce.base.Reducer")
    if inspect.isabstract(cls):
        abstract = sorted(getattr(cls, "__abstractmethods__", ()))
        missing.append(f"implementations of {', '.join(abstract)}")
    if missing:
        raise ReducerConfigError(f"reducer type {label!r} does not follow the reducer "
                                 f"interface: missing {'; '.join(missing)}")


def reducer_class(type_name: str) -> ReducerClass:
    """The class for a built-in name or a ``package.module:Class`` spec."""
    if type_name in BUILTIN:
        return BUILTIN[type_name]
    if ":" not in type_name:
        raise ReducerConfigError(f"unknown reducer type {type_name!r}; built-in types: "
                                 f"{', '.join(BUILTIN)}, or 'package.module:Class'")
    return load_reducer_class(type_name)


def _validated(spec: Mapping[str, Any]) -> tuple[ReducerClass, Any] | None:
    """(class, validated settings) of a config entry, or None when it does not validate
    (building it reports why)."""
    config = dict(spec)
    try:
        cls = reducer_class(str(config.pop("type", "")))
        config.pop("name", None)
        return cls, cls.Settings.model_validate(config)
    except (ReducerConfigError, ValueError, ImportError):
        return None


def frame_for(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """The exact frame the entry's settings are for (:meth:`Reducer.frame_for`), if any."""
    found = _validated(spec)
    return None if found is None else found[0].frame_for(found[1])


def min_frame(spec: Mapping[str, Any]) -> tuple[int, int]:
    """The smallest frame the entry's settings fit (:meth:`Reducer.min_frame`); (1, 1) for
    an entry that does not validate."""
    found = _validated(spec)
    return (1, 1) if found is None else found[0].min_frame(found[1])


def build_reducer(spec: Mapping[str, Any], geometry: Geometry) -> Reducer[Any, Any]:
    """Build a reducer from ``{"type": ..., "name": optional, **settings}``."""
    config = dict(spec)
    type_name = config.pop("type", None)
    if not isinstance(type_name, str) or not type_name:
        raise ReducerConfigError(f"reducer entry {dict(spec)!r} needs a 'type'")
    name = config.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        raise ReducerConfigError(f"reducer name {name!r} must be an identifier")
    cls = reducer_class(type_name)
    return cls.from_config(config, geometry, name=name)
