"""DECTRIS Stream V1: round trips, byte-faithful encoding, rejection of malformed input."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from actors.wire import dectris_v1 as v1
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Encoding, Geometry, Image, Protocol, SeriesEnd, SeriesStart
from actors.wire.pixels import decode_image, decode_pixels

SHAPES = [(7, 13), (1, 1), (13, 7), (1065, 1030)]
_STRING = re.compile(rb'"(?:\\.|[^"\\])*"')


def _pixels(shape: tuple[int, int], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.poisson(3.0, shape).astype(dtype)
    arr.flat[:: 101] = np.iinfo(dtype).max
    return arr


def _expect(reason: Reason, parts: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        v1.decode(parts)
    assert info.value.reason is reason, info.value
    return info.value


def _rehash(parts: list[bytes]) -> list[bytes]:
    """Recompute part 1's MD5 after part 2 was changed."""
    head = json.loads(parts[0])
    head["hash"] = hashlib.md5(parts[1]).hexdigest()
    return [v1.dumps(head), *parts[1:]]


def _with_field(parts: list[bytes], index: int, key: str, value: Any) -> list[bytes]:
    obj = json.loads(parts[index])
    if value is KeyError:
        obj.pop(key, None)
    else:
        obj[key] = value
    out = list(parts)
    out[index] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return _rehash(out) if index == 1 and len(out) >= 4 else out


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("encoding", [None, "<", "lz4<", "bs"])
@pytest.mark.parametrize("shape", SHAPES)
def test_image_round_trip(dtype: str, encoding: str | None, shape: tuple[int, int]) -> None:
    pixels = _pixels(shape, dtype)
    if encoding == "bs":
        encoding = f"bs{8 * pixels.itemsize}-lz4<"
    parts = v1.encode_image(14, 3, pixels, encoding=encoding, start_time=10, stop_time=30,
                            real_time=20)
    assert len(parts) == 4
    image = v1.decode(parts)
    assert isinstance(image, Image)
    assert (image.protocol, image.series_id, image.frame) == (Protocol.DECTRIS_V1, 14, 3)
    expected = {None: Encoding.BSLZ4, "<": Encoding.RAW, "lz4<": Encoding.LZ4}.get(
        encoding, Encoding.BSLZ4)
    payload = image.channels["default"]
    assert (payload.encoding, payload.shape, payload.dtype) == (expected, shape, dtype)
    assert image.geometry == Geometry(shape[0], shape[1], dtype)
    assert (image.header["start_time"], image.header["stop_time"],
            image.header["real_time"]) == (10, 30, 20)
    assert image.header["shape"] == [shape[1], shape[0]]
    out = decode_image(image)
    assert out.shape == shape and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, pixels)


