"""DECTRIS Stream V2: CBOR reader/writer, round trips, exact bytes, rejection of garbage."""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2
import numpy as np
import pytest

from actors.wire import cbor
from actors.wire import dectris_v2 as v2
from actors.wire.cbor import CBORError, Simple, Tag
from actors.wire.compression import bslz4_compress, lz4h5_compress
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Encoding, Geometry, Image, Protocol, SeriesEnd, SeriesStart
from actors.wire.pixels import decode_image, decode_pixels

INT_DTYPES = ["uint8", "uint16", "uint32"]
TYPED_DTYPES = ["int8", "int16", "int32", "int64", "uint64", "float16", "float32", "float64"]
COMPRESSIONS = [None, "bslz4", "lz4"]


def _pixels(shape: tuple[int, int], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.poisson(3.0, shape).astype(dtype)
    if np.dtype(dtype).kind in "ui":
        arr.flat[:: 101] = np.iinfo(dtype).max
    else:
        arr.flat[:: 101] = -1.5
    return arr


def _expect(reason: Reason, parts: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        v2.decode(parts)
    assert info.value.reason is reason, info.value
    return info.value


def _message(fields: dict[str, Any]) -> list[bytes]:
    return [cbor.dumps(Tag(v2.TAG_SELF_DESCRIBE, fields))]


def _image_fields(channels: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "series_id": 1, "image_id": 0, "data": channels}


# ------------------------------------------------------------- CBOR reader and writer


def _pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _random_doc(rng: np.random.Generator, depth: int = 0) -> Any:
    """A neutral document: tags as ("tag", n, value), no NaN (NaN != NaN)."""
    kind = int(rng.integers(0, 12 if depth < 4 else 7))
    if kind == 0:
        return _pick(rng, [0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1])
    if kind == 1:
        return -_pick(rng, [1, 24, 25, 256, 257, 65537, 2**32 + 1, 2**64])
    if kind == 2:
        return _pick(rng, [0.0, -0.0, 1.5, 4000.0, 65504.0, 0.1, 1e300, -2.5e-8,
                           float("inf"), 3.4028234663852886e38, 5.960464477539063e-08])
    if kind == 3:
        return "".join(rng.choice(list("abcé💙 \n"), int(rng.integers(0, 30))))
    if kind == 4:
        return rng.bytes(_pick(rng, [0, 1, 23, 24, 300, 70000]))
    if kind == 5:
        return [True, False, None][int(rng.integers(3))]
    if kind == 6:
        return int(rng.integers(-1000, 1000))
    if kind in (7, 8):
        return [_random_doc(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    if kind in (9, 10):
        doc: dict[Any, Any] = {}
        for _ in range(int(rng.integers(0, 5))):
            key = f"k{int(rng.integers(1000))}" if rng.random() < 0.8 else int(rng.integers(99))
            doc[key] = _random_doc(rng, depth + 1)
        return doc
    return ("tag", _pick(rng, [40, 69, 1040, 56500, 100000]), _random_doc(rng, depth + 1))


def _to_cbor2(doc: Any) -> Any:
    if isinstance(doc, tuple):
        return cbor2.CBORTag(doc[1], _to_cbor2(doc[2]))
    if isinstance(doc, list):
        return [_to_cbor2(v) for v in doc]
    if isinstance(doc, dict):
        return {k: _to_cbor2(v) for k, v in doc.items()}
    return doc


def _to_ours(doc: Any) -> Any:
    if isinstance(doc, tuple):
        return Tag(doc[1], _to_ours(doc[2]))
    if isinstance(doc, list):
        return [_to_ours(v) for v in doc]
    if isinstance(doc, dict):
        return {k: _to_ours(v) for k, v in doc.items()}
    return doc


def _normal(value: Any) -> Any:
    """Decoder output of either library back to the neutral form."""
    if isinstance(value, Tag | cbor2.CBORTag):
        return ("tag", value.tag, _normal(value.value))
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, dict | cbor2.frozendict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _has_float(doc: Any) -> bool:
    if isinstance(doc, float):
        return True
    if isinstance(doc, tuple):
        return _has_float(doc[2])
    if isinstance(doc, list):
        return any(_has_float(v) for v in doc)
    if isinstance(doc, dict):
        return any(_has_float(v) for v in doc.values())
    return False


def test_cbor_reader_and_writer_agree_with_cbor2() -> None:
    rng = np.random.default_rng(99)
    for _ in range(400):
        doc = _random_doc(rng)
        theirs = cbor2.dumps(_to_cbor2(doc))
        assert _normal(cbor.loads(theirs)) == doc
        ours = cbor.dumps(_to_ours(doc))
        assert _normal(cbor2.loads(ours)) == doc
        if not _has_float(doc):  # same minimal heads, same map order
            assert ours == theirs


def test_cbor_floats_are_shortest_exact() -> None:
    for value in (0.0, -0.0, 1.5, 4000.0, 65504.0, 0.1, 1e300, 1e-7, float("inf"),
                  5.960464477539063e-08, 100000.0, 3.4028234663852886e38):
        assert cbor.dumps(value) == cbor2.dumps(value, canonical=True)
        assert cbor.loads(cbor.dumps(value)) == value
    assert cbor.dumps(4000.0) == b"\xf9\x6b\xd0"
    assert cbor.dumps(0.0) == b"\xf9\x00\x00"
    assert cbor.dumps(100000.0) == b"\xfa\x47\xc3\x50\x00"
    assert cbor.dumps(0.1) == b"\xfb" + struct.pack(">d", 0.1)
    assert cbor.dumps(float("nan")) == b"\xf9\x7e\x00"
    assert math.isnan(cbor.loads(b"\xfb" + struct.pack(">d", float("nan"))))
    assert cbor.dumps(np.float32(0.5)) == b"\xf9\x38\x00"
    assert cbor.dumps(np.uint16(500)) == b"\x19\x01\xf4"


def test_cbor_indefinite_lengths_and_simple_values() -> None:
    samples = [b"\x9f\x01\x82\x02\x03\xff", b"\xbf\x61a\x01\x61b\x9f\xff\xff",
               b"\x5f\x42ab\x41c\xff", b"\x7f\x61a\x62bc\xff", b"\x5f\xff", b"\xf4", b"\xf5",
               b"\xf6", b"\xc1\x1a\x00\x01\x00\x00"]
    for sample in samples:
        assert _normal(cbor.loads(sample)) == _normal(cbor2.loads(sample)) or \
            isinstance(cbor2.loads(sample), datetime)
    assert cbor.loads(b"\xf7") is None  # undefined
    assert cbor.loads(b"\xe0") == Simple(0)
    assert cbor.loads(b"\xf8\x20") == Simple(32)
    assert cbor.dumps(Simple(32)) == b"\xf8\x20" and cbor.dumps(Simple(3)) == b"\xe3"


def test_cbor_byte_strings_are_views() -> None:
    buffer = bytearray(cbor.dumps({"blob": b"x" * 1000}))
    blob = cbor.loads(buffer)["blob"]
    assert isinstance(blob, memoryview) and bytes(blob) == b"x" * 1000
    assert np.shares_memory(np.frombuffer(blob, np.uint8), np.frombuffer(buffer, np.uint8))


@pytest.mark.parametrize("bad", [
    b"", b"\x18", b"\x19\x01", b"\x5a\x00\x00\x00\x10abc", b"\x82\x01", b"\xa1\x01",
    b"\x01\x02",  # trailing data
    b"\x1c", b"\x3f", b"\xdf\x00",  # reserved / invalid additional info
    b"\xff", b"\x9f\x01",  # break outside / missing
    b"\x81" * 200 + b"\x00",  # deep nesting
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # huge declared length
    b"\x9b\x00\xff\xff\xff\xff\xff\xff\xff",  # huge declared count
    b"\xbb\x00\xff\xff\xff\xff\xff\xff\xff",
    b"\x62\xff\xfe",  # not UTF-8
    b"\xa1\x80\x00",  # unhashable key
    b"\x5f\x61a\xff",  # text chunk in a byte string
])
def test_cbor_reader_rejects(bad: bytes) -> None:
    with pytest.raises(CBORError):
        cbor.loads(bad)


def test_cbor_writer_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        cbor.dumps(object())
    with pytest.raises(ValueError, match="64 bits"):
        cbor.dumps(2**64)


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (13, 7), (1065, 1030)])
def test_image_round_trip(dtype: str, compression: str | None, shape: tuple[int, int]) -> None:
    pixels = _pixels(shape, dtype)
    parts = v2.encode_image(5, 42, pixels, compression=compression,
                            start_time=(10, 50_000_000), stop_time=(20, 50_000_000),
                            real_time=(10, 50_000_000), user_data={"note": "x"})
    assert len(parts) == 1
    buffer = bytearray(parts[0])
    image = v2.decode([buffer])
    assert isinstance(image, Image)
    assert (image.protocol, image.series_id, image.frame) == (Protocol.DECTRIS_V2, 5, 42)
    payload = image.channels["threshold_1"]
    expected = {None: Encoding.RAW, "bslz4": Encoding.BSLZ4, "lz4": Encoding.LZ4_H5}
    assert (payload.encoding, payload.shape, payload.dtype) == (expected[compression], shape,
                                                                dtype)
    assert np.shares_memory(np.frombuffer(payload.data, np.uint8),
                            np.frombuffer(buffer, np.uint8))  # zero-copy payload
    assert image.header["start_time"] == [10, 50_000_000]
    assert image.header["user_data"] == {"note": "x"}
    assert image.header["series_unique_id"] == v2.default_unique_id(5)
    assert image.header["series_date"] == v2.DEFAULT_DATE
    out = decode_image(image)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("dtype", TYPED_DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_typed_array_round_trip(dtype: str, compression: str | None) -> None:
    pixels = _pixels((7, 13), dtype)
    image = v2.decode(v2.encode_image(1, 0, pixels, compression=compression))
    assert isinstance(image, Image)
    out = decode_image(image)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, pixels)


def test_multichannel_image() -> None:
    channels = {"threshold_1": _pixels((9, 11), "uint16", 1),
                "threshold_2": _pixels((9, 11), "uint16", 2),
                "difference": _pixels((9, 11), "uint32", 3)}
    for compression in COMPRESSIONS:
        image = v2.decode(v2.encode_image(1, 3, channels, compression=compression))
        assert isinstance(image, Image)
        assert list(image.channels) == list(channels)
        for name, arr in channels.items():
            np.testing.assert_array_equal(decode_image(image, name), arr)
        np.testing.assert_array_equal(decode_image(image), channels["threshold_1"])


def test_start_round_trip() -> None:
    geometry = Geometry(9, 11, "uint32")
    rng = np.random.default_rng(1)
    masks = {"threshold_1": (rng.random((9, 11)) < 0.1).astype(np.uint32),
             "threshold_2": (rng.random((9, 11)) < 0.2).astype(np.uint32)}
    flat = rng.random((9, 11)).astype(np.float32)
    table = np.arange(1000, dtype=np.uint32)
    parts = v2.encode_start(
        7, geometry=geometry, channels=("threshold_1", "threshold_2"), number_of_images=100,
        pixel_mask=masks, series_unique_id="01GRXWT80JSDY2FNW8SGCCDZD9",
        extra={"flatfield": flat, "countrate_correction_lookup_table": table,
               "goniometer": {"omega": {"start": 0.0, "increment": 0.1}},
               "user_data": [1, "💙"], "threshold_energy": {"threshold_1": 4000.0,
                                                          "threshold_2": 8000.5},
               "count_time": 0.5, "frame_time": 0.1,
               "arm_date": datetime(2023, 2, 10, 15, 49, 5, 281000,
                                    tzinfo=timezone(timedelta(hours=1)))})
    start = v2.decode(parts)
    assert isinstance(start, SeriesStart)
    assert (start.protocol, start.series_id, start.number_of_images) == \
        (Protocol.DECTRIS_V2, 7, 100)
    assert start.geometry == geometry
    assert start.channels == ("threshold_1", "threshold_2")
    assert set(start.arrays) == {"pixel_mask", "pixel_mask/threshold_1", "pixel_mask/threshold_2",
                                 "flatfield", "flatfield/threshold_1", "flatfield/threshold_2",
                                 "countrate_table"}
    np.testing.assert_array_equal(start.arrays["pixel_mask"], masks["threshold_1"])
    np.testing.assert_array_equal(start.arrays["pixel_mask/threshold_2"], masks["threshold_2"])
    np.testing.assert_array_equal(start.arrays["flatfield/threshold_2"], flat)
    np.testing.assert_array_equal(start.arrays["countrate_table"], table)
    assert all(a.flags.writeable for a in start.arrays.values())
    meta = start.metadata
    assert meta["series_unique_id"] == "01GRXWT80JSDY2FNW8SGCCDZD9"
    assert meta["arm_date"] == "2023-02-10T15:49:05.281+01:00"
    assert meta["goniometer"] == {"omega": {"start": 0.0, "increment": 0.1}}
    assert meta["user_data"] == [1, "💙"]
    assert meta["threshold_energy"] == {"threshold_1": 4000.0, "threshold_2": 8000.5}
    assert (meta["count_time"], meta["frame_time"]) == (0.5, 0.1)  # f16 and f64 on the wire
    assert meta["image_size_x"] == 11 and meta["image_size_y"] == 9
    assert not {"pixel_mask", "flatfield", "type"} & set(meta)


def test_start_geometry_fallbacks() -> None:
    geometry = Geometry(9, 11, "uint16")
    mask = np.zeros((9, 11), np.uint32)

    def start(extra: dict[str, Any], **kw: Any) -> SeriesStart:
        fields = cbor.loads(v2.encode_start(1, geometry=geometry, **kw)[0]).value
        fields.update(extra)
        for key in [k for k, v in extra.items() if v is KeyError]:
            del fields[key]
        message = v2.decode(_message(fields))
        assert isinstance(message, SeriesStart)
        return message

    assert start({"image_dtype": KeyError, "bit_depth_image": 32}).geometry == \
        Geometry(9, 11, "uint32")
    assert start({"image_dtype": KeyError}).geometry is None
    assert start({"image_size_x": KeyError, "image_size_y": KeyError},
                 pixel_mask=mask).geometry == geometry
    assert start({"image_size_x": KeyError}).geometry is None
    no_channels = start({"channels": KeyError}, pixel_mask={"a": mask, "b": mask})
    assert no_channels.channels == ("a", "b")
    assert start({"channels": KeyError}).channels == ("default",)
    with pytest.raises(DecodeError) as info:
        start({"image_dtype": "complex64"})
    assert info.value.reason is Reason.UNSUPPORTED


def test_end_round_trip() -> None:
    end = v2.decode(v2.encode_end(3, "01GRXWT80JSDY2FNW8SGCCDZD9"))
    assert end == SeriesEnd(Protocol.DECTRIS_V2, 3, {
        "type": "end", "series_id": 3, "series_unique_id": "01GRXWT80JSDY2FNW8SGCCDZD9"})


def test_column_major_and_big_endian_arrays() -> None:
    arr = _pixels((5, 7), "uint16")
    column_major = Tag(1040, [[5, 7], Tag(69, arr.tobytes(order="F"))])
    big_endian = Tag(40, [[5, 7], Tag(65, arr.astype(">u2").tobytes())])
    both = Tag(1040, [[5, 7], Tag(65, arr.astype(">u2").tobytes(order="F"))])
    image = v2.decode(_message(_image_fields({"a": column_major, "b": big_endian, "c": both})))
    assert isinstance(image, Image)
    for name in "abc":
        assert image.channels[name].encoding is Encoding.RAW
        np.testing.assert_array_equal(decode_image(image, name), arr)
    compressed = Tag(TAG := 56500, ["bslz4", 2, bslz4_compress(arr)])
    for tag, typed in ((1040, 69), (40, 65)):
        bad = Tag(tag, [[5, 7], Tag(typed, compressed)])
        _expect(Reason.UNSUPPORTED, _message(_image_fields({"a": bad})))
    assert TAG == v2.TAG_COMPRESSION
    # start arrays: decoded fully, any layout and byte order
    mask = (arr % 2).astype(np.uint32)
    fields = cbor.loads(v2.encode_start(1, geometry=Geometry(5, 7))[0]).value
    fields["pixel_mask"] = {"threshold_1": Tag(1040, [[5, 7], Tag(66, mask.astype(">u4")
                                                                  .tobytes(order="F"))])}
    fields["flatfield"] = {"threshold_1": Tag(40, [[5, 7], Tag(85, Tag(56500, [
        "lz4", 0, lz4h5_compress(arr.astype(np.float32))]))])}
    start = v2.decode(_message(fields))
    assert isinstance(start, SeriesStart)
    np.testing.assert_array_equal(start.arrays["pixel_mask"], mask)
    np.testing.assert_array_equal(start.arrays["flatfield"], arr.astype(np.float32))
    _expect(Reason.UNSUPPORTED, _message(_image_fields({"a": Tag(40, [[1, 1],
                                                                      Tag(87, b"\0" * 16)])})))


# -------------------------------------------------------------------- byte faithfulness


def test_messages_start_with_self_describe_tag_and_type() -> None:
    geometry = Geometry(5, 7, "uint16")
    for parts in (v2.encode_start(1, geometry=geometry), v2.encode_end(1),
                  v2.encode_image(1, 0, np.zeros((5, 7), np.uint16))):
        assert parts[0][:3] == b"\xd9\xd9\xf7"
        head = 1 if parts[0][3] < 0xB8 else 2  # a map of <= 23 or of more keys
        assert parts[0][3] & 0xE0 == 0xA0
        assert parts[0][3 + head: 8 + head] == b"\x64type"  # first key of the map


def test_exact_nesting_of_a_bslz4_uint16_channel() -> None:
    """protocols.md §2.3, bytes taken from r500k_bm_bslz4_16bit/000001.cbor."""
    pixels = _pixels((514, 1030), "uint16")
    blob = bslz4_compress(pixels)
    message = v2.encode_image(1, 0, pixels)[0]
    expected = (b"\xd8\x28" b"\x82" b"\x82\x19\x02\x02\x19\x04\x06" b"\xd8\x45"
                b"\xd9\xdc\xb4" b"\x83\x65bslz4\x02" b"\x5a" + struct.pack(">I", len(blob))
                + blob)
    assert message.endswith(b"\x64data\xa1\x6bthreshold_1" + expected)
    raw = v2.encode_image(1, 0, pixels, compression=None)[0]
    assert raw.endswith(b"\xd8\x28\x82\x82\x19\x02\x02\x19\x04\x06\xd8\x45\x5a"
                        + struct.pack(">I", pixels.nbytes) + pixels.tobytes())
    lz4 = v2.encode_image(1, 0, pixels, compression="lz4")[0]
    assert b"\xd8\x45\xd9\xdc\xb4\x83\x63lz4\x00\x5a" in lz4


def test_field_order_and_float_widths() -> None:
    geometry = Geometry(514, 1030, "uint16")
    start = v2.encode_start(1, geometry=geometry, pixel_mask=np.zeros((514, 1030), np.uint32),
                            extra={"goniometer": {"omega": {"start": 0.0, "increment": 0.1}}})
    keys = list(cbor2.loads(start[0]))
    assert keys == [k for k in v2.START_FIELDS if k in keys]
    assert keys[:3] == ["type", "series_id", "series_unique_id"] and keys[-1] == "user_data"
    assert len(keys) == 31
    assert b"\x70threshold_energy\xa1\x6bthreshold_1\xf9\x6b\xd0" in start[0]  # 4000.0 -> f16
    assert b"\x74detector_translation\x83\xf9\x00\x00\xf9\x00\x00\xfb" in start[0]
    assert b"\x68arm_date\xc0\x78\x1d2024-01-01T00:00:00.000+00:00" in start[0]
    image = v2.encode_image(1, 0, np.zeros((2, 2), np.uint8))
    assert list(cbor2.loads(image[0])) == ["type", "series_id", "series_unique_id", "image_id",
                                           "real_time", "series_date", "start_time",
                                           "stop_time", "user_data", "data"]
    end = v2.encode_end(1, "01GRXWT80JSDY2FNW8SGCCDZD9")
    assert len(end[0]) == 69
    assert list(cbor2.loads(end[0])) == ["type", "series_id", "series_unique_id"]
    assert len(v2.default_unique_id(12345)) == 26


def test_messages_readable_by_cbor2() -> None:
    pixels = _pixels((5, 7), "uint32")
    decoded = cbor2.loads(v2.encode_image(1, 2, pixels, compression=None)[0])
    assert decoded["image_id"] == 2
    dims, typed = decoded["data"]["threshold_1"].value
    assert list(dims) == [5, 7] and typed.tag == 70
    np.testing.assert_array_equal(np.frombuffer(typed.value, "<u4").reshape(5, 7), pixels)


# --------------------------------------------------------------------- specific errors


def test_specific_rejections() -> None:
    pixels = _pixels((5, 7), "uint16")
    good = v2.encode_image(1, 0, pixels)
    fields = cbor.loads(good[0]).value
    channel = fields["data"]["threshold_1"]

    def with_fields(**changes: Any) -> list[bytes]:
        out = dict(fields)
        out.update(changes)
        for key in [k for k, v in changes.items() if v is KeyError]:
            del out[key]
        return _message(out)

    def with_channel(value: Any) -> list[bytes]:
        return with_fields(data={"threshold_1": value})

    dims, typed = channel.value
    spec = typed.value.value
    _expect(Reason.PART_COUNT, [*good, b""])
    _expect(Reason.PART_COUNT, [])
    _expect(Reason.PART_COUNT, good[0])
    _expect(Reason.BAD_CBOR, [good[0][:-1]])
    _expect(Reason.BAD_CBOR, [good[0] + b"\x00"])
    _expect(Reason.BAD_CBOR, [b"\xd9\xd9\xf7" + b"\x81" * 500 + b"\x00"])
    _expect(Reason.BAD_CBOR, [b"\xd9\xd9\xf7\xa1\x64type\x5b" + b"\xff" * 8])
    _expect(Reason.BAD_CBOR, [object()])
    error = _expect(Reason.BAD_HEADER, [cbor2.dumps({"type": "end", "series_id": 1})])
    assert "55799" in error.detail
    _expect(Reason.BAD_HEADER, [cbor.dumps(Tag(55799, [1, 2]))])
    _expect(Reason.BAD_HEADER, with_fields(type=KeyError))
    _expect(Reason.BAD_HEADER, with_fields(type=5))
    _expect(Reason.UNKNOWN_TYPE, with_fields(type="series"))
    _expect(Reason.BAD_HEADER, _message({"type": "end", 1: 2, "series_id": 1}))
    _expect(Reason.BAD_HEADER, with_fields(series_id=-1))
    _expect(Reason.BAD_HEADER, with_fields(series_id="1"))
    _expect(Reason.BAD_HEADER, with_fields(image_id=1.0))
    _expect(Reason.BAD_HEADER, with_fields(image_id=True))
    _expect(Reason.BAD_HEADER, with_fields(data=KeyError))
    _expect(Reason.BAD_HEADER, with_fields(data={}))
    _expect(Reason.BAD_HEADER, with_fields(data={1: channel}))
    _expect(Reason.BAD_HEADER, with_channel(b"raw bytes"))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [dims])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [[5, 7, 1], typed])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [[5, -7], typed])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [[0, 7], Tag(69, b"")])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [[5, 7], Tag(69, "text")])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [[5, 7], Tag(999, b"")])))
    _expect(Reason.SIZE_MISMATCH, with_channel(Tag(40, [[5, 8], typed])))
    _expect(Reason.SIZE_MISMATCH, with_channel(Tag(40, [[5, 7], Tag(69, b"\0" * 69)])))
    _expect(Reason.SIZE_MISMATCH, with_channel(Tag(40, [[5, 7], Tag(70, b"\0" * 70)])))
    _expect(Reason.UNKNOWN_ENCODING, with_channel(Tag(40, [dims, Tag(69, Tag(56500, [
        "zstd", 2, spec[2]]))])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [dims, Tag(69, Tag(56500, [
        "bslz4", 4, spec[2]]))])))
    _expect(Reason.BAD_HEADER, with_channel(Tag(40, [dims, Tag(69, Tag(56500, [
        "bslz4", 2]))])))
    _expect(Reason.CORRUPT, with_channel(Tag(40, [dims, Tag(69, Tag(56500, [
        "bslz4", 2, b"\0" * 5]))])))
    start = cbor.loads(v2.encode_start(1, geometry=Geometry(5, 7))[0]).value
    _expect(Reason.BAD_HEADER, _message({**start, "pixel_mask": [1, 2]}))
    _expect(Reason.BAD_HEADER, _message({**start, "channels": "threshold_1"}))
    _expect(Reason.BAD_HEADER, _message({**start, "number_of_images": -5}))
    many_dims = {"t": Tag(40, [[1] * 100, Tag(64, b"\0")])}
    _expect(Reason.UNSUPPORTED, _message({**start, "pixel_mask": many_dims}))
    _expect(Reason.UNSUPPORTED, _message({**start, "user_data": many_dims}))
    _expect(Reason.UNSUPPORTED, _message({**start, "bit_depth_image": 12,
                                          "image_dtype": None}))


