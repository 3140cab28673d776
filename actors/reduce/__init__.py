"""Pure reducers (no Ray, ZMQ or Tango): batches of frames in, mergeable partials out.

See :mod:`actors.reduce.base` for the interface and the state hand-off protocol,
:mod:`actors.reduce.cutter` for the batch-cut rule, :mod:`actors.reduce.registry` for
building reducers from the config.
"""

from actors.reduce.base import (
    Batch,
    OutputSpec,
    OutputValue,
    Reducer,
    ReducerConfigError,
    ReducerSettings,
    Series,
)
from actors.reduce.cutter import BatchCutter, batch_boundary_needed
from actors.reduce.moench.pedestal import EpochSamples, PedestalState
from actors.reduce.moench.reducer import MoenchReducer
from actors.reduce.moench.settings import MoenchSettings
from actors.reduce.registry import BUILTIN, build_reducer, load_reducer_class

__all__ = [
    "BUILTIN",
    "Batch",
    "BatchCutter",
    "EpochSamples",
    "MoenchReducer",
    "MoenchSettings",
    "OutputSpec",
    "OutputValue",
    "PedestalState",
    "Reducer",
    "ReducerConfigError",
    "ReducerSettings",
    "Series",
    "batch_boundary_needed",
    "build_reducer",
    "load_reducer_class",
]
