"""Per-frame stacks: ``(n, rows, cols)`` blocks appended to a chunked, compressed dataset.

The stack is an NXdata group (default ``frames``) holding ``data`` (``(N, rows, cols)``,
chunks of one frame, bitshuffle+LZ4 via hdf5plugin, filter id 32008, resizable along axis
0) and ``frame_number`` (int64), ``@signal = "data"``, ``@axes = ["frame_number", ".", "."]``.

Blocks are appended in frame order (strictly increasing frame numbers). After every block
the file is flushed, so the file on disk is valid and holds every frame appended so far.
The disk space of a block is reserved before it is written (:mod:`actors.output.space`):
a full disk fails there, before HDF5 touches the file, the writer refuses further appends
and :class:`OutputWriteError` says where and why; the file stays valid, truncated to the
blocks appended before. (A failure inside HDF5 itself, e.g. EIO, is handled the same way
on a best-effort basis: the datasets are shrunk back to the complete blocks.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import h5py
import hdf5plugin
import numpy as np
import numpy.typing as npt

from actors.output.errors import OutputWriteError, write_error
from actors.output.nx import nx_group, set_attrs, write_text
from actors.output.space import close_trimmed, reserve
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)

Compression = Literal["bitshuffle-lz4", "none"]
BITSHUFFLE_FILTER_ID = 32008


class FrameStackWriter:
    """Appends frame blocks to ``<target>/<name>`` (a group, or a new file at a path).

    With a path the writer creates the file exclusively (never overwriting), puts the stack
    under ``/entry/<name>`` and closes the file in :meth:`close`; with a group it only
    flushes the group's file.
    """

    def __init__(self, target: h5py.Group | str | os.PathLike[str],
                 shape: tuple[int, int] | Geometry, dtype: npt.DTypeLike | None = None, *,
                 compression: Compression | None = "bitshuffle-lz4", name: str = "frames",
                 units: str = "", flush: bool = True) -> None:
        if isinstance(shape, Geometry):
            geometry = shape
            shape, dtype = geometry.shape, geometry.dtype if dtype is None else dtype
        if dtype is None:
            raise ValueError("a frame stack needs a dtype (or a Geometry)")
        rows, cols = (int(shape[0]), int(shape[1]))
        if rows <= 0 or cols <= 0:
            raise ValueError(f"frame stack shape must be positive, got {shape}")
        self.shape = (rows, cols)
        self.dtype = np.dtype(dtype)
        self._flush = flush
        self._owned: h5py.File | None = None
        parent = self._open(target) if not isinstance(target, h5py.Group) else target
        self.file_name: str = parent.file.filename
        try:
            self._create(parent, name, compression, units)
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise
        self.count = 0
        self.last_frame: int | None = None
        self.failed = False
        self.closed = False

    def _create(self, parent: h5py.Group, name: str, compression: Compression | None,
                units: str) -> None:
        if name in parent:
            raise ValueError(f"{parent.name.rstrip('/')}/{name} already exists in "
                             f"{self.file_name}")
        rows, cols = self.shape
        self.group = nx_group(parent, name, "NXdata")
        set_attrs(self.group, signal="data", axes=["frame_number", ".", "."],
                  frame_number_indices=np.int64(0))
        filters: dict[str, Any] = {}
        if compression == "bitshuffle-lz4":
            filters = dict(hdf5plugin.Bitshuffle(cname="lz4"))
        self.data = self.group.create_dataset(
            "data", shape=(0, rows, cols), maxshape=(None, rows, cols), chunks=(1, rows, cols),
            dtype=self.dtype, **filters)
        set_attrs(self.data, units=units, long_name="frames as received")
        self.frame_number = self.group.create_dataset(
            "frame_number", shape=(0,), maxshape=(None,), chunks=(4096,), dtype=np.int64)
        set_attrs(self.frame_number, long_name="frame number (0-based within the acquisition)")

    def _open(self, path: str | os.PathLike[str]) -> h5py.Group:
        try:
            self._owned = h5py.File(Path(path), "x")
        except FileExistsError:
            raise FileExistsError(17, f"{path} already exists; rayline never overwrites a "
                                  "file", str(path)) from None
        except OSError as exc:
            raise write_error("cannot create", path, exc) from exc
        set_attrs(self._owned, NX_class="NXroot", default="entry", creator="rayline")
        entry = nx_group(self._owned, "entry", "NXentry")
        entry.attrs["default"] = "frames"
        write_text(entry, "program_name", "rayline")
        return entry

    # -- appending -----------------------------------------------------------------------
    def append(self, frames: npt.NDArray[Any], frame_numbers: npt.ArrayLike) -> None:
        """Append ``(n, rows, cols)`` frames and their frame numbers (increasing)."""
        frames = np.asarray(frames)
        numbers = np.asarray(frame_numbers, dtype=np.int64)
        self._check(frames, numbers)
        n = frames.shape[0]
        if n == 0:
            return
        start = self.count
        try:
            reserve(self.group.file, frames.nbytes + numbers.nbytes)
        except OSError as exc:  # nothing written: the file is as after the last append
            self.failed = True
            raise write_error(f"no space for frames {numbers[0]}..{numbers[-1]} in "
                              f"{self.group.name} of", self.file_name, exc) from exc
        try:
            self.data.resize(start + n, axis=0)
            self.data[start:start + n] = frames
            self.frame_number.resize(start + n, axis=0)
            self.frame_number[start:start + n] = numbers
            if self._flush:
                self.group.file.flush()
        except (OSError, RuntimeError) as exc:
            self.failed = True
            self._truncate(start)
            raise write_error(f"cannot append frames {numbers[0]}..{numbers[-1]} to "
                              f"{self.group.name} of", self.file_name, exc) from exc
        self.count = start + n
        self.last_frame = int(numbers[-1])

    def _check(self, frames: npt.NDArray[Any], numbers: npt.NDArray[np.int64]) -> None:
        if self.closed:
            raise ValueError(f"frame stack of {self.file_name} is closed")
        if self.failed:
            raise OutputWriteError(5, f"frame stack of {self.file_name} failed earlier; no "
                                   "further frames are written", self.file_name)
        if frames.ndim != 3 or frames.shape[1:] != self.shape:
            raise ValueError(f"frames must be (n, {self.shape[0]}, {self.shape[1]}), got "
                             f"{frames.shape}")
        if numbers.shape != (frames.shape[0],):
            raise ValueError(f"{numbers.shape} frame numbers for {frames.shape[0]} frames")
        if not np.can_cast(frames.dtype, self.dtype, "safe"):
            raise ValueError(f"frames of dtype {frames.dtype} do not fit a {self.dtype} stack")
        increasing = numbers.size < 2 or bool(np.all(np.diff(numbers) > 0))
        after_last = self.last_frame is None or numbers.size == 0 or numbers[0] > self.last_frame
        if not (increasing and after_last):
            raise ValueError(f"frame numbers must increase across appends (last "
                             f"{self.last_frame}, got {numbers[:1].tolist()}..)")

    def _truncate(self, count: int) -> None:
        """Best effort: shrink back to ``count`` complete frames and flush."""
        try:
            self.data.resize(count, axis=0)
            self.frame_number.resize(count, axis=0)
            self.group.file.flush()
        except (OSError, RuntimeError) as exc:  # the disk is still full: the last flush holds
            logger.debug("could not shrink the frame stack of %s back: %s", self.file_name,
                         exc)

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Flush (and close the file this writer created); idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._owned is not None:
                close_trimmed(self._owned)
            elif not self.failed:
                self.group.file.flush()
        except (OSError, RuntimeError) as exc:
            if self.failed:  # already reported by append; the last flush holds
                logger.debug("closing the failed frame stack of %s: %s", self.file_name, exc)
                return
            raise write_error("cannot close the frame stack of", self.file_name, exc) from exc

    def __enter__(self) -> FrameStackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
