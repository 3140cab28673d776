"""Pixel payload codecs: bitshuffle+LZ4 and LZ4 in the framings detectors send.

Three framings (see ``protocols.md`` §3):

* **bslz4**: the HDF5 bitshuffle filter framing, ``u64 BE total bytes, u32 BE block bytes``
  then ``u32 BE length + LZ4 block`` per block of bit-transposed data, then the last
  ``n % 8`` elements verbatim (DECTRIS V1 ``bsN-lz4<``, V2 ``bslz4``).
* **lz4h5**: the HDF5 LZ4 filter framing, same 12-byte header, blocks of ``u32 BE length +
  LZ4 block``; a block whose length equals its uncompressed size is stored raw (V2 ``lz4``).
* **lz4 block**: one bare LZ4 block of the whole image, no header (V1 ``lz4<``).

Every function is pure. Decoders validate the framing against the *expected* size before
allocating anything, and raise :class:`~actors.wire.errors.DecodeError` (``CORRUPT`` or
``SIZE_MISMATCH``) for any bad input, never another exception.

The ``bitshuffle`` C library is used when importable. Its LZ4 step calls
``LZ4_decompress_fast``, which trusts its input, so the framing is checked here first
and the C code reads from a zero-padded copy, so a corrupt block cannot make it read
outside our buffer. That needs the bundled LZ4 >= 1.9.4, which checks match offsets; with
an older or unknown LZ4 the blocks are decompressed by ``lz4.block`` (LZ4's safe decoder)
and only the bit transpose runs in C. Without ``bitshuffle`` the pure NumPy + ``lz4.block``
fallback (``*_fallback`` functions) runs. It decodes the same bytes and bit-transposes
identically; its LZ4 blocks come from ``lz4.block``, so they match the C library's byte for
byte only when both bundle an LZ4 that compresses the same (they are always valid).
"""

from __future__ import annotations

import ctypes
import importlib
import struct
from typing import Any

import lz4.block
import numpy as np
import numpy.typing as npt

from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Buffer

_bitshuffle: Any
try:
    _bitshuffle = importlib.import_module("bitshuffle")
except ImportError:  # pragma: no cover - depends on the environment
    _bitshuffle = None

#: True when the bitshuffle C library is importable (the fast path is used).
HAVE_BITSHUFFLE: bool = _bitshuffle is not None

HEADER_SIZE = 12  #: bytes of the HDF5-filter header (u64 BE total, u32 BE block bytes)
LZ4H5_BLOCK_BYTES = 8192  #: block size DECTRIS uses for the V2 ``lz4`` framing
_BLOCKED_MULT = 8  #: bitshuffle blocks are multiples of 8 elements
_MIN_LZ4_VERSION = 10904  #: LZ4 1.9.4: first version whose fast decoder checks offsets
#: LZ4 cannot expand data more than ~255x, so a payload claiming more is corrupt; checked
#: before allocating the output, so a bogus shape or header cannot cause a huge allocation.
_MAX_LZ4_RATIO = 256

_HEADER = struct.Struct(">QI")
_U32 = struct.Struct(">I")
_M1 = np.uint64(0x00AA00AA00AA00AA)
_M2 = np.uint64(0x0000CCCC0000CCCC)
_M3 = np.uint64(0x00000000F0F0F0F0)


def _bundled_lz4_version() -> int:
    """LZ4 version compiled into the bitshuffle extension, 0 when unknown."""
    if _bitshuffle is None:
        return 0
    try:
        lib = ctypes.CDLL(_bitshuffle.ext.__file__)
        return int(lib.LZ4_versionNumber())
    except (OSError, AttributeError):  # pragma: no cover - other builds
        return 0


#: True when ``bitshuffle.decompress_lz4`` may run on untrusted (framing-checked) data.
C_DECOMPRESS_SAFE: bool = _bundled_lz4_version() >= _MIN_LZ4_VERSION


# --------------------------------------------------------------------------- helpers


def _as_bytes_view(data: Buffer) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise DecodeError(Reason.CORRUPT, f"payload is not bytes-like: {type(data).__name__}") \
            from exc
    if view.format != "B" or view.ndim != 1:
        if not view.c_contiguous:
            raise DecodeError(Reason.CORRUPT, "payload buffer is not contiguous")
        view = view.cast("B")
    return view


