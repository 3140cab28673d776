"""Jungfrau gain-switching conversion: raw uint16 frames → energy (keV) and photons.

A Jungfrau pixel value carries its gain in the top 2 bits and a 14-bit ADC value below
(``reference/protocols.md`` §4): bits 00 = G0 (high gain), 01 = G1, 11 = G2 (low gain);
10 is invalid. With a per-pixel pedestal ``P_g`` (ADU) and gain ``G_g`` (ADU/keV) for the
pixel's gain ``g``::

    E = (ADC − P_g) / G_g                              (keV, float64 arithmetic)
    photons = floor(E / E_photon + 0.5)  if E > 0 else 0   (round half up; no negatives)

A pixel is *excluded* — E = 0, no photons, not in any sum — when its gain bits are 10
(counted per frame as ``invalid``) or when the bad-pixel mask marks it (a fixed count,
reported once). Per frame the kernel also counts the valid pixels in G1 and in G2
(saturation monitoring: a pixel leaves G0 when its charge is too large for it).

Two back ends with the same arithmetic: a numba kernel (row bands × frames, so the
calibration and the accumulators of a band stay in cache while every frame of the batch
passes) and a vectorised numpy fallback, which is also the reference of the tests. The
energies are bit-identical between them; the per-frame energy totals are sums whose order
differs (tolerance ~1e-12 relative).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.reduce.jit import Backend, jit, resolve_backend

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: gain bits (raw >> 14) → gain index 0/1/2; code 2 (bits 10) is invalid
GAIN_CODES = {0: 0, 1: 1, 3: 2}
INVALID_CODE = 2
ADC_MASK = 0x3FFF
#: rows per band of the numba kernel
BAND_ROWS = 8


def gain_index(raw: npt.NDArray[Any]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """(gain index 0/1/2 per pixel, valid gain bits) of raw Jungfrau values."""
    code = (raw >> 14).astype(np.intp)
    return code - (code >> 1), code != INVALID_CODE


@dataclass(frozen=True)
class Accumulated:
    """What one batch adds up (images over the batch; one value per frame for the rest)."""

    energy: F64  # (rows, cols) Σ E over the frames, keV
    photons: I64  # (rows, cols) Σ photons (zeros without a photon energy)
    energy_total: F64  # (n,) Σ E over the valid pixels of each frame
    photon_total: I64  # (n,)
    g1: I64  # (n,) valid pixels in G1
    g2: I64  # (n,) valid pixels in G2
    invalid: I64  # (n,) pixels with gain bits 10 (bad-mask pixels not included)

    @classmethod
    def zeros(cls, n: int, shape: tuple[int, int]) -> Accumulated:
        return cls(np.zeros(shape), np.zeros(shape, np.int64), np.zeros(n),
                   np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                   np.zeros(n, np.int64))


@dataclass(frozen=True)
class Samples:
    """Where the G0 pedestal-tracking samples go: a G0 pixel whose |E| is below
    ``threshold`` keV (no photon) adds its ADC to ``c`` (count), ``s`` (Σ), ``q`` (Σ²)."""

    threshold: float
    c: npt.NDArray[np.integer[Any]]
    s: npt.NDArray[np.integer[Any]]
    q: I64


def convert(frames: npt.NDArray[Any], pedestal: F64, gain: F64, bad: npt.NDArray[np.bool_],
            photon_energy: float | None, acc: Accumulated,
            energy_out: npt.NDArray[np.float32] | None = None,
            backend: Backend = "auto", samples: Samples | None = None) -> None:
    """Convert ``frames`` (n, rows, cols) uint16 and add into ``acc``.

    ``pedestal`` and ``gain`` are (3, rows, cols) float64 (ADU, ADU/keV; gains 0, 1, 2),
    ``bad`` (rows, cols) True for excluded pixels. ``energy_out`` (n, rows, cols) float32,
    when given, receives each frame's energies (0 where excluded). ``samples``, when given,
    collects the pedestal samples of the G0 pixels without a photon.
    """
    if frames.shape[0] == 0:
        return
    if frames.dtype != np.uint16:
        raise ValueError(f"Jungfrau frames are uint16, got {frames.dtype}")
    eph = 0.0 if photon_energy is None else float(photon_energy)
    if resolve_backend(backend) == "numba":
        out = np.empty((1, 1, 1), np.float32) if energy_out is None else energy_out
        none = np.zeros((1, 1), np.int64)
        smp = samples or Samples(0.0, none, none, none)
        _kernel(frames, pedestal, gain, bad, eph, out, energy_out is not None, acc.energy,
                acc.photons, acc.energy_total, acc.photon_total, acc.g1, acc.g2, acc.invalid,
                BAND_ROWS, samples is not None, smp.threshold, smp.c, smp.s, smp.q)
    else:
        _numpy_convert(frames, pedestal, gain, bad, eph, acc, energy_out, samples)


def energies(frames: npt.NDArray[Any], pedestal: F64, gain: F64, bad: npt.NDArray[np.bool_]
             ) -> tuple[F64, npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """(E in keV with 0 where excluded, excluded, gain index) of every pixel (numpy)."""
    g, valid = gain_index(frames)
    adc = (frames & ADC_MASK).astype(np.float64)
    rows = np.arange(frames.shape[-2])[:, None]
    cols = np.arange(frames.shape[-1])[None, :]
    e = (adc - pedestal[g, rows, cols]) / gain[g, rows, cols]
    excluded = ~valid | bad
    e[excluded] = 0.0
    return e, excluded, g


def photons_of(e: F64, photon_energy: float) -> I64:
    """floor(E / E_photon + 0.5) where E > 0, else 0."""
    return np.where(e > 0.0, np.floor(e / photon_energy + 0.5), 0.0).astype(np.int64)


def _numpy_convert(frames: npt.NDArray[Any], pedestal: F64, gain: F64,
                   bad: npt.NDArray[np.bool_], eph: float, acc: Accumulated,
                   energy_out: npt.NDArray[np.float32] | None, samples: Samples | None,
                   chunk: int = 8) -> None:
    for lo in range(0, frames.shape[0], chunk):
        hi = min(frames.shape[0], lo + chunk)
        e, excluded, g = energies(frames[lo:hi], pedestal, gain, bad)
        if samples is not None:
            z = ~excluded & (g == 0) & (np.abs(e) < samples.threshold)
            adc = np.where(z, frames[lo:hi] & ADC_MASK, 0).astype(np.int64)
            samples.c[...] += z.sum(axis=0)
            samples.s[...] += adc.sum(axis=0)
            samples.q[...] += (adc * adc).sum(axis=0)
        for k in range(hi - lo):
            acc.energy[...] += e[k]
        acc.energy_total[lo:hi] = e.sum(axis=(1, 2))
        valid = ~excluded
        acc.g1[lo:hi] = np.count_nonzero(valid & (g == 1), axis=(1, 2))
        acc.g2[lo:hi] = np.count_nonzero(valid & (g == 2), axis=(1, 2))
        acc.invalid[lo:hi] = np.count_nonzero(excluded & ~bad, axis=(1, 2))
        if eph > 0.0:
            ph = photons_of(e, eph)
            acc.photons[...] += ph.sum(axis=0)
            acc.photon_total[lo:hi] = ph.sum(axis=(1, 2))
        if energy_out is not None:
            energy_out[lo:hi] = e


# ---------------------------------------------------------------------------- numba ----
def _row_sum_py(row: Any) -> float:
    """Σ row (reassociated: vectorised; the order differs from numpy's pairwise sum)."""
    s = 0.0
    for v in row:
        s += v
    return s


_row_sum = jit(_row_sum_py, reassociate=True)


def _kernel_py(frames: Any, ped: Any, gain: Any, bad: Any, eph: float, out: Any,
               write_out: bool, esum: Any, phimg: Any, etot: Any, ptot: Any, ng1: Any,
               ng2: Any, ninv: Any, band: int, track: bool, tthr: float, sc: Any, ss: Any,
               sq: Any) -> None:
    n, R, C = frames.shape
    e = np.zeros(C)
    for t in range(n):
        etot[t] = 0.0
        ptot[t] = 0
        ng1[t] = 0
        ng2[t] = 0
        ninv[t] = 0
    for b0 in range(0, R, band):
        b1 = min(R, b0 + band)
        for t in range(n):
            g1 = np.int64(0)
            g2 = np.int64(0)
            inv = np.int64(0)
            pt = np.int64(0)
            tot = 0.0
            for i in range(b0, b1):
                raw = frames[t, i]
                p0 = ped[0, i]
                p1 = ped[1, i]
                p2 = ped[2, i]
                q0 = gain[0, i]
                q1 = gain[1, i]
                q2 = gain[2, i]
                badr = bad[i]
                for c in range(C):  # branch-free (every load unconditional): vectorised
                    v = np.int64(raw[c])
                    code = v >> 14
                    adc = np.float64(v & 0x3FFF)
                    a0 = p0[c]
                    a1 = p1[c]
                    a2 = p2[c]
                    b0_ = q0[c]
                    b1_ = q1[c]
                    b2_ = q2[c]
                    is1 = code == 1
                    is0 = code == 0
                    p = a0 if is0 else (a1 if is1 else a2)
                    q = b0_ if is0 else (b1_ if is1 else b2_)
                    good = not badr[c]
                    ok = (code != 2) & good
                    x = (adc - p) / q
                    e[c] = x if ok else 0.0
                    g1 += np.int64(ok & is1)
                    g2 += np.int64(ok & (code == 3))
                    inv += np.int64((code == 2) & good)
                acc = esum[i]
                for c in range(C):
                    acc[c] += e[c]
                if eph > 0.0:
                    pacc = phimg[i]
                    for c in range(C):
                        x = e[c]
                        k = np.int64(np.floor(x / eph + 0.5)) if x > 0.0 else np.int64(0)
                        pacc[c] += k
                        pt += k
                if track:  # G0 pixels without a photon: pedestal samples
                    scr = sc[i]
                    ssr = ss[i]
                    sqr = sq[i]
                    for c in range(C):
                        v = np.int64(raw[c])
                        z = np.int64(((v >> 14) == 0) & (not badr[c]) & (abs(e[c]) < tthr))
                        a = (v & 0x3FFF) * z
                        scr[c] += z
                        ssr[c] += a
                        sqr[c] += a * a
                if write_out:
                    orow = out[t, i]
                    for c in range(C):
                        orow[c] = np.float32(e[c])
                tot += _row_sum(e)
            etot[t] += tot
            ptot[t] += pt
            ng1[t] += g1
            ng2[t] += g2
            ninv[t] += inv


_kernel = jit(_kernel_py, ieee_division=True)  # gains are never 0 (calibration)
