"""What one device server process binds its device class to (survives ``Init``).

The Tango library instantiates the device, so the pipeline it maps is handed over through
the generated class: :func:`actors.tango.device.build_device_class` stores one
:class:`Session` on it. One device per server process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.config import PipelineConfig
from actors.tango.control import Control
from actors.tango.declare import Declarations, declare

#: the device's own attribute and command names (generated names must not clash)
RESERVED = (
    "State", "Status", "Init", "received_frames", "processed_frames", "dropped_frames",
    "lost_frames", "rejected_frames", "frame_rate", "processing_rate", "acquisition",
    "filename", "filepath", "file_index", "previous_file_index", "live_period",
    "stop_timeout", "start_receiver", "stop_receiver", "abort_receiver", "reset_pedestal",
    "update_images_events", "Start", "Stop", "Abort")

DEFAULT_SERIES_LENGTH = 1000


@dataclass
class Session:
    """The pipeline control, the declarations and the device's own settings."""

    config: PipelineConfig
    control: Control
    declarations: Declarations
    params: dict[str, Any]  # Tango attribute name -> current (pipeline) value
    filename: str
    filepath: str
    file_index: int
    live_period: float
    stop_timeout: float
    busy: str | None = None  # the command in progress (start/stop are not re-entrant)
    fault: str | None = None  # the last command failure, until the next success
    file_indices: dict[int, int] = field(default_factory=dict)  # acquisition -> file index

    @classmethod
    def create(cls, config: PipelineConfig, control: Control,
               series_length: int = DEFAULT_SERIES_LENGTH) -> Session:
        decl = declare(control.outputs_spec(), control.parameters(),
                       geometry_known=config.source.geometry is not None,
                       series_length=series_length, specs=config.reducers, reserved=RESERVED)
        out = config.output
        return cls(config, control, decl, {p.attr: p.value for p in decl.parameters},
                   out.filename, out.directory, next_file_index(out.directory, out.filename),
                   config.live_period, config.acquisition_timeout)

    def acquisition_ended(self, acquisition: int | None) -> None:
        """The next acquisition gets the next file index (once per started acquisition)."""
        index = self.file_indices.pop(acquisition, None) if acquisition is not None else None
        if index is not None and self.file_index <= index:
            self.file_index = index + 1


def next_file_index(directory: str, filename: str) -> int:
    """One more than the largest ``{filename}_{index}.h5`` (or ``.nxs``) present, else 1."""
    pattern = re.compile(rf"^{re.escape(filename)}_(\d+)\.(?:h5|nxs)$")
    try:
        names = [p.name for p in Path(directory).iterdir()]
    except OSError:
        return 1
    found = [int(m.group(1)) for m in map(pattern.match, names) if m]
    return max(found) + 1 if found else 1