def _pixel_dtype(dtype: str | np.dtype[Any]) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DecodeError(Reason.UNSUPPORTED, f"unknown pixel dtype {dtype!r}") from exc
    if dt.kind not in "uif" or dt.itemsize not in (1, 2, 4, 8):
        raise DecodeError(Reason.UNSUPPORTED, f"unsupported pixel dtype {dt}")
    return dt.newbyteorder("<")


def _expected_nbytes(n_elems: int, itemsize: int) -> int:
    if n_elems < 0:
        raise DecodeError(Reason.SIZE_MISMATCH, f"negative element count {n_elems}")
    return n_elems * itemsize


def read_h5_header(data: Buffer) -> tuple[int, int]:
    """``(total uncompressed bytes, block size in bytes)`` of an HDF5-filter framed payload."""
    view = _as_bytes_view(data)
    if len(view) < HEADER_SIZE:
        raise DecodeError(Reason.CORRUPT, f"payload of {len(view)} B is shorter than its header")
    total, block = _HEADER.unpack_from(view, 0)
    return int(total), int(block)


def _check_ratio(view: memoryview, nbytes: int) -> None:
    if nbytes > _MAX_LZ4_RATIO * len(view) + 64:
        raise DecodeError(Reason.CORRUPT, f"{len(view)} B cannot decompress to {nbytes} B")


def _check_header(view: memoryview, nbytes: int) -> int:
    """Check the 12-byte header against the expected size; return the block size in bytes."""
    total, block = read_h5_header(view)
    if total != nbytes:
        raise DecodeError(Reason.SIZE_MISMATCH,
                          f"header declares {total} B uncompressed, expected {nbytes} B")
    _check_ratio(view, nbytes)
    return block


def _lz4_block(src: memoryview, size: int) -> bytes:
    """Decompress one LZ4 block that must yield exactly ``size`` bytes."""
    try:
        out: bytes = lz4.block.decompress(src, uncompressed_size=size)
    except (lz4.block.LZ4BlockError, ValueError, OverflowError) as exc:
        raise DecodeError(Reason.CORRUPT, f"LZ4 block does not decompress: {exc}") from exc
    if len(out) != size:
        raise DecodeError(Reason.CORRUPT, f"LZ4 block gave {len(out)} B, expected {size} B")
    return out


