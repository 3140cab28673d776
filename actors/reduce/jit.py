"""Optional numba: lazy, single-threaded, GIL-releasing compilation with a numpy fallback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]

Backend = Literal["auto", "numba", "numpy"]


def numba_available() -> bool:
    return numba is not None


def resolve_backend(backend: Backend) -> Literal["numba", "numpy"]:
    if backend == "auto":
        return "numba" if numba is not None else "numpy"
    if backend == "numba" and numba is None:
        raise RuntimeError("numba back end requested but numba is not importable")
    return backend


def jit(fn: Callable[..., Any], *, ieee_division: bool = False,
        reassociate: bool = False) -> Callable[..., Any]:
    """numba-compile ``fn`` lazily (at first call), single-threaded, releasing the GIL, with
    numba's on-disk cache (``__pycache__`` beside the module, or ``NUMBA_CACHE_DIR``; numba
    falls back to compiling in memory where neither is writable), so each new worker process
    loads the machine code instead of compiling it for seconds;
    ``fn`` itself when numba is missing (callers then use their numpy path).

    ``ieee_division``: a float division by zero gives ±inf/NaN as in numpy instead of
    raising ZeroDivisionError; without the check per division, a loop that divides can be
    vectorised (the caller makes sure no divisor is zero, or wants IEEE results).
    ``reassociate``: float sums may be reordered (vectorised reductions; the last bits then
    differ from a sequential sum)."""
    if numba is None:
        return fn
    options: dict[str, Any] = {"error_model": "numpy"} if ieee_division else {}
    if reassociate:
        options["fastmath"] = {"reassoc"}
    return cast(Callable[..., Any], numba.njit(nogil=True, cache=True, **options)(fn))
