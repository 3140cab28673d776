"""One acquisition as a NeXus entry (h5py).

Layout (``N`` = output name, sanitised for HDF5; the original is kept in ``rayline_name``)::

    /                         @default="entry"  @NX_class="NXroot"  @creator="rayline"
    /entry                    NXentry  @default=<first image, else first NXdata>
        title, start_time, end_time (ISO 8601), duration (s), program_name (@version),
        entry_identifier, acquisition, outcome, error?, warnings?, file_index?,
        definition? ("NXmx" for a DECTRIS stream), end_time_estimated?
        instrument/, source/, sample/: the detector as the stream described it
                              (see :mod:`actors.output.instrument`)
        N/   (image)          NXdata  @signal="data" @axes=["y","x"]: data, y, x (pixel index)
        N/   (spectrum)       NXdata  @signal="data" @axes=["radius"|"index"]: data, radius|index
        N/   (series)         NXdata  @signal="data" @axes=["frame_number", ...]: data, frame_number
        results/              NXcollection: one field per scalar output
        calibration/          NXcollection: the calibration files converting reducers used
                              (see :mod:`actors.output.calibration`)
        settings/             NXcollection: the reducer specs and the config, json = all as JSON
        ledger/               NXcollection: received, processed, dropped (+ dropped_by_reason),
                              lost, rejected (+ rejected_by_reason), duration, ...
        metadata/             NXcollection (only when metadata is given)
        frames/               NXdata, per-frame stacks (see :mod:`actors.output.stacks`)

Every signal carries ``units`` (when the output declares one) and ``long_name``; bool values
are stored as uint8 with ``rayline_dtype = "bool"``; image, spectrum and series data are
stored in the narrowest dtype that holds them exactly, bitshuffle+LZ4 compressed when large
(:mod:`actors.output.narrow`; ``rayline_dtype`` restores the original; reading needs
``import hdf5plugin``, as EIGER data does). A spectrum or series ``N`` (or ``N_x``)
is plotted against the spectrum output ``N_radius`` when there is one of matching length.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from actors.core.acquisition import AcquisitionResult
from actors.output.calibration import write_calibration
from actors.output.errors import OutputWriteError, write_error
from actors.output.instrument import Names, link_frames, write_instrument
from actors.output.ledger import write_ledger
from actors.output.nx import iso8601, nx_group, set_attrs, to_json, write_field, write_text
from actors.output.nxdata import write_outputs
from actors.output.space import close_trimmed, reserve
from actors.output.tree import write_tree
from actors.reduce.base import OutputSpec, Series
from actors.version import __version__

logger = logging.getLogger(__name__)

#: names used by the entry itself; outputs with these names get a suffix
RESERVED = frozenset({
    "title", "start_time", "end_time", "duration", "program_name", "entry_identifier",
    "acquisition", "outcome", "error", "file_index", "results", "settings", "ledger",
    "metadata", "frames", "instrument", "source", "sample", "definition",
    "end_time_estimated", "warnings"})


def write_acquisition(path: str | os.PathLike[str], result: AcquisitionResult,
                      specs: Sequence[OutputSpec], settings: Mapping[str, Any], *,
                      metadata: Mapping[str, Any] | None = None, file_index: int | None = None,
                      title: str | None = None, names: Names | None = None) -> Path:
    """Create ``path`` (never overwriting: FileExistsError) and write the acquisition.

    On any failure the file this call created is removed again (no partial files) and the
    error is raised (:class:`OutputWriteError` for I/O, with the path and errno text).
    """
    path = Path(path)
    file = create_file(path)
    try:
        write_entry(file, result, specs, settings, metadata=metadata, file_index=file_index,
                    title=title, names=names)
        close_trimmed(file)
    except BaseException as exc:
        _discard(file, path)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise write_error("cannot write", path, exc) from exc
        raise
    return path


def create_file(path: Path) -> h5py.File:
    """A new HDF5 file at ``path``; FileExistsError if anything is there already."""
    try:
        return h5py.File(path, "x")
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path} already exists; rayline never "
                              "overwrites a file", str(path)) from None
    except OSError as exc:
        _remove_if_empty(path)  # the open succeeded but the first write did not
        raise write_error("cannot create", path, exc) from exc


def _discard(file: h5py.File, path: Path) -> None:
    try:
        file.close()
    except (OSError, RuntimeError) as exc:
        logger.debug("closing %s after a failure: %s", path, exc)
    path.unlink(missing_ok=True)


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()


def write_entry(file: h5py.File, result: AcquisitionResult, specs: Sequence[OutputSpec],
                settings: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None,
                file_index: int | None = None, title: str | None = None,
                names: Names | None = None) -> h5py.Group:
    """Fill ``/entry`` of an open file (``/entry/frames`` may already be there).

    ``names`` are the instrument, source and sample names (the stream cannot give them).

    The disk space is reserved first (:func:`actors.output.space.reserve`): a full disk
    raises before anything is written, leaving the file as it was.
    """
    reserve(file, estimate_bytes(result, settings, metadata))
    set_attrs(file, NX_class="NXroot", default="entry", file_name=os.path.basename(
        file.filename), file_time=iso8601(time.time()), creator="rayline",
        creator_version=__version__, HDF5_Version=h5py.version.hdf5_version,
        h5py_version=h5py.version.version)
    entry = nx_group(file, "entry", "NXentry")
    _write_header(entry, result, file_index, title)
    plots = write_outputs(entry, result.outputs, specs, reserved=RESERVED)
    write_instrument(entry, result.detector, names or Names())
    write_calibration(entry, settings)
    link_frames(entry)
    group = nx_group(entry, "settings", "NXcollection")
    write_text(group, "json", to_json(settings), rayline_encoding="json",
               long_name="all settings as JSON")
    write_tree(group, settings)
    write_ledger(nx_group(entry, "ledger", "NXcollection"), result.ledger, result.duration)
    if metadata:
        write_tree(nx_group(entry, "metadata", "NXcollection"), metadata)
    default = next((n for n, k in plots if k == "image"), plots[0][0] if plots else None)
    if default is None and "frames" in entry:
        default = "frames"
    if default is not None:
        entry.attrs["default"] = default
    return entry


def estimate_bytes(result: AcquisitionResult, settings: Mapping[str, Any],
                   metadata: Mapping[str, Any] | None) -> int:
    """An upper bound of what :func:`write_entry` adds to a file (data + HDF5 overhead)."""
    data = 0
    for value in result.outputs.values():
        if isinstance(value, Series):
            data += np.asarray(value.values).nbytes + np.asarray(value.frame_numbers).nbytes
            data += 8 * max(np.asarray(value.values).shape[1:], default=0)
        else:
            array = np.asarray(value)
            data += array.nbytes + 8 * sum(array.shape)  # + the axes
    text = len(to_json(settings)) + len(to_json(metadata or {})) + len(to_json(result.ledger))
    fields = len(result.outputs) + text // 16  # a few KiB of object header per field, at most
    return int(1.1 * (data + 4 * text)) + 4096 * fields


def _write_header(entry: h5py.Group, result: AcquisitionResult, file_index: int | None,
                  title: str | None) -> None:
    write_text(entry, "title", title or f"rayline acquisition {result.acquisition}")
    write_text(entry, "start_time", iso8601(result.started))
    write_text(entry, "end_time", iso8601(result.finished))
    write_field(entry, "duration", float(result.duration), units="s")
    write_text(entry, "program_name", "rayline", version=__version__)
    write_text(entry, "entry_identifier", str(result.acquisition))
    write_field(entry, "acquisition", np.int64(result.acquisition),
                long_name="acquisition number")
    write_text(entry, "outcome", result.outcome)
    if result.error:
        write_text(entry, "error", result.error)
    if result.warnings:  # e.g. a MOENCH pedestal without its dark run
        write_text(entry, "warnings", "\n".join(result.warnings))
    if file_index is not None:
        write_field(entry, "file_index", np.int64(file_index))
