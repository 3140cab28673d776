"""A multi-module slsDetector: one PUB stream per module, as a Jungfrau or PSI-EIGER
receiver sends them.

The detector's frame (its scene) is cut into a ``modules`` = (rows, columns) grid of equal
parts; part (r, c) goes out on stream ``r * columns + c`` with the slsDetector header of
that module (``row``, ``column``, ``modId``, ``detshape``) and the same frame numbers on
every stream. ``lose`` injects loss: module index → frame numbers that module does not send
(as a receiver that lost the packets would). Every stream ends with the end-of-acquisition
header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from actors.sim.content import Scene, make_scene
from actors.sim.simulator import Progress, SimulatorSettings
from actors.stream.sockets import bound_endpoint, hwm_for, make_publisher, wait_for_subscribers
from actors.wire import sls
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModuleSettings:
    """The detector (``detector``: its scene, rate, frames…) and how it is cut."""

    detector: SimulatorSettings = field(default_factory=SimulatorSettings)
    modules: tuple[int, int] = (2, 2)  # rows, columns of parts
    lose: Mapping[int, Sequence[int]] = field(default_factory=dict)  # module -> frames


def module_endpoints(endpoint: str, count: int) -> list[str]:
    """Where the ``count`` streams bind: ``tcp://host:*`` gives each a free port,
    ``tcp://host:P`` the ports P, P+1, …"""
    if endpoint.endswith(":*") or not endpoint.startswith("tcp://"):
        if not endpoint.endswith(":*"):
            raise ValueError(f"{endpoint}: several modules need tcp://host:port or "
                             "tcp://host:*")
        return [endpoint] * count
    host, _, port = endpoint.rpartition(":")
    return [f"{host}:{int(port) + i}" for i in range(count)]


class ModuleSimulator:
    """Owns one PUB socket per module; use as a context manager, then :meth:`run`."""

    def __init__(self, settings: ModuleSettings, context: zmq.Context[Any] | None = None
                 ) -> None:
        d = settings.detector
        if d.protocol is not Protocol.SLS:
            raise ValueError("a multi-module detector is simulated over sls streams")
        rows, cols = settings.modules
        if rows < 1 or cols < 1:
            raise ValueError(f"modules must be rows x columns >= 1, got {settings.modules}")
        self.settings = settings
        self.scene: Scene = make_scene(d.detector, seed=d.seed, pool=d.pool, **d.scene)
        probe = self.scene.frame(0)
        if probe.shape[0] % rows or probe.shape[1] % cols:
            raise ValueError(f"a {probe.shape[0]}x{probe.shape[1]} frame does not split into "
                             f"{rows}x{cols} equal modules")
        self.part_shape = (probe.shape[0] // rows, probe.shape[1] // cols)
        self.count = rows * cols
        bad = [m for m in settings.lose if not 0 <= m < self.count]
        if bad:
            raise ValueError(f"lose: no module {bad} (modules 0..{self.count - 1})")
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._socks: list[Any] = []
        self.endpoints: list[str] = []
        self.sent = [0] * self.count
        self._complete = False

    def __enter__(self) -> ModuleSimulator:
        self.bind()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def bind(self) -> list[str]:
        d = self.settings.detector
        nbytes = self.part_shape[0] * self.part_shape[1] * 2
        for endpoint in module_endpoints(d.endpoint, self.count):
            sock = make_publisher(self._ctx, "pub", endpoint, hwm=d.hwm or hwm_for(nbytes),
                                  send_timeout=d.send_timeout, lossless=d.lossless)
            self._socks.append(sock)
            self.endpoints.append(bound_endpoint(sock))
        return self.endpoints

    def close(self) -> None:
        linger = int(self.settings.detector.flush_timeout * 1000) if self._complete else 0
        for sock in self._socks:
            sock.close(linger=linger)
        self._socks = []
        if self._own_ctx:
            self._ctx.term()

    def part(self, frame: npt.NDArray[Any], module: int) -> npt.NDArray[Any]:
        """Module ``module``'s part of a full frame."""
        r, c = divmod(module, self.settings.modules[1])
        pr, pc = self.part_shape
        return frame[r * pr:(r + 1) * pr, c * pc:(c + 1) * pc]

    def wait_for_subscribers(self, modules: Iterable[int] | None = None, count: int = 1
                             ) -> None:
        """Block until ``count`` new subscriptions reached each of ``modules`` (all)."""
        d = self.settings.detector
        for m in range(self.count) if modules is None else modules:
            wait_for_subscribers(self._socks[m], count, d.subscriber_timeout)

    def run(self, progress: Progress | None = None) -> list[int]:
        """Send the series on every stream; returns the frames each module sent."""
        if not self._socks:
            self.bind()
        d = self.settings.detector
        if d.wait_subscribers > 0:
            self.wait_for_subscribers(count=d.wait_subscribers)
        lost = {m: set(frames) for m, frames in self.settings.lose.items()}
        grid = self.settings.modules
        t0 = time.monotonic()
        for i in range(d.frames):
            if d.rate > 0:
                delay = t0 + i / d.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the sender, not synchronisation
            frame = np.ascontiguousarray(self.scene.frame(i))
            for m, sock in enumerate(self._socks):
                if i in lost.get(m, ()):
                    continue
                parts = sls.encode_image(i, np.ascontiguousarray(self.part(frame, m)),
                                         total_frames=d.frames, det_type=d.detector,
                                         module=divmod(m, grid[1]), modules=grid)
                self._send(sock, parts, m, i)
                self.sent[m] += 1
            if progress is not None:
                progress(i + 1, d.frames)
        if d.end_of_series:
            for m, sock in enumerate(self._socks):
                self._send(sock, sls.encode_end(), m, None)
        logger.info("sent %d frames on %d module streams in %.2f s", d.frames, self.count,
                    time.monotonic() - t0)
        self._complete = True
        return list(self.sent)

    def _send(self, sock: Any, parts: list[bytes | memoryview], module: int,
              frame: int | None) -> None:
        try:
            sock.send_multipart(parts, copy=False)
        except zmq.Again:
            raise TimeoutError(f"no receiver took frame {frame} of module {module} within "
                               f"{self.settings.detector.send_timeout} s") from None
