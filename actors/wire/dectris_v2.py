"""DECTRIS Stream V2 (CBOR): decode one ZMQ message, and encode them byte-faithfully.

Every message is one part: tag 55799 around a map whose first key is ``type``
(``start`` / ``image`` / ``end``), see ``protocols.md`` §2. Pixel arrays are
``tag 40 [[rows, cols], typed-array tag (byte string | tag 56500 [algorithm, elem_size,
byte string])]``. Image channels stay encoded in their :class:`Payload` (zero-copy
memoryview slices of the message); arrays of the start message are decoded fully.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.wire.cbor import CBORError, Tag, loads
from actors.wire.cbor import dumps as cbor_dumps
from actors.wire.compression import (
    bslz4_compress,
    bslz4_decompress,
    lz4h5_compress,
    lz4h5_decompress,
    read_h5_header,
)
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import (
    PIXEL_DTYPES,
    Buffer,
    Encoding,
    Geometry,
    Image,
    Message,
    Payload,
    Protocol,
    SeriesEnd,
    SeriesStart,
)

MAGIC = b"\xd9\xd9\xf7"  #: tag 55799 (self-describe CBOR), first bytes of every message
TAG_SELF_DESCRIBE = 55799
TAG_DATETIME = 0
TAG_MULTI_DIM = 40  #: RFC 8746 multi-dimensional array, row-major
TAG_MULTI_DIM_COLUMN_MAJOR = 1040
TAG_COMPRESSION = 56500  #: DECTRIS compression tag: [algorithm, elem_size, bytes]

#: RFC 8746 typed-array tags -> NumPy dtype (with byte order)
TYPED_ARRAY_TAGS: dict[int, np.dtype[Any]] = {
    tag: np.dtype(code) for tag, code in {
        64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1", 69: "<u2", 70: "<u4", 71: "<u8",
        72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
        80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8",
    }.items()
}
_UNSUPPORTED_TYPED = {76: "reserved typed-array tag 76", 83: "float128 (BE)",
                      87: "float128 (LE)"}
#: little-endian dtype name -> typed-array tag used when encoding
_TAG_FOR_DTYPE = {dt.newbyteorder("=").name: tag for tag, dt in TYPED_ARRAY_TAGS.items()
                  if dt.str[0] in "<|" and tag != 68}
_COMPRESSION = {"bslz4": Encoding.BSLZ4, "lz4": Encoding.LZ4_H5}
_BIT_DEPTHS = {8: "uint8", 16: "uint16", 32: "uint32"}
_MAX_DIMS = 32  #: NumPy's limit is 64; no detector array has more than 2
_ARRAY_FIELDS = ("pixel_mask", "flatfield", "countrate_correction_lookup_table")

#: start fields in the order the firmware sends them (``protocols.md`` §2.2, plus the
#: later ``goniometer`` and ``image_dtype`` at their alphabetical places)
START_FIELDS = (
    "type", "series_id", "series_unique_id", "arm_date", "beam_center_x", "beam_center_y",
    "channels", "count_time", "countrate_correction_enabled",
    "countrate_correction_lookup_table", "detector_description", "detector_serial_number",
    "detector_translation", "flatfield", "flatfield_enabled", "frame_time", "goniometer",
    "image_dtype", "image_size_x", "image_size_y", "incident_energy", "incident_wavelength",
    "number_of_images", "pixel_mask", "pixel_mask_enabled", "pixel_size_x", "pixel_size_y",
    "saturation_value", "sensor_material", "sensor_thickness", "threshold_energy",
    "virtual_pixel_interpolation_enabled", "user_data",
)
DEFAULT_DATE = "2024-01-01T00:00:00.000+00:00"
DEFAULT_CHANNEL = "threshold_1"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# ----------------------------------------------------------------------------- arrays


@dataclass(frozen=True, slots=True)
class _WireArray:
    """A typed array as found on the wire, not yet decompressed."""

    dims: tuple[int, ...]
    dtype: np.dtype[Any]  # with the wire byte order
    data: memoryview | bytes
    compression: Encoding | None
    column_major: bool


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _wire_array(value: Any, where: str) -> _WireArray:
    dims: tuple[int, ...] | None = None
    column_major = False
    if isinstance(value, Tag) and value.tag in (TAG_MULTI_DIM, TAG_MULTI_DIM_COLUMN_MAJOR):
        column_major = value.tag == TAG_MULTI_DIM_COLUMN_MAJOR
        content = value.value
        if not isinstance(content, list) or len(content) != 2:
            raise DecodeError(Reason.BAD_HEADER, f"{where}: tag {value.tag} needs "
                                                 "[dimensions, typed array]")
        raw_dims, value = content
        if (not isinstance(raw_dims, list) or not raw_dims
                or not all(_is_uint(d) for d in raw_dims)):
            raise DecodeError(Reason.BAD_HEADER, f"{where}: bad dimensions {raw_dims!r}")
        if len(raw_dims) > _MAX_DIMS:
            raise DecodeError(Reason.UNSUPPORTED, f"{where}: {len(raw_dims)} dimensions")
        dims = tuple(raw_dims)
    if isinstance(value, Tag) and value.tag in _UNSUPPORTED_TYPED:
        raise DecodeError(Reason.UNSUPPORTED, f"{where}: {_UNSUPPORTED_TYPED[value.tag]}")
    if not isinstance(value, Tag) or value.tag not in TYPED_ARRAY_TAGS:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: expected an RFC 8746 typed array")
    dtype = TYPED_ARRAY_TAGS[value.tag]
    inner = value.value
    compression: Encoding | None = None
    if isinstance(inner, Tag) and inner.tag == TAG_COMPRESSION:
        spec = inner.value
        if (not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[0], str)
                or not _is_uint(spec[1]) or not isinstance(spec[2], memoryview | bytes)):
            raise DecodeError(Reason.BAD_HEADER, f"{where}: tag {TAG_COMPRESSION} needs "
                                                 "[algorithm, elem_size, bytes]")
        algorithm, elem_size, inner = spec
        compression = _COMPRESSION.get(algorithm)
        if compression is None:
            raise DecodeError(Reason.UNKNOWN_ENCODING, f"{where}: unknown compression "
                                                       f"{algorithm!r}")
        if compression is Encoding.BSLZ4 and elem_size != dtype.itemsize:
            raise DecodeError(Reason.BAD_HEADER, f"{where}: bslz4 element size {elem_size} "
                                                 f"!= {dtype.itemsize} of {dtype}")
    elif not isinstance(inner, memoryview | bytes):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: typed array content is not a byte "
                                             "string")
    if dims is None:  # a plain (1-D) typed array
        if compression is None:
            if len(inner) % dtype.itemsize:
                raise DecodeError(Reason.SIZE_MISMATCH, f"{where}: {len(inner)} B is not a "
                                                        f"whole number of {dtype}")
            dims = (len(inner) // dtype.itemsize,)
        else:
            total, _ = _h5_header(inner, where)
            if total % dtype.itemsize:
                raise DecodeError(Reason.SIZE_MISMATCH, f"{where}: {total} B is not a "
                                                        f"whole number of {dtype}")
            dims = (total // dtype.itemsize,)
    return _WireArray(dims, dtype, inner, compression, column_major)


def _h5_header(data: memoryview | bytes, where: str) -> tuple[int, int]:
    try:
        return read_h5_header(data)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{where}: {exc.detail}") from None


def _check_size(arr: _WireArray, where: str) -> int:
    """Check the byte size the array declares; return its element count."""
    n = math.prod(arr.dims)
    nbytes = n * arr.dtype.itemsize
    if arr.compression is None:
        if len(arr.data) != nbytes:
            raise DecodeError(Reason.SIZE_MISMATCH, f"{where}: {len(arr.data)} B of data for "
                                                    f"{arr.dims} {arr.dtype}")
    else:
        total, _ = _h5_header(arr.data, where)
        if total != nbytes:
            raise DecodeError(Reason.SIZE_MISMATCH, f"{where}: compressed payload declares "
                                                    f"{total} B, {arr.dims} {arr.dtype} is "
                                                    f"{nbytes} B")
    return n


def _to_ndarray(arr: _WireArray, where: str) -> npt.NDArray[Any]:
    """Decode fully: decompress, apply dims/order, native byte order, own memory."""
    n = _check_size(arr, where)
    if arr.compression is None:
        flat = np.frombuffer(arr.data, arr.dtype)
    else:
        decoder = bslz4_decompress if arr.compression is Encoding.BSLZ4 else lz4h5_decompress
        try:
            flat = decoder(arr.data, arr.dtype.newbyteorder("<").str, n).view(arr.dtype)
        except DecodeError as exc:
            raise DecodeError(exc.reason, f"{where}: {exc.detail}") from None
    shaped = flat.reshape(arr.dims, order="F" if arr.column_major else "C")
    native = arr.dtype.newbyteorder("=")
    if arr.compression is None:  # a view of the message: copy so it outlives the buffer
        return np.array(shaped, dtype=native, order="C")
    return np.ascontiguousarray(shaped, dtype=native)


def _payload(value: Any, where: str) -> Payload:
    arr = _wire_array(value, where)
    if len(arr.dims) != 2:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: image data must be 2-D, got dims "
                                             f"{list(arr.dims)}")
    rows, cols = arr.dims
    if rows < 1 or cols < 1:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: empty image dims {list(arr.dims)}")
    dtype = arr.dtype.newbyteorder("=").name
    if dtype not in PIXEL_DTYPES:  # pragma: no cover - every typed-array tag maps to one
        raise DecodeError(Reason.UNSUPPORTED, f"{where}: pixel type {arr.dtype}")
    _check_size(arr, where)
    needs_copy = arr.column_major or arr.dtype.str[0] == ">"
    if arr.compression is not None:
        if needs_copy:
            raise DecodeError(Reason.UNSUPPORTED, f"{where}: compressed column-major or "
                                                  "big-endian image data")
        return Payload(arr.data, arr.compression, (rows, cols), dtype)
    if needs_copy:  # rare: one copy into row-major little-endian
        data: memoryview | bytes = _to_ndarray(arr, where).astype(
            np.dtype(dtype).newbyteorder("<"), copy=False).tobytes()
    else:
        data = arr.data
    return Payload(data, Encoding.RAW, (rows, cols), dtype)


# ----------------------------------------------------------------------------- decode


def _plain(value: Any, where: str) -> Any:
    """Metadata value as plain Python: bytes, str dates, NumPy arrays for typed arrays."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Tag):
        if value.tag == TAG_DATETIME and isinstance(value.value, str):
            return value.value
        if value.tag in TYPED_ARRAY_TAGS or value.tag in (TAG_MULTI_DIM,
                                                          TAG_MULTI_DIM_COLUMN_MAJOR):
            return _to_ndarray(_wire_array(value, where), where)
        return Tag(value.tag, _plain(value.value, where))
    return value


