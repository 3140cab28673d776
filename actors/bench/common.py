"""What the pipeline benchmarks share: the simulated senders and the raw-receive ceiling.

The sender runs in its own process (``spawn``): it binds, pre-builds its pool of frames and
sends a whole series each time it is told to go, so one sender serves a warm-up and a timed
acquisition. A real detector sends from another host; here it shares the machine's cores
with the receiver, so every figure is a lower bound: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import zmq

from actors.backends.local import processes
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol

#: the EIGER 4M case of the issues: 2167 x 2070 uint16, 8.97 MB per frame
EIGER_4M = {"rows": 2167, "cols": 2070, "dtype": "uint16"}


#: the full MOENCH chain of the benchmarks: pump-probe split, pedestal epoch 100, lag 1
MOENCH_CHAIN: list[dict[str, Any]] = [{"type": "moench", "split_pump": True,
                                       "pedestal_epoch": 100, "pedestal_lag": 1}]


def eiger_settings(frames: int) -> SimulatorSettings:
    """4M frames over DECTRIS V1, uncompressed (``<``), from a pool of 4 frames."""
    return SimulatorSettings(protocol=Protocol.DECTRIS_V1, detector="eiger", frames=frames,
                             pool=4, scene=EIGER_4M, v1_encoding="<", send_timeout=120.0)


def moench_settings(frames: int) -> SimulatorSettings:
    """MOENCH 400 x 400 over sls PUB/SUB, lossless (the publisher blocks, never drops)."""
    return SimulatorSettings(protocol=Protocol.SLS, detector="moench", frames=frames, pool=64,
                             lossless=True, subscriber_timeout=120.0, send_timeout=120.0)


def _sender(settings: SimulatorSettings, conn: Connection) -> None:
    """Sender process: bind, report the endpoint, pre-build the pool, wait for go, send."""
    with Simulator(settings) as sim:
        for i in range(min(settings.pool or 1, settings.frames)):
            sim.scene.frame(i)
        conn.send(sim.endpoint)
        while conn.poll(300) and conn.recv() == "go":
            sim.run()
            conn.send("sent")
            # later series: the subscriber is already there (PUB), a new series id
            sim.settings = replace(sim.settings, wait_subscribers=0,
                                   series_id=sim.settings.series_id + 1)
    conn.close()


class Sender:
    """A simulator in its own process; :meth:`go` sends one series. ``main`` is the sender
    process (``main(settings, conn)``: it sends where it bound, then one series per "go")."""

    def __init__(self, settings: Any,
                 main: Callable[[Any, Connection], None] = _sender) -> None:
        self._conn, child = processes.context().Pipe()
        self.process = processes.context().Process(target=main, args=(settings, child),
                                                   name="bench-sender", daemon=True)
        self.process.start()
        child.close()
        if not self._conn.poll(600):
            raise TimeoutError("the sender did not start")
        self.bound: Any = self._conn.recv()  # what the sender process reported
        self.endpoint: str = self.bound if isinstance(self.bound, str) else ""

    def go(self) -> None:
        self._conn.send("go")

    def wait_sent(self, timeout: float = 300.0) -> None:
        if not self._conn.poll(timeout):
            raise TimeoutError("the sender did not finish")
        self._conn.recv()

    def close(self, timeout: float = 300.0) -> None:
        self._conn.send("done")
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._conn.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_receive(settings: SimulatorSettings, socket: str) -> float:
    """Frames/s of a bare synchronous pyzmq receive loop (``recv_multipart(copy=False)``),
    first to last frame: the ceiling."""
    _, first, last = raw_times(settings, socket)
    return (settings.frames - 1) / (last - first)


def raw_times(settings: SimulatorSettings, socket: str) -> tuple[float, float, float]:
    """``perf_counter`` times of a bare synchronous pyzmq receive loop: the sender told to
    go, the first frame received, the last one."""
    with Sender(settings) as sender:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB if socket == "sub" else zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1000)
        if socket == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.connect(sender.endpoint)
            go = time.perf_counter()
            sender.go()
            got, t0, t1 = 0, 0.0, 0.0
            while got < settings.frames:
                if not sock.poll(120_000):
                    raise TimeoutError(f"raw receive: {got} of {settings.frames} frames")
                parts = sock.recv_multipart(copy=False)
                if max(len(p) for p in parts) > 100_000:  # a frame (not a header or the end)
                    got += 1
                    t1 = time.perf_counter()
                    if got == 1:
                        t0 = t1
        finally:
            sock.close(linger=0)
            ctx.term()
    return go, t0, t1


def steady_run(settings: SimulatorSettings,
               open_pipeline: Callable[[str], AbstractContextManager[Any]]) -> dict[str, Any]:
    """Frames/s of a pipeline (either backend) on its own sender, in steady state.

    ``open_pipeline(endpoint)`` opens the pipeline on the sender's endpoint. A first,
    untimed acquisition of the same series loads the workers' kernels and warms the
    buffers; the second is timed from its first frame to its last merged partial
    (``AcquisitionResult.duration``), like the raw receive. Also returns the pipeline's
    status after the timed acquisition."""
    with Sender(settings) as sender, open_pipeline(sender.endpoint) as pipe:
        for _ in range(2):
            pipe.start_acquisition()
            sender.go()
            result = pipe.wait_acquisition(timeout=600)
            sender.wait_sent()
        status = pipe.status()
    led = result.ledger
    if led["processed"] != settings.frames:
        raise RuntimeError(f"processed {led['processed']} of {settings.frames}: {led}")
    return {"fps": (led["processed"] - 1) / result.duration, "ledger": led, "status": status}


def median(values: list[float]) -> float:
    return float(statistics.median(values))
