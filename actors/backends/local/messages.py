"""What the local backend's processes send each other (all small and picklable).

Pixels never travel in messages: a :class:`SlotBatch` says which shared-memory slot holds a
batch and how to read it (compressed bytes that do not fit a slot are the one exception and
travel ``inline``).

Driver <-> ingest: :class:`Call` / :class:`Reply` (commands), :class:`Free` (a batch has left:
its slot is free again), :class:`Finished`; the ingest stage's actions
(:mod:`actors.ingest.core`: ``Begin``, ``Announce``, ``Skip``, ``End``, ``Aborted``) as they
are, a handed-on batch as :class:`Closed`, and :class:`Ready` / :class:`Fault` at start-up.
Driver -> worker: :class:`SetupMsg`, :class:`Task`, :class:`Stop`, :class:`ResultFree`.
Worker -> driver: :class:`Ready`, :class:`Done`, :class:`Failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.core.batch import FrameBatch
from actors.core.chain import Partials
from actors.core.merger import BatchInfo
from actors.core.modules import ModuleLayout, Policy
from actors.core.setup import ChainSetup
from actors.wire.model import Encoding, Geometry

SetupKey = tuple[int, int]  # (acquisition, version)
States = dict[str, dict[int, Any]]


@dataclass(frozen=True)
class SlotBatch:
    """A closed batch: which slot of which ring holds it, and its layout there."""

    acquisition: int
    index: int
    generation: int
    slot: int
    segment: str
    frame_numbers: npt.NDArray[np.int64]
    geometry: Geometry
    encoding: Encoding
    nbytes: int
    setup_version: int
    info: BatchInfo
    offsets: npt.NDArray[np.int64] | None = None  # compressed: (n + 1,) into the bytes
    inline: npt.NDArray[np.uint8] | None = None  # compressed bytes too big for the slot

    @property
    def n(self) -> int:
        return int(self.frame_numbers.shape[0])

    @property
    def key(self) -> tuple[int, int]:
        return (self.acquisition, self.index)

    @property
    def setup_key(self) -> SetupKey:
        return (self.acquisition, self.setup_version)

    def frame_batch(self, buffer: memoryview | None) -> FrameBatch:
        """A read-only :class:`FrameBatch` over the slot's ``buffer`` (zero copy)."""
        g = self.geometry
        if self.encoding is Encoding.RAW:
            assert buffer is not None
            pixels: npt.NDArray[Any] = np.ndarray((self.n, g.rows, g.cols), dtype=g.dtype,
                                                  buffer=buffer)
            pixels.flags.writeable = False
            return FrameBatch(self.acquisition, self.index, self.frame_numbers, g,
                              self.encoding, pixels=pixels)
        if self.inline is not None:
            blobs = self.inline
        else:
            assert buffer is not None
            blobs = np.ndarray((self.nbytes,), dtype=np.uint8, buffer=buffer)
            blobs.flags.writeable = False
        return FrameBatch(self.acquisition, self.index, self.frame_numbers, g, self.encoding,
                          blobs=blobs, offsets=self.offsets)


@dataclass(frozen=True)
class ModuleBatch:
    """One frame-number range of a multi-module detector: each module's closed batch (in
    its own ingest's ring), assembled into full frames by the worker."""

    acquisition: int
    index: int  # the event's batch index (0, 1, ... in range order)
    setup_version: int
    info: BatchInfo
    parts: dict[str, SlotBatch]
    layout: ModuleLayout
    policy: Policy

    @property
    def key(self) -> tuple[int, int]:
        return (self.acquisition, self.index)

    @property
    def setup_key(self) -> SetupKey:
        return (self.acquisition, self.setup_version)

    @property
    def generations(self) -> frozenset[int]:
        return frozenset(p.generation for p in self.parts.values())


# -- both ways ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    id: int
    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    value: Any = None  # the result, or the exception when not ok


@dataclass(frozen=True)
class Ready:
    """A child process is up (ingest: its socket is open)."""

    pid: int
    index: int = -1


@dataclass(frozen=True)
class Fault:
    """A child process could not start."""

    error: str


# -- driver -> ingest --------------------------------------------------------------------------
@dataclass(frozen=True)
class Free:
    """A batch has left the pipeline: its slot is free, its room back."""

    generation: int
    slot: int
    acquisition: int
    index: int


@dataclass(frozen=True)
class Finished:
    """The results stage has finished the acquisition: the ingest may start another."""

    acquisition: int


# -- ingest -> driver --------------------------------------------------------------------------
@dataclass(frozen=True)
class Ring:
    """The ingest made a ring (the driver releases its blocks if the ingest dies)."""

    generation: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class Closed:
    """A batch handed on, in a slot."""

    batch: SlotBatch


# -- driver -> worker --------------------------------------------------------------------------
@dataclass(frozen=True)
class SetupMsg:
    setup: ChainSetup


@dataclass(frozen=True)
class Task:
    batch: SlotBatch | ModuleBatch
    states: States | None
    attempt: int


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class ResultFree:
    """The driver has copied the last partial out of the worker's result block."""


# -- worker -> driver --------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    """A partial, either in the message (``partial``) or as a pickle (``meta``) whose
    out-of-band buffers lie in the worker's result block at ``layout`` (offset, size)."""

    acquisition: int
    index: int
    partial: Partials | None
    seconds: float
    meta: bytes | None = None
    block: str | None = None
    layout: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Failed:
    acquisition: int
    index: int
    error: str
