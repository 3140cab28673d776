"""The status of the rayline pipelines running in a Ray cluster, read from their stage actors
(found by name: ``rayline-<id>-ingest`` and ``-results``); for ``rayline status --ray``."""

from __future__ import annotations

import logging
from typing import Any

import ray

from actors.backends.ray.runtime import check_reachable
from actors.core.status import pipeline_status


def cluster_status(address: str, namespace: str, timeout: float = 10.0
                   ) -> list[dict[str, Any]]:
    """The status of every rayline pipeline whose stage actors run in the Ray cluster at
    ``address`` (namespace ``namespace``), found by their names."""
    started = not ray.is_initialized()
    if started:
        check_reachable(address)
        ray.init(address=address, namespace=namespace, logging_level=logging.ERROR,
                 log_to_driver=False)
    try:
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a.get("namespace") == namespace and a["name"].startswith("rayline-")
                       and a["name"].endswith("-ingest"))
        out = []
        for name in names:
            prefix = name.removesuffix("-ingest")
            ingest = ray.get_actor(name)
            results = ray.get_actor(f"{prefix}-results")
            i, r = ray.get([ingest.status.remote(), results.status.remote()], timeout=timeout)
            out.append({"pipeline": prefix, **pipeline_status(i, r).as_dict()})
        return out
    finally:
        if started:
            ray.shutdown()
