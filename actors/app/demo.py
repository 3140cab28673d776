"""``rayline demo``: the main job on embedded defaults.

A simulated MOENCH detector streams over real ZMQ on loopback into the pipeline (Ray, or
the local shared-memory backend), with the Tango device running without a database: one
pedestal (dark) acquisition, then one pump-probe acquisition with photon counting. Each
acquisition writes a NeXus file; a summary table is printed at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from actors.core.acquisition import AcquisitionResult
from actors.core.api import PipelineApi
from actors.logs import Progress
from actors.sim.simulator import Simulator, SimulatorSettings

logger = logging.getLogger(__name__)

MOENCH_CHAIN = {"type": "moench", "processing_pattern": "up", "split_pump": False,
                "threshold": 80.0, "counting_sigma": 4.0, "pedestal_epoch": 100,
                "pedestal_lag": 1, "pedestal_frames": 1000}


@dataclass(frozen=True)
class DemoSettings:
    backend: str = "ray"
    pedestal_frames: int = 1000
    pumpprobe_frames: int = 2000
    rate: float = 0.0  # as fast as the pipeline takes them
    workers: int = 2
    output: str = "rayline-data"
    tango: bool = True
    progress: bool = True
    seed: int = 0


def demo_config(settings: DemoSettings, endpoint: str) -> dict[str, Any]:
    return {
        "backend": settings.backend,
        "source": {"endpoint": endpoint, "protocol": "sls", "socket": "sub",
                   "geometry": {"rows": 400, "cols": 400, "dtype": "uint16"}},
        "workers": settings.workers,
        "max_inflight": max(4, settings.workers),
        "batch": {"max_frames": 50, "max_delay": 0.05},
        "reducers": [MOENCH_CHAIN],
        "ray": {"num_cpus": max(2, settings.workers), "object_store_memory": 300_000_000,
                "worker_cpus": 0.5},
        "output": {"enabled": True, "directory": settings.output, "filename": "demo"},
        "tango": {"enabled": settings.tango, "database": False},
        "live_period": 0.5,
    }


def _acquire(pipe: PipelineApi, sim: Simulator, settings: DemoSettings, label: str
             ) -> AcquisitionResult:
    frames = sim.settings.frames
    progress = Progress(label, enabled=settings.progress)
    pipe.start_acquisition()
    errors: list[BaseException] = []
    sender = threading.Thread(target=_run_sender, args=(sim, errors), name="simulator",
                              daemon=True)
    sender.start()
    deadline = time.monotonic() + 600
    while sender.is_alive() or pipe.status().state != "idle":
        progress(pipe.status().processed, frames)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: no end after 600 s: {pipe.status()}")
        sender.join(timeout=0.25)
        if not sender.is_alive() and errors:
            raise errors[0]
    result: AcquisitionResult = pipe.wait_acquisition(timeout=120)
    progress(result.ledger.processed, frames)
    progress.finish()
    return result


def _run_sender(sim: Simulator, errors: list[BaseException]) -> None:
    try:
        sim.run()
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def run_demo(settings: DemoSettings, out: TextIO,
             pipeline_factory: Callable[[dict[str, Any]], PipelineApi] | None = None
             ) -> list[AcquisitionResult]:
    """Run both acquisitions and print the summary; returns their results."""
    from actors import Pipeline

    factory = pipeline_factory or Pipeline
    t0 = time.monotonic()
    sim_settings = SimulatorSettings(frames=settings.pedestal_frames, rate=settings.rate,
                                     pool=64, lossless=True, seed=settings.seed,
                                     scene={"mode": "dark"})
    # the simulated detector binds first (as a real one does), then the pipeline connects
    with Simulator(sim_settings) as sim, factory(demo_config(settings, sim.endpoint)) as pipe:
        endpoint = sim.endpoint
        pipe.set("process_pedestal_img", True)
        dark = _acquire(pipe, sim, settings, "pedestal acquisition")
        pipe.set("process_pedestal_img", False)
        pipe.set("split_pump", True)
        sim.restart(frames=settings.pumpprobe_frames, scene={"mode": "pumpprobe"})
        pump = _acquire(pipe, sim, settings, "pump-probe acquisition")
        tango = pipe.tango_address
        _summary(out, settings, endpoint, [("pedestal", dark), ("pump-probe", pump)], tango,
                 time.monotonic() - t0)
    return [dark, pump]


def _summary(out: TextIO, settings: DemoSettings, endpoint: str,
             results: list[tuple[str, AcquisitionResult]], tango: str | None,
             elapsed: float) -> None:
    w = out.write
    w(f"\nrayline demo — MOENCH 400x400 simulated over sls PUB/SUB ({endpoint}), "
      f"{settings.backend} backend, {settings.workers} workers\n\n")
    w(f"{'acquisition':<12}{'received':>9}{'processed':>10}{'dropped':>8}{'lost':>6}"
      f"{'rejected':>9}{'frames/s':>10}  file\n")
    for label, r in results:
        led = r.ledger
        fps = led.processed / r.duration if r.duration > 0 else 0.0
        w(f"{label:<12}{led.received:>9}{led.processed:>10}{led.dropped_total:>8}"
          f"{led.lost:>6}{led.rejected_total:>9}{fps:>10.0f}  "
          f"{r.file or '(not written: ' + str(r.error) + ')'}\n")
    pump = results[-1][1].outputs
    w("\npump-probe results: "
      f"{int(_scalar(pump.get('unpumped_frames')))} unpumped, "
      f"{int(_scalar(pump.get('pumped_frames')))} pumped frames; "
      f"photons counted: {_sum(pump.get('counting_img')):.0f} unpumped, "
      f"{_sum(pump.get('counting_img_pumped')):.0f} pumped\n")
    w(f"Tango device: {tango or '(disabled)'}\n")
    w(f"output directory: {Path(settings.output).absolute()}\n")
    w(f"total time: {elapsed:.1f} s\n")


def _scalar(v: Any) -> float:
    return float(v) if v is not None else 0.0


def _sum(v: Any) -> float:
    import numpy as np

    return float(np.asarray(v).sum()) if v is not None else 0.0
