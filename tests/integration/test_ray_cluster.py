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