def test_encoder_argument_errors() -> None:
    with pytest.raises(ValueError, match="compression"):
        v2.encode_image(1, 0, np.zeros((2, 2), np.uint8), compression="zstd")
    with pytest.raises(ValueError, match="2-D"):
        v2.encode_image(1, 0, np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="channel"):
        v2.encode_image(1, 0, {})
    with pytest.raises(ValueError, match="typed-array"):
        v2.encode_image(1, 0, np.zeros((2, 2), np.complex64))


# ------------------------------------------------------------------------ fuzz corpus

_DROP = object()
_WRONG_VALUES: list[Any] = ["x", -1, 1.5, None, [], {}, True, 2**64 - 1, b"\0\1\2",
                            Tag(69, b"abc"), Tag(40, [[2, 2], Tag(69, b"")]), [1, 2, 3],
                            Tag(56500, ["bslz4", 2, b"\0" * 20]), Tag(0, 5)]


def _count(obj: Any) -> int:
    if isinstance(obj, dict):
        return 1 + sum(_count(v) for v in obj.values())
    if isinstance(obj, list):
        return 1 + sum(_count(v) for v in obj)
    if isinstance(obj, Tag):
        return 1 + _count(obj.value)
    return 1


def _replace(obj: Any, target: int, new: Callable[[Any], Any]) -> Any:
    counter = [0]

    def walk(node: Any) -> Any:
        index = counter[0]
        counter[0] += 1
        if index == target:
            return new(node)
        if isinstance(node, dict):
            items = {k: walk(v) for k, v in node.items()}
            return {k: v for k, v in items.items() if v is not _DROP}
        if isinstance(node, list):
            return [v for v in (walk(v) for v in node) if v is not _DROP]
        if isinstance(node, Tag):
            value = walk(node.value)
            return Tag(node.tag, None if value is _DROP else value)
        return node

    return walk(obj)


