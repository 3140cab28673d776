"""A real Tango database without MySQL (pytango-db's PyDatabaseds on SQLite in a tmp dir):
register the server with deploy/tango/register.py, start it by instance name (the config
file comes from the device property), and memorized parameters survive a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import tango
import yaml

from actors.tango.address import free_port
from deploy.tango.register import register, unregister
from tests.helpers import wait_until
from tests.tango_helpers import ProcessOutput, read, stop_process

pytestmark = [pytest.mark.tango, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.timeout(300, method="thread")]

INSTANCE = "ci"
DEVICE = "test/rayline/db"


@pytest.fixture(scope="module")
def gcs_address() -> Iterator[str]:
    """A local Ray the device server processes join (as ``ray.address``)."""
    ray.init(address="local", num_cpus=2, object_store_memory=200_000_000,
             include_dashboard=False, namespace="rayline-tango-db-tests", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tango_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PyDatabaseds (``python -m databaseds.database``) on a free port, SQLite file."""
    env = {**os.environ, "PYTANGO_DATABASE_NAME":
           str(tmp_path_factory.mktemp("tangodb") / "tango.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "databaseds.database", "--host", "127.0.0.1", "--port", "0",
         "--print-host-port", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = ProcessOutput(proc, "databaseds")
    try:
        port = int(out.wait_for(r"Database DS listening on: .*port=(\d+)", 30).group(1))
        wait_until(lambda: _answers("127.0.0.1", port), 30, "the database to answer")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, 10)
        out.join()


def _answers(host: str, port: int) -> bool:
    try:
        tango.Database(host, port).get_info()
    except tango.DevFailed:
        return False
    return True


def start_server(tango_host: str) -> tuple[subprocess.Popen[str], ProcessOutput, str]:
    """``python -m actors.app.tango_server ci --database``, as Astor would start it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.app.tango_server", INSTANCE, "--database"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TANGO_HOST": tango_host})
    out = ProcessOutput(proc, "rayline")
    address = out.wait_for(r"Rayline device ready: (\S+)", 120).group(1)
    return proc, out, address


def kill_server(tango_host: str, proc: subprocess.Popen[str], out: ProcessOutput) -> None:
    admin = tango.DeviceProxy(f"tango://{tango_host}/dserver/Rayline/{INSTANCE}")
    admin.command_inout("Kill")
    try:
        proc.wait(60)  # the pipeline closes after the server
    finally:
        code = stop_process(proc, 10)
        out.join()
    assert code == 0, "\n".join(out.lines[-30:])


def test_registered_server_keeps_memorized_parameters(
        tango_host: str, gcs_address: str, tmp_path: Path) -> None:
    config = tmp_path / "rayline.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"endpoint": f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                   "geometry": {"rows": 48, "cols": 64}},
        "reducers": [{"type": "moench"}], "workers": 1, "max_inflight": 2,
        "ray": {"address": gcs_address, "worker_cpus": 0.25},
        "output": {"enabled": False, "directory": str(tmp_path / "data")},
        "tango": {"database": True, "host": "127.0.0.1", "device": DEVICE,
                  "instance": INSTANCE}}))
    host, port = tango_host.split(":")
    db = tango.Database(host, int(port))
    register(db, INSTANCE, DEVICE, {"config_file": str(config)},
             {"analog_img": {"label": "Analog image"}})
    try:
        proc, out, address = start_server(tango_host)
        try:
            assert address == f"tango://{tango_host}/{DEVICE}"
            dev = tango.DeviceProxy(address)
            wait_until(lambda: dev.state() == tango.DevState.ON, 60, dev.status)
            assert dev.get_attribute_config("analog_img").label == "Analog image"
            written: dict[str, Any] = {"threshold": 55.5, "counting_sigma": 3.25,
                                       "processing_pattern": "ped, up, p", "split_pump": True,
                                       "filename": "scan", "live_period": 0.3}
            for name, value in written.items():
                dev.write_attribute(name, value)
            stored = db.get_device_attribute_property(DEVICE, {"threshold": ["__value"]})
            assert stored["threshold"]["__value"] == ["55.5"]
        finally:
            kill_server(tango_host, proc, out)
        proc, out, address = start_server(tango_host)  # by instance name again
        try:
            dev = tango.DeviceProxy(address)
            wait_until(lambda: dev.state() == tango.DevState.ON, 60, dev.status)
            for name, value in written.items():
                assert read(dev, name) == value, name
        finally:
            kill_server(tango_host, proc, out)
    finally:
        unregister(db, INSTANCE)
