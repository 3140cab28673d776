"""The rayline command line, run as a user would (subprocesses, real sockets)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire.model import Image, Protocol, SeriesEnd
from tests.conftest import SenderThread

RAYLINE = [sys.executable, "-m", "actors"]
COMMANDS = ["demo", "run", "pedestal", "status", "simulate", "receive", "record", "replay",
            "config", "bench"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(command: str | None) -> None:
    args = [*RAYLINE, "--help"] if command is None else [*RAYLINE, command, "--help"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    assert "usage: rayline" in out.stdout


async def test_simulate_subprocess_delivers_every_frame_before_exiting() -> None:
    args = [*RAYLINE, "simulate", "--protocol", "dectris-v2", "-n", "25", "--rows", "64",
            "--cols", "80", "--endpoint", "tcp://127.0.0.1:*", "--no-progress"]
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True) as proc:  # noqa: ASYNC220
        assert proc.stderr is not None
        banner = await asyncio.to_thread(proc.stderr.readline)  # bound: "... on tcp://..."
        endpoint = banner.rsplit(" on ", 1)[-1].strip()
        async with Receiver(ReceiverSettings(endpoint, "pull", Protocol.DECTRIS_V2)) as rx:
            try:
                frames = []
                while (msg := await rx.recv(timeout=60)) is not None:
                    if isinstance(msg, Image):
                        frames.append(msg.frame)
                    if isinstance(msg, SeriesEnd):
                        break
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err
            finally:
                proc.kill()
    assert frames == list(range(25))


def test_receive_subprocess_prints_the_ledger(
        sender_threads: Callable[..., SenderThread]) -> None:
    settings = SimulatorSettings(frames=30, lossless=True, scene={"rows": 32, "cols": 32})
    with Simulator(settings) as sim:
        args = [*RAYLINE, "receive", sim.endpoint, "--protocol", "sls", "--decode",
                "--idle-timeout", "60", "--no-progress"]
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as proc:
            try:
                sender = sender_threads(sim.run)
                out, err = proc.communicate(timeout=120)
                sender.join()
            finally:
                proc.kill()
    assert proc.returncode == 0, err
    ledger = json.loads(out)
    assert (ledger["received"], ledger["lost"], ledger["rejected_total"]) == (30, 0, 0)
    assert ledger["series_ended"] == 1


@pytest.fixture(scope="module")
def taken_endpoint() -> Iterator[str]:
    """An endpoint something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"


NO_TANGO = ["--set", "tango.enabled=false"]
#: (arguments, what the one error line says); "{taken}" is an endpoint already in use
ERRORS: list[tuple[list[str], str]] = [
    (["simulate", "-n", "1", "--endpoint", "{taken}"], "Address already in use"),
    (["simulate", "-n", "1", "--endpoint", "nonsense"], "nonsense"),
    (["receive", "nonsense"], "nonsense"),
    (["run", "--set", "source.endpoint=nonsense"], "source.endpoint: must be a ZMQ endpoint"),
    (["run", *NO_TANGO, "--set", "ray.address=127.0.0.1:1"], "no Ray cluster at 127.0.0.1:1"),
    (["run", "--set", "backend=local", "--set", "tango.database=true"], "TANGO_HOST"),
    (["run", *NO_TANGO, "--set", "workers=4", "--set", "ray.num_cpus=2"],
     "need 4 CPUs and the Ray cluster has 2"),
    (["replay", "/nonexistent/file.rlrec", "--endpoint", "tcp://127.0.0.1:*"],
     "no recording at /nonexistent/file.rlrec"),
    (["config", "check", "--set", "reducers=[{type: roi, rois: []}, {type: nothere}]"],
     "entry 0 (roi): rois: List should have at least 1 item after validation, not 0; "
     "entry 1: unknown reducer type 'nothere'"),
    (["config", "check", "--set", "source.reorder=moench04"], "source.reorder: 'moench04'"),
    (["config", "check", "--set", "output.directory=/proc/rayline"],
     "output.directory /proc/rayline: cannot write in /proc"),
    (["config", "check", "--set", "bogus"], "expected KEY=VALUE"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, says", ERRORS, ids=[" ".join(a[:2]) + f"-{i}"
                                                    for i, (a, _) in enumerate(ERRORS)])
