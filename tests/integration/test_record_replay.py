"""record → file → replay over real sockets gives back the same messages."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cbor2
import numpy as np
import pytest

from actors.record.recording import (
    RecordingWriter,
    iter_records,
    read_metadata,
    record,
    replay,
)
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire.model import Image, Protocol, SeriesEnd, SeriesStart
from actors.wire.pixels import decode_pixels
from tests.conftest import SenderThread


def _record_series(path: Path, sim_settings: SimulatorSettings, expected_messages: int,
                   sender_threads: Callable[..., SenderThread]) -> Simulator:
    with Simulator(sim_settings) as sim:
        rec = sender_threads(lambda: record(sim.endpoint, "pull", path,
                                            max_messages=expected_messages, idle_timeout=20,
                                            protocol=str(sim_settings.protocol)))
        sim.run()
        assert rec.join() == expected_messages
    return sim


async def test_record_then_replay_round_trip(tmp_path: Path,
                                             sender_threads: Callable[..., SenderThread]) -> None:
    n = 12
    path = tmp_path / "v2.rlrec"
    settings = SimulatorSettings(protocol=Protocol.DECTRIS_V2, detector="eiger", frames=n,
                                 rate=200, scene={"rows": 64, "cols": 80, "dtype": "uint16"})
    sim = _record_series(path, settings, n + 2, sender_threads)
    meta = read_metadata(path)
    assert meta["format"] == "rayline-recording" and meta["protocol"] == "dectris-v2"
    records = list(iter_records(path))
    assert len(records) == n + 2
    times = [r.t_ns for r in records]
    assert times[0] == 0 and times == sorted(times)
    assert times[-2] >= (n - 1) / 200 * 1e9 * 0.5  # the recorded timing follows the sender

    bound: queue.Queue[str] = queue.Queue()
    player = sender_threads(lambda: replay(path, "tcp://127.0.0.1:*", "push", rate=0,
                                           on_bound=bound.put))
    endpoint = bound.get(timeout=30)  # connect only once the player has bound
    async with Receiver(ReceiverSettings(endpoint, "pull", Protocol.DECTRIS_V2)) as rx:
        msgs = []
        while (msg := await rx.recv(timeout=20)) is not None:
            msgs.append(msg)
            if isinstance(msg, SeriesEnd):
                break
        assert player.join() == n + 2
    assert isinstance(msgs[0], SeriesStart) and isinstance(msgs[-1], SeriesEnd)
    images = [m for m in msgs if isinstance(m, Image)]
    assert [m.frame for m in images] == list(range(n))
    for im in images:
        np.testing.assert_array_equal(decode_pixels(im.payload), sim.scene.frame(im.frame))
    assert rx.ledger.received == n and rx.ledger.rejected_total == 0


async def test_replay_keeps_recorded_timing_and_paces_pub(
        tmp_path: Path, sender_threads: Callable[..., SenderThread]) -> None:
    path = tmp_path / "t.rlrec"
    with RecordingWriter(path, protocol="sls") as w:
        from actors.wire import sls

        for i in range(5):
            w.write([bytes(p) for p in sls.encode_image(i, np.full((8, 8), i, np.uint16))],
                    t_ns=i * 50_000_000)
        w.write([bytes(p) for p in sls.encode_end()], t_ns=5 * 50_000_000)
    bound: queue.Queue[str] = queue.Queue()
    t0 = time.monotonic()
    player = sender_threads(lambda: replay(path, "tcp://127.0.0.1:*", "pub",
                                           on_bound=bound.put))
    endpoint = bound.get(timeout=30)  # the PUB waits for this subscriber
    async with Receiver(ReceiverSettings(endpoint, "sub", Protocol.SLS)) as rx:
        frames = []
        while (msg := await rx.recv(timeout=20)) is not None:
            if isinstance(msg, SeriesEnd):
                break
            assert isinstance(msg, Image)
            frames.append(msg.frame)
        assert player.join() == 6
    assert frames == [0, 1, 2, 3, 4]
    assert time.monotonic() - t0 >= 0.25  # recorded timing: 250 ms from first to last


def test_recording_is_never_overwritten_and_corruption_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.rlrec"
    with RecordingWriter(path) as w:
        w.write([b"a", b"b"])
    with pytest.raises(FileExistsError):
        RecordingWriter(path)
    with path.open("ab") as fp:
        fp.write(cbor2.dumps([1, [b"x"]])[:-1])  # a truncated last record
    with pytest.raises(ValueError, match="corrupt"):
        list(iter_records(path))
    with pytest.raises(FileNotFoundError):
        list(iter_records(tmp_path / "missing.rlrec"))


def test_a_truncated_recording_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       sender_threads: Callable[..., SenderThread]) -> None:
    """The recorder knows the protocol: a recording that stopped before the series' end (or
    that a PUB thinned out) is reported when it stops; a whole one is not."""
    settings = SimulatorSettings(protocol=Protocol.DECTRIS_V2, detector="eiger", frames=6,
                                 scene={"rows": 16, "cols": 16, "dtype": "uint16"})
    with caplog.at_level("WARNING", logger="actors.record.recording"):
        _record_series(tmp_path / "whole.rlrec", settings, 8, sender_threads)  # start+6+end
        assert not caplog.records
        with Simulator(replace(settings, end_of_series=False)) as sim:  # cut short
            rec = sender_threads(lambda: record(sim.endpoint, "pull", tmp_path / "cut.rlrec",
                                                idle_timeout=1.0, protocol="dectris-v2"))
            sim.run()
            assert rec.join() == 7  # the start and 6 frames; then a second without any
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "6 frames recorded, 0 missing" in warning and "no end of series recorded" in warning


@pytest.mark.parametrize("end", [True, False])
async def test_replay_of_a_truncated_recording_ends_its_series(
        tmp_path: Path, end: bool, caplog: pytest.LogCaptureFixture,
        sender_threads: Callable[..., SenderThread]) -> None:
    """A recording that stops inside its series is followed by its protocol's end message
    (so the receiving acquisition ends), with a warning; ``end=False`` sends it as is."""
    from actors.wire import dectris_v2
    from actors.wire.model import Geometry

    path = tmp_path / "cut.rlrec"
    geometry = Geometry(8, 8, "uint16")
    with RecordingWriter(path, protocol="dectris-v2") as w:
        w.write(dectris_v2.encode_start(5, geometry=geometry, number_of_images=10))
        for i in range(3):
            w.write([bytes(p) for p in dectris_v2.encode_image(5, i, np.zeros((8, 8),
                                                                              np.uint16))])
    bound: queue.Queue[str] = queue.Queue()
    with caplog.at_level("WARNING", logger="actors.record.recording"):
        player = sender_threads(lambda: replay(path, "tcp://127.0.0.1:*", "push", rate=0,
                                               end=end, on_bound=bound.put))
        endpoint = bound.get(timeout=30)
        async with Receiver(ReceiverSettings(endpoint, "pull", Protocol.DECTRIS_V2)) as rx:
            got = [await rx.recv(timeout=20) for _ in range(4)]
            assert player.join() == (5 if end else 4)
            last = await rx.recv(timeout=1.0 if not end else 20)
    assert [type(m) for m in got] == [SeriesStart, Image, Image, Image]
    if end:
        assert isinstance(last, SeriesEnd) and last.series_id == 5
        assert "ends inside series 5" in caplog.text
    else:
        assert last is None and not caplog.records
