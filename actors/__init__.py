"""rayline: live X-ray detector stream processing (import package ``actors``).

``Pipeline(config)`` builds the configured backend: ``backend: ray`` (the default) or
``backend: local`` (processes over shared memory, no Ray needed). When ``ray`` cannot be
imported, the local backend is used, and one log line says so. Both return a
:class:`~actors.core.api.PipelineApi`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.version import __version__

if TYPE_CHECKING:
    from actors.config import PipelineConfig
    from actors.core.api import PipelineApi

__all__ = ["Pipeline", "__version__", "load_config"]

logger = logging.getLogger(__name__)


def Pipeline(config: PipelineConfig | dict[str, Any] | str | Path | None = None
             ) -> PipelineApi:
    """The pipeline of the configured backend (``RayPipeline`` or ``LocalPipeline``), not
    open yet: use it in a ``with`` block (or call ``open()`` / ``close()``)."""
    from actors.backends.ray import available as ray_available
    from actors.config import as_config

    cfg = as_config(config)
    if cfg.backend == "ray" and not ray_available():
        logger.warning("ray is not installed: using the local shared-memory backend "
                       "(backend: local)")
        cfg = cfg.model_copy(update={"backend": "local"})
    if cfg.backend == "local":
        from actors.backends.local.pipeline import LocalPipeline

        return LocalPipeline(cfg)
    from actors.backends.ray.driver import RayPipeline

    return RayPipeline(cfg)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load and validate a YAML/TOML configuration (see :mod:`actors.config`)."""
    from actors.config import load_config as _load

    return _load(path)
