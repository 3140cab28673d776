"""The ingest process's ring of shared-memory slots, and which of them are free.

The ingest owns its ring: it creates the blocks through the driver's manager (which unlinks
them whatever happens) and releases them when a larger ring replaces them. A slot is *free*
or *outstanding* (holding a batch handed to the driver, until the driver sends it back with
:class:`~actors.backends.local.messages.Free` once the batch has left the pipeline). The
ingest stage never hands on more than ``max_inflight`` batches, so a ring of
``max_inflight`` slots always has one free for the next batch once its room is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.backends.local.shm import SlotManager
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)


class IngestSlots:
    """Slot bookkeeping of the ingest process (single-threaded, on its event loop)."""

    def __init__(self, manager: SlotManager, on_ring: Callable[[int, tuple[str, ...]], None],
                 first_generation: int = 0) -> None:
        self.manager = manager
        self.on_ring = on_ring  # told about every new ring (generation, block names)
        self.generation = first_generation
        self.slot_bytes = 0
        self.blocks: list[SharedMemory] = []
        self._bytes: list[npt.NDArray[np.uint8]] = []
        self.free: deque[int] = deque()
        self.outstanding: set[int] = set()
        self._changed = asyncio.Event()

    # -- the ring ----------------------------------------------------------------------------
    async def ensure(self, slot_bytes: int, slots: int) -> None:
        """A ring of ``slots`` blocks of at least ``slot_bytes`` (a new, larger one once every
        slot of the old one is back; the workers drop their maps of it when they see the new
        generation)."""
        if self.slot_bytes >= slot_bytes:
            return
        while self.outstanding:
            await self.changed()
        self.release()
        self.generation += 1
        self.blocks = [self.manager.new_block(slot_bytes) for _ in range(slots)]
        self.slot_bytes = slot_bytes
        self._bytes = [np.ndarray((slot_bytes,), dtype=np.uint8, buffer=b.buf)
                       for b in self.blocks]
        self.free = deque(range(slots))
        self.on_ring(self.generation, tuple(b.name for b in self.blocks))
        logger.info("ring %d: %d slots of %.1f MB", self.generation, slots, slot_bytes / 1e6)

    def release(self) -> None:
        """Drop every view, unmap and unlink the blocks (before exit or a new ring)."""
        self._bytes = []
        self.free.clear()
        for block in self.blocks:
            block.close()
            try:
                self.manager.release(block.name)
            except (OSError, EOFError) as exc:  # the manager is gone: it unlinked them
                logger.debug("ring block %s not released: %s", block.name, exc)
        self.blocks = []
        self.slot_bytes = 0

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

    def name(self, slot: int) -> str:
        return self.blocks[slot].name

    def returned(self, generation: int, slot: int) -> None:
        """The driver is done with an outstanding slot."""
        if generation != self.generation:
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
