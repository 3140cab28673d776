"""Registry: built-in names, user reducers by 'module:Class', clear configuration errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from actors.reduce.base import Batch, Reducer, ReducerConfigError
from actors.reduce.examples.centre_of_mass import CentreOfMass
from actors.reduce.registry import BUILTIN, build_reducer, load_reducer_class
from actors.wire.model import Geometry

EXAMPLE = "actors.reduce.examples.centre_of_mass:CentreOfMass"


def test_builtin_names() -> None:
    assert set(BUILTIN) == {"moench", "jungfrau", "jungfrau_pedestal", "sum", "mean", "max",
                            "total", "roi", "radial", "hits"}
    r = build_reducer({"type": "moench", "name": "m1", "threshold": 55}, Geometry(8, 8))
    assert r.name == "m1" and r.settings.threshold == 55 and r.type_name == "moench"
    assert build_reducer({"type": "sum"}, Geometry(8, 8)).name == "sum"


def test_user_reducer_by_module_path() -> None:
    assert load_reducer_class(EXAMPLE) is CentreOfMass
    r = build_reducer({"type": EXAMPLE, "name": "com", "min_value": 1}, Geometry(20, 30))
    frames = np.zeros((3, 20, 30), np.uint16)
    frames[0, 4, 7] = 10
    frames[1, 10, 20] = 5
    frames[1, 12, 20] = 5
    frames[2, 0, 0] = 1  # at min_value: ignored, frame empty
    a = r.process(Batch(0, frames[:2], np.array([0, 1], np.int64)))
    b = r.process(Batch(1, frames[2:], np.array([2], np.int64)))
    out = r.outputs(r.merge(r.merge(r.empty(), a), b))
    np.testing.assert_array_equal(out["com_row"].values[:2], [4.0, 11.0])
    np.testing.assert_array_equal(out["com_col"].values[:2], [7.0, 20.0])
    assert np.isnan(out["com_row"].values[2])
    np.testing.assert_allclose(out["com"], [(40 + 50 + 60) / 20, (70 + 200) / 20])
    assert [s.name for s in r.outputs_spec()] == ["com_row", "com_col", "com"]


class NotAReducer:
    Settings = None


class Incomplete(Reducer):  # type: ignore[type-arg]
    pass


@pytest.fixture
def fake_module() -> types.ModuleType:
    mod = types.ModuleType("fake_user_reducers")
    mod.NotAReducer = NotAReducer  # type: ignore[attr-defined]
    mod.Incomplete = Incomplete  # type: ignore[attr-defined]
    mod.value = 3  # type: ignore[attr-defined]
    sys.modules["fake_user_reducers"] = mod
    yield mod
    del sys.modules["fake_user_reducers"]


@pytest.mark.parametrize("spec, match", [
    ("nope", "unknown reducer type 'nope'"),
    ("a b:C", "package.module:Class"),
    ("no_such_module_xyz:C", "cannot import module 'no_such_module_xyz'"),
    ("fake_user_reducers:Missing", "no attribute 'Missing'"),
    ("fake_user_reducers:value", "not a class"),
    ("fake_user_reducers:NotAReducer", "missing .*outputs_spec.*Settings"),
    ("fake_user_reducers:Incomplete", "does not follow the reducer interface"),
])
def test_bad_user_reducer_specs(fake_module: types.ModuleType, spec: str, match: str) -> None:
    with pytest.raises(ReducerConfigError, match=match):
        build_reducer({"type": spec}, Geometry(4, 4))


def test_errors_name_the_reducer_and_the_setting() -> None:
    with pytest.raises(ReducerConfigError, match=r"reducer 'ped'.*'counting_sigma'"):
        build_reducer({"type": "moench", "name": "ped", "counting_sigma": -1}, Geometry(4, 4))
    with pytest.raises(ReducerConfigError, match=r"reducer 'com'.*'min_value'"):
        build_reducer({"type": EXAMPLE, "name": "com", "min_value": "x"}, Geometry(4, 4))
    with pytest.raises(ReducerConfigError, match="needs a 'type'"):
        build_reducer({"name": "x"}, Geometry(4, 4))
    with pytest.raises(ReducerConfigError, match="identifier"):
        build_reducer({"type": "sum", "name": "a-b"}, Geometry(4, 4))
