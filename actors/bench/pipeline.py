"""Ray pipeline throughput against a raw pyzmq receive of the same sender, in the same run.

Cases (one JSON line each):

* ``eiger4m_sum``: 2167 x 2070 uint16 frames (8.97 MB, DECTRIS V1 uncompressed ``<``) over
  PUSH/PULL, reducers ``sum`` + ``total``, 2 processing actors. Ceiling: a plain pyzmq PULL
  loop (``recv_multipart(copy=False)`` + header JSON + ``np.frombuffer``) on the same sender.
* ``moench_full_chain``: MOENCH 400 x 400 uint16 over sls PUB/SUB (lossless), the full
  MOENCH chain (pump-probe, pedestal epoch 100, lag 1), 2 processing actors; same ceiling.

The sender runs in its own process (a real detector sends from another host, so on this
2-core machine every figure is a lower bound: compare the ratios). Peak object-store use
is the ingest's peak of batch bytes held in flight, and ``spilled`` says whether the raylet
logged any spilling.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.sockets import free_tcp_endpoint
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)

EIGER4M = {"rows": 2167, "cols": 2070, "dtype": "uint16", "centre": (1080.0, 1030.0)}


def _send(settings: SimulatorSettings, ready: Any) -> None:
    with Simulator(settings) as sim:
        for i in range(min(settings.pool or 1, settings.frames)):
            sim.scene.frame(i)  # generate the pool before timing starts
        ready.set()
        sim.run()


def _start_sender(settings: SimulatorSettings) -> mp.process.BaseProcess:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_send, args=(settings, ready), name="bench sender", daemon=True)
    proc.start()
    if not ready.wait(120):
        proc.kill()
        raise TimeoutError("the bench sender did not start")
    return proc


def raw_receive(settings: SimulatorSettings, socket: str) -> float:
    """Frames/s of a bare pyzmq receive loop (the ceiling)."""
    proc = _start_sender(settings)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL if socket == "pull" else zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if socket == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(settings.endpoint)
    n = t0 = 0.0
    try:
        while n < settings.frames:
            if not sock.poll(30_000):
                raise TimeoutError(f"raw receive stalled after {n} frames")
            parts = sock.recv_multipart(copy=False)
            header = json.loads(parts[0].bytes)
            if len(parts) >= 3 and header.get("htype") == "dimage-1.0":
                np.frombuffer(parts[2].buffer, dtype=np.uint8)
            elif len(parts) == 2 and header.get("data") == 1:
                np.frombuffer(parts[1].buffer, dtype=np.uint8)
            else:
                continue
            if n == 0:
                t0 = time.perf_counter()
            n += 1
        return (n - 1) / (time.perf_counter() - t0)
    finally:
        sock.close(linger=0)
        ctx.term()
        proc.join(30)


def pipeline_receive(settings: SimulatorSettings, reducers: list[dict[str, Any]],
                     workers: int, batch: int, inflight: int) -> dict[str, Any]:
    from actors.pipeline.driver import RayPipeline

    socket = "sub" if settings.protocol is Protocol.SLS else "pull"
    cfg = {"source": {"endpoint": settings.endpoint, "protocol": str(settings.protocol),
                      "socket": socket},
           "reducers": reducers, "workers": workers, "max_inflight": inflight,
           "batch": {"max_frames": batch, "max_delay": 0.05},
           "ray": {"object_store_memory": 1_000_000_000},
           "tango": {"enabled": False}, "output": {"enabled": False}}
    with RayPipeline(cfg) as pipe:
        pipe.start_acquisition()
        proc = _start_sender(settings)
        sending = time.time()  # timed like the ceiling: from the sender's first frame
        result = pipe.wait_acquisition(timeout=600)
        status = pipe.status()
        proc.join(30)
        spilled = _spilled()
    processed = result.ledger["processed"]
    return {"fps": processed / (result.finished - sending), "processed": processed,
            "lost": result.ledger["lost"], "dropped": result.ledger["dropped_total"],
            "peak_object_store_bytes": status["peak_inflight_bytes"], "spilled": spilled,
            "ingest_seconds": {k: round(v, 2) for k, v in status.get("timing", {}).items()}}


def _spilled() -> bool:
    import ray

    try:
        session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # the private API moved: report unknown as not spilled
        return False
    log = session / "logs" / "raylet.out"
    return log.is_file() and "Spilled" in log.read_text(errors="replace")


def run(frames_4m: int = 200, frames_moench: int = 3000, workers: int = 2,
        batch_4m: int = 8) -> list[dict[str, Any]]:
    import ray

    rows: list[dict[str, Any]] = []
    ray.init(num_cpus=max(2, workers), object_store_memory=1_000_000_000,
             include_dashboard=False, log_to_driver=False)
    try:
        eiger = SimulatorSettings(protocol=Protocol.DECTRIS_V1, detector="eiger",
                                  endpoint=free_tcp_endpoint(), frames=frames_4m, pool=4,
                                  v1_encoding="<", scene=EIGER4M)
        ceiling = raw_receive(eiger, "pull")
        eiger = SimulatorSettings(**{**eiger.__dict__, "endpoint": free_tcp_endpoint()})
        got = pipeline_receive(eiger, [{"type": "sum"}, {"type": "total"}], workers,
                               batch_4m, 4)
        rows.append({"case": "eiger4m_sum", "frame": "2167x2070 uint16", "workers": workers,
                     "batch": batch_4m,
                     "ceiling_fps": round(ceiling, 1), **_round(got),
                     "ratio": round(got["fps"] / ceiling, 3)})
        moench = SimulatorSettings(endpoint=free_tcp_endpoint(), frames=frames_moench,
                                   pool=64, lossless=True)
        ceiling = raw_receive(moench, "sub")
        moench = SimulatorSettings(**{**moench.__dict__, "endpoint": free_tcp_endpoint()})
        chain = [{"type": "moench", "split_pump": True, "pedestal_epoch": 100,
                  "pedestal_lag": 1}]
        got = pipeline_receive(moench, chain, workers, 64, max(4, workers))
        rows.append({"case": "moench_full_chain", "frame": "400x400 uint16",
                     "workers": workers, "ceiling_fps": round(ceiling, 1), **_round(got),
                     "ratio": round(got["fps"] / ceiling, 3)})
    finally:
        ray.shutdown()
    return rows


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames-4m", type=int, default=200)
    parser.add_argument("--frames-moench", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-4m", type=int, default=8, help="frames per batch, 4M case")
    args = parser.parse_args(argv)
    for row in run(args.frames_4m, args.frames_moench, args.workers, args.batch_4m):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
