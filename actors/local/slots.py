"""The ingest's view of the ring: free slots, the slots it holds, the ones handed on.

A slot is *free* (in :attr:`IngestSlots.free`), *held* (taken by the batch assembler for the
open batch, or for a closed batch not handed on yet) or *outstanding* (handed to the driver,
until the driver sends it back with :class:`~actors.local.messages.Free` once a worker has
finished with it). The number of outstanding slots is the work in flight: the ingest stops
reading (or drops batches) when it reaches ``max_inflight``. The ring has ``max_inflight +
2`` slots, so the assembler always finds a free one (one for the open batch, one for a
closed batch waiting for room).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.local.shm import Attachments, RingSpec
from actors.wire.model import Geometry


def ring_slots(max_inflight: int) -> int:
    """Slots per ring for a given bound on work in flight."""
    return max_inflight + 2


class IngestSlots:
    """Slot bookkeeping of the ingest process (single-threaded, on its event loop)."""

    def __init__(self) -> None:
        self.spec: RingSpec | None = None
        self._blocks = Attachments()
        self._bytes: list[npt.NDArray[np.uint8]] = []
        self._by_address: dict[int, int] = {}
        self.free: deque[int] = deque()
        self.held: set[int] = set()
        self.outstanding: dict[int, int] = {}  # slot -> frames
        self._changed = asyncio.Event()

    # -- the ring ----------------------------------------------------------------------------
    def fits(self, slot_bytes: int) -> bool:
        return self.spec is not None and self.spec.slot_bytes >= slot_bytes

    @property
    def idle(self) -> bool:
        """No slot is held or outstanding (the ring may be replaced)."""
        return not self.held and not self.outstanding

    def install(self, spec: RingSpec) -> None:
        """Map a new ring (the previous one must be idle)."""
        if not self.idle:
            raise RuntimeError("cannot replace a ring with slots in use")
        self.detach()
        self.spec = spec
        self._bytes = []
        for name in spec.names:
            view: npt.NDArray[np.uint8] = np.ndarray((spec.slot_bytes,), dtype=np.uint8,
                                                     buffer=self._blocks.get(name).buf)
            self._bytes.append(view)
        self._by_address = {_address(v): i for i, v in enumerate(self._bytes)}
        self.free = deque(range(spec.slots))

    def detach(self) -> None:
        """Drop every view and unmap the blocks (before exit or a new ring)."""
        self._bytes = []
        self._by_address = {}
        self.free.clear()
        self._blocks.close()
        self.spec = None

    # -- slots ---------------------------------------------------------------------------------
    def take(self) -> int:
        if not self.free:
            raise RuntimeError("no free shared-memory slot (ring smaller than max_inflight + 2)")
        slot = self.free.popleft()
        self.held.add(slot)
        return slot

    def pixels(self, geometry: Geometry, max_frames: int) -> npt.NDArray[Any]:
        """The batch assembler's buffer factory: a free slot as (max_frames, rows, cols)."""
        slot = self.take()
        need = max_frames * geometry.nbytes
        raw = self._bytes[slot][:need]
        return raw.view(geometry.dtype).reshape(max_frames, geometry.rows, geometry.cols)

    def bytes_of(self, slot: int) -> npt.NDArray[np.uint8]:
        return self._bytes[slot]

    def slot_of(self, array: npt.NDArray[Any]) -> int:
        """The slot an assembler buffer (or a leading view of it) lives in."""
        return self._by_address[_address(array)]

    def hand_over(self, slot: int, frames: int) -> None:
        self.held.discard(slot)
        self.outstanding[slot] = frames

    def give_back(self, slot: int) -> None:
        """A held slot that will not be handed on (dropped or discarded batch)."""
        if slot in self.held:
            self.held.discard(slot)
            self.free.append(slot)
            self._changed.set()

    def give_back_held(self) -> None:
        for slot in list(self.held):
            self.give_back(slot)

    def returned(self, generation: int, slot: int) -> None:
        """The driver is done with an outstanding slot."""
        if self.spec is None or generation != self.spec.generation:
            return
        if self.outstanding.pop(slot, None) is not None:
            self.free.append(slot)
            self._changed.set()

    async def changed(self, timeout: float = 1.0) -> None:
        """Wait until a slot comes back (or ``timeout`` s pass)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _address(array: npt.NDArray[Any]) -> int:
    return int(array.__array_interface__["data"][0])
