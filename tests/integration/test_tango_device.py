"""The Rayline device in a spawned server process over a fake pipeline (no Ray): interface,
bad writes, state machine, stop timeout and abort, Init, events, the asyncio client."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tango
import tango.asyncio

from actors.config import parse_config
from actors.tango.host import ServerProcess
from tests.helpers import wait_until
from tests.tango_helpers import (
    SMALL,
    Events,
    Subscriptions,
    base_config,
    client_executor_on_this_loop,
    fake_control,
    read,
    slow_stop_control,
    stuck_close_control,
)

pytestmark = [pytest.mark.tango, pytest.mark.slow, pytest.mark.timeout(180, method="thread")]

SEED_IMAGES = ("analog_img", "analog_img_pumped", "threshold_img", "threshold_img_pumped",
               "counting_img", "counting_img_pumped", "pedestal", "pedestal_std")
SEED_PARAMETERS = ("threshold", "counting_sigma", "processing_pattern", "split_pump",
                   "normalize", "process_pedestal_img", "update_pedestal_img",
                   "process_analog_img", "process_threshold_img", "process_counting_img")
SEED_OTHER = ("pumped_frames", "unpumped_frames", "pedestal_frames", "filename", "filepath",
              "file_index", "previous_file_index", "received_frames", "processed_frames")
SEED_COMMANDS = ("start_receiver", "stop_receiver", "abort_receiver", "reset_pedestal",
                 "update_images_events")


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("files")
    config = parse_config(base_config(output={"enabled": False, "directory": str(out)}))
    server = ServerProcess(config, fake_control)
    try:
        yield server.start(timeout=60)
    finally:
        assert server.stop(timeout=10) == 0


@pytest.fixture
def dev(address: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(address)
    proxy.set_timeout_millis(10_000)
    wait_until(lambda: proxy.state() != tango.DevState.INIT, 10, "the first status")
    if proxy.state() == tango.DevState.RUNNING:
        proxy.abort_receiver()
    yield proxy
    if proxy.state() == tango.DevState.RUNNING:
        proxy.abort_receiver()


def test_interface_is_the_seed_servers(dev: tango.DeviceProxy) -> None:
    attrs = set(dev.get_attribute_list())
    assert set(SEED_IMAGES + SEED_PARAMETERS + SEED_OTHER) <= attrs
    assert set(SEED_COMMANDS) | {"Start", "Stop", "Abort", "Init"} <= set(dev.get_command_list())
    img = dev.get_attribute_config("analog_img")
    assert img.data_format == tango.AttrDataFormat.IMAGE
    assert img.data_type == tango.CmdArgType.DevDouble
    assert (img.max_dim_x, img.max_dim_y) == (SMALL["cols"], SMALL["rows"])
    thr = dev.get_attribute_config("threshold")
    assert thr.writable == tango.AttrWriteType.READ_WRITE and float(thr.min_value) == 0
    assert thr.unit == "ADU"
    assert dev.get_attribute_config("processing_pattern").data_type == tango.CmdArgType.DevString
    assert dev.get_attribute_config("split_pump").data_type == tango.CmdArgType.DevBoolean
    series = dev.get_attribute_config("frame_photons")
    assert series.data_format == tango.AttrDataFormat.SPECTRUM and series.max_dim_x == 1000
    assert dev.get_attribute_config("frame_rate").unit == "Hz"
    for name in ("threshold", "counting_sigma", "processing_pattern", "split_pump",
                 "filename", "filepath"):
        memorized = dev.get_attribute_config(name).memorized
        assert memorized == tango.AttrMemorizedType.MEMORIZED_WRITE_INIT, name


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("threshold", -1.0, "minimum"),
    ("counting_sigma", -0.5, "minimum"),
    ("processing_pattern", "up, maybe", "expected one of ped, pedestal, up"),
    ("processing_pattern", "", "empty pattern"),
    ("filename", "a/b", "without a path separator"),
    ("filepath", "/proc/1/", "outside the allowed directories"),
])
def test_bad_writes_are_refused_saying_what_is_allowed(dev: tango.DeviceProxy, name: str,
                                                       value: Any, allowed: str) -> None:
    before = read(dev, name)
    with pytest.raises(tango.DevFailed) as err:
        dev.write_attribute(name, value)
    assert allowed in err.value.args[0].desc, err.value.args[0].desc
    assert read(dev, name) == before
    dev.write_attribute(name, before)  # a valid write still works


def test_file_settings_need_a_stopped_acquisition(dev: tango.DeviceProxy) -> None:
    dev.write_attribute("filename", "scan")
    dev.write_attribute("file_index", 7)
    assert (read(dev, "filename"), read(dev, "file_index"), read(dev, "previous_file_index")) \
        == ("scan", 7, 6)
    dev.start_receiver()
    for name, value in (("filename", "other"), ("filepath", "/tmp"), ("file_index", 9)):
        with pytest.raises(tango.DevFailed) as err:
            dev.write_attribute(name, value)
        assert "only while no acquisition runs" in err.value.args[0].desc
    dev.write_attribute("threshold", 55.0)  # a runtime parameter may change while running
    with pytest.raises(tango.DevFailed, match="is running"):
        dev.start_receiver()
    dev.stop_receiver()
    # no file was written (output off): the index stays, previous_file_index names no
    # acquisition's missing file
    assert (read(dev, "file_index"), read(dev, "previous_file_index")) == (7, 6)


def test_acquisition_publishes_live_and_final_events(dev: tango.DeviceProxy) -> None:
    images, counters, states, ready, archive = Events(), Events(), Events(), Events(), Events()
    with Subscriptions(dev) as subs:
        subs.add("analog_img", images)
        subs.add("processed_frames", counters)
        subs.add("State", states)
        subs.add("analog_img", ready, tango.EventType.DATA_READY_EVENT)
        subs.add("received_frames", archive, tango.EventType.ARCHIVE_EVENT)
        n_images, n_counters = len(images.events), len(counters.events)
        dev.start_receiver()
        assert dev.state() == tango.DevState.RUNNING
        images.wait_for(lambda: sum(bool(np.any(v)) for v in images.values()[n_images:]) >= 2,
                        15, "two live image events")
        counters.wait_for(lambda: len(set(counters.values()[n_counters:])) >= 3, 15,
                          "processed_frames events")
        ready.wait_for(lambda: len(ready.events) >= 2, 10, "data ready events")
        assert dev.state() == tango.DevState.RUNNING  # the events came while running
        dev.stop_receiver()
        final = read(dev, "processed_frames")
        images.wait_for(lambda: images.values()[-1][0, 0] == final, 10, "the final image")
        states.wait_for(lambda: states.values()[-1] == tango.DevState.ON, 10, "State ON")
        assert ready.events[-1][1].ctr > ready.events[0][1].ctr
        assert archive.values()[-1] == read(dev, "received_frames")
    np.testing.assert_array_equal(read(dev, "analog_img"), np.full((48, 64), float(final)))
    assert read(dev, "pumped_frames") == final
    assert "Idle" in dev.status() and f"{final} processed" in dev.status()


def test_update_images_events_pushes_now(dev: tango.DeviceProxy) -> None:
    images = Events()
    with Subscriptions(dev) as subs:
        subs.add("counting_img", images)
        n = len(images.events)  # the subscription's own first event
        dev.update_images_events()
        images.wait_for(lambda: len(images.events) > n, 5, "a pushed image")


def test_init_is_safe_at_any_time(dev: tango.DeviceProxy, tmp_path: Any) -> None:
    dev.Init()
    wait_until(lambda: dev.state() == tango.DevState.ON, 10, "ON after Init")
    dev.write_attribute("filepath", f"{tmp_path}/")  # Init re-applies memorized values
    dev.write_attribute("threshold", 61.0)
    dev.start_receiver()
    dev.Init()
    assert read(dev, "threshold") == 61.0
    wait_until(lambda: dev.state() == tango.DevState.RUNNING, 10, "RUNNING after Init")
    wait_until(lambda: read(dev, "processed_frames") > 0, 10, "counters after Init")
    dev.stop_receiver()
    assert dev.state() == tango.DevState.ON
    dev.Init()
    wait_until(lambda: dev.state() == tango.DevState.ON, 10, "ON after Init")


def test_stop_times_out_readably_and_abort_always_returns(tmp_path: Any) -> None:
    config = parse_config(base_config(output={"enabled": False, "directory": str(tmp_path)},
                                      tango={"device": "rayline/slow/1"}))
    server = ServerProcess(config, slow_stop_control)
    dev = tango.DeviceProxy(server.start(timeout=60))
    try:
        dev.set_timeout_millis(10_000)
        dev.write_attribute("stop_timeout", 0.5)
        dev.start_receiver()
        with pytest.raises(tango.DevFailed) as err:
            dev.stop_receiver()
        assert err.value.args[0].reason == "Rayline_StopTimeout"
        assert "abort_receiver" in err.value.args[0].desc
        assert dev.state() == tango.DevState.FAULT and "timed out" in dev.status()
        dev.abort_receiver()
        wait_until(lambda: dev.state() == tango.DevState.ON, 10, "ON after abort")
        # abort interrupts a stop that is still waiting
        dev.write_attribute("stop_timeout", 30.0)
        dev.start_receiver()
        t0 = time.monotonic()
        pending = dev.command_inout_asynch("stop_receiver")
        wait_until(lambda: "stopping" in dev.status(), 5, dev.status)
        with pytest.raises(tango.DevFailed, match="stop_receiver is in progress"):
            dev.start_receiver()
        joined = dev.command_inout_asynch("stop_receiver")  # a retry joins the stop
        dev.abort_receiver()
        dev.command_inout_reply(pending, 10_000)
        dev.command_inout_reply(joined, 10_000)
        assert time.monotonic() - t0 < 4.0  # well before the fake's 5 s stop
        wait_until(lambda: dev.state() == tango.DevState.ON, 10, "ON after abort")
    finally:
        assert server.stop(timeout=10) == 0



# pytango's asyncio executor binds to the first loop it sees: every asyncio client test of
# the session shares one loop (a function-scoped loop would be closed for the next test)
@pytest.mark.asyncio(loop_scope="session")
async def test_asyncio_client(address: str) -> None:
    with client_executor_on_this_loop():
        dev = await tango.asyncio.DeviceProxy(address)
        received: asyncio.Queue[Any] = asyncio.Queue()

        async def on_event(ev: Any) -> None:
            if not ev.err and ev.attr_value is not None:
                received.put_nowait(ev.attr_value.value)

        eid = await dev.subscribe_event("processed_frames", tango.EventType.CHANGE_EVENT, on_event)
        try:
            if await dev.state() == tango.DevState.RUNNING:
                await dev.abort_receiver()
            await dev.start_receiver()
            async with asyncio.timeout(15):
                while (await received.get()) < 30:
                    pass
            await dev.stop_receiver()
            value = (await dev.read_attribute("analog_img")).value
            assert value.shape == (48, 64) and value[0, 0] == (await dev.processed_frames)
            assert await dev.state() == tango.DevState.ON
        finally:
            await dev.unsubscribe_event(eid)


def test_a_server_stuck_in_its_shutdown_shows_where_then_is_killed(
        capfd: pytest.CaptureFixture[str]) -> None:
    server = ServerProcess(parse_config(base_config(output={"enabled": False})),
                           stuck_close_control)
    server.start(timeout=60)
    assert server.stop(timeout=2) == -signal.SIGKILL
    err = capfd.readouterr().err
    assert "most recent call first" in err and "in close" in err, err[-3000:]
