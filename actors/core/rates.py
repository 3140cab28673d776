"""Frame rates from counters sampled at irregular times (pure)."""

from __future__ import annotations

import time
from collections import deque


class RateMeter:
    """Rate of a monotonically increasing counter over the last ``window`` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0

    def reset(self) -> None:
        self._samples.clear()
