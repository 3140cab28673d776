"""Async receiver: a zmq.asyncio SUB or PULL socket yielding typed messages, with a ledger.

Usable on its own (no Ray)::

    async with Receiver(ReceiverSettings("tcp://127.0.0.1:30001", "sub", Protocol.SLS)) as rx:
        async for msg in rx:
            ...

The hot path only parses headers; pixel payloads stay zero-copy views of the ZMQ frames.
Malformed messages never escape: each is counted in :attr:`Receiver.ledger` with a reason
and valid messages around them still arrive.

Size limits come from the declared geometry: a message part larger than
:func:`part_limit` is rejected as ``oversize``; ``ZMQ_MAXMSGSIZE`` is set to twice that (of
the configured geometry, else of the largest frame allowed) as a hard guard: libzmq drops
the connection of a peer that exceeds it, the event is counted in ``ledger.disconnects`` and
the receiver connects again.

The receive queue is bounded in bytes as well as messages: its high-water mark is
``queue_bytes`` over the configured frame size, else over the largest message allowed (at
least 4 messages), so a peer that is not read from cannot make the receiver hold gigabytes.
The mark is fixed when the socket opens: raising ``ZMQ_RCVHWM`` on a live connection can
stall it for good in libzmq 4.3 (a blocked peer is only woken every new low-water-mark
reads), and a deep receive queue buys no throughput (measured: 4 and 800 messages of
320 kB receive at the same rate); bursts wait in the sender's queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from actors.stream.ledger import Ledger
from actors.stream.sockets import QUEUE_BYTES, hwm_for, make_socket
from actors.wire.codec import decoder_for
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Geometry, Image, Message, Protocol, SeriesEnd, SeriesStart

logger = logging.getLogger(__name__)

#: the largest frame a stream may declare, in pixels (EIGER2 X 16M and JUNGFRAU 16M are
#: about 18 million), unless the configuration says otherwise
MAX_PIXELS = 40_000_000
#: the most images a series may declare (DECTRIS nimages × ntrigger)
MAX_IMAGES = 1_000_000_000
#: seconds after a disconnect without a libzmq retry before the receiver connects itself
RETRY_GRACE = 1.0
_WATCHED = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_DELAYED
            | zmq.EVENT_CONNECT_RETRIED)


def part_limit(geometry: Geometry | None, max_pixels: int = MAX_PIXELS) -> int:
    """Largest acceptable message part for a geometry (else for the largest frame allowed):
    room for 16 bytes per pixel (a series start with mask + flatfield for two channels, or
    four 32-bit channels) + 1 MiB."""
    pixels = max_pixels if geometry is None else geometry.rows * geometry.cols
    return 16 * pixels + (1 << 20)


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Where and how to receive. ``bind`` is False for the usual case (the detector binds)."""

    endpoint: str
    socket: Literal["sub", "pull"]
    protocol: Protocol
    geometry: Geometry | None = None
    bind: bool = False
    hwm: int | None = None
    accept_incomplete: bool = False
    name: str = ""
    max_pixels: int = MAX_PIXELS  # a stream declaring larger frames is not believed
    max_images: int = MAX_IMAGES  # nor a series declaring more images
    queue_bytes: int = QUEUE_BYTES  # bytes the receive queue may hold
    share: bool = False  # one of several PULL clients of the stream (gaps are not lost)


