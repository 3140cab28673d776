"""ZMQ socket construction shared by the receiver, simulator, recorder and replayer."""

from __future__ import annotations

import socket as _socket
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


def hwm_for(frame_bytes: int | None, default: int = 1000) -> int:
    """A high-water mark (in messages) that bounds queued bytes to about 256 MB."""
    if not frame_bytes:
        return default
    return max(4, min(default, QUEUE_BYTES // frame_bytes))


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
