"""Shared fixtures: run a sender in a thread that is always joined."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest


class SenderThread:
    """Runs ``target`` in a thread; re-raises its exception on join."""

    def __init__(self, target: Callable[[], Any], name: str = "sender") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target,), name=name,
                                        daemon=True)

    def _run(self, target: Callable[[], Any]) -> None:
        try:
            self.result = target()
        except BaseException as exc:  # re-raised in join()
            self.error = exc

    def start(self) -> SenderThread:
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._thread.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def sender_threads() -> Iterator[Callable[..., SenderThread]]:
    started: list[SenderThread] = []

    def start(target: Callable[[], Any], name: str = "sender") -> SenderThread:
        t = SenderThread(target, name).start()
        started.append(t)
        return t

    yield start
    for t in started:
        t._thread.join(timeout=60)
