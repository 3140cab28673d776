"""Shared builders for the output tests (no tests here): realistic results and comparisons."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from actors.config import PipelineConfig
from actors.core.acquisition import AcquisitionResult, Outcome
from actors.core.chain import ReducerChain
from actors.reduce.base import Batch, OutputSpec, OutputValue, Series
from actors.wire.model import Geometry

T0 = 1_780_000_000.25  # a fixed start time (2026)

GENERIC_REDUCERS: list[dict[str, Any]] = [
    {"type": "sum"},
    {"type": "radial", "center": [10.0, 12.0], "bins": 8, "per_frame": True},
    {"type": "hits", "threshold": 500.0, "min_pixels": 3},
    {"type": "total"},
]


def ledger(received: int = 100, processed: int = 97) -> dict[str, Any]:
    """A ledger shaped like the ingest's (per-reason mappings with totals)."""
    return {"acquisition": 3, "received": received, "dispatched": processed,
            "dropped": {"overflow": 2, "processing_failed": 1}, "dropped_total": 3,
            "lost": 4, "rejected": {"duplicate": 1}, "rejected_total": 1,
            "processed": processed, "processed_batches": 4}


def result(outputs: dict[str, OutputValue], acquisition: int = 3,
           outcome: Outcome = "finished") -> AcquisitionResult:
    return AcquisitionResult(acquisition, outcome, outputs, ledger(), T0, T0 + 12.5)


def moench() -> tuple[list[OutputSpec], dict[str, OutputValue], dict[str, Any]]:
    """The MOENCH chain's declared outputs (400x400) with deterministic values."""
    chain = ReducerChain.from_specs([{"type": "moench"}], Geometry(400, 400))
    rng = np.random.default_rng(7)
    numbers = np.flatnonzero(rng.random(300) < 0.9).astype(np.int64)
    outputs: dict[str, OutputValue] = {}
    for spec in chain.outputs_spec():
        if spec.kind == "image":
            outputs[spec.name] = rng.normal(0.0, 30.0, spec.shape)
        elif spec.kind == "scalar":
            outputs[spec.name] = int(rng.integers(0, 1000))
        else:
            outputs[spec.name] = Series(numbers, rng.integers(0, 3, numbers.size).astype(
                spec.dtype))
    return chain.outputs_spec(), outputs, settings(chain)


def generic() -> tuple[list[OutputSpec], dict[str, OutputValue], dict[str, Any]]:
    """Outputs of the real generic reducers on a few random frames (with gaps)."""
    chain = ReducerChain.from_specs(GENERIC_REDUCERS, Geometry(24, 30))
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 1000, (6, 24, 30)).astype(np.uint16)
    partial = chain.process(Batch(0, frames, np.array([0, 1, 2, 4, 5, 7], dtype=np.int64)))
    return chain.outputs_spec(), chain.outputs(chain.merge(chain.empty(), partial)), \
        settings(chain)


def settings(chain: ReducerChain) -> dict[str, Any]:
    """What the results stage passes: the reducer specs and the config dump."""
    return {"reducers": chain.specs(), "config": PipelineConfig().model_dump(mode="json")}


def assert_outputs_equal(got: dict[str, OutputValue], want: dict[str, OutputValue]) -> None:
    """Same names; arrays equal with their dtype; series with their frame numbers."""
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        value = got[name]
        if isinstance(expected, Series):
            assert isinstance(value, Series), name
            assert value.frame_numbers.dtype == np.int64, name
            np.testing.assert_array_equal(value.frame_numbers, expected.frame_numbers)
            assert value.values.dtype == np.asarray(expected.values).dtype, name
            np.testing.assert_array_equal(value.values, expected.values, err_msg=name)
        elif isinstance(expected, np.ndarray) and expected.ndim > 0:
            assert isinstance(value, np.ndarray), name
            assert value.dtype == expected.dtype, name
            np.testing.assert_array_equal(value, expected, err_msg=name)
        else:
            assert value == expected, name
            assert type(value) is type(np.asarray(expected).item()), name


def check_nexus(file: h5py.File) -> list[str]:
    """Problems with the NeXus structure of ``file`` (empty when valid)."""
    problems: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            if "NX_class" not in obj.attrs:
                problems.append(f"{name}: no NX_class")
            elif obj.attrs["NX_class"] == "NXdata":
                problems.extend(_check_nxdata(name, obj))

    file.visititems(visit)
    entry_name = file.attrs.get("default")
    entry = file.get(str(entry_name)) if entry_name is not None else None
    if entry is None or entry.attrs.get("NX_class") != "NXentry":
        problems.append(f"/@default={entry_name!r} is not an NXentry")
    elif "default" in entry.attrs:
        target = entry.get(str(entry.attrs["default"]))
        if target is None or target.attrs.get("NX_class") != "NXdata":
            problems.append(f"/entry/@default={entry.attrs['default']!r} is not an NXdata")
    return problems


def _check_nxdata(name: str, group: h5py.Group) -> list[str]:
    signal = group.attrs.get("signal")
    if signal is None or signal not in group:
        return [f"{name}: signal {signal!r} missing"]
    data = group[signal]
    axes = group.attrs.get("axes")
    if axes is None:
        return [f"{name}: no axes"]
    axes = [axes] if isinstance(axes, str) else list(axes)
    problems = []
    if len(axes) != data.ndim:
        problems.append(f"{name}: {len(axes)} axes for a rank-{data.ndim} signal")
    for i, axis in enumerate(axes):
        if axis == ".":
            continue
        if axis not in group:
            problems.append(f"{name}: axis {axis!r} missing")
        elif group[axis].shape != (data.shape[i],):
            problems.append(f"{name}: axis {axis!r} shape {group[axis].shape} != "
                            f"({data.shape[i]},)")
        if int(group.attrs.get(f"{axis}_indices", -1)) != i:
            problems.append(f"{name}: {axis}_indices != {i}")
    return problems
