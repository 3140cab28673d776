"""Starting a local Ray or joining an existing cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from actors.config import RayConfig

logger = logging.getLogger(__name__)


def ensure_ray(cfg: RayConfig) -> bool:
    """Initialise Ray for this process; returns True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"namespace": cfg.namespace, "include_dashboard": False,
                              "log_to_driver": True}
    if cfg.address:
        kwargs["address"] = cfg.address
        logger.info("joining the Ray cluster at %s", cfg.address)
    else:
        if cfg.object_store_memory:
            kwargs["object_store_memory"] = cfg.object_store_memory
        kwargs["num_cpus"] = cfg.num_cpus or os.cpu_count() or 1
        logger.info("starting a local Ray (%s CPUs, object store %s bytes)",
                    kwargs["num_cpus"], cfg.object_store_memory or "default")
    ray.init(**kwargs)
    return True


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
