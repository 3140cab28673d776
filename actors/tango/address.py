"""Server command lines and device addresses (no Tango import)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from actors.config import TangoConfig

SERVER_NAME = "Rayline"  # the executable name Tango sees: admin device dserver/Rayline/<inst>


@dataclass(frozen=True)
class ServerArgs:
    """The ``tango.server.run`` arguments and the addresses clients use."""

    args: list[str]
    device: str  # full device address (TRL)
    admin: str  # full address of the admin device (Kill, RestartServer)


def server_args(cfg: TangoConfig, instance: str | None = None) -> ServerArgs:
    """``-nodb`` on ``host:port`` (a free port when 0), or the database at TANGO_HOST.

    With the database, the server listens on every interface unless ``host`` or ``port`` is
    set explicitly in the configuration.
    """
    inst = instance or cfg.instance
    args = [SERVER_NAME, inst]
    if cfg.database:
        explicit_host = "host" in cfg.model_fields_set
        if explicit_host or cfg.port:
            args += ["-ORBendPoint",
                     f"giop:tcp:{cfg.host if explicit_host else ''}:{cfg.port or ''}"]
        tango_host = os.environ.get("TANGO_HOST", "")
        prefix = f"tango://{tango_host}/" if tango_host else ""
        return ServerArgs(args, f"{prefix}{cfg.device}",
                          f"{prefix}dserver/{SERVER_NAME}/{inst}")
    port = cfg.port or free_port(cfg.host)
    args += ["-nodb", "-ORBendPoint", f"giop:tcp:{cfg.host}:{port}", "-dlist", cfg.device]
    host = advertised_host(cfg.host)
    return ServerArgs(args, f"tango://{host}:{port}/{cfg.device}#dbase=no",
                      f"tango://{host}:{port}/dserver/{SERVER_NAME}/{inst}#dbase=no")


def free_port(host: str) -> int:
    """A TCP port the OS considers free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def advertised_host(host: str) -> str:
    """The host name clients use for a server bound to ``host``."""
    return socket.getfqdn() if host in ("", "0.0.0.0") else host
