"""A multi-module detector with 1, 2 and 4 ingests: throughput against a raw pyzmq receive of
the same streams, in the same run, on both backends.

``rayline bench modules`` prints one JSON line per (backend, module grid): the same detector
frame (``--rows`` x ``--cols`` uint16, Jungfrau-like) sent as 1 stream (one ingest), 2
streams (1 x 2 modules, two ingests) or 4 streams (2 x 2, four ingests), slsDetector PUB/SUB
lossless, reducers ``sum`` + ``total``, ``--workers`` processing actors. For each case:

* ``fps`` / ``bytes_per_s``: the pipeline's steady state (the second of two acquisitions,
  first frame received to last partial merged), and ``ceiling_fps``: one process receiving
  the same streams with bare pyzmq SUB sockets (``recv_multipart(copy=False)``, a poller),
  interleaved with the pipeline runs so both see the same machine load; ``ratio`` = fps /
  ceiling.
* ``cpu_s_per_frame``: CPU seconds per frame of each role during the timed acquisition
  (ingests, workers, results/driver, Ray's own processes), so the scaling can be read
  against where the cycles go. The sender runs on the same 2 cores: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import zmq

from actors.bench.common import Sender, median
from actors.bench.cpu import cpu_by_role, cpu_ms_per_frame
from actors.sim.modules import ModuleSettings, ModuleSimulator
from actors.sim.simulator import SimulatorSettings
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)

OBJECT_STORE = 1_000_000_000
GRIDS = ((1, 1), (1, 2), (2, 2))


def _sender(settings: ModuleSettings, conn: Connection) -> None:
    """Sender process: bind every module's stream, pre-build the frames, send on go."""
    with ModuleSimulator(settings) as sim:
        d = settings.detector
        for i in range(min(d.pool or 1, d.frames)):
            sim.scene.frame(i)
        conn.send(sim.endpoints)
        while conn.poll(300) and conn.recv() == "go":
            sim.run()
            conn.send("sent")
            sim.settings = replace(sim.settings, detector=replace(
                sim.settings.detector, wait_subscribers=0))
    conn.close()


class ModuleSender(Sender):
    """A module simulator in its own process; :meth:`go` sends one series on every stream."""

    def __init__(self, settings: ModuleSettings) -> None:
        super().__init__(settings, _sender)
        self.endpoints: list[str] = list(self.bound)

    def __enter__(self) -> ModuleSender:
        return self


def settings_for(grid: tuple[int, int], frames: int, rows: int, cols: int) -> ModuleSettings:
    detector = SimulatorSettings(protocol=Protocol.SLS, detector="jungfrau", frames=frames,
                                 pool=16, lossless=True, scene={"rows": rows, "cols": cols},
                                 subscriber_timeout=120.0, send_timeout=120.0)
    return ModuleSettings(detector, modules=grid)


def raw_receive(settings: ModuleSettings) -> float:
    """Frames/s of bare SUB sockets on every stream in one process (a frame counts once
    every stream has delivered it): the ceiling."""
    n = settings.detector.frames
    with ModuleSender(settings) as sender:
        ctx = zmq.Context()
        socks = []
        try:
            poller = zmq.Poller()
            for ep in sender.endpoints:
                s = ctx.socket(zmq.SUB)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RCVHWM, 1000)
                s.setsockopt(zmq.SUBSCRIBE, b"")
                s.connect(ep)
                poller.register(s, zmq.POLLIN)
                socks.append(s)
            sender.go()
            got = dict.fromkeys(socks, 0)
            t0 = t1 = 0.0
            while min(got.values()) < n:
                ready = dict(poller.poll(120_000))
                if not ready:
                    raise TimeoutError(f"raw receive: {got} of {n} frames")
                for s in ready:
                    while True:
                        try:
                            parts = s.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        if len(parts) > 1 and len(parts[1]) > 1:  # an image, not the end
                            got[s] += 1
                            t1 = time.perf_counter()
                            if not t0:
                                t0 = t1
            sender.wait_sent()
        finally:
            for s in socks:
                s.close(linger=0)
            ctx.term()
    return (n - 1) / (t1 - t0)


def pipeline_run(settings: ModuleSettings, backend: str, workers: int, batch: int
                 ) -> dict[str, Any]:
    """Steady-state frames/s of one backend on the detector's streams, and CPU by role."""
    from actors import Pipeline
    from actors.config import parse_config

    d = settings.detector
    with ModuleSender(settings) as sender:
        sources = [{"endpoint": ep, "protocol": "sls", "name": f"m{i}"}
                   for i, ep in enumerate(sender.endpoints)]
        cfg = parse_config({
            **({"sources": sources} if len(sources) > 1 else {"source": sources[0]}),
            "backend": backend, "workers": workers, "max_inflight": max(4, 2 * workers),
            "reducers": [{"type": "sum"}, {"type": "total"}],
            "batch": {"max_frames": batch, "max_delay": 0.05}, "overflow": "block",
            "ray": {"object_store_memory": OBJECT_STORE, "worker_cpus": 0.5},
            "tango": {"enabled": False}, "output": {"enabled": False}})
        with Pipeline(cfg) as pipe:
            for _ in range(2):  # a warm-up, then the timed one
                exclude = {sender.process.pid or 0}
                before = cpu_by_role(pipe, exclude)
                pipe.start_acquisition()
                sender.go()
                result = pipe.wait_acquisition(timeout=600)
                sender.wait_sent()
                after = cpu_by_role(pipe, exclude)
    led = result.ledger
    if led.processed != d.frames:
        raise RuntimeError(f"processed {led.processed} of {d.frames}: {led}")
    cpu = cpu_ms_per_frame(before, after, d.frames)
    return {"fps": (led.processed - 1) / result.duration, "cpu_ms_per_frame": cpu}


def run(frames: int, rows: int, cols: int, workers: int, batch: int, repeat: int,
        backends: list[str]) -> list[dict[str, Any]]:
    from actors.backends.ray.runtime import local_ray

    rows_out: list[dict[str, Any]] = []
    frame_bytes = rows * cols * 2
    with local_ray(2, OBJECT_STORE):
        for backend in backends:
            for grid in GRIDS:
                settings = settings_for(grid, frames, rows, cols)
                raw, runs = [], []
                for _ in range(repeat):  # interleaved: both see the same machine load
                    raw.append(raw_receive(settings))
                    runs.append(pipeline_run(settings, backend, workers, batch))
                ceiling = median(raw)
                fps = median([r["fps"] for r in runs])
                rows_out.append({
                    "case": f"modules_{grid[0]}x{grid[1]}", "backend": backend,
                    "ingests": grid[0] * grid[1], "frame": f"{rows}x{cols} uint16",
                    "frames": frames, "workers": workers, "batch": batch, "runs": repeat,
                    "ceiling_fps": round(ceiling, 1), "fps": round(fps, 1),
                    "ratio": round(fps / ceiling, 3),
                    "bytes_per_s": round(fps * frame_bytes),
                    "ceiling_bytes_per_s": round(ceiling * frame_bytes),
                    "runs_fps": [round(r["fps"], 1) for r in runs],
                    "runs_ceiling_fps": [round(x, 1) for x in raw],
                    "cpu_ms_per_frame": runs[-1]["cpu_ms_per_frame"]})
                print(json.dumps(rows_out[-1]), flush=True)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="frames per range")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case")
    parser.add_argument("--backend", action="append", choices=["ray", "local"],
                        help="(repeatable) default: both")
    args = parser.parse_args(argv)
    run(args.frames, args.rows, args.cols, args.workers, args.batch, args.repeat,
        args.backend or ["ray", "local"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
