"""The ingest stage's logic (pure, single-threaded): acquisitions, batches, runtime
parameters, room for work in flight, and the ledger.

:class:`IngestCore` takes decoded messages and commands and returns :data:`Action` values
for its transport to carry out in order (store and hand on a batch, announce a setup, end or
abort an acquisition). It never touches sockets, Ray or shared memory; the async
:class:`~actors.ingest.stage.IngestStage` feeds it from the receiver and runs its actions
through a backend's transport, so both backends ingest through this one class.

* **Acquisitions** are numbered here (the last one + 1, whoever starts them). After its
  end (end of series, or stop) an acquisition *drains* until the transport reports it
  :meth:`~IngestCore.finished` (every batch settled downstream); frames arriving while no
  acquisition runs are counted in ``idle_dropped``.
* **Batches** close when full, at a cut the stateful reducers need, after
  ``batch.max_delay`` (:meth:`~IngestCore.flush_due`), at the end, and before a parameter
  change. The first frame fixes the geometry and the chain setup (:class:`Begin`).
* **Runtime parameters** live here, versioned (:meth:`~IngestCore.set`): the one source of
  truth that status reports and every stage follows; a change applies from the next batch.
* **Room**: at most ``max_inflight`` batches (and ``store_budget`` bytes) are handed on and
  not returned (:meth:`~IngestCore.returned`). A closed batch without room is dropped
  (``overflow: drop``, counted ``overflow``) or held (``overflow: block``): while a batch is
  held (:attr:`~IngestCore.blocked`) the stage stops reading, so the sender is
  back-pressured.
* **A share of a stream** (``share``: one of several PULL clients of one DECTRIS PUSH
  stream, each dealt some of the messages): the series start reaches one client only, so a
  client that reads it says so (:class:`SeriesSeen`, the transport gives it to the others:
  :meth:`~IngestCore.peer_start`) and images that come before it wait (at most
  ``WAIT_FOR_START`` of them) instead of being batched without its mask; the client that
  reads the series end says so too (:class:`PeerEnd`) and the others close once nothing has
  reached them for ``modules.drain`` seconds (:meth:`~IngestCore.drain`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from actors.config import PipelineConfig
from actors.core.batch import BatchAssembler, FrameBatch
from actors.core.chain import ReducerChain, reconfigure_specs, runtime_parameters
from actors.core.events import (
    Aborted,
    Action,
    Announce,
    Begin,
    Checkpoint,
    End,
    HandOn,
    PeerEnd,
    SeriesSeen,
    Skip,
)
from actors.core.merger import BatchInfo
from actors.core.modules import range_length
from actors.core.rates import RateMeter
from actors.core.setup import ChainSetup
from actors.core.status import IngestStatus, Ledger, State
from actors.wire.detector import describe
from actors.wire.model import Geometry, Image, Message, SeriesEnd, SeriesStart

logger = logging.getLogger(__name__)

Counts = Mapping[str, Any]  # a receiver ledger snapshot (actors.stream.ledger.Ledger)

#: a client sharing a stream keeps at most this many images waiting for the series start
#: (beyond that the oldest is batched without it, with a warning)
WAIT_FOR_START = 4096


@dataclass(frozen=True)
class Parameters:
    """The chain's reducer entries as changed at run time, with a version that moves on every
    change (validated once, by the reducers' settings models)."""

    specs: tuple[dict[str, Any], ...]
    version: int = 0

    def changed(self, changes: Mapping[str, Any]) -> Parameters:
        return Parameters(reconfigure_specs(self.specs, changes), self.version + 1)

    def values(self) -> dict[str, Any]:
        """Public name -> current value of every runtime parameter."""
        return {p.name: p.value for p in runtime_parameters(self.specs)}


@dataclass
class IngestAcquisition:
    """The ingest's state for one acquisition."""

    acquisition: int
    receiver_at_start: Counts
    setup: ChainSetup | None = None
    chain: ReducerChain | None = None
    assembler: BatchAssembler | None = None
    received: int = 0
    dispatched_frames: int = 0
    dispatched_batches: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    ending: bool = False  # no more frames: draining until finished()
    end_sent: bool = False
    error: str | None = None  # why it failed, if it did
    series: int | None = None  # the series of its first frame
    last_frame: int | None = None  # the last frame batched
    held: deque[tuple[FrameBatch, BatchInfo, int]] = field(default_factory=deque)
    stop_at: float | None = None  # when a stop was asked (frames still join until it closes)
    last_read: float | None = None  # when its last frame arrived
    quiet: float | None = None  # a stop's quiet period, if not ``stop_quiet``
    waiting: deque[Image] = field(default_factory=deque)  # (share) images before the start
    start: int | None = None  # (share) the series whose start reached it (read or passed on)
    end_seen: int | None = None  # (share) the series whose end came before its start
    end_stop: bool = False  # (share) that end, not a stop command, set ``stop_at``
    timing: dict[str, float] = field(default_factory=dict)  # wall clock (End.timing)


class IngestCore:
    """Acquisitions, batches, parameters, room and ledger (see the module doc)."""

    def __init__(self, config: PipelineConfig, *, store_budget: int | None = None,
                 receiver: Callable[[], Counts] = dict,
                 clock: Callable[[], float] = time.monotonic, module: bool = False,
                 share: bool = False) -> None:
        """``module``: this ingest reads one module of a multi-module detector; its batches
        are frame-number ranges (:mod:`actors.core.modules`), closed when a later range
        begins or the acquisition ends, never on ``batch.max_delay``. ``share``: it is one
        of several clients of one stream (range batches too; see the module doc)."""
        self.config = config
        self.module = module or share
        self.share = share
        self.detector_shape: tuple[int, int] | None = None  # a module's: the whole frame
        self.receiver = receiver  # the receiver's counters now (lost, rejected, received)
        self.store_budget = store_budget
        self.clock = clock
        self.params = Parameters(tuple(dict(s) for s in config.reducers))
        self._values = (self.params.version, self.params.values())
        self.acq: IngestAcquisition | None = None
        self.last_acquisition = 0
        self.last_ledger: Ledger | None = None  # of the last acquisition that ended
        self.series_mask: np.ndarray[Any, Any] | None = None
        self.series_start: SeriesStart | None = None  # the last one (its detector facts)
        self.idle_dropped = 0
        self._idle_warned = -1  # the acquisition after which idle frames were last reported
        self.fault: str | None = None
        self.inflight: dict[tuple[int, int], int] = {}  # handed on, not returned: bytes
        self.inflight_bytes = 0
        self.peak_inflight_bytes = 0
        self._rate = RateMeter()
        self._sequence = 0  # of the checkpoints

    # -- commands -----------------------------------------------------------------------------
    def start(self, acquisition: int | None = None) -> int:
        """Start an acquisition (numbered after the last one unless given)."""
        if self.acq is not None:
            draining = self.acq.ending or self.acq.stop_at is not None
            raise RuntimeError(f"acquisition {self.acq.acquisition} is still "
                               f"{'draining' if draining else 'running'}")
        if acquisition is None:
            acquisition = self.last_acquisition + 1
        elif acquisition <= self.last_acquisition:
            raise ValueError(f"acquisition {acquisition} already used (last: "
                             f"{self.last_acquisition})")
        self.last_acquisition = acquisition
        self.last_ledger = None
        self.acq = IngestAcquisition(acquisition, self.receiver(),
                                     timing={"started": time.time()})
        logger.info("acquisition %d started", acquisition)
        return acquisition

    def checkpoint(self) -> Checkpoint:
        """The state a restarted ingest resumes from (the results stage keeps the latest)."""
        self._sequence += 1
        acq = self.acq
        return Checkpoint(self._sequence, self.last_acquisition, self.params.specs,
                          self.params.version, acq.acquisition if acq else None,
                          self._ledger(acq) if acq else None)

    def restore(self, checkpoint: Checkpoint | None, ended: bool, why: str) -> list[Action]:
        """Resume from a predecessor's checkpoint (numbering, parameters); an acquisition it
        left running and not ended downstream fails (``why``), with its last ledger."""
        if checkpoint is None:
            return []
        self._sequence = checkpoint.sequence
        self.last_acquisition = max(self.last_acquisition, checkpoint.last_acquisition)
        self.params = Parameters(checkpoint.specs, checkpoint.version)
        running = checkpoint.running
        if running is None or ended:
            return [self.checkpoint()]
        ledger = checkpoint.ledger or Ledger(running)
        self.last_ledger = ledger
        logger.error("acquisition %d failed: %s", running, why)
        return [Aborted(running, ledger, why), self.checkpoint()]

    def fail(self, why: str) -> list[Action]:
        """A stage downstream died: the running acquisition fails (its open and held frames,
        and those in flight, are dropped as ``stage_failed``)."""
        acq = self.acq
        if acq is None:
            return [self.checkpoint()]  # (for a restarted results stage)
        self.acq = None
        acq.dropped["stage_failed"] += (acq.assembler.discard() if acq.assembler else 0) + \
            sum(b.n for b, _, _ in acq.held) + len(acq.waiting)
        acq.waiting.clear()
        acq.held.clear()
        ledger = self._ledger(acq)
        self.last_ledger = ledger
        logger.error("acquisition %d failed: %s", acq.acquisition, why)
        return [Aborted(acq.acquisition, ledger, why), self.checkpoint()]

    def stop(self, acquisition: int) -> list[Action]:
        """Close the acquisition once the frames already on their way are in: at the
        stream's end of series, after ``stop_quiet`` seconds without a frame, or
        ``stop_grace`` seconds after now, whichever comes first (:meth:`stop_due`); the
        results then do not depend on how far behind the reading was when stop came."""
        acq = self.acq
        if acq is None or acq.acquisition != acquisition or acq.ending or \
                acq.stop_at is not None:
            return []
        acq.stop_at = self.clock()
        logger.info("acquisition %d stopping: %d frames in, waiting for its end of series "
                    "(at most %g s, or %g s without a frame)", acquisition, acq.received,
                    self.config.stop_grace, self.config.stop_quiet)
        return self.stop_due()

    def stop_in(self) -> float | None:
        """Seconds until a stopping acquisition closes without its end (None: none is)."""
        acq = self.acq
        if acq is None or acq.stop_at is None or acq.ending:
            return None
        now = self.clock()
        quiet_from = max(acq.stop_at, acq.last_read or acq.stop_at)
        return max(0.0, min(acq.stop_at + self.config.stop_grace,
                            quiet_from + self._quiet(acq)) - now)

    def _quiet(self, acq: IngestAcquisition) -> float:
        return self.config.stop_quiet if acq.quiet is None else acq.quiet

    def drain(self, acquisition: int) -> list[Action]:
        """(A share) another client read the series end: close once nothing has reached
        this one for ``modules.drain`` seconds (what the sender dealt it before the end is
        then in)."""
        acq = self.acq
        if acq is None or acq.acquisition != acquisition or acq.ending:
            return []
        acq.quiet = min(self._quiet(acq), self.config.modules.drain)
        if acq.stop_at is None:
            acq.stop_at = self.clock()
        return self.stop_due()

    def stop_due(self) -> list[Action]:
        """Close a stopping acquisition whose grace or quiet period has run out."""
        wait = self.stop_in()
        if wait is None or wait > 0:
            return []
        acq = self.acq
        assert acq is not None and acq.stop_at is not None
        quiet = self.clock() - max(acq.stop_at, acq.last_read or acq.stop_at)
        why = f"stop: no frame for {quiet:.2f} s" if quiet >= self._quiet(acq) else \
            f"stop: no end of series within {self.config.stop_grace:g} s"
        if acq.end_seen is not None and acq.start is None:  # (a share: no start came)
            return [PeerEnd(acq.acquisition), *self._end(acq, why)]
        return self._end(acq, why)

    def wake_in(self) -> float | None:
        """Seconds until the next timer (a batch to flush, a stop to close)."""
        times = [t for t in (self.flush_in(), self.stop_in()) if t is not None]
        return min(times) if times else None

    def abort(self, acquisition: int) -> list[Action]:
        """Discard the acquisition: the open and held batches are dropped as ``aborted``;
        batches already handed on are the transport's to discard (they still return)."""
        acq = self.acq
        if acq is None or acq.acquisition != acquisition:
            return []
        self.acq = None
        acq.dropped["aborted"] += (acq.assembler.discard() if acq.assembler else 0) + \
            sum(b.n for b, _, _ in acq.held) + len(acq.waiting)
        acq.waiting.clear()
        acq.held.clear()
        ledger = self._ledger(acq)
        self.last_ledger = ledger
        logger.info("acquisition %d aborted", acquisition)
        return [Aborted(acquisition, ledger), self.checkpoint()]

    def set(self, changes: Mapping[str, Any]) -> tuple[int | None, list[Action]]:
        """Apply runtime parameters (all or none; :class:`ReducerConfigError` names a bad
        one). Returns the first batch they apply to (None: from the next acquisition's first
        batch) and the actions (the open batch closes at the boundary)."""
        self.params = self.params.changed(changes)
        acq = self.acq
        if acq is None or acq.setup is None or acq.assembler is None:
            # not configured yet: its first batch will use the new values
            return None, [self.checkpoint()]
        actions = self._close(acq, acq.assembler.flush())
        first = acq.assembler.next_index
        acq.setup = replace(acq.setup, version=self.params.version, specs=self.params.specs,
                            first_batch=first)
        acq.chain = self._chain(acq.setup)
        logger.info("parameters %s apply from batch %d", dict(changes), first)
        return first, [*actions, Announce(acq.setup), self.checkpoint()]

    # -- messages -------------------------------------------------------------------------------
    def message(self, msg: Message) -> list[Action]:
        """One accepted message from the receiver."""
        acq = self.acq
        if isinstance(msg, SeriesStart):
            actions: list[Action] = [SeriesSeen(msg)] if self.share else []
            return actions + self.peer_start(msg)
        if isinstance(msg, SeriesEnd):
            if self.share:
                return self._share_end(acq, msg)
            if acq is not None and not acq.ending and (acq.received or acq.waiting):
                return self._end(acq, "end of series")
            return []
        assert isinstance(msg, Image)
        if self.share and acq is not None and not acq.ending and acq.start is None:
            return self._wait_for_start(acq, msg)  # (after the start: another series' image
            # is this acquisition's series_changed drop, below)
        return self._image(acq, msg)

    def _share_end(self, acq: IngestAcquisition | None, msg: SeriesEnd) -> list[Action]:
        """(A share) the series end read here: the others drain; if this acquisition's
        series start has not reached this client yet, its frames wait for it first. An end
        of another series than this acquisition's (a leftover) changes nothing."""
        if acq is None or acq.ending:
            return []
        if acq.start == msg.series_id:
            return [PeerEnd(acq.acquisition), *self._end(acq, "end of series")]
        if acq.start is None:
            return self._end_after_start(acq, msg.series_id)
        logger.warning("acquisition %d: the end of series %s came during series %s; ignored",
                       acq.acquisition, msg.series_id, acq.start)
        return []

    def peer_start(self, msg: SeriesStart) -> list[Action]:
        """A series start (read here, or by another client of a shared stream): its mask and
        detector facts apply to the frames of its series; images that waited for it go on
        (a share's images of another series, left over from an earlier one, are idle)."""
        mask = msg.arrays.get("pixel_mask")
        self.series_mask = None if mask is None else np.asarray(mask) != 0
        self.series_start = msg
        acq = self.acq
        if acq is None or acq.ending:
            return []
        acq.start = msg.series_id
        if acq.series is None and self.share:  # (a leftover image after it is not its series)
            acq.series = msg.series_id
        stale = [i for i in acq.waiting if i.series_id != msg.series_id]
        if stale:
            acq.waiting = deque(i for i in acq.waiting if i.series_id == msg.series_id)
            acq.received -= len(stale)
            self.idle_dropped += len(stale)
            logger.warning("acquisition %d: %d frames of series %s, read before the start of "
                           "series %s, are left over from an earlier series: idle_dropped",
                           acq.acquisition, len(stale), stale[0].series_id, msg.series_id)
        actions = self._release_waiting(acq)
        if acq.end_seen is not None and self.acq is acq and not acq.ending:
            if acq.end_seen == msg.series_id:  # its end came first: it ends now
                return [*actions, PeerEnd(acq.acquisition), *self._end(acq, "end of series")]
            acq.end_seen = None  # (the end of a leftover series)
            acq.quiet = None
            if acq.end_stop:
                acq.stop_at, acq.end_stop = None, False
        return actions

    def _end_after_start(self, acq: IngestAcquisition, series: int) -> list[Action]:
        """(A share) a series end came before any start reached this client (another client
        read it): the frames wait for it, at most ``modules.timeout`` seconds; the other
        clients are told to drain when the start confirms the end is this series'."""
        acq.end_seen = series
        acq.quiet = min(self._quiet(acq), self.config.modules.timeout)
        if acq.stop_at is None:
            acq.stop_at, acq.end_stop = self.clock(), True
        logger.info("acquisition %d: the end of series %s came before a series start; %d "
                    "frames wait for the start (at most %g s)", acq.acquisition, series,
                    len(acq.waiting), acq.quiet)
        return self.stop_due()

    def _wait_for_start(self, acq: IngestAcquisition, image: Image) -> list[Action]:
        """(A share) an image of a series whose start has not reached this client waits."""
        acq.waiting.append(image)
        acq.received += 1
        acq.last_read = self.clock()
        acq.timing.setdefault("first_frame", time.time())
        acq.timing["last_frame"] = time.time()
        if len(acq.waiting) == 1:
            logger.info("acquisition %d: frame %d of series %s waits for its series start "
                        "(read by another client)", acq.acquisition, image.frame,
                        image.series_id)
        if len(acq.waiting) <= WAIT_FOR_START:
            return []
        logger.warning("acquisition %d: %d frames waited for a series start that did not "
                       "come; frame %d goes on without it", acq.acquisition,
                       len(acq.waiting), acq.waiting[0].frame)
        return self._image(acq, acq.waiting.popleft(), counted=True)

    def _release_waiting(self, acq: IngestAcquisition) -> list[Action]:
        """The images that waited go on, in order (the start came, or the acquisition
        closes without it)."""
        actions: list[Action] = []
        while acq.waiting:
            actions += self._image(acq, acq.waiting.popleft(), counted=True)
            if self.acq is not acq or acq.ending:  # (it failed on them)
                break
        return actions

    def _image(self, acq: IngestAcquisition | None, msg: Image,
               counted: bool = False) -> list[Action]:
        """One image into this acquisition's batches (``counted``: it waited for its
        series start and is already in ``received``)."""
        if acq is None or acq.ending:
            if not self.idle_dropped or self._idle_warned != self.last_acquisition:
                self._idle_warned = self.last_acquisition
                logger.warning("frame %d arrived with no acquisition running (after "
                               "acquisition %d closed): counted as idle_dropped", msg.frame,
                               self.last_acquisition)
            self.idle_dropped += 1
            return []
        if not counted:
            acq.received += 1
            acq.last_read = self.clock()
            acq.timing.setdefault("first_frame", time.time())
            acq.timing["last_frame"] = time.time()
        actions: list[Action] = []
        if acq.assembler is None:
            try:
                actions.append(self._configure(acq, msg))
            except ValueError as exc:  # the chain cannot run on these frames
                return self._fail(acq, msg, f"the reducer chain cannot run on "
                                            f"{msg.geometry}: {exc}")
        assert acq.assembler is not None
        why = self._refuse(acq, msg)
        if why is not None:
            acq.dropped[why] += 1
            return actions
        try:
            closed = acq.assembler.add(msg)
        except ValueError as exc:  # a missing channel: count, keep going
            acq.dropped["bad_channel"] += 1
            logger.warning("frame %d dropped: %s", msg.frame, exc)
            return actions
        acq.last_frame = msg.frame
        return actions + self._close(acq, closed)

    def _refuse(self, acq: IngestAcquisition, image: Image) -> str | None:
        """Why an accepted image cannot join this acquisition's batches (None: it can)."""
        if acq.series is None:
            acq.series = image.series_id
        elif image.series_id != acq.series:
            if not acq.dropped["series_changed"]:
                logger.warning("acquisition %d: frames of series %s arrive in series %s "
                               "without its end; they are dropped (series_changed)",
                               acq.acquisition, image.series_id, acq.series)
            return "series_changed"
        if acq.last_frame is not None and image.frame <= acq.last_frame:
            return "late"  # arrived after later frames were batched
        return None

    def _fail(self, acq: IngestAcquisition, image: Image, error: str) -> list[Action]:
        """The acquisition cannot be processed: its frame is dropped (``chain_error``) and
        it ends now, failed, with the error (later frames of the stream are idle)."""
        acq.dropped["chain_error"] += 1 + len(acq.waiting)
        acq.waiting.clear()
        acq.error = error
        logger.error("acquisition %d failed: %s", acq.acquisition, error)
        return self._end(acq, "failed")

    def flush_due(self) -> list[Action]:
        """Close the open batch if it has waited ``batch.max_delay``."""
        acq = self.acq
        if acq is None or acq.assembler is None or not acq.assembler.pending or \
                acq.assembler.age < self.config.batch.max_delay or self.module:
            return []
        return self._close(acq, acq.assembler.flush())

    def flush_in(self) -> float | None:
        """Seconds until the open batch must close (None: no open batch)."""
        acq = self.acq
        if acq is None or acq.assembler is None or not acq.assembler.pending or self.module:
            return None
        return max(0.0, self.config.batch.max_delay - acq.assembler.age)

    # -- from the transport --------------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        """A closed batch waits for room: stop reading (``overflow: block``)."""
        return self.acq is not None and bool(self.acq.held)

    def forget_inflight(self) -> list[Action]:
        """Whoever held this ingest's handed-on batches is gone (the first module's ingest of
        a multi-module detector died): their room is free again."""
        actions: list[Action] = []
        for acquisition, index in list(self.inflight):
            actions += self.returned(acquisition, index)
        return actions

    def returned(self, acquisition: int, index: int) -> list[Action]:
        """A batch handed on has been processed, given up or discarded: its room is free."""
        nbytes = self.inflight.pop((acquisition, index), None)
        if nbytes is None:
            return []
        self.inflight_bytes -= nbytes
        acq = self.acq
        actions: list[Action] = []
        while acq is not None and acq.held and self._room(acq.held[0][0].nbytes):
            batch, info, version = acq.held.popleft()
            actions.append(self._hand_on(acq, batch, info, version))
            if not acq.held and acq.assembler is not None:
                # reading resumes: the open batch waited for room, not for frames, and a
                # stop's quiet period counts from now (the frames waited for us)
                acq.assembler.touch()
                if acq.stop_at is not None:
                    acq.last_read = self.clock()
        if acq is not None and acq.ending and not acq.held and not acq.end_sent:
            actions.append(self._declare_end(acq))
        return self._handed_on(actions)

    def finished(self, acquisition: int) -> None:
        """Every batch of the ended acquisition has settled downstream: idle again."""
        acq = self.acq
        if acq is not None and acq.acquisition == acquisition and acq.end_sent:
            self.acq = None

    # -- status ---------------------------------------------------------------------------------
    def status(self, geometry: Geometry | None = None) -> IngestStatus:
        receiver = self.receiver()
        acq = self.acq
        state: State = "idle" if acq is None else (
            "draining" if acq.ending or acq.stop_at is not None else "running")
        ledger = self._ledger(acq, receiver) if acq is not None else self.last_ledger
        if self._values[0] != self.params.version:
            self._values = (self.params.version, self.params.values())
        return IngestStatus(
            state=state, acquisition=self.last_acquisition or None, ledger=ledger,
            frame_rate=self._rate.update(int(receiver.get("received", 0)), self.clock()),
            idle_dropped=self.idle_dropped, fault=self.fault, receiver=dict(receiver),
            setup_version=self.params.version, parameters=self._values[1],
            inflight_bytes=self.inflight_bytes, peak_inflight_bytes=self.peak_inflight_bytes,
            geometry=geometry, timing=dict(acq.timing) if acq is not None else {})

    # -- internals ------------------------------------------------------------------------------
    def _configure(self, acq: IngestAcquisition, first: Image) -> Begin:
        """The first frame fixes the geometry (and the series' pixel mask applies)."""
        src = self.config.source
        payload = first.channels.get(src.channel, first.payload) if src.channel else \
            first.payload
        geometry = Geometry(payload.shape[0], payload.shape[1], payload.dtype)
        mask = self.series_mask if self.series_mask is not None and \
            self.series_mask.shape == geometry.shape else None
        setup = ChainSetup(acq.acquisition, self.params.version, self.params.specs, geometry,
                           src.reorder, mask,
                           keep_frames=self.config.output.enabled and self.config.output.frames)
        self.detector_shape = _detector_shape(first, geometry, self.config) if self.module \
            else None
        acq.setup, acq.chain = setup, self._chain(setup)
        # (every module's ingest cuts the same ranges: sized on the whole detector's frame)
        frame_bytes = geometry.nbytes if self.detector_shape is None else \
            self.detector_shape[0] * self.detector_shape[1] * geometry.itemsize
        frames = self._batch_frames(frame_bytes)
        acq.assembler = BatchAssembler(
            acq.acquisition, geometry, frames, acq.chain.epochs, src.channel,
            clock=self.clock,
            ranges=range_length(frames, acq.chain.epochs) if self.module else None)
        return Begin(setup, describe(first.protocol, first, self.series_start, geometry))

    def _chain(self, setup: ChainSetup) -> ReducerChain:
        """The chain this ingest decides batches with: a module's ingest builds it for the
        whole detector's frame (an ROI may lie beyond its module), not for its part."""
        if self.detector_shape is None:
            return setup.build()
        rows, cols = self.detector_shape
        return ReducerChain.from_specs(setup.specs, replace(setup.geometry, rows=rows,
                                                            cols=cols))

    def _batch_frames(self, frame_bytes: int) -> int:
        """``batch.max_frames`` (for this frame size), or fewer when ``max_inflight`` such
        batches would not fit the store budget (else large frames would leave one batch in
        flight, one worker busy)."""
        frames = self.config.batch.frames_for(frame_bytes)
        budget = self.store_budget
        if budget is not None and frame_bytes > 0:
            fit = max(1, budget // (self.config.max_inflight * frame_bytes))
            if fit < frames:
                logger.info("batches of %d frames (not %d): %d in flight fit the store "
                            "budget of %.0f MB", fit, frames, self.config.max_inflight,
                            budget / 1e6)
                return int(fit)
        return frames

    def _close(self, acq: IngestAcquisition, batch: FrameBatch | None) -> list[Action]:
        """A batch closed: hand it on, or drop or hold it when there is no room."""
        if batch is None:
            return []
        assert acq.chain is not None and acq.setup is not None
        info = BatchInfo(batch.index, batch.first_frame, batch.last_frame, batch.n,
                         acq.chain.state_needed(batch.first_frame, batch.last_frame))
        if not acq.held and self._room(batch.nbytes):
            return self._handed_on([self._hand_on(acq, batch, info, acq.setup.version)])
        if self.config.overflow == "drop":
            acq.dropped["overflow"] += batch.n
            return [Skip(acq.acquisition, info)]
        acq.held.append((batch, info, acq.setup.version))
        return []

    def _room(self, nbytes: int) -> bool:
        """Room for a batch of ``nbytes``: fewer than ``max_inflight`` batches out, within the
        store budget (a batch may always go when none is out)."""
        if len(self.inflight) >= self.config.max_inflight:
            return False
        budget = self.store_budget
        return not self.inflight or budget is None or self.inflight_bytes + nbytes <= budget

    def _hand_on(self, acq: IngestAcquisition, batch: FrameBatch, info: BatchInfo,
                 version: int) -> HandOn:
        self.inflight[(acq.acquisition, batch.index)] = batch.nbytes
        self.inflight_bytes += batch.nbytes
        self.peak_inflight_bytes = max(self.peak_inflight_bytes, self.inflight_bytes)
        acq.dispatched_frames += batch.n
        acq.dispatched_batches += 1
        return HandOn(batch, info, version)

    def _handed_on(self, actions: list[Action]) -> list[Action]:
        """A checkpoint after batches handed on (the ledger a successor would fail with)."""
        if any(isinstance(a, HandOn) for a in actions):
            actions.append(self.checkpoint())
        return actions

    def _end(self, acq: IngestAcquisition, why: str) -> list[Action]:
        if acq.ending:
            return []
        actions: list[Action] = []
        if acq.waiting:  # (a share) the series start never reached this client
            logger.warning("acquisition %d: %d frames never saw their series start; they are "
                           "processed without it", acq.acquisition, len(acq.waiting))
            actions += self._release_waiting(acq)
            if acq.ending:
                return actions
        actions += self._close(acq, acq.assembler.flush()) if acq.assembler else []
        acq.ending = True
        if acq.stop_at is not None:
            logger.info("acquisition %d closed %.3f s after its stop (%s): %d frames received",
                        acq.acquisition, self.clock() - acq.stop_at, why, acq.received)
        else:
            logger.info("acquisition %d ending (%s): %d frames received", acq.acquisition,
                        why, acq.received)
        if not acq.held:
            actions.append(self._declare_end(acq))
        return actions

    def _declare_end(self, acq: IngestAcquisition) -> End:
        acq.end_sent = True
        ledger = self._ledger(acq)
        self.last_ledger = ledger
        acq.timing["closed"] = time.time()
        return End(acq.acquisition, acq.assembler.next_index if acq.assembler else 0, ledger,
                   acq.error, dict(acq.timing))

    def _ledger(self, acq: IngestAcquisition, receiver: Counts | None = None) -> Ledger:
        receiver = self.receiver() if receiver is None else receiver
        start = acq.receiver_at_start
        rejected: Counter[str] = Counter(receiver.get("rejected", {}))
        rejected.subtract(start.get("rejected", {}))
        return Ledger(
            acq.acquisition, received=acq.received, dispatched=acq.dispatched_frames,
            dispatched_batches=acq.dispatched_batches,
            pending=(acq.assembler.pending if acq.assembler else 0) + len(acq.waiting),
            inflight_batches=sum(1 for k in self.inflight if k[0] == acq.acquisition),
            dropped=dict(+acq.dropped),
            lost=int(receiver.get("lost", 0)) - int(start.get("lost", 0)),
            rejected=dict(+rejected))


def _detector_shape(first: Image, geometry: Geometry, config: PipelineConfig
                    ) -> tuple[int, int]:
    """The whole detector's frame: from the modules' offsets in the config (every module
    has this one's shape), else from a module's header (``detshape`` = [columns, rows] of
    parts of this module's shape); the module's own shape if neither says."""
    offsets = [s.offset for s in config.all_sources if s.offset is not None]
    if offsets and not config.shared:
        return (max(r for r, _ in offsets) + geometry.rows,
                max(c for _, c in offsets) + geometry.cols)
    grid = first.header.get("detshape")
    if isinstance(grid, list) and len(grid) == 2 and all(
            isinstance(v, int) and v > 0 for v in grid):
        return geometry.rows * grid[1], geometry.cols * grid[0]
    return geometry.shape
