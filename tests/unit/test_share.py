"""Several PULL clients of one DECTRIS stream (sources of role ``share``), piece by piece: a
client's ingest holds images until the series start reaches it (read by another client),
ends on the series end or drains after another client read it; the event stage begins on
the first client, merges the clients' parts by frame number and counts what no client
received as lost."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actors.config import ConfigError, parse_config
from actors.core.events import Action, Begin, End, HandOn, PeerEnd, SeriesSeen
from actors.core.modules import ModuleLayout, assemble
from actors.core.status import Ledger
from actors.ingest.core import WAIT_FOR_START, IngestCore
from actors.ingest.events import EventHandOn, ModuleEvents, ModulePart
from actors.stream.ledger import Ledger as ReceiverLedger
from actors.wire import dectris_v2
from actors.wire.model import Geometry, Image, Protocol, SeriesEnd, SeriesStart

GEOM = Geometry(6, 5, "uint16")
MASK = np.zeros(GEOM.shape, dtype=np.uint32)
MASK[1, 2] = 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sources(**extra: Any) -> dict[str, Any]:
    return {"sources": [{"endpoint": f"tcp://127.0.0.1:{4000 + i}", "protocol": "dectris-v2",
                         "role": "share", "name": f"rx{i}"} for i in range(2)],
            "reducers": [{"type": "sum"}], "batch": {"max_frames": 4}, "max_inflight": 8,
            "workers": 1, "overflow": "block", **extra}


def client(clock: Clock | None = None) -> IngestCore:
    cfg = parse_config(sources())
    return IngestCore(cfg, receiver=lambda: {"received": 0, "lost": 0, "rejected": {}},
                      clock=clock or Clock(), share=True)


def image(i: int, series: int = 1) -> Image:
    frame = np.full(GEOM.shape, i, dtype=np.uint16)
    msg = dectris_v2.decode(dectris_v2.encode_image(series, i, frame, compression=None))
    assert isinstance(msg, Image)
    return msg


START = SeriesStart(Protocol.DECTRIS_V2, 1, geometry=GEOM, number_of_images=12,
                    arrays={"pixel_mask": MASK})
END = SeriesEnd(Protocol.DECTRIS_V2, 1)


def feed(core: IngestCore, frames: list[int], series: int = 1) -> list[Action]:
    return [a for i in frames for a in core.message(image(i, series))]


def batches(actions: list[Action]) -> list[tuple[int, list[int]]]:
    return [(a.batch.index, [int(f) for f in a.batch.frame_numbers]) for a in actions
            if isinstance(a, HandOn)]


def test_config_roles() -> None:
    cfg = parse_config(sources())
    assert cfg.shared and cfg.modular and cfg.modules.drain == 0.2
    bad = sources()
    bad["sources"][1]["role"] = "module"
    with pytest.raises(ConfigError, match="same role"):
        parse_config(bad)
    sls = sources()
    for s in sls["sources"]:
        s["protocol"] = "sls"
    with pytest.raises(ConfigError, match="role share is for several PULL clients"):
        parse_config(sls)
    dectris = sources()
    for s in dectris["sources"]:
        s["role"] = "module"
    with pytest.raises(ConfigError, match="role module is for the modules"):
        parse_config(dectris)


def test_the_client_that_reads_the_start_tells_the_others() -> None:
    core = client()
    core.start()
    out = core.message(START)
    assert out == [SeriesSeen(START)]
    (begin, *_) = feed(core, [0])
    assert isinstance(begin, Begin) and begin.setup.mask is not None
    assert begin.detector is not None and begin.detector.number_of_images == 12


def test_images_wait_for_the_start_another_client_read_then_go_on_in_order() -> None:
    core = client()
    core.start()
    assert feed(core, [1, 3, 5]) == []  # no start yet: they wait (counted received)
    ledger = core.status().ledger
    assert ledger is not None and (ledger.received, ledger.pending) == (3, 3)
    out = core.peer_start(START)  # (not told on: another client read it)
    assert not any(isinstance(a, SeriesSeen) for a in out)
    (begin,) = [a for a in out if isinstance(a, Begin)]
    assert begin.setup.mask is not None and bool(begin.setup.mask[1, 2])
    assert batches(out) == [(0, [1, 3])]  # range 0 closed by frame 5 (range 1)
    out = feed(core, [7]) + core.message(END)
    assert batches(out) == [(1, [5, 7])]
    assert isinstance(out[0], PeerEnd) and out[0].acquisition == 1
    (end,) = [a for a in out if isinstance(a, End)]
    assert end.ledger.received == 4 and end.batches == 2


def test_an_end_that_comes_before_the_start_waits_for_it_then_for_the_timeout() -> None:
    clock = Clock()
    core = client(clock)
    core.start()
    feed(core, [0, 2])
    assert core.message(END) == []  # the frames still wait for their start
    out = core.peer_start(START)  # (it confirms the end is this series': the others drain)
    assert batches(out) == [(0, [0, 2])] and isinstance(out[-1], End) and PeerEnd(1) in out
    assert isinstance(out[0], Begin) and out[0].setup.mask is not None
    # the start never comes: after modules.timeout the frames go without it
    core2 = client(clock)
    core2.start()
    feed(core2, [1])
    assert core2.message(END) == []
    clock.now += 0.5
    assert core2.stop_due() == []
    clock.now += 0.6  # modules.timeout (1 s) after the end
    out = core2.stop_due()
    assert batches(out) == [(0, [1])] and isinstance(out[-1], End) and out[0] == PeerEnd(1)
    assert isinstance(out[1], Begin) and out[1].setup.mask is None


def test_frames_and_end_left_over_from_an_earlier_series_are_idle() -> None:
    """What a client had not yet read of an earlier series (its acquisition failed when
    another client's ingest died) comes first in the next acquisition: those images are
    idle, that end changes nothing, and the new series is received whole."""
    core = client()
    core.start()
    feed(core, [7, 8], series=0)
    assert core.message(SeriesEnd(Protocol.DECTRIS_V2, 0)) == []  # (no start yet: it waits)
    feed(core, [0, 1])
    out = core.peer_start(START)
    assert batches(out) == [] and not any(isinstance(a, (End, PeerEnd)) for a in out)
    assert core.idle_dropped == 2
    feed(core, [2])
    assert feed(core, [9], series=0) == []  # (one more, after the start: not this series)
    out = feed(core, [3]) + core.message(END)  # (and it holds nothing up)
    assert batches(out) == [(0, [0, 1, 2, 3])] and isinstance(out[-1], End)
    assert PeerEnd(1) in out
    end = out[-1]
    assert isinstance(end, End)
    assert (end.ledger.received, end.ledger.dispatched) == (5, 4)
    assert dict(end.ledger.dropped) == {"series_changed": 1}
    assert core.stop_in() is None


def test_a_client_drains_after_another_read_the_end() -> None:
    clock = Clock()
    core = client(clock)
    core.start()
    core.peer_start(START)
    feed(core, [1, 3])
    assert core.drain(1) == []
    clock.now += 0.1
    out = feed(core, [5])  # still on its way when the other client read the end
    assert batches(out) == [(0, [1, 3])]
    clock.now += 0.15
    assert core.stop_due() == []  # 0.15 s since frame 5: not yet drained
    clock.now += 0.1
    out = core.stop_due()
    assert batches(out) == [(1, [5])] and isinstance(out[-1], End)


def test_waiting_images_are_bounded() -> None:
    core = client()
    core.start()
    out = feed(core, list(range(WAIT_FOR_START + 1)))
    (begin,) = [a for a in out if isinstance(a, Begin)]  # the oldest went without it
    assert begin.setup.mask is None
    ledger = core.status().ledger
    assert ledger is not None and ledger.received == WAIT_FOR_START + 1


def test_a_client_s_receiver_ledger_counts_no_gaps() -> None:
    ledger = ReceiverLedger(share=True)
    ledger.start_series(1, expected=10)
    for frame in (1, 4, 7):
        assert ledger.image(1, frame)
    assert not ledger.image(1, 4)  # (a duplicate is still one)
    ledger.end_series()
    assert (ledger.received, ledger.lost) == (3, 0)


def test_assemble_merges_whole_frames_by_number() -> None:
    layout = ModuleLayout.whole(2, 3, ["a", "b"])
    a = (np.array([0, 2, 5]), np.stack([np.full((2, 3), i) for i in (0, 2, 5)]))
    b = (np.array([1, 3]), np.stack([np.full((2, 3), i) for i in (1, 3)]))
    out = assemble(layout, {"a": a, "b": b})
    assert list(out.frame_numbers) == [0, 1, 2, 3, 5] and not out.incomplete
    assert [int(f[0, 0]) for f in out.frames] == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="whole frame"):
        ModuleLayout(2, 3, (ModuleLayout.whole(2, 3, ["a"]).parts[0],
                            ModuleLayout(1, 3, ModuleLayout.whole(1, 3, ["b"]).parts).parts[0]),
                     shared=True)


def _begin(core: IngestCore, frames: list[int]) -> tuple[Begin, list[HandOn]]:
    out = feed(core, frames)
    (begin,) = [a for a in out if isinstance(a, Begin)]
    return begin, [a for a in out if isinstance(a, HandOn)]


def _begun_events() -> tuple[ModuleEvents[str], IngestCore]:
    """The event stage of two clients, begun by client rx0 (which read the start and
    frame 0), and rx0's ingest."""
    events: ModuleEvents[str] = ModuleEvents(("rx0", "rx1"), timeout=1.0, share=True)
    c0 = client()
    c0.start()
    c0.peer_start(START)
    b0, _ = _begin(c0, [0])
    events.begin("rx0", b0)
    return events, c0


def test_the_event_stage_begins_on_the_first_client_and_merges_their_ranges() -> None:
    clock = Clock()
    events: ModuleEvents[str] = ModuleEvents(("rx0", "rx1"), timeout=1.0, share=True)
    c0, c1 = client(clock), client(clock)
    for c in (c0, c1):
        c.start()
        c.peer_start(START)
    b0, h0 = _begin(c0, [0, 2, 4])
    (begin,) = events.begin("rx0", b0)  # the first client's Begin is the detector's
    assert isinstance(begin, Begin) and begin.setup.mask is not None
    b1, h1 = _begin(c1, [1, 3, 5])
    assert events.begin("rx1", b1) == []
    out: list[Any] = []

    def to_events(src: str, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, HandOn):
                out.extend(events.hand_on(ModulePart(
                    src, a.batch.index, a.batch.frame_numbers, f"{src}:{a.batch.index}",
                    a.setup_version, 1), 1))
            elif isinstance(a, End):
                out.extend(events.end(src, a))

    to_events("rx0", h0)  # type: ignore[arg-type]
    to_events("rx1", h1)  # type: ignore[arg-type]
    (event,) = [e for e in out if isinstance(e, EventHandOn)]  # range 0: frames 0..3
    assert event.layout.shared and event.parts == {"rx0": "rx0:0", "rx1": "rx1:0"}
    assert (event.info.first_frame, event.info.last_frame, event.info.n) == (0, 3, 4)
    to_events("rx0", c0.message(END))  # rx0 read the end: rx1 drains
    to_events("rx1", c1.drain(1))
    clock.now += 0.3  # (modules.drain: 0.2 s without a frame)
    to_events("rx1", c1.stop_due())
    ranges = [e for e in out if isinstance(e, EventHandOn)]
    assert [(e.info.first_frame, e.info.last_frame) for e in ranges] == [(0, 3), (4, 5)]
    (end,) = [e for e in out if isinstance(e, End)]
    assert (end.ledger.received, end.ledger.lost) == (6, 12 - 6)  # 12 declared


def test_the_detector_ledger_counts_what_no_client_received_up_to_the_declared() -> None:
    events, c0 = _begun_events()
    events.hand_on(ModulePart("rx0", 0, np.array([0, 1, 2]), "p", 0, 1), 1)
    events.end("rx0", End(1, 1, Ledger(1, received=3)))
    (end,) = [e for e in events.end("rx1", End(1, 0, Ledger(1))) if isinstance(e, End)]
    assert (end.ledger.received, end.ledger.lost) == (3, 12 - 3)
    assert end.ledger.sources["rx0"].received == 3


def test_the_live_status_counts_the_detector_s_frames() -> None:
    from actors.core.status import IngestStatus
    from actors.ingest.events import live_status

    status = IngestStatus(state="running", acquisition=3, ledger=Ledger(3, received=40),
                          idle_dropped=1)
    others = {"rx1": IngestStatus(state="running", acquisition=3,
                                  ledger=Ledger(3, received=38), idle_dropped=2),
              "rx2": IngestStatus(state="idle", idle_dropped=4)}
    shared = live_status(status, others, "rx0", share=True)
    assert shared.ledger is not None and shared.ledger.received == 78
    assert sorted(shared.sources) == ["rx0", "rx1"]
    assert shared.idle_dropped == 7  # (every source's)
    modules = live_status(status, others, "rx0", share=False)
    assert modules.ledger is not None and modules.ledger.received == 40
    idle = live_status(IngestStatus(state="idle", acquisition=3,
                                    ledger=Ledger(3, received=78)), others, "rx0", share=True)
    assert idle.ledger is not None and idle.ledger.received == 78  # (the final ledger)


def test_a_failure_counts_every_frame_the_event_stage_had_as_received() -> None:
    events, c0 = _begun_events()
    events.hand_on(ModulePart("rx0", 0, np.array([0, 2]), "a", 0, 1), 1)
    events.hand_on(ModulePart("rx1", 0, np.array([1, 3]), "b", 0, 1), 1)  # range 0 out
    events.hand_on(ModulePart("rx1", 1, np.array([5, 7]), "c", 0, 1), 1)  # waits
    failed = events.failed_ledger(1, Ledger(1, received=3))  # rx0's own share
    assert failed.received == 4 + 2


def test_a_failed_ledger_never_says_fewer_received_than_processed() -> None:
    from actors.results.core import _unaccounted

    led = _unaccounted(Ledger(1, received=38, dropped={"late": 1}), processed=40)
    assert (led.received, led.dropped) == (41, {"late": 1})
    led = _unaccounted(Ledger(1, received=50), processed=40)
    assert (led.received, led.dropped) == (50, {"stage_failed": 10})


def test_the_detector_s_ingest_times_span_its_sources() -> None:
    events, c0 = _begun_events()
    events.end("rx0", End(1, 0, Ledger(1), timing={"started": 5.0, "first_frame": 6.0,
                                                    "last_frame": 9.0, "closed": 9.5}))
    (end,) = [e for e in events.end("rx1", End(1, 0, Ledger(1), timing={
        "started": 4.0, "first_frame": 7.0, "last_frame": 8.0, "closed": 10.0}))
        if isinstance(e, End)]
    assert end.timing == {"started": 4.0, "first_frame": 6.0, "last_frame": 9.0,
                          "closed": 10.0}
    (own,) = [a for a in c0.message(END) if isinstance(a, End)]
    assert own.timing["started"] <= own.timing["first_frame"] <= own.timing["closed"]
