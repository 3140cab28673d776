"""Simulator → receiver over real loopback ZMQ (PUB/SUB and PUSH/PULL)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from actors.sim.simulator import Simulator, SimulatorSettings
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire import reorder
from actors.wire.model import Geometry, Image, Message, Protocol, SeriesEnd, SeriesStart
from actors.wire.pixels import decode_pixels
from tests.conftest import SenderThread


async def _collect(rx: Receiver, *, idle: float = 10.0,
                   on_image: Callable[[Image], Any] | None = None) -> list[Message]:
    """Receive until the series ends (or nothing arrives for ``idle`` seconds)."""
    out: list[Message] = []
    while True:
        msg = await rx.recv(timeout=idle)
        if msg is None:
            return out
        out.append(msg)
        if isinstance(msg, Image) and on_image is not None:
            on_image(msg)
        if isinstance(msg, SeriesEnd):
            return out


CASES = [
    pytest.param(dict(protocol=Protocol.SLS, detector="moench", lossless=True), "sub",
                 id="sls-moench-sub"),
    pytest.param(dict(protocol=Protocol.SLS, detector="jungfrau", lossless=True), "sub",
                 id="sls-jungfrau-sub"),
    pytest.param(dict(protocol=Protocol.DECTRIS_V1, detector="eiger",
                      scene={"rows": 260, "cols": 300}), "pull", id="v1-eiger-pull"),
    pytest.param(dict(protocol=Protocol.DECTRIS_V2, detector="eiger",
                      scene={"rows": 260, "cols": 300, "dtype": "uint16"}), "pull",
                 id="v2-eiger-pull-bslz4"),
    pytest.param(dict(protocol=Protocol.DECTRIS_V2, detector="eiger", compression="lz4",
                      scene={"rows": 100, "cols": 120, "dtype": "uint8"}), "pull",
                 id="v2-eiger-pull-lz4"),
]


@pytest.mark.parametrize(("sim_kwargs", "socket"), CASES)
async def test_simulator_to_receiver_delivers_every_frame(
        sim_kwargs: dict[str, Any], socket: Any,
        sender_threads: Callable[..., SenderThread]) -> None:
    n = 40
    with Simulator(SimulatorSettings(frames=n, seed=3, **sim_kwargs)) as sim:
        settings = ReceiverSettings(sim.endpoint, socket, sim.settings.protocol)
        async with Receiver(settings) as rx:
            sender = sender_threads(sim.run)
            frames: dict[int, np.ndarray] = {}
            msgs = await _collect(rx, on_image=lambda im: frames.__setitem__(
                im.frame, decode_pixels(im.payload).copy()))
            sender.join()
    assert sorted(frames) == list(range(n))
    for i in (0, 1, n - 1):
        np.testing.assert_array_equal(frames[i], sim.scene.frame(i))
    assert isinstance(msgs[-1], SeriesEnd)
    if sim.settings.protocol is not Protocol.SLS:
        assert isinstance(msgs[0], SeriesStart)
        assert msgs[0].geometry == sim.geometry
        assert msgs[0].number_of_images == n
    snap = rx.ledger.snapshot()
    assert (snap["received"], snap["lost"], snap["rejected_total"]) == (n, 0, 0)
    assert snap["series_ended"] == 1


async def test_moench03_raw_order_is_reordered_back(
        sender_threads: Callable[..., SenderThread]) -> None:
    settings = SimulatorSettings(frames=3, reorder="moench03", lossless=True)
    with Simulator(settings) as sim:
        async with Receiver(ReceiverSettings(sim.endpoint, "sub", Protocol.SLS)) as rx:
            sender = sender_threads(sim.run)
            msgs = await _collect(rx)
            sender.join()
    images = [m for m in msgs if isinstance(m, Image)]
    m = reorder.moench03_map()
    raw = decode_pixels(images[1].payload)
    assert not np.array_equal(raw, sim.scene.frame(1))
    np.testing.assert_array_equal(reorder.apply_map(raw, m), sim.scene.frame(1))


@pytest.mark.slow
async def test_slow_subscriber_counts_exactly_the_true_gaps(
        sender_threads: Callable[..., SenderThread]) -> None:
    """PUB drops frames for a slow SUB; the ledger's lost count equals the real gaps."""
    n = 300  # 96 MB of 400 x 400 frames: more than the socket buffers can hide
    settings = SimulatorSettings(frames=n, pool=8, hwm=4, end_of_series=False)
    with Simulator(settings) as sim:
        rx_settings = ReceiverSettings(sim.endpoint, "sub", Protocol.SLS, hwm=4)
        async with Receiver(rx_settings) as rx:
            sender = sender_threads(sim.run)
            seen: list[int] = []
            while True:
                msg = await rx.recv(timeout=3.0)
                if msg is None:
                    break
                assert isinstance(msg, Image)
                seen.append(msg.frame)
                time.sleep(0.005)  # noqa: ASYNC251 - a deliberately slow consumer
            sender.join()
    assert len(seen) < n, "the consumer was not slow enough to make the PUB drop frames"
    assert seen == sorted(seen)
    true_gaps = (max(seen) + 1) - len(seen)
    assert rx.ledger.lost == true_gaps > 0
    assert rx.ledger.received == len(seen)


