"""Per-pixel MovingStat pedestal with epoch-synchronous updates (design.md §Pedestal).

:class:`EpochSamples` holds the exact integer sums (count c, Σx, Σx²) of the pedestal
samples of one epoch; :class:`PedestalState` is the MovingStat state (n, S, Q) and
:meth:`PedestalState.fold` applies one epoch's samples with capacity N:

* if n + c ≤ N: n += c, S += s, Q += q;
* else, with k = n + c − N: S ← S + s − k·(S/n), Q ← Q + q − k·(Q/n) (S/n, Q/n taken as
  s/c, q/c where n = 0), n ← N.

μ = S/n and σ = sqrt(max(Q/n − μ², 0)), both 0 where n = 0. With one frame per epoch
this is exactly the SLS MovingStat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.base import readonly
from actors.reduce.jit import jit, numba_available

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
INT = npt.NDArray[np.int64] | npt.NDArray[np.int32]


@dataclass(frozen=True, eq=False)
class EpochSamples:
    """Exact per-pixel sums of one epoch's pedestal samples (integer arrays, read-only).

    ``q`` is int64; ``c`` and ``s`` are int64, or int32 in the samples of one batch of
    fewer than 2**15 frames (``c`` ≤ frames and ``s`` ≤ 65535·frames < 2**31: exact, and
    half the bytes to write, keep in cache and send). Sums widen to int64.
    """

    c: INT
    s: INT
    q: I64

    @classmethod
    def zeros(cls, shape: tuple[int, int], dtype: Any = np.int64) -> EpochSamples:
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, np.int64))

    def __add__(self, other: EpochSamples) -> EpochSamples:
        return EpochSamples(readonly(np.add(self.c, other.c, dtype=np.int64)),
                            readonly(np.add(self.s, other.s, dtype=np.int64)),
                            readonly(self.q + other.q))

    def frozen(self) -> EpochSamples:
        for a in (self.c, self.s, self.q):
            readonly(a)
        return self


@dataclass(frozen=True, eq=False)
class PedestalState:
    """MovingStat state: sample count ``n`` (int64), sums ``S`` and ``Q`` (float64)."""

    n: I64
    S: F64
    Q: F64

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> PedestalState:
        return cls(readonly(np.zeros(shape, np.int64)), readonly(np.zeros(shape)),
                   readonly(np.zeros(shape)))

    @property
    def shape(self) -> tuple[int, int]:
        r, c = self.n.shape
        return (r, c)

    def mean(self) -> F64:
        """μ = S/n, 0 where n = 0."""
        n = self.n.astype(np.float64)
        return np.divide(self.S, n, out=np.zeros_like(self.S), where=self.n > 0)

    def std(self) -> F64:
        """σ = sqrt(max(Q/n − μ², 0)), 0 where n = 0."""
        n = self.n.astype(np.float64)
        mu = self.mean()
        q = np.divide(self.Q, n, out=np.zeros_like(self.Q), where=self.n > 0)
        var = q - mu * mu
        return np.sqrt(np.maximum(var, 0.0))

    def moments(self) -> tuple[F64, F64]:
        """(μ, σ) in one pass (what every batch needs): the same operations as
        :meth:`mean` and :meth:`std`, so the same bits."""
        if not numba_available():
            return self.mean(), self.std()
        mu = np.empty(self.S.shape)
        sd = np.empty(self.S.shape)
        _moments(self.n, self.S, self.Q, mu, sd)
        return mu, sd

    def fold(self, samples: EpochSamples, capacity: int) -> PedestalState:
        """The state after applying one epoch's samples (a new object)."""
        c, s, q = samples.c, samples.s.astype(np.float64), samples.q.astype(np.float64)
        total = self.n + c
        over = total > capacity
        if not bool(np.any(over)):
            return PedestalState(readonly(total), readonly(self.S + s), readonly(self.Q + q))
        fresh = self.n == 0
        nf = np.where(fresh, 1, self.n).astype(np.float64)
        cf = np.where(c == 0, 1, c).astype(np.float64)
        s_per = np.where(fresh, s / cf, self.S / nf)
        q_per = np.where(fresh, q / cf, self.Q / nf)
        k = (total - capacity).astype(np.float64)
        S = np.where(over, (self.S + s) - k * s_per, self.S + s)
        Q = np.where(over, (self.Q + q) - k * q_per, self.Q + q)
        n = np.where(over, capacity, total).astype(np.int64)
        return PedestalState(readonly(n), readonly(S), readonly(Q))

    def equals(self, other: PedestalState) -> bool:
        return (np.array_equal(self.n, other.n) and np.array_equal(self.S, other.S)
                and np.array_equal(self.Q, other.Q))


def _moments_py(n: Any, S: Any, Q: Any, mu: Any, sd: Any) -> None:
    for i in range(n.shape[0]):
        for j in range(n.shape[1]):
            if n[i, j] > 0:
                f = np.float64(n[i, j])
                m = S[i, j] / f
                var = Q[i, j] / f - m * m
                mu[i, j] = m
                sd[i, j] = np.sqrt(var) if var > 0.0 else 0.0
            else:
                mu[i, j] = 0.0
                sd[i, j] = 0.0


_moments = jit(_moments_py)


def states_needed(first_frame: int, last_frame: int, epoch: int, lag: int) -> tuple[int, ...]:
    """The published states a batch of frames ``first_frame .. last_frame`` needs: for each
    of its epochs e, the state after e − 1 − lag, up to the first epoch it can fold itself
    (from there on it folds its own samples onto the state after its first epoch − 1)."""
    e0, e1 = first_frame // epoch, last_frame // epoch
    keys = {max(e - 1 - lag, -1) for e in range(e0, min(e1, e0 + lag) + 1)}
    if e1 >= e0 + 1 + lag:
        keys.add(max(e0 - 1, -1))
    return tuple(sorted(keys))


class StateChain:
    """The pedestal states one batch uses: the supplied ones (after epochs before the batch)
    and, for epochs inside it, the last supplied state folded with the batch's own samples
    (the batch-cut rule makes that the state every other grouping would publish)."""

    def __init__(self, supplied: dict[int, PedestalState], first_epoch: int, capacity: int):
        self.supplied = supplied
        self.e0 = first_epoch
        self.capacity = capacity
        self.samples: dict[int, EpochSamples] = {}
        self.local_fold_epoch: int | None = None
        self._local: tuple[int, PedestalState] | None = None  # (epoch, state after it)

    def add(self, epoch: int, samples: EpochSamples) -> None:
        self.samples[epoch] = samples

    def after(self, epoch: int) -> PedestalState:
        if epoch < self.e0:
            key = max(epoch, -1)
            if key not in self.supplied:
                raise KeyError(f"pedestal state after epoch {key} was not supplied "
                               f"(have {sorted(self.supplied)}); see state_needed()")
            return self.supplied[key]
        if self._local is None:
            self._local = (self.e0 - 1, self.after(self.e0 - 1))
            self.local_fold_epoch = self.e0
        at, st = self._local
        for e in sorted(k for k in self.samples if at < k <= epoch):
            st = st.fold(self.samples[e], self.capacity)
        self._local = (max(at, epoch), st)
        return st

