"""The Ray backend: the stages as Ray actors, batches in the object store
(:class:`~actors.backends.ray.driver.RayPipeline`). Importing this package does not import
Ray; :func:`available` tells whether it can be."""

from __future__ import annotations


def available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True
