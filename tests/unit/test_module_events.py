"""The event stage of a multi-module detector: the modules' ingest actions become one
stream — one Begin for the full frame, one hand-on per range with every module's part, one
End with the detector's ledger and each module's own."""

from __future__ import annotations

import numpy as np
import pytest

from actors.core.events import Aborted, Begin, End
from actors.core.setup import ChainSetup
from actors.core.status import Ledger
from actors.ingest.events import EventHandOn, ModuleEvents, ModulePart
from actors.wire import sls
from actors.wire.detector import describe
from actors.wire.model import Geometry, Image, Protocol

SOURCES = ("m0", "m1")
PART = Geometry(3, 4, "uint16")
SPECS = ({"type": "sum"},)


def begin(source: str, acquisition: int = 1, row: int | None = None) -> Begin:
    k = SOURCES.index(source)
    image = sls.decode(sls.encode_image(0, np.zeros(PART.shape, np.uint16), module=(k, 0),
                                        modules=(2, 1), det_type="jungfrau"))
    assert isinstance(image, Image)
    detector = describe(Protocol.SLS, image, None, PART)
    if row is not None:
        detector = type(detector)(**{**detector.__dict__,
                                     "header": {**detector.header, "row": row}})
    return Begin(ChainSetup(acquisition, 0, SPECS, PART), detector)


def part(source: str, index: int, frames: list[int]) -> ModulePart[str]:
    return ModulePart(source, index, np.array(frames, dtype=np.int64),
                      f"{source}/{index}", 0)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_two_modules_make_one_detector() -> None:
    clock = Clock()
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=1.0, clock=clock)
    assert ev.begin("m0", begin("m0")) == []
    assert ev.hand_on(part("m0", 0, [0, 1, 2, 3]), 1) == []  # held: no layout yet
    (b,) = ev.begin("m1", begin("m1"))
    assert isinstance(b, Begin) and b.setup.geometry == Geometry(6, 4, "uint16")
    assert b.detector is not None and b.detector.module_grid == (2, 1)
    (e0,) = ev.hand_on(part("m1", 0, [0, 1, 3]), 1)  # m1 lost frame 2
    assert isinstance(e0, EventHandOn)
    assert e0.parts == {"m0": "m0/0", "m1": "m1/0"} and e0.missing == ()
    assert (e0.info.index, e0.info.first_frame, e0.info.last_frame, e0.info.n) == (0, 0, 3, 4)
    assert e0.layout.part("m1").row0 == 3
    assert ev.hand_on(part("m1", 2, [8, 9]), 1) == []  # m1's range 1: all lost
    (e1,) = ev.hand_on(part("m0", 1, [4, 5]), 1)
    assert (e1.info.index, e1.missing) == (1, ("m1",))  # m1 is past range 1
    out = ev.end("m0", End(1, 2, Ledger(1, received=6)))  # m0's last range is 1
    assert [type(o) for o in out] == [EventHandOn]  # range 2: m0 is done
    (e2,) = out
    assert (e2.info.index, e2.missing) == (2, ("m0",))  # type: ignore[union-attr]
    (end,) = ev.end("m1", End(1, 3, Ledger(1, received=5, lost=1)))
    assert isinstance(end, End) and end.batches == 3 and end.error is None
    led = end.ledger
    assert (led.received, led.lost) == (8, 2)  # frames 0-5, 8, 9: 6 and 7 none had
    assert led.sources["m1"].lost == 1 and led.sources["m0"].received == 6


def test_a_late_part_is_counted_in_its_module_and_returned() -> None:
    clock = Clock()
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=0.5, clock=clock)
    ev.begin("m0", begin("m0"))
    ev.begin("m1", begin("m1"))
    assert ev.hand_on(part("m0", 0, [0, 1]), 1) == []
    assert ev.wake_in() == 0.5
    clock.t = 0.6
    (e0,) = ev.due()
    assert e0.missing == ("m1",)  # type: ignore[union-attr]
    assert ev.hand_on(part("m1", 0, [0, 1]), 1) == []  # too late
    assert [p.stored for p in ev.take_refused()] == ["m1/0"]
    ev.end("m0", End(1, 1, Ledger(1, received=2)))
    (end,) = ev.end("m1", End(1, 1, Ledger(1, received=2)))
    assert isinstance(end, End)
    assert end.ledger.sources["m1"].dropped == {"late": 2}


def test_modules_that_do_not_fit_fail_the_acquisition_by_name() -> None:
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=1.0)
    ev.begin("m0", begin("m0"))
    ev.hand_on(part("m0", 0, [0]), 1)
    assert ev.begin("m1", begin("m1", row=0)) == []  # both claim row 0
    assert [p.stored for p in ev.take_refused()] == ["m0/0"]
    ev.end("m0", End(1, 1, Ledger(1, received=1)))
    (end,) = ev.end("m1", End(1, 0, Ledger(1)))
    assert isinstance(end, End)
    assert end.error is not None and "overlap" in end.error


def test_an_abort_reaches_the_results_once_every_module_aborted() -> None:
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=1.0)
    ev.begin("m0", begin("m0"))
    ev.begin("m1", begin("m1"))
    assert ev.aborted("m0", Aborted(1, Ledger(1, received=3))) == []
    (out,) = ev.aborted("m1", Aborted(1, Ledger(1, received=2)))
    assert isinstance(out, Aborted) and set(out.ledger.sources) == set(SOURCES)


def test_sources_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        ModuleEvents(("a", "a"), timeout=1.0)


def test_a_discarded_acquisition_gives_back_every_part_it_holds() -> None:
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=10.0)
    ev.begin("m0", begin("m0"))
    ev.begin("m1", begin("m1"))
    ev.hand_on(part("m0", 0, [0, 1]), 1)  # waits for m1
    ev.discard(1)
    assert [p.stored for p in ev.take_refused()] == ["m0/0"]
    assert ev.hand_on(part("m1", 0, [0, 1]), 1) == []
    assert [p.stored for p in ev.take_refused()] == ["m1/0"]
    assert ev.end("m0", End(1, 1, Ledger(1))) == []  # nothing more comes out of it


def test_a_module_that_ends_without_a_frame_does_not_hold_the_others() -> None:
    """(Seen after the first module's ingest restarted: its new receiver had nothing while
    the others still held the rest of a series.) A module that ended before sending a frame
    never begins: the layout is made from the others (it takes the free place), their
    parts go on with it missing, and their room comes back."""
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=1.0)
    assert ev.end("m0", End(1, 0, Ledger(1))) == []  # nothing at all from m0
    (b,) = ev.begin("m1", begin("m1"))
    assert isinstance(b, Begin) and b.setup.geometry == Geometry(6, 4, "uint16")
    (e0,) = ev.hand_on(part("m1", 0, [0, 1]), 1)
    assert isinstance(e0, EventHandOn) and e0.missing == ("m0",)
    assert e0.layout.part("m0").row0 == 0 and e0.layout.part("m1").row0 == 3
    (end,) = ev.end("m1", End(1, 1, Ledger(1, received=2)))
    assert isinstance(end, End) and end.ledger.received == 2


def test_a_module_that_ends_without_a_frame_after_the_others_began() -> None:
    ev: ModuleEvents[str] = ModuleEvents(SOURCES, timeout=1.0)
    assert ev.begin("m1", begin("m1")) == []
    assert ev.hand_on(part("m1", 0, [0, 1]), 1) == []  # held: m0 may still begin
    out = ev.end("m0", End(1, 0, Ledger(1)))
    assert [type(o) for o in out] == [Begin, EventHandOn]
    assert out[1].missing == ("m0",)  # type: ignore[union-attr]
