"""Acquisition results and the per-acquisition bookkeeping of the results stage (pure)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
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
    #: wall-clock times (``time.time()``) of the acquisition's steps: at the ingest
    #: ``started``, ``first_frame``, ``last_frame`` (received) and ``closed``; at the results
    #: stage ``first_merged``, ``last_merged`` and ``result`` (available to the caller)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.finished - self.started

    @property
    def tail(self) -> float | None:
        """Seconds from the last frame received to the result being available (None when
        no frame came)."""
        if "last_frame" not in self.timings or "result" not in self.timings:
            return None
        return self.timings["result"] - self.timings["last_frame"]


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
    timing: dict[str, float] = field(default_factory=dict)  # the ingest's, then merges

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

    def end(self, batches: int, ingest_ledger: Ledger,
            timing: Mapping[str, float] | None = None) -> None:
        self.expected_batches = batches
        self.ingest_ledger = ingest_ledger
        self.timing.update(timing or {})

    def merged(self) -> None:
        """A partial was merged (times the first and the last merge)."""
        now = time.time()
        self.timing.setdefault("first_merged", now)
        self.timing["last_merged"] = now

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
        finished = time.time()
        return AcquisitionResult(self.acquisition, outcome, outputs, ledger, self.started,
                                 finished, error=error, warnings=warnings,
                                 detector=self.detector,
                                 timings={**self.timing, "result": finished})
