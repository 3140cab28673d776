"""The soak's summary: growth per hour fitted after the warm-up, and the ledger check."""

from __future__ import annotations

from typing import Any

from actors.bench.soak import _summary


def _sample(t: float, private_mb: float, shared_mb: float) -> dict[str, Any]:
    mb = 1_000_000
    return {"t": t, "shm_used": 0, "events": {},
            "memory": {"raylet": {"rss": int((private_mb + shared_mb) * mb),
                                  "private": int(private_mb * mb)}}}


def test_growth_is_fitted_after_the_warm_up_on_private_and_total_memory() -> None:
    # 10 minutes: a jump during the warm-up, then private memory flat while the shared
    # pages touched (counted in RSS) grow 1 MB per minute
    samples = [_sample(60.0 * m, 100.0 if m >= 2 else 50.0, 10.0 + m) for m in range(11)]
    totals = {"n": 3, "received": 30, "processed": 28, "dropped_total": 2, "lost": 0,
              "idle_dropped": 0}
    out = _summary(samples, totals, 100.0, 50.0, 10.0, "ray", 2)
    growth = out["memory_growth"]["raylet"]
    assert growth["private_mb_per_hour"] == 0.0
    assert growth["rss_mb_per_hour"] == 60.0
    assert growth["private_start_mb"] == 100.0
    assert out["ledger_exact"] is True


def test_a_frame_missing_from_the_ledger_is_reported() -> None:
    totals = {"n": 1, "received": 30, "processed": 28, "dropped_total": 1, "lost": 0,
              "idle_dropped": 0}
    out = _summary([_sample(0.0, 1.0, 1.0)], totals, 1.0, 1.0, 1.0, "local", 2)
    assert out["ledger_exact"] is False
