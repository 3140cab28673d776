"""Shared fixtures: senders in threads that are always joined, the backend parameter, a
module's local Ray, and the guard against leaked asyncio tasks."""

from __future__ import annotations

import asyncio
import functools
import inspect
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


# -- backends ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """A local Ray for the module's tests (shut down after them)."""
    ray = pytest.importorskip("ray")
    from tests.helpers import RAY_INIT

    ray.init(namespace="rayline-tests", **RAY_INIT)
    yield
    ray.shutdown()


@pytest.fixture(params=[pytest.param("ray", marks=pytest.mark.ray), "local"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each pipeline test runs on both backends (the Ray one in the module's local Ray)."""
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
    return str(request.param)


# -- guards ------------------------------------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every async test (on its own event loop) must leave no asyncio task running: each task
    has an owner that awaits or cancels it."""
    for item in items:
        fn = getattr(item, "obj", None)
        marker = item.get_closest_marker("asyncio")
        scoped = marker is not None and (marker.kwargs.get("loop_scope") or "function") != \
            "function"
        if inspect.iscoroutinefunction(fn) and not scoped:
            item.obj = _no_leaked_tasks(fn)  # type: ignore[attr-defined]


def _no_leaked_tasks(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        result = await fn(*args, **kwargs)
        await asyncio.sleep(0)  # tasks that just finished or were just cancelled settle
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if leaked:
            pytest.fail(f"{fn.__name__} left {len(leaked)} asyncio task(s) running: "
                        f"{sorted(t.get_name() for t in leaked)}")
        return result

    return guarded
