"""Ledger: received + rejected + lost account for every frame."""

from actors.stream.ledger import Ledger
from actors.wire.errors import Reason


def test_gaps_are_lost_and_late_frames_are_recovered() -> None:
    led = Ledger()
    for f in [0, 1, 4, 5, 3, 9]:
        assert led.image(0, f)
    assert led.received == 6
    assert led.lost == 4  # 2, 6, 7, 8 (3 arrived late)
    assert not led.image(0, 5)
    assert led.rejected[Reason.DUPLICATE] == 1
    assert led.received + led.lost == 10


def test_head_loss_counts_from_frame_zero() -> None:
    led = Ledger()
    led.image(0, 3)
    assert led.lost == 3


def test_declared_length_counts_tail_loss_at_series_end() -> None:
    led = Ledger()
    led.start_series(7, expected=10)
    for f in range(6):
        led.image(7, f)
    led.end_series()
    assert (led.received, led.lost, led.series_started, led.series_ended) == (6, 4, 1, 1)


def test_new_series_restarts_frame_numbers() -> None:
    led = Ledger()
    for f in range(3):
        led.image(1, f)
    led.end_series()
    for f in range(3):
        led.image(1, f)
    assert (led.received, led.lost, led.rejected_total) == (6, 0, 0)
    led.image(2, 0)  # an image of another series starts it implicitly
    assert led.series_started == 3


def test_reject_logs_once_per_reason(caplog) -> None:  # type: ignore[no-untyped-def]
    led = Ledger(source="det")
    with caplog.at_level("WARNING"):
        for _ in range(5):
            led.reject(Reason.BAD_JSON, "x")
        led.reject(Reason.OVERSIZE, "y")
    assert led.rejected == {"bad_json": 5, "oversize": 1}
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 2
    snap = led.snapshot()
    assert snap["rejected_total"] == 6


def test_a_series_that_may_restart_restarts_only_when_its_numbers_go_back() -> None:
    """At an acquisition's start: numbers going back begin a new series (an sls acquisition
    stopped by hand never sent its end), numbers going on continue it (a frame that came just
    before the start is no reason for a gap)."""
    led = Ledger("test")
    for f in range(5):
        assert led.image(1, f)
    led.may_restart()
    assert led.image(1, 0) and led.image(1, 1)  # restarted: not duplicates
    assert (led.received, led.lost, led.rejected_total) == (7, 0, 0)
    led.may_restart()
    assert led.image(1, 2) and led.image(1, 3)  # went on: no gap, no new series
    assert (led.received, led.lost, led.series_started) == (9, 0, 2)
    assert not led.image(1, 3)  # an ordinary duplicate still is one
