"""Settings of the MOENCH reducer; names follow the seed server's Tango attributes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from actors.reduce.base import ReducerSettings
from actors.reduce.moench.pattern import FrameType, parse_pattern


class MoenchSettings(ReducerSettings):
    """Pedestal tracking, photon classification and pump-probe accumulation."""

    threshold: float = Field(80.0, ge=0, allow_inf_nan=False,
                             description="ADU above the pedestal counted by threshold_img")
    counting_sigma: float = Field(4.0, ge=0, allow_inf_nan=False,
                                  description="photon classifier cut k in units of sigma")
    processing_pattern: str = Field(
        "up", description="frame types by frameIndex mod len: tokens ped, p, up")
    split_pump: bool = Field(False, description="even frames unpumped, odd frames pumped")
    normalize: bool = Field(False, description="divide images by their frame count")
    process_pedestal_img: bool = Field(False, description="every frame is a pedestal frame")
    update_pedestal_img: bool = Field(
        True, description="class-0 pixels of non-pedestal frames update the pedestal")
    process_analog_img: bool = True
    process_threshold_img: bool = True
    process_counting_img: bool = True
    pedestal_epoch: int = Field(100, ge=1, description="frames per pedestal epoch E")
    pedestal_lag: int = Field(1, ge=0, description="epochs of lag L before a state is used")
    pedestal_frames: int = Field(5000, ge=1, description="MovingStat capacity N")
    pedestal_min_frames: int = Field(
        500, ge=1, description="frames the pedestal needs before its images mean anything "
        "(at most pedestal_frames); fewer: pedestal_ready is false and the result, log, Tango "
        "Status and NeXus file say so: take a dark run first")

    @field_validator("processing_pattern", mode="before")
    @classmethod
    def _pattern_text(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return json.dumps([str(v) for v in value])
        return value

    @field_validator("processing_pattern")
    @classmethod
    def _pattern_valid(cls, value: str) -> str:
        parse_pattern(value)
        return value

    @property
    def pattern(self) -> tuple[FrameType, ...]:
        return parse_pattern(self.processing_pattern)
