"""Sequential reference of the MOENCH chain, used only by tests.

Deliberately simple: frames one by one in frame-number order, float64, the 3×3 classifier
written straight from moench.md §2.4 and the epoch fold straight from design.md
§Pedestal semantics. The fast batch code (actors.reduce.moench) must match it.

Float sums use the order documented in ``actors.reduce.moench.classify`` (row sums left
to right, then top to bottom; quadrants as two row pairs), so results are bit-identical.

API::

    outputs = run_moench_reference(frames, frame_numbers, settings, initial_state=None)
    ref = moench_reference(...)   # .outputs, .state (n, S, Q), .history {epoch: state}

``settings`` is a mapping of MoenchSettings keys (or a MoenchSettings); output names are
those of ``MoenchReducer.outputs_spec()``; series outputs are ``Series`` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.reduce.base import Series
from actors.reduce.moench.settings import MoenchSettings

PED, UNPUMPED, PUMPED = 0, 1, 2
TOKENS = {"ped": PED, "pedestal": PED, "up": UNPUMPED, "unpumped": UNPUMPED,
          "p": PUMPED, "pumped": PUMPED}

State = tuple[np.ndarray, np.ndarray, np.ndarray]  # n (int64), S, Q (float64)


@dataclass
class Reference:
    outputs: dict[str, Any]
    state: State
    history: dict[int, State] = field(default_factory=dict)


def pattern_of(s: MoenchSettings) -> list[int]:
    if s.split_pump:
        return [UNPUMPED, PUMPED]
    text = s.processing_pattern.strip()
    tokens = json.loads(text) if text.startswith("[") else re.split(r"[\s,]+", text)
    return [TOKENS[t.strip().lower()] for t in tokens if t.strip()]


def frame_type(t: int, s: MoenchSettings, pattern: list[int]) -> int:
    if s.process_pedestal_img:
        return PED
    return pattern[t % len(pattern)]


def mean_std(state: State) -> tuple[np.ndarray, np.ndarray]:
    n, S, Q = state
    nf = n.astype(np.float64)
    mu = np.zeros(S.shape)
    ok = n > 0
    mu[ok] = S[ok] / nf[ok]
    q = np.zeros(S.shape)
    q[ok] = Q[ok] / nf[ok]
    sigma = np.sqrt(np.maximum(q - mu * mu, 0.0))
    return mu, sigma


def fold(state: State, c: np.ndarray, s: np.ndarray, q: np.ndarray, cap: int) -> State:
    """design.md: if n + c <= N: n += c, S += s, Q += q; else k = n + c - N,
    S <- S + s - k*S/n, Q <- Q + q - k*Q/n (s/c, q/c where n = 0), n <- N."""
    n, S, Q = (a.copy() for a in state)
    sf, qf = s.astype(np.float64), q.astype(np.float64)
    for idx in np.ndindex(n.shape):
        ni, ci = int(n[idx]), int(c[idx])
        if ci == 0:
            continue
        if ni + ci <= cap:
            n[idx] = ni + ci
            S[idx] = S[idx] + sf[idx]
            Q[idx] = Q[idx] + qf[idx]
        else:
            k = float(ni + ci - cap)
            s_per = sf[idx] / ci if ni == 0 else S[idx] / ni
            q_per = qf[idx] / ci if ni == 0 else Q[idx] / ni
            S[idx] = (S[idx] + sf[idx]) - k * s_per
            Q[idx] = (Q[idx] + qf[idx]) - k * q_per
            n[idx] = cap
    return n, S, Q


def classify_frame(a: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Class of every pixel: 3 negative pedestal, 2 photon maximum, 1 photon, 0 none."""
    R, C = a.shape
    P = np.zeros((R + 2, C + 2))
    P[1:-1, 1:-1] = a

    def at(dy: int, dx: int) -> np.ndarray:
        return P[1 + dy:1 + dy + R, 1 + dx:1 + dx + C]

    rows = [(at(dy, -1) + at(dy, 0)) + at(dy, 1) for dy in (-1, 0, 1)]
    tot = (rows[0] + rows[1]) + rows[2]
    m = np.zeros((R, C))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            m = np.maximum(m, at(dy, dx))
    quad = np.full((R, C), -np.inf)
    for y0, y1 in ((-1, 0), (0, 1)):
        for x0, x1 in ((-1, 0), (0, 1)):
            quad = np.maximum(quad, (at(y0, x0) + at(y0, x1)) + (at(y1, x0) + at(y1, x1)))
    photon = (m > thr) | (quad > 2.0 * thr) | (tot > 3.0 * thr)
    cls = np.zeros((R, C), np.int8)
    cls[photon] = 1
    cls[photon & (a == m)] = 2
    cls[a < -thr] = 3
    return cls