async def test_receiver_recv_times_out_without_a_sender() -> None:
    async with Receiver(ReceiverSettings("tcp://127.0.0.1:1", "pull", Protocol.SLS)) as rx:
        t0 = asyncio.get_running_loop().time()
        assert await rx.recv(timeout=0.2) is None
        assert asyncio.get_running_loop().time() - t0 >= 0.19


@contextlib.contextmanager
def _tight_push() -> Iterator[tuple[Any, str]]:
    """A PUSH bound on a free port that queues at most 2 messages itself."""
    import zmq

    from actors.stream.sockets import free_tcp_endpoint

    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 2)
    push.setsockopt(zmq.LINGER, 0)
    endpoint = free_tcp_endpoint()
    push.bind(endpoint)
    try:
        yield push, endpoint
    finally:
        push.close(linger=0)
        ctx.term()


def _send_until_blocked(push: Any, parts: Callable[[int], list[Any]], limit: int) -> int:
    """Messages ``parts(0), parts(1), ...`` sent before the peer stops taking them (the send
    queue still full after 0.5 s), at most ``limit``."""
    import zmq

    sent = 0
    while sent < limit:
        try:
            push.send_multipart(parts(sent), zmq.NOBLOCK, copy=False)
            sent += 1
        except zmq.Again:
            if not push.poll(500, zmq.POLLOUT):  # still full after 0.5 s: blocked
                break
    return sent


async def test_receive_queue_is_bounded_by_the_configured_frame_size() -> None:
    """With a geometry of 8 MiB frames the receive queue holds ~256 MB of them: a PULL
    sender blocks after about that many, instead of the ingest buffering gigabytes it
    cannot process."""
    from actors.stream.sockets import hwm_for
    from actors.wire import dectris_v1

    frame = np.zeros((2048, 2048), np.uint16)  # 8 MiB
    with _tight_push() as (push, endpoint):
        settings = ReceiverSettings(endpoint, "pull", Protocol.DECTRIS_V1,
                                    geometry=Geometry(2048, 2048, "uint16"))
        async with Receiver(settings) as rx:
            want = hwm_for(frame.nbytes)
            assert rx.hwm == want < 40
            push.send_multipart(dectris_v1.encode_image(1, 0, frame, encoding="<"),
                                copy=False)
            assert isinstance(await rx.recv(timeout=30), Image)
            # stop reading: the sender must block after about `want` messages
            sent = _send_until_blocked(
                push, lambda i: dectris_v1.encode_image(1, i + 1, frame, encoding="<"), 120)
            assert want <= sent < 2 * want + 8, sent


async def test_a_peer_pushing_huge_messages_cannot_make_the_receiver_hold_gigabytes() -> None:
    """No geometry configured, nothing read yet: 64 MiB messages (valid size, absurd for the
    stream) fill a queue of a few messages, then the sender blocks: the receiver holds a few
    hundred MB, not 40 × 64 MiB."""
    blob = np.zeros(64 * 1024 * 1024, np.uint8)
    with _tight_push() as (push, endpoint):
        async with Receiver(ReceiverSettings(endpoint, "pull", Protocol.DECTRIS_V1)) as rx:
            assert rx.hwm == 4
            # not reading: count what the receiver takes
            sent = _send_until_blocked(push, lambda i: [b"{}", blob], 40)
            assert sent <= 4 + 2 + 2, sent  # its queue + the sender's + what TCP buffers


async def test_close_returns_while_monitor_events_stream_in() -> None:
    """A sender that binds and closes again and again sends the receiver's monitor a stream
    of connect/disconnect events; every close returns (the monitor is disabled before its
    socket closes, so libzmq's I/O thread is never left blocked sending it an event)."""
    import threading

    import zmq

    from actors.stream.sockets import free_tcp_endpoint

    endpoint = free_tcp_endpoint()
    stop = threading.Event()

    def churn() -> None:
        ctx = zmq.Context()
        try:
            while not stop.is_set():
                sock = ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                with contextlib.suppress(zmq.ZMQError):  # not free again yet: next time
                    sock.bind(endpoint)
                sock.close(linger=0)
        finally:
            ctx.term()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for _ in range(20):
            rx = Receiver(ReceiverSettings(endpoint, "pull", Protocol.SLS))
            rx.open()
            deadline = time.monotonic() + 30
            while rx.ledger.disconnects < 2:  # events are flowing
                assert time.monotonic() < deadline, "no disconnect seen"
                await asyncio.sleep(0.005)
            await asyncio.wait_for(rx.close(), 10)
    finally:
        stop.set()
        thread.join(10)
