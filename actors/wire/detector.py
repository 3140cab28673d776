"""What the stream says about the detector: the facts a NeXus file records (pure).

DECTRIS streams declare them in the series start (Stream V2 ``start`` message, Stream V1
detector-config header part: SIMPLON ``detector/config`` keys); an slsDetector stream only
names the detector type, module grid and bit depth in every image header, and the pixel
size follows from the type. Every field is optional: None means the stream did not say.
Lengths are in metres, times in seconds, energies in eV, the wavelength in ångström, the
beam centre in pixels, as NXmx has them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.wire.model import Geometry, Image, Protocol, SeriesStart

logger = logging.getLogger(__name__)

#: slsDetector ``detType`` codes (slsDetectorDefs::detectorType) and their pixel pitch (m)
SLS_TYPES: dict[int, tuple[str, float | None]] = {
    0: ("generic", None), 1: ("PSI EIGER", 75e-6), 2: ("GOTTHARD", 50e-6),
    3: ("JUNGFRAU", 75e-6), 4: ("Chip Test Board", None), 5: ("MOENCH", 25e-6),
    6: ("MYTHEN3", 50e-6), 7: ("GOTTHARD2", 50e-6), 8: ("Xilinx CTB", None)}
#: sensor facts of the slsDetector types that have one sensor
SLS_SENSORS: dict[int, tuple[str, float]] = {3: ("Si", 320e-6), 5: ("Si", 320e-6),
                                             1: ("Si", 320e-6)}
#: how big a header the file keeps, at most (a stream may carry a huge user_data)
HEADER_LIMIT = 1 << 20
#: hc in eV * ångström (the wavelength of a photon energy)
HC_EV_ANGSTROM = 12398.419843320026


@dataclass(frozen=True)
class DetectorInfo:
    """The detector of one acquisition, as its stream described it."""

    protocol: str
    rows: int
    cols: int
    dtype: str
    description: str | None = None
    serial_number: str | None = None
    sensor_material: str | None = None
    sensor_thickness: float | None = None
    x_pixel_size: float | None = None
    y_pixel_size: float | None = None
    beam_center_x: float | None = None
    beam_center_y: float | None = None
    distance: float | None = None
    count_time: float | None = None
    frame_time: float | None = None
    incident_energy: float | None = None
    incident_wavelength: float | None = None
    threshold_energy: Mapping[str, float] = field(default_factory=dict)
    saturation_value: int | None = None
    bit_depth_readout: int | None = None
    number_of_images: int | None = None
    countrate_correction_applied: bool | None = None
    flatfield_applied: bool | None = None
    pixel_mask_applied: bool | None = None
    virtual_pixel_interpolation_applied: bool | None = None
    module_grid: tuple[int, int] | None = None  # modules (rows, cols) of an sls detector
    pixel_mask: npt.NDArray[np.uint32] | None = None  # NXmx bits, (rows, cols)
    header: Mapping[str, Any] = field(default_factory=dict)  # every scalar field as sent
    derived: tuple[str, ...] = ()  # fields rayline inferred (e.g. pixel size from the type)

    @property
    def wavelength(self) -> float | None:
        """The incident wavelength (Å), from the energy if the stream gave only that."""
        if self.incident_wavelength:
            return self.incident_wavelength
        if self.incident_energy:
            return HC_EV_ANGSTROM / self.incident_energy
        return None


def describe(protocol: Protocol, first: Image, start: SeriesStart | None,
             geometry: Geometry) -> DetectorInfo:
    """The detector of an acquisition from its series start (if any) and its first frame."""
    try:
        if protocol is Protocol.SLS:
            return _sls(first, geometry)
        if start is not None and start.series_id == first.series_id:
            if protocol is Protocol.DECTRIS_V2:
                return _dectris_v2(start, geometry)
            if protocol is Protocol.DECTRIS_V1:
                return _dectris_v1(start, geometry)
    except (TypeError, ValueError, KeyError) as exc:  # a header of unexpected shape
        logger.warning("the series header's detector fields are not understood (%s); the "
                       "file records the frame geometry only", exc)
    return DetectorInfo(str(protocol), geometry.rows, geometry.cols, geometry.dtype)


def _sls(first: Image, geometry: Geometry) -> DetectorInfo:
    head = first.header
    code = _int(head.get("detType"))
    name, pitch = SLS_TYPES.get(code, (None, None)) if code is not None else (None, None)
    material, thickness = SLS_SENSORS.get(code, (None, None)) if code is not None else \
        (None, None)
    shape = head.get("detshape")
    grid = (int(shape[1]), int(shape[0])) if isinstance(shape, list | tuple) and \
        len(shape) == 2 and all(isinstance(v, int) for v in shape) else None
    derived = tuple(k for k, v in (("x_pixel_size", pitch), ("y_pixel_size", pitch),
                                   ("sensor_material", material),
                                   ("sensor_thickness", thickness)) if v is not None)
    return DetectorInfo(
        str(Protocol.SLS), geometry.rows, geometry.cols, geometry.dtype,
        description=name, sensor_material=material, sensor_thickness=thickness,
        x_pixel_size=pitch, y_pixel_size=pitch, bit_depth_readout=_int(head.get("bitmode")),
        module_grid=grid, header=_scalars(head, ("data", "size", "frameNumber", "frameIndex",
                                                 "acqIndex", "progress", "timestamp",
                                                 "packetNumber", "completeImage")),
        derived=derived)


def _dectris_v2(start: SeriesStart, geometry: Geometry) -> DetectorInfo:
    m = start.metadata
    translation = m.get("detector_translation")
    distance = _float(translation[2]) if isinstance(translation, list) and \
        len(translation) == 3 else None
    thresholds = m.get("threshold_energy")
    return DetectorInfo(
        str(Protocol.DECTRIS_V2), geometry.rows, geometry.cols, geometry.dtype,
        description=_str(m.get("detector_description")),
        serial_number=_str(m.get("detector_serial_number")),
        sensor_material=_str(m.get("sensor_material")),
        sensor_thickness=_float(m.get("sensor_thickness")),
        x_pixel_size=_float(m.get("pixel_size_x")), y_pixel_size=_float(m.get("pixel_size_y")),
        beam_center_x=_float(m.get("beam_center_x")),
        beam_center_y=_float(m.get("beam_center_y")), distance=distance,
        count_time=_float(m.get("count_time")), frame_time=_float(m.get("frame_time")),
        incident_energy=_float(m.get("incident_energy")),
        incident_wavelength=_float(m.get("incident_wavelength")),
        threshold_energy=_thresholds(thresholds),
        saturation_value=_int(m.get("saturation_value")),
        bit_depth_readout=8 * np.dtype(geometry.dtype).itemsize,
        number_of_images=start.number_of_images,
        countrate_correction_applied=_bool(m.get("countrate_correction_enabled")),
        flatfield_applied=_bool(m.get("flatfield_enabled")),
        pixel_mask_applied=_bool(m.get("pixel_mask_enabled")),
        virtual_pixel_interpolation_applied=_bool(
            m.get("virtual_pixel_interpolation_enabled")),
        pixel_mask=_mask(start, geometry), header=_scalars(m))


def _dectris_v1(start: SeriesStart, geometry: Geometry) -> DetectorInfo:
    m = start.metadata
    threshold = _float(m.get("threshold_energy"))
    return DetectorInfo(
        str(Protocol.DECTRIS_V1), geometry.rows, geometry.cols, geometry.dtype,
        description=_str(m.get("description")), serial_number=_str(m.get("detector_number")),
        sensor_material=_str(m.get("sensor_material")),
        sensor_thickness=_float(m.get("sensor_thickness")),
        x_pixel_size=_float(m.get("x_pixel_size")), y_pixel_size=_float(m.get("y_pixel_size")),
        beam_center_x=_float(m.get("beam_center_x")),
        beam_center_y=_float(m.get("beam_center_y")),
        distance=_float(m.get("detector_distance")),
        count_time=_float(m.get("count_time")), frame_time=_float(m.get("frame_time")),
        incident_energy=_float(m.get("photon_energy")),
        incident_wavelength=_float(m.get("wavelength")),
        threshold_energy={} if threshold is None else {"threshold_1": threshold},
        saturation_value=_int(m.get("countrate_correction_count_cutoff")),
        bit_depth_readout=_int(m.get("bit_depth_readout")) or _int(m.get("bit_depth_image")),
        number_of_images=start.number_of_images,
        countrate_correction_applied=_bool(m.get("countrate_correction_applied")),
        flatfield_applied=_bool(m.get("flatfield_correction_applied")),
        pixel_mask_applied=_bool(m.get("pixel_mask_applied")),
        virtual_pixel_interpolation_applied=_bool(
            m.get("virtual_pixel_correction_applied")),
        pixel_mask=_mask(start, geometry), header=_scalars(m))


def _mask(start: SeriesStart, geometry: Geometry) -> npt.NDArray[np.uint32] | None:
    mask = start.arrays.get("pixel_mask")
    if mask is None or tuple(mask.shape) != geometry.shape:
        return None
    return np.asarray(mask).astype(np.uint32, copy=False)


def _scalars(fields: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The header's JSON-representable fields (what a file can keep as they came)."""
    out: dict[str, Any] = {}
    size = 0
    for key, value in fields.items():
        if key in skip:
            continue
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            continue
        size += len(text)
        if size > HEADER_LIMIT:
            logger.info("series header beyond %d B: field %r and later not kept", HEADER_LIMIT,
                        key)
            break
        out[str(key)] = value
    return out


def _thresholds(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): f for k, v in value.items() if (f := _float(v)) is not None}
    single = _float(value)
    return {} if single is None else {"threshold_1": single}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
