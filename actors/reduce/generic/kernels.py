"""Pixel loops of the generic reducers: one pass per batch, numba or numpy.

Every function takes the batch ``frames`` (n, rows, cols), the ``mask`` (rows, cols; True =
excluded) or None, and the saturation ``limit`` (in the frame dtype; pixels >= it are
excluded) or None. The numba loops walk row by row over all frames of the batch, so the
accumulator row stays in L1; results equal the numpy fallback exactly for integer data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.jit import Backend, jit, resolve_backend

Arr = npt.NDArray[Any]
I64 = npt.NDArray[np.int64]


def _args(frames: Arr, mask: npt.NDArray[np.bool_] | None,
          limit: Any) -> tuple[npt.NDArray[np.uint8], float, bool]:
    """(keep: uint8 1 = valid pixel, limit as float64 (inf: none), has_limit)."""
    keep = np.ones(frames.shape[1:], np.uint8) if mask is None else (~mask).astype(np.uint8)
    lim = np.inf if limit is None else float(limit)
    return keep, lim, limit is not None


def _valid(frames: Arr, mask: npt.NDArray[np.bool_] | None,
           limit: Any) -> npt.NDArray[np.bool_] | None:
    valid: npt.NDArray[np.bool_] | None = None
    if limit is not None:
        valid = frames < limit
    if mask is not None:
        valid = ~mask[None] if valid is None else valid & ~mask[None]
    return valid


# ---------------------------------------------------------------- sums -------------------
def masked_sums(frames: Arr, mask: npt.NDArray[np.bool_] | None, limit: Any, acc_dtype: Any,
                backend: Backend = "auto") -> tuple[Arr, I64, Arr]:
    """(sum image in ``acc_dtype``, per-pixel valid count, per-frame totals)."""
    n = frames.shape[0]
    if resolve_backend(backend) == "numba":
        acc = np.zeros(frames.shape[1:], acc_dtype)
        count = np.zeros(frames.shape[1:], np.int64)
        totals = np.zeros(n, acc_dtype)
        m, lim, has = _args(frames, mask, limit)
        _sums(frames, m, lim, has, acc, count, totals)
        return acc, count, totals
    valid = _valid(frames, mask, limit)
    clean = frames if valid is None else np.where(valid, frames, frames.dtype.type(0))
    acc = np.add.reduce(clean, axis=0, dtype=acc_dtype)
    totals = np.add.reduce(clean.reshape(n, -1), axis=1, dtype=acc_dtype)
    if valid is None:
        count = np.full(frames.shape[1:], n, np.int64)
    else:
        count = np.broadcast_to(np.add.reduce(valid, axis=0, dtype=np.int64)
                                * (n if valid.shape[0] == 1 else 1), frames.shape[1:]).copy()
    return acc, count, totals


def _sums_py(frames: Any, mask: Any, limit: Any, has_limit: bool, acc: Any, count: Any,
             totals: Any) -> None:
    n, R, C = frames.shape
    zero = acc.dtype.type(0)
    for i in range(R):
        arow = acc[i]
        crow = count[i]
        krow = mask[i]
        for t in range(n):
            frow = frames[t, i]
            tot = zero
            for c in range(C):
                x = frow[c]
                ok = krow[c] & np.uint8(np.float64(x) < limit)
                v = acc.dtype.type(x) if ok else zero
                arow[c] += v
                crow[c] += ok
                tot += v
            totals[t] += tot


_sums = jit(_sums_py)


# ---------------------------------------------------------------- sum + totals -----------
#: most uint16 values whose sum is exact in uint32 (65537 * 65535 < 2**32)
NARROW_MAX_TERMS = 65537


def narrow_sum(dtype: Any, n: int) -> bool:
    """True when a batch of ``n`` frames of ``dtype`` sums exactly into a uint32 image."""
    dt = np.dtype(dtype)
    return dt.kind == "u" and dt.itemsize <= 2 and n <= NARROW_MAX_TERMS


_keep_last: tuple[npt.NDArray[np.bool_] | None, tuple[int, ...], np.dtype[Any], Arr] | None \
    = None


def _keep_bits(mask: npt.NDArray[np.bool_] | None, shape: tuple[int, ...],
               dtype: Any) -> Arr:
    """All ones (in unsigned ``dtype``) for valid pixels, 0 for masked ones. The last
    result is reused for the same read-only mask object (a worker hands the reducers one
    per chain setup; the cache holds it, so its id cannot be reused), or no mask, with the
    same shape and dtype."""
    global _keep_last
    dt = np.dtype(dtype)
    last = _keep_last
    if last is not None and last[0] is mask and last[1] == shape and last[2] == dt:
        return last[3]
    ones = dt.type(np.iinfo(dt).max)
    keep = (np.full(shape, ones, dt) if mask is None else np.where(mask, dt.type(0), ones))
    keep.flags.writeable = False
    if mask is None or not mask.flags.writeable:
        _keep_last = (mask, shape, dt, keep)
    return keep


def _flat(frames: Arr) -> tuple[Arr, int]:
    """(1-D C-contiguous array, frame step in items) spanning the frames of ``frames``,
    whose rows must be C-contiguous (a stacked batch, or evenly spaced frames in one
    buffer: :func:`actors.core.batch.stacked`)."""
    n, R, C = frames.shape
    item = frames.itemsize
    s0, s1, s2 = frames.strides
    if s2 != item or s1 != C * item or s0 % item or (n > 1 and s0 < R * C * item):
        frames = np.ascontiguousarray(frames)
        s0 = R * C * item
    step = s0 // item
    flat = np.lib.stride_tricks.as_strided(frames, shape=((n - 1) * step + R * C,),
                                           strides=(item,), writeable=False)
    return flat, step


def sums_and_totals(frames: Arr, mask: npt.NDArray[np.bool_] | None, limit: Any,
                    acc_dtype: Any, backend: Backend = "auto") -> tuple[Arr, Arr]:
    """(sum image, per-frame totals in ``acc_dtype``) of the valid pixels, in one pass.

    The image is uint32 for uint8/uint16 frames (exact: see :func:`narrow_sum`; half the
    bytes of an int64 partial) and ``acc_dtype`` otherwise; merge it with ``dtype=acc``.
    Unsigned frames take a branch-free numba loop (uint32 frames: int64 image, exact for
    fewer than 2**31 frames).
    """
    n = frames.shape[0]
    narrow = narrow_sum(frames.dtype, n)
    dt = frames.dtype
    if dt.kind == "u" and dt.itemsize <= 4 and resolve_backend(backend) == "numba" and (
            not narrow or frames.shape[2] <= NARROW_MAX_TERMS):
        top = int(np.iinfo(dt).max) + 1
        lim = np.uint64(top if limit is None else min(int(limit), top))
        flat, step = _flat(frames)
        if narrow:
            image = np.empty(frames.shape[1:], np.uint32)  # the kernel zeroes it row by row
            totals = np.zeros(n, np.uint64)
            _narrow_sums(flat, step, _keep_bits(mask, frames.shape[1:], np.uint16),
                         np.uint32(lim), image, totals)
        else:
            image = np.empty(frames.shape[1:], np.int64)
            totals = np.zeros(n, np.int64)
            _wide_sums(flat, step, _keep_bits(mask, frames.shape[1:], np.uint32), lim,
                       image, totals)
        return image, totals.astype(acc_dtype)
    if not narrow:
        acc, _, totals = masked_sums(frames, mask, limit, acc_dtype, backend)
        return acc, totals
    valid = _valid(frames, mask, limit)
    clean = frames if valid is None else np.where(valid, frames, frames.dtype.type(0))
    return (np.add.reduce(clean, axis=0, dtype=np.uint32),
            np.add.reduce(clean.reshape(n, -1), axis=1, dtype=acc_dtype))


def _narrow_sums_py(flat: Any, step: int, keep: Any, limit: Any, image: Any,
                    totals: Any) -> None:
    # ``flat`` holds frame t at [t * step, t * step + R * C): one C-contiguous 1-D array
    # for both stacked and evenly spaced frames, so the column loop is unit-stride and LLVM
    # vectorises it. Branch-free: a pixel's value is and-ed with its keep bits (0xFFFF or
    # 0) and with an all-ones/zero mask from the saturation compare. Each image row (uint32;
    # ``image`` may come uninitialised) is zeroed and stays in L1 while every frame of the
    # batch adds to it.
    R, C = image.shape
    n = totals.shape[0]
    for i in range(R):
        irow = image[i]
        irow[:] = 0
        krow = keep[i]
        for t in range(n):
            base = t * step + i * C
            frow = flat[base:base + C]  # a slice, not flat[base + c]: 2x faster
            tot = np.uint32(0)  # exact: C <= NARROW_MAX_TERMS
            for c in range(C):
                x = frow[c]
                m = np.uint16(krow[c] & (np.uint16(0) - np.uint16(x < limit)))
                v = np.uint32(x & m)
                irow[c] += v
                tot += v
            totals[t] += tot


_narrow_sums = jit(_narrow_sums_py)


def _wide_sums_py(flat: Any, step: int, keep: Any, limit: Any, image: Any,
                  totals: Any) -> None:
    # _narrow_sums for uint32 frames: uint32 keep bits, int64 image and totals
    R, C = image.shape
    n = totals.shape[0]
    for i in range(R):
        irow = image[i]
        irow[:] = 0
        krow = keep[i]
        for t in range(n):
            base = t * step + i * C
            frow = flat[base:base + C]
            tot = np.int64(0)
            for c in range(C):
                x = frow[c]
                m = np.uint32(krow[c] & (np.uint32(0) - np.uint32(x < limit)))
                v = np.int64(x & m)
                irow[c] += v
                tot += v
            totals[t] += tot


_wide_sums = jit(_wide_sums_py)


# ---------------------------------------------------------------- accumulate -------------
def accumulate(acc: Arr, part: Arr) -> None:
    """``acc += part`` in place (e.g. an int64 running sum image += a uint32 batch image:
    numpy's mixed-dtype add casts through a buffer and takes ~1.7x as long)."""
    safe = acc.dtype == np.int64 and np.can_cast(part.dtype, np.int64, "safe")
    if (safe and part.dtype.kind in "iu" and acc.shape == part.shape
            and acc.flags.c_contiguous and part.flags.c_contiguous
            and resolve_backend("auto") == "numba"):
        _accumulate(acc.reshape(-1), part.reshape(-1))
    else:
        np.add(acc, part, out=acc)


def _accumulate_py(acc: Any, part: Any) -> None:
    for i in range(acc.shape[0]):
        acc[i] += part[i]


_accumulate = jit(_accumulate_py)


# ---------------------------------------------------------------- max --------------------
def masked_max(frames: Arr, mask: npt.NDArray[np.bool_] | None, limit: Any,
               backend: Backend = "auto") -> tuple[Arr, I64 | None]:
    """(max image in the frame dtype, per-pixel valid count or None when all are valid);
    never-valid pixels hold the dtype minimum (-inf for floats)."""
    dt = frames.dtype
    low = np.iinfo(dt).min if dt.kind in "ui" else -np.inf
    if resolve_backend(backend) == "numba":
        out = np.full(frames.shape[1:], low, dt)
        count = np.zeros(frames.shape[1:], np.int64)
        m, lim, has = _args(frames, mask, limit)
        _max(frames, m, lim, has, out, count)
        return out, (None if mask is None and limit is None else count)
    valid = _valid(frames, mask, limit)
    data = frames if valid is None else np.where(valid, frames, dt.type(low))
    image = np.maximum.reduce(data, axis=0).astype(dt, copy=False)
    if valid is None:
        return image, None
    count = np.broadcast_to(np.add.reduce(valid, axis=0, dtype=np.int64)
                            * (frames.shape[0] if valid.shape[0] == 1 else 1),
                            frames.shape[1:]).copy()
    return image, count


def _max_py(frames: Any, mask: Any, limit: Any, has_limit: bool, out: Any,
            count: Any) -> None:
    n, R, C = frames.shape
    for i in range(R):
        orow = out[i]
        crow = count[i]
        krow = mask[i]
        for t in range(n):
            frow = frames[t, i]
            for c in range(C):
                x = frow[c]
                ok = krow[c] & np.uint8(np.float64(x) < limit)
                orow[c] = max(orow[c], x if ok else orow[c])
                crow[c] += ok


_max = jit(_max_py)


# ---------------------------------------------------------------- rings ------------------
def ring_sums(frames: Arr, mask: npt.NDArray[np.bool_] | None, limit: Any,
              index: npt.NDArray[np.intp], nbins: int,
              backend: Backend = "auto") -> tuple[npt.NDArray[np.float64], I64]:
    """Per-frame (sums, counts) of the valid pixels of each bin; ``index`` is the flat bin
    of every pixel, ``nbins`` for pixels in no bin."""
    n = frames.shape[0]
    idx = index if mask is None else np.where(mask.ravel(), nbins, index)
    if resolve_backend(backend) == "numba":
        sums = np.zeros((n, nbins + 1))
        counts = np.zeros((n, nbins + 1), np.int64)
        _, lim, has = _args(frames, None, limit)
        _rings(frames.reshape(n, -1), idx, lim, has, sums, counts)
        return sums[:, :nbins], counts[:, :nbins]
    sums = np.zeros((n, nbins))
    counts = np.zeros((n, nbins), np.int64)
    static = np.bincount(idx, minlength=nbins + 1)[:nbins]
    for t in range(n):
        frame = frames[t].ravel()
        if limit is not None:
            ok = frame < limit
            frame = np.where(ok, frame, 0)
            counts[t] = np.bincount(idx, weights=ok, minlength=nbins + 1)[:nbins]
        else:
            counts[t] = static
        sums[t] = np.bincount(idx, weights=frame, minlength=nbins + 1)[:nbins]
    return sums, counts


def _rings_py(frames: Any, idx: Any, limit: Any, has_limit: bool, sums: Any,
              counts: Any) -> None:
    n, P = frames.shape
    for t in range(n):
        srow = sums[t]
        crow = counts[t]
        frow = frames[t]
        for p in range(P):
            x = frow[p]
            if np.float64(x) < limit:
                b = idx[p]
                srow[b] += x
                crow[b] += 1


_rings = jit(_rings_py)


# ---------------------------------------------------------------- hits -------------------
def count_above(frames: Arr, mask: npt.NDArray[np.bool_] | None, limit: Any,
                threshold: float, backend: Backend = "auto") -> I64:
    """Per-frame number of valid pixels whose value exceeds ``threshold``."""
    n = frames.shape[0]
    if resolve_backend(backend) == "numba":
        out = np.zeros(n, np.int64)
        m, lim, has = _args(frames, mask, limit)
        _above(frames, m, lim, has, float(threshold), out)
        return out
    above = frames > threshold
    valid = _valid(frames, mask, limit)
    if valid is not None:
        above &= valid
    counts: I64 = np.count_nonzero(above.reshape(n, -1), axis=1).astype(np.int64)
    return counts


def _above_py(frames: Any, mask: Any, limit: Any, has_limit: bool, threshold: float,
              out: Any) -> None:
    n, R, C = frames.shape
    for t in range(n):
        total = 0
        for i in range(R):
            frow = frames[t, i]
            krow = mask[i]
            for c in range(C):
                xf = np.float64(frow[c])
                total += krow[c] & np.uint8(xf < limit) & np.uint8(xf > threshold)
        out[t] = total


_above = jit(_above_py)
