"""What one device server process binds its device class to (survives ``Init``).

The Tango library instantiates the device, so the pipeline it maps is handed over through
the generated class: :func:`actors.tango.device.build_device_class` stores one
:class:`Session` on it. One device per server process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.config import PipelineConfig, confine
from actors.core.api import Control
from actors.output.naming import (
    index_pattern,
    next_file_index,
    validate_directory,
    validate_filename,
    validate_index,
)
from actors.tango.declare import Declarations, declare

#: the device's own attribute and command names (generated names must not clash)
RESERVED = (
    "State", "Status", "Init", "received_frames", "processed_frames", "dropped_frames",
    "lost_frames", "rejected_frames", "frame_rate", "processing_rate", "acquisition",
    "source_names", "source_received", "source_lost", "source_rejected", "source_dropped",
    "filename", "filepath", "file_index", "previous_file_index", "live_period",
    "stop_timeout", "start_receiver", "stop_receiver", "abort_receiver", "reset_pedestal",
    "update_images_events", "Start", "Stop", "Abort", "timings", "dark_run", "record_pedestal")

DEFAULT_SERIES_LENGTH = 1000


@dataclass
class Session:
    """The pipeline control, the declarations and the device's own settings."""

    config: PipelineConfig
    control: Control
    declarations: Declarations
    filename: str
    filepath: str
    file_index: int
    live_period: float
    stop_timeout: float
    busy: str | None = None  # the start or stop command in progress
    stopping: bool = False  # busy is a stop (it may wait long: others are refused at once)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stop_done: asyncio.Future[None] | None = None  # the stop in progress (others join it)
    fault: str | None = None  # the last command failure, until the next success
    file_indices: dict[int, int] = field(default_factory=dict)  # acquisition -> file index

    @classmethod
    def create(cls, config: PipelineConfig, control: Control,
               series_length: int = DEFAULT_SERIES_LENGTH) -> Session:
        decl = declare(control.outputs_spec(), control.parameters(),
                       geometry_known=config.source.geometry is not None,
                       series_length=series_length, specs=config.reducers, reserved=RESERVED)
        out = config.output
        return cls(config, control, decl,
                   out.filename, out.directory, next_file_index(out.directory, out.filename),
                   config.live_period, config.acquisition_timeout)

    def unchanged(self, name: str, value: Any) -> bool:
        """Whether writing ``value`` to a file setting would change nothing."""
        if name == "filepath" and isinstance(value, str) and value:
            return str(Path(value)) == self.filepath
        return bool(value == getattr(self, name))

    def set_file_setting(self, name: str, value: Any) -> Any:
        """Validate and store ``filename``, ``filepath`` or ``file_index`` (ValueError says
        what is allowed); a new name or directory continues from the files present there."""
        if name == "filename":
            self.filename = validate_filename(value, name)
        elif name == "filepath":
            self.filepath = str(confine(validate_directory(value, name),
                                        self.config.output.roots()))
        else:
            self.file_index = validate_index(int(value), name)
            return self.file_index
        self.file_index = next_file_index(self.filepath, self.filename)
        return getattr(self, name)

    def acquisition_ended(self, acquisition: int | None, file: str | None = None) -> None:
        """The next acquisition gets the index after the file this one wrote; one that wrote
        none (empty, aborted, output off) leaves the index as it was, so that
        ``previous_file_index`` names a file that exists."""
        if acquisition is not None:
            self.file_indices.pop(acquisition, None)
        if file is None:
            return
        match = index_pattern(self.filename).match(Path(file).name)
        if match and self.file_index <= int(match.group(1)):
            self.file_index = int(match.group(1)) + 1
