"""A multi-module detector end to end: one stream per module (real PUB sockets), one ingest
per stream, the frames assembled by the workers; sums and per-frame totals equal numpy on
the detector's frames; a module that loses frames makes exactly those frames incomplete,
named in its own ledger."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from actors import Pipeline
from actors.config import parse_config
from actors.reduce.base import Series
from actors.sim.modules import ModuleSettings, ModuleSimulator
from actors.sim.simulator import SimulatorSettings

pytestmark = [pytest.mark.slow]

N = 60
SCENE = {"rows": 32, "cols": 64}  # 2 x 2 modules of 16 x 32


def config(endpoints: list[str], tmp_path: Path, backend: str = "local",
           **extra: object) -> dict[str, object]:
    return {"backend": backend, "workers": 2, "tango": {"enabled": False},
            "ray": {"worker_cpus": 0.5},
            "sources": [{"endpoint": ep, "protocol": "sls", "name": f"m{i}"}
                        for i, ep in enumerate(endpoints)],
            "reducers": [{"type": "sum"}, {"type": "total"},
                         # an ROI across all four modules (beyond any one module's frame)
                         {"type": "roi", "rois": [{"name": "centre", "row0": 8, "row1": 24,
                                                   "col0": 16, "col1": 48}]}],
            "batch": {"max_frames": 8}, "modules": {"timeout": 2.0},
            "output": {"directory": str(tmp_path)}, **extra}


@pytest.mark.parametrize("lose", [{}, {2: [3, 4, 17]}, {1: list(range(8, 16))},
                                  {3: list(range(16, N))}],
                         ids=["whole", "module 2 loses 3", "module 1 loses a whole range",
                              "module 3 falls silent"])  # (its ranges go on the timeout)
def test_four_module_streams_assemble_into_the_detector_s_frames(
        backend: str, tmp_path: Path, lose: dict[int, list[int]]) -> None:
    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=N, lossless=True,
                                                seed=4, scene=SCENE),
                              modules=(2, 2), lose=lose)
    with ModuleSimulator(settings) as sim, \
            Pipeline(parse_config(config(sim.endpoints, tmp_path, backend))) as pipe:
        pipe.start_acquisition()
        sender = threading.Thread(target=sim.run)
        sender.start()
        result = pipe.wait_acquisition(timeout=120)  # every module's end of series ends it
        sender.join(60)
    lost = {f for frames in lose.values() for f in frames}
    (module,) = lose or [None]
    kept = [i for i in range(N) if i not in lost]
    frames = np.stack([sim.scene.frame(i) for i in kept]).astype(np.int64)
    assert result.outcome == "finished", result.error
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.frame_numbers, kept)
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
    centre = result.outputs["roi_centre"]
    assert isinstance(centre, Series)
    np.testing.assert_array_equal(centre.values, frames[:, 8:24, 16:48].sum(axis=(1, 2)))
    led = result.ledger
    assert (led.received, led.processed, led.lost) == (N, N - len(lost), 0)
    assert led.dropped == ({"incomplete": len(lost)} if lost else {})
    assert sorted(led.sources) == ["m0", "m1", "m2", "m3"]
    for m in range(4):
        assert led.sources[f"m{m}"].received == N - (len(lost) if m == module else 0)
    assert result.file is not None
    from actors.output import read_ledger

    written = read_ledger(result.file)
    assert written["sources"][f"m{module or 0}"]["received"] == led.sources[
        f"m{module or 0}"].received
    assert result.outputs["sum"].shape == (32, 64)
    assert result.detector is not None and result.detector.module_grid == (2, 2)


@pytest.mark.parametrize("module", ["m3", "m0"], ids=["a module", "the first module"])
def test_a_killed_module_ingest_fails_the_acquisition_by_name_and_the_next_one_is_exact(
        backend: str, tmp_path: Path, module: str) -> None:
    """SIGKILL of one module's ingest (process, or Ray actor) mid-acquisition: the
    acquisition ends failed, with its ledger accounted; the ingest comes back and the next
    acquisition assembles every frame."""
    from tests.helpers import kill_source_ingest, wait_until

    k = int(module[1])
    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=400, rate=200.0,
                                                lossless=True, seed=4, scene=SCENE),
                              modules=(2, 2))
    with ModuleSimulator(settings) as sim, \
            Pipeline(parse_config(config(sim.endpoints, tmp_path, backend))) as pipe:
        pipe.start_acquisition()
        sender = threading.Thread(target=sim.run)
        sender.start()
        wait_until(lambda: pipe.status().processed >= 40, 60, pipe.status)
        back = kill_source_ingest(pipe, backend, k)
        failed = pipe.wait_acquisition(timeout=60)
        assert failed.outcome == "failed", failed.error
        if k:  # (the first module's ingest keeps the acquisition's checkpoint)
            assert f"module {module}" in str(failed.error), failed.error
        led = failed.ledger
        assert led.received == led.processed + led.dropped_total, led
        sender.join(60)
        back()
        wait_until(lambda: pipe.status().state == "idle", 60, pipe.status)
        sim.wait_for_subscribers([k])  # the new ingest has subscribed
        # the rest of the first series may still sit in the modules' receive queues (an sls
        # stream has no series marker to tell it from the next one): an acquisition that
        # ends on quiet takes it, as an operator's would
        pipe.start_acquisition()
        pipe.stop_acquisition(timeout=60)
        sim.settings = ModuleSettings(
            SimulatorSettings(detector="jungfrau", frames=N, lossless=True, seed=5,
                              scene=SCENE, wait_subscribers=0), modules=(2, 2))
        pipe.start_acquisition()
        sender = threading.Thread(target=sim.run)
        sender.start()
        result = pipe.wait_acquisition(timeout=120)
        sender.join(60)
    assert result.outcome == "finished", result.error
    assert (result.ledger.received, result.ledger.processed) == (N, N), result.ledger


@pytest.mark.tango
def test_the_device_shows_each_module_s_counters(tmp_path: Path) -> None:
    """`rayline run` with four module streams: the Tango device's source_* attributes give
    each module's counters (module 1 lost two frames) next to the totals."""
    import sys
    import time

    import tango
    import yaml

    from actors.app.service import READY_LINE
    from tests.helpers import service_process

    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=N, lossless=True,
                                                seed=4, scene=SCENE),
                              modules=(2, 2), lose={1: [5, 6]})
    with ModuleSimulator(settings) as sim:
        cfg = {**config(sim.endpoints, tmp_path), "tango": {"enabled": True,
                                                            "database": False}}
        path = tmp_path / "modules.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with service_process([sys.executable, "-m", "actors", "run", str(path)]) as (proc,
                                                                                  lines):
            ready = lines.wait_for(READY_LINE, 180)
            dev = tango.DeviceProxy(ready.rsplit("Tango ", 1)[1].strip())
            dev.set_timeout_millis(20_000)
            dev.Start()
            sender = threading.Thread(target=sim.run)
            sender.start()
            sender.join(60)
            deadline = time.monotonic() + 60
            while str(dev.state()) != "ON" or dev.read_attribute("acquisition").value != 1:
                assert time.monotonic() < deadline, dev.status()
                time.sleep(0.05)
            names = list(dev.read_attribute("source_names").value)
            received = list(dev.read_attribute("source_received").value)
            totals = [dev.read_attribute(a).value for a in ("received_frames",
                                                            "processed_frames",
                                                            "dropped_frames")]
    assert names == ["m0", "m1", "m2", "m3"]
    assert received == [N, N - 2, N, N]
    assert totals == [N, N - 2, 2]


