"""Unit tests run without a Ray runtime (pure logic; Ray Serve's rule): a unit test that
starts Ray fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("unit tests must not start Ray (put the test in tests/integration)")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ray = sys.modules.get("ray")
    if ray is not None:
        assert not ray.is_initialized(), "Ray is running when a unit test starts"
        monkeypatch.setattr(ray, "init", _refuse)
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        pytest.fail("the unit test started Ray")
