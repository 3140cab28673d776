"""Multi-module detectors: where each stream's part goes, which parts make an event, and the
assembled frames (pure; no Ray, ZMQ or Tango).

A Jungfrau 4M or a PSI-EIGER sends one stream per module (or per half-module); every header
carries the part's ``row`` and ``column`` in a grid of ``detshape`` parts. Each stream has
its own ingest; its batches are cut on frame-number *ranges* (batch ``k`` holds the frames
``k*L .. (k+1)*L - 1`` of that stream, :func:`range_of`), so the batches of all streams for
one range can go together to one worker, which assembles the full frames
(:func:`assemble`) — no ingest copies a module into a full frame.

* :class:`ModuleLayout`: the full frame and each source's rectangle in it, from the headers
  (``row``/``column`` × the part's shape) or from explicit offsets in the config.
* :class:`EventBuilder`: collects the parts of each range from every source; a range is
  ready when every source has delivered it, has ended past it, or when it has waited
  ``timeout`` since its first part (then the silent sources are named as missing).
* :func:`assemble`: the parts of one range → the frames every source delivered, plus, per
  frame with a missing part, which sources it lacks: such a frame is dropped (counted
  ``incomplete``) or, with ``policy="mask"``, processed with the missing pixels at 0 and
  flagged in the returned mask.

Several PULL clients of one DECTRIS stream (sources of role ``share``) use the same ranges
and events: each client's batch of a range holds whole frames, the share the sender dealt
it, and :func:`assemble` over a :meth:`ModuleLayout.whole` layout merges them by frame
number — the batch one client would have cut from the whole stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from actors.core.batch import FrameBatch
from actors.wire.model import Encoding, Geometry

Policy = Literal["drop", "mask"]
T = TypeVar("T")


@dataclass(frozen=True)
class ModulePart:
    """One source's rectangle in the full frame."""

    source: str
    row0: int
    col0: int
    rows: int
    cols: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row0, self.row0 + self.rows), slice(self.col0, self.col0 + self.cols)