def test_module_offsets_from_the_config_place_the_modules(tmp_path: Path) -> None:
    """Offsets in the config win over the headers' row/column: with modules 1 and 2 given
    each other's place, the detector's frames have those two blocks swapped."""
    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=N, lossless=True,
                                                seed=4, scene=SCENE), modules=(2, 2))
    offsets = [(0, 0), (16, 0), (0, 32), (16, 32)]  # (headers: m1 at (0, 32), m2 at (16, 0))
    with ModuleSimulator(settings) as sim:
        cfg = config(sim.endpoints, tmp_path)
        for source, offset in zip(cfg["sources"], offsets, strict=True):  # type: ignore[call-overload]
            source["offset"] = list(offset)
        with Pipeline(parse_config(cfg)) as pipe:
            pipe.start_acquisition()
            sender = threading.Thread(target=sim.run)
            sender.start()
            result = pipe.wait_acquisition(timeout=120)
            sender.join(60)
    frames = np.stack([sim.scene.frame(i) for i in range(N)]).astype(np.int64)
    swapped = frames.copy()
    swapped[:, 16:, :32], swapped[:, :16, 32:] = frames[:, :16, 32:], frames[:, 16:, :32]
    assert result.outcome == "finished", result.error
    np.testing.assert_array_equal(result.outputs["sum"], swapped.sum(axis=0))