def test_image_appendix_and_misspelled_htype() -> None:
    pixels = _pixels((7, 13), "uint16")
    parts = v1.encode_image(1, 0, pixels, appendix='{"sample":"lysozyme"}')
    assert len(parts) == 5
    image = v1.decode(parts)
    assert isinstance(image, Image) and image.header["appendix"] == '{"sample":"lysozyme"}'
    misspelled = _with_field(parts, 1, "htype", "dimaged-1.0")
    np.testing.assert_array_equal(decode_image(v1.decode(misspelled)), pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("detail", ["none", "basic", "all"])
@pytest.mark.parametrize("appendix", [None, '{"filename": "", "rotate": 0}'])
def test_header_round_trip(detail: str, appendix: str | None) -> None:
    geometry = Geometry(13, 7, "uint32")
    rng = np.random.default_rng(5)
    mask = (rng.random(geometry.shape) < 0.1).astype(np.uint32)
    flat = rng.random(geometry.shape).astype(np.float32)
    table = rng.random((4000, 2)).astype(np.float32)
    parts = v1.encode_header(9, detail=detail, geometry=geometry,
                             config={"nimages": 5, "ntrigger": 3, "photon_energy": 12400.0},
                             pixel_mask=mask, flatfield=flat, countrate_table=table,
                             appendix=appendix)
    assert len(parts) == v1.HEADER_PARTS[detail] + (appendix is not None)
    start = v1.decode(parts)
    assert isinstance(start, SeriesStart)
    assert (start.protocol, start.series_id) == (Protocol.DECTRIS_V1, 9)
    assert start.metadata["header_detail"] == detail
    assert start.metadata.get("appendix") == appendix
    if detail == "none":
        assert start.geometry is None and start.number_of_images is None
        assert set(start.metadata) <= {"header_detail", "appendix"}
    else:
        assert start.geometry == geometry
        assert start.number_of_images == 15
        assert start.metadata["photon_energy"] == 12400.0
        assert start.metadata["number_of_excluded_pixels"] == int(mask.sum())
        for key in ("x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image",
                    "nimages", "ntrigger", "count_time", "frame_time", "threshold_energy"):
            assert key in start.metadata
    if detail == "all":
        assert set(start.arrays) == {"flatfield", "pixel_mask", "countrate_table"}
        np.testing.assert_array_equal(start.arrays["pixel_mask"], mask)
        np.testing.assert_array_equal(start.arrays["flatfield"], flat)
        np.testing.assert_array_equal(start.arrays["countrate_table"], table)
        assert start.arrays["countrate_table"].shape == (4000, 2)
        assert all(a.flags.writeable and a.flags.c_contiguous for a in start.arrays.values())
    else:
        assert start.arrays == {}


def test_header_all_defaults() -> None:
    geometry = Geometry(7, 13, "uint16")
    start = v1.decode(v1.encode_header(2, detail="all", geometry=geometry))
    assert isinstance(start, SeriesStart)
    assert start.arrays["flatfield"].shape == (7, 13)
    assert start.arrays["flatfield"].dtype == np.float32
    assert start.arrays["pixel_mask"].dtype == np.uint32 and not start.arrays["pixel_mask"].any()
    table = start.arrays["countrate_table"]
    assert table.shape == (1001, 2) and np.all(table[:, 1] <= table[:, 0])


def test_end_round_trip() -> None:
    end = v1.decode(v1.encode_end(14))
    assert end == SeriesEnd(Protocol.DECTRIS_V1, 14,
                            {"htype": "dseries_end-1.0", "series": 14})


def test_parts_as_memoryviews_are_not_copied() -> None:
    pixels = _pixels((7, 13), "uint32")
    parts = v1.encode_image(1, 0, pixels, encoding="<")
    frames = [bytearray(p) for p in parts]  # like zmq.Frame buffers
    image = v1.decode([memoryview(f) for f in frames])
    assert isinstance(image, Image)
    data = image.payload.data
    assert isinstance(data, memoryview)
    assert np.shares_memory(np.frombuffer(data, np.uint8), np.frombuffer(frames[2], np.uint8))
    assert np.shares_memory(decode_pixels(image.payload), np.frombuffer(frames[2], np.uint8))
    # compressed payloads are kept as views as well
    compressed = [bytearray(p) for p in v1.encode_image(1, 0, pixels)]
    image = v1.decode(tuple(compressed))
    assert isinstance(image, Image)
    assert np.shares_memory(np.frombuffer(image.payload.data, np.uint8),
                            np.frombuffer(compressed[2], np.uint8))


# -------------------------------------------------------------------- byte faithfulness


def test_exact_bytes_of_fixed_messages() -> None:
    geometry = Geometry(1065, 1030, "uint32")
    assert v1.encode_end(14) == [b'{"htype":"dseries_end-1.0","series":14}']
    assert v1.encode_header(14, detail="all", geometry=geometry)[0] == \
        b'{"header_detail":"all","htype":"dheader-1.0","series":14}'
    assert v1.encode_header(14, detail="none", geometry=geometry) == \
        [b'{"header_detail":"none","htype":"dheader-1.0","series":14}']
    parts = v1.encode_image(14, 0, np.zeros((1065, 1030), np.uint32), start_time=1,
                            stop_time=3, real_time=2)
    assert parts[1] == (b'{"encoding":"bs32-lz4<","htype":"dimage_d-1.0","shape":[1030,1065],'
                        b'"size":%d,"type":"uint32"}' % len(parts[2]))
    assert parts[3] == b'{"htype":"dconfig-1.0","real_time":2,"start_time":1,"stop_time":3}'


def _assert_compact_sorted(part: bytes) -> None:
    pairs: list[list[str]] = []
    obj = json.loads(part, object_pairs_hook=lambda kv: pairs.append([k for k, _ in kv]) or
                     dict(kv))
    assert isinstance(obj, dict)
    assert all(keys == sorted(keys) for keys in pairs)
    assert not re.search(rb"\s", _STRING.sub(b'""', part)), part[:200]


def test_every_json_part_is_compact_and_sorted() -> None:
    geometry = Geometry(7, 13, "uint16")
    messages = [v1.encode_header(1, detail="all", geometry=geometry, appendix="x"),
                v1.encode_image(1, 0, _pixels((7, 13), "uint16"), appendix="{}"),
                v1.encode_end(1)]
    json_parts = [messages[0][i] for i in (0, 1, 2, 4, 6)] + \
                 [messages[1][i] for i in (0, 1, 3)] + messages[2]
    for part in json_parts:
        _assert_compact_sorted(part)
    # integer-only parts are exactly Python's compact sorted JSON
    for part in [messages[0][0], messages[0][2], *messages[1][:2], messages[1][3], *messages[2]]:
        assert part == json.dumps(json.loads(part), sort_keys=True,
                                  separators=(",", ":")).encode()


def test_md5_rule() -> None:
    parts = v1.encode_image(3, 7, _pixels((7, 13), "uint16"))
    digest = json.loads(parts[0])["hash"]
    assert digest == hashlib.md5(parts[1]).hexdigest()
    assert digest != hashlib.md5(parts[2]).hexdigest()
    upper = _with_field(parts, 0, "hash", digest.upper())
    assert isinstance(v1.decode(upper), Image)  # hex case does not matter
    no_hash = _with_field(parts, 0, "hash", KeyError)
    assert isinstance(v1.decode(no_hash), Image)  # hash is optional


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0.0"), (8000.0, "8000.0"), (0.000075, "0.000075"), (0.00045, "0.00045"),
    (7.540540540540541e-6, "7.540540540540541e-6"), (1.0000029000000001, "1.0000029000000001"),
    (0.0013240272897398063, "0.0013240272897398063"), (1e16, "1e16"), (-2.5e-300, "-2.5e-300"),
    (1e-5, "0.00001"), (1e-6, "1e-6"), (123.5, "123.5"), (-0.0, "-0.0"),
    (float("nan"), "null"),
])
def test_float_layout_matches_firmware(value: float, text: str) -> None:
    assert v1.format_float(value) == text
    if text != "null":
        assert float(text) == value


