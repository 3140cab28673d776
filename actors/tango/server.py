"""Run the ``Rayline`` device server for a :class:`~actors.core.api.Control`, blocking the
calling thread (:func:`run_server`). The hosts are :mod:`actors.tango.host` (a thread or a
child process) and the standalone server :mod:`actors.app.tango_server`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from actors.config import PipelineConfig
from actors.core.api import Control
from actors.tango.address import ServerArgs, server_args
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
                cleanup=True, post_init_callback=ready,
                msg_stream=None)  # no "Ready to accept request" on stdout: ready() logs
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
