"""The real EIGER1 1M Stream V1 recording (tests/data/eiger_legacy_dump.zip) decodes fully,
and the V1 encoder reproduces it byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from actors.record.dumps import iter_dump_messages
from actors.wire import compression as comp
from actors.wire import dectris_v1 as v1
from actors.wire.model import Encoding, Geometry, Image, Protocol, SeriesEnd, SeriesStart
from actors.wire.pixels import decode_image

DUMP = Path(__file__).resolve().parents[1] / "data" / "eiger_legacy_dump.zip"
ROWS, COLS = 1065, 1030


@pytest.fixture(scope="module")
def messages() -> list[list[bytes]]:
    return list(iter_dump_messages(DUMP))


def test_recording_has_header_and_nine_images(messages: list[list[bytes]]) -> None:
    decoded = [v1.decode(m) for m in messages]
    assert len(decoded) == 10
    assert isinstance(decoded[0], SeriesStart)
    assert all(isinstance(m, Image) for m in decoded[1:])
    assert not any(isinstance(m, SeriesEnd) for m in decoded)  # none was recorded
    assert [m.frame for m in decoded[1:] if isinstance(m, Image)] == list(range(9))


def test_series_header(messages: list[list[bytes]]) -> None:
    assert len(messages[0]) == 9
    start = v1.decode(messages[0])
    assert isinstance(start, SeriesStart)
    assert (start.protocol, start.series_id) == (Protocol.DECTRIS_V1, 14)
    assert start.geometry == Geometry(ROWS, COLS, "uint32")
    assert start.number_of_images == 100_000
    meta = start.metadata
    assert meta["header_detail"] == "all"
    assert meta["appendix"] == '{"filename": "", "rotate": 0}'
    assert meta["description"] == "Dectris EIGER1 Si 1M"
    assert meta["number_of_excluded_pixels"] == 38129
    assert meta["threshold_energy"] == 4000.0
    arrays = start.arrays
    assert arrays["flatfield"].shape == (ROWS, COLS) and arrays["flatfield"].dtype == np.float32
    assert arrays["pixel_mask"].shape == (ROWS, COLS) and arrays["pixel_mask"].dtype == np.uint32
    assert arrays["countrate_table"].shape == (4000, 2)
    assert arrays["countrate_table"].dtype == np.float32
    assert 37_000 <= np.count_nonzero(arrays["pixel_mask"]) <= 39_500
    # the table's first column is the true rate, the second the measured one
    assert arrays["countrate_table"][1, 0] == 1125.0
    assert np.all(arrays["countrate_table"][:, 1] <= arrays["countrate_table"][:, 0])


def test_images_decode_and_hashes_verify(messages: list[list[bytes]]) -> None:
    for parts in messages[1:]:
        assert len(parts) == 4
        head = json.loads(parts[0])
        assert head["hash"] == hashlib.md5(parts[1]).hexdigest()
        image = v1.decode(parts)  # would raise BAD_HASH on a mismatch
        assert isinstance(image, Image)
        assert image.series_id == 14
        payload = image.payload
        assert (payload.encoding, payload.shape, payload.dtype) == \
            (Encoding.BSLZ4, (ROWS, COLS), "uint32")
        pixels = decode_image(image)
        assert pixels.shape == (ROWS, COLS) and pixels.dtype == np.uint32
        masked = int(np.count_nonzero(pixels == 0xFFFFFFFF))
        assert 37_000 <= masked <= 39_500
        assert image.header["stop_time"] - image.header["start_time"] > 0
        np.testing.assert_array_equal(
            comp.bslz4_decompress_fallback(payload.data, "uint32", ROWS * COLS), pixels.ravel())


def test_masked_pixels_follow_the_pixel_mask(messages: list[list[bytes]]) -> None:
    start = v1.decode(messages[0])
    image = v1.decode(messages[1])
    assert isinstance(start, SeriesStart) and isinstance(image, Image)
    pixels = decode_image(image)
    mask = start.arrays["pixel_mask"] != 0
    assert np.all(pixels[mask] == 0xFFFFFFFF)


def test_encoder_reproduces_the_recording(messages: list[list[bytes]]) -> None:
    """Header and images re-encoded from their decoded content are byte-identical."""
    start = v1.decode(messages[0])
    assert isinstance(start, SeriesStart) and start.geometry is not None
    config = {k: v for k, v in start.metadata.items() if k not in ("header_detail", "appendix")}
    header = v1.encode_header(14, detail="all", geometry=start.geometry, config=config,
                              pixel_mask=start.arrays["pixel_mask"],
                              flatfield=start.arrays["flatfield"],
                              countrate_table=start.arrays["countrate_table"],
                              appendix=str(start.metadata["appendix"]))
    assert header == messages[0]
    for parts in messages[1:]:
        image = v1.decode(parts)
        assert isinstance(image, Image)
        h = image.header
        encoded = v1.encode_image(14, image.frame, decode_image(image),
                                  start_time=h["start_time"], stop_time=h["stop_time"],
                                  real_time=h["real_time"])
        assert encoded == parts