def test_dumps_types() -> None:
    assert v1.dumps({"b": [True, None, np.uint16(3), np.float32(0.5)], "a": "é\n"}) == \
        '{"a":"é\\n","b":[true,null,3,0.5]}'.encode()
    with pytest.raises(TypeError):
        v1.dumps({"a": object()})


# --------------------------------------------------------------------- specific errors


def _image_parts() -> list[bytes]:
    return v1.encode_image(1, 2, _pixels((7, 13), "uint16"))


def test_specific_rejections() -> None:
    parts = _image_parts()
    _expect(Reason.BAD_HASH, _with_field(parts, 0, "hash", "0" * 32))
    _expect(Reason.BAD_HASH, [parts[0], parts[1].replace(b"uint16", b"uint16 "), *parts[2:]])
    _expect(Reason.UNKNOWN_ENCODING, _with_field(parts, 1, "encoding", "bs64-lz4<"))
    _expect(Reason.UNKNOWN_ENCODING, _with_field(parts, 1, "encoding", "lz4>"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "encoding", "bs32-lz4<"))  # uint16
    _expect(Reason.SIZE_MISMATCH, _with_field(parts, 1, "size", len(parts[2]) + 1))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "size", -1))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "shape", [13, -7]))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "shape", [13]))
    _expect(Reason.UNSUPPORTED, _with_field(parts, 1, "type", "complex64"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "htype", "dimage-1.0"))
    _expect(Reason.SIZE_MISMATCH, _with_field(parts, 1, "shape", [13, 8]))  # bslz4 header
    raw = v1.encode_image(1, 2, _pixels((7, 13), "uint16"), encoding="<")
    _expect(Reason.SIZE_MISMATCH, _with_field(raw, 1, "shape", [13, 8]))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "frame", -1))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "frame", 1.0))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "series", True))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "hash", 5))
    _expect(Reason.BAD_HEADER, _with_field(parts, 3, "htype", "dconfig-2.0"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 3, "real_time", "soon"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "htype", KeyError))
    _expect(Reason.UNKNOWN_TYPE, _with_field(parts, 0, "htype", "dimage-2.0"))
    _expect(Reason.PART_COUNT, parts[:3])
    _expect(Reason.PART_COUNT, [*parts, b"{}", b"{}"])
    _expect(Reason.PART_COUNT, [])
    _expect(Reason.PART_COUNT, parts[0])
    _expect(Reason.PART_COUNT, [*v1.encode_end(1), b""])
    _expect(Reason.BAD_JSON, [b"{", *parts[1:]])
    _expect(Reason.BAD_JSON, [b"[1,2]", *parts[1:]])
    _expect(Reason.BAD_JSON, [b"\xff\xfe\x00", *parts[1:]])
    _expect(Reason.BAD_JSON, [b"[" * 100_000 + b"]" * 100_000])  # deep nesting
    _expect(Reason.BAD_JSON, _rehash([parts[0], b"null", *parts[2:]]))
    _expect(Reason.BAD_HEADER, [parts[0], parts[1], 12345, parts[3]])
    compressed = [*parts[:2], parts[2][:8], parts[3]]  # shorter than its 12-byte header
    _expect(Reason.CORRUPT, _rehash(_with_field(compressed, 1, "size", 8)))


