"""The standalone device server: ``rayline tango-server [INSTANCE] --config FILE`` (also
``python -m actors.app.tango_server``; ``deploy/tango/Rayline`` is its Starter wrapper).

It opens the configured pipeline and serves its device in the main thread until the server
is killed (admin device ``Kill``, SIGINT, SIGTERM), then closes the pipeline. Without a
database it prints the full device address; with ``tango.database: true`` (or
``--database``) it runs against TANGO_HOST, and without ``--config`` it reads the file name
from the device property ``config_file``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from actors.config import PipelineConfig, load_config
from actors.tango.address import SERVER_NAME
from actors.tango.server import run_server


def serve(config: PipelineConfig, instance: str | None = None,
          on_ready: Callable[[str], None] | None = None, verbosity: int = 0) -> None:
    """Open the pipeline, serve its device until the server is killed, close the pipeline."""
    from actors import Pipeline

    # this process serves the device: the pipeline must not start its own
    pipeline_config = config.model_copy(
        update={"tango": config.tango.model_copy(update={"enabled": False})})
    with Pipeline(pipeline_config) as pipeline:
        control = pipeline.control()
        try:
            run_server(config, control, instance=instance, on_ready=on_ready,
                       verbosity=verbosity)
        finally:
            control.close()


def config_file_property(instance: str) -> str | None:
    """The ``config_file`` property of the device registered for ``Rayline/<instance>``."""
    import tango

    db = tango.Database()
    devices = list(db.get_device_class_list(f"{SERVER_NAME}/{instance}"))
    names = [devices[i] for i in range(0, len(devices), 2) if devices[i + 1] != "DServer"]
    for name in names:
        value = db.get_device_property(name, "config_file")["config_file"]
        if value:
            return str(value[0])
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="rayline tango-server",
        description="Run the Rayline Tango device server with its pipeline.")
    p.add_argument("instance", nargs="?", help="server instance (default: tango.instance)")
    p.add_argument("--config", help="pipeline configuration (YAML or TOML); with a database "
                   "the default is the device property config_file")
    db = p.add_mutually_exclusive_group()
    db.add_argument("--database", action="store_true", default=None,
                    help="register with the Tango database at TANGO_HOST")
    db.add_argument("--nodb", dest="database", action="store_false",
                    help="no database: -nodb with a loopback endpoint")
    p.add_argument("--host", help="-nodb: listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="-nodb: port (default: a free one)")
    p.add_argument("--device", help="device name (default rayline/pipeline/1)")
    p.add_argument("-v", "--verbosity", type=int, default=0, help="Tango trace level 0-5")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from actors.config import ConfigError
    from actors.logs import setup_logging

    args = parse_args(argv)
    setup_logging(args.log_level)
    tango_overrides: dict[str, Any] = {k: v for k, v in (
        ("database", args.database), ("host", args.host), ("port", args.port),
        ("device", args.device), ("instance", args.instance)) if v is not None}
    try:
        path = args.config
        if path is None and args.database:
            path = config_file_property(args.instance or "rayline")
        config = load_config(path, {"tango": tango_overrides} if tango_overrides else None)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2

    def announce(address: str) -> None:
        sys.stdout.write(f"Rayline device ready: {address}\n")
        sys.stdout.flush()

    serve(config, args.instance, on_ready=announce, verbosity=args.verbosity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
