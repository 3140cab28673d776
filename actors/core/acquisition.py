"""Acquisition results and the per-acquisition bookkeeping of the results stage (pure)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from actors.core.chain import ReducerChain
from actors.core.merger import BatchInfo, OrderedMerger
from actors.core.status import Ledger
from actors.reduce.base import OutputValue
from actors.wire.detector import DetectorInfo

logger = logging.getLogger(__name__)

Outcome = Literal["finished", "aborted", "failed"]


@dataclass
class AcquisitionResult:
    """What an acquisition produced: named outputs, its ledger and its file."""

    acquisition: int
    outcome: Outcome
    outputs: dict[str, OutputValue]
    ledger: Ledger
    started: float
    finished: float
    file: str | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()  # what makes the outputs not to be trusted (reducers')
    detector: DetectorInfo | None = None  # what the stream said about the detector

    @property
    def duration(self) -> float:
        return self.finished - self.started


@dataclass
class Acquisition:
    """The results stage's view of one running acquisition."""

    acquisition: int
    chain: ReducerChain
    merger: OrderedMerger
    started: float = field(default_factory=time.time)
    expected_batches: int | None = None  # known once the ingest declares the end
    ingest_ledger: Ledger | None = None
    drops: Counter[str] = field(default_factory=Counter)  # frames workers could not use
    detector: DetectorInfo | None = None  # as the stream described it

    @classmethod
    def begin(cls, acquisition: int, chain: ReducerChain,
              carried: dict[str, object] | None) -> Acquisition:
        return cls(acquisition, chain, OrderedMerger(chain, carried))

    def register(self, info: BatchInfo) -> None:
        self.merger.register(info)

    def skip(self, info: BatchInfo) -> None:
        """A batch the ingest dropped (overflow): merged as empty, not counted."""
        self.merger.register(BatchInfo(info.index, info.first_frame, info.last_frame, 0,
                                       info.keys))
        self.merger.add(info.index, self.chain.empty())

    def end(self, batches: int, ingest_ledger: Ledger) -> None:
        self.expected_batches = batches
        self.ingest_ledger = ingest_ledger

    @property
    def complete(self) -> bool:
        return (self.expected_batches is not None
                and self.merger.merged_through == self.expected_batches - 1
                and self.merger.outstanding == 0)

    def ledger(self) -> Ledger:
        base = (self.ingest_ledger or Ledger(self.acquisition)).with_drops(self.drops)
        return base.with_processed(self.merger.processed_frames,
                                   self.merger.processed_batches)

    def result(self, outcome: Outcome = "finished", error: str | None = None
               ) -> AcquisitionResult:
        outputs = self.merger.outputs() if outcome != "aborted" else {}
        ledger = self.ledger()
        warnings = tuple(self.chain.warnings(outputs)) if ledger.processed else ()
        for warning in warnings:
            logger.warning("acquisition %d: %s", self.acquisition, warning)
        return AcquisitionResult(self.acquisition, outcome, outputs, ledger, self.started,
                                 time.time(), error=error, warnings=warnings,
                                 detector=self.detector)
