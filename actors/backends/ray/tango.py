"""The Tango device as a Ray actor (Ray backend): its own process, server in a thread.

``start_tango_actor(config, names)`` starts it on the driver's node next to the
results actor and returns a :class:`TangoDevice` handle with the device's full address;
``handle.stop()`` kills the server through its admin device and then the actor. The device
drives the stage actors through the same typed client as the driver
(:class:`~actors.backends.ray.client.ClientPipeline`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.backends.ray.client import ClientPipeline
from actors.backends.ray.runtime import ACTOR_OPTIONS, StageNames, restarted
from actors.config import PipelineConfig
from actors.tango.address import free_port
from actors.tango.host import START_TIMEOUT, STOP_TIMEOUT, ServerThread

logger = logging.getLogger(__name__)


class TangoHost:
    """Actor body: a :class:`ServerThread` over the control of the given actors, serving
    from construction, so a restarted actor (its process died) serves the device again,
    at the same address (the port is fixed before the first start)."""

    def __init__(self, config: PipelineConfig, names: StageNames) -> None:
        _quiet_stdout()  # cppTango prints "Ready to accept request" there; Ray forwards it
        client = ClientPipeline(config, names.lookup(names.ingest), names.lookup(names.results))
        self.server = ServerThread(config, client.control())
        self.server.start(START_TIMEOUT)
        if restarted():
            logger.warning("the Tango device actor was restarted: %s", self.server.address)

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """The device's full address (it serves already)."""
        address = self.server.address
        assert address is not None
        return address

    def address(self) -> str | None:
        return self.server.address

    def alive(self) -> bool:
        return self.server.alive

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.server.stop(timeout)


def _quiet_stdout() -> None:
    """This actor's process writes nothing to stdout (its logs go to stderr): point it at
    /dev/null, so the C++ server's banner does not reach the driver's console."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
    finally:
        os.close(devnull)


TangoActor: Any = ray.remote(num_cpus=0, **ACTOR_OPTIONS)(TangoHost)


@dataclass
class TangoDevice:
    """Driver-side handle of the device actor."""

    actor: Any
    address: str

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        try:
            ray.get(self.actor.stop.remote(timeout), timeout=timeout + 5)
        except Exception:  # the actor is killed below in any case
            logger.exception("the Tango device did not stop cleanly")
        finally:
            ray.kill(self.actor, no_restart=True)


def start_tango_actor(config: PipelineConfig, names: StageNames,
                      timeout: float = START_TIMEOUT) -> TangoDevice:
    """Start the device for the pipeline's (named) ingest and results actors; returns once it
    is exported (the address is also logged)."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    options: dict[str, Any] = {"scheduling_strategy": here}
    if not config.tango.database and not config.tango.port:  # a restart keeps the address
        tango = config.tango.model_copy(update={"port": free_port(config.tango.host)})
        config = config.model_copy(update={"tango": tango})
    if config.tango.database and os.environ.get("TANGO_HOST"):  # the driver's database
        options["runtime_env"] = {"env_vars": {"TANGO_HOST": os.environ["TANGO_HOST"]}}
    actor = TangoActor.options(**options).remote(config, names)
    try:
        address: str = ray.get(actor.start.remote(timeout), timeout=timeout + 30)
    except BaseException:
        ray.kill(actor, no_restart=True)
        raise
    logger.info("Tango device at %s", address)
    return TangoDevice(actor, address)
