"""Realistic synthetic detector frames (pure numpy, deterministic for a seed).

Every scene is a pure function ``frame(i)`` of its settings and the frame number, so a test
can regenerate exactly what the simulator sent. ``pool`` > 0 reuses ``pool`` distinct
frames cyclically (frame ``i`` equals frame ``i % pool``) so high rates need no per-frame
random generation; keep ``pool`` even so the pump-probe parity is preserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Detector = Literal["moench", "jungfrau", "eiger"]
MoenchMode = Literal["pumpprobe", "dark", "photons"]

#: EIGER module and gap sizes in pixels (protocols.md §7: EIGER1 module 1030 x 514, gaps 10/37)
EIGER_MODULE = (514, 1030)
EIGER_GAP = (37, 10)


def _rng(seed: int, i: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, salt, i])


class _Pooled:
    """Mixin: with ``pool`` > 0, frame ``i`` is frame ``i % pool``, generated once."""

    pool: int

    @cached_property
    def _pool_cache(self) -> dict[int, npt.NDArray[Any]]:
        return {}

    def frame(self, i: int) -> npt.NDArray[Any]:
        if not self.pool:
            return self.generate(i)
        key = i % self.pool
        cache = self._pool_cache
        if key not in cache:
            img = self.generate(key)
            img.setflags(write=False)
            cache[key] = img
        return cache[key]

    def generate(self, i: int) -> npt.NDArray[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class MoenchScene(_Pooled):
    """MOENCH03 400 x 400 uint16: pedestal + Gaussian noise + single photons (+ pump signal).

    ``mode``: ``dark`` (pedestal runs: no photons), ``photons`` (uniform photons) or
    ``pumpprobe`` (photons on every frame plus ``pump_photons`` extra photons in a Gaussian
    spot on odd frames — odd frames are the pumped ones, as with ``split_pump``).
    A photon deposits ``photon_adu`` shared between its pixel (most) and one neighbour.
    """

    rows: int = 400
    cols: int = 400
    pedestal: float = 5400.0
    pedestal_spread: float = 40.0  # fixed-pattern pixel-to-pixel pedestal variation
    noise: float = 19.0
    photon_adu: float = 110.0
    photons: float = 40.0  # mean photons per frame (Poisson)
    pump_photons: float = 40.0  # mean extra photons on pumped (odd) frames
    spot: tuple[float, float, float] = (200.0, 200.0, 25.0)  # row, col, sigma
    mode: MoenchMode = "pumpprobe"
    seed: int = 0
    pool: int = 0

    @cached_property
    def pedestal_map(self) -> npt.NDArray[np.float64]:
        rng = _rng(self.seed, 0, salt=1)
        return self.pedestal + self.pedestal_spread * rng.standard_normal((self.rows, self.cols))

    def generate(self, i: int) -> npt.NDArray[np.uint16]:
        rng = _rng(self.seed, i)
        img = self.pedestal_map + self.noise * rng.standard_normal((self.rows, self.cols))
        if self.mode != "dark":
            self._deposit(img, rng, rng.poisson(self.photons), spot=None)
            if self.mode == "pumpprobe" and i % 2 == 1:
                self._deposit(img, rng, rng.poisson(self.pump_photons), spot=self.spot)
        return np.clip(np.rint(img), 0, 65535).astype(np.uint16)

    def _deposit(self, img: npt.NDArray[np.float64], rng: np.random.Generator, n: int,
                 spot: tuple[float, float, float] | None) -> None:
        if spot is None:
            r = rng.integers(0, self.rows, n)
            c = rng.integers(0, self.cols, n)
        else:
            r = np.clip(np.rint(rng.normal(spot[0], spot[2], n)), 0, self.rows - 1).astype(int)
            c = np.clip(np.rint(rng.normal(spot[1], spot[2], n)), 0, self.cols - 1).astype(int)
        share = rng.uniform(0.6, 1.0, n)
        np.add.at(img, (r, c), self.photon_adu * share)
        dr, dc = rng.integers(-1, 2, n), rng.integers(-1, 2, n)
        r2, c2 = np.clip(r + dr, 0, self.rows - 1), np.clip(c + dc, 0, self.cols - 1)
        np.add.at(img, (r2, c2), self.photon_adu * (1 - share))


JungfrauMode = Literal["photons", "dark"]
#: gain index → the gain bits of a Jungfrau pixel (01 = G1, 11 = G2; 10 is invalid)
JUNGFRAU_GAIN_BITS = (0, 1, 3)


@dataclass(frozen=True)
class JungfrauCalibration:
    """The simulated detector's true per-pixel pedestals (ADU) and gains (ADU/keV) for G0,
    G1, G2 (each (3, rows, cols); G1 and G2 gains are negative, as on the detector)."""

    pedestal: npt.NDArray[np.float64]
    gain: npt.NDArray[np.float64]


@dataclass(frozen=True)
class JungfrauScene(_Pooled):
    """Jungfrau frames with gain switching: each uint16 pixel is 2 gain bits + 14-bit ADC.

    Every pixel has its own pedestal and gain per gain stage (:attr:`calibration`, fixed by
    ``seed``). ``mode="photons"``: ``photons`` isolated photons of ``photon_energy`` keV per
    frame, plus a bright spot of ``spot_photons`` photons per pixel at its centre (Gaussian,
    ``spot_radius``); a pixel whose deposited energy exceeds ``switch_g1`` keV switches to
    G1, above ``switch_g2`` to G2, and reads ADC = P_g + E·G_g + noise. ``mode="dark"``: no
    photons, every pixel forced into ``forced_gain`` (the three dark runs of a
    calibration). :meth:`photon_counts` gives the photons injected into frame ``i``.
    """

    rows: int = 512
    cols: int = 1024
    mode: JungfrauMode = "photons"
    forced_gain: int = 0
    photon_energy: float = 12.4
    photons: float = 200.0
    spot_photons: float = 0.0
    spot_radius: float = 12.0
    noise: tuple[float, float, float] = (3.0, 1.0, 0.5)  # ADU, per gain
    switch_g1: float = 300.0
    switch_g2: float = 6000.0
    seed: int = 0
    pool: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("photons", "dark"):
            raise ValueError(f"jungfrau scene mode {self.mode!r}: 'photons' or 'dark'")
        if self.forced_gain not in (0, 1, 2):
            raise ValueError(f"jungfrau scene forced_gain {self.forced_gain}: 0, 1 or 2")

    @cached_property
    def calibration(self) -> JungfrauCalibration:
        rng = _rng(self.seed, 0, salt=7)
        shape = (self.rows, self.cols)
        pedestal = np.stack([rng.normal(3000.0, 60.0, shape), rng.normal(14000.0, 120.0, shape),
                             rng.normal(15000.0, 120.0, shape)])
        gain = np.stack([rng.normal(40.0, 1.0, shape), rng.normal(-1.5, 0.03, shape),
                         rng.normal(-0.11, 0.002, shape)])
        return JungfrauCalibration(pedestal, gain)

    def photon_counts(self, i: int) -> npt.NDArray[np.int64]:
        """The photons injected into each pixel of frame ``i`` (zeros in a dark run)."""
        counts = np.zeros((self.rows, self.cols), np.int64)
        if self.mode == "dark":
            return counts
        rng = _rng(self.seed, i if not self.pool else i % self.pool, salt=8)
        n = rng.poisson(self.photons)
        np.add.at(counts, (rng.integers(0, self.rows, n), rng.integers(0, self.cols, n)), 1)
        if self.spot_photons > 0:
            y, x = np.indices((self.rows, self.cols), dtype=np.float64)
            r2 = (y - self.rows / 2) ** 2 + (x - self.cols / 2) ** 2
            counts += rng.poisson(self.spot_photons * np.exp(-0.5 * r2 / self.spot_radius ** 2))
        return counts

    def gain_stage(self, energy: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """The gain (0, 1, 2) a pixel switches to for a deposited ``energy`` (keV)."""
        if self.mode == "dark":
            return np.full(energy.shape, self.forced_gain, np.intp)
        return ((energy > self.switch_g1).astype(np.intp)
                + (energy > self.switch_g2).astype(np.intp))

    def generate(self, i: int) -> npt.NDArray[np.uint16]:
        cal = self.calibration
        energy = self.photon_counts(i).astype(np.float64) * self.photon_energy
        g = self.gain_stage(energy)
        rows = np.arange(self.rows)[:, None]
        cols = np.arange(self.cols)[None, :]
        rng = _rng(self.seed, i, salt=9)
        noise = np.asarray(self.noise)[g] * rng.standard_normal(energy.shape)
        adc = cal.pedestal[g, rows, cols] + energy * cal.gain[g, rows, cols] + noise
        bits = np.asarray(JUNGFRAU_GAIN_BITS, np.uint16)[g]
        raw: npt.NDArray[np.uint16] = ((bits << np.uint16(14))
                                       | np.clip(np.rint(adc), 0, 0x3FFF).astype(np.uint16))
        return raw


def eiger_gap_mask(rows: int, cols: int) -> npt.NDArray[np.bool_]:
    """True on the inter-module gaps of an EIGER-like detector of this size."""
    mask = np.zeros((rows, cols), dtype=bool)
    for axis, (module, gap) in enumerate(zip(EIGER_MODULE, EIGER_GAP)):
        n = rows if axis == 0 else cols
        pos = module
        while pos < n:
            sl = slice(pos, min(pos + gap, n))
            if axis == 0:
                mask[sl, :] = True
            else:
                mask[:, sl] = True
            pos += gap + module
    return mask


@dataclass(frozen=True)
class EigerScene(_Pooled):
    """EIGER-like photon-counting frames: Poisson counts of diffraction rings on a background,
    inter-module gaps and a few dead pixels at the dtype maximum (the DECTRIS mask value)."""

    rows: int = 1065
    cols: int = 1030
    dtype: str = "uint32"
    centre: tuple[float, float] = (540.0, 510.0)
    rings: tuple[float, ...] = (120.0, 260.0, 410.0)
    ring_width: float = 6.0
    ring_counts: float = 4.0
    background: float = 0.05
    dead_fraction: float = 1e-4
    seed: int = 0
    pool: int = 16
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def mask(self) -> npt.NDArray[np.bool_]:
        """The pixel mask (gaps + dead pixels), as the series start would declare it."""
        mask = eiger_gap_mask(self.rows, self.cols)
        rng = _rng(self.seed, 0, salt=2)
        mask |= rng.random((self.rows, self.cols)) < self.dead_fraction
        return mask

    @cached_property
    def expectation(self) -> npt.NDArray[np.float64]:
        y, x = np.indices((self.rows, self.cols), dtype=np.float64)
        r = np.hypot(y - self.centre[0], x - self.centre[1])
        lam = np.full_like(r, self.background)
        for radius in self.rings:
            lam += self.ring_counts * np.exp(-0.5 * ((r - radius) / self.ring_width) ** 2)
        return lam

    def generate(self, i: int) -> npt.NDArray[Any]:
        rng = _rng(self.seed, i)
        counts = rng.poisson(self.expectation)
        maxval = np.iinfo(self.dtype).max
        img = np.minimum(counts, maxval - 1).astype(self.dtype)
        img[self.mask] = maxval
        return img


Scene = MoenchScene | JungfrauScene | EigerScene


def make_scene(detector: Detector, *, seed: int = 0, pool: int = 0,
               **overrides: Any) -> Scene:
    """Build the scene of a detector kind; ``overrides`` are scene fields (rows, cols, mode…)."""
    kinds: dict[str, type[Scene]] = {"moench": MoenchScene, "jungfrau": JungfrauScene,
                                     "eiger": EigerScene}
    if detector not in kinds:
        raise ValueError(f"detector {detector!r} is not one of {sorted(kinds)}")
    cls = kinds[detector]
    fields = set(cls.__dataclass_fields__)
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown {detector} scene settings {sorted(unknown)}; "
                         f"allowed: {sorted(fields)}")
    if detector == "eiger" and not pool:
        pool = 16
    return cls(seed=seed, pool=pool, **overrides)
