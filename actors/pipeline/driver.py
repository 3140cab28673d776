"""The Python API of the Ray backend: :class:`RayPipeline` (exposed as ``actors.Pipeline``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.config import PipelineConfig, as_config
from actors.core.acquisition import AcquisitionResult
from actors.pipeline.ingest import IngestActor
from actors.pipeline.processing import ProcessingActor
from actors.pipeline.results import ResultsActor
from actors.pipeline.runtime import ensure_ray, store_budget
from actors.reduce.base import OutputValue
from actors.wire.model import Protocol

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0


class RayPipeline:
    """Ingest + processing actors + results actor on a local or remote Ray cluster.

    Use as a context manager (or call :meth:`open` / :meth:`close`)::

        with Pipeline(config) as p:
            p.start_acquisition()
            ...                       # the detector sends frames
            result = p.stop_acquisition(timeout=30)
            result.outputs["analog_img"]
    """

    def __init__(self, config: PipelineConfig | Mapping[str, Any] | str | Path | None = None
                 ) -> None:
        self.config = as_config(config)
        self._started_ray = False
        self._acquisition = 0
        self.ingest: Any = None
        self.results_actor: Any = None
        self.workers: list[Any] = []
        self.placement: list[dict[str, Any]] = []
        self.tango: Any = None  # actors.tango.actor.TangoDevice

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> RayPipeline:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        cfg = self.config
        self._started_ray = ensure_ray(cfg.ray)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                              soft=False)
        output = cfg.output.model_copy(
            update={"directory": str(Path(cfg.output.directory).absolute())})
        self.results_actor = ResultsActor.options(scheduling_strategy=here).remote(
            output, cfg.model_dump(mode="json"))
        strategy = "SPREAD" if cfg.ray.placement == "spread" else "DEFAULT"
        self.workers = [ProcessingActor.options(num_cpus=cfg.ray.worker_cpus,
                                                scheduling_strategy=strategy).remote(i)
                        for i in range(cfg.workers)]
        try:
            self.placement = ray.get([w.ready.remote() for w in self.workers],
                                     timeout=READY_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise RuntimeError(
                f"{cfg.workers} processing actors with {cfg.ray.worker_cpus} CPU each did not "
                f"start within {READY_TIMEOUT:.0f} s: the cluster has "
                f"{ray.cluster_resources().get('CPU', 0)} CPUs (lower workers or "
                "ray.worker_cpus)") from None
        # DECTRIS detectors send uint16 or uint32 depending on the bit depth: warm both
        dtypes = [cfg.source.geometry.dtype] if cfg.source.geometry else (
            ["uint16"] if cfg.source.protocol is Protocol.SLS else ["uint16", "uint32"])
        specs = tuple(dict(s) for s in cfg.reducers)
        geometry = cfg.source.geometry.to_geometry() if cfg.source.geometry else None
        warm = ray.get([w.warm_up.remote(specs, geometry, d) for w in self.workers
                        for d in dtypes], timeout=READY_TIMEOUT)
        logger.debug("workers warmed up in %s s", [round(t, 2) for t in warm])
        budget = cfg.ray.inflight_bytes or store_budget(ray.get_runtime_context().get_node_id())
        self.ingest = IngestActor.options(scheduling_strategy=here).remote(
            cfg, self.results_actor, self.workers, budget)
        ray.get(self.ingest.open.remote(), timeout=READY_TIMEOUT)
        if cfg.tango.enabled:
            from actors.tango.actor import start_tango_actor

            try:
                self.tango = start_tango_actor(cfg, self.ingest, self.results_actor)
            except Exception:
                self.close()
                raise
        logger.info("pipeline open: %d workers on %d node(s), source %s", cfg.workers,
                    len({p["node_id"] for p in self.placement}), cfg.source.endpoint)

    @property
    def tango_address(self) -> str | None:
        """The full address of the Tango device (None when disabled)."""
        return self.tango.address if self.tango is not None else None

    def close(self) -> None:
        if self.tango is not None:
            try:
                self.tango.stop()  # admin Kill, then the actor goes (bounded)
            except Exception:  # closing anyway
                logger.exception("Tango device did not stop cleanly")
            self.tango = None
        if self.ingest is not None:
            try:
                ray.get(self.ingest.close.remote(), timeout=30)
            except Exception:  # closing anyway
                logger.exception("ingest did not close cleanly")
        for actor in [self.ingest, self.results_actor, *self.workers]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self.ingest = self.results_actor = None
        self.workers = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- acquisitions ------------------------------------------------------------------------
    @property
    def acquisition(self) -> int:
        """The number of the current (or last) acquisition; 0 before the first."""
        return self._acquisition

    def start_acquisition(self) -> int:
        """Start accepting frames; an end-of-series message or :meth:`stop_acquisition`
        ends the acquisition."""
        self._acquisition = ray.get(self.ingest.start.remote(None))
        return self._acquisition

    def stop_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Stop accepting frames, wait until every received frame is processed, finalise."""
        ray.get(self.ingest.stop.remote(self._acquisition))
        return self.wait_acquisition(timeout)

    def wait_acquisition(self, timeout: float | None = None) -> AcquisitionResult:
        """Wait for the current acquisition to end (by end-of-series or stop) and finish."""
        limit = self.config.acquisition_timeout if timeout is None else timeout
        result = ray.get(self.results_actor.wait.remote(self._acquisition, limit))
        if result is None:
            raise TimeoutError(f"acquisition {self._acquisition} did not finish within "
                               f"{limit} s: {self.status()}")
        return result  # type: ignore[no-any-return]

    def abort(self) -> None:
        """Stop and discard the current acquisition."""
        ray.get(self.ingest.abort.remote(self._acquisition))

    def reset_pedestal(self) -> None:
        ray.get(self.results_actor.reset_pedestal.remote())

    def set_output(self, filename: str | None = None, filepath: str | None = None,
                   file_index: int | None = None) -> dict[str, Any]:
        """Change the file name, directory or next index (applies to the next file)."""
        state: dict[str, Any] = {}
        for name, value in (("filename", filename), ("filepath", filepath),
                            ("file_index", file_index)):
            if value is not None:
                state = ray.get(self.results_actor.set_output.remote(name, value))
        return state or ray.get(self.results_actor.output_state.remote())

    # -- queries and parameters ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """State, counters (received, processed, dropped, lost, pending) and rates."""
        ingest, processed = ray.get([self.ingest.status.remote(),
                                     self.results_actor.processed.remote()])
        ledger = ingest.get("ledger", {})
        return {
            "state": ingest["state"],
            "acquisition": self._acquisition,
            "received": ledger.get("received", 0),
            "processed": processed,
            "dropped": ledger.get("dropped_total", 0),
            "lost": ledger.get("lost", 0),
            "rejected": ledger.get("rejected_total", 0),
            "pending": ledger.get("received", 0) - processed - ledger.get("dropped_total", 0),
            "frame_rate": ingest["frame_rate"],
            "idle_dropped": ingest["idle_dropped"],
            "fault": ingest["fault"],
            "peak_inflight_bytes": ingest["peak_inflight_bytes"],
            "ledger": ledger,
            "receiver": ingest["receiver"],
        }

    def results(self) -> dict[str, OutputValue]:
        """Named outputs of the running acquisition (else of the last finished one)."""
        snap = ray.get(self.results_actor.snapshot.remote())
        return snap["outputs"]  # type: ignore[no-any-return]

    def set(self, name: str, value: Any) -> int | None:
        """Change a runtime parameter; returns the first batch it applies to (None: from the
        next acquisition's first batch)."""
        return ray.get(self.ingest.set.remote({name: value}))  # type: ignore[no-any-return]
