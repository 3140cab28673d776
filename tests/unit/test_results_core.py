"""The results stage: the pure core (merging, lifecycle, file operations queued in order)
and the thread-safe stage both backends host (waits, ordered file work on one thread)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.core.acquisition import AcquisitionResult
from actors.core.merger import BatchInfo
from actors.core.setup import FRAMES_KEY, ChainSetup
from actors.core.status import DispatchCounts, IngestStatus, Ledger, pipeline_status
from actors.reduce.base import Batch, OutputSpec
from actors.results.core import AppendFrames, Discard, Finish, Prepare, ResultsCore
from actors.results.stage import ResultsStage
from actors.wire.model import Geometry

GEOM = Geometry(4, 3, "uint16")
SPECS = ({"type": "sum"},)


def setup(acquisition: int = 1) -> ChainSetup:
    return ChainSetup(acquisition, 0, SPECS, GEOM)


def batch(index: int, n: int = 2) -> tuple[BatchInfo, dict[str, Any], np.ndarray]:
    frames = np.full((n, *GEOM.shape), index + 1, dtype=np.uint16)
    numbers = np.arange(index * n, index * n + n, dtype=np.int64)
    partial = setup().build().process(Batch(index, frames, numbers))
    return BatchInfo(index, int(numbers[0]), int(numbers[-1]), n, {}), partial, frames


def test_out_of_order_partials_merge_in_batch_order_and_finish_after_the_file() -> None:
    core = ResultsCore({"source": "test"})
    core.begin(setup())
    assert core.take_io() == [Prepare(1)]
    parts = [batch(i) for i in range(3)]
    for i in (2, 0):
        info, partial, _ = parts[i]
        core.merge(1, info, partial)
    snap = core.snapshot()
    assert snap.running and snap.processed == 2  # batch 2 waits for batch 1
    core.end(1, 3, Ledger(1, received=6, dispatched=6))
    assert core.result(1) is None
    info, partial, _ = parts[1]
    assert core.merge(1, info, partial) == 6
    (finish,) = core.take_io()
    assert isinstance(finish, Finish) and finish.settings["config"] == {"source": "test"}
    assert core.result(1) is None and not core.snapshot().running  # final, file pending
    assert core.status().last == 1
    core.io_done(finish, Path("/nowhere/run_000001.h5"))
    result = core.result(1)
    assert result is not None and result.outcome == "finished"
    np.testing.assert_array_equal(result.outputs["sum"], np.full(GEOM.shape, 2 * (1 + 2 + 3)))
    assert (result.ledger.received, result.ledger.processed,
            result.ledger.processed_batches) == (6, 6, 3)


def test_frame_blocks_are_written_in_batch_order() -> None:
    core = ResultsCore()
    core.begin(setup())
    core.take_io()
    for i in (1, 0, 2):
        info, partial, frames = batch(i)
        partial[FRAMES_KEY] = (frames, np.arange(2))
        core.merge(1, info, partial)
    core.end(1, 3, Ledger(1))
    ops = core.take_io()
    blocks = [int(op.frames[0, 0, 0]) for op in ops if isinstance(op, AppendFrames)]
    assert blocks == [1, 2, 3] and isinstance(ops[-1], Finish)


def test_skipped_and_given_up_batches_merge_as_empty_and_are_not_counted() -> None:
    core = ResultsCore()
    core.begin(setup())
    info0, partial0, _ = batch(0)
    info1, _, _ = batch(1)
    info2, _, _ = batch(2)
    core.merge(1, info0, partial0)
    core.skip(1, info1)
    core.give_up(1, info2)
    core.end(1, 3, Ledger(1, received=6, dropped={"overflow": 2, "processing_failed": 2}))
    core.io_done(core.take_io()[-1])
    result = core.result(1)
    assert result is not None and result.ledger.processed == 2
    assert result.ledger.dropped_total == 4


def test_aborts_ends_and_replacements_always_leave_a_result() -> None:
    core = ResultsCore()
    core.abort(1, Ledger(1))  # aborted before its first frame
    core.end(2, 0, Ledger(2))  # ended before its first frame
    first, second = core.result(1), core.result(2)
    assert first is not None and first.outcome == "aborted"
    assert second is not None and second.outcome == "finished" and second.outputs == {}
    core.begin(setup(3))
    core.begin(setup(4))  # 3 never ended: it is failed, its file discarded
    replaced = core.result(3)
    assert replaced is not None and replaced.outcome == "failed"
    assert "replaced by acquisition 4" in str(replaced.error)
    assert Discard(3) in core.take_io()
    info, partial, _ = batch(0)
    core.merge(4, info, partial)
    core.abort(4, Ledger(4, received=2, dropped={"aborted": 0}))
    aborted = core.result(4)
    assert aborted is not None and aborted.outcome == "aborted" and aborted.outputs == {}
    assert core.merge(4, *batch(1)[:2]) == -1  # late partials are dropped
    assert core.status().last_outcome == "aborted"


def test_an_abort_counts_a_batch_merged_while_the_abort_was_on_its_way_once() -> None:
    """The ingest counts its batches in flight as ``aborted``; a partial that reached the
    results stage first was merged: it is processed, not also aborted."""
    core = ResultsCore()
    core.begin(setup())
    for i in range(2):
        core.merge(1, *batch(i)[:2])
    # received 7: batches 0 and 1 in flight (counted aborted), 3 in the open batch
    core.abort(1, Ledger(1, received=7, dispatched=4, dropped={"aborted": 7}))
    aborted = core.result(1)
    assert aborted is not None and aborted.outcome == "aborted"
    led = aborted.ledger
    assert (led.received, led.processed, led.dropped) == (7, 4, {"aborted": 3})


def test_pipeline_status_keeps_the_last_ledger_until_the_next_acquisition() -> None:
    core = ResultsCore()
    core.begin(setup())
    core.merge(1, *batch(0)[:2])
    live = IngestStatus("running", 1, Ledger(1, received=5, dispatched=2, pending=3))
    status = pipeline_status(live, core.status(), DispatchCounts({"processing_failed": 1}, 1))
    assert (status.received, status.processed, status.dropped, status.pending) == (5, 2, 1, 2)
    assert status.running and status["processed"] == 2
    core.end(1, 1, Ledger(1, received=5, dropped={"overflow": 3}))
    core.io_done(core.take_io()[-1])
    idle = IngestStatus("idle", 1, Ledger(1, received=5))
    status = pipeline_status(idle, core.status())
    assert (status.state, status.acquisition, status.processed, status.dropped,
            status.outcome) == ("idle", 1, 2, 3, "finished")
    assert status.ledger is not None and status.ledger.as_dict()["dropped_total"] == 3


class RecordingSink:
    """An AcquisitionSink that records the calls (and may be slow)."""

    enabled = True

    def __init__(self, delay: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.delay = delay

    def prepare(self, acquisition: int) -> object:
        self.calls.append(("prepare", acquisition))
        return None

    def append_frames(self, frames: Any, frame_numbers: Any) -> bool:
        if self.delay is not None:
            assert self.delay.wait(10)
        self.calls.append(("frames", int(np.asarray(frames)[0, 0, 0])))
        return True

    def finish(self, result: AcquisitionResult, specs: list[OutputSpec],
               settings: Mapping[str, Any]) -> Path | None:
        self.calls.append(("finish", result.acquisition))
        result.file = f"/data/run_{result.acquisition:06d}.h5"
        return Path(result.file)

    def close(self) -> None:
        self.calls.append(("close", None))

    def state(self) -> dict[str, Any]:
        return {}

    def set(self, name: str, value: Any) -> dict[str, Any]:
        return {}


def test_stage_merges_without_waiting_for_the_disk_and_wait_sees_the_file() -> None:
    gate = threading.Event()
    sink = RecordingSink(delay=gate)
    stage = ResultsStage(sink)
    try:
        stage.begin(setup())
        for i in (2, 0, 1):
            info, partial, frames = batch(i)
            partial[FRAMES_KEY] = (frames, np.arange(2))
            stage.merge(1, info, partial)  # returns although the disk is stuck
        stage.end(1, 3, Ledger(1, received=6))
        assert stage.wait(1, 0.05) is None  # the file is not written yet
        gate.set()
        result = stage.wait(1, 10)
        assert result is not None and result.file == "/data/run_000001.h5"
        assert sink.calls == [("prepare", 1), ("frames", 1), ("frames", 2), ("frames", 3),
                              ("finish", 1)]
    finally:
        gate.set()
        stage.close()


def test_stage_states_wait_until_published_or_aborted() -> None:
    stage = ResultsStage(RecordingSink())
    moench = {"type": "moench", "pedestal_epoch": 2, "pedestal_lag": 0,
              "pedestal_frames": 4}
    try:
        stage.begin(ChainSetup(1, 0, (moench,), GEOM))
        chain = ChainSetup(1, 0, (moench,), GEOM).build()
        info1 = BatchInfo(1, 2, 3, 2, chain.state_needed(2, 3))
        assert stage.states(1, info1, 0.05) is None  # epoch 0 is not merged yet
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(stage.states(1, info1, 10)))
        waiter.start()
        info0 = BatchInfo(0, 0, 1, 2, chain.state_needed(0, 1))
        states0 = stage.states(1, info0, 1)
        assert states0 is not None
        frames = np.zeros((2, *GEOM.shape), dtype=np.uint16)
        stage.merge(1, info0, chain.process(Batch(0, frames, np.arange(2)), states0))
        waiter.join(10)
        assert got and got[0] is not None and set(got[0]["moench"]) == set(info1.keys["moench"])
        stage.abort(1, Ledger(1))
        assert stage.states(1, BatchInfo(2, 4, 5, 2, {"moench": (1,)}), 10) is None
    finally:
        stage.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_stage_with_a_disabled_sink_writes_nothing(enabled: bool) -> None:
    sink = RecordingSink()
    sink.enabled = enabled
    stage = ResultsStage(sink)
    try:
        stage.begin(setup())
        stage.merge(1, *batch(0)[:2])
        stage.end(1, 1, Ledger(1))
        result = stage.wait(1, 10)
        assert result is not None and (result.file is not None) == enabled
        assert bool(sink.calls) == enabled
    finally:
        stage.close()
