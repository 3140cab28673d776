"""Every result says when each step happened (``result.timings``, wall clock), on both
backends: the ingest's start, first and last frame and close, the first and last merge and
the result; they come in that order. ``status().timings`` shows the steps so far while the
acquisition runs, then the result's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actors import Pipeline
from actors.config import parse_config
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread

pytestmark = [pytest.mark.slow]

STEPS = ["started", "first_frame", "last_frame", "closed", "last_merged", "result"]


def test_a_result_says_when_each_step_happened(
        backend: str, sender_threads: Callable[..., SenderThread]) -> None:
    from tests.helpers import wait_until

    settings = SimulatorSettings(protocol=Protocol.DECTRIS_V2, detector="eiger", frames=40,
                                 scene={"rows": 32, "cols": 32}, rate=40.0)
    with Simulator(settings) as sim:
        cfg = parse_config({"backend": backend, "workers": 2, "tango": {"enabled": False},
                            "ray": {"worker_cpus": 0.5}, "output": {"enabled": False},
                            "source": {"endpoint": sim.endpoint, "protocol": "dectris-v2"},
                            "reducers": [{"type": "sum"}], "batch": {"max_frames": 8}})
        with Pipeline(cfg) as pipe:
            pipe.start_acquisition()
            sender_threads(sim.run)
            wait_until(lambda: pipe.status().processed >= 8, 60, pipe.status)
            live = pipe.status()
            result = pipe.wait_acquisition(timeout=120)
            after = pipe.status()
    assert live.running and {"started", "first_frame", "first_merged"} <= set(live.timings)
    assert "closed" not in live.timings and "result" not in live.timings, live.timings
    assert after.timings == result.timings
    t = result.timings
    assert result.ledger.processed == 40
    assert [k for k in STEPS if k not in t] == [], t
    times = [t[k] for k in STEPS]
    assert times == sorted(times), t
    assert t["first_merged"] <= t["last_merged"]
    assert result.tail is not None and 0 <= result.tail == t["result"] - t["last_frame"]