@dataclass(frozen=True)
class ModuleLayout:
    """The full frame and where each source's part goes (parts do not overlap)."""

    rows: int
    cols: int
    parts: tuple[ModulePart, ...]
    #: every source sends whole frames, a share of them (clients of one stream)
    shared: bool = False

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a module layout needs at least one part")
        names = [p.source for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"sources named twice in the layout: {names}")
        if self.shared:
            if any((p.row0, p.col0, p.rows, p.cols) != (0, 0, self.rows, self.cols)
                   for p in self.parts):
                raise ValueError("a shared layout's sources each send the whole frame")
            return
        covered = np.zeros((self.rows, self.cols), dtype=np.int32)
        for p in self.parts:
            if p.rows <= 0 or p.cols <= 0 or p.row0 < 0 or p.col0 < 0 or \
                    p.row0 + p.rows > self.rows or p.col0 + p.cols > self.cols:
                raise ValueError(f"source {p.source!r}: {p.rows}x{p.cols} at ({p.row0}, "
                                 f"{p.col0}) does not fit the {self.rows}x{self.cols} frame")
            covered[p.slices] += 1
        if (covered > 1).any():
            raise ValueError("module parts overlap: "
                             + ", ".join(f"{p.source} at ({p.row0}, {p.col0})"
                                         for p in self.parts))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(p.source for p in self.parts)

    def part(self, source: str) -> ModulePart:
        for p in self.parts:
            if p.source == source:
                return p
        raise KeyError(f"no source {source!r} in the layout ({', '.join(self.sources)})")

    @classmethod
    def whole(cls, rows: int, cols: int, sources: Sequence[str]) -> ModuleLayout:
        """Several clients of one stream: each source sends whole ``rows`` × ``cols``
        frames, a share of the frame numbers."""
        return cls(rows, cols, tuple(ModulePart(s, 0, 0, rows, cols) for s in sources),
                   shared=True)

    @classmethod
    def from_offsets(cls, offsets: Mapping[str, tuple[int, int]],
                     shapes: Mapping[str, tuple[int, int]]) -> ModuleLayout:
        """The layout the config gives: each source's part at its ``(row, column)`` offset;
        a source without a frame shape (it sent nothing) has the others' shape. ValueError
        names what does not fit (parts that overlap)."""
        if not shapes:
            raise ValueError("no module has sent a frame")
        part_shapes = set(shapes.values())
        if len(part_shapes) != 1:
            raise ValueError(f"module parts differ in shape: {dict(shapes)}")
        (prows, pcols), = part_shapes
        parts = tuple(ModulePart(s, r0, c0, prows, pcols) for s, (r0, c0) in offsets.items())
        return cls(max(p.row0 + p.rows for p in parts), max(p.col0 + p.cols for p in parts),
                   parts)

    @classmethod
    def from_headers(cls, headers: Mapping[str, Mapping[str, Any]],
                     shapes: Mapping[str, tuple[int, int]],
                     expected: Sequence[str] = ()) -> ModuleLayout:
        """The layout the slsDetector headers describe: each source's ``row``/``column`` in
        the ``detshape`` grid (``[columns, rows]``), times its part's shape ``(rows,
        cols)``; every part has the same shape. Sources in ``expected`` without a header
        (they sent nothing) take the grid's free places in order. ValueError names what
        does not fit."""
        if set(headers) != set(shapes):
            raise ValueError("a header and a frame shape are needed for every source")
        part_shapes = set(shapes.values())
        if len(part_shapes) != 1:
            raise ValueError(f"module parts differ in shape: {dict(shapes)}")
        (prows, pcols), = part_shapes
        grids = {tuple(h.get("detshape") or ()) for h in headers.values()}
        if len(grids) != 1:
            raise ValueError(f"the sources disagree on detshape: {sorted(grids)}")
        grid, = grids
        if len(grid) != 2 or not all(isinstance(v, int) and v > 0 for v in grid):
            raise ValueError(f"detshape must be [columns, rows] of parts, got {list(grid)}")
        ncols, nrows = int(grid[0]), int(grid[1])
        parts = []
        for source, header in headers.items():
            row, column = header.get("row"), header.get("column")
            if not isinstance(row, int) or not isinstance(column, int) or \
                    not 0 <= row < nrows or not 0 <= column < ncols:
                raise ValueError(f"source {source!r}: row {row!r}, column {column!r} outside "
                                 f"the {nrows}x{ncols} grid of parts")
            parts.append(ModulePart(source, row * prows, column * pcols, prows, pcols))
        silent = [e for e in expected if e not in headers]
        used = {(p.row0, p.col0) for p in parts}
        free = [(r * prows, c * pcols) for r in range(nrows) for c in range(ncols)
                if (r * prows, c * pcols) not in used]
        if len(free) < len(silent):
            raise ValueError(f"no place left in the {nrows}x{ncols} grid for {silent}")
        parts += [ModulePart(source, r0, c0, prows, pcols)
                  for source, (r0, c0) in zip(silent, free, strict=False)]
        return cls(nrows * prows, ncols * pcols, tuple(parts))


def range_of(frame: int, length: int) -> int:
    """The range (batch index) of a frame number: ranges of ``length`` frame numbers."""
    if length < 1:
        raise ValueError(f"range length must be >= 1, got {length}")
    return frame // length


def range_length(max_frames: int, epochs: Iterable[int | None]) -> int:
    """The frames per range: at most ``max_frames``, and a divisor of every epoch length of
    the chain's stateful reducers, so no range spans an epoch boundary it does not start
    at (the batch-cut rule of :mod:`actors.reduce.cutter`)."""
    length = max(1, max_frames)
    common = math.gcd(*(e for e in epochs if e is not None))
    if common:
        while common % length:
            length -= 1
    return length


@dataclass
class Event(Generic[T]):
    """The parts of one range, by source; ``missing`` names the sources without a part."""

    index: int
    parts: dict[str, T]
    missing: tuple[str, ...] = ()


@dataclass
class _Waiting(Generic[T]):
    parts: dict[str, T]
    since: float


