"""`rayline demo` on both backends: exits cleanly, writes NeXus files equal to the results."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from actors.app.demo import DemoSettings, run_demo
from actors.output import read_outputs
from actors.reduce.base import Series

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.tango]


def _children() -> set[int]:
    """Child processes, without multiprocessing's resource tracker: a per-process singleton
    of the standard library that lives exactly as long as this (test) process."""
    return {p.pid for p in psutil.Process().children(recursive=True)
            if "multiprocessing.resource_tracker" not in " ".join(_cmdline(p))}


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_demo_runs_writes_files_and_leaves_nothing_behind(backend: str, tmp_path: Path) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    children_before = _children()
    out = io.StringIO()
    settings = DemoSettings(backend=backend, pedestal_frames=200, pumpprobe_frames=300,
                            output=str(tmp_path), progress=False)
    dark, pump = run_demo(settings, out)
    text = out.getvalue()
    assert "Tango device: tango://127.0.0.1:" in text
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
    deadline = time.monotonic() + 60
    while (left := _children() - children_before) and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray's processes exit asynchronously after shutdown
    assert not left, [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]
    assert set(os.listdir("/dev/shm")) - shm_before == set()
