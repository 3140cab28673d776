"""The device's one background task: poll the pipeline, hand what changed to the device.

A pull model: this task runs on the device's event loop and is the only place (with the
commands, on the same loop) that pushes events, so no foreign thread ever pushes. Status
is polled every ``status_period``; outputs are fetched only when the acquisition or its
processed count changed, at most every ``live_period`` while it runs, at once when it has
ended, and whenever :meth:`LivePublisher.publish` is called (``update_images_events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from actors.core.api import Control
from actors.core.status import Snapshot, Status

logger = logging.getLogger(__name__)

STATUS_PERIOD = 0.2
STOP_TIMEOUT = 10.0

Key = tuple[int | None, int, bool]


class Sink(Protocol):
    """What the device does with what the publisher fetched (all on the device loop)."""

    def on_status(self, status: Status) -> None: ...

    def on_snapshot(self, snapshot: Snapshot) -> None: ...

    def on_failure(self, error: BaseException) -> None: ...


class LivePublisher:
    """Owns the polling task; :meth:`stop` cancels and awaits it."""

    def __init__(self, control: Control, sink: Sink, live_period: Callable[[], float],
                 status_period: float = STATUS_PERIOD) -> None:
        self.control = control
        self.sink = sink
        self.live_period = live_period
        self.status_period = status_period
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._published: Key | None = None
        self._next_live = 0.0
        self._status_acquisition: int | None = None  # of the last polled status
        self._final_for: int | None = -1  # acquisition whose final outputs were published

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="rayline live")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, STOP_TIMEOUT)

    def wake(self) -> None:
        """Poll now instead of at the next period (after a command)."""
        self._wake.set()

    async def poll_status(self) -> Status:
        status = await self.control.status()
        self._status_acquisition = status.acquisition
        self.sink.on_status(status)
        return status

    async def publish(self) -> Snapshot:
        """Fetch the outputs now and hand them to the device."""
        async with self._lock:
            snap = await self.control.snapshot()
            self._published = (snap.acquisition, snap.processed, snap.running)
            self._next_live = time.monotonic() + self.live_period()
            if not snap.running:  # final for the acquisition it is of (the status may be
                self._final_for = snap.acquisition  # ahead: then it is fetched again)
            self.sink.on_snapshot(snap)
            return snap

    def due(self, status: Status, now: float) -> bool:
        """Whether the outputs should be fetched after this status: while running when they
        changed (at most every ``live_period``), once it has ended (until the results say
        they are final), and for an acquisition that ended between two polls."""
        last = self._published
        if last is None:
            return True
        if status.running:
            self._final_for = None
            changed = (status.acquisition, status.processed) != last[:2]
            return changed and now >= self._next_live
        return last[2] or self._final_for != status.acquisition

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                status = await self.poll_status()
                if self.due(status, time.monotonic()):
                    await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the pipeline is unreachable or failing: FAULT
                logger.warning("live update failed: %s: %s", type(exc).__name__, exc)
                self.sink.on_failure(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       min(self.status_period, self.live_period()))
