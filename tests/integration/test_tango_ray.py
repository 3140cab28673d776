"""The Rayline device as a Ray actor over a real pipeline, fed by the MOENCH simulator:
live events while acquiring, final images equal the pipeline's results (and the sequential
reference), the seed's Sardana controller sequence, and an asyncio client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import ray
import tango
import tango.asyncio

from actors.backends.ray.driver import RayPipeline
from actors.backends.ray.tango import TangoDevice, start_tango_actor
from actors.config import parse_config
from actors.sim.simulator import Simulator, SimulatorSettings
from tests.conftest import SenderThread
from tests.helpers import wait_until
from tests.reference.moench_sequential import run_moench_reference
from tests.tango_helpers import Events, Subscriptions, client_executor_on_this_loop, read

pytestmark = [pytest.mark.tango, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.timeout(300, method="thread")]

MOENCH = {"type": "moench", "pedestal_epoch": 20, "pedestal_lag": 1, "pedestal_frames": 50,
          "threshold": 40.0, "counting_sigma": 4.0}
SCENE = {"rows": 48, "cols": 64, "photons": 6.0, "pump_photons": 6.0, "spot": (24.0, 32.0, 6.0)}
IMAGES = ("analog_img", "analog_img_pumped", "threshold_img", "threshold_img_pumped",
          "counting_img", "counting_img_pumped")  # the Sardana controller's axes 0-5


@dataclass
class Rig:
    sim: Simulator
    pipe: RayPipeline
    device: TangoDevice

    def send(self, start: Callable[..., SenderThread], frames: int, rate: float,
             end_of_series: bool) -> SenderThread:
        self.sim.settings = replace(self.sim.settings, frames=frames, rate=rate,
                                    end_of_series=end_of_series)
        return start(self.sim.run)

    def end_series(self) -> None:
        """Send just the sls end-of-acquisition header (the next series restarts at 0)."""
        self.sim.settings = replace(self.sim.settings, frames=0, end_of_series=True)
        self.sim.run()

    def results(self) -> dict[str, Any]:
        snap = ray.get(self.pipe.results_actor.snapshot.remote(), timeout=30)
        assert not snap["running"]
        return snap["outputs"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    ray.init(address="local", num_cpus=2, object_store_memory=200_000_000,
             include_dashboard=False, namespace="rayline-tango-tests", log_to_driver=False)
    sim = Simulator(SimulatorSettings(frames=1, lossless=True, seed=7, scene=SCENE))
    try:
        sim.bind()
        config = parse_config({
            "source": {"endpoint": sim.endpoint, "geometry": {"rows": 48, "cols": 64}},
            "reducers": [MOENCH], "workers": 2, "max_inflight": 4,
            "batch": {"max_frames": 8, "max_delay": 1.0}, "ray": {"worker_cpus": 0.5},
            "output": {"enabled": True, "directory": str(tmp_path_factory.mktemp("files"))},
            "live_period": 0.25})
        with RayPipeline(config) as pipe:
            sim.wait_for_subscribers()  # the pipeline's SUB has joined, once
            sim.settings = replace(sim.settings, wait_subscribers=0)
            device = start_tango_actor(config, pipe.names)
            try:
                yield Rig(sim, pipe, device)
            finally:
                device.stop()
    finally:
        sim.close()
        ray.shutdown()


@pytest.fixture
def dev(rig: Rig) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(rig.device.address)
    proxy.set_timeout_millis(60_000)
    wait_until(lambda: proxy.state() == tango.DevState.ON, 30, "the device ON")
    yield proxy
    if proxy.state() == tango.DevState.RUNNING:
        proxy.abort_receiver()


def configure(dev: tango.DeviceProxy, **values: Any) -> None:
    for name, value in values.items():
        dev.write_attribute(name, value)


def assert_images_equal(got: dict[str, Any], want: dict[str, Any], rtol: float = 0.0) -> None:
    for name, value in want.items():
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(value), rtol=rtol,
                                   atol=1e-9 if rtol else 0, err_msg=name)


def test_live_events_while_acquiring_and_final_results(
        rig: Rig, dev: tango.DeviceProxy, sender_threads: Callable[..., SenderThread]) -> None:
    n = 200
    dev.reset_pedestal()
    configure(dev, process_pedestal_img=False, split_pump=True, normalize=False,
              threshold=40.0, counting_sigma=4.0, process_analog_img=True,
              process_threshold_img=True, process_counting_img=True)
    images, counting, processed, received = Events(), Events(), Events(), Events()
    with Subscriptions(dev) as subs:
        subs.add("analog_img", images)
        subs.add("counting_img", counting)
        subs.add("processed_frames", processed)
        subs.add("received_frames", received)
        first = len(images.events)
        dev.start_receiver()
        sender = rig.send(sender_threads, n, rate=80.0, end_of_series=False)

        def live_images() -> list[Any]:
            return [v for v in images.values()[first:] if v is not None and np.any(v)]

        images.wait_for(lambda: len(live_images()) >= 2, 60, "two live image events")
        assert dev.state() == tango.DevState.RUNNING  # live events come while it runs
        assert 0 < read(dev, "processed_frames") <= n
        sender.join(timeout=60)
        wait_until(lambda: read(dev, "received_frames") == n, 30,
                   lambda: f"all frames received: {dev.status()}")
        dev.stop_receiver()
        rig.end_series()  # the detector's dummy header, after the fact
        assert dev.state() == tango.DevState.ON
        final = {name: read(dev, name) for name in (*IMAGES, "pedestal", "pedestal_std")}
        images.wait_for(lambda: np.array_equal(images.values()[-1], final["analog_img"]), 10,
                        "the final image event")
        counting.wait_for(lambda: np.array_equal(counting.values()[-1], final["counting_img"]),
                          10, "the final counting event")
        processed.wait_for(lambda: processed.values()[-1] == n, 10, "processed_frames = n")
        assert received.values()[-1] == n
        assert len(set(processed.values())) >= 3  # the counter moved live
    assert (read(dev, "pumped_frames"), read(dev, "unpumped_frames")) == (n // 2, n // 2)
    results = rig.results()
    assert_images_equal(final, {k: results[k] for k in final})
    frames = np.stack([rig.sim.scene.frame(i) for i in range(n)])
    settings = {k: v for k, v in MOENCH.items() if k != "type"} | {"split_pump": True}
    reference = run_moench_reference(frames, np.arange(n), settings)
    assert_images_equal(final, {k: reference[k] for k in final}, rtol=1e-12)


class SardanaController:
    """The seed's MOENCHZMQTangoTwoDController (moench.md §5) against the device, with the
    simulator in the role of the detector control device."""

    def __init__(self, rig: Rig, dev: tango.DeviceProxy,
                 start: Callable[..., SenderThread]) -> None:
        self.rig, self.dev, self.start = rig, dev, start
        self.detector: SenderThread | None = None

    def start_all(self, frames: int) -> None:
        self.dev.start_receiver()
        self.detector = self.rig.send(self.start, frames, rate=0.0, end_of_series=True)

    def state_one(self) -> Any:
        detector = self.detector
        assert detector is not None
        detector_on = not detector._thread.is_alive()
        zmq = self.dev.state()
        if detector_on and zmq == tango.DevState.ON:
            return tango.DevState.ON
        if not detector_on and zmq == tango.DevState.RUNNING:
            return tango.DevState.MOVING
        if detector_on and zmq == tango.DevState.RUNNING:
            time.sleep(0.1)  # "no last frame which did not come to moenchzmq"
            self.dev.stop_receiver()
            return tango.DevState.MOVING
        raise AssertionError(f"Not correct states: detector on={detector_on}, zmq {zmq}: "
                             f"{self.dev.status()}")

    def acquire(self, frames: int) -> dict[str, Any]:
        self.start_all(frames)
        wait_until(lambda: self.state_one() == tango.DevState.ON, 60,
                   lambda: f"the scan point: {self.dev.status()}")
        assert self.detector is not None
        self.detector.join(timeout=10)
        return {name: read(self.dev, name) for name in IMAGES}  # ReadOne, axes 0-5


def test_sardana_controller_sequence(rig: Rig, dev: tango.DeviceProxy,
                                     sender_threads: Callable[..., SenderThread]) -> None:
    """moench.md §5: a pedestal run, set the modes, then per scan point StartAll
    (start_receiver, start_acquire), StateOne until ON (stop_receiver when the detector is
    ON and the device RUNNING), ReadOne of the six images; one file index per point."""
    ctrl = SardanaController(rig, dev, sender_threads)
    dev.reset_pedestal()
    configure(dev, process_pedestal_img=True)
    ctrl.acquire(60)
    assert read(dev, "pedestal_frames") == 60
    configure(dev, process_pedestal_img=False, process_analog_img=True,
              process_threshold_img=True, process_counting_img=True, threshold=40.0,
              counting_sigma=4.0, split_pump=True, normalize=True)
    for point, frames in enumerate((40, 24, 16)):
        index = read(dev, "file_index")
        axes = ctrl.acquire(frames)
        assert_images_equal(axes, {k: v for k, v in rig.results().items() if k in IMAGES})
        assert read(dev, "processed_frames") == frames, point
        assert (read(dev, "unpumped_frames"), read(dev, "pumped_frames")) == \
            (frames // 2, frames // 2)
        assert (read(dev, "file_index"), read(dev, "previous_file_index")) == \
            (index + 1, index), point
        assert np.any(axes["analog_img_pumped"]) and np.any(axes["counting_img"])


# pytango's asyncio executor binds to the first loop it sees: every asyncio client test of
# the session shares one loop (a function-scoped loop would be closed for the next test)
@pytest.mark.asyncio(loop_scope="session")
async def test_asyncio_client(rig: Rig, sender_threads: Callable[..., SenderThread]) -> None:
    with client_executor_on_this_loop():
        dev = await tango.asyncio.DeviceProxy(rig.device.address)
        dev.set_timeout_millis(60_000)
        sync_dev = tango.DeviceProxy(rig.device.address)
        events: asyncio.Queue[Any] = asyncio.Queue()

        async def on_image(ev: Any) -> None:
            if not ev.err and ev.attr_value is not None and ev.attr_value.value is not None:
                events.put_nowait(ev.attr_value.value)

        eid = await dev.subscribe_event("counting_img", tango.EventType.CHANGE_EVENT, on_image)
        try:
            await dev.write_attribute("normalize", False)
            await dev.start_receiver()
            sender = rig.send(sender_threads, 32, rate=0.0, end_of_series=True)
            await asyncio.to_thread(sender.join, 60)
            await asyncio.to_thread(wait_until, lambda: read(sync_dev, "received_frames") == 32,
                                    30, "32 frames received")
            await dev.stop_receiver()
            final = (await dev.read_attribute("counting_img")).value
            async with asyncio.timeout(10):
                while not np.array_equal(await events.get(), final):
                    pass
            assert await dev.state() == tango.DevState.ON
            assert (await dev.read_attribute("processed_frames")).value == 32
        finally:
            await dev.unsubscribe_event(eid)


def test_a_killed_device_actor_comes_back_at_the_same_address(
        rig: Rig, sender_threads: Callable[..., SenderThread]) -> None:
    """SIGKILL of the Tango device's actor: Ray restarts it, it serves the device again at
    the same address, and the device drives the (untouched) pipeline as before."""
    address = rig.device.address
    pid = ray.get(rig.device.actor.alive.remote())  # reachable
    assert pid
    ray.kill(rig.device.actor, no_restart=False)
    proxy = tango.DeviceProxy(address)
    proxy.set_timeout_millis(5_000)

    def answers() -> bool:
        try:
            return bool(proxy.state() == tango.DevState.ON)
        except tango.DevFailed:
            return False

    wait_until(answers, 60, "the device back at its address")

    def restarted_actor_answers() -> bool:
        try:
            return bool(ray.get(rig.device.actor.start.remote(), timeout=30) == address)
        except ray.exceptions.ActorUnavailableError:  # a call made while it restarted
            return False

    wait_until(restarted_actor_answers, 30, "the restarted actor")
    proxy.set_timeout_millis(60_000)
    proxy.start_receiver()
    rig.send(sender_threads, 16, rate=0.0, end_of_series=True).join(timeout=60)
    wait_until(lambda: read(proxy, "received_frames") == 16, 30, lambda: proxy.status())
    proxy.stop_receiver()
    assert read(proxy, "processed_frames") == 16 and proxy.state() == tango.DevState.ON
