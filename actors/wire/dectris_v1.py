"""DECTRIS Stream V1 ("legacy"): decode one ZMQ multipart message, and encode them.

Wire format (``protocols.md`` §1): every JSON part is compact UTF-8 with sorted keys.

* header: ``dheader-1.0`` [+ detector config] [+ flatfield, pixel mask, count-rate table
  (header JSON + raw data each)] [+ appendix]: 1, 2 or 8 parts (+1 with an appendix)
  for ``header_detail`` none / basic / all;
* image: ``dimage-1.0`` (``hash`` = MD5 of part 2), ``dimage_d-1.0`` (encoding, shape
  ``[width, height]``, size, type), the data blob, ``dconfig-1.0`` times [+ appendix];
* end: ``dseries_end-1.0``.

:func:`decode` never copies the image blob: the :class:`Payload` holds a memoryview of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.wire.compression import (
    bslz4_compress,
    lz4_block_compress,
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

HTYPE_HEADER = "dheader-1.0"
HTYPE_IMAGE = "dimage-1.0"
HTYPE_IMAGE_D = "dimage_d-1.0"
HTYPE_IMAGE_D_MISSPELLED = "dimaged-1.0"  #: sent by some simulators (eiger-simulator, ALBA)
HTYPE_CONFIG = "dconfig-1.0"
HTYPE_END = "dseries_end-1.0"

#: header parts for each header_detail, without the optional appendix
HEADER_PARTS = {"none": 1, "basic": 2, "all": 8}
#: (array name in SeriesStart.arrays, htype, wire dtype) of the "all" header, in wire order
HEADER_ARRAYS = (
    ("flatfield", "dflatfield-1.0", "float32"),
    ("pixel_mask", "dpixelmask-1.0", "uint32"),
    ("countrate_table", "dcountrate_table-1.0", "float32"),
)
_ENCODINGS = {
    "<": Encoding.RAW,
    "lz4<": Encoding.LZ4,
    "bs8-lz4<": Encoding.BSLZ4,
    "bs16-lz4<": Encoding.BSLZ4,
    "bs32-lz4<": Encoding.BSLZ4,
}
_BIT_DEPTHS = {8: "uint8", 16: "uint16", 32: "uint32"}
_TIMES = ("real_time", "start_time", "stop_time")


# ----------------------------------------------------------------------------- decode


def _views(parts: Sequence[Buffer]) -> list[memoryview]:
    if isinstance(parts, bytes | bytearray | memoryview | str):
        raise DecodeError(Reason.PART_COUNT, "expected a sequence of message parts, got one "
                                             f"{type(parts).__name__}")
    try:
        items = list(parts)
    except TypeError as exc:
        raise DecodeError(Reason.PART_COUNT, "message parts are not a sequence") from exc
    views = []
    for i, part in enumerate(items):
        try:
            view = memoryview(part)
        except TypeError as exc:
            raise DecodeError(Reason.BAD_HEADER, f"part {i + 1} is not bytes-like: "
                                                 f"{type(part).__name__}") from exc
        if view.format != "B" or view.ndim != 1:
            if not view.c_contiguous:
                raise DecodeError(Reason.BAD_HEADER, f"part {i + 1} is not contiguous")
            view = view.cast("B")
        views.append(view)
    return views


def _json(view: memoryview, where: str) -> dict[str, Any]:
    try:
        value = json.loads(bytes(view))
    except (ValueError, RecursionError) as exc:
        raise DecodeError(Reason.BAD_JSON, f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(Reason.BAD_JSON, f"{where} is a JSON {type(value).__name__}, "
                                           "not an object")
    return value


def _int(obj: Mapping[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: missing {key!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: {key!r} must be an integer >= "
                                             f"{minimum}, got {value!r}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str, minimum: int = 0) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, where, minimum)


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: {key!r} must be a string, "
                                             f"got {value!r}")
    return value


def _shape(obj: Mapping[str, Any], where: str) -> tuple[int, int]:
    """``shape`` is ``[width, height]`` on the wire; return ``(rows, cols)``."""
    shape = obj.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise DecodeError(Reason.BAD_HEADER, f"{where}: shape must be [width, height] of "
                                             f"positive integers, got {shape!r}")
    return shape[1], shape[0]


def _dtype(obj: Mapping[str, Any], where: str) -> str:
    name = _str(obj, "type", where)
    if name not in PIXEL_DTYPES:
        raise DecodeError(Reason.UNSUPPORTED, f"{where}: unsupported type {name!r}")
    return name


def _text(view: memoryview) -> str | bytes:
    try:
        return str(view, "utf-8")
    except UnicodeDecodeError:
        return bytes(view)


def _geometry(config: Mapping[str, Any]) -> Geometry | None:
    keys = ("x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image")
    if any(config.get(k) is None for k in keys):
        return None
    cols = _int(config, keys[0], "detector config", 1)
    rows = _int(config, keys[1], "detector config", 1)
    bits = _int(config, keys[2], "detector config", 1)
    if bits not in _BIT_DEPTHS:
        raise DecodeError(Reason.UNSUPPORTED, f"bit_depth_image {bits} not in 8/16/32")
    return Geometry(rows, cols, _BIT_DEPTHS[bits])


def _header_array(head: memoryview, data: memoryview, name: str, htype: str,
                  ) -> npt.NDArray[Any]:
    where = f"{name} header"
    meta = _json(head, where)
    if meta.get("htype") != htype:
        raise DecodeError(Reason.BAD_HEADER, f"{where}: htype {meta.get('htype')!r}, "
                                             f"expected {htype!r}")
    rows, cols = _shape(meta, where)
    dtype = np.dtype(_dtype(meta, where)).newbyteorder("<")
    if len(data) != rows * cols * dtype.itemsize:
        raise DecodeError(Reason.SIZE_MISMATCH, f"{name}: {len(data)} B for {cols}x{rows} "
                                                f"{dtype.name}")
    return np.frombuffer(data, dtype).reshape(rows, cols).astype(dtype.name)


def _decode_header(views: list[memoryview], head: dict[str, Any]) -> SeriesStart:
    detail = head.get("header_detail")
    if not isinstance(detail, str) or detail not in HEADER_PARTS:
        raise DecodeError(Reason.BAD_HEADER, f"header_detail must be one of "
                                             f"{sorted(HEADER_PARTS)}, got {detail!r}")
    series = _int(head, "series", "dheader")
    base = HEADER_PARTS[detail]
    if len(views) not in (base, base + 1):
        raise DecodeError(Reason.PART_COUNT, f"header_detail {detail!r} needs {base} or "
                                             f"{base + 1} parts, got {len(views)}")
    metadata: dict[str, Any] = {}
    geometry = None
    n_images = None
    if detail != "none":
        config = _json(views[1], "detector config")
        metadata.update(config)
        geometry = _geometry(config)
        nimages = _opt_int(config, "nimages", "detector config")
        ntrigger = _opt_int(config, "ntrigger", "detector config")
        if nimages is not None:
            n_images = nimages * (1 if ntrigger is None else ntrigger)
    arrays: dict[str, npt.NDArray[Any]] = {}
    if detail == "all":
        for i, (name, htype, _) in enumerate(HEADER_ARRAYS):
            arrays[name] = _header_array(views[2 + 2 * i], views[3 + 2 * i], name, htype)
    metadata["header_detail"] = detail
    if len(views) == base + 1:
        metadata["appendix"] = _text(views[-1])
    return SeriesStart(protocol=Protocol.DECTRIS_V1, series_id=series, geometry=geometry,
                       number_of_images=n_images, metadata=metadata, arrays=arrays)


def _check_compressed_size(blob: memoryview, nbytes: int) -> None:
    total, _ = read_h5_header(blob)
    if total != nbytes:
        raise DecodeError(Reason.SIZE_MISMATCH, f"payload header declares {total} B, "
                                                f"image is {nbytes} B")


def _decode_image(views: list[memoryview], head: dict[str, Any]) -> Image:
    if len(views) not in (4, 5):
        raise DecodeError(Reason.PART_COUNT, f"image needs 4 or 5 parts, got {len(views)}")
    frame = _int(head, "frame", "dimage")
    series = _int(head, "series", "dimage")
    digest = head.get("hash")
    if digest is not None:
        if not isinstance(digest, str):
            raise DecodeError(Reason.BAD_HEADER, f"dimage: hash must be a string, "
                                                 f"got {digest!r}")
        if hashlib.md5(views[1], usedforsecurity=False).hexdigest() != digest.lower():
            raise DecodeError(Reason.BAD_HASH, f"MD5 of part 2 is not {digest!r}")
    data_head = _json(views[1], "dimage_d")
    if data_head.get("htype") not in (HTYPE_IMAGE_D, HTYPE_IMAGE_D_MISSPELLED):
        raise DecodeError(Reason.BAD_HEADER, f"part 2 htype {data_head.get('htype')!r}, "
                                             f"expected {HTYPE_IMAGE_D!r}")
    encoding_name = _str(data_head, "encoding", "dimage_d")
    rows, cols = _shape(data_head, "dimage_d")
    dtype = _dtype(data_head, "dimage_d")
    size = _int(data_head, "size", "dimage_d")
    encoding = _ENCODINGS.get(encoding_name)
    if encoding is None:
        raise DecodeError(Reason.UNKNOWN_ENCODING, f"unknown encoding {encoding_name!r}")
    itemsize = np.dtype(dtype).itemsize
    if encoding is Encoding.BSLZ4 and encoding_name != f"bs{8 * itemsize}-lz4<":
        raise DecodeError(Reason.BAD_HEADER, f"encoding {encoding_name!r} does not fit "
                                             f"type {dtype!r}")
    blob = views[2]
    if size != len(blob):
        raise DecodeError(Reason.SIZE_MISMATCH, f"size {size} but the data part is "
                                                f"{len(blob)} B")
    nbytes = rows * cols * itemsize
    if encoding is Encoding.RAW and size != nbytes:
        raise DecodeError(Reason.SIZE_MISMATCH, f"uncompressed {cols}x{rows} {dtype} needs "
                                                f"{nbytes} B, got {size} B")
    if encoding is Encoding.BSLZ4:
        _check_compressed_size(blob, nbytes)
    times = _json(views[3], "dconfig")
    if times.get("htype") != HTYPE_CONFIG:
        raise DecodeError(Reason.BAD_HEADER, f"part 4 htype {times.get('htype')!r}, "
                                             f"expected {HTYPE_CONFIG!r}")
    header: dict[str, Any] = dict(head)
    header.update((k, v) for k, v in data_head.items() if k != "htype")
    for key in _TIMES:
        header[key] = _int(times, key, "dconfig")
    if len(views) == 5:
        header["appendix"] = _text(views[4])
    payload = Payload(data=blob, encoding=encoding, shape=(rows, cols), dtype=dtype)
    return Image(protocol=Protocol.DECTRIS_V1, series_id=series, frame=frame,
                 channels={"default": payload}, header=header)


def _decode_end(views: list[memoryview], head: dict[str, Any]) -> SeriesEnd:
    if len(views) != 1:
        raise DecodeError(Reason.PART_COUNT, f"dseries_end needs 1 part, got {len(views)}")
    series = _int(head, "series", "dseries_end")
    return SeriesEnd(protocol=Protocol.DECTRIS_V1, series_id=series, header=head)


def decode(parts: Sequence[Buffer]) -> Message:
    """Decode one Stream V1 multipart message.

    Raises :class:`DecodeError` (and nothing else) for any malformed message. The image
    blob stays a zero-copy memoryview of ``parts[2]``.
    """
    views = _views(parts)
    if not views:
        raise DecodeError(Reason.PART_COUNT, "empty message")
    head = _json(views[0], "part 1")
    htype = head.get("htype")
    if not isinstance(htype, str):
        raise DecodeError(Reason.BAD_HEADER, f"part 1 has no string htype: {htype!r}")
    if htype == HTYPE_IMAGE:
        return _decode_image(views, head)
    if htype == HTYPE_HEADER:
        return _decode_header(views, head)
    if htype == HTYPE_END:
        return _decode_end(views, head)
    raise DecodeError(Reason.UNKNOWN_TYPE, f"unknown htype {htype!r}")


# ----------------------------------------------------------------------------- encode


def format_float(value: float) -> str:
    """Shortest round-trip float text laid out like the firmware's JSON writer (ryu).

    Same digits as Python's ``repr``; decimal notation for 1e-5 <= |x| < 1e16
    (``0.000075``, ``8000.0``), else ``7.540540540540541e-6`` / ``1e16``. NaN and
    infinities, which JSON cannot hold, become ``null``.
    """
    if not math.isfinite(value):
        return "null"
    text = repr(float(value))
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return sign + "0.0"
    k = (int(exp) if exp else 0) - len(frac)  # value = int(digits) * 10**k
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    kk = len(digits) + k  # 10**(kk-1) <= value < 10**kk
    if k >= 0 and kk <= 16:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    if len(digits) == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"


def _write_json(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True or obj is False:
        out.append("true" if obj else "false")
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(format_float(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(obj)):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {key!r}")
            out.append("," if i else "")
            out.append(json.dumps(key, ensure_ascii=False) + ":")
            _write_json(obj[key], out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, item in enumerate(obj):
            out.append("," if i else "")
            _write_json(item, out)
        out.append("]")
    elif isinstance(obj, np.generic | np.ndarray):
        _write_json(obj.tolist(), out)
    else:
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Mapping[str, Any]) -> bytes:
    """JSON the way the DECTRIS firmware writes it: compact, keys sorted, UTF-8, floats
    as :func:`format_float` (a re-encoded real header is byte-identical)."""
    out: list[str] = []
    _write_json(obj, out)
    return "".join(out).encode()


def default_config(geometry: Geometry) -> dict[str, Any]:
    """A realistic SIMPLON ``detector/config`` dict (keys of a real EIGER1 1M stream)."""
    return {
        "auto_summation": True,
        "beam_center_x": geometry.cols / 2,
        "beam_center_y": geometry.rows / 2,
        "bit_depth_image": 8 * geometry.itemsize,
        "bit_depth_readout": 16 if geometry.itemsize > 1 else 8,
        "chi_increment": 0.0,
        "chi_start": 0.0,
        "compression": "bslz4",
        "count_time": 0.0999999,
        "countrate_correction_applied": True,
        "countrate_correction_count_cutoff": 2943293,
        "data_collection_date": "2024-01-01T00:00:00.000+00:00",
        "description": "Dectris EIGER Si (simulated)",
        "detector_distance": 0.1,
        "detector_number": "E-00-0000",
        "detector_readout_time": 7.54e-6,
        "detector_translation": [0.0, 0.0, 0.0],
        "eiger_fw_version": "rayline-simulator",
        "element": "",
        "flatfield_correction_applied": True,
        "frame_count_time": 0.0013240272897398063,
        "frame_period": 0.001331567830280347,
        "frame_time": 0.1,
        "kappa_increment": 0.0,
        "kappa_start": 0.0,
        "nimages": 1,
        "ntrigger": 1,
        "number_of_excluded_pixels": 0,
        "omega_increment": 0.0,
        "omega_start": 0.0,
        "phi_increment": 0.0,
        "phi_start": 0.0,
        "photon_energy": 8000.0,
        "pixel_mask_applied": True,
        "roi_mode": "",
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "software_version": "1.8.0",
        "threshold_energy": 4000.0,
        "trigger_mode": "ints",
        "two_theta_increment": 0.0,
        "two_theta_start": 0.0,
        "virtual_pixel_correction_applied": True,
        "wavelength": 1.5498024804150032,
        "x_pixel_size": 0.000075,
        "x_pixels_in_detector": geometry.cols,
        "y_pixel_size": 0.000075,
        "y_pixels_in_detector": geometry.rows,
    }


def default_countrate_table(n: int = 1001, dead_time: float = 1e-7) -> npt.NDArray[np.float32]:
    """A plausible ``(n, 2)`` count-rate table: true rate, measured (paralysable) rate."""
    true_rate = np.arange(n, dtype=np.float64) * 1125.0
    measured = true_rate * np.exp(-true_rate * dead_time)
    return np.stack([true_rate, measured], axis=1).astype(np.float32)


def _array_parts(name: str, htype: str, dtype: str, arr: npt.NDArray[Any]) -> list[bytes]:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    data = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
    rows, cols = data.shape
    meta = {"htype": htype, "shape": [cols, rows], "type": dtype}
    return [dumps(meta), data.tobytes()]


def encode_header(series: int, *, detail: str = "basic", geometry: Geometry,
                  config: Mapping[str, Any] | None = None,
                  pixel_mask: npt.NDArray[Any] | None = None,
                  flatfield: npt.NDArray[Any] | None = None,
                  countrate_table: npt.NDArray[Any] | None = None,
                  appendix: str | None = None) -> list[bytes]:
    """Encode a series header for ``header_detail`` ``detail`` (none / basic / all).

    The config part is :func:`default_config` updated with ``config``; the geometry keys
    (pixels, bit depth) always come from ``geometry``. For ``all`` missing arrays default to
    a flatfield of ones, an empty pixel mask and :func:`default_countrate_table`.
    """
    if detail not in HEADER_PARTS:
        raise ValueError(f"detail must be one of {sorted(HEADER_PARTS)}, got {detail!r}")
    parts = [dumps({"header_detail": detail, "htype": HTYPE_HEADER, "series": series})]
    if detail != "none":
        cfg = default_config(geometry)
        if pixel_mask is not None:
            cfg["number_of_excluded_pixels"] = int(np.count_nonzero(pixel_mask))
        cfg.update(config or {})
        cfg.update(x_pixels_in_detector=geometry.cols, y_pixels_in_detector=geometry.rows,
                   bit_depth_image=8 * geometry.itemsize)
        parts.append(dumps(cfg))
    if detail == "all":
        defaults = {
            "flatfield": np.ones(geometry.shape, np.float32),
            "pixel_mask": np.zeros(geometry.shape, np.uint32),
            "countrate_table": default_countrate_table(),
        }
        given = {"flatfield": flatfield, "pixel_mask": pixel_mask,
                 "countrate_table": countrate_table}
        for name, htype, dtype in HEADER_ARRAYS:
            arr = given[name]
            arr = defaults[name] if arr is None else np.asarray(arr)
            if name != "countrate_table" and arr.shape != geometry.shape:
                raise ValueError(f"{name} shape {arr.shape} != geometry {geometry.shape}")
            parts += _array_parts(name, htype, dtype, arr)
    if appendix is not None:
        parts.append(appendix.encode())
    return parts


def encode_image(series: int, frame: int, pixels: npt.NDArray[Any], *,
                 encoding: str | None = None, start_time: int = 0, stop_time: int = 0,
                 real_time: int = 0, appendix: str | None = None) -> list[bytes | memoryview]:
    """Encode one frame; ``encoding`` None means ``bs{8*itemsize}-lz4<`` like the detector.

    With ``encoding="<"`` the data part is a read-only view of ``pixels`` when they are
    already contiguous little-endian (no copy: the simulator sends 9 MB frames at
    hundreds per second); keep ``pixels`` unchanged until the message is sent."""
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D, got shape {pixels.shape}")
    dtype = pixels.dtype.newbyteorder("=").name
    if dtype not in PIXEL_DTYPES:
        raise ValueError(f"unsupported pixel dtype {pixels.dtype}")
    itemsize = pixels.dtype.itemsize
    if encoding is None:
        encoding = f"bs{8 * itemsize}-lz4<"
    blob: bytes | memoryview
    if encoding == "<":
        little = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
        blob = little.data.toreadonly().cast("B")
    elif encoding == "lz4<":
        blob = lz4_block_compress(pixels)
    elif encoding == f"bs{8 * itemsize}-lz4<":
        blob = bslz4_compress(pixels)
    else:
        raise ValueError(f"cannot encode {encoding!r} for {dtype} pixels")
    rows, cols = pixels.shape
    data_head = dumps({"encoding": encoding, "htype": HTYPE_IMAGE_D, "shape": [cols, rows],
                       "size": len(blob), "type": dtype})
    digest = hashlib.md5(data_head, usedforsecurity=False).hexdigest()
    parts: list[bytes | memoryview] = [
        dumps({"frame": frame, "hash": digest, "htype": HTYPE_IMAGE, "series": series}),
        data_head,
        blob,
        dumps({"htype": HTYPE_CONFIG, "real_time": real_time, "start_time": start_time,
               "stop_time": stop_time}),
    ]
    if appendix is not None:
        parts.append(appendix.encode())
    return parts


def encode_end(series: int) -> list[bytes]:
    """Encode the one-part end-of-series message."""
    return [dumps({"htype": HTYPE_END, "series": series})]
