"""Frame batches: assembled from decoded headers by the ingest, decoded by the workers.

A :class:`FrameBatch` is what enters the object store (Ray) or a shared-memory slot
(local backend): either the raw pixels ``(n, rows, cols)``, or, for compressed streams,
the still-compressed payloads back to back with their offsets, so decompression runs in
the processing workers. :class:`BatchAssembler` groups images into batches: at most
``max_frames``, cut where the stateful reducers need it (:class:`BatchCutter`), and the
caller flushes it when ``max_delay`` has passed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import Batch
from actors.reduce.cutter import BatchCutter
from actors.wire.errors import DecodeError
from actors.wire.model import Buffer, Encoding, Geometry, Image, Payload
from actors.wire.pixels import decode_pixels
from actors.wire.reorder import IndexArray, apply_map


def stacked(views: tuple[npt.NDArray[Any], ...], parts: int = 1) -> npt.NDArray[Any]:
    """The frames ``(n, rows, cols)``: a read-only strided view when the frames lie
    evenly spaced in one buffer (as ``ray.put`` lays out a tuple of arrays: each buffer
    64-byte aligned, back to back), else a stacked copy. ``parts``: each frame is that many
    consecutive row chunks (:meth:`FrameBatch.chunked`).

    The view reaches the later frames through the first frame's buffer: keep ``views``
    alive as long as the view (a :class:`FrameBatch` holds them).
    """
    if parts > 1:
        groups = [views[i:i + parts] for i in range(0, len(views), parts)]
        whole = [_joined(g) for g in groups]
        if any(w is None for w in whole):  # (not laid out back to back: copy)
            return np.stack([np.concatenate(g) for g in groups])
        views = tuple(w for w in whole if w is not None)
    first = views[0]
    if len(views) == 1:
        return first[None]
    ptrs = [v.__array_interface__["data"][0] for v in views]
    step = ptrs[1] - ptrs[0]
    even = (step >= first.nbytes and step % first.itemsize == 0
            and all(v.shape == first.shape and v.dtype == first.dtype
                    and v.flags.c_contiguous for v in views)
            and all(b - a == step for a, b in zip(ptrs, ptrs[1:])))
    if not even:
        return np.stack(views)  # the worker's copy (the ingest made none)
    return np.lib.stride_tricks.as_strided(first, shape=(len(views), *first.shape),
                                           strides=(step, *first.strides), writeable=False)


def _joined(chunks: tuple[npt.NDArray[Any], ...]) -> npt.NDArray[Any] | None:
    """One frame from its row chunks when they lie back to back (a view), else None."""
    first = chunks[0]
    at = first.__array_interface__["data"][0]
    for c in chunks:
        if c.__array_interface__["data"][0] != at or not c.flags.c_contiguous or \
                c.dtype != first.dtype or c.shape[1:] != first.shape[1:]:
            return None
        at += c.nbytes
    rows = sum(c.shape[0] for c in chunks)
    return np.lib.stride_tricks.as_strided(first, shape=(rows, *first.shape[1:]),
                                           strides=first.strides, writeable=False)


def chunk_rows(rows: int, row_bytes: int, limit: int) -> int:
    """Rows per chunk for frames of ``rows`` rows of ``row_bytes``: the most that stay
    under ``limit`` bytes and fill whole 64-byte lines (so the chunks of a frame lie back to
    back in the object store); ``rows`` if the frame is under the limit already."""
    if rows * row_bytes <= limit:
        return rows
    line = 64 // math.gcd(row_bytes, 64)  # rows per whole number of 64-byte lines
    return max(line, limit // row_bytes // line * line)


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames of one acquisition, as stored between ingest and workers."""

    acquisition: int
    index: int
    frame_numbers: npt.NDArray[np.int64]
    geometry: Geometry
    encoding: Encoding
    pixels: npt.NDArray[Any] | None = None  # RAW: (n, rows, cols)
    blobs: npt.NDArray[np.uint8] | None = None  # compressed: payloads back to back
    offsets: npt.NDArray[np.int64] | None = None  # (n + 1,) into blobs
    views: tuple[npt.NDArray[Any], ...] | None = None  # RAW, zero-copy: one (rows, cols) each
    parts: int = 1  # views per frame (row chunks, :meth:`chunked`)

    @property
    def n(self) -> int:
        return int(self.frame_numbers.shape[0])

    @property
    def first_frame(self) -> int:
        return int(self.frame_numbers[0])

    @property
    def last_frame(self) -> int:
        return int(self.frame_numbers[-1])

    @property
    def nbytes(self) -> int:
        if self.views is not None:
            return sum(int(v.nbytes) for v in self.views)
        data = self.pixels if self.pixels is not None else self.blobs
        return int(data.nbytes) if data is not None else 0

    def without_data(self) -> FrameBatch:
        """This batch's description without its pixels (what the ingest keeps of a batch it
        has stored, so the received messages are freed at once)."""
        return replace(self, pixels=None, blobs=None, offsets=None, views=None)

    def chunked(self, limit: int) -> FrameBatch:
        """The same batch with each raw frame larger than ``limit`` bytes cut into row
        chunks (views, no copy). ``ray.put`` copies a buffer over 1 MiB with six threads
        started for it: per frame, on a 2-core host, that costs more CPU than the copy."""
        if self.views is None or self.parts != 1 or not self.views:
            return self
        rows, cols = self.views[0].shape
        step = chunk_rows(rows, cols * self.views[0].itemsize, limit)
        if step >= rows:
            return self
        cut = tuple(v[r:r + step] for v in self.views for r in range(0, rows, step))
        return replace(self, views=cut, parts=-(-rows // step))

    def frames(self, reorder_map: IndexArray | None = None) -> npt.NDArray[Any]:
        """Decoded pixels ``(n, rows, cols)`` (decompressing and reordering as needed);
        a DecodeError if a frame cannot be decoded (:meth:`decoded` drops it instead)."""
        out, bad = self.decoded(reorder_map)
        if bad:
            raise next(iter(bad.values()))
        return out

    def decoded(self, reorder_map: IndexArray | None = None
                ) -> tuple[npt.NDArray[Any], dict[int, DecodeError]]:
        """The frames that decode, ``(k, rows, cols)``, and why the others did not (by
        position in the batch): a corrupt payload costs its own frame, not its batch."""
        bad: dict[int, DecodeError] = {}
        if self.pixels is not None:
            out = self.pixels
        elif self.views is not None:
            out = stacked(self.views, self.parts)
        else:
            assert self.blobs is not None and self.offsets is not None
            g = self.geometry
            out = np.empty((self.n, g.rows, g.cols), dtype=g.dtype)
            for i in range(self.n):
                blob = self.blobs[self.offsets[i]:self.offsets[i + 1]]
                try:
                    out[i] = decode_pixels(Payload(blob.data, self.encoding, g.shape, g.dtype))
                except DecodeError as exc:
                    bad[i] = exc
            if bad:
                out = np.delete(out, list(bad), axis=0)
        if reorder_map is not None:
            out = apply_map(out, reorder_map)
        return out, bad

    def to_batch(self, mask: npt.NDArray[np.bool_] | None = None,
                 reorder_map: IndexArray | None = None
                 ) -> tuple[Batch | None, dict[str, int]]:
        """The reducer input (None: no frame decodes) and the frames dropped, by reason."""
        frames, bad = self.decoded(reorder_map)
        dropped = Counter(str(exc.reason) for exc in bad.values())
        if not bad:
            return Batch(self.index, frames, self.frame_numbers, mask), {}
        if len(bad) == self.n:
            return None, dict(dropped)
        numbers = np.delete(self.frame_numbers, list(bad))
        return Batch(self.index, frames, numbers, mask), dict(dropped)


@dataclass
class _Open:
    frame_numbers: list[int] = field(default_factory=list)
    views: list[npt.NDArray[Any]] = field(default_factory=list)
    blobs: list[Buffer] = field(default_factory=list)
    encoding: Encoding = Encoding.RAW
    opened: float = 0.0


class BatchAssembler:
    """Groups the images of one acquisition into :class:`FrameBatch` objects.

    Raw frames are not copied at all: a batch keeps zero-copy views of the received messages
    (``ray.put``, or the copy into a shared-memory slot, then makes the only copy); compressed
    payloads are concatenated when the batch closes. ``add`` returns the batch it had to
    close (a cut or a full batch), if any.

    With ``ranges`` (one stream of a multi-module detector) a batch is a range of frame
    numbers instead: batch ``k`` holds this stream's frames ``k*ranges .. (k+1)*ranges - 1``
    (:func:`actors.core.modules.range_of`), whatever arrived of them, so the batches of every
    module for one range can be assembled together; it closes when a frame of a later range
    arrives or on :meth:`flush`, and ranges with no frame are skipped (no batch).
    """

    def __init__(self, acquisition: int, geometry: Geometry, max_frames: int,
                 epochs: list[int | None] | None = None, channel: str | None = None,
                 clock: Callable[[], float] = time.monotonic, ranges: int | None = None
                 ) -> None:
        self.acquisition = acquisition
        self.clock = clock
        self.geometry = geometry
        self.max_frames = max_frames
        self.channel = channel
        self._cutter = BatchCutter(epochs or [])
        self._open: _Open | None = None
        self.next_index = 0
        if ranges is not None and ranges < 1:
            raise ValueError(f"ranges must be >= 1 frame, got {ranges}")
        self.ranges = ranges
        self._range: int | None = None  # the range of the open batch

    @property
    def pending(self) -> int:
        """Frames in the open batch."""
        return len(self._open.frame_numbers) if self._open else 0

    @property
    def age(self) -> float:
        """Seconds since the open batch received its first frame (0 if none is open)."""
        return self.clock() - self._open.opened if self._open else 0.0

    def payload_of(self, image: Image) -> Payload:
        if self.channel is None:
            return image.payload
        try:
            return image.channels[self.channel]
        except KeyError:
            raise ValueError(f"image has no channel {self.channel!r} "
                             f"(channels: {', '.join(image.channels)})") from None

    def touch(self) -> None:
        """Start the open batch's wait again (time spent blocked does not count)."""
        if self._open is not None:
            self._open.opened = self.clock()

    def add(self, image: Image) -> FrameBatch | None:
        """Add one image (frame numbers must increase); may return a closed batch."""
        if self.ranges is not None:
            return self._add_ranged(image)
        closed = None
        if self._open is not None and self._cutter.must_cut(image.frame):
            closed = self.flush()
        payload = self.payload_of(image)
        if self._open is None:
            self._open = _Open(encoding=payload.encoding, opened=self.clock())
        elif payload.encoding is not self._open.encoding:
            if closed is not None:  # pragma: no cover - a cut already closed the batch
                raise AssertionError("two closed batches at once")
            closed = self.flush()
            self._open = _Open(encoding=payload.encoding, opened=self.clock())
        self._cutter.add(image.frame)
        op = self._open
        self._append(op, image, payload)
        if len(op.frame_numbers) >= self.max_frames:
            if closed is not None:  # max_frames >= 1 and a cut leaves 1 frame: impossible
                raise AssertionError("two closed batches at once")
            closed = self.flush()
        return closed

    def _append(self, op: _Open, image: Image, payload: Payload) -> None:
        if payload.encoding is Encoding.RAW:
            pixels = np.frombuffer(payload.data, dtype=self.geometry.dtype).reshape(
                self.geometry.shape)
            op.views.append(pixels)
        else:
            op.blobs.append(payload.data)
        op.frame_numbers.append(image.frame)

    def _add_ranged(self, image: Image) -> FrameBatch | None:
        assert self.ranges is not None
        index = image.frame // self.ranges
        if index < self.next_index or (self._range is not None and index < self._range):
            raise ValueError(f"frame {image.frame} belongs to range {index}, which has "
                             "closed")
        payload = self.payload_of(image)
        closed = None
        if self._open is not None and index == self._range and \
                payload.encoding is not self._open.encoding:
            raise ValueError(f"frame {image.frame}: {payload.encoding} inside a range of "
                             f"{self._open.encoding} frames")
        if self._open is not None and index != self._range:
            closed = self.flush()
        if self._open is None:
            self._open = _Open(encoding=payload.encoding, opened=self.clock())
            self._range = index
            self.next_index = index  # ranges nobody sent are skipped
        self._append(self._open, image, payload)
        return closed

    def flush(self) -> FrameBatch | None:
        """Close the open batch (delay expired, end of series, stop)."""
        op = self._open
        if op is None or not op.frame_numbers:
            return None
        self._open = None
        self._range = None
        self._cutter.close()
        n = len(op.frame_numbers)
        numbers = np.asarray(op.frame_numbers, dtype=np.int64)
        if op.encoding is Encoding.RAW:
            batch = FrameBatch(self.acquisition, self.next_index, numbers, self.geometry,
                               Encoding.RAW, views=tuple(op.views))
        else:
            sizes = [memoryview(b).nbytes for b in op.blobs]
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            blobs = np.empty(int(offsets[-1]), dtype=np.uint8)
            for i, b in enumerate(op.blobs):
                blobs[offsets[i]:offsets[i + 1]] = np.frombuffer(b, dtype=np.uint8)
            batch = FrameBatch(self.acquisition, self.next_index, numbers, self.geometry,
                               op.encoding, blobs=blobs, offsets=offsets)
        self.next_index += 1
        return batch

    def discard(self) -> int:
        """Drop the open batch (abort); returns how many frames it held."""
        n = self.pending
        self._open = None
        self._cutter.close()
        return n
