"""Multi-module events: the layout from slsDetector headers, ranges, the event builder and
the assembled frames (against numpy on known frames)."""

from __future__ import annotations

import numpy as np
import pytest

from actors.core.modules import (
    EventBuilder,
    ModuleLayout,
    ModulePart,
    assemble,
    missing_counts,
    range_length,
    range_of,
)
from actors.wire import sls
from actors.wire.model import Image

GRID = (2, 2)  # rows, columns of modules
PART = (3, 4)  # rows, cols of each module


def headers() -> dict[str, dict[str, object]]:
    out = {}
    for r in range(GRID[0]):
        for c in range(GRID[1]):
            image = sls.decode(sls.encode_image(0, np.zeros(PART, np.uint16), module=(r, c),
                                                modules=GRID, det_type="jungfrau"))
            assert isinstance(image, Image)
            out[f"m{r}{c}"] = dict(image.header)
    return out


def layout() -> ModuleLayout:
    h = headers()
    return ModuleLayout.from_headers(h, {s: PART for s in h})


def test_the_layout_comes_from_the_headers() -> None:
    lay = layout()
    assert lay.shape == (6, 8)
    assert lay.part("m01") == ModulePart("m01", 0, 4, 3, 4)
    assert lay.part("m10") == ModulePart("m10", 3, 0, 3, 4)
    assert headers()["m11"]["modId"] == 3 and headers()["m11"]["detshape"] == [2, 2]


def test_a_bad_layout_is_named() -> None:
    h = headers()
    h["m11"] = {**h["m11"], "row": 0, "column": 0}
    with pytest.raises(ValueError, match="overlap"):
        ModuleLayout.from_headers(h, {s: PART for s in h})
    h = headers()
    h["m11"] = {**h["m11"], "row": 5}
    with pytest.raises(ValueError, match="m11.*outside"):
        ModuleLayout.from_headers(h, {s: PART for s in h})
    with pytest.raises(ValueError, match="differ in shape"):
        ModuleLayout.from_headers(headers(), {**{s: PART for s in headers()}, "m00": (3, 5)})
    with pytest.raises(ValueError, match="does not fit"):
        ModuleLayout(4, 4, (ModulePart("a", 2, 0, 3, 4),))


def test_ranges_respect_the_pedestal_epochs() -> None:
    assert [range_of(f, 8) for f in (0, 7, 8, 17)] == [0, 0, 1, 2]
    assert range_length(32, []) == 32
    assert range_length(32, [100, None]) == 25  # 25 divides the epoch of 100
    assert range_length(32, [100, 30]) == 10


def test_assembled_frames_equal_the_full_frames() -> None:
    lay = layout()
    rng = np.random.default_rng(0)
    full = rng.integers(0, 60000, (5, 6, 8), dtype=np.uint16)
    numbers = np.arange(10, 15, dtype=np.int64)
    parts = {p.source: (numbers, full[:, p.slices[0], p.slices[1]]) for p in lay.parts}
    out = assemble(lay, parts)
    np.testing.assert_array_equal(out.frames, full)
    np.testing.assert_array_equal(out.frame_numbers, numbers)
    assert out.incomplete == {} and out.masked is None


@pytest.mark.parametrize("policy", ["drop", "mask"])
def test_a_frame_a_module_lost_is_incomplete_and_names_it(policy: str) -> None:
    lay = layout()
    full = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    numbers = np.arange(4, dtype=np.int64)
    parts = {p.source: (numbers, full[:, p.slices[0], p.slices[1]]) for p in lay.parts}
    keep = np.array([0, 2, 3])  # m10 lost frame 1
    parts["m10"] = (numbers[keep], parts["m10"][1][keep])
    out = assemble(lay, parts, policy=policy)  # type: ignore[arg-type]
    assert out.incomplete == {1: ("m10",)} and missing_counts(out.incomplete) == {"m10": 1}
    if policy == "drop":
        np.testing.assert_array_equal(out.frame_numbers, [0, 2, 3])
        np.testing.assert_array_equal(out.frames, full[[0, 2, 3]])
    else:
        np.testing.assert_array_equal(out.frame_numbers, numbers)
        want = full.copy()
        want[1, 3:6, 0:4] = 0
        np.testing.assert_array_equal(out.frames, want)
        assert out.masked is not None and out.masked.sum() == 12
        assert out.masked[1, 3:6, 0:4].all()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_events_leave_in_order_once_every_source_has_delivered() -> None:
    clock = Clock()
    b: EventBuilder[str] = EventBuilder(("a", "b"), timeout=1.0, clock=clock)
    assert b.add("a", 0, "a0") == (True, [])
    assert b.add("a", 1, "a1") == (True, [])
    ok, events = b.add("b", 0, "b0")
    assert ok and [(e.index, e.parts, e.missing) for e in events] == \
        [(0, {"a": "a0", "b": "b0"}, ())]
    ok, events = b.add("b", 2, "b2")  # b skipped range 1 (all its frames lost)
    assert [(e.index, e.missing) for e in events] == [(1, ("b",))]
    assert b.add("a", 0, "late") == (False, [])  # range 0 is out: late
    assert [(e.index, e.missing) for e in b.end("a", 1)] == [(2, ("a",))]


