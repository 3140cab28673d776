"""The ingest process's view of the ring: which shared-memory slots are free.

A slot is *free* or *outstanding* (holding a batch handed to the driver, until the driver
sends it back with :class:`~actors.backends.local.messages.Free` once the batch has left the
pipeline). The ingest stage never hands on more than ``max_inflight`` batches, so a ring of
``max_inflight`` slots always has one free for the next batch once its room is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.backends.local.shm import Attachments, RingSpec
from actors.wire.model import Geometry


class IngestSlots:
    """Slot bookkeeping of the ingest process (single-threaded, on its event loop)."""

    def __init__(self) -> None:
        self.spec: RingSpec | None = None
        self._blocks = Attachments()
        self._bytes: list[npt.NDArray[np.uint8]] = []
        self.free: deque[int] = deque()
        self.outstanding: set[int] = set()
        self._changed = asyncio.Event()

    # -- the ring ----------------------------------------------------------------------------
    def fits(self, slot_bytes: int) -> bool:
        return self.spec is not None and self.spec.slot_bytes >= slot_bytes

    @property
    def idle(self) -> bool:
        """No slot is outstanding (the ring may be replaced)."""
        return not self.outstanding

    def install(self, spec: RingSpec) -> None:
        """Map a new ring (the previous one must be idle)."""
        if not self.idle:
            raise RuntimeError("cannot replace a ring with slots in use")
        self.detach()
        self.spec = spec
        self._bytes = [np.ndarray((spec.slot_bytes,), dtype=np.uint8,
                                  buffer=self._blocks.get(name).buf) for name in spec.names]
        self.free = deque(range(spec.slots))

    def detach(self) -> None:
        """Drop every view and unmap the blocks (before exit or a new ring)."""
        self._bytes = []
        self.free.clear()
        self._blocks.close()
        self.spec = None

    # -- slots ---------------------------------------------------------------------------------
    async def take(self) -> int:
        """A free slot, now outstanding (waits until one comes back)."""
        while not self.free:
            await self.changed()
        slot = self.free.popleft()
        self.outstanding.add(slot)
        return slot

    def frames(self, slot: int, geometry: Geometry, n: int) -> npt.NDArray[Any]:
        """The first ``n`` frames of a slot as ``(n, rows, cols)``."""
        raw = self._bytes[slot][:n * geometry.nbytes]
        return raw.view(geometry.dtype).reshape(n, geometry.rows, geometry.cols)

    def bytes_of(self, slot: int) -> npt.NDArray[np.uint8]:
        return self._bytes[slot]

    def returned(self, generation: int, slot: int) -> None:
        """The driver is done with an outstanding slot."""
        if self.spec is None or generation != self.spec.generation:
            return
        if slot in self.outstanding:
            self.outstanding.discard(slot)
            self.free.append(slot)
            self._changed.set()

    async def changed(self, timeout: float = 1.0) -> None:
        """Wait until a slot comes back (or ``timeout`` s pass)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
