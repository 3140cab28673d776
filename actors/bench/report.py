"""All the benchmarks in one run, written as JSON and drawn as one PNG.

``rayline bench report [--out DIR] [--quick]`` runs, in this order, each with its ceiling
measured in the same run:

* ``ttr`` — time to result (sender's go → result) for 300 × 4M, 1000 × 1M and 5000 ×
  400×400 frames on both backends, first and warm acquisitions, raw receive, tail, and CPU
  milliseconds per frame by role (:mod:`actors.bench.ttr`);
* ``steady`` — steady-state frames/s against raw receive: the Ray backend
  (:mod:`actors.bench.pipeline`) and the local backend (:mod:`actors.bench.local`), 4M
  ``sum`` + ``total`` and the full MOENCH chain;
* ``reducers`` — reducer kernels per core against a numpy pass (:mod:`actors.bench.reducers`).

It writes ``DIR/report.json`` (every case as the benchmarks print it, plus the machine) and
``DIR/report.png`` (four panels: time to result, steady-state ratio to raw receive, CPU per
frame by role, reducer frames/s per core). ``--plot FILE`` redraws the PNG from a JSON
written before, without running anything. ``--quick`` is a smoke run (small series; the
figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the MOENCH03 detector's full rate (frames/s), drawn on the reducers panel
MOENCH_RATE = 3300.0


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import numpy as np

    from actors.version import __version__

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "numpy": np.__version__, "rayline": __version__,
                            "platform": platform.platform()}
    for package in ("ray", "pyzmq", "numba"):
        with contextlib.suppress(metadata.PackageNotFoundError):  # (all are dependencies)
            info[package] = metadata.version(package)
    return info


def collect(quick: bool, repeat: int) -> dict[str, Any]:
    """Run every benchmark; the report as a JSON-able dict."""
    from actors.bench import local, pipeline, reducers, ttr

    started = time.time()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "quick": quick, "machine": machine()}
    logger.info("time to result")
    report["ttr"] = ttr.run(list(ttr.CASES), ["ray", "local"], repeat, quick)
    logger.info("steady state: ray")
    ray_rows = pipeline.run(frames_4m=60 if quick else 600,
                            frames_moench=600 if quick else 6000,
                            repeat=1 if quick else repeat)
    logger.info("steady state: local")
    local_rows = local.run(quick=quick, repeat=1 if quick else repeat)
    report["steady"] = {"ray": ray_rows, "local": local_rows}
    logger.info("reducers")
    report["reducers"] = reducers.run(quick=quick, repeat=repeat)
    report["seconds"] = round(time.time() - started, 1)
    return report


def steady_ratios(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Steady-state ratio to raw receive, by case ("eiger4m", "moench") and backend."""
    out: dict[str, dict[str, float]] = {"eiger4m": {}, "moench": {}}
    for row in report["steady"]["ray"]:
        case = "eiger4m" if row["case"].startswith("eiger4m") else "moench"
        out[case]["ray"] = row["ratio"]
    for row in report["steady"]["local"]:
        if row["case"].startswith("local "):
            out[row["case"].split(" ", 1)[1]]["local"] = row["ratio"]
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    """The four panels into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = ("ray", "local")
    colours = {"ray": "#1f77b4", "local": "#ff7f0e", "raw": "#7f7f7f"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    title = (f"rayline {report['machine'].get('rayline', '')} — "
             f"{report['machine'].get('cpus')} CPUs, {report['date'][:10]}"
             + (" (quick: figures mean nothing)" if report.get("quick") else ""))
    fig.suptitle(title)

    # (1) time to result
    ax = axes[0][0]
    rows = [r for r in report["ttr"] if "backend" in r]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    width = 0.27
    for k, backend in enumerate(backends):
        got = {r["case"]: r for r in rows if r["backend"] == backend}
        xs = [i + (k - 0.5) * width for i in range(len(cases))]
        warm = [got[c]["ttr_s"] if c in got else 0.0 for c in cases]
        first = [got[c]["ttr_first_s"] if c in got else 0.0 for c in cases]
        ax.bar(xs, warm, width, color=colours[backend], label=f"{backend} (warm)")
        ax.scatter(xs, first, marker="v", color=colours[backend], zorder=3,
                   label=f"{backend} (first acquisition)")
    raw = {c: min(r["raw_s"] for r in rows if r["case"] == c) for c in cases}
    ax.scatter([i + 1.5 * width for i in range(len(cases))], [raw[c] for c in cases],
               marker="_", s=300, color=colours["raw"], label="raw receive", zorder=3)
    ax.set_xticks(range(len(cases)),
                  [f"{c}\n{next(r['frames'] for r in rows if r['case'] == c)} × "
                   f"{next(r['frame'] for r in rows if r['case'] == c).split()[0]}"
                   for c in cases])
    ax.set_ylabel("seconds, sender's go → result")
    ax.set_title("time to result")
    ax.legend(fontsize=7)

    # (2) steady-state ratio to raw receive
    ax = axes[0][1]
    ratios = steady_ratios(report)
    names = list(ratios)
    for k, backend in enumerate(backends):
        xs = [i + (k - 0.5) * 0.35 for i in range(len(names))]
        ax.bar(xs, [ratios[n].get(backend, 0.0) for n in names], 0.35,
               color=colours[backend], label=backend)
    ax.axhline(1.0, color=colours["raw"], linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), ["4M sum + total", "MOENCH chain"])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("frames/s ÷ raw receive, same run")
    ax.set_title("steady state")
    ax.legend(fontsize=8)

    # (3) CPU per frame by role (time-to-result runs)
    ax = axes[1][0]
    roles = ("ingest", "worker", "results", "driver", "ray-system")
    labels: list[str] = []
    stacks: dict[str, list[float]] = {role: [] for role in roles}
    for r in rows:
        labels.append(f"{r['case']}\n{r['backend']}")
        per_frame = r.get("cpu_ms_per_frame", {})
        for role in roles:
            stacks[role].append(per_frame.get(role, 0.0))
    bottom = [0.0] * len(labels)
    for role in roles:
        ax.bar(range(len(labels)), stacks[role], 0.6, bottom=bottom, label=role)
        bottom = [b + v for b, v in zip(bottom, stacks[role], strict=True)]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("CPU ms per frame")
    ax.set_title("where the CPU goes (ttr runs)")
    ax.legend(fontsize=7)

    # (4) reducers per core
    ax = axes[1][1]
    reds = [r for r in report["reducers"] if r.get("backend") in ("numba", "auto", None)
            or "moench" not in r["case"]]
    reds = [r for r in reds if not ("moench" in r["case"] and r.get("backend") == "numpy")]
    ax.barh(range(len(reds)), [r["frames_per_s"] for r in reds], color=colours["ray"],
            label="reducer")
    ax.scatter([r["ceiling_frames_per_s"] for r in reds], range(len(reds)), marker="|",
               s=200, color=colours["raw"], label="numpy pass (ceiling)", zorder=3)
    ax.axvline(MOENCH_RATE, color="red", linestyle=":", linewidth=1,
               label=f"MOENCH03 rate ({MOENCH_RATE:.0f}/s)")
    ax.set_yticks(range(len(reds)), [f"{r['case']} ({r['frame'].split()[0]})" for r in reds],
                  fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("frames/s on one core")
    ax.set_title("reducers")
    ax.legend(fontsize=7)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--out", default="bench", help="directory for report.json and "
                        "report.png")
    parser.add_argument("--quick", action="store_true",
                        help="small series (a smoke run: the figures mean nothing)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case")
    parser.add_argument("--plot", metavar="FILE",
                        help="only redraw the PNG from this report.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        report = json.loads(Path(args.plot).read_text())
    else:
        report = collect(args.quick, args.repeat)
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out / "report.png")
    summary = {"report": str(out / "report.json"), "plot": str(out / "report.png"),
               "seconds": report.get("seconds")}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