def _uint(msg: Mapping[str, Any], key: str, where: str) -> int:
    value: Any = msg.get(key)
    if not _is_uint(value):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: {key!r} must be an unsigned integer, "
                                             f"got {value!r}")
    return int(value)


def _opt_uint(msg: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if msg.get(key) is None else _uint(msg, key, where)


def _channel_map(msg: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = msg[key]
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise DecodeError(Reason.BAD_HEADER, f"start: {key!r} must map channel names to "
                                             "arrays")
    return value


def _start_geometry(msg: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]],
                    ) -> Geometry | None:
    rows = _opt_uint(msg, "image_size_y", "start")
    cols = _opt_uint(msg, "image_size_x", "start")
    mask = arrays.get("pixel_mask")
    if (rows is None or cols is None) and mask is not None and mask.ndim == 2:
        rows, cols = int(mask.shape[0]), int(mask.shape[1])
    dtype = msg.get("image_dtype")
    if dtype is None:
        bits = _opt_uint(msg, "bit_depth_image", "start")
        dtype = None if bits is None else _BIT_DEPTHS.get(bits)
        if bits is not None and dtype is None:
            raise DecodeError(Reason.UNSUPPORTED, f"start: bit_depth_image {bits}")
    elif dtype not in PIXEL_DTYPES:
        raise DecodeError(Reason.UNSUPPORTED, f"start: image_dtype {dtype!r}")
    if not rows or not cols or dtype is None:
        return None
    return Geometry(rows, cols, str(dtype))


