"""Ray pipeline throughput against a raw pyzmq receive of the same sender, in the same run.

``python -m actors.bench.pipeline`` (or ``rayline bench pipeline``) prints one JSON line per
case:

* ``eiger4m_sum``: 2167 x 2070 uint16 frames (8.97 MB, DECTRIS V1 uncompressed ``<``) over
  PUSH/PULL, reducers ``sum`` + ``total``, 2 processing actors. Ceiling: a plain pyzmq PULL
  loop (``recv_multipart(copy=False)``) on the same sender.
* ``moench_full_chain``: MOENCH 400 x 400 uint16 over sls PUB/SUB (lossless), the full
  MOENCH chain (pump-probe split, pedestal epoch 100, lag 1), 2 processing actors; same
  ceiling on a SUB socket.

Each case is the median of ``--repeat`` interleaved (raw, pipeline) runs, so both see the
same machine load; a pipeline run times the second of two acquisitions on one pipeline
(:func:`actors.bench.common.steady_run`). ``peak_object_store_bytes`` is the ingest's peak
of batch bytes held in the object store, and ``spilled`` says whether the raylet logged any
spilling. The sender shares the machine's cores, so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from actors.bench.common import (
    MOENCH_CHAIN,
    eiger_settings,
    median,
    moench_settings,
    raw_receive,
    steady_run,
)
from actors.sim.simulator import SimulatorSettings
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)

OBJECT_STORE = 1_000_000_000


def pipeline_receive(settings: SimulatorSettings, reducers: list[dict[str, Any]],
                     workers: int, batch: int, inflight: int) -> dict[str, Any]:
    """Steady-state frames/s of the Ray backend on its own sender."""
    from actors.backends.ray.driver import RayPipeline

    socket = "sub" if settings.protocol is Protocol.SLS else "pull"

    def open_pipeline(endpoint: str) -> RayPipeline:
        return RayPipeline({
            "source": {"endpoint": endpoint, "protocol": str(settings.protocol),
                       "socket": socket},
            "reducers": reducers, "workers": workers, "max_inflight": inflight,
            "batch": {"max_frames": batch, "max_delay": 0.05},
            "ray": {"object_store_memory": OBJECT_STORE},
            "tango": {"enabled": False}, "output": {"enabled": False}})

    got = steady_run(settings, open_pipeline)
    led = got["ledger"]
    return {"fps": got["fps"], "peak": got["status"]["peak_inflight_bytes"],
            "mean_batch": led["processed"] / max(1, led["processed_batches"]),
            "lost": got["ledger"]["lost"], "dropped": got["ledger"]["dropped_total"]}


def run(frames_4m: int = 600, frames_moench: int = 6000, workers: int = 2, batch_4m: int = 16,
        batch_moench: int = 64, repeat: int = 3) -> list[dict[str, Any]]:
    from actors.backends.ray.runtime import local_ray, store_spilled

    rows: list[dict[str, Any]] = []
    with local_ray(max(2, workers), OBJECT_STORE):
        cases = [("eiger4m_sum", "2167x2070 uint16", eiger_settings(frames_4m), "pull",
                  [{"type": "sum"}, {"type": "total"}], batch_4m, 4),
                 ("moench_full_chain", "400x400 uint16", moench_settings(frames_moench), "sub",
                  MOENCH_CHAIN, batch_moench, max(4, workers))]
        for case, frame, settings, socket, reducers, batch, inflight in cases:
            raw, runs = [], []
            for _ in range(repeat):  # interleaved, so both see the same machine load
                raw.append(raw_receive(settings, socket))
                runs.append(pipeline_receive(settings, reducers, workers, batch, inflight))
            ceiling = median(raw)
            fps = median([r["fps"] for r in runs])
            rows.append({
                "case": case, "frame": frame, "frames": settings.frames, "workers": workers,
                "batch": batch, "max_inflight": inflight, "runs": repeat,
                "mean_batch_frames": round(median([r["mean_batch"] for r in runs]), 1),
                "ceiling_fps": round(ceiling, 1), "fps": round(fps, 1),
                "ratio": round(fps / ceiling, 3),
                "runs_ceiling_fps": [round(x, 1) for x in raw],
                "runs_fps": [round(r["fps"], 1) for r in runs],
                "lost": sum(r["lost"] for r in runs),
                "dropped": sum(r["dropped"] for r in runs),
                "peak_object_store_bytes": max(r["peak"] for r in runs),
                "object_store_bytes": OBJECT_STORE, "spilled": store_spilled()})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--frames-4m", type=int, default=600)
    parser.add_argument("--frames-moench", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-4m", type=int, default=16, help="frames per 4M batch")
    parser.add_argument("--batch-moench", type=int, default=64,
                        help="frames per MOENCH batch")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case")
    args = parser.parse_args(argv)
    for row in run(args.frames_4m, args.frames_moench, args.workers, args.batch_4m,
                   args.batch_moench, args.repeat):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
