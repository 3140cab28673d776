"""The instrument of an acquisition file: NXinstrument/NXdetector from the stream's header.

Written under ``/entry`` from :class:`~actors.wire.detector.DetectorInfo`::

    instrument/               NXinstrument: name (output.instrument_name), time_zone
        detector/             NXdetector: description, serial_number, sensor_material,
                              sensor_thickness, x/y_pixel_size, beam_center_x/y, distance,
                              count_time, frame_time, threshold_energy, saturation_value,
                              bit_depth_readout, *_applied flags, pixel_mask (NXmx bits),
                              depends_on + transformations/translation (the distance),
                              data -> /entry/frames/data when frames are stored
            module/           NXdetector_module: data_origin, data_size, module_offset,
                              fast_pixel_direction, slow_pixel_direction (NXmx geometry)
            header/           NXcollection: every scalar field of the series header as sent
        beam/                 NXbeam: incident_wavelength, incident_energy
    source/                   NXsource: name (output.source_name); also linked as
                              instrument/source (NXmx has it in the entry, the
                              NXinstrument base class in the instrument)
    sample/                   NXsample: name (output.sample_name), depends_on "."

A DECTRIS stream (EIGER) gives what the NXmx application definition requires: the entry
then declares ``definition = "NXmx"`` and ``end_time_estimated``, and the tests validate the
file against NXmx with the NeXus validator of ``nexusformat``. An slsDetector stream gives
less (no energy, no geometry beyond the pixel pitch of its type): its file has the same
groups with what is known and no ``definition``. A field the stream did not give is left out,
never invented; fields rayline inferred (the sls pixel pitch from the detector type) are
listed in ``detector/rayline_derived``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from actors.output.nx import nx_group, set_attrs, write_field, write_text
from actors.output.tree import write_tree
from actors.wire.detector import DetectorInfo

logger = logging.getLogger(__name__)

#: the application definition a file declares when its detector facts satisfy it
NXMX = "NXmx"
#: the detector facts NXmx requires (besides what every file has)
_NXMX_FIELDS = ("sensor_material", "sensor_thickness", "x_pixel_size", "y_pixel_size",
                "wavelength")
DETECTOR = "/entry/instrument/detector"


@dataclass(frozen=True)
class Names:
    """What the stream cannot say: the beamline, the facility and the sample."""

    instrument: str = "unknown"
    source: str = "unknown"
    sample: str = "unknown"


def is_nxmx(detector: DetectorInfo | None) -> bool:
    """Whether the detector facts are enough for an NXmx entry (DECTRIS streams give them)."""
    return detector is not None and detector.protocol.startswith("dectris") and \
        all(getattr(detector, f) is not None for f in _NXMX_FIELDS)


def write_instrument(entry: h5py.Group, detector: DetectorInfo | None, names: Names) -> None:
    """``instrument``, ``source`` and ``sample`` of ``entry`` (see the module doc)."""
    instrument = nx_group(entry, "instrument", "NXinstrument")
    write_text(instrument, "name", names.instrument)
    write_text(instrument, "time_zone", _utc_offset())
    source = nx_group(entry, "source", "NXsource")  # where NXmx wants it
    write_text(source, "name", names.source)
    instrument["source"] = source  # and where the NXinstrument base class has it
    sample = nx_group(entry, "sample", "NXsample")
    write_text(sample, "name", names.sample)
    write_text(sample, "depends_on", ".")
    if detector is None:
        return
    _write_detector(nx_group(instrument, "detector", "NXdetector"), detector)
    beam = nx_group(instrument, "beam", "NXbeam")
    wavelength = detector.wavelength
    if wavelength is not None:
        write_field(beam, "incident_wavelength", wavelength, units="angstrom")
    if detector.incident_energy is not None:
        write_field(beam, "incident_energy", detector.incident_energy, units="eV")
    if is_nxmx(detector):
        write_text(entry, "definition", NXMX)
        if "end_time" in entry:
            entry["end_time_estimated"] = entry["end_time"][()]


def link_frames(entry: h5py.Group) -> None:
    """``detector/data`` is the frame stack, when the file stores one (NXmx's raw data)."""
    if "frames" in entry and "data" in entry["frames"] and \
            "instrument/detector" in entry and "data" not in entry["instrument/detector"]:
        entry["instrument/detector"]["data"] = entry["frames/data"]


def _utc_offset() -> str:
    """The local time zone as NXmx has it: the UTC offset, e.g. ``+01:00``."""
    offset = dt.datetime.now().astimezone().strftime("%z")
    return f"{offset[:3]}:{offset[3:]}"


def _write_detector(group: h5py.Group, d: DetectorInfo) -> None:
    texts = {"description": d.description, "serial_number": d.serial_number,
             "sensor_material": d.sensor_material}
    for name, text in texts.items():
        if text is not None:
            write_text(group, name, text)
    numbers: dict[str, tuple[Any, str]] = {
        "sensor_thickness": (d.sensor_thickness, "m"),
        "x_pixel_size": (d.x_pixel_size, "m"), "y_pixel_size": (d.y_pixel_size, "m"),
        "beam_center_x": (d.beam_center_x, "pixel"), "beam_center_y": (d.beam_center_y, "pixel"),
        "distance": (d.distance, "m"), "count_time": (d.count_time, "s"),
        "frame_time": (d.frame_time, "s"), "saturation_value": (d.saturation_value, ""),
        "bit_depth_readout": (d.bit_depth_readout, ""),
        "countrate_correction_applied": (d.countrate_correction_applied, ""),
        "flatfield_applied": (d.flatfield_applied, ""),
        "pixel_mask_applied": (d.pixel_mask_applied, ""),
        "virtual_pixel_interpolation_applied": (d.virtual_pixel_interpolation_applied, ""),
    }
    for name, (value, units) in numbers.items():
        if value is not None:
            write_field(group, name, value, units=units)
    if d.threshold_energy:
        channels = list(d.threshold_energy)
        values = [d.threshold_energy[c] for c in channels]
        dataset = write_field(group, "threshold_energy",
                              values[0] if len(values) == 1 else np.asarray(values), units="eV")
        set_attrs(dataset, channels=channels)
    if d.pixel_mask is not None:
        write_field(group, "pixel_mask", d.pixel_mask, compact=True,
                    long_name="pixel mask (NXmx bits: 0 gap, 1 dead, 2 under-responding, "
                    "3 over-responding, 4 noisy; 0 = good)")
    if d.module_grid is not None:
        write_field(group, "module_grid", np.asarray(d.module_grid, dtype=np.int64),
                    long_name="modules (rows, columns)")
    set_attrs(group, rayline_protocol=d.protocol)
    if d.derived:
        write_text(group, "rayline_derived", ", ".join(d.derived),
                   long_name="fields inferred from the detector type, not sent by the stream")
    _write_geometry(group, d)
    if d.header:
        write_tree(nx_group(group, "header", "NXcollection"), d.header)


def _write_geometry(group: h5py.Group, d: DetectorInfo) -> None:
    """The NXmx module: pixel (0, 0) at the beam centre's offset, the fast axis along −x and
    the slow axis along −y of the laboratory frame (as DECTRIS' file writer puts an EIGER),
    behind the detector distance along the beam (+z)."""
    module = nx_group(group, "module", "NXdetector_module")
    write_field(module, "data_origin", np.array([0, 0], dtype=np.int64))
    write_field(module, "data_size", np.array([d.rows, d.cols], dtype=np.int64))
    if d.x_pixel_size is None or d.y_pixel_size is None:
        return
    depends = "."
    if d.distance is not None:
        transformations = nx_group(group, "transformations", "NXtransformations")
        write_field(transformations, "translation", d.distance, units="m",
                    transformation_type="translation", vector=np.array([0.0, 0.0, 1.0]),
                    depends_on=".")
        depends = f"{DETECTOR}/transformations/translation"
        write_field(group, "distance_derived", False)
    write_text(group, "depends_on", depends)
    bx = (d.beam_center_x or 0.0) * d.x_pixel_size
    by = (d.beam_center_y or 0.0) * d.y_pixel_size
    write_field(module, "module_offset", 0.0, units="m", transformation_type="translation",
                vector=np.array([1.0, 0.0, 0.0]), offset=np.array([bx, by, 0.0]),
                depends_on=depends)
    offset = f"{DETECTOR}/module/module_offset"
    write_field(module, "fast_pixel_direction", d.x_pixel_size, units="m",
                transformation_type="translation", vector=np.array([-1.0, 0.0, 0.0]),
                offset=np.zeros(3), depends_on=offset)
    write_field(module, "slow_pixel_direction", d.y_pixel_size, units="m",
                transformation_type="translation", vector=np.array([0.0, -1.0, 0.0]),
                offset=np.zeros(3), depends_on=offset)
