"""The Python API of the local backend: :class:`LocalPipeline` (``backend: local``).

Same methods, semantics and return values as :class:`actors.pipeline.driver.RayPipeline`;
no Ray needed. Processes (all ``spawn``):

* the driver (this process): the :class:`SlotManager` that owns every shared-memory block,
  the results stage (:class:`LocalResults`) and the coordinator thread;
* one ingest process (``zmq.asyncio`` receiver, batches written straight into slots);
* ``workers`` worker processes (the reducer chain on batches read from slots).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from actors.config import PipelineConfig, as_config
from actors.core.acquisition import AcquisitionResult
from actors.local import processes
from actors.local.channel import Outbox
from actors.local.coordinator import Coordinator, IngestHandle, WorkerHandle, start_worker
from actors.local.ingest import ingest_main
from actors.local.results import LocalResults
from actors.local.shm import SlotManager, ignore_sigint
from actors.reduce.base import OutputValue

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
CALL_TIMEOUT = 60.0
#: seconds each child gets to exit after being asked, before terminate / kill
JOIN_TIMEOUT = 5.0


class LocalPipeline:
    """Ingest + worker processes over a shared-memory ring, results merged in this process.

    Use as a context manager (or call :meth:`open` / :meth:`close`)::

        with LocalPipeline(config) as p:
            p.start_acquisition()
            ...                       # the detector sends frames
            result = p.stop_acquisition(timeout=30)
            result.outputs["analog_img"]
    """

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | Path | None = None
                 ) -> None:
        self.config = as_config(config)
        self._acquisition = 0
        cfg_ = self.config
        output = cfg_.output.model_copy(
            update={"directory": str(Path(cfg_.output.directory).absolute())})
        self.results_stage = LocalResults(output=output, config=cfg_.model_dump(mode="json"))
        self.slot_manager: SlotManager | None = None
        self.ingest: IngestHandle | None = None
        self.coordinator: Coordinator | None = None
        self.tango: Any = None  # actors.tango.host.ServerThread
        self._closing = threading.Lock()

    @property
    def tango_address(self) -> str | None:
        """The full address of the Tango device (None when disabled)."""
        return self.tango.address if self.tango is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalPipeline:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        cfg = self.config
        level = logging.getLogger("actors").getEffectiveLevel()
        try:
            ctx = processes.context()
            self.slot_manager = SlotManager(ctx=ctx)
            with processes.sigint_blocked():
                self.slot_manager.start(initializer=ignore_sigint)
            parent, child = ctx.Pipe(duplex=True)
            process = processes.start(ingest_main, (cfg, child, level), "rayline-ingest")
            child.close()
            self.ingest = IngestHandle(process, parent, Outbox(parent, "ingest"))
            workers: list[WorkerHandle] = [start_worker(i, level) for i in range(cfg.workers)]
            self.coordinator = Coordinator(self.results_stage, self.ingest, workers,
                                           self.slot_manager, level)
            self.coordinator.start()
            self._wait_ready()
            if cfg.tango.enabled:
                from actors.tango.host import start_tango_thread

                self.tango = start_tango_thread(cfg, self)
        except BaseException:
            self.close()
            raise
        logger.info("local pipeline open: %d worker processes, source %s", cfg.workers,
                    cfg.source.endpoint)

    def _wait_ready(self) -> None:
        assert self.ingest is not None and self.coordinator is not None
        deadline = time.monotonic() + READY_TIMEOUT
        if not self.ingest.ready.wait(READY_TIMEOUT):
            raise RuntimeError(f"the ingest process did not start within {READY_TIMEOUT:.0f} s")
        if self.ingest.fault is not None:
            raise RuntimeError(f"the ingest process could not start: {self.ingest.fault}")
        with self.results_stage.changed:
            ok = self.results_stage.changed.wait_for(
                lambda: self._workers_ready() or self.coordinator is None
                or self.coordinator.fault is not None,
                max(0.0, deadline - time.monotonic()))
        if not ok or not self._workers_ready():
            raise RuntimeError(f"{self.config.workers} worker processes did not start within "
                               f"{READY_TIMEOUT:.0f} s")

    def _workers_ready(self) -> bool:
        c = self.coordinator
        return c is not None and len(c.workers) == self.config.workers and all(
            w.ready for w in c.workers)

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
        c, ing, smm = self.coordinator, self.ingest, self.slot_manager
        if c is not None:
            c.closing = True
            c.stop()  # from here on this thread alone touches the processes
        if ing is not None:
            if c is None or c.ingest_alive:
                call, _ = ing.calls.new("close")
                ing.outbox.send(call)
            processes.stop(ing.process, JOIN_TIMEOUT)
            ing.calls.fail_all(RuntimeError("the pipeline is closed"))
            ing.outbox.close(timeout=1.0)
        if c is not None:
            c.shutdown_workers(JOIN_TIMEOUT)
        if smm is not None:
            try:
                smm.shutdown()  # unlinks every block the ring ever had
            except Exception:
                logger.exception("shared-memory manager did not shut down cleanly")
        self.coordinator = self.ingest = self.slot_manager = None

    # -- calls into the ingest -------------------------------------------------------------------
    def _call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        ing = self.ingest
        if ing is None:
            raise RuntimeError("the pipeline is not open")
        call, future = ing.calls.new(method, *args)
        ing.outbox.send(call)
        return future.result(timeout)

    # -- acquisitions ------------------------------------------------------------------------
    @property
    def acquisition(self) -> int:
        """The number of the current (or last) acquisition; 0 before the first."""
        return self._acquisition

    def start_acquisition(self) -> int:
        """Start accepting frames; an end-of-series message or :meth:`stop_acquisition`
        ends the acquisition."""
        self._acquisition += 1
        self._call("start", self._acquisition)
        return self._acquisition

    def stop_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Stop accepting frames, wait until every received frame is processed, finalise."""
        self._call("stop", self._acquisition)
        return self.wait_acquisition(timeout)

    def wait_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Wait for the current acquisition to end (by end-of-series or stop) and finish."""
        limit = self.config.acquisition_timeout if timeout is None else timeout
        result = self.results_stage.wait(self._acquisition, limit)
        if result is None:
            raise TimeoutError(f"acquisition {self._acquisition} did not finish within "
                               f"{limit} s: {self.status()}")
        return result

    def abort(self) -> None:
        """Stop and discard the current acquisition."""
        self._call("abort", self._acquisition)

    def reset_pedestal(self) -> None:
        self.results_stage.reset_pedestal()

    # -- queries and parameters ---------------------------------------------------------------
    def set_output(self, filename: str | None = None, filepath: str | None = None,
                   file_index: int | None = None) -> dict[str, Any]:
        """Change the file name, directory or next index (applies to the next file)."""
        state: dict[str, Any] = {}
        for name, value in (("filename", filename), ("filepath", filepath),
                            ("file_index", file_index)):
            if value is not None:
                state = self.results_stage.set_output(name, value)
        return state or self.results_stage.output_state()

    def status(self) -> dict[str, Any]:
        """State, counters (received, processed, dropped, lost, pending) and rates."""
        ingest = self._call("status")
        c = self.coordinator
        ledger = dict(ingest.get("ledger", {}))
        with self.results_stage.changed:
            processed = self.results_stage.processed()
            if c is not None and ledger:
                drops, inflight = c.extra(ledger.get("acquisition"))
                if +drops:
                    dropped = drops + type(drops)(ledger.get("dropped", {}))
                    ledger["dropped"] = dict(dropped)
                    ledger["dropped_total"] = sum(dropped.values())
                ledger["inflight_batches"] = inflight
            fault = ingest["fault"] or (c.fault if c is not None else None)
        return {
            "state": ingest["state"],
            "acquisition": self._acquisition,
            "received": ledger.get("received", 0),
            "processed": processed,
            "dropped": ledger.get("dropped_total", 0),
            "lost": ledger.get("lost", 0),
            "rejected": ledger.get("rejected_total", 0),
            "pending": ledger.get("received", 0) - processed - ledger.get("dropped_total", 0),
            "frame_rate": ingest["frame_rate"],
            "idle_dropped": ingest["idle_dropped"],
            "fault": fault,
            "ledger": ledger,
            "receiver": ingest["receiver"],
        }

    def results(self) -> dict[str, OutputValue]:
        """Named outputs of the running acquisition (else of the last finished one)."""
        return self.results_stage.outputs()

    def set(self, name: str, value: Any) -> int | None:
        """Change a runtime parameter; returns the first batch it applies to (None: from the
        next acquisition's first batch)."""
        return self._call("set", {name: value})  # type: ignore[no-any-return]

    # -- introspection (tests, status pages) -------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes, by worker index."""
        c = self.coordinator
        if c is None:
            return []
        with self.results_stage.changed:
            return [w.process.pid for w in c.workers if w.process.pid is not None]

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
