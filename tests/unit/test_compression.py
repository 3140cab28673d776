"""bslz4 / lz4-h5 / bare lz4 codecs (C and NumPy paths) and decode_pixels."""

from __future__ import annotations

import importlib.util
import io
import struct
import sys
from collections.abc import Callable
from typing import Any

import bitshuffle
import h5py
import hdf5plugin
import numpy as np
import pytest

from actors.wire import compression as comp
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Encoding, Image, Payload, Protocol
from actors.wire.pixels import decode_image, decode_pixels

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int16", "float32"]
# multiples of the default block and not, partial blocks, verbatim trailers, tiny, empty
SIZES = [0, 1, 5, 7, 8, 9, 63, 1024, 4095, 4096, 4097, 8192, 8200, 8203, 20001]
DECOMPRESSORS: list[Callable[[Any, str, int], np.ndarray]] = [
    comp.bslz4_decompress, comp.bslz4_decompress_fallback]


def _data(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Detector-like data: mostly small counts, a few saturated pixels."""
    rng = np.random.default_rng(seed)
    arr = rng.poisson(2.0, n).astype(dtype)
    if n:
        arr[:: 97] = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else 1e30
    return arr


def _reference_bitshuffle(block: np.ndarray) -> bytes:
    """protocols.md §3.1, literally: unpackbits per element byte, transpose, packbits."""
    m, s = block.size, block.itemsize
    bits = np.unpackbits(block.view(np.uint8).reshape(m, s), axis=1, bitorder="little")
    return np.packbits(bits.T, axis=1, bitorder="little").tobytes()


# ------------------------------------------------------------------------------ bslz4


def test_c_library_in_use() -> None:
    assert comp.HAVE_BITSHUFFLE
    assert comp.C_DECOMPRESS_SAFE  # the bundled LZ4 is new enough for the fast path


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_bslz4_round_trip_both_paths(dtype: str, n: int) -> None:
    arr = _data(n, dtype, seed=n)
    c_blob = comp.bslz4_compress(arr)
    np_blob = comp.bslz4_compress_fallback(arr)
    assert c_blob[:12] == np_blob[:12] == struct.pack(">QI", arr.nbytes,
                                                      comp._default_block(arr.itemsize)
                                                      * arr.itemsize)
    for blob in (c_blob, np_blob):
        for decompress in DECOMPRESSORS:
            out = decompress(blob, dtype, n)
            assert out.dtype == np.dtype(dtype) and out.shape == (n,)
            assert out.flags.writeable
            np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("block", [8, 16, 128, 2048])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float64"])
def test_bslz4_explicit_block_sizes(block: int, dtype: str) -> None:
    arr = _data(3 * block + 21, dtype)
    for blob in (comp.bslz4_compress(arr, block), comp.bslz4_compress_fallback(arr, block)):
        assert struct.unpack(">I", blob[8:12])[0] == block * arr.itemsize
        for decompress in DECOMPRESSORS:
            np.testing.assert_array_equal(decompress(blob, dtype, arr.size), arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("m", [8, 64, 1000, 4096])
def test_numpy_bit_transpose_matches_reference_and_c(dtype: str, m: int) -> None:
    block = _data(m, dtype, seed=m)
    s = block.itemsize
    shuffled = comp._bitshuffle_blocks(block.view(np.uint8), 1, m, s)
    assert shuffled.tobytes() == _reference_bitshuffle(block)
    assert shuffled.tobytes() == bitshuffle.bitshuffle(block, m).tobytes()
    restored = comp._bitunshuffle_blocks(shuffled, 1, m, s)
    assert restored.tobytes() == block.tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("n", [5, 8203, 70001])
def test_numpy_blocked_shuffle_identical_to_c(dtype: str, n: int) -> None:
    """The bytes handed to LZ4 (full blocks, partial block, trailer) equal bitshuffle's."""
    arr = _data(n, dtype)
    block = comp._default_block(arr.itemsize)
    ours = comp._blocked(comp._bitshuffle_blocks, arr.view(np.uint8), n, arr.itemsize, block)
    assert ours.tobytes() == bitshuffle.bitshuffle(arr, block).tobytes()


def test_fallback_compress_is_byte_identical_without_lz4_blocks() -> None:
    # fewer than 8 elements: header + verbatim trailer, no LZ4 block at all
    arr = np.array([1, 2, 65535], np.uint16)
    assert comp.bslz4_compress_fallback(arr) == comp.bslz4_compress(arr)
    assert comp.bslz4_compress(arr) == struct.pack(">QI", 6, 8192) + arr.tobytes()


def test_empty_arrays() -> None:
    for dtype in ("uint8", "uint32"):
        empty = np.empty(0, dtype)
        for compress in (comp.bslz4_compress, comp.bslz4_compress_fallback):
            blob = compress(empty)
            assert len(blob) == 12
            for decompress in DECOMPRESSORS:
                assert decompress(blob, dtype, 0).size == 0
        assert comp.lz4h5_decompress(comp.lz4h5_compress(empty), dtype, 0).size == 0
        assert comp.lz4_block_decompress(comp.lz4_block_compress(empty), dtype, 0).size == 0


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("shape", [(7, 13), (100, 257), (1065, 1030)])
def test_bslz4_compress_identical_to_hdf5_filter(tmp_path: Any, dtype: str,
                                                 shape: tuple[int, int]) -> None:
    """Same bytes as a chunk written by h5py with the HDF5 bitshuffle+LZ4 filter."""
    arr = _data(shape[0] * shape[1], dtype).reshape(shape)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        dset = f.create_dataset("data", data=arr, chunks=shape,
                                **hdf5plugin.Bitshuffle(cname="lz4"))
        _, chunk = dset.id.read_direct_chunk((0, 0))
    assert chunk == comp.bslz4_compress(arr)
    for decompress in DECOMPRESSORS:
        np.testing.assert_array_equal(decompress(chunk, dtype, arr.size).reshape(shape), arr)


def test_fallback_selected_when_bitshuffle_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitshuffle", None)  # makes the import fail
    spec = importlib.util.spec_from_file_location("compression_without_bitshuffle",
                                                  comp.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not module.HAVE_BITSHUFFLE and not module.C_DECOMPRESS_SAFE
    arr = _data(20001, "uint16")
    blob = module.bslz4_compress(arr)
    assert blob == comp.bslz4_compress_fallback(arr)
    np.testing.assert_array_equal(module.bslz4_decompress(blob, "uint16", arr.size), arr)
    np.testing.assert_array_equal(module.bslz4_decompress(comp.bslz4_compress(arr), "uint16",
                                                          arr.size), arr)


def test_c_path_without_fast_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an unknown bundled LZ4 the C path uses lz4.block + bitshuffle.bitunshuffle."""
    monkeypatch.setattr(comp, "C_DECOMPRESS_SAFE", False)
    for n in (0, 7, 8203, 20001):
        arr = _data(n, "uint32")
        np.testing.assert_array_equal(comp.bslz4_decompress(comp.bslz4_compress(arr),
                                                            "uint32", n), arr)


# ------------------------------------------------------------------------- lz4h5, lz4


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float64"])
@pytest.mark.parametrize("n", [0, 1, 7, 4096, 4097, 20001])
def test_lz4h5_round_trip(dtype: str, n: int) -> None:
    arr = _data(n, dtype)
    blob = comp.lz4h5_compress(arr)
    assert struct.unpack(">QI", blob[:12]) == (arr.nbytes, 8192)
    np.testing.assert_array_equal(comp.lz4h5_decompress(blob, dtype, n), arr)


def test_lz4h5_incompressible_blocks_are_stored_raw() -> None:
    arr = np.random.default_rng(3).integers(0, 256, 8192 + 100, np.uint8)
    blob = comp.lz4h5_compress(arr)
    # two blocks, both stored raw: length == block size, data verbatim
    assert struct.unpack(">I", blob[12:16])[0] == 8192
    assert blob[16:16 + 8192] == arr[:8192].tobytes()
    assert struct.unpack(">I", blob[16 + 8192:20 + 8192])[0] == 100
    assert blob[20 + 8192:] == arr[8192:].tobytes()
    assert len(blob) == 12 + 8 + arr.size
    np.testing.assert_array_equal(comp.lz4h5_decompress(blob, "uint8", arr.size), arr)


def test_lz4h5_custom_block_size_and_mixed_blocks() -> None:
    rng = np.random.default_rng(4)
    arr = np.concatenate([np.zeros(1000, np.uint8), rng.integers(0, 256, 1000, np.uint8)])
    blob = comp.lz4h5_compress(arr, block_size=1000)
    assert struct.unpack(">I", blob[8:12])[0] == 1000
    assert struct.unpack(">I", blob[12:16])[0] < 1000  # zeros compressed
    np.testing.assert_array_equal(comp.lz4h5_decompress(blob, "uint8", arr.size), arr)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("n", [1, 7, 1000, 70001])
def test_lz4_block_round_trip(dtype: str, n: int) -> None:
    arr = _data(n, dtype)
    np.testing.assert_array_equal(
        comp.lz4_block_decompress(comp.lz4_block_compress(arr), dtype, n), arr)


def test_big_endian_input_is_written_little_endian() -> None:
    arr = _data(1000, "uint16")
    swapped = arr.astype(">u2")
    assert comp.bslz4_compress(swapped) == comp.bslz4_compress(arr)
    assert comp.lz4h5_compress(swapped) == comp.lz4h5_compress(arr)
    assert comp.lz4_block_compress(swapped) == comp.lz4_block_compress(arr)


# --------------------------------------------------------------------------- corruption


def _expect(reason: Reason, fn: Callable[[], Any]) -> None:
    with pytest.raises(DecodeError) as info:
        fn()
    assert info.value.reason is reason, info.value


ALL_DECODERS: list[Callable[[Any, str, int], np.ndarray]] = [
    comp.bslz4_decompress, comp.bslz4_decompress_fallback, comp.lz4h5_decompress]


def test_header_size_checks() -> None:
    arr = _data(20001, "uint16")
    for decompress, blob in ((comp.bslz4_decompress, comp.bslz4_compress(arr)),
                             (comp.bslz4_decompress_fallback, comp.bslz4_compress(arr)),
                             (comp.lz4h5_decompress, comp.lz4h5_compress(arr))):
        _expect(Reason.SIZE_MISMATCH, lambda d=decompress, b=blob: d(b, "uint16", 20000))
        _expect(Reason.SIZE_MISMATCH, lambda d=decompress, b=blob: d(b, "uint32", 20001))
        # a bogus total in the header: rejected before any allocation
        huge = struct.pack(">Q", 2**62) + blob[8:]
        _expect(Reason.SIZE_MISMATCH, lambda d=decompress, b=huge: d(b, "uint16", 20001))
        # the caller's size is trusted only as far as LZ4 could ever expand the input
        fake = struct.pack(">QI", 2 * 2**40, 8192) + blob[12:]
        _expect(Reason.CORRUPT, lambda d=decompress, b=fake: d(b, "uint16", 2**40))
        _expect(Reason.CORRUPT, lambda d=decompress, b=blob: d(b[:11], "uint16", 20001))
        _expect(Reason.CORRUPT, lambda d=decompress, b=blob: d(b + b"\0", "uint16", 20001))


@pytest.mark.parametrize("decompress", DECOMPRESSORS)
def test_bslz4_bad_block_sizes(decompress: Callable[[Any, str, int], np.ndarray]) -> None:
    arr = _data(20001, "uint16")
    blob = comp.bslz4_compress(arr)
    for block_bytes in (0, 3, 8194, 6, 2**32 - 2, 2**31):
        bad = blob[:8] + struct.pack(">I", block_bytes) + blob[12:]
        _expect(Reason.CORRUPT, lambda b=bad: decompress(b, "uint16", 20001))
    # a block length pointing past the end
    bad = blob[:12] + struct.pack(">I", len(blob)) + blob[16:]
    _expect(Reason.CORRUPT, lambda: decompress(bad, "uint16", 20001))
    zero = blob[:12] + struct.pack(">I", 0) + blob[16:]
    _expect(Reason.CORRUPT, lambda: decompress(zero, "uint16", 20001))


@pytest.mark.parametrize("safe", [True, False])
def test_block_size_larger_than_the_data(monkeypatch: pytest.MonkeyPatch, safe: bool) -> None:
    """One partial block: any header block size above n is valid, even 2**32 - 8 bytes."""
    monkeypatch.setattr(comp, "C_DECOMPRESS_SAFE", safe)
    arr = _data(20001, "uint8")
    blob = comp.bslz4_compress(arr, 20008)
    for block_bytes in (20008, 65536, 2**32 - 8):
        framed = blob[:8] + struct.pack(">I", block_bytes) + blob[12:]
        for decompress in DECOMPRESSORS:
            np.testing.assert_array_equal(decompress(framed, "uint8", arr.size), arr)


def test_unsupported_dtypes() -> None:
    blob = comp.bslz4_compress(_data(10, "uint8"))
    for decompress in (*ALL_DECODERS, comp.lz4_block_decompress):
        _expect(Reason.UNSUPPORTED, lambda d=decompress: d(blob, "object", 10))
        _expect(Reason.UNSUPPORTED, lambda d=decompress: d(blob, "not-a-dtype", 10))
        _expect(Reason.UNSUPPORTED, lambda d=decompress: d(blob, "complex64", 10))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_truncations_and_byte_flips_raise_only_decode_error(dtype: str) -> None:
    """Every prefix and hundreds of random byte flips: a correct array or DecodeError."""
    rng = np.random.default_rng(11)
    arr = _data(3000, dtype)
    cases = [
        (comp.bslz4_compress(arr), [comp.bslz4_decompress, comp.bslz4_decompress_fallback]),
        (comp.lz4h5_compress(arr), [comp.lz4h5_decompress]),
        (comp.lz4_block_compress(arr), [comp.lz4_block_decompress]),
    ]
    for blob, decoders in cases:
        mutated = [blob[:cut] for cut in range(0, len(blob), max(1, len(blob) // 150))]
        for _ in range(150):
            bad = bytearray(blob)
            for pos in rng.integers(0, len(bad), rng.integers(1, 4)):
                bad[pos] = int(rng.integers(0, 256))
            mutated.append(bytes(bad))
        for bad_blob in mutated:
            for decompress in decoders:
                try:
                    out = decompress(bad_blob, dtype, arr.size)
                except DecodeError as exc:
                    assert isinstance(exc.reason, Reason)
                else:
                    assert out.shape == arr.shape and out.dtype == arr.dtype


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_random_header_fields_raise_only_decode_error(dtype: str) -> None:
    rng = np.random.default_rng(13)
    arr = _data(5003, dtype)
    s = arr.itemsize
    blobs = [comp.bslz4_compress(arr), comp.bslz4_compress(arr, 64), comp.lz4h5_compress(arr)]
    decoders = [comp.bslz4_decompress, comp.bslz4_decompress_fallback, comp.lz4h5_decompress]
    for _ in range(100):
        block = int(rng.choice([int(rng.integers(0, 2**32)), 8 * s * int(rng.integers(0, 2**12)),
                                2**32 - 8 * int(rng.integers(1, 9)), 8 * s, 1]))
        total = arr.nbytes if rng.random() < 0.8 else int(rng.integers(0, 2**64, dtype=np.uint64))
        for blob in blobs:
            framed = struct.pack(">QI", total, block) + blob[12:]
            for decompress in decoders:
                try:
                    out = decompress(framed, dtype, arr.size)
                except DecodeError:
                    continue
                assert out.shape == arr.shape


def test_random_garbage_raises_decode_error() -> None:
    rng = np.random.default_rng(12)
    decoders = [*ALL_DECODERS, comp.lz4_block_decompress]
    for _ in range(200):
        garbage = rng.integers(0, 256, int(rng.integers(0, 300)), np.uint8).tobytes()
        n = int(rng.integers(0, 5000))
        for decompress in decoders:
            try:
                out = decompress(garbage, "uint16", n)
            except DecodeError:
                continue
            assert out.shape == (n,)


def test_not_bytes_like() -> None:
    for decompress in (*ALL_DECODERS, comp.lz4_block_decompress):
        _expect(Reason.CORRUPT, lambda d=decompress: d(12345, "uint8", 1))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- decode_pixels


def _payload(arr: np.ndarray, encoding: Encoding) -> Payload:
    blob = {Encoding.RAW: arr.tobytes, Encoding.LZ4: lambda: comp.lz4_block_compress(arr),
            Encoding.LZ4_H5: lambda: comp.lz4h5_compress(arr),
            Encoding.BSLZ4: lambda: comp.bslz4_compress(arr)}[encoding]()
    return Payload(memoryview(blob), encoding, arr.shape, arr.dtype.name)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (1065, 1030)])
def test_decode_pixels_all_encodings(encoding: Encoding, shape: tuple[int, int]) -> None:
    arr = _data(shape[0] * shape[1], "uint16").reshape(shape)
    out = decode_pixels(_payload(arr, encoding))
    assert out.shape == shape and out.dtype == np.uint16
    np.testing.assert_array_equal(out, arr)


def test_decode_pixels_raw_is_zero_copy() -> None:
    arr = _data(7 * 13, "uint32").reshape(7, 13)
    buffer = bytearray(arr.tobytes())
    out = decode_pixels(Payload(memoryview(buffer)[0:], Encoding.RAW, (7, 13), "uint32"))
    assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))
    np.testing.assert_array_equal(out, arr)


def test_decode_pixels_errors() -> None:
    arr = _data(7 * 13, "uint16").reshape(7, 13)
    raw = Payload(arr.tobytes()[:-2], Encoding.RAW, (7, 13), "uint16")
    _expect(Reason.SIZE_MISMATCH, lambda: decode_pixels(raw))
    _expect(Reason.UNKNOWN_ENCODING,
            lambda: decode_pixels(Payload(b"", "zstd", (7, 13), "uint16")))  # type: ignore[arg-type]
    _expect(Reason.UNSUPPORTED,
            lambda: decode_pixels(Payload(b"", Encoding.RAW, (7, 13), "bogus")))
    for encoding in (Encoding.BSLZ4, Encoding.LZ4_H5, Encoding.LZ4):
        good = _payload(arr, encoding)
        blob = bytes(good.data)
        for bad in (blob[: len(blob) // 2], blob[:12] + b"\xff" * (len(blob) - 12),
                    blob + b"junk"):
            corrupt = Payload(bad, encoding, (7, 13), "uint16")
            _expect(Reason.CORRUPT, lambda p=corrupt: decode_pixels(p))
        wrong_shape = Payload(blob, encoding, (13, 13), "uint16")
        with pytest.raises(DecodeError) as info:
            decode_pixels(wrong_shape)
        assert info.value.reason in (Reason.SIZE_MISMATCH, Reason.CORRUPT)


def test_decode_image_channels() -> None:
    a = _data(6, "uint8").reshape(2, 3)
    b = (a + 1).astype(np.uint8)
    image = Image(Protocol.DECTRIS_V2, 1, 0, {"t1": _payload(a, Encoding.BSLZ4),
                                              "t2": _payload(b, Encoding.RAW)})
    np.testing.assert_array_equal(decode_image(image), a)
    np.testing.assert_array_equal(decode_image(image, "t2"), b)
    with pytest.raises(DecodeError) as info:
        decode_image(image, "t3")
    assert info.value.reason is Reason.BAD_HEADER and "t3" in info.value.detail
    _expect(Reason.BAD_HEADER, lambda: decode_image(Image(Protocol.DECTRIS_V2, 1, 0, {})))