@dataclass
class EventBuilder(Generic[T]):
    """Collects the parts of each range from every source (see the module doc).

    ``add`` a source's part of a range; ``end`` a source (it sends nothing after
    ``last`` — None: nothing at all); ``due`` the ranges that waited ``timeout`` for their
    silent sources. Ranges come out in index order, each exactly once; a part that arrives
    for a range already out is refused (``add`` returns False: the caller counts its
    frames late).
    """

    sources: tuple[str, ...]
    timeout: float
    clock: Callable[[], float] = time.monotonic
    _waiting: dict[int, _Waiting[T]] = field(default_factory=dict)
    _reached: dict[str, int] = field(default_factory=dict)  # last range each source sent
    _ended: dict[str, int] = field(default_factory=dict)  # sources done, with their last
    next_index: int = 0  # the first range not yet out

    def add(self, source: str, index: int, part: T) -> tuple[bool, list[Event[T]]]:
        """Take ``part``; (accepted, the events now ready)."""
        if source not in self.sources:
            raise KeyError(f"unknown source {source!r}")
        if index < self.next_index or source in self._ended:
            return False, []
        waiting = self._waiting.setdefault(index, _Waiting({}, self.clock()))
        if source in waiting.parts:
            raise ValueError(f"source {source!r} sent range {index} twice")
        waiting.parts[source] = part
        self._reached[source] = max(self._reached.get(source, -1), index)
        return True, self._ready()

    def end(self, source: str, last: int | None = None) -> list[Event[T]]:
        """``source`` sends nothing more (its last range ``last``)."""
        self._ended[source] = -1 if last is None else last
        return self._ready()

    def due(self) -> list[Event[T]]:
        """Ranges that waited ``timeout`` since their first part go with what they have."""
        out: list[Event[T]] = []
        now = self.clock()
        while self._waiting:
            first = min(self._waiting)
            if now - self._waiting[first].since < self.timeout:
                break
            out += self._release_through(first)
        return out + self._ready()

    def wake_in(self) -> float | None:
        """Seconds until the oldest waiting range is due (None: nothing waits)."""
        if not self._waiting:
            return None
        first = self._waiting[min(self._waiting)]
        return max(0.0, self.timeout - (self.clock() - first.since))

    def flush(self) -> list[Event[T]]:
        """Everything waiting goes now, in order (the acquisition ends)."""
        if not self._waiting:
            return []
        return self._release_through(max(self._waiting))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def parts(self) -> list[T]:
        """Every part still waiting (left in place)."""
        return [p for w in self._waiting.values() for p in w.parts.values()]

    def discard(self) -> list[T]:
        """Every part still waiting, taken out (the acquisition is given up)."""
        parts = self.parts()
        self._waiting.clear()
        return parts

    def _complete(self, index: int) -> bool:
        waiting = self._waiting.get(index)
        have = set(waiting.parts) if waiting else set()
        for source in self.sources:
            if source in have:
                continue
            ended = self._ended.get(source)
            if ended is not None and ended < index:
                continue  # that source is done: it will never send this range
            if self._reached.get(source, -1) > index:
                continue  # it already sent a later range: this one it skipped
            return False
        return True

    def _ready(self) -> list[Event[T]]:
        out: list[Event[T]] = []
        while self._waiting:
            first = min(self._waiting)
            if not self._complete(first):
                break
            out += self._release_through(first)
        return out

    def _release_through(self, last: int) -> list[Event[T]]:
        """Ranges up to ``last`` leave, in order (those nobody sent are not events)."""
        out: list[Event[T]] = []
        for index in sorted(i for i in self._waiting if i <= last):
            parts = self._waiting.pop(index).parts
            missing = tuple(s for s in self.sources if s not in parts)
            out.append(Event(index, parts, missing))
        self.next_index = max(self.next_index, last + 1)
        return out


@dataclass
class Assembled:
    """The full frames of one range (see :func:`assemble`)."""

    frame_numbers: npt.NDArray[np.int64]
    frames: npt.NDArray[Any]  # (n, rows, cols)
    incomplete: dict[int, tuple[str, ...]]  # frame number -> sources missing (all frames)
    masked: npt.NDArray[np.bool_] | None = None  # (n, rows, cols): pixels never received


