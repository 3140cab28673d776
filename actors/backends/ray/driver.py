"""The Ray backend's pipeline: starts (or joins) Ray and the stage actors, and stops them.

Everything a user calls is the shared :class:`~actors.pipeline.PipelineBase`, through the
typed client of :mod:`actors.backends.ray.client`; this module only places and starts the
actors: the results and ingest actors (and the Tango device actor) on the driver's node, the
processing actors spread over the cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.backends.ray.client import CALL_TIMEOUT, ClientPipeline
from actors.backends.ray.ingest import IngestActor
from actors.backends.ray.processing import ProcessingActor
from actors.backends.ray.results import ResultsActor, results_options
from actors.backends.ray.runtime import StageNames, ensure_ray, node_strategy, store_budget
from actors.config import PipelineConfig, as_config
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
READY_LOG = 10.0


class RayPipeline(ClientPipeline):
    """Ingest + processing actors + results actor on a local or remote Ray cluster."""

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | Path | None = None
                 ) -> None:
        super().__init__(as_config(config))
        self._started_ray = False
        self.workers: list[Any] = []
        self.placement: list[dict[str, Any]] = []
        self.module_ingests: list[Any] = []  # the other modules' (a multi-module detector)
        self.ingest_nodes: list[str] = []  # where each stream's ingest runs
        self.tango: Any = None  # actors.backends.ray.tango.TangoDevice
        self.names = StageNames.new(self.config.workers)

    @property
    def tango_address(self) -> str | None:
        return self.tango.address if self.tango is not None else None

    def open(self) -> None:
        cfg = self.config
        need = cfg.workers * cfg.ray.worker_cpus
        self._started_ray = ensure_ray(cfg.ray, need)
        try:
            have = ray.cluster_resources().get("CPU", 0.0)
            if need > have:
                raise RuntimeError(
                    f"{cfg.workers} workers x {cfg.ray.worker_cpus:g} CPU need {need:g} CPUs "
                    f"and the Ray cluster has {have:g}: lower workers or ray.worker_cpus"
                    + ("" if cfg.ray.address else ", or raise ray.num_cpus"))
            self._open()
        except BaseException:
            self.close()
            raise
        logger.info("pipeline open: %d workers on %d node(s), source %s", cfg.workers,
                    len({p["node_id"] for p in self.placement}), cfg.source.endpoint)

    def _open(self) -> None:
        cfg = self.config
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                              soft=False)
        output = cfg.output.model_copy(
            update={"directory": str(Path(cfg.output.directory).absolute())})
        names = self.names
        results = ResultsActor.options(scheduling_strategy=here, name=names.results,
                                       **results_options(cfg.max_inflight)).remote(
            output, cfg.model_dump(mode="json"))
        self.results_actor = results
        strategy = "SPREAD" if cfg.ray.placement == "spread" else "DEFAULT"
        self.workers = [ProcessingActor.options(num_cpus=cfg.ray.worker_cpus,
                                                scheduling_strategy=strategy,
                                                name=names.worker(i)).remote(i)
                        for i in range(cfg.workers)]
        self.placement = self._wait_ready([w.ready.remote() for w in self.workers])
        self._warm_up()
        budget = cfg.ray.inflight_bytes or store_budget(ray.get_runtime_context().get_node_id())
        # a multi-module detector: one ingest per module, each on the node of its stream
        for i, (name, source) in enumerate(zip(cfg.source_names, cfg.all_sources)):
            if i == 0:
                continue
            actor = IngestActor.options(
                scheduling_strategy=node_strategy(source.node) or (
                    "DEFAULT" if source.resources else here),
                resources=source.resources or None,
                name=names.module_ingest(name)).remote(cfg.for_source(i), names, budget,
                                                       name)
            self.module_ingests.append(actor)
        ingest = IngestActor.options(
            scheduling_strategy=node_strategy(cfg.source.node) or (
                "DEFAULT" if cfg.source.resources else here),
            resources=cfg.source.resources or None, name=names.ingest).remote(
                cfg, names, budget)
        opened = ray.get([a.open.remote() for a in [ingest, *self.module_ingests]],
                         timeout=READY_TIMEOUT)
        self.ingest_nodes = [o["node_id"] for o in opened]
        self.attach(ingest, results)
        if cfg.tango.enabled:
            from actors.backends.ray.tango import start_tango_actor

            self.tango = start_tango_actor(cfg, names)

    def _wait_ready(self, refs: list[Any]) -> list[dict[str, Any]]:
        """The workers' placements once all have started; says every ``READY_LOG`` seconds
        how many wait and how many CPUs the cluster has free (another job may hold them)."""
        cfg = self.config
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(refs)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{len(pending)} of {cfg.workers} processing actors ({cfg.ray.worker_cpus:g}"
                    f" CPU each) did not start within {READY_TIMEOUT:.0f} s: the cluster has "
                    f"{ray.available_resources().get('CPU', 0):g} of "
                    f"{ray.cluster_resources().get('CPU', 0):g} CPUs free")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(READY_LOG, left))
            if pending:
                logger.warning("waiting for %d of %d processing actors to start: the cluster "
                               "has %g of %g CPUs free", len(pending), cfg.workers,
                               ray.available_resources().get("CPU", 0),
                               ray.cluster_resources().get("CPU", 0))
        return list(ray.get(refs, timeout=CALL_TIMEOUT))

    def _warm_up(self) -> None:
        """Load (or compile) the kernels in every worker before the first batch."""
        cfg = self.config
        # DECTRIS detectors send uint16 or uint32 depending on the bit depth: warm both
        dtypes = [cfg.source.geometry.dtype] if cfg.source.geometry else (
            ["uint16"] if cfg.source.protocol is Protocol.SLS else ["uint16", "uint32"])
        specs = tuple(dict(s) for s in cfg.reducers)
        geometry = cfg.source.geometry.to_geometry() if cfg.source.geometry else None
        warm = ray.get([w.warm_up.remote(specs, geometry, d) for w in self.workers
                        for d in dtypes], timeout=READY_TIMEOUT)
        logger.debug("workers warmed up in %s s", [round(t, 2) for t in warm])

    def close(self) -> None:
        """Stop the device, the ingest (its socket), then every actor; shut a Ray down that
        this pipeline started. Safe to call twice and after a failed open."""
        if self.tango is not None:
            try:
                self.tango.stop()  # admin Kill, then the actor goes (bounded)
            except Exception:  # closing anyway
                logger.exception("Tango device did not stop cleanly")
            self.tango = None
        for actor, method in ((self.ingest, "close"), (self.results_actor, "close")):
            if actor is not None:
                try:
                    ray.get(getattr(actor, method).remote(), timeout=CALL_TIMEOUT)
                except Exception:  # closing anyway
                    logger.exception("%s did not close cleanly", method)
        for actor in self.module_ingests:
            try:
                ray.get(actor.close.remote(), timeout=CALL_TIMEOUT)
            except Exception:  # closing anyway
                logger.exception("a module's ingest did not close cleanly")
        for actor in [self.ingest, self.results_actor, *self.workers, *self.module_ingests]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self.module_ingests = []
        self.detach()
        self.workers = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
