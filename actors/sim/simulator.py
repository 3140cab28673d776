"""The detector simulator: binds PUB (sls) or PUSH (DECTRIS) and sends a series of frames.

PUB uses an XPUB socket so the simulator can wait until ``wait_subscribers`` subscribers
have joined before the first frame (no slow-joiner loss), and can optionally block instead
of dropping (``lossless``, ``ZMQ_XPUB_NODROP``). By default a PUB drops frames when a
subscriber is slow, exactly like the slsReceiver. PUSH blocks until the receiver takes each
frame (lossless back-pressure), bounded by ``send_timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zmq

from actors.sim.content import EigerScene, Scene, make_scene
from actors.stream.sockets import bound_endpoint, hwm_for, make_publisher, wait_for_subscribers
from actors.wire import reorder
from actors.wire.model import Geometry, Protocol

logger = logging.getLogger(__name__)

Part = bytes | memoryview
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SimulatorSettings:
    """What to send. ``endpoint`` is bound; ``tcp://127.0.0.1:*`` picks a free port."""

    protocol: Protocol = Protocol.SLS
    detector: Literal["moench", "jungfrau", "eiger"] = "moench"
    endpoint: str = "tcp://127.0.0.1:*"
    frames: int = 100
    rate: float = 0.0  # frames/s; 0 = as fast as the socket takes them
    seed: int = 0
    pool: int = 0
    series_id: int = 1
    scene: dict[str, Any] = field(default_factory=dict)  # scene overrides (mode, rows, …)
    compression: str | None = "bslz4"  # DECTRIS V2: bslz4 | lz4 | None
    v1_encoding: str | None = None  # DECTRIS V1: None = bsN-lz4<, or '<', 'lz4<'
    header_detail: str = "basic"  # DECTRIS V1 header detail
    reorder: str = "none"  # sls: send MOENCH03 frames in raw ADC order ('moench03')
    wait_subscribers: int = 1  # PUB: wait for this many subscribers before sending
    lossless: bool = False  # PUB: block instead of dropping when subscribers are slow
    hwm: int | None = None
    send_timeout: float = 30.0
    subscriber_timeout: float = 30.0
    end_of_series: bool = True
    flush_timeout: float = 30.0  # after the last frame, wait this long for it to leave

    @property
    def socket_kind(self) -> Literal["pub", "push"]:
        return "pub" if self.protocol is Protocol.SLS else "push"