def test_each_error_is_one_line(args: list[str], says: str, taken_endpoint: str) -> None:
    """Exit code 2 and one line on stderr naming the cause (INFO progress lines of a
    service aside), no traceback; --debug shows it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TANGO_HOST", "RAY_ADDRESS")}
    argv = [a.replace("{taken}", taken_endpoint) for a in args]
    out = subprocess.run([*RAYLINE, *argv], capture_output=True, text=True, timeout=120,
                         env=env)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and " INFO " not in ln]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"rayline {argv[0]}: error: ") and says in lines[0], lines[0]
    assert '"""' not in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_the_traceback() -> None:
    out = subprocess.run([*RAYLINE, "replay", "/nonexistent/file.rlrec", "--debug"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_options_after_the_command_and_the_version() -> None:
    out = subprocess.run([*RAYLINE, "config", "check", "--log-level", "ERROR", "--set",
                          "workers=8"], capture_output=True, text=True, timeout=60, check=True)
    config = json.loads(out.stdout)
    assert config["workers"] == 8 and config["max_inflight"] == 8  # derived, not refused
    version = subprocess.run([*RAYLINE, "--version"], capture_output=True, text=True,
                             timeout=60, check=True)
    assert version.stdout.startswith("rayline ")


def test_a_reader_that_goes_away_is_not_an_error() -> None:
    """``rayline config schema | head -1``: no BrokenPipe traceback."""
    proc = subprocess.Popen([*RAYLINE, "config", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader is gone before the rest is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("bench, args", [
    ("pipeline", ["--repeat", "1", "--frames-4m", "40", "--frames-moench", "400"]),
    ("local", ["--quick", "--repeat", "1"]),
    ("modules", ["--frames", "40", "--rows", "64", "--cols", "64", "--repeat", "1",
                 "--backend", "local"]),
    ("ttr", ["--quick", "--case", "moench", "--backend", "local", "--repeat", "1"]),
])
def test_bench_prints_one_json_line_per_case(bench: str, args: list[str]) -> None:
    """The throughput benchmarks run end to end (tiny runs: the figures mean nothing here)."""
    out = subprocess.run([*RAYLINE, "bench", bench, "--", *args], capture_output=True,
                         text=True, timeout=600, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == {"pipeline": 2, "local": 4, "modules": 3, "ttr": 1}[bench], out.stdout
    for row in rows:
        fps = row.get("fps", row.get("frames_per_s"))
        assert fps > 0 and row["ratio"] > 0, row
        assert row.get("lost", 0) == 0 and row.get("dropped", 0) == 0, row
    if bench == "ttr":  # CPU by role (a tiny run: the roles that used 10 ms or more)
        cpu = rows[0]["cpu_ms_per_frame"]
        assert "ingest" in cpu and set(cpu) <= {"ingest", "worker", "driver", "other"}, cpu


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.ray), "local"])
def test_soak_samples_every_process_and_checks_the_ledger(backend: str) -> None:
    """A few seconds of `rayline bench soak`: samples of every process's memory, a Tango
    client subscribed, and a summary whose ledger is exact."""
    out = subprocess.run([*RAYLINE, "bench", "soak", "--", "--backend", backend,
                          "--minutes", "0.2", "--period", "2", "--acquisition-seconds", "3",
                          "--probe-frames", "1000"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    samples, summary = rows[:-1], rows[-1]
    assert samples and all("driver" in s["memory"] for s in samples), out.stdout[-2000:]
    assert summary["summary"] and summary["ledger_exact"], summary
    assert summary["acquisitions"] >= 1 and summary["received"] > 0, summary
    assert summary["tango_events"].get("processed_frames", 0) > 0, summary
    assert "driver" in summary["memory_growth"], summary


def test_simulate_says_when_it_cannot_reach_the_rate() -> None:
    out = subprocess.run([*RAYLINE, "simulate", "--protocol", "sls", "-n", "60", "--rate",
                          "1000000", "--endpoint", "tcp://127.0.0.1:*", "--no-progress",
                          "--wait-subscribers", "0"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "below the 1000000 asked" in out.stderr, out.stderr


def test_bench_report_redraws_its_plot_from_a_saved_report(tmp_path: Path) -> None:
    """`rayline bench report --plot` draws the four panels from a report.json (here one a
    quick run wrote) without running anything."""
    data = Path(__file__).parent.parent / "data" / "bench-report-quick.json"
    out = subprocess.run([*RAYLINE, "bench", "report", "--", "--plot", str(data), "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=120,
                         check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    png = Path(summary["plot"])
    assert png.parent == tmp_path and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "report.json").exists()  # (nothing ran, nothing rewritten)


@pytest.mark.slow
def test_pedestal_takes_a_dark_run_and_writes_the_file(tmp_path: Path) -> None:
    """`rayline pedestal CONFIG --gain 1`: one forced-G1 dark run of a simulated Jungfrau
    into the pedestal file, what was recorded printed as JSON."""
    import threading

    import numpy as np
    import yaml

    from actors.reduce.jungfrau.pedestal_file import read_pedestal
    from tests.helpers import wait_until

    scene = {"rows": 32, "cols": 64, "mode": "dark", "forced_gain": 1}
    settings = SimulatorSettings(detector="jungfrau", frames=20, lossless=True, seed=2,
                                 scene=scene)
    with Simulator(settings) as sim:
        np.save(tmp_path / "gain.npy", sim.scene.calibration.gain)  # type: ignore[union-attr]
        pedestal = tmp_path / "pedestal.h5"
        config = {"backend": "local", "workers": 1,
                  "source": {"endpoint": sim.endpoint, "protocol": "sls"},
                  "reducers": [{"type": "jungfrau", "gain_file": str(tmp_path / "gain.npy"),
                                "pedestal_file": str(pedestal)},
                               {"type": "jungfrau_pedestal"}],
                  "output": {"enabled": False}}
        (tmp_path / "jf.yaml").write_text(yaml.safe_dump(config))
        with subprocess.Popen([*RAYLINE, "pedestal", str(tmp_path / "jf.yaml"), "--gain", "1",
                               "--timeout", "120"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None and proc.stdout is not None
            log: list[str] = []
            reader = threading.Thread(target=lambda: log.extend(iter(proc.stderr.readline, "")),
                                      daemon=True)
            reader.start()
            wait_until(lambda: any("dark run of G1: acquisition 1 started" in line
                                   for line in log) or proc.poll() is not None, 120,
                       lambda: "".join(log[-20:]))
            sim.run()
            out = proc.stdout.read()
            assert proc.wait(timeout=120) == 0, "".join(log[-40:])
    record = json.loads(out.strip().splitlines()[-1])
    assert (record["gain"], record["frames"], record["file"]) == (1, 20, str(pedestal))
    assert record["missing"] == ["g0", "g2"]
    ped, info = read_pedestal(str(pedestal), (32, 64), allow_missing=True)
    true = sim.scene.calibration.pedestal[1]  # type: ignore[union-attr]
    assert np.abs(ped[1] - true).max() < 2.0 and info["g1"]["frames"] == 20