def classify_pixel(a: np.ndarray, thr: np.ndarray, i: int, j: int) -> int:
    """The rule for one pixel, with plain Python loops (cross-checks classify_frame)."""
    R, C = a.shape

    def v(y: int, x: int) -> float:
        return float(a[y, x]) if 0 <= y < R and 0 <= x < C else 0.0

    t = float(thr[i, j])
    if a[i, j] < -t:
        return 3
    tot = 0.0
    row_sums = []
    for dy in (-1, 0, 1):
        row_sums.append((v(i + dy, j - 1) + v(i + dy, j)) + v(i + dy, j + 1))
    tot = (row_sums[0] + row_sums[1]) + row_sums[2]
    m = max(0.0, *(v(i + dy, j + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)))
    quads = [(v(i + y0, j + x0) + v(i + y0, j + x1)) + (v(i + y1, j + x0) + v(i + y1, j + x1))
             for y0, y1 in ((-1, 0), (0, 1)) for x0, x1 in ((-1, 0), (0, 1))]
    if m > t or max(quads) > 2.0 * t or tot > 3.0 * t:
        return 2 if a[i, j] == m else 1
    return 0


def moench_reference(frames: np.ndarray, frame_numbers: np.ndarray,
                     settings: Mapping[str, Any] | MoenchSettings,
                     initial_state: Any = None) -> Reference:
    s = settings if isinstance(settings, MoenchSettings) else MoenchSettings(**settings)
    pattern = pattern_of(s)
    E, L, N = s.pedestal_epoch, s.pedestal_lag, s.pedestal_frames
    R, C = frames.shape[1:]
    if initial_state is None:
        state: State = (np.zeros((R, C), np.int64), np.zeros((R, C)), np.zeros((R, C)))
    elif isinstance(initial_state, tuple):
        state = initial_state
    else:
        state = (initial_state.n.copy(), initial_state.S.copy(), initial_state.Q.copy())
    history: dict[int, State] = {-1: state}
    samples: dict[int, list[np.ndarray]] = {}
    folded = -1
    analog = np.zeros((2, R, C))
    threshold = np.zeros((2, R, C), np.int64)
    counting = np.zeros((2, R, C), np.int64)
    counts = [0, 0, 0]
    photons, types = [], []

    def fold_through(epoch: int) -> None:
        nonlocal state, folded
        while folded < epoch:
            folded += 1
            if folded in samples:
                state = fold(state, *samples.pop(folded), N)
            history[folded] = state

    for x_raw, t in zip(frames, frame_numbers):
        t = int(t)
        e = t // E
        fold_through(e - 1)  # every earlier epoch is complete
        mu, sigma = mean_std(history[max(e - 1 - L, -1)])
        x = x_raw.astype(np.float64)
        xi = x_raw.astype(np.int64)
        a = x - mu
        typ = frame_type(t, s, pattern)
        counts[typ] += 1
        types.append(typ)
        smp = samples.setdefault(e, [np.zeros((R, C), np.int64) for _ in range(3)])
        if typ == PED:
            photons.append(0)
            sample = np.ones((R, C), bool)
        else:
            cls = classify_frame(a, s.counting_sigma * sigma)
            photons.append(int(np.count_nonzero(cls == 2)))
            st = typ - 1
            if s.process_analog_img:
                analog[st] += a
            if s.process_threshold_img:
                threshold[st] += a > s.threshold
            if s.process_counting_img:
                counting[st] += cls == 2
            sample = (cls == 0) if s.update_pedestal_img else np.zeros((R, C), bool)
        smp[0] += sample
        smp[1] += np.where(sample, xi, 0)
        smp[2] += np.where(sample, xi * xi, 0)
    if samples:
        fold_through(max(samples))
    mu, sigma = mean_std(state)
    fn = np.asarray(frame_numbers, dtype=np.int64)
    out: dict[str, Any] = {}
    for name, arr in (("analog_img", analog), ("threshold_img", threshold),
                      ("counting_img", counting)):
        for st, suffix, count in ((0, "", counts[UNPUMPED]), (1, "_pumped", counts[PUMPED])):
            img = arr[st].astype(np.float64)
            if s.normalize and count > 0:
                img = img / count
            out[name + suffix] = img
    out["pedestal"] = mu
    out["pedestal_std"] = sigma
    out["pumped_frames"] = counts[PUMPED]
    out["unpumped_frames"] = counts[UNPUMPED]
    out["pedestal_frames"] = counts[PED]
    samples = int(np.median(state[0]))  # frames in the pedestal, the median pixel's
    out["pedestal_samples"] = samples
    out["pedestal_ready"] = samples >= min(s.pedestal_min_frames, N)
    out["frame_photons"] = Series(fn.copy(), np.asarray(photons, np.int64))
    out["frame_type"] = Series(fn.copy(), np.asarray(types, np.int8))
    return Reference(out, state, history)


def run_moench_reference(frames: np.ndarray, frame_numbers: np.ndarray,
                         settings: Mapping[str, Any] | MoenchSettings,
                         initial_state: Any = None) -> dict[str, Any]:
    """Outputs of the sequential reference, keyed like MoenchReducer.outputs()."""
    return moench_reference(frames, frame_numbers, settings, initial_state).outputs
