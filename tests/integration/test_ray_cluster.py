"""A real two-node Ray cluster on this machine: processing actors on both nodes, same results."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import ray
from ray.cluster_utils import Cluster

from actors.backends.ray.driver import RayPipeline
from actors.sim.simulator import Simulator, SimulatorSettings
from actors.wire.model import Protocol
from tests.conftest import SenderThread
from tests.helpers import MOENCH, SCENE, assert_outputs_equal, moench_run, pipeline_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def two_nodes() -> Iterator[Cluster]:
    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100_000_000, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100_000_000)
        cluster.wait_for_nodes(timeout=120)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_two_node_cluster_spreads_workers_and_matches_reference(
        two_nodes: Cluster, sender_threads: Callable[..., SenderThread]) -> None:
    n = 80
    cfg = pipeline_config("tcp://127.0.0.1:0", Protocol.SLS, [MOENCH], workers=2)
    cfg["ray"] = {"address": two_nodes.address, "worker_cpus": 1, "placement": "spread"}
    with Simulator(SimulatorSettings(frames=n, lossless=True, seed=8, scene=SCENE)) as sim:
        cfg["source"]["endpoint"] = sim.endpoint
        with RayPipeline(cfg) as pipe:
            nodes = {p["node_id"] for p in pipe.placement}
            assert len(nodes) == 2, pipe.placement  # one processing actor on each node
            assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
            pipe.start_acquisition()
            sender = sender_threads(sim.run)
            result = pipe.wait_acquisition(timeout=180)
            sender.join()
    assert result.ledger["processed"] == n and result.ledger["lost"] == 0
    assert_outputs_equal(result.outputs, moench_run(sim, n))


def test_module_ingests_on_two_nodes_assemble_the_detector_s_frames(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 4-module detector whose streams arrive on two nodes: each ingest actor runs on the
    node its source names (by a custom resource only that node has), frames go into the
    object store there once, and the workers assemble exactly the detector's frames."""
    import threading

    import numpy as np

    from actors.config import parse_config
    from actors.reduce.base import Series
    from actors.sim.modules import ModuleSettings, ModuleSimulator

    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100_000_000, "include_dashboard": False,
        "resources": {"rx_a": 1}})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100_000_000, resources={"rx_b": 1})
        cluster.wait_for_nodes(timeout=120)
        n = 40
        settings = ModuleSettings(SimulatorSettings(detector="jungfrau", frames=n,
                                                    lossless=True, seed=2,
                                                    scene={"rows": 32, "cols": 64}),
                                  modules=(2, 2))
        with ModuleSimulator(settings) as sim:
            cfg = parse_config({
                "sources": [{"endpoint": ep, "name": f"m{i}",
                             "resources": {"rx_a" if i < 2 else "rx_b": 0.01}}
                            for i, ep in enumerate(sim.endpoints)],
                "reducers": [{"type": "sum"}, {"type": "total"}], "workers": 2,
                "batch": {"max_frames": 8}, "tango": {"enabled": False},
                "output": {"enabled": False},
                "ray": {"address": cluster.address, "worker_cpus": 0.5}})
            with RayPipeline(cfg) as pipe:
                assert len(set(pipe.ingest_nodes)) == 2, pipe.ingest_nodes
                assert pipe.ingest_nodes[0] == pipe.ingest_nodes[1] != pipe.ingest_nodes[2]
                pipe.start_acquisition()
                sender = threading.Thread(target=sim.run)
                sender.start()
                result = pipe.wait_acquisition(timeout=180)
                sender.join(60)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    frames = np.stack([sim.scene.frame(i) for i in range(n)]).astype(np.int64)
    assert (result.ledger.received, result.ledger.processed) == (n, n), result.ledger
    np.testing.assert_array_equal(result.outputs["sum"], frames.sum(axis=0))
    total = result.outputs["total"]
    assert isinstance(total, Series)
    np.testing.assert_array_equal(total.values, frames.sum(axis=(1, 2)))
