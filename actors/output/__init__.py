"""Acquisition files: one NeXus (HDF5) file per acquisition, optional per-frame stacks.

:class:`AcquisitionWriter` is what the results stage uses; :func:`write_acquisition` and
:class:`FrameStackWriter` are the building blocks; :mod:`actors.output.reader` reads files
back. No Ray, ZMQ or Tango here.
"""

from __future__ import annotations

from actors.output.errors import OutputWriteError
from actors.output.naming import file_path, next_file_index, validate_filename
from actors.output.nexus import write_acquisition, write_entry
from actors.output.reader import read_frames, read_ledger, read_outputs, read_settings
from actors.output.stacks import FrameStackWriter
from actors.output.writer import AcquisitionWriter

__all__ = [
    "AcquisitionWriter",
    "FrameStackWriter",
    "OutputWriteError",
    "file_path",
    "next_file_index",
    "read_frames",
    "read_ledger",
    "read_outputs",
    "read_settings",
    "validate_filename",
    "write_acquisition",
    "write_entry",
]
