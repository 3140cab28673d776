"""rayline: live X-ray detector stream processing (import package ``actors``).

``Pipeline(config)`` runs the configured backend (``backend: ray`` by default)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__", "load_config"]


def Pipeline(config: Any = None) -> Any:
    """The pipeline of the configured backend (see :class:`actors.pipeline.driver.RayPipeline`)."""
    from actors.pipeline.driver import RayPipeline, as_config

    cfg = as_config(config)
    if cfg.backend == "local":
        raise NotImplementedError("backend: local is not available yet")
    return RayPipeline(cfg)


def load_config(path: Any = None) -> Any:
    from actors.config import load_config as _load

    return _load(path)