def _contiguous_le(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    dt = _pixel_dtype(arr.dtype)
    return np.ascontiguousarray(arr, dtype=dt).reshape(-1)


# ------------------------------------------------------------------ bit transpose (NumPy)


def _transpose8x8(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Transpose the 8x8 bit matrix in every uint64 (bit ``8r+c`` <-> bit ``8c+r``), in place."""
    t = np.empty_like(x)
    for shift, mask in ((np.uint64(7), _M1), (np.uint64(14), _M2), (np.uint64(28), _M3)):
        np.right_shift(x, shift, out=t)
        np.bitwise_xor(t, x, out=t)
        np.bitwise_and(t, mask, out=t)
        np.bitwise_xor(x, t, out=x)
        np.left_shift(t, shift, out=t)
        np.bitwise_xor(x, t, out=x)
    return x


def _bitshuffle_blocks(elems: npt.NDArray[np.uint8], nb: int, m: int, s: int,
                       ) -> npt.NDArray[np.uint8]:
    """Bit-transpose ``nb`` blocks of ``m`` elements of ``s`` bytes (input: element bytes)."""
    x = elems.reshape(nb, m, s)
    gathered = np.empty((nb, s, m), np.uint8)  # byte j of every element, per block
    for j in range(s):
        gathered[:, j, :] = x[:, :, j]
    words = _transpose8x8(gathered.view("<u8"))  # (nb, s, m/8): byte b = bit row b
    rows = words.view(np.uint8).reshape(nb, s, m // 8, 8)
    out = np.empty((nb, s, 8, m // 8), np.uint8)
    for b in range(8):
        out[:, :, b, :] = rows[:, :, :, b]
    return out.reshape(-1)


def _bitunshuffle_blocks(shuffled: npt.NDArray[np.uint8], nb: int, m: int, s: int,
                         ) -> npt.NDArray[np.uint8]:
    """Inverse of :func:`_bitshuffle_blocks`: rows ``8j+b`` of ``m/8`` bytes -> elements."""
    x = shuffled.reshape(nb, s, 8, m // 8)
    gathered = np.empty((nb, s, m // 8, 8), np.uint8)
    for b in range(8):
        gathered[:, :, :, b] = x[:, :, b, :]
    words = _transpose8x8(gathered.view("<u8").reshape(nb, s, m // 8))
    planes = words.view(np.uint8).reshape(nb, s, m)  # byte j of element i of each block
    out = np.empty((nb, m, s), np.uint8)
    for j in range(s):
        out[:, :, j] = planes[:, j, :]
    return out.reshape(-1)


def _blocked(fun: Any, data: npt.NDArray[np.uint8], n: int, s: int, block: int,
             ) -> npt.NDArray[np.uint8]:
    """Apply a block transform the way bitshuffle does: full blocks, a partial block rounded
    down to a multiple of 8 elements, then the ``n % 8`` trailing elements unchanged."""
    out = np.empty(n * s, np.uint8)
    nfull = n // block
    done = nfull * block
    if nfull:
        out[: done * s] = fun(data[: done * s], nfull, block, s)
    m = (n - done) // _BLOCKED_MULT * _BLOCKED_MULT
    if m:
        out[done * s: (done + m) * s] = fun(data[done * s: (done + m) * s], 1, m, s)
    out[(done + m) * s:] = data[(done + m) * s:]
    return out


def _default_block(itemsize: int) -> int:
    """bitshuffle's default block size in elements (``bshuf_default_block_size``)."""
    return max(128, (8192 // itemsize) // _BLOCKED_MULT * _BLOCKED_MULT)


# -------------------------------------------------------------------------------- bslz4


def _bslz4_spans(view: memoryview, n: int, s: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Walk the bslz4 framing; return the block size (elements) and ``(offset, length,
    uncompressed bytes)`` of every LZ4 block. Checks that everything fits exactly."""
    block_bytes = _check_header(view, n * s)
    if block_bytes <= 0 or block_bytes % s or (block_bytes // s) % _BLOCKED_MULT:
        raise DecodeError(Reason.CORRUPT, f"invalid bitshuffle block size {block_bytes} B")
    block = block_bytes // s
    nfull = n // block
    partial = (n % block) // _BLOCKED_MULT * _BLOCKED_MULT
    trailer = (n % _BLOCKED_MULT) * s
    nblocks = nfull + (1 if partial else 0)
    end = len(view) - trailer
    if HEADER_SIZE + 4 * nblocks > end:
        raise DecodeError(Reason.CORRUPT, f"payload of {len(view)} B too short for "
                                          f"{nblocks} blocks")
    spans: list[tuple[int, int, int]] = []
    pos = HEADER_SIZE
    unpack = _U32.unpack_from
    for i in range(nblocks):
        if pos + 4 > end:
            raise DecodeError(Reason.CORRUPT, f"payload truncated at block {i}")
        (length,) = unpack(view, pos)
        pos += 4
        if length == 0 or pos + length > end:
            raise DecodeError(Reason.CORRUPT, f"block {i} declares {length} B, "
                                              f"{end - pos} B left")
        spans.append((pos, length, (block if i < nfull else partial) * s))
        pos += length
    if pos != end:
        raise DecodeError(Reason.CORRUPT, f"{end - pos} B of unexpected data after the blocks")
    return block, spans


def _lz4_blocks_joined(view: memoryview, spans: list[tuple[int, int, int]], n: int, s: int,
                       ) -> npt.NDArray[np.uint8]:
    """Decompress every block (safe LZ4) into one buffer, followed by the verbatim trailer."""
    out = np.empty(n * s, np.uint8)
    o = 0
    for pos, length, size in spans:
        out[o: o + size] = np.frombuffer(_lz4_block(view[pos: pos + length], size), np.uint8)
        o += size
    out[o:] = np.frombuffer(view[len(view) - (n * s - o):], np.uint8)
    return out


def bslz4_decompress_fallback(data: Buffer, dtype: str, n_elems: int) -> npt.NDArray[Any]:
    """:func:`bslz4_decompress` in pure NumPy + ``lz4.block`` (no bitshuffle library)."""
    dt = _pixel_dtype(dtype)
    view = _as_bytes_view(data)
    n, s = n_elems, dt.itemsize
    _expected_nbytes(n, s)
    block, spans = _bslz4_spans(view, n, s)
    raw = _lz4_blocks_joined(view, spans, n, s)
    return _blocked(_bitunshuffle_blocks, raw, n, s, block).view(dt)


def _bslz4_decompress_c(data: Buffer, dtype: str, n_elems: int) -> npt.NDArray[Any]:
    assert _bitshuffle is not None
    dt = _pixel_dtype(dtype)
    view = _as_bytes_view(data)
    n, s = n_elems, dt.itemsize
    _expected_nbytes(n, s)
    block, spans = _bslz4_spans(view, n, s)
    if n == 0:
        return np.empty(0, dt)
    # a block larger than the data gives the same partition as the next multiple of 8
    # above n, which also fits the C int argument
    block = min(block, n // _BLOCKED_MULT * _BLOCKED_MULT + _BLOCKED_MULT)
    try:
        if not C_DECOMPRESS_SAFE:
            raw = _lz4_blocks_joined(view, spans, n, s)
            return np.asarray(_bitshuffle.bitunshuffle(raw.view(dt), block))
        body = len(view) - HEADER_SIZE
        # zero padding: LZ4_decompress_fast may read past a corrupt block, never further
        # than about 2x the block's output; zeros also end any run of 0xFF length bytes.
        padded = np.zeros(body + 2 * block * s + 64, np.uint8)
        padded[:body] = np.frombuffer(view, np.uint8, offset=HEADER_SIZE)
        out = _bitshuffle.decompress_lz4(padded[:body], (n,), dt, block)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(Reason.CORRUPT, f"bitshuffle/LZ4 payload does not decompress: "
                                          f"{exc}") from exc
    return np.asarray(out)


def bslz4_decompress(data: Buffer, dtype: str, n_elems: int) -> npt.NDArray[Any]:
    """Decode a bslz4 payload (12-byte HDF5-filter header included) to ``n_elems`` pixels.

    Returns a writable 1-D array of little-endian ``dtype``. Raises
    ``DecodeError(SIZE_MISMATCH)`` when the header's total size is not
    ``n_elems * itemsize`` and ``DecodeError(CORRUPT)`` for any other damage.
    """
    if _bitshuffle is not None:
        return _bslz4_decompress_c(data, dtype, n_elems)
    return bslz4_decompress_fallback(data, dtype, n_elems)


def _check_block_size(block_size: int, itemsize: int) -> int:
    if block_size == 0:
        return _default_block(itemsize)
    if block_size < 0 or block_size % _BLOCKED_MULT:
        raise ValueError(f"block_size must be a positive multiple of 8, got {block_size}")
    return block_size


def bslz4_compress_fallback(arr: npt.NDArray[Any], block_size: int = 0) -> bytes:
    """:func:`bslz4_compress` in pure NumPy + ``lz4.block``."""
    flat = _contiguous_le(arr)
    n, s = flat.size, flat.itemsize
    block = _check_block_size(block_size, s)
    parts = [_HEADER.pack(n * s, block * s)]
    shuffled = _blocked(_bitshuffle_blocks, flat.view(np.uint8), n, s, block)
    done = 0
    tail = n - n % _BLOCKED_MULT
    while done < tail:
        m = min(block, tail - done)
        packed = lz4.block.compress(shuffled[done * s: (done + m) * s], store_size=False)
        parts += [_U32.pack(len(packed)), packed]
        done += m
    parts.append(shuffled[tail * s:].tobytes())
    return b"".join(parts)


def bslz4_compress(arr: npt.NDArray[Any], block_size: int = 0) -> bytes:
    """Bitshuffle + LZ4 ``arr`` (any shape, row-major) with the HDF5-filter header.

    ``block_size`` is in elements (0 = bitshuffle's default, 8192 B worth). The output is
    byte-identical to the HDF5 bitshuffle filter (``hdf5plugin.Bitshuffle(lz4=True)``).
    """
    if _bitshuffle is None:
        return bslz4_compress_fallback(arr, block_size)
    flat = _contiguous_le(arr)
    n, s = flat.size, flat.itemsize
    block = _check_block_size(block_size, s)
    header = _HEADER.pack(n * s, block * s)
    if n == 0:
        return header
    return header + np.asarray(_bitshuffle.compress_lz4(flat, block)).tobytes()


# -------------------------------------------------------------------------------- lz4h5


def lz4h5_decompress(data: Buffer, dtype: str, n_elems: int) -> npt.NDArray[Any]:
    """Decode the HDF5 LZ4 filter framing (V2 ``lz4``) to ``n_elems`` pixels of ``dtype``."""
    dt = _pixel_dtype(dtype)
    view = _as_bytes_view(data)
    nbytes = _expected_nbytes(n_elems, dt.itemsize)
    block = _check_header(view, nbytes)
    if block <= 0:
        raise DecodeError(Reason.CORRUPT, f"invalid LZ4 block size {block} B")
    nblocks = -(-nbytes // block)
    if HEADER_SIZE + 4 * nblocks > len(view):
        raise DecodeError(Reason.CORRUPT, f"payload of {len(view)} B too short for "
                                          f"{nblocks} blocks")
    out = np.empty(nbytes, np.uint8)
    pos, o = HEADER_SIZE, 0
    for i in range(nblocks):
        size = min(block, nbytes - o)
        if pos + 4 > len(view):
            raise DecodeError(Reason.CORRUPT, f"payload truncated at block {i}")
        (length,) = _U32.unpack_from(view, pos)
        pos += 4
        if length == 0 or pos + length > len(view):
            raise DecodeError(Reason.CORRUPT, f"block {i} declares {length} B, "
                                              f"{len(view) - pos} B left")
        chunk = view[pos: pos + length]
        out[o: o + size] = np.frombuffer(chunk if length == size else _lz4_block(chunk, size),
                                         np.uint8)
        pos += length
        o += size
    if pos != len(view):
        raise DecodeError(Reason.CORRUPT, f"{len(view) - pos} B of unexpected data after "
                                          "the blocks")
    return out.view(dt)


def lz4h5_compress(arr: npt.NDArray[Any], block_size: int = LZ4H5_BLOCK_BYTES) -> bytes:
    """Encode ``arr`` in the HDF5 LZ4 filter framing; ``block_size`` is in bytes.

    Blocks that do not shrink are stored raw, as ``dectris/compression`` and H5Zlz4 do.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    raw = _contiguous_le(arr).view(np.uint8)
    parts = [_HEADER.pack(raw.size, block_size)]
    for start in range(0, raw.size, block_size):
        chunk = raw[start: start + block_size]
        packed = lz4.block.compress(chunk, store_size=False)
        if len(packed) >= chunk.size:
            packed = chunk.tobytes()
        parts += [_U32.pack(len(packed)), packed]
    return b"".join(parts)


# --------------------------------------------------------------------------- bare lz4


def lz4_block_decompress(data: Buffer, dtype: str, n_elems: int) -> npt.NDArray[Any]:
    """Decode one bare LZ4 block (V1 ``lz4<``) holding exactly ``n_elems`` pixels."""
    dt = _pixel_dtype(dtype)
    view = _as_bytes_view(data)
    nbytes = _expected_nbytes(n_elems, dt.itemsize)
    if nbytes == 0:
        if bytes(view) not in (b"", b"\x00"):
            raise DecodeError(Reason.CORRUPT, "non-empty LZ4 block for an empty image")
        return np.empty(0, dt)
    if len(view) == 0:
        raise DecodeError(Reason.CORRUPT, "empty LZ4 block")
    _check_ratio(view, nbytes)
    try:
        out = lz4.block.decompress(view, uncompressed_size=nbytes, return_bytearray=True)
    except (lz4.block.LZ4BlockError, ValueError, OverflowError) as exc:
        raise DecodeError(Reason.CORRUPT, f"LZ4 block does not decompress: {exc}") from exc
    if len(out) != nbytes:
        raise DecodeError(Reason.CORRUPT, f"LZ4 block gave {len(out)} B, expected {nbytes} B")
    return np.frombuffer(out, dt)


def lz4_block_compress(arr: npt.NDArray[Any]) -> bytes:
    """Encode ``arr`` as one bare LZ4 block without size prefix (V1 ``lz4<``)."""
    packed: bytes = lz4.block.compress(_contiguous_le(arr).view(np.uint8), store_size=False)
    return packed
