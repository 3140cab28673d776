"""Bad input never crashes the receiver: each bad message is counted with its reason and
the valid frames around it still arrive (real PUSH → PULL sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
import zmq

from actors.stream.receiver import Receiver, ReceiverSettings, part_limit
from actors.stream.sockets import bound_endpoint
from actors.wire import sls
from actors.wire.errors import DecodeError, Reason
from actors.wire.model import Geometry, Image, Protocol

GEOM = Geometry(40, 50, "uint16")


def _valid(i: int) -> list[bytes]:
    img = np.full(GEOM.shape, i, dtype=np.uint16)
    return [bytes(p) for p in sls.encode_image(i, img)]


def _mutations(rng: random.Random, i: int) -> list[tuple[list[bytes], str]]:
    """Deterministic bad variants of frame i's message, each with its expected reason."""
    header, payload = _valid(i)
    h = json.loads(header)
    j = lambda **kw: json.dumps({**h, **kw}).encode()  # noqa: E731
    cut = rng.randrange(1, len(header) - 2)
    return [
        ([header[:cut], payload], Reason.BAD_JSON),
        ([b"", payload], Reason.BAD_JSON),
        ([bytes(rng.randrange(256) for _ in range(40)) + b"\xff", payload], Reason.BAD_JSON),
        ([b"[" * 100_000, payload], Reason.BAD_JSON),
        ([b'"just a string"', payload], Reason.BAD_JSON),
        ([header], Reason.PART_COUNT),
        ([header, payload, payload], Reason.PART_COUNT),
        ([header, payload, b"", b""], Reason.PART_COUNT),
        ([payload[: rng.randrange(0, len(payload))], payload[:10]], Reason.BAD_JSON),
        ([header, payload[: rng.randrange(0, len(payload))]], Reason.SIZE_MISMATCH),
        ([header, payload + b"\0\0"], Reason.SIZE_MISMATCH),
        ([j(size=h["size"] * 2), payload], Reason.SIZE_MISMATCH),
        ([j(bitmode=4), payload], Reason.UNSUPPORTED),
        ([j(bitmode=12), payload], Reason.UNSUPPORTED),
        ([j(bitmode="16"), payload], Reason.BAD_HEADER),
        ([j(shape=[50, "40"]), payload], Reason.BAD_HEADER),
        ([j(shape=[10**12, 10**12]), payload], Reason.SIZE_MISMATCH),
        ([j(frameIndex=None), payload], Reason.BAD_HEADER),
        ([j(frameIndex=-5), payload], Reason.BAD_HEADER),
        ([j(data=None), payload], Reason.BAD_HEADER),
        ([j(completeImage=0), payload], Reason.INCOMPLETE),
        ([j(shape=[20, 40], size=1600), payload[:1600]], Reason.GEOMETRY),
        ([j(bitmode=32, shape=[25, 40], size=4000), payload], Reason.GEOMETRY),
        ([sls.encode_end()[0], payload], Reason.PART_COUNT),
        ([header, b"\0" * (part_limit(GEOM) + 1)], Reason.OVERSIZE),
    ]


def test_sls_decoder_random_mutation_corpus_only_raises_decode_error() -> None:
    rng = random.Random(1234)
    outcomes: Counter[str] = Counter()
    for i in range(600):
        header, payload = _valid(i)
        parts = [bytearray(header), bytearray(payload)]
        k = rng.randrange(4)
        if k == 0:  # flip bytes anywhere in the header
            for _ in range(rng.randrange(1, 4)):
                parts[0][rng.randrange(len(parts[0]))] = rng.randrange(256)
        elif k == 1:  # truncate a part
            p = rng.randrange(2)
            parts[p] = parts[p][: rng.randrange(len(parts[p]))]
        elif k == 2:  # drop or duplicate parts
            parts = parts[:1] if rng.random() < 0.5 else parts + parts[1:]
        else:  # random garbage
            parts = [bytearray(rng.randbytes(rng.randrange(0, 200)))
                     for _ in range(rng.randrange(1, 4))]
        try:
            sls.decode([bytes(p) for p in parts])
            outcomes["decoded"] += 1
        except DecodeError as exc:
            assert isinstance(exc.reason, Reason)
            outcomes[exc.reason] += 1
    assert sum(outcomes.values()) == 600
    assert {Reason.BAD_JSON, Reason.PART_COUNT, Reason.SIZE_MISMATCH} <= set(outcomes)


