"""What the two backends' ingests share: messages in, acquisitions, batches, the ledger.

Backend-independent (asyncio and the :class:`~actors.stream.receiver.Receiver`; no Ray, no
shared memory). :class:`IngestBase` runs the receive loop (batches close when full, at a
batch cut, or after ``batch.max_delay``), turns series start/end and images into
acquisition events, builds the chain setup from the first frame, applies runtime
parameters between batches and keeps the per-acquisition ledger. A backend supplies where
messages come from (:meth:`IngestBase._next`), how the first frame is prepared for
(:meth:`IngestBase._configure`), where a closed batch goes
(:meth:`IngestBase._dispatch_closed`), how the end is declared (:meth:`IngestBase._end`)
and how a new setup is announced (:meth:`IngestBase._announce`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np

from actors.config import PipelineConfig
from actors.core.batch import BatchAssembler, FrameBatch
from actors.core.chain import ReducerChain, reconfigure_specs
from actors.core.rates import RateMeter
from actors.core.setup import ChainSetup
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire.model import Geometry, Image, Message, SeriesEnd, SeriesStart

logger = logging.getLogger(__name__)


@dataclass
class IngestAcquisition:
    """The ingest's state for one acquisition."""

    acquisition: int
    specs: tuple[dict[str, Any], ...]
    ledger_at_start: dict[str, Any]
    started: float = field(default_factory=time.time)
    chain: ReducerChain | None = None
    setup: ChainSetup | None = None
    assembler: BatchAssembler | None = None
    received: int = 0
    dispatched_frames: int = 0
    dispatched_batches: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    ending: bool = False


A = TypeVar("A", bound=IngestAcquisition)


