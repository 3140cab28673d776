"""Record a live ZMQ stream to a file and play it back.

File format (``.rlrec``): a CBOR sequence. The first item is a map
``{"format": "rayline-recording", "version": 1, "created": ISO time, "endpoint", "socket",
"protocol"}``; every following item is one multipart message ``[t_ns, [part, ...]]`` with
``t_ns`` the receive time in nanoseconds since the first message and the parts as raw
bytes. Replay also reads the dump formats of other tools (:mod:`actors.record.dumps`),
which carry no timestamps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import cbor2
import zmq

from actors.stream.sockets import bound_endpoint, make_publisher, make_socket, wait_for_subscribers

logger = logging.getLogger(__name__)

FORMAT = "rayline-recording"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One multipart message and when it arrived (ns since the first; None if unknown)."""

    t_ns: int | None
    parts: list[bytes]


class RecordingWriter:
    """Appends records to a new file (never overwrites)."""

    def __init__(self, path: str | Path, **meta: Any) -> None:
        self.path = Path(path)
        self._fp: BinaryIO = self.path.open("xb")
        cbor2.dump({"format": FORMAT, "version": VERSION,
                    "created": datetime.now(UTC).isoformat(), **meta}, self._fp)
        self._t0: int | None = None
        self.count = 0

    def write(self, parts: list[bytes], t_ns: int | None = None) -> None:
        now = time.monotonic_ns() if t_ns is None else t_ns
        if self._t0 is None:
            self._t0 = now
        cbor2.dump([now - self._t0, parts], self._fp)
        self.count += 1

    def close(self) -> None:
        self._fp.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_rayline_recording(path: Path) -> bool:
    try:
        with path.open("rb") as fp:
            head = cbor2.load(fp)
    except Exception:
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header map of a rayline recording."""
    with Path(path).open("rb") as fp:
        head = cbor2.load(fp)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError(f"{path} is not a rayline recording")
    return head


def iter_records(path: str | Path) -> Generator[Record, None, None]:
    """Records of a rayline recording, or of a dranspose/MAX IV dump (no timestamps)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no recording at {p}")
    if _is_rayline_recording(p):
        size = p.stat().st_size
        with p.open("rb") as fp:
            cbor2.load(fp)  # header
            while fp.tell() < size:
                try:
                    t_ns, parts = cbor2.load(fp)
                except (cbor2.CBORDecodeError, EOFError, ValueError, TypeError) as exc:
                    raise ValueError(f"{p}: corrupt record after {exc}") from exc
                yield Record(int(t_ns), [bytes(x) for x in parts])
    else:
        from actors.record.dumps import iter_dump_messages

        for parts in iter_dump_messages(p):
            yield Record(None, list(parts))


def record(endpoint: str, socket: Literal["sub", "pull"], path: str | Path, *,
           max_messages: int = 0, duration: float = 0.0, idle_timeout: float = 0.0,
           protocol: str = "", on_message: Callable[[int], None] | None = None,
           stop: Callable[[], bool] | None = None,
           context: zmq.Context[Any] | None = None) -> int:
    """Capture messages from ``endpoint`` (connect) into a new recording file.

    Stops after ``max_messages`` messages, ``duration`` seconds, ``idle_timeout`` seconds
    without a message, or when ``stop()`` returns True (each 0/None = no limit).
    Returns the number of messages recorded.
    """
    ctx = context or zmq.Context()
    # a deep queue: a PUB drops what a slow subscriber cannot take (and says nothing)
    sock = make_socket(ctx, socket, endpoint, bind=False, hwm=RECORD_HWM)
    t_end = time.monotonic() + duration if duration else None
    stream = _StreamCheck(protocol) if protocol else None
    try:
        with RecordingWriter(path, endpoint=endpoint, socket=socket, protocol=protocol) as out:
            last = time.monotonic()
            while not (max_messages and out.count >= max_messages):
                if stop is not None and stop():
                    break
                now = time.monotonic()
                if t_end is not None and now >= t_end:
                    break
                if idle_timeout and now - last >= idle_timeout:
                    break
                if not sock.poll(100, zmq.POLLIN):
                    continue
                parts = sock.recv_multipart()
                last = time.monotonic()
                out.write(parts)
                if stream is not None:
                    stream.see(parts)
                if on_message is not None:
                    on_message(out.count)
            if stream is not None:
                stream.report(path)
            return out.count
    finally:
        sock.close(linger=0)
        if context is None:
            ctx.term()


#: receive queue of the recorder (messages)
RECORD_HWM = 100_000


class _StreamCheck:
    """What the recorded stream says of itself (its protocol known): frames missing from
    its numbering (a PUB dropped them) and whether its series ended, told when recording
    stops, so a truncated recording is never taken for a whole one."""

    def __init__(self, protocol: str) -> None:
        from actors.stream.ledger import Ledger
        from actors.wire.codec import decoder_for

        self.decode = decoder_for(protocol)
        self.ledger = Ledger("record")
        self.ended = False
        self.undecoded = 0

    def see(self, parts: list[bytes]) -> None:
        from actors.wire.model import Image, SeriesEnd, SeriesStart

        try:
            msg = self.decode(parts)
        except Exception:  # recorded as it came; counted here
            self.undecoded += 1
            return
        if isinstance(msg, SeriesStart):
            self.ledger.start_series(msg.series_id, msg.number_of_images)
            self.ended = False
        elif isinstance(msg, Image):
            self.ledger.image(msg.series_id, msg.frame)
            self.ended = False
        elif isinstance(msg, SeriesEnd):
            self.ledger.end_series()
            self.ended = True

    def report(self, path: str | Path) -> None:
        led = self.ledger
        if led.lost or not self.ended or self.undecoded:
            logger.warning(
                "%s: %d frames recorded, %d missing from the stream's numbering (a PUB drops "
                "what a slow subscriber cannot take: record a PUSH with --socket pull, or send "
                "slower), %s%s", path, led.received, led.lost,
                "its series ended" if self.ended else "no end of series recorded",
                f", {self.undecoded} messages not decodable" if self.undecoded else "")