def test_header_rejections() -> None:
    geometry = Geometry(7, 13, "uint16")
    parts = v1.encode_header(1, detail="all", geometry=geometry)
    _expect(Reason.PART_COUNT, parts[:5])
    _expect(Reason.PART_COUNT, v1.encode_header(1, detail="basic", geometry=geometry)[:1])
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "header_detail", "most"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 0, "series", "1"))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "x_pixels_in_detector", 0))
    _expect(Reason.BAD_HEADER, _with_field(parts, 1, "nimages", "many"))
    _expect(Reason.UNSUPPORTED, _with_field(parts, 1, "bit_depth_image", 12))
    _expect(Reason.BAD_JSON, [parts[0], b"[]", *parts[2:]])
    _expect(Reason.BAD_HEADER, _with_field(parts, 2, "htype", "dpixelmask-1.0"))
    _expect(Reason.SIZE_MISMATCH, [*parts[:3], parts[3][:-4], *parts[4:]])
    _expect(Reason.UNSUPPORTED, _with_field(parts, 4, "type", "string"))
    no_geometry = v1.decode(_with_field(parts, 1, "bit_depth_image", KeyError))
    assert isinstance(no_geometry, SeriesStart) and no_geometry.geometry is None
    _expect(Reason.BAD_HEADER, _with_field(v1.encode_end(1), 0, "series", None))


