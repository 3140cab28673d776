"""Example user reducer: intensity-weighted centre of mass of every frame.

Config entry::

    reducers:
      - type: actors.reduce.examples.centre_of_mass:CentreOfMass
        name: com
        min_value: 0

A user reducer is a :class:`~actors.reduce.base.Reducer` subclass with a ``Settings``
model; its partial is any small picklable value whose ``merge`` is associative (here:
exact integer moments, so the result does not depend on how batches were grouped).
Outputs: ``<name>_row`` / ``<name>_col`` (per-frame series, NaN for an empty frame)
and ``<name>`` (centre of mass of the summed frames, a 2-element spectrum).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from actors.reduce.base import Batch, OutputSpec, OutputValue, Reducer, ReducerSettings
from actors.reduce.series import SeriesChunks
from actors.wire.model import Geometry


class CentreOfMassSettings(ReducerSettings):
    min_value: float = Field(0.0, ge=0, description="pixels at or below this are ignored")


@dataclass(frozen=True)
class Moments:
    """Σw, Σw·row, Σw·col over all frames (float64: exact for integer data < 2**53)."""

    m0: float = 0.0
    m_row: float = 0.0
    m_col: float = 0.0
    rows: SeriesChunks = SeriesChunks("float64")
    cols: SeriesChunks = SeriesChunks("float64")


class CentreOfMass(Reducer[CentreOfMassSettings, Moments]):
    Settings = CentreOfMassSettings
    runtime_settings = frozenset({"min_value"})

    def __init__(self, settings: CentreOfMassSettings, geometry: Geometry, *,
                 name: str | None = None):
        super().__init__(settings, geometry, name=name or "centre_of_mass")
        self._r = np.arange(geometry.rows, dtype=np.float64)
        self._c = np.arange(geometry.cols, dtype=np.float64)

    def outputs_spec(self) -> list[OutputSpec]:
        return [OutputSpec(f"{self.name}_row", "series", "float64", (), "pixels",
                           "row of the centre of mass of each frame"),
                OutputSpec(f"{self.name}_col", "series", "float64", (), "pixels",
                           "column of the centre of mass of each frame"),
                OutputSpec(self.name, "spectrum", "float64", (2,), "pixels",
                           "(row, col) centre of mass of all frames")]

    def empty(self) -> Moments:
        return Moments()

    def process(self, batch: Batch, state: Mapping[int, Any] | None = None) -> Moments:
        w = batch.frames.astype(np.float64)
        w[w <= self.settings.min_value] = 0.0
        if batch.mask is not None:
            w[:, batch.mask] = 0.0
        m0 = w.sum(axis=(1, 2))
        m_row = w.sum(axis=2) @ self._r
        m_col = w.sum(axis=1) @ self._c
        with np.errstate(invalid="ignore", divide="ignore"):
            row, col = m_row / m0, m_col / m0
        fn = batch.frame_numbers
        return Moments(float(m0.sum()), float(m_row.sum()), float(m_col.sum()),
                       SeriesChunks.of(fn, row, "float64"), SeriesChunks.of(fn, col, "float64"))

    def merge(self, a: Moments, b: Moments) -> Moments:
        return Moments(a.m0 + b.m0, a.m_row + b.m_row, a.m_col + b.m_col,
                       a.rows.concat(b.rows), a.cols.concat(b.cols))

    def outputs(self, partial: Moments) -> dict[str, OutputValue]:
        centre = (np.array([partial.m_row, partial.m_col]) / partial.m0 if partial.m0 > 0
                  else np.full(2, np.nan))
        return {f"{self.name}_row": partial.rows.to_series(),
                f"{self.name}_col": partial.cols.to_series(), self.name: centre}
