"""The event stage of a multi-module detector: the action streams of one ingest per module
become one stream of events for the dispatcher and the results stage (pure).

Each module's ingest (:class:`~actors.ingest.core.IngestCore` with range batches) announces
its acquisition (``Begin``), hands on one batch per frame-number range (``HandOn``) and ends
it (``End``) or discards it (``Aborted``), with its own ledger. :class:`ModuleEvents` turns
them into what a single-stream ingest would have produced for the whole detector:

* one ``Begin`` once every module has begun: the layout comes from the modules' headers
  (:meth:`~actors.core.modules.ModuleLayout.from_headers`), the chain setup is the full
  frame's;
* one :class:`EventHandOn` per range, numbered 0, 1, … in range order, holding each module's
  stored batch (whatever the transport stored: an ObjectRef, a slot) — the worker assembles
  it (:func:`~actors.core.modules.assemble_batches`); a range some module never delivers
  goes after ``timeout`` with that module missing, its frames then incomplete;
* one ``End`` once every module has ended, with the detector's ledger: a frame counts once,
  as received if any module delivered it, lost if none did (a gap); what each module lost
  or had rejected stays in its own ledger (``sources``).

A part that arrives for a range already gone is refused: its frames are counted ``late``
in that module's ledger (the caller returns the part's storage).

With ``share`` the sources are several PULL clients of one stream: each delivers whole
frames, a share of them. The acquisition begins with the first client's ``Begin`` (every
client's chain setup is the same: the series start reached them all), the layout is
:meth:`~actors.core.modules.ModuleLayout.whole` (the worker merges the parts by frame
number) and the detector's ledger counts a frame lost when no client received it, up to
the number of images the series declared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np

from actors.config import PipelineConfig
from actors.core.chain import ReducerChain
from actors.core.events import Aborted, Begin, End
from actors.core.merger import BatchInfo
from actors.core.modules import EventBuilder, ModuleLayout, Policy, event_frames
from actors.core.setup import ChainSetup
from actors.core.status import IngestStatus, Ledger
from actors.wire.detector import DetectorInfo

logger = logging.getLogger(__name__)

S = TypeVar("S")  # what the transport stored for a module batch


@dataclass(frozen=True)
class ModulePart(Generic[S]):
    """One module's batch of a range, as stored by its ingest's transport."""

    source: str
    index: int  # the range
    frame_numbers: np.ndarray[Any, Any]
    stored: S
    setup_version: int
    acquisition: int = 0


@dataclass(frozen=True)
class EventHandOn(Generic[S]):
    """One range of the whole detector: its modules' stored batches, to one worker."""

    acquisition: int
    info: BatchInfo
    parts: Mapping[str, S]
    missing: tuple[str, ...]
    layout: ModuleLayout
    policy: Policy
    setup_version: int


@dataclass
class _Acquisition(Generic[S]):
    acquisition: int
    begun: dict[str, Begin] = field(default_factory=dict)
    ended: dict[str, End] = field(default_factory=dict)
    aborted: dict[str, Aborted] = field(default_factory=dict)
    held: list[ModulePart[S]] = field(default_factory=list)  # parts before the layout
    layout: ModuleLayout | None = None
    setup: ChainSetup | None = None
    chain: ReducerChain | None = None
    builder: EventBuilder[ModulePart[S]] | None = None
    events: int = 0
    frames: int = 0  # frames of the events handed on (received by any module)
    last_frame: int = -1
    late: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    done: bool = False


Out = Begin | EventHandOn[Any] | End | Aborted


