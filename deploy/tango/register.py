"""Register the Rayline device server and its device in a Tango database.

    TANGO_HOST=dbhost:10000 python deploy/tango/register.py INSTANCE \\
        --device rayline/pipeline/1 --config /etc/rayline/moench.yaml \\
        [--property NAME=VALUE ...] [--attribute-property ATTR.PROP=VALUE ...]

registers server ``Rayline/INSTANCE`` (admin device ``dserver/Rayline/INSTANCE``) with one
device of class ``Rayline``, and stores the device properties (``config_file`` for
``--config``). Then start it by instance name:
``TANGO_HOST=... python -m actors.app.tango_server INSTANCE --database``. Registering again
updates the properties; ``--remove`` deletes the server and its devices.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SERVER = "Rayline"
DEVICE_CLASS = "Rayline"


def register(db: Any, instance: str, device: str,
             properties: Mapping[str, Any] | None = None,
             attribute_properties: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Register ``Rayline/<instance>`` with ``device`` in ``db`` (a ``tango.Database``);
    returns the server name. Property values may be scalars or lists."""
    import tango

    server = f"{SERVER}/{instance}"
    info = tango.DbDevInfo()
    info.name = device
    info._class = DEVICE_CLASS
    info.server = server
    db.add_server(server, info, with_dserver=True)
    if properties:
        db.put_device_property(device, {k: _strings(v) for k, v in properties.items()})
    if attribute_properties:
        db.put_device_attribute_property(device, {
            attr: {k: _strings(v) for k, v in props.items()}
            for attr, props in attribute_properties.items()})
    return server


def unregister(db: Any, instance: str) -> None:
    """Delete ``Rayline/<instance>`` and its devices (memorized values included)."""
    db.delete_server(f"{SERVER}/{instance}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Register the Rayline device server in the Tango "
                                "database at TANGO_HOST.")
    p.add_argument("instance", help="server instance, e.g. moench (server Rayline/moench)")
    p.add_argument("--device", default="rayline/pipeline/1", help="device name")
    p.add_argument("--config", help="pipeline configuration file (property config_file)")
    p.add_argument("--property", action="append", default=[], metavar="NAME=VALUE",
                   help="extra device property")
    p.add_argument("--attribute-property", action="append", default=[],
                   metavar="ATTR.PROP=VALUE",
                   help="attribute configuration, e.g. analog_img.label=Analog")
    p.add_argument("--remove", action="store_true", help="delete the server instead")
    args = p.parse_args(argv)

    import tango

    db = tango.Database()
    if args.remove:
        unregister(db, args.instance)
        sys.stdout.write(f"removed {SERVER}/{args.instance}\n")
        return 0
    props: dict[str, Any] = _pairs(args.property, "--property")
    if args.config:
        props["config_file"] = str(Path(args.config).resolve())
    attr_props: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(args.attribute_property, "--attribute-property").items():
        attr, dot, prop = key.partition(".")
        if not dot:
            raise SystemExit(f"--attribute-property {key!r}: expected ATTR.PROP=VALUE")
        attr_props.setdefault(attr, {})[prop] = value
    server = register(db, args.instance, args.device, props, attr_props)
    sys.stdout.write(f"registered {server} with device {args.device} in {db.get_db_host()}:"
                     f"{db.get_db_port()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
