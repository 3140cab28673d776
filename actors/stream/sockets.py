"""ZMQ socket construction shared by the receiver, simulator, recorder and replayer."""

from __future__ import annotations

import socket as _socket
import time
from typing import Any, Literal

import zmq

SocketKind = Literal["sub", "pull", "pub", "push", "xpub"]

_TYPES: dict[str, int] = {
    "sub": zmq.SUB,
    "pull": zmq.PULL,
    "pub": zmq.PUB,
    "push": zmq.PUSH,
    "xpub": zmq.XPUB,
}

#: target bytes queued per socket when frames are large (perf.md §Method)
QUEUE_BYTES = 256 * 1024 * 1024


def hwm_for(frame_bytes: int | None, default: int = 1000,
            queue_bytes: int = QUEUE_BYTES) -> int:
    """A high-water mark (in messages) that bounds queued bytes to about ``queue_bytes``
    (at least 4 messages, at most ``default``)."""
    if not frame_bytes:
        return default
    return max(4, min(default, queue_bytes // frame_bytes))


def make_socket(ctx: zmq.Context[Any], kind: SocketKind, endpoint: str, *,
                bind: bool, hwm: int = 1000, max_message_bytes: int | None = None,
                topic: bytes = b"") -> Any:
    """Create, configure and bind/connect a socket; linger is always 0."""
    sock = ctx.socket(_TYPES[kind])
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if kind in ("sub", "pull"):
            sock.setsockopt(zmq.RCVHWM, hwm)
            if max_message_bytes:
                sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        else:
            sock.setsockopt(zmq.SNDHWM, hwm)
        if kind == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except Exception:
        sock.close(linger=0)
        raise
    return sock


def bound_endpoint(sock: zmq.Socket[Any]) -> str:
    """The concrete endpoint of a socket bound with a wildcard port (``tcp://127.0.0.1:*``)."""
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """An endpoint on a port the OS says is free now (prefer binding ``:*`` where possible)."""
    with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return f"tcp://{host}:{port}"


def wait_for_subscribers(sock: Any, n: int, timeout: float) -> None:
    """Block until an XPUB socket (``XPUB_VERBOSE`` set) has seen ``n`` subscriptions."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(int(remaining * 1000), zmq.POLLIN):
            raise TimeoutError(f"{seen} of {n} subscribers joined "
                               f"{bound_endpoint(sock)} within {timeout} s")
        if sock.recv()[:1] == b"\x01":
            seen += 1


def make_publisher(ctx: zmq.Context[Any], kind: Literal["pub", "push"], endpoint: str, *,
                   hwm: int = 1000, send_timeout: float = 30.0, lossless: bool = False) -> Any:
    """A bound sender: PUB is an XPUB (so subscribers can be awaited), PUSH blocks when full."""
    sock = make_socket(ctx, "xpub" if kind == "pub" else "push", endpoint, bind=True, hwm=hwm)
    sock.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
    if kind == "pub":
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        if lossless:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
    return sock