def _decode_start(msg: dict[str, Any]) -> SeriesStart:
    series_id = _uint(msg, "series_id", "start")
    channels_raw = msg.get("channels")
    if channels_raw is not None and (not isinstance(channels_raw, list) or not channels_raw
                                     or not all(isinstance(c, str) for c in channels_raw)):
        raise DecodeError(Reason.BAD_HEADER, f"start: channels must be a non-empty list of "
                                             f"names, got {channels_raw!r}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for key in ("pixel_mask", "flatfield"):
        if msg.get(key) is None:
            continue
        per_channel = _channel_map(msg, key)
        order = [c for c in channels_raw or () if c in per_channel]
        order += [c for c in per_channel if c not in order]
        for channel in order:
            arrays[f"{key}/{channel}"] = _to_ndarray(
                _wire_array(per_channel[channel], f"start.{key}.{channel}"),
                f"start.{key}.{channel}")
        if order:
            arrays[key] = arrays[f"{key}/{order[0]}"]
    if msg.get("countrate_correction_lookup_table") is not None:
        where = "start.countrate_correction_lookup_table"
        arrays["countrate_table"] = _to_ndarray(
            _wire_array(msg["countrate_correction_lookup_table"], where), where)
    if channels_raw is not None:
        channels = tuple(channels_raw)
    else:
        names = [k.split("/", 1)[1] for k in arrays if k.startswith("pixel_mask/")]
        channels = tuple(names) or ("default",)
    metadata = {k: _plain(v, f"start.{k}") for k, v in msg.items()
                if k != "type" and k not in _ARRAY_FIELDS}
    return SeriesStart(protocol=Protocol.DECTRIS_V2, series_id=series_id,
                       geometry=_start_geometry(msg, arrays), channels=channels,
                       number_of_images=_opt_uint(msg, "number_of_images", "start"),
                       metadata=metadata, arrays=arrays)


def _decode_image(msg: dict[str, Any]) -> Image:
    series_id = _uint(msg, "series_id", "image")
    image_id = _uint(msg, "image_id", "image")
    data = msg.get("data")
    if not isinstance(data, dict) or not data:
        raise DecodeError(Reason.BAD_HEADER, "image: data must be a non-empty map of channels")
    channels: dict[str, Payload] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise DecodeError(Reason.BAD_HEADER, f"image: channel name {name!r} is not text")
        channels[name] = _payload(value, f"image.data.{name}")
    header = {k: _plain(v, f"image.{k}") for k, v in msg.items() if k != "data"}
    return Image(protocol=Protocol.DECTRIS_V2, series_id=series_id, frame=image_id,
                 channels=channels, header=header)


def _decode_end(msg: dict[str, Any]) -> SeriesEnd:
    series_id = _uint(msg, "series_id", "end")
    header = {k: _plain(v, f"end.{k}") for k, v in msg.items()}
    return SeriesEnd(protocol=Protocol.DECTRIS_V2, series_id=series_id, header=header)


_DECODERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "start": _decode_start, "image": _decode_image, "end": _decode_end}


