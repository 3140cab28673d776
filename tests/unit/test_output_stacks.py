"""Per-frame stacks: bitshuffle+LZ4 chunks, incremental appends, valid files after failures."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from actors.output import FrameStackWriter, OutputWriteError, read_frames
from actors.output.space import METADATA_MARGIN
from actors.output.stacks import BITSHUFFLE_FILTER_ID
from actors.wire.model import Geometry

ROOT = Path(__file__).resolve().parents[2]
R, C = 48, 40


def blocks(n_blocks: int = 4, size: int = 5, seed: int = 0
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive blocks of detector-like frames with gaps in the frame numbers."""
    rng = np.random.default_rng(seed)
    numbers = np.cumsum(rng.integers(1, 3, n_blocks * size)).astype(np.int64)
    frames = rng.poisson(20, (n_blocks * size, R, C)).astype(np.uint16)
    return [(frames[i:i + size], numbers[i:i + size]) for i in range(0, n_blocks * size, size)]


def test_frames_round_trip_through_bitshuffle_lz4(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    parts = blocks()
    with FrameStackWriter(path, (R, C), np.uint16) as w:
        for frames, numbers in parts:
            w.append(frames, numbers)
        assert w.count == 20 and w.last_frame == int(parts[-1][1][-1])
    numbers, frames = read_frames(path)
    np.testing.assert_array_equal(frames, np.concatenate([f for f, _ in parts]))
    np.testing.assert_array_equal(numbers, np.concatenate([n for _, n in parts]))
    assert frames.dtype == np.uint16 and numbers.dtype == np.int64
    with h5py.File(path) as f:
        data = f["entry/frames/data"]
        assert data.chunks == (1, R, C) and data.maxshape == (None, R, C)
        assert data.id.get_create_plist().get_filter(0)[0] == BITSHUFFLE_FILTER_ID == 32008
        group = f["entry/frames"]
        assert group.attrs["NX_class"] == "NXdata" and group.attrs["signal"] == "data"
        assert list(group.attrs["axes"]) == ["frame_number", ".", "."]
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "frames"


def test_geometry_gives_shape_and_dtype(tmp_path: Path) -> None:
    with FrameStackWriter(tmp_path / "s.h5", Geometry(R, C, "uint32")) as w:
        w.append(*blocks(1)[0])
        assert w.dtype == np.uint32 and w.shape == (R, C)
    with pytest.raises(ValueError, match="dtype"):
        FrameStackWriter(tmp_path / "t.h5", (R, C))


def test_compression_off(tmp_path: Path) -> None:
    with FrameStackWriter(tmp_path / "s.h5", (R, C), np.uint16, compression="none") as w:
        w.append(*blocks(1)[0])
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["entry/frames/data"].id.get_create_plist().get_nfilters() == 0


def test_file_is_valid_after_every_append(tmp_path: Path) -> None:
    """A copy taken between appends (as after a crash) opens and holds every block so far."""
    path = tmp_path / "s.h5"
    parts = blocks()
    with FrameStackWriter(path, (R, C), np.uint16) as w:
        for k, (frames, numbers) in enumerate(parts, start=1):
            w.append(frames, numbers)
            snapshot = tmp_path / f"copy{k}.h5"
            shutil.copyfile(path, snapshot)
            got_numbers, got = read_frames(snapshot)
            np.testing.assert_array_equal(got, np.concatenate([f for f, _ in parts[:k]]))
            np.testing.assert_array_equal(got_numbers,
                                          np.concatenate([n for _, n in parts[:k]]))


def test_reserved_space_is_trimmed_at_close(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    zeros = np.zeros((200, R, C), np.uint16)
    with FrameStackWriter(path, (R, C), np.uint16) as w:
        w.append(zeros, np.arange(200))
    # compressed, and without the reserved tail (raw size + 1 MiB)
    assert path.stat().st_size < min(zeros.nbytes, METADATA_MARGIN) / 4


def test_inside_a_group_of_an_open_file(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as f:
        entry = f.create_group("entry")
        w = FrameStackWriter(entry, (R, C), "uint16")
        frames, numbers = blocks(1)[0]
        w.append(frames, numbers)
        w.close()
        w.close()  # idempotent
        assert f["entry/frames/data"].shape == (5, R, C)
        with pytest.raises(ValueError, match="already exists"):
            FrameStackWriter(entry, (R, C), "uint16")


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="never overwrites"):
        FrameStackWriter(path, (R, C), np.uint16)
    assert path.read_bytes() == b"keep"


def test_bad_appends_are_refused(tmp_path: Path) -> None:
    (f0, n0), (f1, n1) = blocks(2)
    with FrameStackWriter(tmp_path / "s.h5", (R, C), np.uint16) as w:
        w.append(f0, n0)
        with pytest.raises(ValueError, match="increase"):
            w.append(f1, n0)  # not after the last frame
        with pytest.raises(ValueError, match="increase"):
            w.append(f1, n1[::-1])
        with pytest.raises(ValueError, match=r"\(n, 48, 40\)"):
            w.append(f1[:, :10], n1)
        with pytest.raises(ValueError, match="frame numbers for"):
            w.append(f1, n1[:2])
        with pytest.raises(ValueError, match="do not fit"):
            w.append(f1.astype(np.int32), n1)
        w.append(f1[:0], n1[:0])  # an empty block is fine
        w.append(f1.astype(np.uint8), n1)  # a safe cast is fine
        assert w.count == 10
    with pytest.raises(ValueError, match="closed"):
        w.append(f1, n1 + 100)


def test_no_space_fails_before_the_file_is_touched(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (f0, n0), (f1, n1), (f2, n2) = blocks(3)
    path = tmp_path / "s.h5"
    w = FrameStackWriter(path, (R, C), np.uint16)
    w.append(f0, n0)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutputWriteError) as info:
        w.append(f1, n1)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device (ENOSPC)" in str(info.value) and str(path) in str(info.value)
    monkeypatch.undo()
    with pytest.raises(OutputWriteError, match="failed earlier"):
        w.append(f2, n2)  # no gaps: a failed stack stays failed
    w.close()
    numbers, frames = read_frames(path)
    np.testing.assert_array_equal(frames, f0)
    np.testing.assert_array_equal(numbers, n0)


def test_a_failure_inside_hdf5_shrinks_back_to_complete_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (f0, n0), (f1, n1) = blocks(2)
    path = tmp_path / "s.h5"
    w = FrameStackWriter(path, (R, C), np.uint16)
    w.append(f0, n0)

    def broken(self: h5py.Dataset, key: object, value: object) -> None:
        raise OSError(errno.EIO, "Can't write data")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", broken)
    with pytest.raises(OutputWriteError, match=r"Input/output error \(EIO\)"):
        w.append(f1, n1)
    monkeypatch.undo()
    assert w.data.shape == (5, R, C) and w.frame_number.shape == (5,)
    w.close()
    numbers, frames = read_frames(path)
    np.testing.assert_array_equal(frames, f0)


def test_unsupported_preallocation_still_writes(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    with FrameStackWriter(tmp_path / "s.h5", (R, C), np.uint16) as w:
        w.append(*blocks(1)[0])
    assert read_frames(tmp_path / "s.h5")[1].shape == (5, R, C)


CHILD = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np
    from actors.output import FrameStackWriter, OutputWriteError
    path = sys.argv[1]
    frames = np.random.default_rng(0).integers(0, 4000, (4, 48, 40)).astype(np.uint16)
    w = FrameStackWriter(path, (48, 40), np.uint16)
    w.append(frames, np.arange(4))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = os.path.getsize(path) + 1000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(
        resource.RLIMIT_FSIZE)[1]))
    try:
        w.append(frames, np.arange(4, 8))
    except OutputWriteError as exc:
        print(exc.errno, exc.strerror)
    w.close()
""")


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="needs posix_fallocate")
def test_a_real_write_limit_leaves_a_valid_truncated_file(tmp_path: Path) -> None:
    """The file size limit (RLIMIT_FSIZE) makes real writes fail, as a full disk does."""
    path = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{errno.EFBIG} "), done.stdout + done.stderr
    assert "File too large (EFBIG)" in done.stdout
    assert "Traceback" not in done.stderr
    numbers, frames = read_frames(path)
    np.testing.assert_array_equal(numbers, np.arange(4))
    np.testing.assert_array_equal(
        frames, np.random.default_rng(0).integers(0, 4000, (4, 48, 40)).astype(np.uint16))
    assert hdf5plugin.version  # the filter came from hdf5plugin
