"""Frame types of the MOENCH pump-probe pattern (moench.md §2.1), parsed without eval.

The type of frame *t* is ``pattern[t mod len(pattern)]``; ``split_pump`` replaces the
pattern by unpumped/pumped alternation (even frames unpumped, odd pumped) and
``process_pedestal_img`` makes every frame a pedestal frame.
"""

from __future__ import annotations

import json
import re
from enum import IntEnum

import numpy as np
import numpy.typing as npt


class FrameType(IntEnum):
    PEDESTAL = 0
    UNPUMPED = 1
    PUMPED = 2


TOKENS: dict[str, FrameType] = {
    "ped": FrameType.PEDESTAL, "pedestal": FrameType.PEDESTAL,
    "up": FrameType.UNPUMPED, "unpumped": FrameType.UNPUMPED,
    "p": FrameType.PUMPED, "pumped": FrameType.PUMPED,
}
SPLIT_PUMP_PATTERN = (FrameType.UNPUMPED, FrameType.PUMPED)
#: longest pattern text accepted (a real pattern is a few tokens)
MAX_PATTERN_CHARS = 4096


def parse_pattern(text: str) -> tuple[FrameType, ...]:
    """Parse ``'["ped","p","up"]'`` (JSON list) or ``"ped, p up"`` (comma/space separated).

    Raises ValueError naming ``processing_pattern`` for an empty pattern, a bad token, a text
    longer than :data:`MAX_PATTERN_CHARS` or a nested list.
    """
    if len(text) > MAX_PATTERN_CHARS:
        raise ValueError(f"processing_pattern: longer than {MAX_PATTERN_CHARS} characters")
    stripped = text.strip()
    if stripped.count("[") > 1:  # also keeps json's recursion away from hostile nesting
        raise ValueError("processing_pattern: a flat list of tokens, not nested lists")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"processing_pattern: not a valid JSON list: {exc.msg}") from exc
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("processing_pattern: JSON pattern must be a list of strings")
        tokens = [i.strip() for i in items]
    else:
        tokens = [t for t in re.split(r"[\s,]+", stripped) if t]
    if not tokens:
        raise ValueError("processing_pattern: empty pattern (give e.g. 'up' or 'up,p')")
    out = []
    for token in tokens:
        kind = TOKENS.get(token.strip("'\"").lower())
        if kind is None:
            raise ValueError(f"processing_pattern: unknown token {token!r} "
                             f"(expected one of {', '.join(TOKENS)})")
        out.append(kind)
    return tuple(out)


def frame_types(frame_numbers: npt.NDArray[np.int64], pattern: tuple[FrameType, ...],
                *, split_pump: bool = False,
                process_pedestal_img: bool = False) -> npt.NDArray[np.int8]:
    """Type of each frame as int8 (values of :class:`FrameType`)."""
    if process_pedestal_img:
        return np.full(frame_numbers.shape, FrameType.PEDESTAL, dtype=np.int8)
    pat = SPLIT_PUMP_PATTERN if split_pump else pattern
    table = np.asarray([int(t) for t in pat], dtype=np.int8)
    return table[np.asarray(frame_numbers, dtype=np.int64) % len(table)]
