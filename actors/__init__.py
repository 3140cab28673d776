"""rayline: live X-ray detector stream processing (import package ``actors``).

``Pipeline(config)`` builds the configured backend: ``backend: ray`` (the default) or
``backend: local`` (processes over shared memory, no Ray needed). When ``ray`` cannot be
imported, the local backend is used, and one log line says so.
"""

from __future__ import annotations

import logging
from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__", "load_config"]

logger = logging.getLogger(__name__)


def Pipeline(config: Any = None) -> Any:
    """The pipeline of the configured backend (``RayPipeline`` or ``LocalPipeline``); both
    have the same methods: open/close (or ``with``), start_acquisition, stop_acquisition,
    wait_acquisition, abort, reset_pedestal, status, results, set."""
    from actors.config import as_config

    cfg = as_config(config)
    if cfg.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            logger.warning("ray is not installed: using the local shared-memory backend "
                           "(backend: local)")
            cfg = cfg.model_copy(update={"backend": "local"})
    if cfg.backend == "local":
        from actors.local.pipeline import LocalPipeline

        return LocalPipeline(cfg)
    from actors.pipeline.driver import RayPipeline

    return RayPipeline(cfg)


def load_config(path: Any = None) -> Any:
    """Load and validate a YAML/TOML configuration (see :mod:`actors.config`)."""
    from actors.config import load_config as _load

    return _load(path)