def _base_messages() -> list[list[bytes]]:
    geometry = Geometry(5, 7, "uint16")
    mask = np.zeros((5, 7), np.uint32)
    messages = [v2.encode_start(1, geometry=geometry, channels=("t1", "t2"),
                                pixel_mask={"t1": mask, "t2": mask + 1},
                                extra={"flatfield": np.ones((5, 7), np.float32),
                                       "countrate_correction_lookup_table":
                                           np.arange(10, dtype=np.uint32)}),
                v2.encode_end(1)]
    for dtype in INT_DTYPES:
        for compression in COMPRESSIONS:
            data = {"t1": _pixels((5, 7), dtype), "t2": _pixels((5, 7), dtype, 1)}
            messages.append(v2.encode_image(1, 2, data, compression=compression))
    return messages


def _mutate(parts: list[bytes], rng: np.random.Generator) -> list[bytes]:
    blob = parts[0]
    kind = int(rng.integers(9))
    if kind == 0:  # truncate
        return [blob[: int(rng.integers(len(blob)))]]
    if kind == 1:  # flip bytes
        bad = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(len(bad)))] = int(rng.integers(256))
        return [bytes(bad)]
    if kind == 2:  # insert bytes
        pos = int(rng.integers(len(blob)))
        return [blob[:pos] + rng.bytes(int(rng.integers(1, 9))) + blob[pos:]]
    if kind == 3:  # random message, or wrong part count
        return [rng.bytes(int(rng.integers(0, 80)))] if rng.random() < 0.7 else \
            [blob, blob][: int(rng.integers(0, 3)) or 2]
    fields = cbor.loads(blob)
    target = int(rng.integers(1, _count(fields)))
    if kind in (4, 5):  # a value of the wrong type somewhere
        value = _WRONG_VALUES[int(rng.integers(len(_WRONG_VALUES)))]
        fields = _replace(fields, target, lambda _: value)
    elif kind == 6:  # drop a field / element
        fields = _replace(fields, target, lambda _: _DROP)
    elif kind == 7:  # perturb integers (dims, ids, element sizes)
        fields = _replace(fields, target, lambda v: v + int(rng.integers(1, 3))
                          if isinstance(v, int) and not isinstance(v, bool) else v)
    elif rng.random() < 0.5:  # another message type name
        fields = _replace(fields, 2, lambda v: _pick(rng, ["series", "images", "stop", ""]))
    else:  # another compression algorithm, in every channel
        algorithm = _pick(rng, ["zstd", "", "bslz4", "lz4", "LZ4"])
        for index in range(_count(fields)):
            fields = _replace(fields, index, lambda v: algorithm
                              if isinstance(v, str) and v in ("bslz4", "lz4") else v)
    return [cbor.dumps(fields)]


