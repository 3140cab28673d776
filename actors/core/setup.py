"""Everything a worker needs to turn a :class:`FrameBatch` into partials, as one value.

Built by the ingest once the frame geometry is known, stored once (``ray.put`` or pickled to
the local workers), and cached by workers by (acquisition, version), so a restarted worker
rebuilds it from the same stored value (:class:`actors.process.worker.Worker`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.core.chain import ReducerChain
from actors.wire.model import Geometry
from actors.wire.reorder import IndexArray, load_map

#: partial key under which a worker also returns the decoded frames (per-frame stacks)
FRAMES_KEY = "__frames__"
#: partial key under which a worker reports frames it could not use, by reason
DROPPED_KEY = "__dropped__"


@dataclass(frozen=True)
class ChainSetup:
    """Reducer specs + geometry + optional reorder map spec and pixel mask, versioned."""

    acquisition: int
    version: int
    specs: tuple[dict[str, Any], ...]
    geometry: Geometry
    reorder: str = "none"
    mask: npt.NDArray[np.bool_] | None = None
    first_batch: int = 0  # batches with index >= first_batch use this version
    keep_frames: bool = False  # also return the decoded frames (output.frames)

    def build(self) -> ReducerChain:
        return ReducerChain.from_specs(self.specs, self.geometry)

    def reorder_map(self) -> IndexArray | None:
        return load_map(self.reorder, self.geometry.shape)
