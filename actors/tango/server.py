"""Run the ``Rayline`` device server: blocking (:func:`run_server`) and standalone (``main``).

``python -m actors.tango.server [INSTANCE] --config FILE`` opens the configured pipeline
and serves its device until the server is killed (admin device ``Kill``, SIGINT, SIGTERM),
then closes the pipeline. Without a database it prints the full device address; with
``tango.database: true`` (or ``--database``) it runs against TANGO_HOST, and without
``--config`` it reads the file name from the device property ``config_file``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from actors.config import PipelineConfig, load_config
from actors.tango.address import SERVER_NAME, ServerArgs, server_args
from actors.tango.control import Control
from actors.tango.session import DEFAULT_SERIES_LENGTH, Session

logger = logging.getLogger(__name__)

#: attempts when a port picked as free is taken before the server binds it
BIND_ATTEMPTS = 3


def run_server(config: PipelineConfig, control: Control, *, instance: str | None = None,
               on_ready: Callable[[str], None] | None = None,
               series_length: int = DEFAULT_SERIES_LENGTH, verbosity: int = 0) -> None:
    """Serve the device for ``control`` in this thread until the server is killed.

    ``on_ready(address)`` is called once the device is exported, with its full address.
    The calling thread runs the device's event loop, so it must not run one already.
    """
    import tango
    from tango.server import run

    from actors.tango.device import build_device_class

    session = Session.create(config, control, series_length)
    device_class = build_device_class(session)
    for attempt in range(1, BIND_ATTEMPTS + 1):
        sa = server_args(config.tango, instance)
        args = sa.args + ([f"-v{verbosity}"] if verbosity else [])

        def ready(sa: ServerArgs = sa) -> None:
            logger.info("Tango device %s ready (admin %s)", sa.device, sa.admin)
            if on_ready is not None:
                on_ready(sa.device)

        try:
            run((device_class,), args=args, green_mode=tango.GreenMode.Asyncio, raises=True,
                cleanup=True, post_init_callback=ready)
            return
        except tango.DevFailed as exc:
            retry = (not config.tango.database and not config.tango.port
                     and attempt < BIND_ATTEMPTS and _is_bind_error(exc))
            if not retry:
                raise
            logger.warning("port taken before the server bound it; trying another")


def _is_bind_error(exc: Any) -> bool:
    text = " ".join(f"{e.reason} {e.desc}" for e in exc.args).lower()
    return "endpoint" in text or "bind" in text or "address already in use" in text


# -- standalone ------------------------------------------------------------------------------
def control_for(pipeline: Any, config: PipelineConfig) -> Control:
    """The Control of an open pipeline: the Ray actors directly, else the sync API."""
    if getattr(pipeline, "ingest", None) is not None and \
            getattr(pipeline, "results_actor", None) is not None:
        from actors.tango.ray_control import RayControl

        return RayControl(config, pipeline.ingest, pipeline.results_actor)
    from actors.tango.pipeline_control import PipelineControl

    return PipelineControl(pipeline, config)


def serve(config: PipelineConfig, instance: str | None = None,
          on_ready: Callable[[str], None] | None = None, verbosity: int = 0) -> None:
    """Open the pipeline, serve its device until the server is killed, close the pipeline."""
    from actors import Pipeline

    # this process serves the device: the pipeline must not start its own
    pipeline_config = config.model_copy(
        update={"tango": config.tango.model_copy(update={"enabled": False})})
    with Pipeline(pipeline_config) as pipeline:
        control = control_for(pipeline, config)
        try:
            run_server(config, control, instance=instance, on_ready=on_ready,
                       verbosity=verbosity)
        finally:
            close = getattr(control, "close", None)
            if close is not None:
                close()


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
        prog="python -m actors.tango.server",
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