class Receiver:
    """Owns one socket (and its monitor task); use as an async context manager."""

    def __init__(self, settings: ReceiverSettings,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.settings = settings
        self.ledger = Ledger(source=settings.name or settings.endpoint, share=settings.share)
        self._decode = decoder_for(settings.protocol, accept_incomplete=settings.accept_incomplete)
        self._own_ctx = context is None
        self._ctx = context or zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._geometry = settings.geometry
        self._limit = part_limit(settings.geometry, settings.max_pixels)
        self._max_message = 2 * self._limit  # the hard guard (ZMQ_MAXMSGSIZE)
        self._hwm = settings.hwm or hwm_for(
            settings.geometry.nbytes if settings.geometry else self._max_message,
            queue_bytes=settings.queue_bytes)

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Receiver:
        self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def open(self) -> None:
        s = self.settings
        sock = make_socket(self._ctx, s.socket, s.endpoint, bind=s.bind, hwm=self._hwm,
                           max_message_bytes=self._max_message)
        self._sock = sock
        monitor = self._monitor = sock.get_monitor_socket(_WATCHED)
        self._monitor_task = asyncio.get_running_loop().create_task(
            self._watch(monitor), name=f"monitor {s.endpoint}")

    async def close(self) -> None:
        # the monitor is disabled first: libzmq's I/O thread then sends it no more events
        # (closing the monitor socket first could leave that thread blocked sending one
        # while this thread waits on the socket's lock: a hang seen in ~1 of 22 closes)
        if self._sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
            self._monitor_task = None
        if self._monitor is not None:  # (a task cancelled before it ran closed nothing)
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_ctx:
            self._ctx.term()

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Count disconnects; reconnect when libzmq will not (after a protocol error such
        as a message over ZMQ_MAXMSGSIZE, no retry follows the disconnect)."""
        waiting = False  # a disconnect with no sign of libzmq reconnecting yet
        try:
            while True:
                try:
                    async with asyncio.timeout(RETRY_GRACE if waiting else None):
                        event = parse_monitor_message(await monitor.recv_multipart())
                except TimeoutError:
                    waiting = False
                    self._reconnect()
                    continue
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self.ledger.disconnects += 1
                    waiting = not self.settings.bind
                    # (every sender ending its stream disconnects: not a warning by
                    # itself; the ledger counts disconnects, and frames a disconnect cost
                    # show as lost gaps)
                    logger.info("%s: peer %s disconnected", self.ledger.source,
                                event["endpoint"].decode(errors="replace"))
                else:
                    waiting = False  # libzmq is reconnecting by itself
        finally:
            monitor.close(linger=0)

    def _reconnect(self) -> None:
        """Connect again. Never ``disconnect()`` first: that would discard the messages
        already received from the dead connection and still queued for us."""
        if self._sock is None or self.settings.bind:
            return
        logger.warning("%s: reconnecting to %s", self.ledger.source, self.settings.endpoint)
        self._sock.connect(self.settings.endpoint)

    # -- receiving -------------------------------------------------------------------------
    @property
    def geometry(self) -> Geometry | None:
        """The configured geometry, else the one declared by the current series."""
        return self._geometry

    async def recv(self, timeout: float | None = None) -> Message | None:
        """The next accepted message, or None when ``timeout`` seconds pass without one."""
        if self._sock is None:
            raise RuntimeError("receiver is not open")
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = self._sock
        while True:
            try:  # a queued message is taken at once, without a trip through the poller
                parts = await sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                # Wait by polling, never by cancelling a pending recv: a recv future
                # cancelled by a timeout right after it completed would lose that message.
                ms = None if remaining is None else int(remaining * 1000)
                if not await sock.poll(ms):  # POLLIN (the default flags)
                    return None
                continue
            msg = self.accept(parts)
            if msg is not None:
                return msg

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            msg = await self.recv()
            if msg is not None:
                yield msg

    def accept(self, parts: Sequence[zmq.Frame]) -> Message | None:
        """Check, decode and account one multipart message (the whole hot path)."""
        ledger = self.ledger
        sizes = [len(p) for p in parts]
        ledger.message(sum(sizes))
        if max(sizes, default=0) > self._limit:
            ledger.reject(Reason.OVERSIZE, f"part of {max(sizes)} bytes exceeds the limit "
                                           f"{self._limit} for geometry {self._geometry}")
            return None
        try:
            msg = self._decode([p.buffer for p in parts])
        except DecodeError as exc:
            ledger.reject(exc.reason, exc.detail)
            return None
        except Exception as exc:  # a decoder bug must not kill the receive loop
            ledger.reject("decoder_error", repr(exc))
            if ledger.rejected["decoder_error"] == 1:
                logger.exception("decoder raised an unexpected error")
            return None
        if isinstance(msg, Image):
            return msg if self._accept_image(msg) else None
        if isinstance(msg, SeriesStart):
            beyond = self._beyond_limits(msg)
            if beyond:
                ledger.reject(Reason.DECLARED_LIMIT, beyond)
                return None
            ledger.start_series(msg.series_id, msg.number_of_images)
            if self.settings.geometry is None and msg.geometry is not None:
                self._geometry = msg.geometry
                self._limit = part_limit(msg.geometry)
        elif isinstance(msg, SeriesEnd):
            ledger.end_series()
            if self.settings.geometry is None and self.settings.protocol is Protocol.SLS:
                self._geometry = None  # the next acquisition may use another geometry
                self._limit = part_limit(None, self.settings.max_pixels)
        return msg

    def _beyond_limits(self, start: SeriesStart) -> str | None:
        """Why a series start is not believed (None: it is)."""
        s = self.settings
        g = start.geometry
        if g is not None and g.rows * g.cols > s.max_pixels:
            return (f"series {start.series_id} declares {g.rows}x{g.cols} frames, more than "
                    f"source.max_frame_pixels ({s.max_pixels})")
        if start.number_of_images is not None and start.number_of_images > s.max_images:
            return (f"series {start.series_id} declares {start.number_of_images} images, more "
                    f"than source.max_images ({s.max_images})")
        return None

    @property
    def hwm(self) -> int:
        """The receive high-water mark in force (messages)."""
        return self._hwm

    def _accept_image(self, image: Image) -> bool:
        expected = self._geometry
        if expected is not None:
            for name, payload in image.channels.items():
                if payload.shape != expected.shape or payload.dtype != expected.dtype:
                    self.ledger.reject(Reason.GEOMETRY, f"frame {image.frame} channel {name}: "
                                       f"{payload.shape} {payload.dtype}, expected "
                                       f"{expected.shape} {expected.dtype}")
                    return False
        elif self.settings.protocol is Protocol.SLS:
            g = image.geometry  # sls declares the geometry with every frame
            if g.rows * g.cols > self.settings.max_pixels:
                self.ledger.reject(Reason.DECLARED_LIMIT, f"frame {image.frame}: {g.rows}x"
                                   f"{g.cols} pixels, more than source.max_frame_pixels "
                                   f"({self.settings.max_pixels})")
                return False
            self._geometry = g
            self._limit = part_limit(g)
        return self.ledger.image(image.series_id, image.frame)
