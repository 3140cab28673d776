"""One DECTRIS stream dealt to several PULL clients, as a detector's PUSH socket does when
several receivers (on several hosts) connect to it — with the dealing made explicit.

A PUSH socket hands each message to the next connected peer in turn, so every client sees
a share of the images, and only one of them the series start, only one the end. To test
that every client's share adds up to the whole series whichever client gets the start and
the end, this simulator binds one PUSH socket per client and deals the messages itself:
image ``i`` goes to client ``i % clients``, the series start to client ``start_to`` and the
end to client ``end_to``. (A real single PUSH endpoint read by several clients is the
plain :class:`~actors.sim.simulator.Simulator`: the sources then share one endpoint.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import zmq

from actors.sim.modules import module_endpoints
from actors.sim.simulator import Progress, Simulator, SimulatorSettings
from actors.stream.sockets import bound_endpoint, hwm_for, make_publisher
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareSettings:
    """The series (``detector``: a DECTRIS protocol) and how it is dealt."""

    detector: SimulatorSettings = field(
        default_factory=lambda: SimulatorSettings(protocol=Protocol.DECTRIS_V2))
    clients: int = 2
    start_to: int = 0  # the client that gets the series start
    end_to: int = 0  # the client that gets the series end


class ShareSimulator:
    """Owns one PUSH socket per client; use as a context manager, then :meth:`run`."""

    def __init__(self, settings: ShareSettings, context: zmq.Context[Any] | None = None
                 ) -> None:
        d = settings.detector
        if d.protocol is Protocol.SLS:
            raise ValueError("clients sharing a stream are simulated over DECTRIS streams")
        if settings.clients < 1:
            raise ValueError(f"clients must be >= 1, got {settings.clients}")
        for what in ("start_to", "end_to"):
            if not 0 <= getattr(settings, what) < settings.clients:
                raise ValueError(f"{what}: no client {getattr(settings, what)} (clients "
                                 f"0..{settings.clients - 1})")
        self.settings = settings
        self.series = Simulator(d, context)  # the messages (its socket is never bound)
        self.scene = self.series.scene
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._socks: list[Any] = []
        self.endpoints: list[str] = []
        self.sent = [0] * settings.clients  # images each client was dealt
        self._complete = False

    def __enter__(self) -> ShareSimulator:
        self.bind()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def bind(self) -> list[str]:
        d = self.settings.detector
        for endpoint in module_endpoints(d.endpoint, self.settings.clients):
            sock = make_publisher(self._ctx, "push", endpoint,
                                  hwm=d.hwm or hwm_for(self.series.geometry.nbytes),
                                  send_timeout=d.send_timeout)
            self._socks.append(sock)
            self.endpoints.append(bound_endpoint(sock))
        return self.endpoints

    def close(self) -> None:
        linger = int(self.settings.detector.flush_timeout * 1000) if self._complete else 0
        for sock in self._socks:
            sock.close(linger=linger)
        self._socks = []
        self.series.close()
        if self._own_ctx:
            self._ctx.term()

    def restart(self, **changes: Any) -> None:
        """Another series on the same sockets (e.g. ``series_id=2``)."""
        self.series.restart(**changes)
        self.settings = ShareSettings(self.series.settings, self.settings.clients,
                                      self.settings.start_to, self.settings.end_to)
        self.scene = self.series.scene
        self.sent = [0] * self.settings.clients
        self._complete = False

    def run(self, progress: Progress | None = None) -> list[int]:
        """Deal the series to the clients; returns the images each was dealt."""
        if not self._socks:
            self.bind()
        s = self.settings
        rate = s.detector.rate
        t0 = time.monotonic()
        started = False
        for frame, parts in self.series.messages():
            if frame is None:  # the start, then (after every image) the end
                client = s.end_to if started else s.start_to
                started = True
            else:
                client = frame % s.clients
                if rate > 0:
                    delay = t0 + frame / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # pacing the sender, not synchronisation
            try:
                self._socks[client].send_multipart(parts, copy=False)
            except zmq.Again:
                raise TimeoutError(f"client {client} took no message within "
                                   f"{s.detector.send_timeout} s on "
                                   f"{self.endpoints[client]}") from None
            if frame is not None:
                self.sent[client] += 1
                if progress is not None:
                    progress(sum(self.sent), s.detector.frames)
        logger.info("dealt %d images to %d clients in %.2f s (start to %d, end to %d)",
                    sum(self.sent), s.clients, time.monotonic() - t0, s.start_to, s.end_to)
        self._complete = True
        return list(self.sent)