async def test_corpus_over_the_wire_counts_every_rejection_and_keeps_valid_frames() -> None:
    rng = random.Random(7)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    expected: Counter[str] = Counter()
    corpus: list[list[bytes]] = []
    n_valid = 30
    for i in range(n_valid):
        corpus.append(_valid(i))
        for parts, reason in _mutations(rng, i):
            if rng.random() < 0.45:
                corpus.append(parts)
                expected[reason] += 1
    corpus.append(_valid(5))  # a duplicate frame number
    expected[Reason.DUPLICATE] += 1
    corpus.append(_valid(n_valid))  # a valid last frame
    assert sum(expected.values()) >= 300
    try:
        settings = ReceiverSettings(bound_endpoint(push), "pull", Protocol.SLS, geometry=GEOM)
        async with Receiver(settings) as rx:
            received: list[int] = []

            async def consume() -> None:
                while (msg := await rx.recv(timeout=10)) is not None:
                    assert isinstance(msg, Image)
                    received.append(msg.frame)
                    if rx.ledger.messages == len(corpus):
                        return

            task = asyncio.create_task(consume())
            for parts in corpus:
                await asyncio.to_thread(push.send_multipart, parts)
            await asyncio.wait_for(task, 30)
        assert received == list(range(n_valid + 1))
        snap = rx.ledger.snapshot()
        assert snap["rejected"] == {str(k): v for k, v in expected.items()}
        assert snap["received"] == n_valid + 1 and snap["lost"] == 0
        assert snap["messages"] == snap["received"] + snap["rejected_total"] == len(corpus)
    finally:
        push.close(linger=0)
        ctx.term()


@pytest.mark.slow
async def test_message_over_maxmsgsize_drops_the_connection_and_later_frames_arrive() -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    try:
        settings = ReceiverSettings(bound_endpoint(push), "pull", Protocol.SLS, geometry=GEOM)
        async with Receiver(settings) as rx:
            sock: Any = rx._sock
            assert sock.getsockopt(zmq.MAXMSGSIZE) == 2 * part_limit(GEOM)
            push.send_multipart(_valid(0))
            first = await rx.recv(timeout=10)
            assert isinstance(first, Image) and first.frame == 0
            header, _ = _valid(1)
            push.send_multipart([header, b"\0" * (2 * part_limit(GEOM) + 1)])
            deadline = asyncio.get_running_loop().time() + 20
            while rx.ledger.disconnects == 0:  # wait on the condition, with a deadline
                assert asyncio.get_running_loop().time() < deadline, "no disconnect seen"
                assert await rx.recv(timeout=0.05) is None
            later = None
            while later is None:  # the PUSH reconnects; resend until the frame gets through
                assert asyncio.get_running_loop().time() < deadline, "no reconnection"
                with contextlib.suppress(zmq.Again):
                    push.send_multipart(_valid(2), flags=zmq.NOBLOCK)
                later = await rx.recv(timeout=0.2)
            assert isinstance(later, Image) and later.frame == 2
            assert rx.ledger.lost == 1  # frame 1 never arrived
    finally:
        push.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("protocol", [Protocol.DECTRIS_V1, Protocol.DECTRIS_V2])
async def test_absurd_series_declarations_are_not_believed(protocol: Protocol) -> None:
    """A series start declaring a 99,999,999² frame or 2⁴⁰ images is rejected with its reason;
    the receiver keeps its limits, the real frames that follow arrive, nothing is 'lost'."""
    from actors.wire import dectris_v1, dectris_v2

    real = Geometry(16, 20, "uint32")
    absurd = Geometry(99_999_999, 99_999_999, "uint32")
    frames = np.arange(3 * 16 * 20, dtype=np.uint32).reshape(3, 16, 20)
    if protocol is Protocol.DECTRIS_V1:
        starts = [dectris_v1.encode_header(1, geometry=absurd),
                  dectris_v1.encode_header(1, geometry=real,
                                           config={"nimages": 2**40, "ntrigger": 1})]
        images = [dectris_v1.encode_image(1, i, f, encoding="<") for i, f in enumerate(frames)]
        end = dectris_v1.encode_end(1)
    else:
        starts = [dectris_v2.encode_start(1, geometry=absurd),
                  dectris_v2.encode_start(1, geometry=real, number_of_images=2**40)]
        images = [dectris_v2.encode_image(1, i, f, compression=None)
                  for i, f in enumerate(frames)]
        end = dectris_v2.encode_end(1)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("tcp://127.0.0.1:*")
    try:
        async with Receiver(ReceiverSettings(bound_endpoint(push), "pull", protocol)) as rx:
            limit = rx._limit
            for parts in [*starts, *images, end]:
                push.send_multipart(parts)
            got = []
            while (msg := await rx.recv(timeout=10)) is not None:
                got.append(msg)
                if rx.ledger.messages == len(starts) + len(images) + 1:
                    break
            assert rx._limit == limit and rx.geometry is None  # limits unchanged
    finally:
        push.close(linger=0)
        ctx.term()
    assert [m.frame for m in got if isinstance(m, Image)] == [0, 1, 2]
    snap = rx.ledger.snapshot()
    assert snap["rejected"] == {"declared_limit": 2}
    assert (snap["received"], snap["lost"]) == (3, 0)