def test_a_silent_source_is_named_after_the_timeout() -> None:
    clock = Clock()
    b: EventBuilder[int] = EventBuilder(("a", "b", "c"), timeout=0.5, clock=clock)
    b.add("a", 0, 1)
    b.add("b", 0, 2)
    assert b.due() == [] and b.wake_in() == 0.5
    clock.t = 0.6
    (event,) = b.due()
    assert event.index == 0 and event.missing == ("c",)
    assert b.add("c", 0, 3) == (False, [])  # too late: counted by the caller
    b.add("a", 1, 4)
    assert [e.index for e in b.flush()] == [1] and b.waiting == 0



def test_a_module_stream_is_batched_on_frame_number_ranges() -> None:
    """Batch k holds the frames k*L .. (k+1)*L - 1 that arrived; a range with none is
    skipped, a frame of a closed range is refused, whatever max_frames says."""
    from actors.core.batch import BatchAssembler
    from actors.wire.model import Geometry

    frames = np.arange(20 * 2 * 3, dtype=np.uint16).reshape(20, 2, 3)
    images = {i: sls.decode(sls.encode_image(i, frames[i])) for i in range(20)}
    asm = BatchAssembler(0, Geometry(2, 3, "uint16"), max_frames=2, ranges=4)
    closed = []
    for i in [0, 1, 3, 5, 6, 7, 13]:  # 2, 4, 8..12 lost
        image = images[i]
        assert isinstance(image, Image)
        if (batch := asm.add(image)) is not None:
            closed.append(batch)
    assert [(b.index, list(b.frame_numbers)) for b in closed] == [(0, [0, 1, 3]),
                                                                  (1, [5, 6, 7])]
    late = images[9]
    assert isinstance(late, Image)
    with pytest.raises(ValueError, match="range 2, which has closed"):
        asm.add(late)
    last = asm.flush()
    assert last is not None and last.index == 3 and list(last.frame_numbers) == [13]
    np.testing.assert_array_equal(last.frames(), frames[[13]])
    assert asm.next_index == 4


@pytest.mark.parametrize("policy", ["drop", "mask"])
def test_module_batches_assemble_into_the_batch_a_worker_reduces(policy: str) -> None:
    """4 module batches of one range (module m11 lost frame 6): the full-frame batch, its
    drop count and the incomplete frame, named; the event has 4 frames."""
    from actors.core.batch import FrameBatch
    from actors.core.modules import assemble_batches, event_frames
    from actors.wire.model import Encoding, Geometry

    lay = layout()
    full = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    numbers = np.arange(4, 8, dtype=np.int64)
    parts = {}
    for p in lay.parts:
        keep = [0, 1, 3] if p.source == "m11" else [0, 1, 2, 3]
        parts[p.source] = FrameBatch(5, 1, numbers[keep], Geometry(3, 4, "uint16"),
                                     Encoding.RAW,
                                     pixels=full[keep][:, p.slices[0], p.slices[1]])
    assert list(event_frames(b.frame_numbers for b in parts.values())) == [4, 5, 6, 7]
    batch, dropped, incomplete = assemble_batches(lay, parts, index=9,
                                                  policy=policy)  # type: ignore[arg-type]
    assert incomplete == {6: ("m11",)}
    assert batch is not None and batch.index == 9 and batch.acquisition == 5
    assert batch.geometry == Geometry(6, 8, "uint16")
    if policy == "drop":
        assert dropped == {"incomplete": 1}
        np.testing.assert_array_equal(batch.frames(), full[[0, 1, 3]])
    else:
        assert dropped == {} and batch.n == 4
        want = full.copy()
        want[2, 3:6, 4:8] = 0
        np.testing.assert_array_equal(batch.frames(), want)


