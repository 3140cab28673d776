"""The pure parts of the Tango device: attribute declarations, when to publish, the session."""

from __future__ import annotations

import math
from typing import Any

import pytest

from actors.config import parse_config
from actors.core.status import Snapshot, Status
from actors.tango.declare import MAX_IMAGE_DIM, chain_for, declare
from actors.tango.live import LivePublisher
from actors.tango.session import RESERVED, Session


def declarations(config: dict[str, Any], series: int = 50) -> Any:
    cfg = parse_config(config)
    chain = chain_for(cfg)
    return declare(chain.outputs_spec(), chain.parameters(),
                   geometry_known=cfg.source.geometry is not None, series_length=series,
                   specs=cfg.reducers, reserved=RESERVED)


def test_moench_declarations_are_the_seed_names() -> None:
    decl = declarations({"source": {"geometry": {"rows": 40, "cols": 30}}})
    out = {o.attr: o for o in decl.outputs}
    assert out["analog_img"].format == "image" and (out["pedestal"].rows,
                                                    out["pedestal"].cols) == (40, 30)
    assert out["pumped_frames"].format == "scalar" and out["pumped_frames"].dtype == "int64"
    assert out["frame_type"].format == "spectrum" and out["frame_type"].dtype == "int16"
    assert out["frame_type_frame_numbers"].cols == 50
    params = {p.attr: p for p in decl.parameters}
    assert set(params) == {"threshold", "counting_sigma", "processing_pattern", "split_pump",
                           "normalize", "process_pedestal_img", "update_pedestal_img",
                           "process_analog_img", "process_threshold_img",
                           "process_counting_img"}
    assert (params["threshold"].type, params["threshold"].minimum,
            params["threshold"].unit) == ("float", 0.0, "ADU")
    assert params["processing_pattern"].type == "str" and params["split_pump"].type == "bool"


def test_unknown_geometry_declares_for_rois_beyond_the_default_frame() -> None:
    """No geometry configured (DECTRIS streams tell it): an ROI beyond the 400x400 default
    placeholder still declares (the real frame is checked when it arrives)."""
    decl = declarations({"reducers": [
        {"type": "roi", "rois": [{"name": "beamstop", "row0": 1050, "row1": 1150,
                                  "col0": 1000, "col1": 1100}]},
        {"type": "radial", "center": [1100.0, 1050.0], "bins": 50}]})
    attrs = {o.attr for o in decl.outputs}
    assert {"roi_beamstop", "roi_beamstop_sum", "radial", "radial_radius"} <= attrs, attrs


def test_unknown_geometry_gives_generous_bounds() -> None:
    decl = declarations({})
    image = next(o for o in decl.outputs if o.attr == "analog_img")
    assert (image.rows, image.cols) == (MAX_IMAGE_DIM, MAX_IMAGE_DIM)


def test_generic_reducers_and_name_rewriting() -> None:
    decl = declarations({"source": {"geometry": {"rows": 20, "cols": 20}},
                         "reducers": [{"type": "sum", "name": "a"}, {"type": "sum", "name": "b"},
                                      {"type": "radial", "center": [10, 10], "bins": 8,
                                       "per_frame": True}]})
    attrs = {o.attr for o in decl.outputs}
    assert {"a", "b", "radial", "radial_frames", "radial_frames_frame_numbers"} <= attrs
    radial = next(o for o in decl.outputs if o.attr == "radial_frames")
    assert radial.format == "image" and (radial.rows, radial.cols) == (50, 8)
    params = {p.attr: p for p in decl.parameters}
    assert params["a_saturation_value"].parameter == "a.saturation_value"
    sat = params["a_saturation_value"]
    assert sat.type == "optional_float" and math.isnan(sat.to_tango(None))
    assert sat.from_tango(math.nan) is None and sat.from_tango(100.0) == 100.0


def test_clashing_names_are_errors() -> None:
    with pytest.raises(ValueError, match="clashes with the device's 'acquisition'"):
        declarations({"reducers": [{"type": "sum", "name": "Acquisition"}]})


def test_int_parameters_keep_int_limits_for_tango() -> None:
    """An int setting's bounds stay ints (Tango rejects a float limit on a DevLong64)."""
    decl = declarations({"source": {"geometry": {"rows": 20, "cols": 20}},
                         "reducers": [{"type": "hits", "threshold": 90.0, "min_pixels": 10}]})
    params = {p.attr: p for p in decl.parameters}
    assert params["min_pixels"].type == "int"
    assert params["min_pixels"].minimum == 0 and isinstance(params["min_pixels"].minimum, int)
    assert params["threshold"].type == "float" and params["threshold"].minimum is None


class _Sink:
    def on_status(self, status: Status) -> None: ...

    def on_snapshot(self, snapshot: Snapshot) -> None: ...

    def on_failure(self, error: BaseException) -> None: ...


def test_publish_while_changing_rate_limited_and_once_at_the_end() -> None:
    live = LivePublisher(None, _Sink(), lambda: 0.5)  # type: ignore[arg-type]
    run = Status("running", 1, 10, 5)
    assert live.due(run, 0.0)  # nothing published yet
    live._published, live._next_live = (1, 5, True), 0.5
    assert not live.due(run, 0.1)  # unchanged
    assert not live.due(Status("running", 1, 20, 15), 0.3)  # changed, too early
    assert live.due(Status("running", 1, 20, 15), 0.6)
    ended = Status("idle", 1, 20, 20)
    assert live.due(ended, 0.7)  # the end, at once
    live._published, live._final_for = (1, 20, False), 1
    assert not live.due(ended, 0.8)
    assert live.due(Status("idle", 2, 5, 5), 0.9)  # ended between two polls


def test_session_file_index_follows_the_files(tmp_path: Any) -> None:
    (tmp_path / "scan_000004.h5").touch()
    cfg = parse_config({"output": {"directory": str(tmp_path), "filename": "scan"}})

    class Control:
        def outputs_spec(self) -> list[Any]:
            return []

        def parameters(self) -> list[Any]:
            return []

    session = Session.create(cfg, Control())  # type: ignore[arg-type]
    assert session.file_index == 5
    session.file_indices[1] = 5
    session.acquisition_ended(1, str(tmp_path / "scan_000007.h5"))
    assert session.file_index == 8
    with pytest.raises(ValueError, match="path separator"):
        session.set_file_setting("filename", "a/b")
    assert session.unchanged("filepath", f"{tmp_path}/")
