"""CPU seconds by pipeline role (ingest, worker, results, driver, Ray's own processes), for
the benchmarks' per-stage cost per frame: read before and after an acquisition."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import psutil


def _role(proc: psutil.Process, pipe: Any) -> str:
    """The pipeline role a process plays (local backend: by pid; Ray: by actor title)."""
    coordinator = getattr(pipe, "coordinator", None)
    if coordinator is not None:
        ingests = {h.process.pid for h in [coordinator.ingest,
                                           *coordinator.secondaries.values()]}
        if proc.pid in ingests:
            return "ingest"
        if proc.pid in set(coordinator.worker_pids()):
            return "worker"
    try:
        title = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    for actor, role in (("ray::Ingest", "ingest"), ("ray::Processing", "worker"),
                        ("ray::Results", "results"), ("ray::Tango", "tango")):
        if title.startswith(actor):
            return role
    if "raylet" in title or "gcs_server" in title:
        return "ray-system"
    return "other"


def cpu_by_role(pipe: Any, exclude: set[int]) -> dict[str, float]:
    """CPU seconds so far of the driver ("driver": results and dispatch on the local
    backend) and of every pipeline process, by role."""
    me = psutil.Process()
    out: dict[str, float] = defaultdict(float)
    t = me.cpu_times()
    out["driver"] += t.user + t.system
    procs = me.children(recursive=True)
    with contextlib.suppress(psutil.Error):  # Ray's actors are the raylet's children
        procs += [p for p in psutil.process_iter() if p.pid != me.pid and
                  p not in procs and " ".join(p.cmdline()).startswith("ray::")]
    for proc in procs:
        if proc.pid in exclude:
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[_role(proc, pipe)] += t.user + t.system
    return dict(out)


def cpu_ms_per_frame(before: dict[str, float], after: dict[str, float], frames: int
                     ) -> dict[str, float]:
    """Milliseconds of CPU per frame of each role between two readings (every role found;
    the kernel counts CPU time in 10 ms ticks, so a short run may show 0 for a busy role)."""
    return {k: round(max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) / frames * 1e3, 3)
            for k in sorted(after)}
