"""The multi-module simulator over real PUB sockets: each module's stream carries its
header, and the parts placed by those headers give back the detector's frames."""

from __future__ import annotations

import threading

import numpy as np

from actors.core.modules import ModuleLayout, assemble
from actors.sim.modules import ModuleSettings, ModuleSimulator
from actors.sim.simulator import SimulatorSettings
from actors.stream.receiver import Receiver, ReceiverSettings
from actors.wire.model import Image, Protocol, SeriesEnd
from actors.wire.pixels import decode_pixels


async def test_the_module_simulator_sends_each_module_with_its_header() -> None:
    """Real PUB sockets: 4 Jungfrau-like modules, module 2 loses frame 1; the parts, placed
    by their headers, give back the scene's frames."""
    settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=3, lossless=True,
                                                scene={"rows": 8, "cols": 16}),
                              modules=(2, 2), lose={2: [1]})
    with ModuleSimulator(settings) as sim:
        received: dict[str, list[Image]] = {}
        receivers = [Receiver(ReceiverSettings(ep, "sub", Protocol.SLS))
                     for ep in sim.endpoints]
        for rx in receivers:
            await rx.__aenter__()
        try:
            sender = threading.Thread(target=sim.run)
            sender.start()
            for k, rx in enumerate(receivers):
                got = received.setdefault(f"s{k}", [])
                while not isinstance(msg := await rx.recv(timeout=20), SeriesEnd):
                    assert isinstance(msg, Image)
                    got.append(msg)
            sender.join(30)
        finally:
            for rx in receivers:
                await rx.__aexit__(None, None, None)
    assert sim.sent == [3, 3, 2, 3]
    lay = ModuleLayout.from_headers({s: dict(m[0].header) for s, m in received.items()},
                                    {s: m[0].geometry.shape for s, m in received.items()})
    parts = {s: (np.array([m.frame for m in msgs], dtype=np.int64),
                 np.stack([decode_pixels(m.payload) for m in msgs]))
             for s, msgs in received.items()}
    out = assemble(lay, parts)
    assert out.incomplete == {1: ("s2",)}
    full = np.stack([sim.scene.frame(i) for i in (0, 2)])
    np.testing.assert_array_equal(out.frames, full)