class ModuleEvents(Generic[S]):
    """Merges the modules' ingest actions of each acquisition (see the module doc)."""

    def __init__(self, sources: tuple[str, ...], *, timeout: float, policy: Policy = "drop",
                 clock: Callable[[], float] = time.monotonic, share: bool = False,
                 offsets: Mapping[str, tuple[int, int]] | None = None) -> None:
        """``offsets``: each module's place in the frame from the config (default: from
        the headers)."""
        if len(set(sources)) != len(sources) or not sources:
            raise ValueError(f"module sources must be distinct names, got {sources}")
        self.sources = sources
        self.share = share
        self.offsets = dict(offsets) if offsets else None
        self.timeout = timeout
        self.policy = policy
        self.clock = clock
        self.acq: _Acquisition[S] | None = None
        self.refused: list[ModulePart[S]] = []  # late parts: their storage goes back

    @classmethod
    def for_config(cls, config: PipelineConfig) -> ModuleEvents[Any]:
        """The event stage of a pipeline with several sources."""
        names = tuple(config.source_names)
        offsets = {n: s.offset for n, s in zip(names, config.all_sources, strict=True)
                   if s.offset is not None}
        return cls(names, timeout=config.modules.timeout, policy=config.modules.incomplete,
                   share=config.shared, offsets=offsets or None)

    # -- from the modules' ingests -------------------------------------------------------------
    def begin(self, source: str, event: Begin) -> list[Out]:
        acq = self._acq(event.setup.acquisition)
        acq.begun[source] = event
        if self.share and acq.setup is not None and not acq.done:
            self._same_frames(acq, source, event)
            return []
        if not self.share and not self._all_in(acq) or acq.setup is not None or acq.done:
            return []
        return self._configure(acq)

    def _all_in(self, acq: _Acquisition[S]) -> bool:
        """Every module has begun, or ended without a frame (it never will begin): the
        layout can be made (a silent module takes the free place in the grid)."""
        return bool(acq.begun) and all(s in acq.begun or s in acq.ended
                                       for s in self.sources)

    def _same_frames(self, acq: _Acquisition[S], source: str, event: Begin) -> None:
        """(share) every client must see the frames the first one configured for."""
        assert acq.setup is not None
        theirs, ours = event.setup.geometry, acq.setup.geometry
        if theirs != ours and acq.error is None:
            acq.error = (f"source {source} receives {theirs.rows}x{theirs.cols} "
                         f"{theirs.dtype} frames, the first client {ours.rows}x{ours.cols} "
                         f"{ours.dtype}: they do not share one stream")
            logger.error("acquisition %d: %s", acq.acquisition, acq.error)

    def hand_on(self, part: ModulePart[S], acquisition: int) -> list[Out]:
        acq = self._acq(acquisition)
        if acq.done or acq.error is not None:
            self._refuse(acq, part)
            return []
        if acq.builder is None:
            acq.held.append(part)
            return []
        accepted, events = acq.builder.add(part.source, part.index, part)
        if not accepted:
            self._refuse(acq, part)
        return self._events(acq, events)

    def discard(self, acquisition: int) -> None:
        """The acquisition failed elsewhere (a stage died): nothing more comes out of it;
        parts still arriving are refused."""
        acq = self._acq(acquisition)
        acq.done = True
        self.refused += acq.held
        acq.held.clear()
        if acq.builder is not None:
            self.refused += acq.builder.discard()

    def failed_ledger(self, acquisition: int, ledger: Ledger) -> Ledger:
        """The detector's ledger of an acquisition that fails now (an ingest died), from
        the one a module's ingest had: every frame of the events handed on, or of the parts
        still waiting here, was received (with clients sharing a stream, one client's count
        is only its share)."""
        acq = self.acq
        if acq is None or acq.acquisition != acquisition:
            return ledger
        waiting: set[int] = set()
        for part in [*acq.held, *(acq.builder.parts() if acq.builder is not None else [])]:
            waiting.update(int(f) for f in part.frame_numbers)
        return replace(ledger, received=max(ledger.received, acq.frames + len(waiting)))

    def end(self, source: str, event: End) -> list[Out]:
        acq = self._acq(event.acquisition)
        if acq.done:
            return []
        acq.ended[source] = event
        if event.error and acq.error is None:
            acq.error = f"{'client' if self.share else 'module'} {source}: {event.error}"
        out: list[Out] = []
        if acq.setup is None and acq.error is None and self._all_in(acq):
            out += self._configure(acq)  # (it ends every module that ended already)
        elif acq.builder is not None:
            last = self._last_range(acq, source)
            out += self._events(acq, acq.builder.end(source, last))
        if len(acq.ended) + len(acq.aborted) == len(self.sources):
            out += self._finish(acq)
        return out

    def aborted(self, source: str, event: Aborted) -> list[Out]:
        acq = self._acq(event.acquisition)
        if acq.done:
            return []
        acq.aborted[source] = event
        if len(acq.aborted) + len(acq.ended) < len(self.sources):
            return []  # (a module that ended before the abort reached it counts as done)
        acq.done = True
        self.refused += acq.held
        acq.held.clear()
        if acq.builder is not None:
            self.refused += acq.builder.discard()
        return [Aborted(acq.acquisition, self._ledger(acq), event.error)]

    def due(self) -> list[Out]:
        """Ranges that waited ``timeout`` for a silent module go now."""
        acq = self.acq
        if acq is None or acq.builder is None or acq.done:
            return []
        return self._events(acq, acq.builder.due())

    def wake_in(self) -> float | None:
        acq = self.acq
        if acq is None or acq.builder is None or acq.done:
            return None
        return acq.builder.wake_in()

    @property
    def running(self) -> int | None:
        """The acquisition being assembled (None: none, or it has ended here)."""
        acq = self.acq
        return None if acq is None or acq.done else acq.acquisition

    def take_refused(self) -> list[ModulePart[S]]:
        """Parts nobody will process (late, or of a failed acquisition): free their storage."""
        out, self.refused = self.refused, []
        return out

    # -- internals ---------------------------------------------------------------------------
    def _acq(self, acquisition: int) -> _Acquisition[S]:
        if self.acq is None or self.acq.acquisition != acquisition:
            if self.acq is not None and not self.acq.done:
                logger.warning("acquisition %d replaced by %d before every module ended",
                               self.acq.acquisition, acquisition)
            self.acq = _Acquisition(acquisition)
        return self.acq

    def _configure(self, acq: _Acquisition[S]) -> list[Out]:
        headers: dict[str, Mapping[str, Any]] = {}
        shapes: dict[str, tuple[int, int]] = {}
        for source, begin in acq.begun.items():
            headers[source] = begin.detector.header if begin.detector is not None else {}
            shapes[source] = begin.setup.geometry.shape
        if self.share:
            return self._configure_share(acq)
        first = acq.begun[next(s for s in self.sources if s in acq.begun)].setup
        try:
            dtypes = {b.setup.geometry.dtype for b in acq.begun.values()}
            if len(dtypes) != 1:
                raise ValueError(f"modules differ in pixel type: {sorted(dtypes)}")
            layout = ModuleLayout.from_offsets(self.offsets, shapes) if self.offsets else \
                ModuleLayout.from_headers(headers, shapes, self.sources)
            geometry = replace(first.geometry, rows=layout.rows, cols=layout.cols)
            setup = replace(first, geometry=geometry, reorder="none", mask=None)
            chain = setup.build()
        except ValueError as exc:
            acq.error = f"the modules do not make one detector: {exc}"
            logger.error("acquisition %d: %s", acq.acquisition, acq.error)
            self.refused += acq.held
            acq.held.clear()
            return []
        acq.layout, acq.setup, acq.chain = layout, setup, chain
        acq.builder = EventBuilder(self.sources, self.timeout, self.clock)
        detector = _detector(acq.begun[next(s for s in self.sources if s in acq.begun)]
                             .detector, layout)
        out: list[Out] = [Begin(setup, detector)]
        held, acq.held = acq.held, []
        for part in held:
            accepted, events = acq.builder.add(part.source, part.index, part)
            if not accepted:
                self._refuse(acq, part)
            out += self._events(acq, events)
        for source in list(acq.ended):  # a module that ended before the others began
            out += self._events(acq, acq.builder.end(source, self._last_range(acq, source)))
        return out

    def _configure_share(self, acq: _Acquisition[S]) -> list[Out]:
        """(share) the first client's setup is the detector's; parts are whole frames."""
        (begin,) = acq.begun.values()
        setup = begin.setup
        acq.setup, acq.chain = setup, setup.build()
        acq.layout = ModuleLayout.whole(setup.geometry.rows, setup.geometry.cols,
                                        self.sources)
        acq.builder = EventBuilder(self.sources, self.timeout, self.clock)
        out: list[Out] = [Begin(setup, begin.detector)]
        for source in list(acq.ended):  # a client that ended with nothing before this
            out += self._events(acq, acq.builder.end(source, self._last_range(acq, source)))
        return out

    def _last_range(self, acq: _Acquisition[S], source: str) -> int | None:
        end = acq.ended[source]
        return end.batches - 1 if end.batches else None

    def _events(self, acq: _Acquisition[S], events: list[Any]) -> list[Out]:
        assert acq.layout is not None and acq.chain is not None and acq.setup is not None
        out: list[Out] = []
        for event in events:
            parts: dict[str, ModulePart[S]] = event.parts
            numbers = event_frames(p.frame_numbers for p in parts.values())
            first, last = int(numbers[0]), int(numbers[-1])
            info = BatchInfo(acq.events, first, last, len(numbers),
                             acq.chain.state_needed(first, last))
            version = max(p.setup_version for p in parts.values())
            out.append(EventHandOn(acq.acquisition, info, {s: p.stored for s, p in
                                                            parts.items()},
                                   event.missing, acq.layout, self.policy, version))
            acq.events += 1
            acq.frames += len(numbers)
            acq.last_frame = max(acq.last_frame, last)
        return out

    def _refuse(self, acq: _Acquisition[S], part: ModulePart[S]) -> None:
        acq.late[part.source] = acq.late.get(part.source, 0) + len(part.frame_numbers)
        self.refused.append(part)

    def _finish(self, acq: _Acquisition[S]) -> list[Out]:
        out: list[Out] = []
        if acq.builder is not None:
            out += self._events(acq, acq.builder.flush())
        acq.done = True
        return out + [End(acq.acquisition, acq.events, self._ledger(acq), acq.error,
                          _timing(acq.ended.values()))]

    def _ledger(self, acq: _Acquisition[S]) -> Ledger:
        """The detector's ledger: events received, gaps no module filled lost; each
        module's own ledger under ``sources``."""
        per_source: dict[str, Ledger] = {}
        for source in self.sources:
            event = acq.ended.get(source) or acq.aborted.get(source)
            if event is not None:
                ledger = event.ledger
                if acq.late.get(source):
                    ledger = ledger.with_drops({"late": acq.late[source]})
                per_source[source] = ledger
        rejected: dict[str, int] = {}
        for ledger in per_source.values():
            for reason, n in ledger.rejected.items():
                rejected[reason] = rejected.get(reason, 0) + n
        last = acq.last_frame + 1
        if self.share:  # (frames the series declared that no client received are lost)
            declared = [b.detector.number_of_images for b in acq.begun.values()
                        if b.detector is not None and b.detector.number_of_images]
            last = max([last, *declared])
        lost = max(0, last - acq.frames)
        return Ledger(acq.acquisition, received=acq.frames, dispatched=acq.frames,
                      dispatched_batches=acq.events, lost=lost, rejected=rejected,
                      sources=per_source)


