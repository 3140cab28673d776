"""A tiny CBOR (RFC 8949) reader and writer for the detector hot path.

Why not only ``cbor2``: :func:`loads` returns byte strings as **memoryview slices of the
input** (no copy of megabyte pixel payloads), keeps every tag as a plain :class:`Tag`
(no semantic decoding surprises), bounds nesting depth and checks every declared length
against the bytes actually present before using it. :func:`dumps` keeps map order and
writes floats in their shortest exact form (f16/f32/f64), as DECTRIS firmware does;
``cbor2`` can only shrink floats together with sorting keys (``canonical=True``).

Only :class:`CBORError` escapes :func:`loads` for bad input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.wire.model import Buffer

MAX_DEPTH = 64  #: deepest nesting :func:`loads` accepts

_BREAK = 0xFF
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F16 = struct.Struct(">e")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


class CBORError(ValueError):
    """The input is not a single well-formed CBOR item."""


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged item: ``tag`` number and its content."""

    tag: int
    value: Any


@dataclass(frozen=True, slots=True)
class Simple:
    """A CBOR simple value other than false/true/null/undefined."""

    value: int


_ARGUMENT = {24: struct.Struct(">B"), 25: _U16, 26: _U32, 27: _U64}


class _Reader:
    __slots__ = ("depth_limit", "end", "pos", "view")

    def __init__(self, view: memoryview, depth_limit: int) -> None:
        self.view = view
        self.pos = 0
        self.end = len(view)
        self.depth_limit = depth_limit

    def _truncated(self, need: int, at: int) -> CBORError:
        return CBORError(f"truncated: {need} B needed at offset {at}, {self.end - at} B left")

    def _take(self, n: int) -> memoryview:
        start = self.pos
        if n > self.end - start:
            raise self._truncated(n, start)
        self.pos = start + n
        return self.view[start: start + n]

    def _head(self) -> tuple[int, int, int | None]:
        """``(major type, additional info, argument)``; argument None = indefinite."""
        pos = self.pos
        if pos >= self.end:
            raise self._truncated(1, pos)
        initial = self.view[pos]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            self.pos = pos + 1
            return major, info, info
        argument = _ARGUMENT.get(info)
        if argument is not None:
            if pos + 1 + argument.size > self.end:
                raise self._truncated(1 + argument.size, pos)
            self.pos = pos + 1 + argument.size
            return major, info, argument.unpack_from(self.view, pos + 1)[0]
        if info == 31 and major in (2, 3, 4, 5, 7):
            self.pos = pos + 1
            return major, info, None
        raise CBORError(f"reserved additional info {info} for major type {major} at "
                        f"offset {pos}")

    def _at_break(self) -> bool:
        if self.pos >= self.end:
            raise CBORError("truncated: indefinite-length item has no break")
        if self.view[self.pos] == _BREAK:
            self.pos += 1
            return True
        return False

    def _string(self, major: int, arg: int | None) -> memoryview | bytes:
        if arg is not None:
            return self._take(arg)
        chunks = []
        while not self._at_break():
            m, _, n = self._head()
            if m != major or n is None:
                raise CBORError("bad chunk in indefinite-length string")
            chunks.append(self._take(n))
        return b"".join(chunks)

    def _count(self, arg: int, per_item: int) -> int:
        if arg * per_item > self.end - self.pos:
            raise CBORError(f"declared {arg} items, only {self.end - self.pos} B left")
        return arg

    def item(self, depth: int = 0) -> Any:
        if depth > self.depth_limit:
            raise CBORError(f"nesting deeper than {self.depth_limit}")
        major, info, arg = self._head()
        if major == 0:
            return arg
        if major == 1:
            assert arg is not None
            return -1 - arg
        if major == 2:
            return self._string(2, arg)
        if major == 3:
            try:
                return str(self._string(3, arg), "utf-8")
            except UnicodeDecodeError as exc:
                raise CBORError(f"text string is not UTF-8: {exc}") from exc
        if major == 4:
            if arg is None:
                items = []
                while not self._at_break():
                    items.append(self.item(depth + 1))
                return items
            return [self.item(depth + 1) for _ in range(self._count(arg, 1))]
        if major == 5:
            result: dict[Any, Any] = {}
            if arg is None:
                while not self._at_break():
                    self._pair(result, depth)
            else:
                for _ in range(self._count(arg, 2)):
                    self._pair(result, depth)
            return result
        if major == 6:
            assert arg is not None
            return Tag(arg, self.item(depth + 1))
        return self._simple(info, arg)

    def _pair(self, result: dict[Any, Any], depth: int) -> None:
        key = self.item(depth + 1)
        if type(key) is not str:
            if isinstance(key, memoryview):
                key = key.tobytes()
            try:
                hash(key)
            except TypeError:
                raise CBORError(f"unhashable map key of type {type(key).__name__}") from None
        result[key] = self.item(depth + 1)

    def _simple(self, info: int, arg: int | None) -> Any:
        if arg is None:
            raise CBORError(f"unexpected break at offset {self.pos - 1}")
        if info == 25:
            return _F16.unpack(_U16.pack(arg))[0]
        if info == 26:
            return _F32.unpack(_U32.pack(arg))[0]
        if info == 27:
            return _F64.unpack(_U64.pack(arg))[0]
        if arg == 20:
            return False
        if arg == 21:
            return True
        if arg in (22, 23):  # null, undefined
            return None
        return Simple(arg)


