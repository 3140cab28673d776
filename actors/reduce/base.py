"""The reducer interface: batches in, mergeable partials out, named outputs at the end.

A reducer is built from a pydantic settings model and the frame :class:`Geometry`. A
worker calls :meth:`Reducer.process` on a :class:`Batch` and returns a small picklable
*partial*; the coordinator merges partials **in batch order** with :meth:`Reducer.merge`
(associative; :meth:`Reducer.empty` is its identity) and turns a merged partial into named
outputs with :meth:`Reducer.outputs`, whose names, kinds, dtypes and shapes are declared
up front by :meth:`Reducer.outputs_spec` (the Tango device and the file writer are
generated from these declarations).

``merge`` never mutates its inputs: it returns a new partial, which may share read-only
arrays with its inputs.

Sequential state (only the MOENCH pedestal needs it) follows a small hand-off protocol;
stateless reducers inherit the no-op defaults below. For a batch whose frames are
``first_frame .. last_frame`` the coordinator

1. asks :meth:`Reducer.state_needed` for the state keys the batch needs,
2. waits until :meth:`Reducer.published_states` of its *prefix* (the in-order merge of
   every earlier batch, started from :meth:`Reducer.initial`) has all of them,
   calling :meth:`Reducer.advance` with the batch's first frame so that every epoch
   before it is folded,
3. passes ``{key: state}`` to :meth:`Reducer.process` on the worker.

See :mod:`actors.reduce.moench.reducer` for the MOENCH specifics and
:mod:`actors.reduce.cutter` for the batch-cut rule the ingest must follow.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from actors.wire.model import Geometry

logger = logging.getLogger(__name__)

T = TypeVar("T")

OutputKind = Literal["image", "spectrum", "scalar", "series"]
OUTPUT_KINDS: tuple[str, ...] = ("image", "spectrum", "scalar", "series")


class ReducerConfigError(ValueError):
    """A reducer could not be configured; the message names the reducer and the setting."""


@dataclass(frozen=True)
class Batch:
    """Consecutive frames of one acquisition, as a worker receives them.

    ``index`` is the 0-based batch sequence number within the acquisition; ``frames`` is
    ``(n, rows, cols)`` of the detector dtype (may be a read-only view);
    ``frame_numbers`` is ``(n,)`` int64, strictly increasing, 0-based within the
    acquisition (gaps are lost frames); ``mask`` is ``(rows, cols)`` bool with True for
    excluded pixels (DECTRIS pixel mask), or None.

    :meth:`shared` lets reducers that need the same pass over the pixels (``sum`` and
    ``total`` both need the masked sums) compute it once per batch.
    """

    index: int
    frames: npt.NDArray[Any]
    frame_numbers: npt.NDArray[np.int64]
    mask: npt.NDArray[np.bool_] | None = None
    _shared: dict[Any, Any] = field(default_factory=dict, init=False, repr=False,
                                    compare=False)

    def __post_init__(self) -> None:
        if self.frames.ndim != 3:
            raise ValueError(f"batch frames must be (n, rows, cols), got {self.frames.shape}")
        n = self.frames.shape[0]
        if self.frame_numbers.shape != (n,):
            raise ValueError(
                f"batch frame_numbers shape {self.frame_numbers.shape} != ({n},)")
        if n > 1 and not bool(np.all(np.diff(self.frame_numbers) > 0)):
            raise ValueError("batch frame_numbers must be strictly increasing")
        if self.mask is not None and self.mask.shape != self.frames.shape[1:]:
            raise ValueError(
                f"batch mask shape {self.mask.shape} != frame shape {self.frames.shape[1:]}")

    @property
    def n(self) -> int:
        return int(self.frames.shape[0])

    def shared(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()``, computed once per batch for equal ``key``: the key must name
        everything the value depends on besides this batch (function, settings)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]  # type: ignore[no-any-return]

    @property
    def first_frame(self) -> int:
        return int(self.frame_numbers[0])

    @property
    def last_frame(self) -> int:
        return int(self.frame_numbers[-1])


@dataclass(frozen=True)
class OutputSpec:
    """Declaration of one reducer output.

    ``kind`` is "image" (shape (rows, cols)), "spectrum" (shape (n,)), "scalar" (shape
    ()) or "series" (one value of ``shape`` per frame, reported with frame numbers).
    ``dtype`` is a numpy dtype name.
    """

    name: str
    kind: OutputKind
    dtype: str
    shape: tuple[int, ...]
    unit: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output {self.name!r}: kind {self.kind!r} not in {OUTPUT_KINDS}")
        np.dtype(self.dtype)  # raises TypeError for an unknown dtype name


@dataclass(frozen=True)
class Series:
    """A per-frame output: ``values[i]`` belongs to frame ``frame_numbers[i]``."""

    frame_numbers: npt.NDArray[np.int64]
    values: npt.NDArray[Any]


OutputValue = npt.NDArray[Any] | float | int | Series

SettingsT = TypeVar("SettingsT", bound=BaseModel)
PartialT = TypeVar("PartialT")


class ReducerSettings(BaseModel):
    """Base for reducer settings: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reducer(ABC, Generic[SettingsT, PartialT]):
    """Abstract base of every reducer (built-in and user-written).

    Subclasses set :attr:`Settings` (a :class:`ReducerSettings` subclass), and may list in
    :attr:`runtime_settings` the settings that may change during an acquisition (the
    coordinator applies a change by building a new instance from batch *k* on, so
    ``process`` depends only on (settings, batch, state) and ``merge`` only on partials).
    """

    Settings: ClassVar[type[BaseModel]]
    runtime_settings: ClassVar[frozenset[str]] = frozenset()
    type_name: ClassVar[str] = ""

    def __init__(self, settings: SettingsT, geometry: Geometry, *, name: str | None = None):
        self.settings = settings
        self.geometry = geometry
        self.name = name or self.default_name()

    @classmethod
    def default_name(cls) -> str:
        """The name of a reducer whose config entry gives none."""
        return cls.type_name or cls.__name__.lower()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any], geometry: Geometry,
                    *, name: str | None = None) -> Self:
        """Validate ``config`` with :attr:`Settings` and build the reducer."""
        label = name or cls.type_name or cls.__name__
        try:
            settings = cls.Settings.model_validate(dict(config))
        except ValidationError as exc:
            raise ReducerConfigError(_describe(label, exc)) from exc
        try:
            return cls(settings, geometry, name=name)  # type: ignore[arg-type]
        except ValueError as exc:
            if isinstance(exc, ReducerConfigError):
                raise
            raise ReducerConfigError(f"reducer {label!r}: {exc}") from exc

    @classmethod
    def min_frame(cls, settings: SettingsT) -> tuple[int, int]:
        """The smallest frame (rows, cols) these settings fit: declarations made before the
        stream gives the geometry (the Tango attributes) use a frame at least this big."""
        return (1, 1)

    @classmethod
    def frame_for(cls, settings: SettingsT) -> tuple[int, int] | None:
        """The exact frame these settings are for, when they say (a calibration made for one
        detector), else None: declarations made before the stream gives the geometry then
        use it."""
        return None

    def warnings(self, outputs: Mapping[str, OutputValue]) -> list[str]:
        """What makes these outputs (this reducer's, by its own names) not to be trusted,
        in words for the log, the result, Tango's Status and the file (none by default)."""
        return []

    def reconfigure(self, **changes: Any) -> Self:
        """A new instance with ``changes`` applied; only :attr:`runtime_settings` may change."""
        fixed = sorted(set(changes) - self.runtime_settings)
        if fixed:
            raise ReducerConfigError(
                f"reducer {self.name!r}: setting(s) {', '.join(fixed)} cannot change during "
                f"an acquisition (runtime settings: {', '.join(sorted(self.runtime_settings))})")
        merged = {**self.settings.model_dump(), **changes}
        return type(self).from_config(merged, self.geometry, name=self.name)

    # -- the interface --------------------------------------------------------------------
    @abstractmethod
    def outputs_spec(self) -> list[OutputSpec]:
        """Declared outputs (names unique across the pipeline)."""

    @abstractmethod
    def empty(self) -> PartialT:
        """The identity for :meth:`merge`."""

    @abstractmethod
    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> PartialT:
        """Reduce one batch; ``state`` holds the keys :meth:`state_needed` asked for."""

    @abstractmethod
    def merge(self, a: PartialT, b: PartialT) -> PartialT:
        """Combine ``a`` and ``b`` (``a`` precedes ``b`` in batch order); inputs unchanged."""

    def merge_into(self, acc: PartialT, b: PartialT) -> PartialT:
        """:meth:`merge` for a caller that owns ``acc`` and never uses it again (the results
        stage's running prefix): may reuse arrays of ``acc`` that an earlier ``merge_into``
        allocated, instead of allocating new ones. ``b`` stays unchanged."""
        return self.merge(acc, b)

    @abstractmethod
    def outputs(self, partial: PartialT) -> dict[str, OutputValue]:
        """Named outputs, keyed by the names of :meth:`outputs_spec`."""

    # -- sequential state (stateless reducers keep these defaults) ------------------------
    @property
    def epoch_length(self) -> int | None:
        """Frames per state epoch the ingest must respect when cutting batches (None: any)."""
        return None

    def initial(self, carried: Any = None) -> PartialT:
        """Start of the prefix of an acquisition; ``carried`` comes from :meth:`carry_over`."""
        return self.empty()

    def state_needed(self, first_frame: int, last_frame: int) -> tuple[int, ...]:
        """State keys a batch of frames ``first_frame..last_frame`` needs."""
        return ()

    def advance(self, prefix: PartialT, next_frame: int) -> PartialT:
        """Tell the prefix that every frame before ``next_frame`` has been merged."""
        return prefix

    def published_states(self, prefix: PartialT) -> dict[int, Any]:
        """States the prefix has published (key -> state), for batches still to dispatch."""
        return {}

    def carry_over(self, prefix: PartialT) -> Any:
        """What the next acquisition's :meth:`initial` takes from this one (None: nothing)."""
        return None


@runtime_checkable
class FrameConverter(Protocol):
    """A reducer whose converted frames later reducers of the chain can read (their
    ``input`` setting names it): the chain sets :attr:`frames_wanted` when one does, and
    hands them :meth:`converted_batch` instead of the raw batch."""

    name: str
    frames_wanted: bool

    @property
    def output_geometry(self) -> Geometry: ...

    def converted_batch(self, batch: Batch) -> Batch: ...


def _describe(label: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"setting {where!r}: {err['msg']}")
    return f"reducer {label!r}: " + "; ".join(parts)


def readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Mark ``array`` read-only (partials share arrays) and return it."""
    array.flags.writeable = False
    return array
