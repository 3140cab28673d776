"""The dispatch state machine (pure): worker choice, states, retries, give-ups, ends, aborts."""

from __future__ import annotations

from actors.core.events import Aborted, Begin, End
from actors.core.merger import BatchInfo
from actors.core.status import Ledger
from actors.dispatch.dispatcher import MAX_ATTEMPTS, Dispatcher, GiveUp, Job


def job(index: int, acquisition: int = 1, n: int = 4, states: bool = False) -> Job[str]:
    keys = {"moench": (index,)} if states else {}
    return Job(acquisition, BatchInfo(index, 4 * index, 4 * index + n - 1, n, keys),
               f"payload {acquisition}/{index}", needs_states=states)


def sends(d: Dispatcher[str]) -> list[tuple[int, int]]:
    return [(s.job.info.index, s.worker) for s in d.dispatch()]


def test_least_loaded_worker_round_robin_with_a_bound_per_worker() -> None:
    d: Dispatcher[str] = Dispatcher(workers=2, per_worker=2)
    for i in range(6):
        d.add(job(i))
    assert sends(d) == [(0, 0), (1, 1), (2, 0), (3, 1)]  # then both workers are full
    assert d.outstanding(1) == 6 and d.load(0) == 2
    finished = d.done((1, 1))
    assert finished is not None and finished.payload == "payload 1/1" and not finished.aborted
    assert sends(d) == [(4, 1)]
    unbounded: Dispatcher[str] = Dispatcher(workers=3)
    for i in range(7):
        unbounded.add(job(i))
    assert [w for _, w in sends(unbounded)] == [0, 1, 2, 0, 1, 2, 0]


def test_jobs_that_need_states_wait_for_them_in_batch_order() -> None:
    d: Dispatcher[str] = Dispatcher(workers=2)
    d.add(job(0, states=True))
    d.add(job(1, states=True))
    d.add(job(2))
    assert sends(d) == [(2, 0)]
    assert [j.info.index for j in d.needing_states()] == [0, 1]
    d.ready((1, 1), "states of 1")
    ((index, _),) = sends(d)
    assert index == 1 and d.inflight[(1, 1)].states == "states of 1"


def test_a_dead_worker_s_jobs_go_elsewhere_then_are_given_up() -> None:
    d: Dispatcher[str] = Dispatcher(workers=2)
    d.add(job(0))
    d.add(job(1))
    assert sends(d) == [(0, 0), (1, 1)]
    assert d.worker_lost(0) == []
    assert sends(d) == [(0, 1)]  # not to the worker that just died
    for attempt in range(2, MAX_ATTEMPTS):
        assert d.resend((1, 0), "actor died") == []
        assert d.dispatch()[0].job.attempts == attempt + 1
    (given_up,) = d.resend((1, 0), "actor died")
    assert isinstance(given_up, GiveUp) and given_up.reason == "processing_failed"
    assert "given up after 5 attempts" in given_up.error
    assert d.counts(1).dropped == {"processing_failed": 4}


def test_a_worker_that_does_not_restart_gets_nothing_until_it_is_up() -> None:
    d: Dispatcher[str] = Dispatcher(workers=2, per_worker=1)
    d.add(job(0))
    d.add(job(1))
    sends(d)
    d.worker_lost(1, restarting=False)
    assert sends(d) == []  # worker 0 is full, worker 1 is down
    d.done((1, 0))
    assert sends(d) == [(1, 0)]
    d.worker_up(1)
    d.add(job(2))
    assert sends(d) == [(2, 1)]


def test_reducer_failures_are_given_up_and_counted() -> None:
    d: Dispatcher[str] = Dispatcher(workers=1)
    d.add(job(0))
    sends(d)
    out = d.failed((1, 0), "ValueError: bad frame")
    assert isinstance(out, GiveUp) and out.error == "ValueError: bad frame"
    assert d.failed((1, 0), "again") is None  # unknown now


def test_the_end_waits_for_every_job_and_carries_the_drops() -> None:
    d: Dispatcher[str] = Dispatcher(workers=1)
    d.add(job(0))
    d.add(job(1))
    sends(d)
    d.end(1, 2, Ledger(1, received=8, dispatched=8, inflight_batches=2, pending=0))
    assert d.ended() == []
    d.done((1, 0))
    d.failed((1, 1), "boom")
    (ended,) = d.ended()
    assert isinstance(ended, End) and ended.batches == 2
    assert ended.ledger.dropped == {"processing_failed": 4}
    assert ended.ledger.inflight_batches == 0 and ended.ledger.received == 8
    assert d.ended() == [] and d.counts(1).dropped == {}


def test_abort_frees_waiting_jobs_now_and_jobs_in_flight_when_they_answer() -> None:
    d: Dispatcher[str] = Dispatcher(workers=1, per_worker=1)
    d.add(job(0))
    d.add(job(1))
    sends(d)
    released, ledger = d.abort(1, Ledger(1, received=8, dropped={"overflow": 2}))
    assert [j.info.index for j in released] == [1]
    assert ledger.dropped == {"overflow": 2, "aborted": 8}
    answered = d.done((1, 0))
    assert answered is not None and answered.aborted  # free it, merge nothing
    d.add(job(0, acquisition=2))
    assert sends(d) == [(0, 0)]
    assert d.ended() == [] and d.outstanding(1) == 0


def test_route_holds_ends_and_completes_aborts_for_the_results_stage() -> None:
    from actors.core.setup import ChainSetup
    from actors.wire.model import Geometry

    d: Dispatcher[str] = Dispatcher(workers=1)
    begin = Begin(ChainSetup(1, 0, ({"type": "sum"},), Geometry(2, 2, "uint16")))
    assert d.route(begin) == (begin, [])
    d.add(job(0))
    assert d.route(End(1, 1, Ledger(1, received=4))) == (None, [])  # held: a job is out
    event, released = d.route(Aborted(1, Ledger(1, received=4)))
    assert [j.info.index for j in released] == [0]
    assert isinstance(event, Aborted) and event.ledger.dropped == {"aborted": 4}
    assert d.ended() == [] and d.active() == set()