class Simulator:
    """Owns one sending socket; use as a context manager, then :meth:`run`."""

    def __init__(self, settings: SimulatorSettings,
                 context: zmq.Context[Any] | None = None) -> None:
        self.settings = settings
        self.scene: Scene = make_scene(settings.detector, seed=settings.seed, pool=settings.pool,
                                       **settings.scene)
        probe = self.scene.frame(0)
        self.geometry = Geometry(probe.shape[0], probe.shape[1], str(probe.dtype))
        self._map = (reorder.load_map(settings.reorder, self.geometry.shape)
                     if settings.protocol is Protocol.SLS else None)
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock: Any = None
        self.sent = 0
        self.achieved_rate = 0.0  # frames/s of the last series sent
        self._complete = False
        self.endpoint = settings.endpoint

    def __enter__(self) -> Simulator:
        self.bind()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def restart(self, **changes: Any) -> None:
        """Prepare another series on the same bound socket (connected receivers stay), e.g.
        ``restart(frames=2000, scene={"mode": "pumpprobe"}, series_id=2)``. Subscribers
        are not awaited again."""
        self.settings = replace(self.settings, wait_subscribers=0, **changes)
        s = self.settings
        self.scene = make_scene(s.detector, seed=s.seed, pool=s.pool, **s.scene)
        self.sent = 0
        self._complete = False

    def bind(self) -> str:
        """Bind the socket; returns the concrete endpoint (with the chosen port)."""
        s = self.settings
        self._sock = make_publisher(self._ctx, s.socket_kind, s.endpoint,
                                    hwm=s.hwm or hwm_for(self.geometry.nbytes),
                                    send_timeout=s.send_timeout, lossless=s.lossless)
        self.endpoint = bound_endpoint(self._sock)
        return self.endpoint

    def close(self) -> None:
        """Close the socket; after a complete run, queued frames get ``flush_timeout``
        seconds to leave (a bounded linger), otherwise they are discarded (linger 0)."""
        if self._sock is not None:
            linger = int(self.settings.flush_timeout * 1000) if self._complete else 0
            self._sock.close(linger=linger)
            self._sock = None
        if self._own_ctx:
            self._ctx.term()

    def wait_for_subscribers(self) -> None:
        """PUB only: block until ``wait_subscribers`` subscriptions arrived (or time out)."""
        s = self.settings
        if s.socket_kind == "pub" and s.wait_subscribers > 0:
            wait_for_subscribers(self._sock, s.wait_subscribers, s.subscriber_timeout)

    # -- messages --------------------------------------------------------------------------
    def messages(self) -> Iterator[tuple[int | None, list[Part]]]:
        """The whole series as (frame number or None for headers/end, multipart message)."""
        s = self.settings
        n = s.frames
        if s.protocol is Protocol.SLS:
            from actors.wire import sls

            for i in range(n):
                img = self.scene.frame(i)
                if self._map is not None:
                    img = reorder.invert_map(img, self._map)
                yield i, sls.encode_image(i, img, total_frames=n, det_type=s.detector)
            if s.end_of_series:
                yield None, sls.encode_end()
        elif s.protocol is Protocol.DECTRIS_V1:
            from actors.wire import dectris_v1

            yield None, list(dectris_v1.encode_header(
                s.series_id, detail=s.header_detail, geometry=self.geometry,
                config={"nimages": n, "ntrigger": 1}, pixel_mask=self._mask_u32()))
            for i in range(n):
                yield i, list(dectris_v1.encode_image(s.series_id, i, self.scene.frame(i),
                                                      encoding=s.v1_encoding))
            if s.end_of_series:
                yield None, list(dectris_v1.encode_end(s.series_id))
        else:
            from actors.wire import dectris_v2

            yield None, list(dectris_v2.encode_start(
                s.series_id, geometry=self.geometry, number_of_images=n,
                pixel_mask=self._mask_u32()))
            for i in range(n):
                yield i, list(dectris_v2.encode_image(s.series_id, i, self.scene.frame(i),
                                                      compression=s.compression))
            if s.end_of_series:
                yield None, list(dectris_v2.encode_end(s.series_id))

    def _mask_u32(self) -> npt.NDArray[np.uint32] | None:
        if isinstance(self.scene, EigerScene):
            return self.scene.mask.astype(np.uint32)
        return None

    def run(self, progress: Progress | None = None) -> int:
        """Send the series; returns the number of frames sent (dropped ones included for PUB)."""
        if self._sock is None:
            self.bind()
        self.wait_for_subscribers()
        rate = self.settings.rate
        t0 = time.monotonic()
        total = self.settings.frames
        for frame, parts in self.messages():
            if frame is not None and rate > 0:
                delay = t0 + frame / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the sender, not synchronisation
            try:
                self._sock.send_multipart(parts, copy=False)
            except zmq.Again:
                raise TimeoutError(f"no receiver took frame {frame} within "
                                   f"{self.settings.send_timeout} s on {self.endpoint}") from None
            if frame is not None:
                self.sent += 1
                if progress is not None:
                    progress(self.sent, total)
        elapsed = time.monotonic() - t0
        logger.info("sent %d frames to %s in %.2f s", self.sent, self.endpoint, elapsed)
        self.achieved_rate = self.sent / elapsed if elapsed > 0 else 0.0
        if rate > 0 and self.sent > 1 and self.achieved_rate < 0.9 * rate:
            logger.warning("sent %d frames at %.0f frames/s, below the %.0f asked: this "
                           "sender (frame generation: try --pool) or a lossless receiver "
                           "is the limit", self.sent, self.achieved_rate, rate)
        self._complete = True
        return self.sent
