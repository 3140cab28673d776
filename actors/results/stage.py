"""The results stage as both backends run it: :class:`ResultsCore` behind a lock, files
written in order by one I/O thread, and waits with timeouts.

The Ray backend hosts a :class:`ResultsStage` as a threaded actor; the local backend keeps
one in its driver process. Every method may be called from any thread. File operations the
core queues run on a single background thread in the order they were queued, so a merge
never waits for the disk and a finished acquisition's result appears (for :meth:`wait`)
once its file is written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from actors.core.acquisition import AcquisitionResult
from actors.core.chain import Partials
from actors.core.events import Checkpoint, ResultsEvent
from actors.core.merger import BatchInfo
from actors.core.setup import ChainSetup
from actors.core.status import Ledger, ResultsStatus, Snapshot
from actors.reduce.base import OutputSpec
from actors.results.core import AppendFrames, Discard, Finish, IoOp, Prepare, ResultsCore, States
from actors.wire.detector import DetectorInfo

logger = logging.getLogger(__name__)


class AcquisitionSink(Protocol):
    """Where acquisitions are written (:class:`actors.output.AcquisitionWriter`)."""

    enabled: bool

    def prepare(self, acquisition: int) -> object: ...

    def append_frames(self, frames: Any, frame_numbers: Any) -> bool: ...

    def finish(self, result: AcquisitionResult, specs: list[OutputSpec],
               settings: Mapping[str, Any]) -> Path | None: ...

    def close(self) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def set(self, name: str, value: Any) -> dict[str, Any]: ...


def run_io(op: IoOp, sink: AcquisitionSink) -> Any:
    """Carry out one file operation (a disabled sink writes nothing)."""
    if not sink.enabled:
        return None
    if isinstance(op, Prepare):
        return sink.prepare(op.acquisition)
    if isinstance(op, AppendFrames):
        return sink.append_frames(op.frames, op.frame_numbers)
    if isinstance(op, Finish):
        return sink.finish(op.result, op.outputs, op.settings)
    if isinstance(op, Discard):
        return sink.close()
    raise TypeError(f"unknown file operation {op!r}")


class ResultsStage:
    """The single owner of merged results (see the module doc)."""

    def __init__(self, sink: AcquisitionSink, settings: Mapping[str, Any] | None = None,
                 keep: int = 16) -> None:
        self.core = ResultsCore(settings, keep)
        self.sink = sink
        self.changed = threading.Condition()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rayline-output")

    def close(self) -> None:
        """Finish the queued file operations, then stop the I/O thread."""
        self._io.shutdown(wait=True)

    # -- mutations (ingest side, workers) -----------------------------------------------------
    def apply(self, event: ResultsEvent) -> None:
        """An event of the ingest (begin, new setup, skip, end, abort), in order."""
        with self.changed:
            self.core.apply(event)
            self._changed()

    def begin(self, setup: ChainSetup, detector: DetectorInfo | None = None) -> None:
        with self.changed:
            self.core.begin(setup, detector)
            self._changed()

    def reconfigure(self, setup: ChainSetup) -> None:
        with self.changed:
            self.core.reconfigure(setup)

    def register(self, acquisition: int, info: BatchInfo) -> bool:
        """Register a batch; False if its acquisition is not running."""
        with self.changed:
            return self.core.register(acquisition, info)

    def states(self, acquisition: int, info: BatchInfo, timeout: float) -> States | None:
        """Register a batch and wait until the states it needs are published (None: its
        acquisition was aborted, or ``timeout`` passed). A stateful batch is dispatched only
        after this, so no processing task ever waits for another batch."""
        with self.changed:
            if not self.core.register(acquisition, info):
                return None
            self.changed.wait_for(
                lambda: not self.core.is_running(acquisition)
                or self.core.states_for(acquisition, info.index) is not None, timeout)
            return self.core.states_for(acquisition, info.index)

    def states_now(self, acquisition: int, index: int) -> States | None:
        """The states a registered batch needs if they are published (no wait)."""
        with self.changed:
            return self.core.states_for(acquisition, index)

    def merge(self, acquisition: int, info: BatchInfo, partial: Partials) -> int:
        with self.changed:
            processed = self.core.merge(acquisition, info, partial)
            self._changed()
            return processed

    def skip(self, acquisition: int, info: BatchInfo) -> None:
        with self.changed:
            self.core.skip(acquisition, info)
            self._changed()

    def give_up(self, acquisition: int, info: BatchInfo) -> None:
        with self.changed:
            self.core.give_up(acquisition, info)
            self._changed()

    def end(self, acquisition: int, batches: int, ledger: Ledger) -> None:
        with self.changed:
            self.core.end(acquisition, batches, ledger)
            self._changed()

    def abort(self, acquisition: int, ledger: Ledger) -> None:
        with self.changed:
            self.core.abort(acquisition, ledger)
            self._changed()

    def reset_pedestal(self) -> None:
        with self.changed:
            self.core.reset_pedestal()

    def recall(self) -> tuple[Checkpoint | None, bool]:
        """For a restarted ingest: its predecessor's last checkpoint, and whether the
        acquisition it had running has ended here."""
        with self.changed:
            return self.core.recall()

    # -- queries ------------------------------------------------------------------------------
    def wait(self, acquisition: int, timeout: float) -> AcquisitionResult | None:
        """The result of an acquisition once it has ended (None on timeout)."""
        with self.changed:
            self.changed.wait_for(lambda: self.core.result(acquisition) is not None, timeout)
            return self.core.result(acquisition)

    def snapshot(self) -> Snapshot:
        with self.changed:
            return self.core.snapshot()

    def status(self) -> ResultsStatus:
        with self.changed:
            return self.core.status()

    def output_state(self) -> dict[str, Any]:
        """The file settings (the seed's filename, filepath, file_index attributes)."""
        return self.sink.state()

    def set_output(self, name: str, value: Any) -> dict[str, Any]:
        """Change ``filename``, ``filepath`` or ``file_index`` (applies to the next file)."""
        return self.sink.set(name, value)

    # -- file work ----------------------------------------------------------------------------
    def _changed(self) -> None:
        """After a mutation (lock held): queue its file work, wake the waiters."""
        for op in self.core.take_io():
            self._io.submit(self._run, op)
        self.changed.notify_all()

    def _run(self, op: IoOp) -> None:
        try:
            value = run_io(op, self.sink)
        except Exception:  # the writer reports disk errors itself; this is a bug
            logger.exception("file operation %s failed", type(op).__name__)
            value = None
        with self.changed:
            self.core.io_done(op, value)
            self.changed.notify_all()
