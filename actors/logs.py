"""Logging and progress output for entry points (library modules only use their loggers)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | int = "INFO") -> None:
    """Configure the root handler once, for command-line entry points."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr, force=True)


class Progress:
    """Prints ``label: done/total (pct) rate`` at most every ``period`` seconds."""

    def __init__(self, label: str, unit: str = "frames", period: float = 1.0,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.unit = unit
        self.period = period
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._t0 = time.monotonic()
        self._last = 0.0
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int = 0) -> None:
        self._done, self._total = done, total
        now = time.monotonic()
        if self.enabled and now - self._last >= self.period:
            self._last = now
            self._write(now, end="\r" if self.stream.isatty() else "\n")

    def finish(self) -> None:
        if self.enabled:
            self._write(time.monotonic(), end="\n")

    def _write(self, now: float, end: str) -> None:
        elapsed = max(now - self._t0, 1e-9)
        of = f"/{self._total}" if self._total else ""
        pct = f" ({100 * self._done / self._total:.0f}%)" if self._total else ""
        self.stream.write(f"{self.label}: {self._done}{of} {self.unit}{pct}, "
                          f"{self._done / elapsed:.0f}/s{end}")
        self.stream.flush()
