"""Time to result: from the sender's first message to the acquisition's result being
available, on both backends, against a raw receive of the same series in the same run.

``rayline bench ttr`` prints one JSON line per (case, backend), then one summary line per
case with the Ray / local ratio:

* cases: ``eiger4m`` 300 × 2167×2070, ``eiger1m`` 1000 × 1065×1030, ``moench`` 5000 ×
  400×400 — uint16 over DECTRIS V1 uncompressed (PUSH/PULL, lossless), reducers ``sum`` +
  ``total``, 2 workers;
* ``ttr_first_s``: the first acquisition of a freshly opened pipeline (what a notebook user
  or the first scan waits for), ``ttr_s``: the median of the next ones (a running service);
  both from the sender being told to go to ``wait_acquisition`` returning;
* ``raw_s``: a bare pyzmq PULL loop's time from go to the last frame received (the
  ceiling), ``ratio`` = raw_s / ttr_s, and ``fixed_s`` = ttr_s − raw_s: what the pipeline
  adds on top of receiving (processing the tail, merging, ending); ``tail_s``: from the last
  frame received by the pipeline to its result (``AcquisitionResult.tail``);
* ``cpu_ms_per_frame``: CPU milliseconds per frame of each role over the warm acquisitions
  (``ingest``, ``worker``, ``results``, ``driver`` — on the local backend the results stage
  and the dispatch run in the driver —, ``ray-system``: raylet, GCS and Ray's helpers).

The sender shares the 2 cores with the pipeline: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from actors.bench.common import Sender, median, raw_times
from actors.bench.cpu import cpu_by_role, cpu_ms_per_frame
from actors.sim.simulator import SimulatorSettings
from actors.wire.model import Protocol

CASES = {"eiger4m": (300, 2167, 2070), "eiger1m": (1000, 1065, 1030),
         "moench": (5000, 400, 400)}


def settings_for(frames: int, rows: int, cols: int) -> SimulatorSettings:
    return SimulatorSettings(protocol=Protocol.DECTRIS_V1, detector="eiger", frames=frames,
                             pool=4, scene={"rows": rows, "cols": cols, "dtype": "uint16"},
                             v1_encoding="<", send_timeout=120.0)


def raw_time(settings: SimulatorSettings) -> float:
    """Seconds from go to the last frame received by a bare PULL loop."""
    go, _, last = raw_times(settings, "pull")
    return last - go


def pipeline_times(settings: SimulatorSettings, backend: str, repeat: int
                   ) -> tuple[list[float], list[float], dict[str, float]]:
    """Seconds from go to the result, for ``repeat`` acquisitions of one fresh pipeline,
    each one's tail (last frame received to the result, ``AcquisitionResult.tail``), and the
    CPU milliseconds per frame of each role over the warm acquisitions."""
    from actors import Pipeline
    from actors.config import parse_config

    out, tails = [], []
    before: dict[str, float] = {}
    with Sender(settings) as sender:
        cfg = parse_config({
            "backend": backend, "workers": 2,
            "source": {"endpoint": sender.endpoint, "protocol": "dectris-v1"},
            "reducers": [{"type": "sum"}, {"type": "total"}],
            "ray": {"num_cpus": 2, "worker_cpus": 0.5},
            "tango": {"enabled": False}, "output": {"enabled": False}})
        exclude = {sender.process.pid or 0}
        with Pipeline(cfg) as pipe:
            for i in range(repeat):
                if i == 1:
                    before = cpu_by_role(pipe, exclude)
                pipe.start_acquisition()
                t0 = time.perf_counter()
                sender.go()
                result = pipe.wait_acquisition(timeout=600)
                out.append(time.perf_counter() - t0)
                tails.append(result.tail or 0.0)
                sender.wait_sent()
                if result.ledger.processed != settings.frames:
                    raise RuntimeError(f"processed {result.ledger.processed} of "
                                       f"{settings.frames}: {result.ledger}")
            after = cpu_by_role(pipe, exclude)
    warm = max(1, repeat - 1)
    return out, tails, cpu_ms_per_frame(before, after, settings.frames * warm)


def run(cases: list[str], backends: list[str], repeat: int, quick: bool = False
        ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        frames, nrows, ncols = (20, 256, 256) if quick else CASES[case]
        settings = settings_for(frames, nrows, ncols)
        by_backend: dict[str, float] = {}
        for backend in backends:
            raw = raw_time(settings)
            times, tails, cpu = pipeline_times(settings, backend, repeat + 1)
            ttr = median(times[1:])
            by_backend[backend] = ttr
            rows.append({"case": case, "backend": backend, "frames": frames,
                         "frame": f"{nrows}x{ncols} uint16",
                         "ttr_first_s": round(times[0], 3), "ttr_s": round(ttr, 3),
                         "runs_s": [round(t, 3) for t in times[1:]],
                         "raw_s": round(raw, 3), "ratio": round(raw / ttr, 3),
                         "fixed_s": round(ttr - raw, 3), "fps": round(frames / ttr, 1),
                         "tail_s": round(median(tails[1:]), 3),
                         "cpu_ms_per_frame": cpu})
            print(json.dumps(rows[-1]), flush=True)
        if "ray" in by_backend and "local" in by_backend:
            summary = {"case": case, "summary": "ray/local", "fps_ratio": round(
                by_backend["local"] / by_backend["ray"], 3)}
            rows.append(summary)
            print(json.dumps(summary), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--case", action="append", choices=sorted(CASES),
                        help="(repeatable) default: all")
    parser.add_argument("--backend", action="append", choices=["ray", "local"],
                        help="(repeatable) default: both")
    parser.add_argument("--repeat", type=int, default=2,
                        help="warm acquisitions after the first, per pipeline")
    parser.add_argument("--quick", action="store_true",
                        help="20 frames of 256x256 per case (a smoke run: the figures mean "
                        "nothing)")
    args = parser.parse_args(argv)
    run(args.case or list(CASES), args.backend or ["ray", "local"], args.repeat, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
