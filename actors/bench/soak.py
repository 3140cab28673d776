"""A long run at part of the pipeline's capacity, with a Tango client subscribed: does
memory level off, and is every frame accounted for?

``rayline bench soak [--minutes 30] [--backend ray|local] [--fraction 0.5]`` measures the
pipeline's capacity on the MOENCH chain (one unthrottled acquisition), then runs back-to-back
acquisitions at ``fraction`` of it for ``minutes``, with a Tango client subscribed to the
counting image and the counters. Every ``period`` seconds it prints one JSON line: the RSS and
the private memory (RSS less shared pages: object-store and /dev/shm pages a process touched
count in its RSS) of every process of the pipeline (the driver and all its descendants: Ray's
daemons and actors, or the local backend's processes), the shared memory in use, the ledger
so far. The last line sums it up: each process's growth per hour after the warm-up (a
least-squares slope), and the ledger, which must be exact (received = processed + dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

import psutil

from actors.bench.common import MOENCH_CHAIN, Sender, moench_settings

#: fraction of the run counted as warm-up (not fitted)
WARM_UP = 0.2


def _config(endpoint: str, backend: str, tango: bool = True) -> dict[str, Any]:
    return {"backend": backend,
            "source": {"endpoint": endpoint, "protocol": "sls", "socket": "sub",
                       "geometry": {"rows": 400, "cols": 400, "dtype": "uint16"}},
            "reducers": MOENCH_CHAIN, "workers": 2, "max_inflight": 4,
            "batch": {"max_frames": 64, "max_delay": 0.05},
            "ray": {"num_cpus": 2, "object_store_memory": 500_000_000, "worker_cpus": 0.5},
            "tango": {"enabled": tango, "database": False}, "output": {"enabled": False},
            "live_period": 0.5}


class _Processes:
    """Every process of the pipeline under a label that stays the same for its life: the
    driver and its descendants (not ``exclude``: the sender), named by role (the local
    backend's), by executable (Ray's ``gcs_server``, ``raylet``) or by process title without
    the method Ray appends to it while one runs (``ray::Results``, not ``ray::Results.merge``).
    """

    def __init__(self, pipe: Any, exclude: set[int]) -> None:
        self.pipe = pipe
        self.exclude = exclude
        self.me = psutil.Process()
        self.labels: dict[int, str] = {self.me.pid: "driver"}
        self.procs: dict[int, psutil.Process] = {self.me.pid: self.me}

    def _label(self, proc: psutil.Process) -> str:
        coordinator = getattr(self.pipe, "coordinator", None)  # the local backend's roles
        if coordinator is not None:
            roles = {coordinator.ingest.process.pid: "ingest",
                     coordinator.slots._process.pid: "shm-manager"}
            roles.update({pid: f"worker-{i}" for i, pid in enumerate(coordinator.worker_pids())})
            if proc.pid in roles:
                return roles[proc.pid]
        cmdline = " ".join(proc.cmdline())
        name = proc.name()
        if "resource_tracker" in cmdline:
            label = "resource-tracker"
        elif name in ("gcs_server", "raylet"):
            label = name
        elif cmdline.startswith("ray::"):
            label = cmdline.split()[0].split(".")[0]
        else:
            label = cmdline[:60] or name
        taken = set(self.labels.values())
        return label if label not in taken else f"{label} [{proc.pid}]"

    def memory(self) -> dict[str, dict[str, int]]:
        """``{label: {"rss": bytes, "private": bytes}}``; private is RSS less shared pages
        (the object store and /dev/shm mappings a process touched count in its RSS)."""
        for proc in self.me.children(recursive=True):
            if proc.pid in self.exclude or proc.pid in self.procs:
                continue
            try:
                self.labels[proc.pid] = self._label(proc)
            except psutil.Error:
                continue
            self.procs[proc.pid] = proc
        out = {}
        for pid, proc in list(self.procs.items()):
            try:
                mem = proc.memory_info()
            except psutil.Error:  # gone (a restarted actor gets a new pid and label)
                del self.procs[pid]
                continue
            out[self.labels[pid]] = {"rss": mem.rss, "private": mem.rss - mem.shared}
        return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


class Client:
    """A Tango client subscribed to the counting image and the processed counter."""

    def __init__(self, address: str) -> None:
        import tango

        self.events: dict[str, int] = defaultdict(int)
        self.proxy = tango.DeviceProxy(address)
        self.ids = [self.proxy.subscribe_event(name, tango.EventType.CHANGE_EVENT, self)
                    for name in ("counting_img", "processed_frames")]

    def push_event(self, event: Any) -> None:
        name = event.attr_name.rsplit("/", 1)[-1].split("#", 1)[0]  # no "#dbase=no"
        self.events["error" if event.err else name] += 1

    def close(self) -> None:
        for eid in self.ids:
            self.proxy.unsubscribe_event(eid)


def run(minutes: float, backend: str, fraction: float, period: float,
        acquisition_seconds: float, probe_frames: int = 4000) -> dict[str, Any]:
    from actors import Pipeline

    # (one Tango server per process: the capacity is measured without the device)
    with Sender(moench_settings(probe_frames)) as probe, Pipeline(_config(probe.endpoint, backend,
                                                                  tango=False)) as pipe:
        for _ in range(2):  # the second one, warm
            pipe.start_acquisition()
            probe.go()
            probe_result = pipe.wait_acquisition(timeout=600)
            probe.wait_sent()
        capacity = probe_result.ledger.processed / max(1e-9, probe_result.duration)
    rate = fraction * capacity
    frames = max(1, int(rate * acquisition_seconds))
    settings = replace(moench_settings(frames), rate=rate)
    samples: list[dict[str, Any]] = []
    totals: dict[str, int] = defaultdict(int)
    stop = threading.Event()
    with Sender(settings) as sender, Pipeline(_config(sender.endpoint, backend)) as pipe:
        address = pipe.tango_address
        client = Client(address) if address else None
        procs = _Processes(pipe, {sender.process.pid or -1})
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.wait(period):
                st = pipe.status()
                row = {"t": round(time.monotonic() - t0, 1), "memory": procs.memory(),
                       "shm_used": shutil.disk_usage("/dev/shm").used,
                       "inflight_bytes": st.inflight_bytes, "acquisitions": totals["n"],
                       "received": totals["received"] + st.received * st.running,
                       "processed": totals["processed"] + st.processed * st.running,
                       "events": dict(client.events) if client else {}}
                samples.append(row)
                print(json.dumps(row), flush=True)

        sampler = threading.Thread(target=sample, name="soak sampler", daemon=True)
        sampler.start()
        try:
            while time.monotonic() - t0 < minutes * 60:
                pipe.start_acquisition()
                sender.go()
                result = pipe.wait_acquisition(timeout=acquisition_seconds * 10 + 60)
                sender.wait_sent()
                led = result.ledger
                totals["n"] += 1
                for key in ("received", "processed", "dropped_total", "lost"):
                    totals[key] += int(led[key])
                totals["idle_dropped"] = pipe.status().idle_dropped
        finally:
            stop.set()
            sampler.join(period + 5)
            if client is not None:
                client.close()
    return _summary(samples, totals, capacity, rate, minutes, backend, os.cpu_count())


def _summary(samples: list[dict[str, Any]], totals: dict[str, int], capacity: float,
             rate: float, minutes: float, backend: str, cpus: int | None) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= WARM_UP * minutes * 60]
    growth: dict[str, dict[str, float]] = {}
    for label in sorted({k for s in after for k in s["memory"]}):
        growth[label] = {}
        for kind in ("rss", "private"):
            points = [(s["t"], s["memory"][label][kind]) for s in after
                      if label in s["memory"]]
            growth[label].update({f"{kind}_start_mb": round(points[0][1] / 1e6, 1),
                                  f"{kind}_end_mb": round(points[-1][1] / 1e6, 1),
                                  f"{kind}_mb_per_hour": round(_slope(points) * 3600 / 1e6,
                                                               1)})
    shm = [(s["t"], s["shm_used"]) for s in after]
    exact = totals["received"] == totals["processed"] + totals["dropped_total"]
    return {"summary": True, "backend": backend, "minutes": minutes, "cpus": cpus,
            "capacity_fps": round(capacity, 1), "rate_fps": round(rate, 1),
            "acquisitions": totals["n"], "received": totals["received"],
            "processed": totals["processed"], "dropped": totals["dropped_total"],
            "lost": totals["lost"], "idle_dropped": totals["idle_dropped"],
            "ledger_exact": exact,
            "shm_mb_per_hour": round(_slope(shm) * 3600 / 1e6, 1),
            "tango_events": samples[-1]["events"] if samples else {},
            "memory_growth": growth}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="of the capacity measured first")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--acquisition-seconds", type=float, default=20.0,
                        help="length of each acquisition")
    parser.add_argument("--probe-frames", type=int, default=4000,
                        help="frames of the acquisitions that measure the capacity")
    args = parser.parse_args(argv)
    summary = run(args.minutes, args.backend, args.fraction, args.period,
                  args.acquisition_seconds, args.probe_frames)
    print(json.dumps(summary), flush=True)
    return 0 if summary["ledger_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
