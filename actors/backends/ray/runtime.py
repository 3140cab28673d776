"""Starting a local Ray or joining an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.config import RayConfig

logger = logging.getLogger(__name__)


#: Options of every rayline actor: Ray restarts it when its process dies (it resumes from its
#: own state or a checkpoint), never replays a call into it, and records no task events:
#: each call would otherwise leave an event in the GCS (its memory grew ~460 MB/h in a soak
#: at 850 frames/s) for a dashboard task list rayline does not use.
ACTOR_OPTIONS: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0,
                                 "enable_task_events": False}


@dataclass(frozen=True)
class StageNames:
    """The Ray names of one pipeline's actors. An actor finds its peers by name, not by
    handles in its constructor arguments: Ray keeps such arguments in the object store and
    cannot promise they are still there when it restarts the actor (it says so in an error
    line at creation: ray-project/ray#53727); a name outlives any restart."""

    prefix: str
    workers: int

    @classmethod
    def new(cls, workers: int) -> StageNames:
        return cls(f"rayline-{uuid.uuid4().hex[:12]}", workers)

    @property
    def results(self) -> str:
        return f"{self.prefix}-results"

    @property
    def ingest(self) -> str:
        return f"{self.prefix}-ingest"

    def module_ingest(self, source: str) -> str:
        """The ingest of a multi-module detector's other modules (the first is ``ingest``)."""
        return f"{self.prefix}-ingest-{source}"

    def worker(self, index: int) -> str:
        return f"{self.prefix}-worker-{index}"

    @staticmethod
    def lookup(name: str) -> Any:
        """The handle of the named actor (in this job's namespace)."""
        import ray

        return ray.get_actor(name)


def ensure_ray(cfg: RayConfig, need_cpus: float = 0.0) -> bool:
    """Initialise Ray for this process; returns True if this call started it. A local Ray
    without ``num_cpus`` configured gets at least ``need_cpus`` logical CPUs (the workers
    then share the cores, which the log says)."""
    import ray

    if ray.is_initialized():
        return False
    # Ray's own INFO/WARNING lines at start (its token-authentication notice, "Started a
    # local Ray instance") only when rayline logs at DEBUG
    quiet = not logging.getLogger("actors").isEnabledFor(logging.DEBUG)
    kwargs: dict[str, Any] = {"namespace": cfg.namespace, "include_dashboard": False,
                              "log_to_driver": True,
                              "logging_level": logging.ERROR if quiet else logging.INFO}
    if cfg.address:
        check_reachable(cfg.address)
        kwargs["address"] = cfg.address
        logger.info("joining the Ray cluster at %s", cfg.address)
    else:
        if cfg.object_store_memory:
            kwargs["object_store_memory"] = cfg.object_store_memory
        cores = os.cpu_count() or 1
        kwargs["num_cpus"] = cfg.num_cpus or max(cores, math.ceil(need_cpus))
        if not cfg.num_cpus and need_cpus > cores:
            logger.warning("the processing actors need %g CPUs and this machine has %d cores: "
                           "the local Ray gets %d logical CPUs, so the actors share the cores "
                           "(fewer workers, or ray.worker_cpus below 1, say so explicitly)",
                           need_cpus, cores, kwargs["num_cpus"])
        logger.info("starting a local Ray (%s CPUs, object store %s bytes)",
                    kwargs["num_cpus"], cfg.object_store_memory or "default")
    ray.init(**kwargs)
    if not cfg.address:
        _private_token()
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConnectionError at once when nothing listens at a ``host:port`` cluster address
    (Ray itself retries for minutes); ``auto`` and ``ray://`` addresses are Ray's to find."""
    host, sep, port = address.rpartition(":")
    if not sep or address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster at {address} ({exc.strerror or exc}): start "
                              "one with 'ray start --head', or set ray.address") from None


def _private_token(path: Path = Path("~/.ray/auth_token")) -> None:
    """Ray writes its cluster token readable by every local user: make it the owner's."""
    token = path.expanduser()
    try:
        if token.is_file() and token.stat().st_uid == os.getuid() and \
                token.stat().st_mode & 0o077:
            token.chmod(0o600)
            logger.info("made %s private (mode 600)", token)
    except OSError as exc:  # not ours to change: say so, go on
        logger.warning("could not make %s private: %s", token, exc)


def store_budget(node_id: str, fraction: float = 0.5) -> int | None:
    """Bytes of batches the ingest may hold in the object store of node ``node_id``: a
    fraction of that store (the rest takes the partials, states and setups), or None when
    Ray does not report its size."""
    import ray

    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("Alive", True):
            size = node.get("Resources", {}).get("object_store_memory")
            if size:
                return int(size * fraction)
    return None


@contextlib.contextmanager
def local_ray(num_cpus: int, object_store_memory: int) -> Iterator[None]:
    """A local Ray for the duration of the block (benchmarks)."""
    import ray

    ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory,
             include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def store_spilled() -> bool:
    """Whether the local raylet has spilled objects to disk (its log says so)."""
    import ray

    try:
        session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # the private API moved: report unknown as not spilled
        return False
    log = session / "logs" / "raylet.out"
    return log.is_file() and "Spilled" in log.read_text(errors="replace")


def restarted() -> bool:
    """Whether this actor runs again after its process died (Ray's own check reads a
    property it deprecated itself; its warning is noise here)."""
    import ray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def node_strategy(address: str | None) -> Any:
    """Run on the Ray node with this IP address (None: no constraint); ValueError names the
    nodes there are when none has it."""
    if address is None:
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]
    for node in alive:
        if node.get("NodeManagerAddress") == address:
            return NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    raise ValueError(f"no Ray node at {address}: the cluster's nodes are "
                     f"{', '.join(sorted(n.get('NodeManagerAddress', '?') for n in alive))}")
