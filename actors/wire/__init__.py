"""Detector wire protocols: typed messages, decoders, encoders (pure, no sockets)."""

from actors.wire.errors import DecodeError, Reason
from actors.wire.model import (
    Encoding,
    Geometry,
    Image,
    Message,
    Payload,
    Protocol,
    SeriesEnd,
    SeriesStart,
)

__all__ = [
    "DecodeError",
    "Encoding",
    "Geometry",
    "Image",
    "Message",
    "Payload",
    "Protocol",
    "Reason",
    "SeriesEnd",
    "SeriesStart",
]
