"""Local backend throughput against raw pyzmq receive of the same sender, in the same run.

``python -m actors.bench.local [--quick]`` prints one JSON line per case:

* ``raw eiger4m`` — the ceiling: a plain synchronous pyzmq PULL ``recv_multipart(copy=False)``
  of 2167×2070 uint16 frames (8.97 MB, DECTRIS V1 encoding ``<``, i.e. uncompressed) sent by
  the simulator from a separate process (a pool of a few frames, so the sender is cheap);
* ``local eiger4m`` — the same sender into the local backend (``sum`` + ``total`` reducers,
  2 workers); ``ratio`` is its frames/s over the raw receive of the same run;
* ``raw moench`` / ``local moench`` — MOENCH 400×400 over sls PUB/SUB (lossless), the full
  MOENCH chain in the local backend.

Each case is the median of ``--repeat`` runs; each pipeline run times the second of two
acquisitions on one pipeline (the first compiles the workers' numba kernels). Pipeline
frames/s count from the first frame the results stage sees to the last merged partial
(``AcquisitionResult.duration``); the raw receive counts from the first to the last frame
received. The sender shares the machine's cores with the receiver, so compare ratios, not
absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import Any

from actors.backends.local.pipeline import LocalPipeline
from actors.bench.common import (
    MOENCH_CHAIN,
    eiger_settings,
    median,
    moench_settings,
    raw_receive,
    steady_run,
)
from actors.sim.simulator import SimulatorSettings

logger = logging.getLogger(__name__)


def pipeline_receive(settings: SimulatorSettings, config: dict[str, Any]) -> dict[str, Any]:
    """Frames/s of the local backend on the same sender, in steady state (see
    :func:`actors.bench.common.steady_run`)."""
    def open_pipeline(endpoint: str) -> LocalPipeline:
        return LocalPipeline({**config, "source": {**config["source"], "endpoint": endpoint}})

    got = steady_run(settings, open_pipeline)
    return {"fps": got["fps"], "batches": got["ledger"]["processed_batches"]}


def run(quick: bool = False, repeat: int = 3, batch_4m: int = 16, batch_moench: int = 32,
        max_inflight: int = 4, max_delay: float = 1.0) -> list[dict[str, Any]]:
    """``max_delay`` only bounds latency when frames come slowly; under load a short delay
    (the 0.05 s default) cuts batches small whenever the ingest waits for a free slot, and
    every batch costs one partial (36 MB for a 4M ``sum`` image) to send and merge."""
    rows: list[dict[str, Any]] = []
    n4m = 150 if quick else 600
    nm = 1000 if quick else 6000

    def base(batch: int) -> dict[str, Any]:
        return {"backend": "local", "workers": 2, "max_inflight": max_inflight,
                "batch": {"max_frames": batch, "max_delay": max_delay},
                "tango": {"enabled": False}, "output": {"enabled": False}}

    eiger_cfg: dict[str, Any] = {**base(batch_4m),
                                 "source": {"endpoint": "", "protocol": "dectris-v1"},
                                 "reducers": [{"type": "sum"}, {"type": "total"}]}
    moench_cfg: dict[str, Any] = {**base(batch_moench),
                                  "source": {"endpoint": "", "protocol": "sls"},
                                  "reducers": MOENCH_CHAIN}
    for label, settings, socket, cfg in (
            ("eiger4m", eiger_settings(n4m), "pull", eiger_cfg),
            ("moench", moench_settings(nm), "sub", moench_cfg)):
        raw, local = [], []
        for _ in range(repeat):  # interleaved, so both see the same machine load
            raw.append(raw_receive(settings, socket))
            local.append(pipeline_receive(settings, cfg)["fps"])
        ceiling = median(raw)
        meta = {"frames": settings.frames, "workers": 2,
                "batch": cfg["batch"]["max_frames"], "max_delay": max_delay,
                "max_inflight": max_inflight, "runs": repeat}
        rows.append({"case": f"raw {label}", "frames_per_s": round(ceiling, 1), "ratio": 1.0,
                     "runs_fps": [round(x, 1) for x in raw], **meta})
        fps = median(local)
        rows.append({"case": f"local {label}", "frames_per_s": round(fps, 1),
                     "ceiling_frames_per_s": round(ceiling, 1),
                     "ratio": round(fps / ceiling, 3),
                     "reducers": [r["type"] for r in cfg["reducers"]],
                     "runs_fps": [round(x, 1) for x in local], **meta})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer frames (smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case")
    parser.add_argument("--batch-4m", type=int, default=16, help="frames per 4M batch")
    parser.add_argument("--batch-moench", type=int, default=32, help="frames per MOENCH batch")
    parser.add_argument("--max-inflight", type=int, default=4)
    parser.add_argument("--max-delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    for row in run(quick=args.quick, repeat=args.repeat, batch_4m=args.batch_4m,
                   batch_moench=args.batch_moench, max_inflight=args.max_inflight,
                   max_delay=args.max_delay):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