class _SeriesEnds:
    """Whether the messages replayed so far left a series open, and the end message that
    closes it (protocol from the recording's header, else from the first message that one
    of the decoders takes)."""

    def __init__(self, protocol: str | None) -> None:
        from actors.wire.codec import decoder_for
        from actors.wire.model import Protocol

        self.protocol = protocol
        self.open_series: int | None = None  # the series whose end has not been seen
        names = [protocol] if protocol else [str(p) for p in Protocol]
        self.decoders = {name: decoder_for(name) for name in names}

    def see(self, parts: list[bytes]) -> None:
        from actors.wire.model import Image, SeriesEnd, SeriesStart

        for protocol, decode in list(self.decoders.items()):
            try:
                msg = decode(parts)
            except Exception:  # not this protocol, or a damaged message: replayed as is
                continue
            if self.protocol is None:  # the first message one decoder takes decides
                self.protocol, self.decoders = protocol, {protocol: decode}
            if isinstance(msg, SeriesStart | Image):
                self.open_series = msg.series_id
            elif isinstance(msg, SeriesEnd):
                self.open_series = None
            return

    def end(self) -> list[bytes] | None:
        """The end-of-series message the recording lacks (None: its series ended)."""
        from actors.wire import dectris_v1, dectris_v2, sls
        from actors.wire.model import Protocol

        if self.open_series is None or self.protocol is None:
            return None
        if self.protocol == Protocol.SLS:
            return [bytes(p) for p in sls.encode_end()]
        if self.protocol == Protocol.DECTRIS_V1:
            return dectris_v1.encode_end(self.open_series)
        if self.protocol == Protocol.DECTRIS_V2:
            return dectris_v2.encode_end(self.open_series)
        return None


def replay(path: str | Path, endpoint: str, socket: Literal["pub", "push"], *,
           rate: float | None = None, wait_subscribers: int = 1, subscriber_timeout: float = 30,
           send_timeout: float = 30.0, loop: int = 1, end: bool = True,
           on_bound: Callable[[str], None] | None = None,
           on_message: Callable[[int], None] | None = None,
           context: zmq.Context[Any] | None = None) -> int:
    """Play a recording onto a bound socket.

    ``rate`` None keeps the recorded timing (dumps without timestamps go as fast as
    possible), 0 sends as fast as the socket takes them, > 0 paces at that many messages/s.
    A PUB waits for ``wait_subscribers`` subscribers first. A recording that stops inside a
    series (truncated, or a dump without its end message) is followed by the end-of-series
    message of its protocol, with a warning, so that the receiving acquisition ends as the
    detector's would (``end=False``: sent as recorded). Returns messages sent.
    """
    records = iter_records(path)
    next(records, None)  # a missing or foreign file says so now, not after the wait
    records.close()
    ctx = context or zmq.Context()
    sock = make_publisher(ctx, socket, endpoint, send_timeout=send_timeout)
    sent = 0
    flush = 0.0
    try:
        if on_bound is not None:
            on_bound(bound_endpoint(sock))
        if socket == "pub" and wait_subscribers > 0:
            wait_for_subscribers(sock, wait_subscribers, subscriber_timeout)
        protocol = _recorded_protocol(path)
        for _ in range(max(1, loop)):
            t0 = time.monotonic_ns()
            ends = _SeriesEnds(protocol)
            for i, rec in enumerate(iter_records(path)):
                due = _due_ns(rec, i, rate)
                if due is not None:
                    delay = (t0 + due - time.monotonic_ns()) / 1e9
                    if delay > 0:
                        time.sleep(delay)  # pacing the replay, not synchronisation
                try:
                    sock.send_multipart(rec.parts, copy=False)
                except zmq.Again:
                    raise TimeoutError(f"no receiver took message {i} within {send_timeout} s"
                                       ) from None
                sent += 1
                if end:
                    ends.see(rec.parts)
                if on_message is not None:
                    on_message(sent)
            closing = ends.end() if end else None
            if closing is not None:
                logger.warning("%s ends inside series %d (no end-of-series message: "
                               "truncated?); sending a %s end so that the receiver's "
                               "acquisition ends", path, ends.open_series, ends.protocol)
                try:
                    sock.send_multipart(closing)
                except zmq.Again:
                    raise TimeoutError(f"no receiver took the end of series within "
                                       f"{send_timeout} s") from None
                sent += 1
        flush = send_timeout  # complete: let the queued messages leave (bounded)
        return sent
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sock.close(linger=int(flush * 1000) if flush else 0)
        if context is None:
            ctx.term()


def _recorded_protocol(path: str | Path) -> str | None:
    """The protocol a rayline recording's header names (None: a dump, or not said)."""
    if not _is_rayline_recording(Path(path)):
        return None
    from actors.wire.model import Protocol

    protocol = read_metadata(path).get("protocol")
    return protocol if protocol in {str(p) for p in Protocol} else None


def _due_ns(rec: Record, index: int, rate: float | None) -> int | None:
    if rate is None:
        return rec.t_ns
    if rate > 0:
        return int(index * 1e9 / rate)
    return None

