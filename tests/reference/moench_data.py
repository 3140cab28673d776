"""Synthetic MOENCH-like frames and an in-process coordinator, for tests.

``moench_frames`` draws a per-pixel pedestal (offset 5400 ADU, spread 40) with Gaussian
noise (σ 15..25 ADU per pixel) and single photons of 110 ADU, some shared with a
neighbour, as uint16. ``run_batches`` plays the coordinator of the state hand-off
protocol (actors.reduce.base) over batches cut by the batch-cut rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actors.reduce.base import Batch, Reducer
from actors.reduce.cutter import BatchCutter


def moench_frames(rng: np.random.Generator, n: int, rows: int, cols: int,
                  photons_per_frame: int = 20, offset: float = 5400.0,
                  noise: tuple[float, float] = (15.0, 25.0), photon_adu: float = 110.0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint16 (n, rows, cols), true pedestal, true sigma)."""
    ped = rng.normal(offset, 40.0, (rows, cols))
    sig = rng.uniform(*noise, (rows, cols))
    x = ped + sig * rng.standard_normal((n, rows, cols))
    for t in range(n):
        k = rng.poisson(photons_per_frame)
        ii = rng.integers(0, rows, k)
        jj = rng.integers(0, cols, k)
        share = rng.uniform(0.5, 1.0, k)
        for i, j, f in zip(ii, jj, share):
            x[t, i, j] += photon_adu * f
            if j + 1 < cols:
                x[t, i, j + 1] += photon_adu * (1 - f)
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16), ped, sig


def cut_batches(frames: np.ndarray, frame_numbers: np.ndarray, max_frames: int,
                epoch: int | None) -> list[Batch]:
    """Batches of at most ``max_frames`` frames, cut by the epoch rule."""
    cutter = BatchCutter([epoch])
    batches: list[Batch] = []
    start = 0

    def close(end: int) -> None:
        nonlocal start
        batches.append(Batch(len(batches), frames[start:end], frame_numbers[start:end]))
        start = end
        cutter.close()

    for i, f in enumerate(frame_numbers):
        f = int(f)
        if cutter.is_open and (cutter.must_cut(f) or i - start >= max_frames):
            close(i)
        cutter.add(f)
    if start < len(frame_numbers):
        close(len(frame_numbers))
    return batches


def run_batches(reducer: Reducer[Any, Any], batches: Sequence[Batch],
                carried: Any = None) -> tuple[Any, list[Any]]:
    """Process ``batches`` in order as the coordinator would: (prefix, batch partials)."""
    prefix = reducer.initial(carried)
    partials = []
    for b in batches:
        prefix = reducer.advance(prefix, b.first_frame)
        published = reducer.published_states(prefix)
        states = {k: published[k] for k in reducer.state_needed(b.first_frame, b.last_frame)}
        p = reducer.process(b, states)
        partials.append(p)
        prefix = reducer.merge(prefix, p)
    return prefix, partials


def merge_grouped(reducer: Reducer[Any, Any], partials: Sequence[Any],
                  rng: np.random.Generator, carried: Any = None) -> Any:
    """Merge ``partials`` in a random contiguous grouping and random merge tree."""
    def tree(items: list[Any]) -> Any:
        if not items:
            return reducer.empty()
        if len(items) == 1:
            return items[0]
        k = int(rng.integers(1, len(items)))
        return reducer.merge(tree(items[:k]), tree(items[k:]))

    cuts = sorted(rng.choice(np.arange(1, len(partials)), size=min(3, len(partials) - 1),
                             replace=False)) if len(partials) > 1 else []
    groups = np.split(np.arange(len(partials)), cuts)
    prefix = reducer.initial(carried)
    for g in groups:
        prefix = reducer.merge(prefix, tree([partials[i] for i in g]))
    return prefix
