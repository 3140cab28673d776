"""The acquisition files of a pipeline: naming, index bookkeeping, failures kept in memory.

One :class:`AcquisitionWriter` per results stage. Per acquisition:

1. :meth:`~AcquisitionWriter.prepare` reserves the next free index (with per-frame stacks
   on, it also creates the file exclusively, so the name is taken from the start);
2. :meth:`~AcquisitionWriter.append_frames` per batch, in frame order (stacks on only);
3. :meth:`~AcquisitionWriter.finish` writes the results and returns the path.

A write that fails (disk full, permission denied, a directory that cannot be created)
logs one error naming the path and the errno text, records it in ``result.error`` and
returns None: the results stay in memory, untouched. An existing file is never
overwritten: the index moves on to the next free one.

``filename``, ``directory`` and ``file_index`` may be changed at any time (the Tango device
exposes them as the seed's ``filename``, ``filepath`` and ``file_index``); a change during an
acquisition applies to the next one. ``previous_file_index`` is ``file_index - 1``, as in the
seed ("for sardana"): after an acquisition it is the index of the file just written.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from actors.config import OutputConfig, confine
from actors.core.acquisition import AcquisitionResult
from actors.output.errors import OutputWriteError, describe_os_error
from actors.output.instrument import Names
from actors.output.naming import (
    file_path,
    free_index,
    next_file_index,
    validate_directory,
    validate_filename,
    validate_index,
)
from actors.output.nexus import create_file, write_entry
from actors.output.nx import nx_group
from actors.output.space import close_trimmed
from actors.output.stacks import FrameStackWriter
from actors.reduce.base import OutputSpec

logger = logging.getLogger(__name__)

#: how many taken names finish() skips when files appear under it (another writer)
MAX_SKIPS = 1000


@dataclass
class _Current:
    """The acquisition between prepare() and finish()."""

    acquisition: int
    index: int
    path: Path
    file: h5py.File | None = None
    stack: FrameStackWriter | None = None
    frames_error: str | None = None
    frames_written: int = 0


class AcquisitionWriter:
    """Writes one NeXus file per acquisition under ``config.directory``."""

    def __init__(self, config: OutputConfig) -> None:
        self.enabled = config.enabled
        self.frames = config.frames
        self.names = Names(config.instrument_name, config.source_name, config.sample_name)
        self.roots = config.roots()
        self._directory = confine(validate_directory(config.directory), self.roots, "directory")
        self._filename = validate_filename(config.filename)
        self._index = next_file_index(self._directory, self._filename)
        self._pending_index: int | None = None  # set during an acquisition
        self._rescan = False
        self._current: _Current | None = None
        self._lock = threading.Lock()

    # -- settings (Tango: filename, filepath, file_index, previous_file_index) ------------
    @property
    def filename(self) -> str:
        return self._filename

    @filename.setter
    def filename(self, value: str) -> None:
        self._filename = validate_filename(value, "filename")
        self._rediscover()

    @property
    def directory(self) -> Path:
        return self._directory

    @directory.setter
    def directory(self, value: str | os.PathLike[str]) -> None:
        self._directory = confine(validate_directory(value, "filepath"), self.roots)
        self._rediscover()

    @property
    def file_index(self) -> int:
        """The index in use (during an acquisition) or of the next file."""
        with self._lock:
            return self._pending_index if self._pending_index is not None else self._index

    @file_index.setter
    def file_index(self, value: int) -> None:
        index = validate_index(value, "file_index")
        with self._lock:
            if self._current is not None:
                self._pending_index, self._rescan = index, False
            else:
                self._index = index

    @property
    def previous_file_index(self) -> int:
        return self.file_index - 1

    @property
    def path(self) -> Path:
        """The file of the current acquisition, else the file the next one would get."""
        current = self._current
        if current is not None:
            return current.path
        return file_path(self._directory, self._filename, self.file_index)

    @property
    def free_bytes(self) -> int | None:
        """Free space where the files go (nearest existing parent), None if unknown."""
        path = self._directory.absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    def _rediscover(self) -> None:
        with self._lock:
            if self._current is not None:
                self._rescan, self._pending_index = True, None
            else:
                self._index = next_file_index(self._directory, self._filename)

    # -- one acquisition -------------------------------------------------------------------
    def prepare(self, acquisition: int) -> tuple[int, Path]:
        """Reserve the next free index for ``acquisition``; returns ``(index, path)``.

        With per-frame stacks on, the file is created here (exclusively); a failure is
        logged, stacks are skipped, and :meth:`finish` tries again.
        """
        if self._current is not None:
            logger.warning("acquisition %d was never finished; its file %s is closed as is",
                           self._current.acquisition, self._current.path)
            self.close()
        with self._lock:
            index = free_index(self._directory, self._filename, self._index)
            self._index = index
            current = _Current(acquisition, index, file_path(self._directory, self._filename,
                                                             index))
            self._current = current
        if self.enabled and self.frames:
            self._create_early(current)
        return current.index, current.path

    def _create_early(self, current: _Current) -> None:
        try:
            current.path.parent.mkdir(parents=True, exist_ok=True)
            current.file = self._create_free(current)
        except OSError as exc:
            current.frames_error = (f"cannot create {current.path} for per-frame stacks: "
                                    f"{describe_os_error(exc)}; frames are not stored")
            logger.error("%s", current.frames_error)
            return
        nx_group(current.file, "entry", "NXentry")

    def append_frames(self, frames: npt.NDArray[Any], frame_numbers: npt.ArrayLike) -> bool:
        """Store a block of frames (in frame order); False when stacks are off or failed.

        A write failure is logged once and ends the stacks of this acquisition; the
        results are still written by :meth:`finish`.
        """
        current = self._current
        if not (self.enabled and self.frames) or current is None or current.file is None \
                or current.frames_error is not None:
            return False
        frames = np.asarray(frames)
        if frames.ndim != 3:
            raise ValueError(f"frames must be (n, rows, cols), got shape {frames.shape}")
        try:
            if current.stack is None:
                current.stack = FrameStackWriter(current.file["entry"], frames.shape[1:3],
                                                 frames.dtype)
            current.stack.append(frames, frame_numbers)
            current.frames_written += len(frames)
        except OSError as exc:
            reason = exc.strerror if isinstance(exc, OutputWriteError) else (
                f"cannot store frames in {current.path}: {describe_os_error(exc)}")
            current.frames_error = f"{reason}; frames after this are not stored"
            logger.error("%s", current.frames_error)
            return False
        return True

    def finish(self, result: AcquisitionResult, specs: Sequence[OutputSpec],
               settings: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
               ) -> Path | None:
        """Write ``result``; its path (also in ``result.file``), or None on failure.

        On failure ``result.error`` says why and ``result.outputs`` are left as they are.
        Without a prior :meth:`prepare` the index is reserved here.
        """
        if self._current is None:
            self.prepare(result.acquisition)
        current = self._current
        assert current is not None
        path: Path | None = None
        try:
            if self.enabled:
                path = self._write(current, result, specs, settings, metadata)
        except Exception as exc:
            self._failed(current, result, exc)
        finally:
            self._done(current)
        if path is not None:
            result.file = str(path)
            if current.frames_error and not result.error:
                result.error = current.frames_error
        return path

    def _write(self, current: _Current, result: AcquisitionResult,
               specs: Sequence[OutputSpec], settings: Mapping[str, Any],
               metadata: Mapping[str, Any] | None) -> Path:
        if current.file is None:  # no stacks (or their file could not be created)
            current.path.parent.mkdir(parents=True, exist_ok=True)
            current.file = self._create_free(current)
            write_entry(current.file, result, specs, settings, metadata=metadata,
                        file_index=current.index, names=self.names)
            file, current.file = current.file, None
            close_trimmed(file)
            path = current.path
        else:
            if current.stack is not None:
                current.stack.close()
            write_entry(current.file, result, specs, settings, metadata=metadata,
                        file_index=current.index, names=self.names)
            file, current.file = current.file, None
            close_trimmed(file)
            path = current.path
        logger.info("acquisition %d written to %s", result.acquisition, path)
        return path

    def _create_free(self, current: _Current) -> h5py.File:
        """Create the reserved file, moving on to the next free index if it appeared."""
        for _ in range(MAX_SKIPS):
            try:
                return create_file(current.path)
            except FileExistsError:
                logger.warning("%s appeared since its index was reserved; using the next "
                               "free index", current.path)
                with self._lock:
                    current.index = free_index(current.path.parent, self._filename,
                                               current.index)
                    current.path = file_path(current.path.parent, self._filename,
                                             current.index)
        raise FileExistsError(errno.EEXIST, "no free file name", str(current.path))

    def _failed(self, current: _Current, result: AcquisitionResult, exc: Exception) -> None:
        """Keep a file that holds frames (valid as of its last flush), else remove the
        partial file; log one error."""
        if current.file is not None:
            _close_quietly(current.file)
            current.file = None
            if not current.frames_written:  # nothing in it worth keeping
                current.path.unlink(missing_ok=True)
        message = (f"cannot write acquisition {result.acquisition} to {current.path}: "
                   f"{describe_os_error(exc)}; the results are kept in memory")
        # an I/O failure is explained by its errno; anything else is a bug: keep the trace
        logger.error("%s", message, exc_info=None if isinstance(exc, OSError) else exc)
        result.error = f"{result.error}; {message}" if result.error else message

    def _done(self, current: _Current) -> None:
        """Advance the index past a file that now exists; apply pending changes."""
        with self._lock:
            used = os.path.lexists(current.path)
            self._index = current.index + 1 if used else current.index
            if self._pending_index is not None:
                self._index = self._pending_index
            elif self._rescan:
                self._index = next_file_index(self._directory, self._filename)
            self._pending_index, self._rescan, self._current = None, False, None

    #: public names of the file settings (the seed's Tango attributes) -> writer attributes
    SETTINGS = {"filename": "filename", "filepath": "directory", "file_index": "file_index"}

    def state(self) -> dict[str, Any]:
        """The file settings as the seed's filename, filepath, file_index attributes show them."""
        free = self.free_bytes
        return {"enabled": self.enabled, "filename": self.filename,
                "filepath": str(self.directory), "file_index": self.file_index,
                "previous_file_index": self.previous_file_index, "path": str(self.path),
                "space_available": None if free is None else free / 2**30}

    def set(self, name: str, value: Any) -> dict[str, Any]:
        """Change ``filename``, ``filepath`` or ``file_index`` (applies to the next file)."""
        if name not in self.SETTINGS:
            raise ValueError(f"unknown output setting {name!r}; one of {sorted(self.SETTINGS)}")
        setattr(self, self.SETTINGS[name], value)
        return self.state()

    def close(self) -> None:
        """Close a prepared, unfinished acquisition's file as it is (frames kept)."""
        current = self._current
        if current is None:
            return
        if current.stack is not None:
            try:
                current.stack.close()
            except OSError as exc:
                logger.error("%s", exc.strerror)
        if current.file is not None:
            _close_quietly(current.file)
            current.file = None
        self._done(current)


def _close_quietly(file: h5py.File) -> None:
    try:
        close_trimmed(file)
    except (OSError, RuntimeError) as exc:
        logger.debug("closing %s after a failure: %s", file, exc)
