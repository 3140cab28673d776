"""The local backend's pipeline (``backend: local``): the stages as processes on one host,
frames in a ring of shared-memory slots; no Ray needed.

Everything a user calls is the shared :class:`~actors.pipeline.PipelineBase`; this module
starts and stops the processes (all ``spawn``):

* the driver (this process): the :class:`SlotManager` that owns every shared-memory block,
  the results stage (:class:`~actors.results.stage.ResultsStage`, also the results port),
  the coordinator thread and, when enabled, the Tango device in a thread;
* one ingest process (the shared ingest stage, batches copied into slots);
* ``workers`` worker processes (the reducer chain on batches read from slots).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from actors.backends.local import processes
from actors.backends.local.coordinator import Coordinator
from actors.backends.local.shm import SlotManager, leave_signals_to_driver
from actors.config import PipelineConfig
from actors.core.api import StageDied
from actors.core.status import IngestStatus, ResultsStatus
from actors.ingest.events import live_status
from actors.output import AcquisitionWriter
from actors.pipeline import PipelineBase
from actors.results.stage import ResultsStage

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
CALL_TIMEOUT = 60.0
#: seconds each child gets to exit after being asked, before terminate / kill
JOIN_TIMEOUT = 5.0


class IngestCalls:
    """The ingest process's commands (:class:`~actors.pipeline.IngestPort`), as calls over
    the connection of the ingest process of the moment (a dead one is replaced)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def _call(self, method: str, *args: Any, source: str | None = None) -> Any:
        """Call the ingest of the first source (or of module ``source``)."""
        c = self.coordinator
        handle = c.ingest if source is None else c.secondaries[source]
        call, future = handle.calls.new(method, *args)
        handle.outbox.send(call)
        try:
            return future.result(CALL_TIMEOUT)
        except StageDied:
            again = c.ingest if source is None else c.secondaries.get(source)
            if method != "status" or again is handle:
                raise
        return self._call(method, *args, source=source)  # asked again of the new ingest

    def _modules(self, method: str, *args: Any) -> None:
        """The same command to every other module's ingest (a multi-module detector)."""
        for source in list(self.coordinator.secondaries):
            self._call(method, *args, source=source)

    def start(self) -> int:
        acquisition = int(self._call("start"))
        self._modules("start", acquisition)  # the first source numbers the acquisitions
        return acquisition

    def stop(self, acquisition: int) -> None:
        self._call("stop", acquisition)
        self._modules("stop", acquisition)

    def abort(self, acquisition: int) -> None:
        self._call("abort", acquisition)
        self._modules("abort", acquisition)

    def set(self, changes: dict[str, Any]) -> int | None:
        if self.coordinator.secondaries and self.status().state != "idle":
            raise RuntimeError("the runtime parameters of a multi-module detector apply "
                               "between acquisitions: stop the running one first")
        first = self._call("set", changes)
        self._modules("set", changes)
        return None if first is None else int(first)

    def status(self) -> IngestStatus:
        status: IngestStatus = self._call("status")
        if not self.coordinator.secondaries:
            return status
        others = {}
        for source in list(self.coordinator.secondaries):
            try:
                others[source] = self._call("status", source=source)
            except StageDied:  # that module's ingest is being restarted: not shown now
                continue
        return live_status(status, others, self.coordinator.names[0],
                           share=self.coordinator.config.shared)


