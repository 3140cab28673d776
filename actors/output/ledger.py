"""The acquisition ledger as an NXcollection.

A ledger entry ``K`` holding counts per reason (``dropped``, ``rejected``) is written as
``K`` = the total and ``K_by_reason`` = an NXcollection of the counts, so ``K`` is always a
number. ``received``, ``processed``, ``dropped``, ``lost`` and ``rejected`` are always
present (0 when the ledger lacks them); ``duration`` is the acquisition's wall time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py

from actors.output.nx import set_attrs
from actors.output.tree import write_tree

CORE = ("received", "processed", "dropped", "lost", "rejected")
BY_REASON = ("dropped", "rejected")
LABELS = {
    "received": "frames received from the source",
    "processed": "frames processed by the reducers",
    "dropped": "frames received but not processed (see dropped_by_reason)",
    "lost": "frames never received (gaps in frame numbers)",
    "rejected": "messages rejected as invalid (see rejected_by_reason)",
    "duration": "acquisition wall time",
}


def ledger_view(ledger: Mapping[str, Any], duration: float) -> dict[str, Any]:
    """The ledger with per-reason mappings split into a total and ``<key>_by_reason``."""
    out: dict[str, Any] = {}
    for key, value in ledger.items():
        if key == "sources":  # a multi-module detector: one sub-collection per module
            if value:
                out[key] = {str(k): ledger_view(v, duration) for k, v in value.items()}
            continue
        if isinstance(value, Mapping) and _counts(value):
            out[key] = int(ledger.get(f"{key}_total", sum(value.values())))
            out[f"{key}_by_reason"] = {str(k): int(v) for k, v in value.items()}
        elif not (key.endswith("_total") and isinstance(ledger.get(key[:-6]), Mapping)):
            out[key] = value
    for key in CORE:
        out.setdefault(key, 0)
    for key in BY_REASON:
        out.setdefault(f"{key}_by_reason", {})
    out["duration"] = float(duration)
    return out


def write_ledger(group: h5py.Group, ledger: Mapping[str, Any], duration: float) -> None:
    write_tree(group, ledger_view(ledger, duration))
    for key, label in LABELS.items():
        set_attrs(group[key], long_name=label)
    set_attrs(group["duration"], units="s")


def _counts(mapping: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values())
