"""Values that must leave in batch order (e.g. decoded frames for the per-frame stacks)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class InBatchOrder(Generic[T]):
    """Holds one value per batch index and releases them in index order, each once every
    batch up to it is merged (partials arrive in any order)."""

    def __init__(self) -> None:
        self._held: dict[int, T] = {}

    def put(self, index: int, value: T) -> None:
        self._held[index] = value

    def due(self, merged_through: int) -> list[T]:
        """Values of batches ``<= merged_through``, in index order; they are forgotten."""
        ready = sorted(i for i in self._held if i <= merged_through)
        return [self._held.pop(i) for i in ready]

    def clear(self) -> None:
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)