def assemble(layout: ModuleLayout,
             parts: Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]], *,
             policy: Policy = "drop") -> Assembled:
    """The full frames of one range from each source's ``(frame_numbers, frames)``.

    A frame every source delivered is placed part by part; a frame some source lacks is
    listed in ``incomplete`` with those sources and either left out (``drop``) or placed
    with the missing parts at 0 and marked in ``masked`` (``mask``). Frames come out in
    frame-number order. ValueError if a part's shape does not match the layout.
    """
    if not parts:
        raise ValueError("nothing to assemble")
    dtypes = {np.asarray(f).dtype for _, f in parts.values()}
    if len(dtypes) != 1:
        raise ValueError(f"module parts differ in dtype: {sorted(str(d) for d in dtypes)}")
    dtype, = dtypes
    if layout.shared:
        return _merge(layout, parts, dtype)
    rows_of: dict[str, dict[int, int]] = {}
    for source, (numbers, frames) in parts.items():
        part = layout.part(source)
        if frames.shape[1:] != (part.rows, part.cols) or frames.shape[0] != len(numbers):
            raise ValueError(f"source {source!r}: frames {frames.shape} for "
                             f"{len(numbers)} numbers, expected (n, {part.rows}, "
                             f"{part.cols})")
        rows_of[source] = {int(f): i for i, f in enumerate(numbers)}
    every = sorted(set().union(*(r.keys() for r in rows_of.values())))
    incomplete = {f: missing for f in every
                  if (missing := tuple(s for s in layout.sources
                                       if f not in rows_of.get(s, {})))}
    kept = every if policy == "mask" else [f for f in every if f not in incomplete]
    out = np.zeros((len(kept), layout.rows, layout.cols), dtype=dtype)
    masked = np.zeros(out.shape, dtype=np.bool_) if policy == "mask" and incomplete else None
    for source in layout.sources:
        part = layout.part(source)
        rows, cols = part.slices
        index = rows_of.get(source, {})
        present = [(k, index[f]) for k, f in enumerate(kept) if f in index]
        block = parts[source][1] if source in parts else None
        if block is not None and len(present) == len(kept) == len(block) and \
                all(k == i for k, i in present):
            out[:, rows, cols] = block  # every frame, in order: one copy, no gather
        elif present and block is not None:
            dst, src = (np.array(v, dtype=np.intp) for v in zip(*present))
            out[dst, rows, cols] = block[src]
        if masked is not None and len(present) < len(kept):
            absent = np.setdiff1d(np.arange(len(kept)), [k for k, _ in present])
            masked[absent, rows, cols] = True
    return Assembled(np.asarray(kept, dtype=np.int64), out, incomplete, masked)


def _merge(layout: ModuleLayout,
           parts: Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]],
           dtype: np.dtype[Any]) -> Assembled:
    """Whole frames from several clients → one batch in frame-number order (a number two
    clients both delivered is kept once: a PUSH socket never deals a message twice)."""
    numbers, frames = [], []
    for source, (n, f) in parts.items():
        if f.shape[1:] != layout.shape or f.shape[0] != len(n):
            raise ValueError(f"source {source!r}: frames {f.shape} for {len(n)} numbers, "
                             f"expected (n, {layout.rows}, {layout.cols})")
        numbers.append(np.asarray(n, dtype=np.int64))
        frames.append(f)
    every = np.concatenate(numbers)
    kept, first = np.unique(every, return_index=True)
    if len(parts) == 1:
        out = np.ascontiguousarray(frames[0][first])
    else:
        out = np.empty((len(kept), layout.rows, layout.cols), dtype=dtype)
        offset = 0
        for f in frames:  # copy each client's frames to their places (one copy)
            take = (first >= offset) & (first < offset + len(f))
            out[take] = f[first[take] - offset]
            offset += len(f)
    return Assembled(kept.astype(np.int64), out, {})


def missing_counts(incomplete: Mapping[int, Sequence[str]]) -> dict[str, int]:
    """Frames lacking each source's part (for the per-source ledger)."""
    counts: dict[str, int] = {}
    for sources in incomplete.values():
        for source in sources:
            counts[source] = counts.get(source, 0) + 1
    return counts


def assemble_batches(layout: ModuleLayout, parts: Mapping[str, FrameBatch], *, index: int,
                     policy: Policy = "drop") -> tuple[FrameBatch | None, dict[str, int],
                                                       dict[int, tuple[str, ...]]]:
    """One event's module batches → the full-frame batch a worker reduces (the one
    assembling copy, in the worker), the frames it dropped by reason, and the incomplete
    frames with the sources they lack.

    A module frame that does not decode counts as missing from that source. With ``drop``
    an incomplete frame is dropped as ``incomplete``; with ``mask`` it is reduced with the
    missing pixels at 0. None when no frame is left.
    """
    decoded: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]] = {}
    acquisition = next(iter(parts.values())).acquisition
    for source, batch in parts.items():
        frames, bad = batch.decoded()
        numbers = np.delete(batch.frame_numbers, list(bad)) if bad else batch.frame_numbers
        decoded[source] = (numbers, frames)
    out = assemble(layout, decoded, policy=policy)
    dropped = {"incomplete": len(out.incomplete)} if policy == "drop" and out.incomplete \
        else {}
    if not len(out.frame_numbers):
        return None, dropped, out.incomplete
    dtype = str(out.frames.dtype)
    batch = FrameBatch(acquisition, index, out.frame_numbers,
                       Geometry(layout.rows, layout.cols, dtype), Encoding.RAW,
                       pixels=out.frames)
    return batch, dropped, out.incomplete


def event_frames(frame_numbers: Iterable[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The frame numbers of an event: every number any of its module batches holds."""
    arrays = [np.asarray(a, dtype=np.int64) for a in frame_numbers]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(arrays))