def test_a_worker_reduces_an_event_like_the_full_frames() -> None:
    """The worker's event path equals the same worker on the full frames, with the frame a
    module lacks dropped as incomplete."""
    from actors.core.batch import FrameBatch
    from actors.core.setup import DROPPED_KEY, ChainSetup
    from actors.process.worker import Worker
    from actors.wire.model import Encoding, Geometry

    lay = layout()
    rng = np.random.default_rng(3)
    full = rng.integers(0, 1000, (6, 6, 8), dtype=np.uint16)
    numbers = np.arange(6, dtype=np.int64)
    parts = {}
    for p in lay.parts:
        keep = [0, 1, 2, 4, 5] if p.source == "m00" else list(range(6))
        parts[p.source] = FrameBatch(1, 0, numbers[keep], Geometry(3, 4, "uint16"),
                                     Encoding.RAW,
                                     pixels=full[keep][:, p.slices[0], p.slices[1]])
    setup = ChainSetup(1, 0, ({"type": "sum"}, {"type": "total"}), Geometry(6, 8, "uint16"))
    worker = Worker()
    got = worker.process_event(parts, lay, "drop", 0, None, setup)
    kept = [0, 1, 2, 4, 5]
    want = worker.process(FrameBatch(1, 0, numbers[kept], setup.geometry, Encoding.RAW,
                                     pixels=full[kept]), None, setup)
    assert got[DROPPED_KEY] == {"incomplete": 1}
    assert set(got) - {DROPPED_KEY} == set(want)
    import dataclasses

    def plain(x: object) -> object:  # partials are dataclasses: compare their fields
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x  # type: ignore[arg-type]

    for name in want:
        np.testing.assert_equal(plain(got[name]), plain(want[name]))


def test_assemble_with_a_module_that_sent_nothing_of_the_range() -> None:
    layout = ModuleLayout.from_headers(
        {"a": {"row": 0, "column": 0, "detshape": [2, 1]},
         "b": {"row": 0, "column": 1, "detshape": [2, 1]}}, {"a": (2, 2), "b": (2, 2)})
    a = (np.array([4, 5]), np.ones((2, 2, 2), dtype=np.uint16))
    out = assemble(layout, {"a": a}, policy="mask")
    assert list(out.frame_numbers) == [4, 5] and out.incomplete == {4: ("b",), 5: ("b",)}
    assert out.masked is not None and out.masked[:, :, 2:].all()
    assert assemble(layout, {"a": a}).frames.shape == (0, 2, 4)


def test_the_layout_from_config_offsets() -> None:
    layout = ModuleLayout.from_offsets({"a": (0, 0), "b": (2, 4)}, {"a": (2, 2), "b": (2, 2)})
    assert layout.shape == (4, 6) and layout.part("b").slices == (slice(2, 4), slice(4, 6))
    with pytest.raises(ValueError, match="overlap"):
        ModuleLayout.from_offsets({"a": (0, 0), "b": (1, 1)}, {"a": (2, 2), "b": (2, 2)})
    # a module that sent nothing has the others' shape
    assert ModuleLayout.from_offsets({"a": (0, 0), "b": (0, 2)}, {"a": (2, 2)}).shape == (2, 4)


def test_config_offsets_for_every_module_or_none() -> None:
    from actors.config import ConfigError, parse_config

    def cfg(*offsets: object) -> dict[str, object]:
        return {"sources": [{"endpoint": f"tcp://127.0.0.1:{4000 + i}", "name": f"m{i}",
                             **({"offset": o} if o is not None else {})}
                            for i, o in enumerate(offsets)], "overflow": "block"}

    assert parse_config(cfg([0, 0], [16, 0])).sources[1].offset == (16, 0)  # type: ignore[index]
    with pytest.raises(ConfigError, match="every module or for none"):
        parse_config(cfg([0, 0], None))
    with pytest.raises(ConfigError, match=">= 0"):
        parse_config(cfg([0, 0], [-1, 0]))