def test_encoder_argument_errors() -> None:
    geometry = Geometry(7, 13, "uint16")
    with pytest.raises(ValueError, match="detail"):
        v1.encode_header(1, detail="full", geometry=geometry)
    with pytest.raises(ValueError, match="pixel_mask"):
        v1.encode_header(1, detail="all", geometry=geometry, pixel_mask=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        v1.encode_image(1, 0, np.zeros(5, np.uint16))
    with pytest.raises(ValueError, match="encode"):
        v1.encode_image(1, 0, np.zeros((2, 2), np.uint16), encoding="bs32-lz4<")
    with pytest.raises(ValueError, match="dtype"):
        v1.encode_image(1, 0, np.zeros((2, 2), np.complex64))


# ------------------------------------------------------------------------ fuzz corpus

_WRONG_VALUES: list[Any] = ["x", "", -1, 1.5, None, [], {}, True, 2**70, [1, 2, 3], {"a": 1}]


def _base_messages() -> list[list[bytes]]:
    geometry = Geometry(7, 13, "uint16")
    messages = [v1.encode_header(1, detail=d, geometry=geometry, appendix=a)
                for d in ("none", "basic", "all") for a in (None, "{}")]
    for dtype in ("uint8", "uint16", "uint32"):
        pixels = _pixels((7, 13), dtype)
        for encoding in (None, "<", "lz4<"):
            messages.append(v1.encode_image(1, 4, pixels, encoding=encoding))
    messages.append(v1.encode_image(1, 5, _pixels((5, 3), "uint32"), appendix="{}"))
    messages.append(v1.encode_end(1))
    return messages


def _mutate(parts: list[bytes], rng: np.random.Generator) -> list[bytes]:
    try:
        return _mutate_once(list(parts), rng)
    except (ValueError, AttributeError, TypeError):  # JSON edit of an already broken part
        return parts


def _mutate_once(parts: list[bytes], rng: np.random.Generator) -> list[bytes]:
    i = int(rng.integers(len(parts)))
    kind = int(rng.integers(10))
    if kind == 0:  # truncate a part
        parts[i] = parts[i][: int(rng.integers(len(parts[i]) + 1))]
    elif kind == 1:  # flip bytes
        bad = bytearray(parts[i])
        for _ in range(int(rng.integers(1, 4))):
            if bad:
                bad[int(rng.integers(len(bad)))] = int(rng.integers(256))
        parts[i] = bytes(bad)
    elif kind == 2:  # drop a part
        del parts[i]
    elif kind == 3:  # extra part
        parts.insert(i, rng.bytes(int(rng.integers(0, 40))))
    elif kind in (4, 5):  # a JSON field gets a wrong type (re-hashed or not)
        obj = json.loads(parts[i])
        if isinstance(obj, dict) and obj:
            key = sorted(obj)[int(rng.integers(len(obj)))]
            obj[key] = _WRONG_VALUES[int(rng.integers(len(_WRONG_VALUES)))]
            parts[i] = json.dumps(obj, sort_keys=True).encode()
            if kind == 5 and i == 1 and len(parts) >= 4:
                parts = _rehash(parts)
    elif kind == 6:  # random message
        parts = [rng.bytes(int(rng.integers(0, 60))) for _ in range(int(rng.integers(0, 6)))]
    elif kind == 7 and len(parts) >= 4:  # wrong hash
        parts = _with_field(parts, 0, "hash", hashlib.md5(rng.bytes(8)).hexdigest())
    elif kind == 8 and len(parts) >= 4:  # unknown / mismatched encoding
        names = ["bs64-lz4<", "lz4>", "zstd", "", "bs8-lz4<", "<", "lz4<", "bs16-lz4<"]
        parts = _with_field(parts, 1, "encoding", names[int(rng.integers(len(names)))])
    elif kind == 9 and len(parts) >= 4:  # wrong size or shape
        key = ["size", "shape"][int(rng.integers(2))]
        value: Any = int(rng.integers(0, 400)) if key == "size" else \
            [int(rng.integers(1, 20)), int(rng.integers(1, 20))]
        parts = _with_field(parts, 1, key, value)
    return parts


def test_fuzz_corpus_only_decode_errors() -> None:
    rng = np.random.default_rng(20240501)
    reasons: Counter[Reason] = Counter()
    ok = 0
    base = _base_messages()
    for n in range(800):
        parts = _mutate(base[n % len(base)], rng)
        if rng.random() < 0.2:
            parts = _mutate(parts, rng)
        try:
            message = v1.decode(parts)
            if isinstance(message, Image):
                assert message.geometry.rows >= 1
                for payload in message.channels.values():
                    out = decode_pixels(payload)
                    assert out.shape == payload.shape
        except DecodeError as exc:
            assert isinstance(exc.reason, Reason)
            reasons[exc.reason] += 1
        else:
            ok += 1
    expected = {Reason.BAD_HASH, Reason.UNKNOWN_ENCODING, Reason.SIZE_MISMATCH,
                Reason.PART_COUNT, Reason.BAD_JSON, Reason.BAD_HEADER, Reason.CORRUPT,
                Reason.UNKNOWN_TYPE}
    assert expected <= set(reasons), reasons
    assert ok > 50  # plenty of mutations are harmless (e.g. a flipped digit in a time)


def test_garbage_never_escapes() -> None:
    rng = np.random.default_rng(7)
    garbage: list[Callable[[], Any]] = [
        lambda: [rng.bytes(int(rng.integers(0, 100)))],
        lambda: [b'{"htype":"dimage-1.0","frame":0,"series":0}', rng.bytes(30),
                 rng.bytes(30), rng.bytes(30)],
        lambda: [b'{"htype":"dheader-1.0","header_detail":"all","series":0}',
                 *[rng.bytes(20) for _ in range(7)]],
        lambda: [json.dumps({"htype": "dheader-1.0", "header_detail": "basic",
                             "series": 1}).encode(),
                 json.dumps({k: _WRONG_VALUES[int(rng.integers(len(_WRONG_VALUES)))]
                             for k in ("x_pixels_in_detector", "y_pixels_in_detector",
                                       "bit_depth_image", "nimages", "ntrigger")}).encode()],
    ]
    for n in range(400):
        try:
            v1.decode(garbage[n % len(garbage)]())
        except DecodeError as exc:
            assert isinstance(exc.reason, Reason)
