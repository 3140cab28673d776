"""Turn a wire :class:`~actors.wire.model.Payload` into a ``(rows, cols)`` pixel array."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from actors.wire.compression import bslz4_decompress, lz4_block_decompress, lz4h5_decompress
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Encoding, Image, Payload

_DECODERS = {
    Encoding.LZ4: lz4_block_decompress,
    Encoding.LZ4_H5: lz4h5_decompress,
    Encoding.BSLZ4: bslz4_decompress,
}


def decode_pixels(payload: Payload) -> npt.NDArray[Any]:
    """Decode ``payload`` to a row-major ``payload.shape`` array of ``payload.dtype``.

    ``RAW`` payloads are a zero-copy (read-only when the buffer is) view of
    ``payload.data``; compressed ones are decompressed into a new writable array.
    Raises :class:`DecodeError` (``SIZE_MISMATCH``, ``CORRUPT``, ``UNSUPPORTED``,
    ``UNKNOWN_ENCODING``) when the payload cannot give that array.
    """
    rows, cols = payload.shape
    if rows < 0 or cols < 0:
        raise DecodeError(Reason.BAD_HEADER, f"negative payload shape {payload.shape}")
    try:
        dtype = np.dtype(payload.dtype).newbyteorder("<")
    except TypeError as exc:
        raise DecodeError(Reason.UNSUPPORTED, f"unknown pixel dtype {payload.dtype!r}") from exc
    if dtype.kind not in "uif":
        raise DecodeError(Reason.UNSUPPORTED, f"unsupported pixel dtype {dtype}")
    n = rows * cols
    if payload.encoding is Encoding.RAW:
        try:
            view = memoryview(payload.data)
        except TypeError as exc:
            raise DecodeError(Reason.CORRUPT, "payload data is not bytes-like") from exc
        if view.nbytes != n * dtype.itemsize:
            raise DecodeError(Reason.SIZE_MISMATCH,
                              f"raw payload is {view.nbytes} B, {rows}x{cols} {dtype} "
                              f"needs {n * dtype.itemsize} B")
        if view.format != "B" or view.ndim != 1:
            if not view.c_contiguous:
                raise DecodeError(Reason.CORRUPT, "raw payload buffer is not contiguous")
            view = view.cast("B")
        return np.frombuffer(view, dtype).reshape(rows, cols)
    try:
        decoder = _DECODERS[Encoding(payload.encoding)]
    except (KeyError, ValueError) as exc:
        raise DecodeError(Reason.UNKNOWN_ENCODING,
                          f"unknown payload encoding {payload.encoding!r}") from exc
    return decoder(payload.data, dtype.str, n).reshape(rows, cols)


def decode_image(image: Image, channel: str | None = None) -> npt.NDArray[Any]:
    """Decode one channel of ``image`` (default: the first) to a ``(rows, cols)`` array."""
    if channel is None:
        if not image.channels:
            raise DecodeError(Reason.BAD_HEADER, "image has no channels")
        payload = image.payload
    else:
        try:
            payload = image.channels[channel]
        except KeyError:
            raise DecodeError(Reason.BAD_HEADER,
                              f"image has no channel {channel!r}; it has "
                              f"{sorted(image.channels)}") from None
    return decode_pixels(payload)
