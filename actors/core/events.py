"""The typed events between the stages (pure).

The ingest stage produces them (:class:`~actors.ingest.core.IngestCore`), in order; its
transport stores and hands on the batches (:class:`HandOn`), the dispatch stage holds an
acquisition's :class:`End` until its batches have left and adds what it dropped to an
:class:`Aborted`, and the results stage takes the rest (:class:`Begin`, :class:`Announce`,
:class:`Skip`, :class:`Aborted`, and the end once released) —
:meth:`~actors.results.core.ResultsCore.apply`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.core.batch import FrameBatch
from actors.core.merger import BatchInfo
from actors.core.setup import ChainSetup
from actors.core.status import Ledger
from actors.wire.detector import DetectorInfo
from actors.wire.model import SeriesStart


@dataclass(frozen=True)
class Begin:
    """The first frame of an acquisition fixed its chain setup: tell workers and results
    (and the results stage what the stream said about the detector, for the file)."""

    setup: ChainSetup
    detector: DetectorInfo | None = None


@dataclass(frozen=True)
class HandOn:
    """Store a closed batch and hand it to the workers (it holds room until returned)."""

    batch: FrameBatch
    info: BatchInfo
    setup_version: int


@dataclass(frozen=True)
class Skip:
    """A batch dropped for lack of room (``overflow: drop``): merged as empty."""

    acquisition: int
    info: BatchInfo


@dataclass(frozen=True)
class Announce:
    """A new chain setup version (runtime parameters) applies from ``setup.first_batch``."""

    setup: ChainSetup


@dataclass(frozen=True)
class End:
    """No batch after ``batches`` will come; ``ledger`` is the ingest's side of it; ``error``
    says why it failed, if it did."""

    acquisition: int
    batches: int
    ledger: Ledger
    error: str | None = None
    #: the ingest's wall-clock times (``time.time()``): ``started``, ``first_frame``,
    #: ``last_frame`` (received), ``closed`` (the acquisition closed at the ingest)
    timing: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Aborted:
    """The acquisition is discarded (``error`` None), or failed: a stage died (``error``
    says which and why); its received frames not processed are dropped as
    ``stage_failed``."""

    acquisition: int
    ledger: Ledger
    error: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """The ingest's small state, kept by the results stage so that a restarted ingest
    numbers acquisitions on, keeps the runtime parameters and fails what its predecessor
    left running (with the ledger as of its last batch)."""

    sequence: int  # a later checkpoint has a larger number
    last_acquisition: int
    specs: tuple[dict[str, Any], ...]
    version: int
    running: int | None = None  # the acquisition in progress
    ledger: Ledger | None = None  # its ledger as of this checkpoint


@dataclass(frozen=True)
class SeriesSeen:
    """(A client sharing a stream) the series start reached this client: the others need it
    (its mask, geometry and declared images), whichever client the sender gave it to."""

    start: SeriesStart


@dataclass(frozen=True)
class PeerEnd:
    """(A client sharing a stream) the series end reached this client: the others close
    once they have drained what is still on its way to them."""

    acquisition: int


#: everything the ingest produces
Action = Begin | HandOn | Skip | Announce | End | Aborted | Checkpoint | SeriesSeen | PeerEnd
#: what the results stage takes
ResultsEvent = Begin | Announce | Skip | End | Aborted | Checkpoint
