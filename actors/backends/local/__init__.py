"""The local backend: the pipeline's stages as processes on one host, frames in a ring of
shared-memory slots (no Ray needed). See :class:`actors.backends.local.pipeline.LocalPipeline`."""

from __future__ import annotations

from actors.backends.local.pipeline import LocalPipeline

__all__ = ["LocalPipeline"]
