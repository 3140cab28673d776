"""sls wire format: exact header text, round trips, rejection reasons."""

import json

import numpy as np
import pytest

from actors.wire import sls
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Encoding, Image, Protocol, SeriesEnd
from actors.wire.pixels import decode_pixels


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("shape", [(400, 400), (512, 1024), (7, 13)])
def test_round_trip_exact(dtype: str, version: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    img = rng.integers(0, info.max, size=shape, endpoint=True, dtype=dtype)
    parts = sls.encode_image(17, img, version=version, total_frames=100)
    msg = sls.decode(parts)
    assert isinstance(msg, Image)
    assert msg.protocol is Protocol.SLS and msg.frame == 17
    assert msg.payload.encoding is Encoding.RAW and msg.payload.shape == shape
    out = decode_pixels(msg.payload)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, img)
    assert msg.header["jsonversion"] == version
    assert ("rx_roi" in msg.header) == (version >= 5)
    assert ("detSpec1" in msg.header) == (version >= 5)


def test_header_text_matches_sls_sendheader_format() -> None:
    img = np.zeros((400, 400), np.uint16)
    header = bytes(sls.encode_image(0, img, total_frames=3)[0])
    text = header.decode()
    assert text.startswith('{"jsonversion":5, "bitmode":16, "fileIndex":0, "detshape":[1, 1], '
                           '"shape":[400, 400], "size":320000, "acqIndex":1, "frameIndex":0, '
                           '"progress":33.3333, "fname":"run", "data":1, "completeImage":1, ')
    assert text.endswith(', "rx_roi":[0, 399, 0, 399]}\n')
    assert json.loads(text)["detType"] == 5


def test_add_json_header_is_parsed() -> None:
    img = np.zeros((4, 4), np.uint16)
    parts = sls.encode_image(0, img, add_json_header={"emin": "500", "mode": "pump"})
    msg = sls.decode(parts)
    assert isinstance(msg, Image)
    assert msg.header["addJsonHeader"] == {"emin": "500", "mode": "pump"}


def test_payload_is_zero_copy() -> None:
    img = np.arange(16, dtype=np.uint16).reshape(4, 4)
    parts = sls.encode_image(0, img)
    buf = bytearray(parts[1])
    msg = sls.decode([parts[0], memoryview(buf)])
    assert isinstance(msg, Image)
    out = decode_pixels(msg.payload)
    buf[0] = 99
    assert out[0, 0] == 99


@pytest.mark.parametrize("version", [4, 5])
def test_dummy_header_ends_the_series(version: int) -> None:
    parts = sls.encode_end(version=version)
    assert len(parts) == 1
    msg = sls.decode(parts)
    assert isinstance(msg, SeriesEnd)
    assert json.loads(bytes(parts[0]))["data"] == 0


def _reason(parts: list[bytes]) -> Reason:
    with pytest.raises(DecodeError) as info:
        sls.decode(parts)
    return info.value.reason


def test_rejections_name_their_reason() -> None:
    img = np.zeros((4, 4), np.uint16)
    header, payload = (bytes(p) for p in sls.encode_image(0, img))
    h = json.loads(header)
    assert _reason([header]) is Reason.PART_COUNT
    assert _reason([header, payload, payload]) is Reason.PART_COUNT
    assert _reason([sls.encode_end()[0], payload]) is Reason.PART_COUNT
    assert _reason([b"{not json", payload]) is Reason.BAD_JSON
    assert _reason([b"[1, 2]", payload]) is Reason.BAD_JSON
    assert _reason([b"\xff\xfe", payload]) is Reason.BAD_JSON
    assert _reason([header, payload[:-2]]) is Reason.SIZE_MISMATCH
    assert _reason([json.dumps({**h, "bitmode": 4}).encode(), payload]) is Reason.UNSUPPORTED
    assert _reason([json.dumps({**h, "shape": [4]}).encode(), payload]) is Reason.BAD_HEADER
    assert _reason([json.dumps({**h, "frameIndex": -1}).encode(), payload]) is Reason.BAD_HEADER
    assert _reason([json.dumps({**h, "frameIndex": "3"}).encode(), payload]) is Reason.BAD_HEADER
    assert _reason([json.dumps({**h, "data": True}).encode(), payload]) is Reason.BAD_HEADER
    bad_size = {**h, "size": 64, "shape": [4, 2]}
    assert _reason([json.dumps(bad_size).encode(), payload]) is Reason.SIZE_MISMATCH
    incomplete = json.dumps({**h, "completeImage": 0}).encode()
    assert _reason([incomplete, payload]) is Reason.INCOMPLETE
    assert isinstance(sls.decode([incomplete, payload], accept_incomplete=True), Image)
