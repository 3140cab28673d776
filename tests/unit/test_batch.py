"""FrameBatch storage layouts: frames cut into row chunks for the object store read back
whole (a view when the chunks lie back to back)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from actors.core.batch import FrameBatch
from actors.wire.model import Encoding, Geometry


def test_chunked_frames_come_back_whole_as_a_view_when_back_to_back() -> None:
    """Row chunks of each frame (how the Ray ingest puts large frames) read back as the
    frames: a view when laid out back to back as ``ray.put`` does, a copy otherwise."""
    from actors.core.batch import chunk_rows

    rows, cols = 37, 30  # 60-byte rows: 16 rows fill whole 64-byte lines
    assert chunk_rows(rows, 60, 1000) == 16 and chunk_rows(rows, 60, 10_000) == rows
    assert chunk_rows(rows, 60, 100) == 16  # (at least one whole number of lines)
    frames = np.arange(4 * rows * cols, dtype=np.uint16).reshape(4, rows, cols)
    batch = FrameBatch(1, 0, np.arange(4, dtype=np.int64), Geometry(rows, cols, "uint16"),
                       Encoding.RAW, views=tuple(frames[i] for i in range(4)))
    cut = batch.chunked(1000)
    assert cut.parts == 3 and len(cut.views or ()) == 12 and cut.nbytes == frames.nbytes
    assert [v.shape[0] for v in (cut.views or ())[:3]] == [16, 16, 5]
    out = cut.frames()  # the chunks are views of one buffer, back to back: no copy
    np.testing.assert_array_equal(out, frames)
    assert np.shares_memory(out, frames)
    scattered = replace(cut, views=tuple(np.array(v) for v in cut.views or ()))
    out = scattered.frames()  # each chunk its own buffer: joined by a copy
    np.testing.assert_array_equal(out, frames)
    assert not np.shares_memory(out, frames)
    assert batch.chunked(10_000) is batch
