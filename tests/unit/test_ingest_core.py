"""The ingest core (pure): acquisitions, batches, room, parameters and ledger, driven by
decoded messages and a fake clock; no sockets, no processes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actors.config import parse_config
from actors.core.events import Aborted, Action, Announce, Begin, Checkpoint, End, HandOn, Skip
from actors.core.status import Ledger
from actors.ingest.core import IngestCore
from actors.reduce.base import ReducerConfigError
from actors.wire import dectris_v2
from actors.wire.model import Geometry, Image, Protocol, SeriesEnd, SeriesStart

GEOM = Geometry(6, 5, "uint16")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**config: Any) -> tuple[IngestCore, Clock, dict[str, Any]]:
    cfg = parse_config({"source": {"protocol": "dectris-v2"},
                        "reducers": [{"type": "hits", "threshold": 90.0, "min_pixels": 2}],
                        "batch": {"max_frames": 4, "max_delay": 0.5}, "max_inflight": 2,
                        "workers": 1, **config})
    counts: dict[str, Any] = {"received": 0, "lost": 0, "rejected": {}}
    clock = Clock()
    return IngestCore(cfg, receiver=lambda: dict(counts), clock=clock), clock, counts


def image(i: int, series: int = 1) -> Image:
    frame = np.full(GEOM.shape, i, dtype=np.uint16)
    msg = dectris_v2.decode(dectris_v2.encode_image(series, i, frame, compression=None))
    assert isinstance(msg, Image)
    return msg


def feed(core: IngestCore, frames: range) -> list[Action]:
    return [a for i in frames for a in core.message(image(i))]


def handons(actions: list[Action]) -> list[HandOn]:
    return [a for a in actions if isinstance(a, HandOn)]


def events(actions: list[Action]) -> list[Action]:
    """The actions without the checkpoints (tested on their own)."""
    return [a for a in actions if not isinstance(a, Checkpoint)]


def test_an_acquisition_from_first_frame_to_end_of_series() -> None:
    core, _, counts = make()
    assert core.start() == 1
    actions = feed(core, range(10))
    assert isinstance(actions[0], Begin) and actions[0].setup.geometry == GEOM
    assert [h.info.index for h in handons(actions)] == [0, 1]
    assert [h.batch.frame_numbers.tolist() for h in handons(actions)] == [[0, 1, 2, 3],
                                                                           [4, 5, 6, 7]]
    assert core.status().state == "running"
    end = core.message(SeriesEnd(Protocol.DECTRIS_V2, 1))
    # the last two frames close a batch, but two batches are out: it is held for room
    assert end == [] and core.blocked and core.status().state == "draining"
    after = events(core.returned(1, 0))
    assert [type(a) for a in after] == [HandOn, End]
    last = after[-1]
    assert isinstance(last, End) and last.batches == 3
    assert (last.ledger.received, last.ledger.dispatched, last.ledger.dispatched_batches) == \
        (10, 10, 3)
    assert not core.blocked
    counts["received"] = 10
    core.finished(1)
    status = core.status()
    assert status.state == "idle" and status.acquisition == 1  # the last one, still shown
    assert status.ledger is not None and status.ledger.received == 10
    assert core.start() == 2


def test_frames_while_idle_or_draining_are_counted_not_kept() -> None:
    core, clock, _ = make()
    assert feed(core, range(3)) == []
    core.start()
    feed(core, range(2))
    core.stop(1)
    with pytest.raises(RuntimeError, match="still draining"):
        core.start()
    clock.now += core.config.stop_quiet  # nothing more came: it closes
    assert any(isinstance(a, End) for a in core.stop_due())
    assert feed(core, range(2, 4)) == []
    assert core.idle_dropped == 5


def test_a_stop_takes_the_frames_still_on_their_way_until_the_end_of_series() -> None:
    """The reading may lag the sender (a loaded machine): a stop does not cut the frames
    already sent; the end of series closes the acquisition, whenever it is read."""
    core, clock, _ = make()
    core.start()
    feed(core, range(3))
    assert core.stop(1) == []
    assert core.status().state == "draining"
    clock.now += 0.5 * core.config.stop_quiet
    assert core.stop_due() == [] and core.wake_in() is not None
    feed(core, range(3, 10))  # read after the stop: still this acquisition's
    actions = events(core.message(SeriesEnd(Protocol.DECTRIS_V2, 1)))
    assert any(isinstance(a, End) for a in actions) or core.blocked
    ledger = core.status().ledger
    assert ledger is not None and ledger.received == 10 and ledger.dropped == {}
    assert core.idle_dropped == 0


def test_a_stop_closes_after_a_quiet_period_or_the_grace_period() -> None:
    core, clock, _ = make()
    core.start()
    feed(core, range(2))
    core.stop(1)
    clock.now += core.config.stop_quiet - 0.01
    feed(core, range(2, 3))  # a frame restarts the quiet period
    clock.now += core.config.stop_quiet - 0.01
    assert core.stop_due() == []
    clock.now += 0.02
    assert any(isinstance(a, End) for a in core.stop_due())  # quiet: no end of series
    # a sender that goes on: the grace period bounds the wait
    core.finished(1)
    core2, clock2, _ = make(stop_quiet=10.0, stop_grace=2.0)
    core2.start()
    core2.stop(1)
    for i in range(19):
        clock2.now += 0.1
        feed(core2, range(i, i + 1))
        assert core2.stop_due() == []
    clock2.now += 0.15
    core2.stop_due()  # closed: its batches go as room comes back, then its end
    assert core2.acq is not None and core2.acq.ending and core2.acq.received == 19


def test_overflow_drop_skips_whole_batches_and_counts_them() -> None:
    core, _, _ = make(overflow="drop")
    core.start()
    actions = feed(core, range(16))
    assert [a.info.index for a in actions if isinstance(a, HandOn)] == [0, 1]
    skips = [a for a in actions if isinstance(a, Skip)]
    assert [s.info.index for s in skips] == [2, 3]
    assert not core.blocked
    ledger = core.status().ledger
    assert ledger is not None and ledger.dropped == {"overflow": 8}


def test_store_budget_shrinks_batches_and_bounds_bytes_in_flight() -> None:
    core, _, _ = make(max_inflight=4)
    core.store_budget = 4 * 2 * GEOM.nbytes  # two frames per batch fit four batches
    core.start()
    actions = feed(core, range(8))
    assert [h.batch.n for h in handons(actions)] == [2, 2, 2, 2]
    assert core.inflight_bytes == core.store_budget == core.peak_inflight_bytes
    assert feed(core, range(8, 10)) == [] and core.blocked


def test_max_delay_closes_a_partial_batch() -> None:
    core, clock, _ = make()
    core.start()
    feed(core, range(2))
    assert core.flush_due() == [] and core.flush_in() == pytest.approx(0.5)
    clock.now += 0.5
    assert core.flush_in() == 0.0
    (batch,) = handons(core.flush_due())
    assert batch.batch.frame_numbers.tolist() == [0, 1] and core.flush_in() is None


def test_time_blocked_for_room_does_not_close_the_open_batch_early() -> None:
    core, clock, _ = make(reducers=[{"type": "moench", "pedestal_epoch": 5}], max_inflight=1,
                          batch={"max_frames": 8, "max_delay": 0.5})
    core.start()
    actions = feed(core, range(11))  # [0-7] out; a cut at 10 holds [8, 9]; frame 10 open
    assert [h.batch.frame_numbers.tolist() for h in handons(actions)] == [list(range(8))]
    assert core.blocked and core.flush_in() == 0.5
    clock.now += 5.0  # blocked for long: the sender waits, frame 10 waits in the open batch
    (released,) = events(core.returned(1, 0))
    assert isinstance(released, HandOn) and not core.blocked
    assert core.flush_in() == 0.5 and core.flush_due() == []  # its wait starts now
    clock.now += 0.5
    assert core.flush_due() == [] and core.blocked  # closed after its own 0.5 s: held
    assert [h.batch.frame_numbers.tolist() for h in handons(core.returned(1, 1))] == [[10]]


def test_runtime_parameters_apply_from_a_batch_boundary_with_a_version() -> None:
    core, _, _ = make()
    assert core.status().parameters["threshold"] == 90.0
    assert events(core.set({"threshold": 50.0})[1]) == []  # idle: the next acquisition
    assert core.status().setup_version == 1
    core.start()
    first = feed(core, range(6))
    begin = first[0]
    assert isinstance(begin, Begin) and begin.setup.specs[0]["threshold"] == 50.0
    index, actions = core.set({"threshold": 70.0, "min_pixels": 3})
    actions = events(actions)
    assert index == 2  # frames 4, 5 closed batch 1 at the boundary
    assert [h.info.index for h in handons(actions)] == [1]
    announce = actions[-1]
    assert isinstance(announce, Announce)
    assert (announce.setup.version, announce.setup.first_batch) == (2, 2)
    core.returned(1, 0)
    assert handons(feed(core, range(6, 10)))[0].setup_version == 2
    status = core.status()
    assert (status.setup_version, status.parameters["threshold"],
            status.parameters["min_pixels"]) == (2, 70.0, 3)
    with pytest.raises(ReducerConfigError, match="unknown runtime parameter 'nope'"):
        core.set({"nope": 1})
    with pytest.raises(ReducerConfigError, match="min_pixels"):
        core.set({"threshold": 1.0, "min_pixels": -1})  # all or nothing
    assert core.status().setup_version == 2 and core.status().parameters["threshold"] == 70.0


def test_abort_drops_the_open_and_held_batches() -> None:
    core, _, counts = make()
    core.start()
    feed(core, range(14))  # batches 0, 1 out; 2 held; frames 12, 13 open
    assert core.blocked
    counts["lost"] = 3
    (aborted,) = events(core.abort(1))
    assert isinstance(aborted, Aborted)
    assert aborted.ledger.dropped == {"aborted": 6} and aborted.ledger.lost == 3
    assert not core.blocked and core.status().state == "idle"
    assert core.returned(1, 0) == []  # its batches still come back: room only
    assert core.inflight_bytes == 4 * GEOM.nbytes


def test_series_mask_and_ledger_deltas_since_the_start() -> None:
    core, _, counts = make()
    mask = np.zeros(GEOM.shape, dtype=np.uint32)
    mask[0, 0] = 1
    core.message(SeriesStart(Protocol.DECTRIS_V2, 1, geometry=GEOM,
                             arrays={"pixel_mask": mask}))
    counts.update(lost=5, rejected={"decode": 2})
    core.start()
    (begin, *_) = feed(core, range(1))
    assert isinstance(begin, Begin) and begin.setup.mask is not None
    assert bool(begin.setup.mask[0, 0]) and int(begin.setup.mask.sum()) == 1
    counts.update(lost=7, rejected={"decode": 3, "oversize": 1})
    ledger = core.status().ledger
    assert isinstance(ledger, Ledger)
    assert (ledger.lost, ledger.rejected, ledger.rejected_total) == \
        (2, {"decode": 1, "oversize": 1}, 2)
    assert ledger["rejected_total"] == 2 and dict(ledger)["received"] == 1


def test_a_chain_that_cannot_run_on_the_frames_fails_the_acquisition_at_once() -> None:
    """An ROI outside the frame: the first frame is dropped as chain_error and the
    acquisition ends, failed, with the reason (nothing ends 'finished' with frames unseen)."""
    roi = {"type": "roi", "rois": [{"name": "big", "row0": 0, "row1": 100, "col0": 0,
                                    "col1": 100}]}
    core, _, _ = make(reducers=[roi])
    core.start()
    (end,) = feed(core, range(1))
    assert isinstance(end, End) and end.batches == 0
    assert end.error is not None and "outside" in end.error and "6x5" in end.error
    assert end.ledger.received == 1 and end.ledger.dropped == {"chain_error": 1}
    assert feed(core, range(1, 4)) == [] and core.idle_dropped == 3
    core.finished(1)
    assert core.status().state == "idle"


def test_frames_of_another_series_or_late_frames_are_dropped_with_their_reason() -> None:
    core, _, _ = make()
    core.start()
    feed(core, range(3))
    core.message(image(5, series=2))  # a new series without an end of the first
    core.message(image(1))  # a late frame of the first series, after frame 2 was batched
    ledger = core.status().ledger
    assert ledger is not None and ledger.dropped == {"series_changed": 1, "late": 1}
    assert ledger.received == 5


def test_checkpoints_let_a_restarted_ingest_resume_and_fail_what_was_running() -> None:
    core, _, counts = make()
    core.set({"threshold": 55.0})
    core.start()
    actions = feed(core, range(5))
    checkpoints = [a for a in actions if isinstance(a, Checkpoint)]
    assert len(checkpoints) == 1  # after the batch handed on
    cp = checkpoints[0]
    assert (cp.last_acquisition, cp.running, cp.version) == (1, 1, 1)
    # as of the batch handed on: frame 4 waits in the open batch
    assert cp.ledger is not None and cp.ledger.dispatched == 4 and cp.ledger.received == 4
    successor, _, _ = make()  # the ingest died; a new one starts from the checkpoint
    out = successor.restore(cp, ended=False, why="the ingest stage restarted")
    failed = [a for a in out if isinstance(a, Aborted)]
    assert failed and failed[0].acquisition == 1 and failed[0].error == \
        "the ingest stage restarted"
    assert failed[0].ledger.received == 4  # as of the last checkpoint
    assert successor.start() == 2  # numbering goes on
    assert successor.status().parameters["threshold"] == 55.0  # parameters kept
    later = successor.checkpoint()
    assert later.sequence > cp.sequence and later.running == 2
    assert [type(a) for a in make()[0].restore(cp, ended=True, why="-")] == [Checkpoint]


def test_a_failure_downstream_fails_the_running_acquisition() -> None:
    core, _, _ = make()
    core.start()
    feed(core, range(14))  # two batches out, one held, two frames open
    (failed,) = events(core.fail("the results stage died"))
    assert isinstance(failed, Aborted) and failed.error == "the results stage died"
    assert failed.ledger.dropped == {"stage_failed": 6}
    assert core.status().state == "idle" and core.start() == 2


def test_a_module_ingest_batches_on_frame_number_ranges_and_never_on_delay() -> None:
    """One module of a multi-module detector: batch k is range k (4 frames here); a range
    with no frame is skipped, a range waits for its later frames however long it takes."""
    cfg = parse_config({"source": {"protocol": "dectris-v2"}, "reducers": [{"type": "sum"}],
                        "batch": {"max_frames": 4, "max_delay": 0.5}, "max_inflight": 8,
                        "workers": 1})
    clock = Clock()
    core = IngestCore(cfg, receiver=lambda: {"received": 0, "lost": 0, "rejected": {}},
                      clock=clock, module=True)
    core.start()
    out = feed(core, range(3))
    clock.now += 10.0  # far beyond max_delay
    assert core.flush_due() == [] and core.flush_in() is None
    out += feed(core, range(3, 4)) + feed(core, range(9, 11))  # 4..8 never came
    assert [(h.batch.index, list(h.batch.frame_numbers)) for h in handons(out)] == \
        [(0, [0, 1, 2, 3])]
    end = core.message(dectris_v2.decode(dectris_v2.encode_end(1)))  # type: ignore[arg-type]
    (last,) = handons(end)
    assert (last.batch.index, list(last.batch.frame_numbers)) == (2, [9, 10])
    (done,) = [a for a in end if isinstance(a, End)]
    assert done.batches == 3
