"""NeXus acquisition files: exact round trips, structure, settings, ledger, never overwrite."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from actors import __version__
from actors.output import read_ledger, read_outputs, read_settings, write_acquisition
from actors.output.nexus import RESERVED
from actors.reduce.base import OutputSpec, OutputValue, Series
from tests.unit.test_output_support import (
    T0,
    assert_outputs_equal,
    check_nexus,
    generic,
    moench,
    result,
)

Case = tuple[list[OutputSpec], dict[str, OutputValue], dict[str, Any]]


@pytest.fixture(scope="module")
def moench_case() -> Case:
    return moench()


@pytest.fixture(scope="module")
def generic_case() -> Case:
    return generic()


@pytest.fixture(scope="module", params=["moench", "generic"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Case]:
    case: Case = request.getfixturevalue(f"{request.param}_case")
    specs, outputs, settings = case
    path = tmp_path_factory.mktemp(request.param) / "run_000003.h5"
    assert write_acquisition(path, result(outputs), specs, settings, file_index=3) == path
    return path, case


def test_round_trip_is_exact(written: tuple[Path, Case]) -> None:
    path, (_, outputs, _) = written
    assert_outputs_equal(read_outputs(path), outputs)


def test_nexus_structure_is_valid(written: tuple[Path, Case]) -> None:
    path, (specs, _, _) = written
    with h5py.File(path) as f:
        assert check_nexus(f) == []
        entry = f["entry"]
        assert f.attrs["default"] == "entry"
        first_image = next(s.name for s in specs if s.kind == "image")
        assert entry.attrs["default"] == first_image
        for name in ("results", "settings", "ledger"):
            assert entry[name].attrs["NX_class"] == "NXcollection"
        for spec in specs:
            where = entry["results"] if spec.kind == "scalar" else entry[spec.name]
            field = where[spec.name] if spec.kind == "scalar" else where["data"]
            assert field.attrs["long_name"] == (spec.description or spec.name)
            if spec.unit:
                assert field.attrs["units"] == spec.unit
            else:
                assert "units" not in field.attrs


def test_image_axes_are_pixel_indices(written: tuple[Path, Case]) -> None:
    path, (specs, outputs, _) = written
    with h5py.File(path) as f:
        for spec in (s for s in specs if s.kind == "image"):
            group = f["entry"][spec.name]
            assert list(group.attrs["axes"]) == ["y", "x"]
            rows, cols = np.asarray(outputs[spec.name]).shape
            np.testing.assert_array_equal(group["y"][()], np.arange(rows))
            np.testing.assert_array_equal(group["x"][()], np.arange(cols))


def test_radial_profiles_are_plotted_against_the_radius(generic_case: Case,
                                                        tmp_path: Path) -> None:
    specs, outputs, settings = generic_case
    path = write_acquisition(tmp_path / "r.h5", result(outputs), specs, settings)
    radius = np.asarray(outputs["radial_radius"])
    with h5py.File(path) as f:
        for name in ("radial", "radial_last"):
            group = f["entry"][name]
            assert list(group.attrs["axes"]) == ["radius"]
            np.testing.assert_array_equal(group["radius"][()], radius)
            assert group["radius"].attrs["units"] == "pixels"
        per_frame = f["entry/radial_frames"]
        assert list(per_frame.attrs["axes"]) == ["frame_number", "radius"]
        assert f["entry/radial_radius"].attrs["axes"].tolist() == ["index"]
        hits = f["entry/hits"]
        assert list(hits.attrs["axes"]) == ["frame_number"]
        assert hits["data"].dtype == np.uint8 and hits["data"].attrs["rayline_dtype"] == "bool"
        np.testing.assert_array_equal(hits["frame_number"][()], [0, 1, 2, 4, 5, 7])


def test_entry_header(written: tuple[Path, Case]) -> None:
    path, _ = written
    with h5py.File(path) as f:
        entry = f["entry"]
        start = dt.datetime.fromisoformat(entry["start_time"].asstr()[()])
        end = dt.datetime.fromisoformat(entry["end_time"].asstr()[()])
        assert start.tzinfo is not None
        assert start.timestamp() == pytest.approx(T0, abs=1e-6)
        assert (end - start).total_seconds() == pytest.approx(12.5, abs=1e-6)
        assert entry["duration"][()] == 12.5 and entry["duration"].attrs["units"] == "s"
        assert entry["program_name"].asstr()[()] == "rayline"
        assert entry["program_name"].attrs["version"] == __version__
        assert entry["title"].asstr()[()] == "rayline acquisition 3"
        assert entry["file_index"][()] == 3 and entry["acquisition"][()] == 3
        assert entry["outcome"].asstr()[()] == "finished"
        assert "error" not in entry
        assert f.attrs["creator"] == "rayline" and f.attrs["file_name"] == path.name


def test_settings_json_and_tree(written: tuple[Path, Case]) -> None:
    path, (_, _, settings) = written
    assert read_settings(path) == json.loads(json.dumps(settings))
    with h5py.File(path) as f:
        group = f["entry/settings"]
        first = settings["reducers"][0]
        reducer = group["reducers"][first["name"]]
        assert reducer.attrs["NX_class"] == "NXcollection"
        assert reducer["type"].asstr()[()] == first["type"]
        config = group["config"]
        assert config["workers"][()] == settings["config"]["workers"]
        assert config["source/endpoint"].asstr()[()] == settings["config"]["source"]["endpoint"]
        assert bool(config["tango/enabled"][()]) is True
        # None has no HDF5 form: JSON text, marked
        assert config["ray/address"].attrs["rayline_encoding"] == "json"
        assert json.loads(config["ray/address"].asstr()[()]) is None


def test_ledger_totals_and_reasons(written: tuple[Path, Case]) -> None:
    path, _ = written
    got = read_ledger(path)
    assert got["received"] == 100 and got["processed"] == 97 and got["lost"] == 4
    assert got["dropped"] == 3 and got["rejected"] == 1
    assert got["dropped_by_reason"] == {"overflow": 2, "processing_failed": 1}
    assert got["rejected_by_reason"] == {"duplicate": 1}
    assert got["duration"] == 12.5 and "dropped_total" not in got
    with h5py.File(path) as f:
        assert f["entry/ledger/duration"].attrs["units"] == "s"
        assert "long_name" in f["entry/ledger/dropped"].attrs


def test_ledger_core_counters_default_to_zero(tmp_path: Path) -> None:
    res = result({})
    res.ledger = {"received": 5}
    path = write_acquisition(tmp_path / "a.h5", res, [], {})
    got = read_ledger(path)
    assert (got["received"], got["processed"], got["dropped"], got["lost"],
            got["rejected"]) == (5, 0, 0, 0, 0)
    assert got["dropped_by_reason"] == {} and got["rejected_by_reason"] == {}


def test_never_overwrites(tmp_path: Path, generic_case: Case) -> None:
    specs, outputs, settings = generic_case
    path = tmp_path / "run_000000.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_acquisition(path, result(outputs), specs, settings)
    assert path.read_bytes() == b"precious"


def test_every_kind_and_dtype_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    numbers = np.array([3, 4, 9], dtype=np.int64)
    outputs: dict[str, OutputValue] = {
        "sum": rng.integers(0, 2**40, (5, 6)).astype(np.uint64),
        "isum": rng.integers(-(2**40), 2**40, (5, 6)),
        "mask": rng.random((5, 6)) < 0.5,
        "f32": rng.random((5, 6)).astype(np.float32),
        "profile": rng.random(7),
        "hits": Series(numbers, np.array([True, False, True])),
        "kind": Series(numbers, np.array([0, 2, 1], dtype=np.int8)),
        "stack": Series(numbers, rng.integers(0, 9, (3, 2, 2)).astype(np.uint16)),
        "count": 7,
        "mean": 0.1,
        "flag": True,
        "big": np.array(2**63 + 5, dtype=np.uint64),
    }
    specs = [OutputSpec("sum", "image", "uint64", (5, 6), "counts", "sum image"),
             OutputSpec("isum", "image", "int64", (5, 6)),
             OutputSpec("mask", "image", "bool", (5, 6)),
             OutputSpec("f32", "image", "float32", (5, 6)),
             OutputSpec("profile", "spectrum", "float64", (7,)),
             OutputSpec("hits", "series", "bool", ()),
             OutputSpec("kind", "series", "int8", ()),
             OutputSpec("stack", "series", "uint16", (2, 2)),
             OutputSpec("count", "scalar", "int64", ()),
             OutputSpec("mean", "scalar", "float64", ()),
             OutputSpec("flag", "scalar", "bool", ()),
             OutputSpec("big", "scalar", "uint64", ())]
    path = write_acquisition(tmp_path / "a.h5", result(outputs), specs, {})
    assert_outputs_equal(read_outputs(path), outputs)
    with h5py.File(path) as f:
        assert check_nexus(f) == []
        assert f["entry/mask/data"].dtype == np.uint8
        assert list(f["entry/stack"].attrs["axes"]) == ["frame_number", ".", "."]
        assert list(f["entry/profile"].attrs["axes"]) == ["index"]


def test_odd_names_and_undeclared_outputs(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    outputs: dict[str, OutputValue] = {
        "frames": np.ones((2, 2)), "a/b": np.arange(3.0), "settings": 4,
        "extra": np.zeros((2, 3)), "m.sum": np.ones((2, 2))}
    specs = [OutputSpec("frames", "image", "float64", (2, 2)),
             OutputSpec("a/b", "spectrum", "float64", (3,)),
             OutputSpec("settings", "scalar", "int64", ()),
             OutputSpec("m.sum", "image", "float64", (2, 2))]
    path = write_acquisition(tmp_path / "a.h5", result(outputs), specs, {"x": 1})
    assert_outputs_equal(read_outputs(path), outputs)
    assert "extra" in caplog.text  # undeclared: written, with a warning
    with h5py.File(path) as f:
        assert check_nexus(f) == []
        entry = f["entry"]
        assert "frames" not in entry  # reserved for the per-frame stacks
        assert set(entry) >= {"frames_2", "a_b", "m.sum", "extra"}
        assert entry.attrs["default"] == "frames_2"
        assert entry["results/settings"][()] == 4


def test_declared_kind_mismatch_is_written_as_found(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    outputs: dict[str, OutputValue] = {"x": np.arange(4.0)}
    path = write_acquisition(tmp_path / "a.h5", result(outputs),
                             [OutputSpec("x", "image", "float64", (2, 2))], {})
    assert_outputs_equal(read_outputs(path), outputs)
    assert "declared image" in caplog.text


def test_aborted_result_without_outputs(tmp_path: Path) -> None:
    res = result({}, outcome="aborted")
    res.error = "aborted by the user"
    path = write_acquisition(tmp_path / "a.h5", res, [OutputSpec("x", "image", "float64",
                                                                 (2, 2))], {})
    assert read_outputs(path) == {}
    with h5py.File(path) as f:
        assert check_nexus(f) == []
        assert "default" not in f["entry"].attrs
        assert f["entry/outcome"].asstr()[()] == "aborted"
        assert f["entry/error"].asstr()[()] == "aborted by the user"


def test_series_with_wrong_frame_numbers_is_refused_and_no_file_is_left(
        tmp_path: Path) -> None:
    bad: dict[str, OutputValue] = {"s": Series(np.arange(3), np.zeros(4))}
    path = tmp_path / "a.h5"
    with pytest.raises(ValueError, match="frame numbers"):
        write_acquisition(path, result(bad), [OutputSpec("s", "series", "float64", ())], {})
    assert not path.exists()


def test_reserved_names_cover_the_entry_fields(written: tuple[Path, Case]) -> None:
    path, _ = written
    with h5py.File(path) as f:
        own = {n for n, o in f["entry"].items() if "rayline_kind" not in o.attrs}
        assert own <= RESERVED