class IngestBase(ABC, Generic[A]):
    """Receive loop, message handling and ledger of an ingest (see the module doc)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        src = config.source
        self.receiver = Receiver(ReceiverSettings(
            src.endpoint, src.socket_kind, src.protocol,
            geometry=src.geometry.to_geometry() if src.geometry else None, bind=src.bind,
            hwm=src.hwm, accept_incomplete=src.accept_incomplete, name="ingest"))
        self.specs: tuple[dict[str, Any], ...] = tuple(dict(s) for s in config.reducers)
        self.acq: A | None = None
        self.idle_dropped = 0
        self.fault: str | None = None
        self.series_mask: np.ndarray[Any, Any] | None = None
        self.rate = RateMeter()

    # -- what a backend supplies ------------------------------------------------------------
    @abstractmethod
    async def _next(self, timeout: float) -> Message | None:
        """The next accepted message, or None after ``timeout`` seconds."""

    @abstractmethod
    async def _configure(self, acq: A, setup: ChainSetup) -> None:
        """Prepare for the acquisition's first batch: set ``acq.setup``, ``acq.chain`` and
        ``acq.assembler`` and announce the setup."""

    @abstractmethod
    async def _dispatch_closed(self, acq: A, batch: FrameBatch | None) -> None:
        """Hand a closed batch on (None: nothing closed)."""

    @abstractmethod
    async def _end(self, acq: A, why: str) -> None:
        """No more frames for ``acq``: flush the open batch and declare the end."""

    @abstractmethod
    async def _announce(self, acq: A) -> None:
        """Tell the workers and the results stage about ``acq.setup`` (a new version)."""

    @abstractmethod
    def _inflight_batches(self, acq: A) -> int:
        """Batches handed on and not merged yet."""

    # -- receiving ------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        delay = self.config.batch.max_delay
        while True:
            acq = self.acq
            timeout = None
            if acq is not None and acq.assembler is not None and acq.assembler.pending:
                timeout = max(0.0, delay - acq.assembler.age)
            msg = await self._next(timeout if timeout is not None else 0.2)
            try:
                acq = self.acq
                if acq is not None and acq.assembler is not None and acq.assembler.pending \
                        and acq.assembler.age >= delay:
                    await self._dispatch_closed(acq, acq.assembler.flush())
                if msg is not None:
                    await self._handle(msg)
            except Exception as exc:  # keep receiving; report the fault in the status
                self.fault = f"{type(exc).__name__}: {exc}"
                logger.exception("ingest failed to handle a message")

    async def _handle(self, msg: Message) -> None:
        acq = self.acq
        if isinstance(msg, SeriesStart):
            mask = msg.arrays.get("pixel_mask")
            self.series_mask = None if mask is None else np.asarray(mask) != 0
            return
        if isinstance(msg, SeriesEnd):
            if acq is not None and not acq.ending and acq.received:
                await self._end(acq, "end of series")
            return
        assert isinstance(msg, Image)
        if acq is None or acq.ending:
            self.idle_dropped += 1
            return
        acq.received += 1
        if acq.assembler is None:
            await self._configure(acq, self._first_setup(acq, msg))
            if self.acq is not acq:  # aborted while configuring
                return
        assert acq.assembler is not None
        try:
            closed = acq.assembler.add(msg)
        except ValueError as exc:  # e.g. a missing channel: count, keep going
            acq.dropped["bad_channel"] += 1
            logger.warning("frame %d dropped: %s", msg.frame, exc)
            return
        if closed is not None:
            await self._dispatch_closed(acq, closed)

    def _first_setup(self, acq: A, first: Image) -> ChainSetup:
        """The first frame fixes the geometry (and the series' pixel mask applies)."""
        src = self.config.source
        payload = first.channels.get(src.channel, first.payload) if src.channel else \
            first.payload
        geometry = Geometry(payload.shape[0], payload.shape[1], payload.dtype)
        mask = self.series_mask if self.series_mask is not None and \
            self.series_mask.shape == geometry.shape else None
        return ChainSetup(acq.acquisition, 0, acq.specs, geometry, src.reorder, mask,
                          keep_frames=self.config.output.enabled and self.config.output.frames)

    # -- runtime parameters ---------------------------------------------------------------------
    async def set(self, changes: dict[str, Any]) -> int | None:
        """Apply runtime parameters; returns the first batch index they apply to (None when
        no acquisition is configured yet: they apply to the next one)."""
        self.specs = reconfigure_specs(self.specs, changes)
        acq = self.acq
        if acq is None:
            return None
        acq.specs = self.specs
        if acq.chain is None or acq.assembler is None or acq.setup is None:
            return None  # not configured yet: the first batch will use the new specs
        # the open batch was assembled under the old settings: close it at the boundary
        await self._dispatch_closed(acq, acq.assembler.flush())
        first = acq.assembler.next_index
        acq.setup = replace(acq.setup, version=acq.setup.version + 1, specs=self.specs,
                            first_batch=first)
        acq.chain = acq.setup.build()
        await self._announce(acq)
        logger.info("parameters %s apply from batch %d", changes, first)
        return first

    # -- status -----------------------------------------------------------------------------------
    def _ledger(self, acq: A) -> dict[str, Any]:
        now = self.receiver.ledger.snapshot()
        start = acq.ledger_at_start
        rejected = Counter(now["rejected"])
        rejected.subtract(start["rejected"])
        return {
            "acquisition": acq.acquisition,
            "received": acq.received,
            "dispatched": acq.dispatched_frames,
            "dispatched_batches": acq.dispatched_batches,
            "pending": acq.assembler.pending if acq.assembler else 0,
            "inflight_batches": self._inflight_batches(acq),
            "dropped": dict(+acq.dropped),
            "dropped_total": sum(acq.dropped.values()),
            "lost": now["lost"] - start["lost"],
            "rejected": dict(+rejected),
            "rejected_total": now["rejected_total"] - start["rejected_total"],
        }

    def status(self) -> dict[str, Any]:
        acq = self.acq
        base: dict[str, Any] = {
            "state": "idle" if acq is None else ("draining" if acq.ending else "running"),
            "acquisition": acq.acquisition if acq else None,
            "receiver": self.receiver.ledger.snapshot(),
            "idle_dropped": self.idle_dropped,
            "frame_rate": self.rate.update(self.receiver.ledger.received),
            "geometry": self.receiver.geometry,
            "fault": self.fault,
        }
        if acq is not None:
            base["ledger"] = self._ledger(acq)
        return base