def decode(parts: Sequence[Buffer]) -> Message:
    """Decode one Stream V2 message (a single part).

    Raises :class:`DecodeError` and nothing else on bad input. Image payloads are
    memoryview slices of ``parts[0]`` (still compressed when sent compressed).
    """
    if isinstance(parts, bytes | bytearray | memoryview | str):
        raise DecodeError(Reason.PART_COUNT, "expected a sequence of message parts, got one "
                                             f"{type(parts).__name__}")
    try:
        count = len(parts)
    except TypeError as exc:
        raise DecodeError(Reason.PART_COUNT, "message parts are not a sequence") from exc
    if count != 1:
        raise DecodeError(Reason.PART_COUNT, f"a Stream V2 message has 1 part, got {count}")
    try:
        view = memoryview(parts[0])
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
    except TypeError as exc:
        raise DecodeError(Reason.BAD_CBOR, "part is not a contiguous bytes-like object") \
            from exc
    try:
        item = loads(view)
    except CBORError as exc:
        raise DecodeError(Reason.BAD_CBOR, str(exc)) from None
    if not isinstance(item, Tag) or item.tag != TAG_SELF_DESCRIBE:
        raise DecodeError(Reason.BAD_HEADER, "not a Stream V2 message: the self-describe tag "
                                             f"{TAG_SELF_DESCRIBE} (d9 d9 f7) is missing")
    msg = item.value
    if not isinstance(msg, dict):
        raise DecodeError(Reason.BAD_HEADER, f"message is a {type(msg).__name__}, not a map")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise DecodeError(Reason.BAD_HEADER, f"message has no text 'type': {kind!r}")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(Reason.UNKNOWN_TYPE, f"unknown message type {kind!r}")
    if not all(isinstance(k, str) for k in msg):
        raise DecodeError(Reason.BAD_HEADER, f"{kind}: map keys must be text")
    return decoder(msg)