def _timing(ends: Iterable[End]) -> dict[str, float]:
    """The detector's ingest times from its sources': the earliest start and first frame,
    the latest last frame and close."""
    out: dict[str, float] = {}
    for end in ends:
        for key, value in end.timing.items():
            pick = min if key in ("started", "first_frame") else max
            out[key] = pick(out.get(key, value), value)
    return out


def live_status(status: IngestStatus, others: Mapping[str, IngestStatus], own: str, *,
                share: bool) -> IngestStatus:
    """The first source's ingest status (``own``) with every source's ledger (``sources``),
    the detector's ``received`` while it runs (the frames any module received, the most of
    them, or for clients sharing a stream the sum of their shares) and every source's frames
    that came with no acquisition for them (``idle_dropped``)."""
    ledgers = {own: status.ledger, **{k: v.ledger for k, v in others.items()}}
    sources = {k: v for k, v in ledgers.items() if v is not None}
    ledger = status.ledger
    if ledger is not None and status.state != "idle" and sources:
        counts = [v.received for v in sources.values() if v.acquisition == ledger.acquisition]
        if counts:
            ledger = replace(ledger, received=sum(counts) if share else max(counts))
    idle = status.idle_dropped + sum(v.idle_dropped for v in others.values())
    return replace(status, ledger=ledger, sources=sources, idle_dropped=idle)


def _detector(first: DetectorInfo | None, layout: ModuleLayout) -> DetectorInfo | None:
    """The whole detector: the first module's facts over the full frame."""
    if first is None:
        return None
    rows = len({p.row0 for p in layout.parts})
    cols = len({p.col0 for p in layout.parts})
    return replace(first, rows=layout.rows, cols=layout.cols, module_grid=(rows, cols))
