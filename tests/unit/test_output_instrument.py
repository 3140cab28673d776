"""The detector as the stream described it, in the file: NXinstrument/NXdetector from the
series start (DECTRIS V1 and V2) and the image header (slsDetector); an EIGER file validates
against the NXmx application definition (nexusformat's validator)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from actors.core.acquisition import AcquisitionResult
from actors.core.status import Ledger
from actors.output import read_outputs, write_acquisition
from actors.output.instrument import Names
from actors.record.dumps import iter_dump_messages
from actors.reduce.base import OutputSpec, Series
from actors.wire import dectris_v1, dectris_v2, sls
from actors.wire.detector import DetectorInfo, describe
from actors.wire.model import Geometry, Image, Protocol, SeriesStart
from tests.nexus_validation import application_errors, base_class_errors

DATA = Path(__file__).resolve().parents[1] / "data"
GEOMETRY = Geometry(48, 40, "uint16")
#: the one complaint of the base-class check: NXmx wants the NXsource in the NXentry, the
#: NXentry base class does not list it (the file also links it into the instrument)
SOURCE_IN_ENTRY = "NXsource is an invalid class in NXentry"


def v2_detector(**extra: object) -> DetectorInfo:
    mask = np.zeros(GEOMETRY.shape, np.uint32)
    mask[2, 3], mask[5, 0] = 1, 16
    start = dectris_v2.decode(dectris_v2.encode_start(
        9, geometry=GEOMETRY, number_of_images=4, pixel_mask=mask, extra=extra))
    image = dectris_v2.decode(dectris_v2.encode_image(9, 0, np.zeros(GEOMETRY.shape,
                                                                      np.uint16)))
    assert isinstance(start, SeriesStart) and isinstance(image, Image)
    return describe(Protocol.DECTRIS_V2, image, start, GEOMETRY)


def test_dectris_v2_start_gives_the_detector() -> None:
    d = v2_detector(detector_translation=[0.0, 0.0, 0.25])
    assert (d.rows, d.cols, d.dtype) == (48, 40, "uint16")
    assert d.description == "Dectris EIGER2 Si (simulated)" and d.serial_number == "E-00-0000"
    assert (d.sensor_material, d.sensor_thickness) == ("Si", 0.00045)
    assert (d.x_pixel_size, d.y_pixel_size) == (7.5e-05, 7.5e-05)
    assert (d.beam_center_x, d.beam_center_y, d.distance) == (20.0, 24.0, 0.25)
    assert (d.count_time, d.frame_time) == (0.0999999, 0.1)
    assert d.threshold_energy == {"threshold_1": 4000.0} and d.incident_energy == 8000.0
    assert d.saturation_value == 65534 and d.number_of_images == 4
    assert d.pixel_mask is not None and d.pixel_mask[2, 3] == 1 and d.pixel_mask[5, 0] == 16
    assert d.header["series_id"] == 9 and "pixel_mask" not in d.header


def test_the_real_eiger1_recording_gives_the_detector() -> None:
    messages = iter(iter_dump_messages(DATA / "eiger_legacy_dump.zip"))
    start, image = dectris_v1.decode(next(messages)), dectris_v1.decode(next(messages))
    assert isinstance(start, SeriesStart) and isinstance(image, Image)
    d = describe(Protocol.DECTRIS_V1, image, start, image.geometry)
    assert (d.description, d.serial_number) == ("Dectris EIGER1 Si 1M", "E-02-0153")
    assert (d.x_pixel_size, d.sensor_thickness, d.incident_energy) == (7.5e-05, 0.00045, 8000.0)
    assert d.threshold_energy == {"threshold_1": 4000.0} and d.count_time == 0.9999999
    assert d.pixel_mask is not None and d.pixel_mask.shape == (1065, 1030)
    assert int(np.count_nonzero(d.pixel_mask)) == d.header["number_of_excluded_pixels"]


@pytest.mark.parametrize(("kind", "pitch"), [("moench", 25e-6), ("jungfrau", 75e-6)])
def test_an_sls_header_gives_the_type_and_its_pixel_pitch(kind: str, pitch: float) -> None:
    image = sls.decode(sls.encode_image(0, np.zeros((40, 30), np.uint16), det_type=kind))
    assert isinstance(image, Image)
    d = describe(Protocol.SLS, image, None, image.geometry)
    assert d.description == kind.upper() and d.x_pixel_size == pitch == d.y_pixel_size
    assert d.bit_depth_readout == 16 and d.module_grid == (1, 1)
    assert "x_pixel_size" in d.derived and d.incident_energy is None


def test_a_start_of_another_series_or_an_odd_header_gives_the_geometry_only() -> None:
    image = dectris_v2.decode(dectris_v2.encode_image(2, 0, np.zeros(GEOMETRY.shape,
                                                                      np.uint16)))
    start = dectris_v2.decode(dectris_v2.encode_start(1, geometry=GEOMETRY))
    assert isinstance(image, Image) and isinstance(start, SeriesStart)
    assert describe(Protocol.DECTRIS_V2, image, start, GEOMETRY) == \
        DetectorInfo("dectris-v2", 48, 40, "uint16")
    odd = dectris_v2.decode(dectris_v2.encode_start(
        2, geometry=GEOMETRY, extra={"detector_translation": "far", "pixel_size_x": "big",
                                     "threshold_energy": [1, 2]}))
    assert isinstance(odd, SeriesStart)
    d = describe(Protocol.DECTRIS_V2, image, odd, GEOMETRY)
    assert d.distance is None and d.x_pixel_size is None and d.threshold_energy == {}


def write(path: Path, detector: DetectorInfo | None, names: Names | None = None) -> Path:
    image = np.arange(GEOMETRY.rows * GEOMETRY.cols, dtype=np.float64).reshape(GEOMETRY.shape)
    outputs = {"sum": image, "total": Series(np.arange(4), np.array([1.0, 2.0, 3.0, 4.5]))}
    specs = [OutputSpec("sum", "image", "float64", GEOMETRY.shape),
             OutputSpec("total", "series", "float64", ())]
    result = AcquisitionResult(3, "finished", outputs, Ledger(3, received=4), 1e9, 1e9 + 2,
                               detector=detector)
    return write_acquisition(path, result, specs, {"a": 1}, names=names)


def test_an_eiger_file_is_nxmx(tmp_path: Path) -> None:
    path = write(tmp_path / "eiger.h5", v2_detector(),
                 Names("P11", "PETRA III", "lysozyme"))
    errors, report = application_errors(path)
    assert errors == 0, report
    errors, report = base_class_errors(path)
    assert errors == 1 and SOURCE_IN_ENTRY in report, report
    with h5py.File(path) as f:
        entry = f["entry"]
        assert entry["definition"].asstr()[()] == "NXmx"
        assert entry["instrument/name"].asstr()[()] == "P11"
        assert entry["source/name"].asstr()[()] == "PETRA III"
        assert entry["instrument/source"] == entry["source"]
        assert entry["sample/name"].asstr()[()] == "lysozyme"
        det = entry["instrument/detector"]
        assert det["x_pixel_size"][()] == 7.5e-05 and det["x_pixel_size"].attrs["units"] == "m"
        assert det["threshold_energy"][()] == 4000.0
        assert det["pixel_mask"][2, 3] == 1 and det["pixel_mask"].dtype == np.uint8
        assert det["header/detector_serial_number"].asstr()[()] == "E-00-0000"
        assert entry["instrument/beam/incident_wavelength"][()] == pytest.approx(1.5498, 1e-4)
        module = det["module"]
        np.testing.assert_array_equal(module["data_size"][()], [48, 40])
        np.testing.assert_array_equal(module["fast_pixel_direction"].attrs["vector"],
                                      [-1, 0, 0])
    assert set(read_outputs(path)) == {"sum", "total"}


def test_an_sls_file_records_what_the_stream_gave_and_claims_no_definition(
        tmp_path: Path) -> None:
    image = sls.decode(sls.encode_image(0, np.zeros(GEOMETRY.shape, np.uint16)))
    assert isinstance(image, Image)
    path = write(tmp_path / "moench.h5", describe(Protocol.SLS, image, None, GEOMETRY))
    errors, report = base_class_errors(path)
    assert errors == 1 and SOURCE_IN_ENTRY in report, report
    with h5py.File(path) as f:
        entry = f["entry"]
        assert "definition" not in entry
        det = entry["instrument/detector"]
        assert det["description"].asstr()[()] == "MOENCH"
        assert det["x_pixel_size"][()] == 25e-6
        assert "x_pixel_size" in det["rayline_derived"].asstr()[()]
        assert "pixel_mask" not in det and "incident_wavelength" not in entry["instrument/beam"]


def test_a_result_without_a_detector_still_names_the_instrument(tmp_path: Path) -> None:
    path = write(tmp_path / "bare.h5", None)
    with h5py.File(path) as f:
        assert f["entry/instrument/name"].asstr()[()] == "unknown"
        assert "detector" not in f["entry/instrument"] and "definition" not in f["entry"]
