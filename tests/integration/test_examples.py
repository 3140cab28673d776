"""Every configuration in ``deploy/examples/`` runs as shipped: ``rayline run EXAMPLE --auto``
against a simulator of its detector, on both backends, with ``--set`` overriding only what
names this machine (the stream's endpoint, the Ray cluster address, the Tango database and
port, the output directory). Each acquisition ends with every frame processed and a file."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.app.service import READY_LINE
from actors.config import load_config
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread
from tests.helpers import service_process

pytestmark = [pytest.mark.slow, pytest.mark.tango, pytest.mark.timeout(600, method="thread")]

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"

#: the detector each example is for, and a scene of its size
SIMULATORS: dict[str, dict[str, Any]] = {
    "eiger-v2.yaml": {"protocol": Protocol.DECTRIS_V2, "detector": "eiger",
                      "scene": {"rows": 2167, "cols": 2070}},  # a 4M: the ROI and centre fit
    "jungfrau.yaml": {"protocol": Protocol.SLS, "detector": "jungfrau"},
    "moench-pumpprobe.yaml": {"protocol": Protocol.SLS, "detector": "moench"},
}
FRAMES = 40


def test_every_example_has_a_simulator() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(SIMULATORS)


@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.ray),
                                     "local"])
@pytest.mark.parametrize("example", sorted(SIMULATORS))
def test_example_runs_against_its_simulator(
        example: str, backend: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
        sender_threads: Callable[..., SenderThread]) -> None:
    path = EXAMPLES / example
    load_config(path)  # valid as shipped
    sim_settings = SimulatorSettings(frames=FRAMES, lossless=True, seed=5, pool=4,
                                     **SIMULATORS[example])
    with Simulator(sim_settings) as sim:
        overrides = {"source.endpoint": sim.endpoint, "backend": backend,
                     "ray.address": "null", "tango.database": "false", "tango.port": "0",
                     "output.directory": str(tmp_path / "out")}
        # what the rayline console script runs
        command = [sys.executable, "-c", "import sys; from actors.cli import main; "
                   "sys.exit(main())", "run", str(path), "--auto"]
        for key, value in overrides.items():
            command += ["--set", f"{key}={value}"]
        with service_process(command) as (proc, lines):
            lines.wait_for(READY_LINE, 300)
            lines.wait_for("acquisition 1 started", 60)
            sender = sender_threads(sim.run)
            sender.join(300)
            finished = lines.wait_for("acquisition 1 ", 120)
            while ": received" not in finished:  # its outcome line, whatever it says
                finished = lines.wait_for("acquisition 1 ", 120)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, "".join(lines.seen)
    text = "".join(lines.seen)
    assert f"finished: received {FRAMES}, processed {FRAMES}, dropped 0, lost 0" in finished, \
        text
    assert "Traceback" not in text, text
    assert capfd.readouterr().out == ""  # logs go to stderr; no Tango banner on stdout
    assert list((tmp_path / "out").glob("*.h5")), text
