"""``rayline run CONFIG``: the long-running service (pipeline + Tango device).

Acquisitions are driven by Tango clients (``start_receiver``/``Start`` …), or, with
``--auto``, started automatically and restarted after every end of series (free-running).
SIGINT/SIGTERM stop it cleanly: a running acquisition is drained (processed = received)
within ``acquisition_timeout``, else aborted; then every actor, process and shared-memory
block is released.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from actors.config import PipelineConfig, load_config
from actors.core.acquisition import AcquisitionResult
from actors.core.api import PipelineApi

logger = logging.getLogger(__name__)

READY_LINE = "rayline service ready"


class Service:
    """Owns the pipeline for the lifetime of the process."""

    def __init__(self, config: PipelineConfig, *, auto: bool = False,
                 status_period: float = 30.0) -> None:
        self.config = config
        self.auto = auto
        self.status_period = status_period
        self.stopping = threading.Event()

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if signum is not None:
            logger.info("signal %s: stopping", signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> int:
        from actors import Pipeline

        with Pipeline(self.config) as pipe, _handle_signals(self.request_stop):
            # installed after the pipeline opened: ray.init() installs its own SIGTERM handler
            tango = pipe.tango_address
            logger.info("%s: source %s (%s, %s), backend %s, %d workers, Tango %s",
                           READY_LINE, self.config.source.endpoint, self.config.source.protocol,
                           self.config.source.socket_kind, self.config.backend,
                           self.config.workers, tango or "disabled")
            try:
                self._serve(pipe)
            finally:
                self._drain(pipe)
        logger.info("rayline service stopped")
        return 0

    def _serve(self, pipe: PipelineApi) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(0.25):
            status = pipe.status()
            if self.auto and status.state == "idle":
                acq = pipe.acquisition
                if acq:  # idle: its result comes once its file is written (bounded)
                    try:
                        _log_result(pipe.wait_acquisition(
                            timeout=self.config.acquisition_timeout))
                    except TimeoutError:
                        logger.error("acquisition %d has no result after %g s", acq,
                                     self.config.acquisition_timeout)
                pipe.start_acquisition()
                logger.info("acquisition %d started (auto)", pipe.acquisition)
            if time.monotonic() - last_status >= self.status_period:
                last_status = time.monotonic()
                logger.info("state %s: received %d, processed %d, dropped %d, lost %d, "
                            "%.0f frames/s", status.state, status.received, status.processed,
                            status.dropped, status.lost, status.frame_rate)

    def _drain(self, pipe: PipelineApi) -> None:
        try:
            if pipe.status().state == "idle":
                return
            logger.info("draining acquisition %d", pipe.acquisition)
            try:
                _log_result(pipe.stop_acquisition(timeout=self.config.acquisition_timeout))
            except TimeoutError:
                logger.error("acquisition %d did not drain in %.0f s: aborting",
                             pipe.acquisition, self.config.acquisition_timeout)
                pipe.abort()
        except Exception:  # shutting down regardless
            logger.exception("could not drain the running acquisition")


def _log_result(result: AcquisitionResult) -> None:
    led = result.ledger
    logger.info("acquisition %d %s: received %d, processed %d, dropped %d, lost %d, file %s",
                result.acquisition, result.outcome, led.received, led.processed,
                led.dropped_total, led.lost, result.file or "-")


@contextmanager
def _handle_signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_service(config_path: str | Path | None, *, auto: bool = False,
                overrides: dict[str, Any] | None = None) -> int:
    """Entry point of ``rayline run``: serve until SIGINT/SIGTERM."""
    return Service(load_config(config_path, overrides), auto=auto).run()
