"""slsDetectorPackage receiver stream (MOENCH, Jungfrau, PSI-Eiger): decode and encode.

One data message is ``[JSON header, raw pixels]``; a single-part header with ``"data": 0``
(the "dummy" header) ends the acquisition. The header text is written exactly as
``ZmqSocket::SendHeader`` does (``", "`` separators, trailing ``"}\\n"``); ``shape`` is
``[npixelsx, npixelsy]`` = ``[cols, rows]``. JSON header version 4 (sls 6.x/7.x) and 5
(sls >= 8.0, adds ``rx_roi``) are understood.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Buffer, Encoding, Image, Message, Payload, Protocol, SeriesEnd

BITMODE_DTYPES = {8: "uint8", 16: "uint16", 32: "uint32"}

#: sls_detector_defs.h detectorType values
DET_TYPES = {"generic": 0, "eiger": 1, "gotthard": 2, "jungfrau": 3, "chiptestboard": 4,
             "moench": 5, "mythen3": 6, "gotthard2": 7}


def _uint(header: Mapping[str, Any], key: str) -> int:
    value = header.get(key)
    if type(value) is not int or value < 0:
        raise DecodeError(Reason.BAD_HEADER, f"field {key!r} must be an unsigned integer, "
                                             f"got {value!r}")
    return value


def parse_header(part: Buffer) -> dict[str, Any]:
    """Parse the JSON header part; any failure is a :class:`DecodeError`."""
    try:
        header = json.loads(bytes(part))
    except (ValueError, RecursionError) as exc:
        raise DecodeError(Reason.BAD_JSON, f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise DecodeError(Reason.BAD_JSON, f"header is a JSON {type(header).__name__}, "
                                           "not an object")
    return header


def decode(parts: Sequence[Buffer], *, accept_incomplete: bool = False) -> Message:
    """Decode one sls multipart message into an :class:`Image` or :class:`SeriesEnd`.

    The payload stays a zero-copy view of ``parts[1]``. Incomplete images (missing UDP
    packets, ``completeImage: 0``) are rejected unless ``accept_incomplete``.
    """
    if not 1 <= len(parts) <= 2:
        raise DecodeError(Reason.PART_COUNT, f"expected 1 or 2 parts, got {len(parts)}")
    header = parse_header(parts[0])
    data = _uint(header, "data")
    if data == 0:
        if len(parts) != 1:
            raise DecodeError(Reason.PART_COUNT, "end-of-acquisition header has a payload")
        return SeriesEnd(Protocol.SLS, header.get("fileIndex", 0) if type(
            header.get("fileIndex")) is int else 0, header)
    if len(parts) != 2:
        raise DecodeError(Reason.PART_COUNT, "data header without its payload part")
    return _decode_image(header, parts[1], accept_incomplete)


def _decode_image(header: dict[str, Any], payload: Buffer, accept_incomplete: bool) -> Image:
    bitmode = _uint(header, "bitmode")
    dtype = BITMODE_DTYPES.get(bitmode)
    if dtype is None:
        raise DecodeError(Reason.UNSUPPORTED, f"bitmode {bitmode} (supported: 8, 16, 32)")
    shape = header.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(type(v) is int and v > 0 for v in shape)):
        raise DecodeError(Reason.BAD_HEADER, f"field 'shape' must be [cols, rows], got {shape!r}")
    cols, rows = shape
    size = _uint(header, "size")
    frame = _uint(header, "frameIndex")
    nbytes = memoryview(payload).nbytes
    if nbytes != size:
        raise DecodeError(Reason.SIZE_MISMATCH, f"payload has {nbytes} bytes, header size {size}")
    if size != rows * cols * bitmode // 8:
        raise DecodeError(Reason.SIZE_MISMATCH,
                          f"size {size} != {cols}x{rows} pixels x {bitmode} bit")
    complete = header.get("completeImage", 1)
    if complete == 0 and not accept_incomplete:
        raise DecodeError(Reason.INCOMPLETE, f"frame {frame}: completeImage 0 "
                                             f"({header.get('packetNumber')} packets)")
    series = header.get("fileIndex", 0)
    return Image(
        protocol=Protocol.SLS,
        series_id=series if type(series) is int else 0,
        frame=frame,
        channels={"default": Payload(payload, Encoding.RAW, (rows, cols), dtype)},
        header=header,
    )


def _format_header(fields: Sequence[tuple[str, Any]]) -> bytes:
    """Write a header the way ``ZmqSocket::SendHeader`` (C++ ostream) does."""
    items = []
    for key, value in fields:
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, str):
            text = json.dumps(value)
        elif isinstance(value, list | tuple):
            text = "[" + ", ".join(str(v) for v in value) + "]"
        elif isinstance(value, dict):
            text = "{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}"
                                   for k, v in value.items()) + " } "
        else:
            text = str(value)
        items.append(f'"{key}":{text}')
    return ("{" + ", ".join(items) + "}\n").encode()


def _header_fields(*, version: int, bitmode: int, file_index: int, detshape: tuple[int, int],
                   shape: tuple[int, int], size: int, acq_index: int, frame_index: int,
                   progress: float, fname: str, data: int, complete: int, frame_number: int,
                   packet_number: int, timestamp: int, det_type: int,
                   add_json_header: Mapping[str, str] | None,
                   rx_roi: tuple[int, int, int, int], mod_id: int = 0, row: int = 0,
                   column: int = 0) -> list[tuple[str, Any]]:
    spec = ("detSpec1", "detSpec2", "detSpec3", "detSpec4") if version >= 5 else (
        "bunchId", "reserved", "debug", "roundRNumber")
    fields: list[tuple[str, Any]] = [
        ("jsonversion", version), ("bitmode", bitmode), ("fileIndex", file_index),
        ("detshape", list(detshape)), ("shape", list(shape)), ("size", size),
        ("acqIndex", acq_index), ("frameIndex", frame_index), ("progress", progress),
        ("fname", fname), ("data", data), ("completeImage", complete),
        ("frameNumber", frame_number), ("expLength", 0), ("packetNumber", packet_number),
        (spec[0], 0), ("timestamp", timestamp), ("modId", mod_id), ("row", row),
        ("column", column),
        (spec[1], 0), (spec[2], 0), (spec[3], 0), ("detType", det_type), ("version", 1),
        ("flipRows", 0), ("quad", 0),
    ]
    if add_json_header:
        fields.append(("addJsonHeader", dict(add_json_header)))
    if version >= 5:
        fields.append(("rx_roi", list(rx_roi)))
    return fields


def encode_image(frame_index: int, pixels: npt.NDArray[Any], *, version: int = 5,
                 file_index: int = 0, first_frame_number: int = 1, fname: str = "run",
                 total_frames: int = 0, det_type: str = "moench", packets: int = 50,
                 complete: bool = True, timestamp: int = 0,
                 add_json_header: Mapping[str, str] | None = None,
                 module: tuple[int, int] = (0, 0), modules: tuple[int, int] = (1, 1),
                 ) -> list[bytes | memoryview]:
    """Encode one frame as ``[header, payload]``; the payload is a zero-copy view of ``pixels``.

    ``module`` = (row, column) of this stream's part in a detector of ``modules`` = (rows,
    columns) parts: the header's ``row``, ``column``, ``modId`` (row-major) and ``detshape``
    (``[ndetx, ndety]`` = [columns, rows]), as a multi-module slsReceiver sends them."""
    bitmode = pixels.dtype.itemsize * 8
    if pixels.ndim != 2 or pixels.dtype.kind != "u" or bitmode not in BITMODE_DTYPES:
        raise ValueError(f"sls frames are 2-D uint8/16/32, got {pixels.dtype} {pixels.shape}")
    rows, cols = pixels.shape
    data = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    progress = 100.0 * (frame_index + 1) / total_frames if total_frames else 100.0
    header = _format_header(_header_fields(
        version=version, bitmode=bitmode, file_index=file_index,
        detshape=(modules[1], modules[0]),
        shape=(cols, rows), size=data.nbytes, acq_index=first_frame_number + frame_index,
        frame_index=frame_index, progress=progress, fname=fname, data=1, complete=int(complete),
        frame_number=first_frame_number + frame_index,
        packet_number=packets if complete else packets - 1, timestamp=timestamp,
        det_type=DET_TYPES[det_type], add_json_header=add_json_header,
        rx_roi=(0, cols - 1, 0, rows - 1), mod_id=module[0] * modules[1] + module[1],
        row=module[0], column=module[1]))
    return [header, data.data.cast("B")]


def encode_end(*, version: int = 5) -> list[bytes | memoryview]:
    """The single-part "dummy" header that ends an acquisition: ``data`` 0, all else default."""
    return [_format_header(_header_fields(
        version=version, bitmode=0, file_index=0, detshape=(0, 0), shape=(0, 0), size=0,
        acq_index=0, frame_index=0, progress=0.0, fname="", data=0, complete=0, frame_number=0,
        packet_number=0, timestamp=0, det_type=0, add_json_header=None, rx_roi=(0, 0, 0, 0)))]
