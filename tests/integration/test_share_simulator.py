"""``rayline simulate --clients N`` deals one DECTRIS series to N PULL clients (real
sockets): images round robin, the start and the end to the clients asked for."""

from __future__ import annotations

import socket
import threading

import zmq

from actors.cli import main
from actors.wire import dectris_v2
from actors.wire.model import Image, SeriesEnd, SeriesStart


def two_free_ports() -> int:
    """A port P with P + 1 also free (the simulator binds both)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no two consecutive free ports")


def test_simulate_deals_a_series_to_several_clients() -> None:
    port = two_free_ports()
    ctx = zmq.Context()
    socks = []
    try:
        for i in range(2):
            s = ctx.socket(zmq.PULL)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 30_000)
            s.connect(f"tcp://127.0.0.1:{port + i}")
            socks.append(s)
        code: list[int] = []
        sender = threading.Thread(target=lambda: code.append(main(
            ["simulate", "--protocol", "dectris-v2", "--detector", "eiger", "--rows", "16",
             "--cols", "8", "--frames", "10", "--clients", "2", "--start-to", "1",
             "--end-to", "0", "--endpoint", f"tcp://127.0.0.1:{port}", "--no-progress"])))
        sender.start()
        got: list[list[object]] = [[], []]
        for i, s in enumerate(socks):
            while True:
                msg = dectris_v2.decode(s.recv_multipart())
                got[i].append(msg)
                if isinstance(msg, SeriesEnd) or (i == 1 and len(got[1]) == 6):
                    break
        sender.join(30)
        assert code == [0]
        assert [type(m) for m in got[1]] == [SeriesStart] + [Image] * 5
        assert [type(m) for m in got[0]] == [Image] * 5 + [SeriesEnd]
        assert [m.frame for m in got[0] if isinstance(m, Image)] == [0, 2, 4, 6, 8]
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()