def test_fuzz_corpus_only_decode_errors() -> None:
    rng = np.random.default_rng(20240502)
    reasons: Counter[Reason] = Counter()
    ok = 0
    base = _base_messages()
    for n in range(900):
        parts = _mutate(base[n % len(base)], rng)
        try:
            message = v2.decode(parts)
            if isinstance(message, Image):
                assert message.geometry.rows >= 1
                for payload in message.channels.values():
                    assert decode_pixels(payload).shape == payload.shape
        except DecodeError as exc:
            assert isinstance(exc.reason, Reason)
            reasons[exc.reason] += 1
        else:
            ok += 1
    expected = {Reason.BAD_CBOR, Reason.BAD_HEADER, Reason.UNKNOWN_TYPE, Reason.PART_COUNT,
                Reason.UNKNOWN_ENCODING, Reason.SIZE_MISMATCH, Reason.CORRUPT}
    assert expected <= set(reasons), reasons
    assert ok > 50


def test_random_documents_in_a_valid_envelope() -> None:
    """Random CBOR (random tags included) as field values: only DecodeError escapes."""
    rng = np.random.default_rng(77)
    reasons: Counter[Reason] = Counter()
    geometry = Geometry(5, 7)
    start = cbor.loads(v2.encode_start(1, geometry=geometry)[0]).value
    keys = ["pixel_mask", "flatfield", "channels", "image_size_x", "image_dtype", "user_data",
            "countrate_correction_lookup_table", "number_of_images", "series_id"]
    for n in range(300):
        doc = _to_ours(_random_doc(rng))
        if n % 3 == 0:
            fields = {**start, keys[int(rng.integers(len(keys)))]: doc}
        elif n % 3 == 1:
            fields = _image_fields({"c": doc})
        else:
            fields = _image_fields({"c": Tag(40, [[5, 7], Tag(69, doc)])})
        try:
            message = v2.decode(_message(fields))
            if isinstance(message, Image):
                decode_pixels(message.payload)
        except DecodeError as exc:
            reasons[exc.reason] += 1
    assert Reason.BAD_HEADER in reasons
