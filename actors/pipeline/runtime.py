"""Starting a local Ray or joining an existing cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from actors.config import RayConfig

logger = logging.getLogger(__name__)

#: Environment of the pipeline's actor processes. libzmq mallocs every incoming message and
#: the actors allocate batch-sized partials; above glibc's mmap threshold each allocation is
#: a fresh mmap whose pages fault in one by one (perf.md: ~140 minor faults per 9 MB frame,
#: 8193 per 32 MiB). Raising the threshold to its maximum (32 MiB) and keeping freed memory
#: (trim threshold 1 GiB) lets the heap reuse warm pages.
ACTOR_ENV: dict[str, Any] = {"env_vars": {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
                                          "MALLOC_TRIM_THRESHOLD_": str(1024 ** 3)}}


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