# ----------------------------------------------------------------------------- encode


def default_unique_id(series_id: int) -> str:
    """A deterministic 26-character ULID-shaped id for ``series_id``."""
    digits = []
    value = series_id
    for _ in range(26):
        digits.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def _typed_array(arr: npt.NDArray[Any], compression: str | None = None) -> Tag:
    """``tag 40 [dims, typed array]`` (or only the typed array for 1-D) of ``arr``."""
    name = arr.dtype.newbyteorder("=").name
    if name not in _TAG_FOR_DTYPE:
        raise ValueError(f"no typed-array tag for dtype {arr.dtype}")
    data = np.ascontiguousarray(arr, dtype=np.dtype(name).newbyteorder("<"))
    content: Any
    if compression is None:
        content = data.reshape(-1).view(np.uint8).data
    elif compression == "bslz4":
        content = Tag(TAG_COMPRESSION, ["bslz4", data.itemsize, bslz4_compress(data)])
    elif compression == "lz4":
        content = Tag(TAG_COMPRESSION, ["lz4", 0, lz4h5_compress(data)])
    else:
        raise ValueError(f"compression must be None, 'bslz4' or 'lz4', got {compression!r}")
    typed = Tag(_TAG_FOR_DTYPE[name], content)
    if data.ndim == 1:
        return typed
    return Tag(TAG_MULTI_DIM, [list(data.shape), typed])


def _to_wire(value: Any) -> Any:
    """Python/NumPy values to what :func:`actors.wire.cbor.dumps` writes."""
    if isinstance(value, np.ndarray):
        return _typed_array(value)
    if isinstance(value, datetime):
        return Tag(TAG_DATETIME, value.isoformat(timespec="milliseconds"))
    if isinstance(value, Mapping):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _date(value: Any) -> Any:
    return Tag(TAG_DATETIME, value) if isinstance(value, str) else _to_wire(value)


def _per_channel(value: Any, channels: Sequence[str]) -> Any:
    if isinstance(value, np.ndarray):
        return {c: _typed_array(value) for c in channels}
    return _to_wire(value)


def _message(fields: Mapping[str, Any]) -> list[bytes]:
    return [cbor_dumps(Tag(TAG_SELF_DESCRIBE, fields))]


