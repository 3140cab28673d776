"""The results stage of the local backend: the Ray ResultsActor's logic, thread-safe.

The coordinator thread calls the mutating methods; API threads wait and read. Merging is
the pure core's (:class:`actors.core.acquisition.Acquisition`, ``OrderedMerger``), so the
outputs are those of the Ray backend bit for bit.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from actors.config import OutputConfig
from actors.core.acquisition import Acquisition, AcquisitionResult
from actors.core.chain import Partials
from actors.core.merger import BatchInfo
from actors.core.ordered import InBatchOrder
from actors.core.setup import FRAMES_KEY, ChainSetup
from actors.output import AcquisitionWriter
from actors.reduce.base import OutputValue

logger = logging.getLogger(__name__)


class LocalResults:
    """The single owner of merged results; every method takes :attr:`changed`'s lock."""

    def __init__(self, keep: int = 16, output: OutputConfig | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.current: Acquisition | None = None
        self.carried: dict[str, Any] | None = None
        self.done: dict[int, AcquisitionResult] = {}
        self.keep = keep
        self.writer = AcquisitionWriter(output or OutputConfig(enabled=False))
        self.config_dump = config or {}
        self._frames: InBatchOrder[tuple[Any, Any]] = InBatchOrder()  # (frames, numbers)
        self.changed = threading.Condition(threading.RLock())

    def _acq(self, acquisition: int) -> Acquisition | None:
        cur = self.current
        return cur if cur is not None and cur.acquisition == acquisition else None

    # -- acquisition lifecycle (coordinator) --------------------------------------------------
    def begin(self, setup: ChainSetup) -> None:
        with self.changed:
            if self.current is not None:
                logger.warning("acquisition %d replaced by %d before it ended",
                               self.current.acquisition, setup.acquisition)
            self.current = Acquisition.begin(setup.acquisition, setup.build(), self.carried)
            self._frames.clear()
            if self.writer.enabled:
                self.writer.prepare(setup.acquisition)
            self.changed.notify_all()

    def reconfigure(self, setup: ChainSetup) -> None:
        with self.changed:
            acq = self._acq(setup.acquisition)
            if acq is not None:
                acq.chain = acq.merger.chain = setup.build()

    def register(self, acquisition: int, info: BatchInfo) -> bool:
        """Register a batch (in batch order); False if its acquisition is not running."""
        with self.changed:
            acq = self._acq(acquisition)
            if acq is None:
                return False
            acq.register(info)
            return True

    def states_for(self, acquisition: int, index: int) -> dict[str, dict[int, Any]] | None:
        """The published states a registered batch needs, None while some are missing."""
        with self.changed:
            acq = self._acq(acquisition)
            return acq.merger.states_for(index) if acq is not None else None

    def merge(self, acquisition: int, index: int, partial: Partials) -> None:
        with self.changed:
            acq = self._acq(acquisition)
            if acq is None:
                return
            frames = partial.pop(FRAMES_KEY, None)
            acq.merger.add(index, partial)
            if frames is not None:
                self._frames.put(index, frames)
            self._finish_if_complete(acq)
            self.changed.notify_all()

    def skip(self, acquisition: int, info: BatchInfo) -> None:
        with self.changed:
            acq = self._acq(acquisition)
            if acq is not None:
                acq.skip(info)
                self._finish_if_complete(acq)
                self.changed.notify_all()

    def give_up(self, acquisition: int, index: int) -> None:
        """A registered batch that could not be processed: merged as empty, not counted."""
        with self.changed:
            acq = self._acq(acquisition)
            if acq is not None:
                acq.merger.add(index, acq.chain.empty(), count=False)
                self._finish_if_complete(acq)
                self.changed.notify_all()

    def end(self, acquisition: int, batches: int, ingest_ledger: dict[str, Any]) -> None:
        """No more batches will come for this acquisition."""
        with self.changed:
            acq = self._acq(acquisition)
            if acq is None:
                if acquisition not in self.done:  # no frame arrived: an empty result
                    now = time.time()
                    self._store(AcquisitionResult(acquisition, "finished", {}, {
                        **ingest_ledger, "processed": 0, "processed_batches": 0}, now, now))
                    self.changed.notify_all()
                return
            acq.end(batches, ingest_ledger)
            self._finish_if_complete(acq)
            self.changed.notify_all()

    def abort(self, acquisition: int, ingest_ledger: dict[str, Any]) -> None:
        with self.changed:
            acq = self._acq(acquisition)
            if acq is None:
                return
            acq.ingest_ledger = ingest_ledger
            self._store(acq.result("aborted"))
            self.current = None
            self._frames.clear()
            self.writer.close()  # an aborted acquisition writes no results
            self.changed.notify_all()

    def _finish_if_complete(self, acq: Acquisition) -> None:
        for block in self._frames.due(acq.merger.merged_through):  # in batch order
            self.writer.append_frames(*block)
        if not acq.complete:
            return
        self.carried = acq.merger.carry_over()
        result = acq.result("finished")
        if self.writer.enabled:
            settings = {"reducers": acq.chain.specs(), "config": self.config_dump}
            path = self.writer.finish(result, acq.chain.outputs_spec(), settings)
            result.file = None if path is None else str(path)
        self._store(result)
        self.current = None
        logger.info("acquisition %d finished: %d frames processed in %.2f s",
                    acq.acquisition, result.ledger["processed"], result.duration)

    def _store(self, result: AcquisitionResult) -> None:
        self.done[result.acquisition] = result
        while len(self.done) > self.keep:
            self.done.pop(next(iter(self.done)))

    # -- queries (API threads) ------------------------------------------------------------------
    def wait(self, acquisition: int, timeout: float) -> AcquisitionResult | None:
        """The result of an acquisition once it has ended (None on timeout)."""
        with self.changed:
            if not self.changed.wait_for(lambda: acquisition in self.done, timeout):
                return None
            return self.done[acquisition]

    def outputs(self) -> dict[str, OutputValue]:
        """Outputs of the running acquisition, else of the last finished one."""
        with self.changed:
            cur = self.current
            if cur is not None:
                return cur.merger.outputs()
            if self.done:
                return self.done[next(reversed(self.done))].outputs
            return {}

    def processed(self) -> int:
        with self.changed:
            cur = self.current
            return cur.merger.processed_frames if cur is not None else 0

    def running(self) -> int | None:
        with self.changed:
            return self.current.acquisition if self.current is not None else None

    def output_state(self) -> dict[str, Any]:
        """The file settings (the seed's filename, filepath, file_index attributes)."""
        with self.changed:
            return self.writer.state()

    def set_output(self, name: str, value: Any) -> dict[str, Any]:
        """Change ``filename``, ``filepath`` or ``file_index`` (applies to the next file)."""
        with self.changed:
            return self.writer.set(name, value)

    def reset_pedestal(self) -> None:
        """Forget the state carried between acquisitions (the next one starts fresh)."""
        with self.changed:
            self.carried = None
