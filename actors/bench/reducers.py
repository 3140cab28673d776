"""Reducer throughput per core, with a ceiling measured in the same run.

``python -m actors.bench.reducers [--quick]`` prints one JSON line per case:

* ``moench`` — the full MOENCH chain (``MoenchReducer.process``: subtraction, 3×3
  classification, analog/threshold/counting images, pedestal samples) on 400×400 uint16
  pump-probe frames in the batches a pipeline cuts by default for that size
  (``batch.max_frames: auto``: 100 frames), numba kernel and numpy fallback, plus a
  pedestal run;
* ``jungfrau`` — the Jungfrau conversion (gain bits, per-gain pedestal and gain) with
  its energy image, and with its photon image too, on 1024×1024 (1M, 2 modules) batches
  of 32 frames;
* ``sum``, ``mean``, ``max``, ``total``, ``roi``, ``radial``, ``hits`` on 2167×2070
  uint16 (EIGER 4M) batches.

Each line reports ``frames_per_s`` (median of the repeats, after a warm-up that also
compiles the numba kernels), the ceiling ``ceiling_frames_per_s`` of one plain
``np.add(acc, frame, out=acc)`` pass over the same frames, and their ratio. Frames come
from a pool larger than the last-level cache so the figures are cache-cold.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.config import BatchConfig
from actors.reduce.base import Batch, Reducer
from actors.reduce.jit import Backend, numba_available, resolve_backend
from actors.reduce.moench.pedestal import EpochSamples, PedestalState
from actors.reduce.moench.reducer import MoenchReducer
from actors.reduce.moench.settings import MoenchSettings
from actors.reduce.registry import build_reducer
from actors.wire.model import Geometry

logger = logging.getLogger(__name__)

MOENCH_SHAPE = (400, 400)
EIGER_SHAPE = (2167, 2070)


def moench_like(rng: np.random.Generator, n: int, shape: tuple[int, int],
                photons: int = 200) -> npt.NDArray[np.uint16]:
    """Pedestal 5400 ± 40 ADU, noise 19 ADU, ``photons`` photons of 110 ADU per frame."""
    ped = rng.normal(5400.0, 40.0, shape).astype(np.float32)
    x = rng.standard_normal((n, *shape), dtype=np.float32) * np.float32(19.0) + ped
    flat = x.reshape(n, -1)
    for t in range(n):
        flat[t, rng.integers(0, flat.shape[1], photons)] += 110.0
    out: npt.NDArray[np.uint16] = np.clip(np.rint(x), 0, 65535).astype(np.uint16)
    return out


def _timed(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ceiling(pool: Sequence[npt.NDArray[Any]], acc_dtype: Any, repeat: int) -> float:
    acc = np.zeros(pool[0].shape[1:], acc_dtype)

    def once() -> None:
        for batch in pool:
            for frame in batch:
                np.add(acc, frame, out=acc)

    return sum(len(b) for b in pool) / _timed(once, repeat)


def _reducer_rate(r: Reducer[Any, Any], batches: Sequence[Batch],
                  states: dict[int, Any] | None, repeat: int) -> float:
    r.process(batches[0], states)  # warm-up (compiles numba kernels)

    def once() -> None:
        for b in batches:
            r.process(replace(b), states)  # a fresh Batch: nothing shared from the last run

    return sum(b.n for b in batches) / _timed(once, repeat)


def _row(case: str, fps: float, ceiling: float, **extra: Any) -> dict[str, Any]:
    return {"case": case, "frames_per_s": round(fps, 1),
            "ceiling_frames_per_s": round(ceiling, 1), "ratio": round(fps / ceiling, 4),
            **extra}


def bench_moench(rng: np.random.Generator, batches: int, batch: int,
                 repeat: int) -> list[dict[str, Any]]:
    shape = MOENCH_SHAPE
    pool = [moench_like(rng, batch, shape) for _ in range(batches)]
    x = pool[0].astype(np.int64)
    seed = PedestalState.empty(shape).fold(
        EpochSamples(np.full(shape, batch, np.int64), x.sum(0), (x * x).sum(0)), 5000)
    geometry = Geometry(*shape, "uint16")
    bs = [Batch(i, f, np.arange(i * batch, (i + 1) * batch, dtype=np.int64))
          for i, f in enumerate(pool)]
    epoch = batches * batch  # one epoch: every batch uses the state after epoch -1
    ceiling = _ceiling(pool, np.float64, repeat)
    meta = {"frame": "400x400 uint16", "batch": batch, "ceiling_op": "np.add(acc_f64, frame)"}
    rows = []
    backends: list[Backend] = ["numba", "numpy"] if numba_available() else ["numpy"]
    for backend in backends:
        for label, pattern, ped_img in (("pump-probe", "up p", False),
                                        ("pedestal", "ped", True)):
            settings = MoenchSettings(processing_pattern=pattern, process_pedestal_img=ped_img,
                                      pedestal_epoch=epoch)
            r = MoenchReducer(settings, geometry, backend=backend)
            use = bs if backend == "numba" else bs[:2]
            fps = _reducer_rate(r, use, {-1: seed}, repeat if backend == "numba" else 1)
            rows.append(_row(f"moench {label}", fps, ceiling, backend=backend, **meta))
    return rows


JUNGFRAU_SHAPE = (1024, 1024)  # a Jungfrau 1M: 2 modules of 512×1024


def jungfrau_like(rng: np.random.Generator, n: int, shape: tuple[int, int]
                  ) -> npt.NDArray[np.uint16]:
    """Raw Jungfrau values: G0 around 3000 ADU (noise 3 ADU, 0.1 % of pixels hit by a
    12 keV photon at 40 ADU/keV), 0.5 % of the pixels in G1 and 0.1 % in G2."""
    adc = rng.normal(3000.0, 3.0, (n, *shape)).astype(np.float32)
    hit = rng.random((n, *shape), dtype=np.float32) < 0.001
    adc[hit] += 480.0
    code = np.zeros((n, *shape), np.uint16)
    u = rng.random((n, *shape), dtype=np.float32)
    code[u < 0.006] = 1
    code[u < 0.001] = 3
    raw = np.clip(np.rint(adc), 0, 0x3FFF).astype(np.uint16)
    out: npt.NDArray[np.uint16] = (code << np.uint16(14)) | raw
    return out


def bench_jungfrau(rng: np.random.Generator, batches: int, batch: int,
                   repeat: int) -> list[dict[str, Any]]:
    """Conversion + energy image (and + photons) of Jungfrau 1M frames on one core."""
    import tempfile

    shape = JUNGFRAU_SHAPE
    pool = [jungfrau_like(rng, batch, shape) for _ in range(batches)]
    bs = [Batch(i, f, np.arange(i * batch, (i + 1) * batch, dtype=np.int64))
          for i, f in enumerate(pool)]
    ceiling = _ceiling(pool, np.float64, repeat)
    meta = {"frame": "1024x1024 uint16 (Jungfrau 1M)", "batch": batch,
            "ceiling_op": "np.add(acc_f64, frame)"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gains = np.stack([np.full(shape, 40.0), np.full(shape, -1.5), np.full(shape, -0.1)])
        peds = np.stack([np.full(shape, 3000.0), np.full(shape, 14000.0),
                         np.full(shape, 15000.0)])
        np.save(f"{tmp}/gain.npy", gains)
        np.save(f"{tmp}/pedestal.npy", peds)
        for label, extra in (("jungfrau energy", {}),
                             ("jungfrau energy+photons", {"photon_energy": 12.0})):
            r = build_reducer({"type": "jungfrau", "gain_file": f"{tmp}/gain.npy",
                               "pedestal_file": f"{tmp}/pedestal.npy", **extra},
                              Geometry(*shape, "uint16"))
            fps = _reducer_rate(r, bs, None, repeat)
            rows.append(_row(label, fps, ceiling, backend=resolve_backend("auto"), **meta))
    return rows


GENERIC: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sum", {"type": "sum"}),
    ("mean", {"type": "mean"}),
    ("max", {"type": "max"}),
    ("total", {"type": "total"}),
    ("roi", {"type": "roi", "rois": [
        {"name": f"r{i}", "row0": 100 * i, "row1": 100 * i + 100, "col0": 200, "col1": 300}
        for i in range(8)]}),
    ("radial", {"type": "radial", "center": (1083.5, 1035.0), "bins": 500}),
    ("hits", {"type": "hits", "threshold": 5600, "min_pixels": 10}),
)


def bench_generic(rng: np.random.Generator, batches: int, batch: int,
                  repeat: int) -> list[dict[str, Any]]:
    shape = EIGER_SHAPE
    pool = [moench_like(rng, batch, shape, photons=2000) for _ in range(batches)]
    mask = np.zeros(shape, bool)
    mask[:, 1030:1040] = True  # a module gap
    bs = [Batch(i, f, np.arange(i * batch, (i + 1) * batch, dtype=np.int64), mask)
          for i, f in enumerate(pool)]
    ceiling = _ceiling(pool, np.int64, repeat)
    geometry = Geometry(*shape, "uint16")
    meta = {"frame": "2167x2070 uint16", "batch": batch, "ceiling_op": "np.add(acc_i64, frame)"}
    return [_row(case, _reducer_rate(build_reducer(spec, geometry), bs, None, repeat),
                 ceiling, backend=resolve_backend("auto"), **meta) for case, spec in GENERIC]


def run(quick: bool = False, repeat: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """All cases; ``quick`` uses fewer frames (a smoke run, figures less reliable)."""
    rng = np.random.default_rng(seed)
    moench_batch = BatchConfig().frames_for(MOENCH_SHAPE[0] * MOENCH_SHAPE[1] * 2)
    rows = bench_moench(rng, batches=2 if quick else 8, batch=moench_batch, repeat=repeat)
    rows += bench_jungfrau(rng, batches=2 if quick else 4, batch=4 if quick else 32,
                           repeat=repeat)
    rows += bench_generic(rng, batches=2 if quick else 6, batch=4 if quick else 8,
                          repeat=repeat)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer frames (smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats per case")
    args = parser.parse_args(argv)
    for row in run(quick=args.quick, repeat=args.repeat):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
