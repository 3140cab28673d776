"""Typed messages shared by every wire protocol.

A decoder turns one ZMQ multipart message into exactly one of :class:`SeriesStart`,
:class:`Image` or :class:`SeriesEnd`, or raises :class:`~actors.wire.errors.DecodeError`.
Pixel payloads stay encoded (and zero-copy) in :class:`Payload` until
:func:`actors.wire.pixels.decode_pixels` is called, so decompression can run in the
processing actors instead of the ingest loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

#: The bytes-like objects a decoder accepts for one message part.
Buffer = bytes | bytearray | memoryview


class Protocol(StrEnum):
    """Wire protocols understood by rayline."""

    SLS = "sls"
    DECTRIS_V1 = "dectris-v1"
    DECTRIS_V2 = "dectris-v2"


class Encoding(StrEnum):
    """How a pixel payload is stored on the wire."""

    RAW = "raw"  #: little-endian pixels, row-major
    LZ4 = "lz4"  #: V1 ``lz4<``: one bare LZ4 block of the whole image
    LZ4_H5 = "lz4-h5"  #: V2 ``lz4``: HDF5 LZ4 filter framing (12-byte header + blocks)
    BSLZ4 = "bslz4"  #: bitshuffle + LZ4 with HDF5 filter framing (V1 ``bsN-lz4<``, V2 ``bslz4``)


#: pixel dtypes a detector may send
PIXEL_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32",
                "float64", "uint64", "int64")


@dataclass(frozen=True, slots=True)
class Geometry:
    """Frame shape and pixel type: ``rows`` x ``cols`` of ``dtype`` (numpy name)."""

    rows: int
    cols: int
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.cols <= 0:
            raise ValueError(f"geometry rows/cols must be positive, got {self.rows}x{self.cols}")
        if self.dtype not in PIXEL_DTYPES:
            raise ValueError(f"geometry dtype {self.dtype!r} not one of {PIXEL_DTYPES}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.itemsize


@dataclass(frozen=True, slots=True)
class Payload:
    """One channel of pixel data, still as it came off the wire.

    ``data`` is a zero-copy view of the ZMQ frame (or any bytes-like object);
    ``shape`` is ``(rows, cols)`` and ``dtype`` the decoded pixel type.
    """

    data: Buffer
    encoding: Encoding
    shape: tuple[int, int]
    dtype: str

    @property
    def nbytes_decoded(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize


@dataclass(frozen=True, slots=True)
class SeriesStart:
    """Start of an acquisition series (DECTRIS header / start message).

    ``geometry`` is ``None`` when the protocol does not carry it (sls, V1 with
    ``header_detail: none``). ``arrays`` holds per-series arrays such as ``pixel_mask``,
    ``flatfield`` and ``countrate_table`` (already decoded, row-major ``(rows, cols)``).
    """

    protocol: Protocol
    series_id: int
    geometry: Geometry | None = None
    channels: tuple[str, ...] = ("default",)
    number_of_images: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Image:
    """One detector frame.

    ``frame`` is the 0-based frame number within the series (sls ``frameIndex``, V1
    ``frame``, V2 ``image_id``) and is what gap (lost-frame) accounting uses.
    ``header`` keeps every header field the protocol sent. ``channels`` maps a channel
    name to its payload; single-channel protocols use ``"default"``.
    """

    protocol: Protocol
    series_id: int
    frame: int
    channels: Mapping[str, Payload]
    header: Mapping[str, Any] = field(default_factory=dict)

    @property
    def payload(self) -> Payload:
        """The first (usually the only) channel."""
        return next(iter(self.channels.values()))

    @property
    def geometry(self) -> Geometry:
        p = self.payload
        return Geometry(p.shape[0], p.shape[1], p.dtype)


@dataclass(frozen=True, slots=True)
class SeriesEnd:
    """End of an acquisition series (sls dummy header, V1 ``dseries_end``, V2 ``end``)."""

    protocol: Protocol
    series_id: int
    header: Mapping[str, Any] = field(default_factory=dict)


Message = SeriesStart | Image | SeriesEnd