class LocalPipeline(PipelineBase):
    """Ingest + worker processes over a shared-memory ring, results merged in this process."""

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | Path | None = None
                 ) -> None:
        super().__init__(config)
        cfg = self.config
        output = cfg.output.model_copy(
            update={"directory": str(Path(cfg.output.directory).absolute())})
        self.results_stage = ResultsStage(AcquisitionWriter(output), cfg.model_dump(mode="json"))
        self.slot_manager: SlotManager | None = None
        self.coordinator: Coordinator | None = None
        self.tango: Any = None  # actors.tango.host.ServerThread
        self._closing = threading.Lock()

    @property
    def tango_address(self) -> str | None:
        return self.tango.address if self.tango is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        cfg = self.config
        level = logging.getLogger("actors").getEffectiveLevel()
        try:
            ctx = processes.context()
            self.slot_manager = SlotManager(ctx=ctx)
            with processes.stop_signals_blocked(), processes.main_hidden():
                self.slot_manager.start(initializer=leave_signals_to_driver)
            self.coordinator = Coordinator(self.results_stage, cfg, self.slot_manager, level)
            self.coordinator.start()
            self._wait_ready()
            self.ingest_port = IngestCalls(self.coordinator)
            self.results_port = self.results_stage
            if cfg.tango.enabled:
                from actors.tango.host import start_tango_thread

                self.tango = start_tango_thread(cfg, self.control())
        except BaseException:
            self.close()
            raise
        logger.info("local pipeline open: %d worker processes, %s %s", cfg.workers,
                    "modules" if cfg.modular else "source",
                    ", ".join(s.endpoint for s in cfg.all_sources))

    def _wait_ready(self) -> None:
        assert self.coordinator is not None
        deadline = time.monotonic() + READY_TIMEOUT
        for ingest in [self.coordinator.ingest, *self.coordinator.secondaries.values()]:
            what = "the ingest process" if ingest is self.coordinator.ingest else \
                f"the ingest process of module {ingest.source}"
            if not ingest.ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{what} did not start within {READY_TIMEOUT:.0f} s")
            if ingest.fault is not None:
                raise RuntimeError(f"{what} could not start: {ingest.fault}")
        if not self.coordinator.ready(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"{self.config.workers} worker processes did not start within "
                               f"{READY_TIMEOUT:.0f} s: {self.coordinator.fault or 'timeout'}")

    def close(self) -> None:
        """Stop every process, close every connection, unlink every shared-memory block.
        Safe to call twice, on errors, and on Ctrl-C (a second Ctrl-C waits for it)."""
        with self._closing, _deferred_sigint():
            self._close()

    def _close(self) -> None:
        if self.tango is not None:
            try:
                self.tango.stop()
            except Exception:  # closing anyway
                logger.exception("Tango device did not stop cleanly")
            self.tango = None
        self.ingest_port = self.results_port = None
        c, smm = self.coordinator, self.slot_manager
        if c is not None:
            c.closing = True
            c.stop()  # from here on this thread alone touches the processes
        ingests = [] if c is None else [c.ingest, *c.secondaries.values()]  # of the moment
        for ing in ingests:
            assert c is not None
            alive = c.ingest_alive if ing is c.ingest else not ing.conn.closed
            if alive:
                call, _ = ing.calls.new("close")
                ing.outbox.send(call)
        for ing in ingests:
            processes.stop(ing.process, JOIN_TIMEOUT)
            ing.calls.fail_all(RuntimeError("the pipeline is closed"))
            ing.outbox.close(timeout=1.0)
        if c is not None:
            c.shutdown_workers(JOIN_TIMEOUT)
        self.results_stage.close()
        if smm is not None:
            processes.shutdown_manager(smm)  # unlinks every block the ring ever had
        self.coordinator = self.slot_manager = None

    # -- status ------------------------------------------------------------------------------------
    def _stage_status(self) -> tuple[IngestStatus, ResultsStatus]:
        ingest = self._ingest().status()
        c = self.coordinator
        if c is not None:
            fault = ingest.fault or c.fault
            ingest = replace(ingest, dispatch=c.counts(ingest.acquisition), fault=fault)
        return ingest, self._results().status()

    # -- introspection (tests, status pages) -------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes, by worker index."""
        return self.coordinator.worker_pids() if self.coordinator is not None else []

    @property
    def restarts(self) -> int:
        """Worker processes started to replace dead ones."""
        return self.coordinator.restarts if self.coordinator is not None else 0


@contextmanager
def _deferred_sigint() -> Iterator[None]:
    """In the main thread: a Ctrl-C during cleanup is held back and raised afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous: Callable[[int, FrameType | None], Any] | int | None = signal.signal(
        signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