def loads(data: Buffer, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode exactly one CBOR item from ``data``.

    Byte strings come back as memoryview slices of ``data`` (bytes only for the rare
    indefinite-length strings), arrays as lists, maps as dicts, tags as :class:`Tag`,
    undefined as None. Raises :class:`CBORError` for malformed or trailing data.
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    reader = _Reader(view, max_depth)
    value = reader.item()
    if reader.pos != reader.end:
        raise CBORError(f"{reader.end - reader.pos} B of trailing data after the item")
    return value


# ------------------------------------------------------------------------------ dumps


def _head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes((major << 5 | arg,))
    if arg < 0x100:
        return bytes((major << 5 | 24, arg))
    if arg < 0x10000:
        return bytes((major << 5 | 25,)) + _U16.pack(arg)
    if arg < 0x100000000:
        return bytes((major << 5 | 26,)) + _U32.pack(arg)
    if arg < 0x10000000000000000:
        return bytes((major << 5 | 27,)) + _U64.pack(arg)
    raise ValueError(f"integer {arg} does not fit in 64 bits")


def _float(value: float) -> bytes:
    """Shortest of f16/f32/f64 that holds ``value`` exactly (NaN as f16 ``7e00``)."""
    if math.isnan(value):
        return b"\xf9\x7e\x00"
    for fmt, initial in ((_F16, b"\xf9"), (_F32, b"\xfa")):
        try:
            packed = fmt.pack(value)
        except OverflowError:
            continue
        if fmt.unpack(packed)[0] == value:
            return initial + packed
    return b"\xfb" + _F64.pack(value)


def _encode(obj: Any, out: list[Buffer]) -> None:
    if obj is None:
        out.append(b"\xf6")
    elif obj is True or obj is False:
        out.append(b"\xf5" if obj else b"\xf4")
    elif isinstance(obj, int):
        out.append(_head(0, obj) if obj >= 0 else _head(1, -1 - obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, str):
        raw = obj.encode()
        out += [_head(3, len(raw)), raw]
    elif isinstance(obj, bytes | bytearray | memoryview):
        view = memoryview(obj).cast("B") if isinstance(obj, memoryview) else obj
        out += [_head(2, len(view)), view]
    elif isinstance(obj, list | tuple):
        out.append(_head(4, len(obj)))
        for item in obj:
            _encode(item, out)
    elif isinstance(obj, Mapping):
        out.append(_head(5, len(obj)))
        for key, value in obj.items():
            _encode(key, out)
            _encode(value, out)
    elif isinstance(obj, Tag):
        out.append(_head(6, obj.tag))
        _encode(obj.value, out)
    elif isinstance(obj, Simple):
        out.append(_head(7, obj.value) if obj.value < 24 else bytes((0xF8, obj.value)))
    elif isinstance(obj, np.generic):
        _encode(obj.item(), out)
    else:
        raise TypeError(f"cannot CBOR-encode {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` (None, bool, int, float, str, bytes-like, list/tuple, mapping,
    :class:`Tag`, :class:`Simple`, NumPy scalars) with minimal-length heads, map order
    kept and floats shrunk to their shortest exact width."""
    out: list[Buffer] = []
    _encode(obj, out)
    return b"".join(out)
