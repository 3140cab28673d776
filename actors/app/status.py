"""``rayline status``: the state, counters and rates of running pipelines, read from their
Tango device or from the stage actors of a Ray cluster (nothing is changed)."""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: the counters a device publishes, in the order they are shown
DEVICE_COUNTERS = ("acquisition", "received_frames", "processed_frames", "dropped_frames",
                   "lost_frames", "frame_rate", "processing_rate")


def device_status(address: str, timeout: float = 10.0) -> dict[str, Any]:
    """State, Status text and counters of a Rayline device (a full ``tango://`` address, or
    a device name looked up in ``TANGO_HOST``'s database)."""
    import tango

    proxy = tango.DeviceProxy(address)
    proxy.set_timeout_millis(int(timeout * 1000))
    out: dict[str, Any] = {"device": address, "state": str(proxy.state()),
                           "status": proxy.status()}
    for reply in proxy.read_attributes(list(DEVICE_COUNTERS)):
        out[reply.name] = reply.value
    out["timings"] = json.loads(proxy.read_attribute("timings").value)
    return out


def cluster_status(address: str, namespace: str, timeout: float = 10.0
                   ) -> list[dict[str, Any]]:
    """Every rayline pipeline of a Ray cluster (:mod:`actors.backends.ray.status`)."""
    from actors.backends.ray.status import cluster_status as read

    return read(address, namespace, timeout)


def describe(status: dict[str, Any]) -> str:
    """One line for a pipeline's status (either source)."""
    if "device" in status:
        counts = ", ".join(f"{k.removesuffix('_frames')} {status[k]:g}"
                           if isinstance(status[k], float) else
                           f"{k.removesuffix('_frames')} {status[k]}"
                           for k in DEVICE_COUNTERS)
        return f"{status['device']}: {status['state']}: {counts}"
    return (f"{status['pipeline']}: {status['state']}, acquisition {status['acquisition']}: "
            f"received {status['received']}, processed {status['processed']}, dropped "
            f"{status['dropped']}, lost {status['lost']}, {status['frame_rate']:.0f} frames/s"
            + (f", fault: {status['fault']}" if status.get("fault") else ""))
