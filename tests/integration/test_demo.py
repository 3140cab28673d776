"""`rayline demo` on both backends, in its own process as a user runs it: it exits cleanly,
its NeXus files equal the pipeline's results, and it leaves no process or /dev/shm behind."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from actors.output import read_outputs
from actors.reduce.base import Series

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.tango]

# the demo in a child process (Tango servers must not run inside the pytest process); its
# results are pickled for the comparison with the files
SCRIPT = """
import pickle, sys
from actors.app.demo import DemoSettings, run_demo
settings = DemoSettings(backend=sys.argv[1], pedestal_frames=200, pumpprobe_frames=300,
                        output=sys.argv[2], progress=False)
results = run_demo(settings, sys.stdout)
with open(sys.argv[3], "wb") as fp:
    pickle.dump(results, fp)
"""


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_demo_runs_writes_files_and_leaves_nothing_behind(backend: str, tmp_path: Path) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    pickled = tmp_path / "results.pkl"
    log = tmp_path / "demo.log"
    with log.open("w") as sink:  # a file, not a pipe: the child can never block on output
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, backend, str(tmp_path),
                                 str(pickled)], stdout=sink, stderr=subprocess.STDOUT)
        seen: set[int] = set()
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None:  # remember every process the demo starts
                assert time.monotonic() < deadline, "the demo did not finish in 300 s"
                with contextlib.suppress(psutil.Error):
                    seen |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "Tango device: tango://127.0.0.1:" in out
    dark, pump = pickle.loads(pickled.read_bytes())
    for result, name in ((dark, "demo_000000.h5"), (pump, "demo_000001.h5")):
        assert result.outcome == "finished" and result.file == str(tmp_path / name)
        led = result.ledger
        assert led["processed"] == led["received"] and led["lost"] == 0
        saved = read_outputs(result.file)
        for key, value in result.outputs.items():
            if isinstance(value, Series):
                np.testing.assert_array_equal(saved[key].values, value.values)  # type: ignore[union-attr]
            else:
                np.testing.assert_array_equal(np.asarray(saved[key]), np.asarray(value))
    assert pump.ledger["processed"] == 300 and dark.ledger["processed"] == 200
    assert pump.outputs["pumped_frames"] == 150
    assert float(np.asarray(pump.outputs["counting_img_pumped"]).sum()) > float(
        np.asarray(pump.outputs["counting_img"]).sum())  # the pump signal is seen
    alive = {p for p in seen if psutil.pid_exists(p)}
    deadline = time.monotonic() + 60
    while alive and time.monotonic() < deadline:  # Ray's processes exit asynchronously
        time.sleep(0.2)
        alive = {p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    assert not alive, alive
    assert set(os.listdir("/dev/shm")) - shm_before == set()