def encode_start(series_id: int, *, geometry: Geometry,
                 channels: Sequence[str] = (DEFAULT_CHANNEL,), number_of_images: int = 0,
                 pixel_mask: npt.NDArray[Any] | Mapping[str, npt.NDArray[Any]] | None = None,
                 series_unique_id: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> list[bytes]:
    """Encode a start message with realistic EIGER2 defaults.

    ``pixel_mask`` is one array for every channel or a channel -> array map (uint32).
    ``extra`` overrides or adds fields (e.g. ``flatfield``, ``goniometer``,
    ``countrate_correction_lookup_table``, ``user_data``, ``arm_date``); NumPy arrays become
    typed arrays, ``datetime`` and date strings become tag 0. Fields keep the firmware order.
    """
    channels = list(channels)
    fields: dict[str, Any] = {
        "type": "start",
        "series_id": series_id,
        "series_unique_id": series_unique_id or default_unique_id(series_id),
        "arm_date": DEFAULT_DATE,
        "beam_center_x": geometry.cols / 2,
        "beam_center_y": geometry.rows / 2,
        "channels": channels,
        "count_time": 0.0999999,
        "countrate_correction_enabled": True,
        "detector_description": "Dectris EIGER2 Si (simulated)",
        "detector_serial_number": "E-00-0000",
        "detector_translation": [0.0, 0.0, 0.1],
        "flatfield_enabled": True,
        "frame_time": 0.1,
        "image_dtype": geometry.dtype,
        "image_size_x": geometry.cols,
        "image_size_y": geometry.rows,
        "incident_energy": 8000.0,
        "incident_wavelength": 1.5498024804150032,
        "number_of_images": number_of_images,
        "pixel_mask_enabled": pixel_mask is not None,
        "pixel_size_x": 7.5e-05,
        "pixel_size_y": 7.5e-05,
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "threshold_energy": {c: 4000.0 for c in channels},
        "virtual_pixel_interpolation_enabled": True,
        "user_data": None,
    }
    if np.dtype(geometry.dtype).kind in "ui":
        fields["saturation_value"] = int(np.iinfo(geometry.dtype).max) - 1
    if pixel_mask is not None:
        masks = ({c: pixel_mask for c in channels} if isinstance(pixel_mask, np.ndarray)
                 else dict(pixel_mask))
        fields["pixel_mask"] = {c: np.asarray(m).astype(np.uint32) for c, m in masks.items()}
    fields.update(extra or {})
    wire: dict[str, Any] = {}
    for key in [k for k in START_FIELDS if k in fields] + [k for k in fields
                                                            if k not in START_FIELDS]:
        value = fields[key]
        if key == "arm_date":
            wire[key] = _date(value)
        elif key in ("pixel_mask", "flatfield"):
            wire[key] = _per_channel(value, channels)
        elif key == "threshold_energy" and isinstance(value, int | float):
            wire[key] = {c: float(value) for c in channels}
        else:
            wire[key] = _to_wire(value)
    return _message(wire)


def encode_image(series_id: int, image_id: int,
                 data: npt.NDArray[Any] | Mapping[str, npt.NDArray[Any]], *,
                 compression: str | None = "bslz4", series_unique_id: str | None = None,
                 start_time: tuple[int, int] = (0, 50_000_000),
                 stop_time: tuple[int, int] = (0, 50_000_000),
                 real_time: tuple[int, int] = (0, 50_000_000),
                 user_data: Any = None) -> list[bytes]:
    """Encode an image message; ``data`` is one 2-D array (channel ``threshold_1``) or a
    channel -> array map, each sent with ``compression`` (None, "bslz4" or "lz4")."""
    channels = {DEFAULT_CHANNEL: data} if isinstance(data, np.ndarray) else dict(data)
    if not channels:
        raise ValueError("an image needs at least one channel")
    encoded = {}
    for name, arr in channels.items():
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise ValueError(f"channel {name!r} must be 2-D, got shape {arr.shape}")
        encoded[name] = _typed_array(arr, compression)
    return _message({
        "type": "image",
        "series_id": series_id,
        "series_unique_id": series_unique_id or default_unique_id(series_id),
        "image_id": image_id,
        "real_time": list(real_time),
        "series_date": Tag(TAG_DATETIME, DEFAULT_DATE),
        "start_time": list(start_time),
        "stop_time": list(stop_time),
        "user_data": _to_wire(user_data),
        "data": encoded,
    })


def encode_end(series_id: int, series_unique_id: str | None = None) -> list[bytes]:
    """Encode an end message (69 bytes for a series id < 24 and a 26-character id)."""
    return _message({
        "type": "end",
        "series_id": series_id,
        "series_unique_id": series_unique_id or default_unique_id(series_id),
    })
