"""AcquisitionWriter: index bookkeeping, never overwrite, stacks, failures keep the results."""

from __future__ import annotations

import copy
import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from actors.config import OutputConfig
from actors.core.acquisition import AcquisitionResult
from actors.output import AcquisitionWriter, read_frames, read_outputs
from actors.output import nexus as nexus_module
from actors.output import writer as writer_module
from actors.reduce.base import OutputSpec, OutputValue, Series
from tests.unit.test_output_support import assert_outputs_equal, check_nexus, generic, result

Case = tuple[list[OutputSpec], dict[str, OutputValue], dict[str, Any]]


@pytest.fixture(scope="module")
def case() -> Case:
    return generic()


def writer(directory: Path, **kw: Any) -> AcquisitionWriter:
    return AcquisitionWriter(OutputConfig(directory=str(directory), filename="run", **kw))


def finish(w: AcquisitionWriter, case: Case, acquisition: int = 0
           ) -> tuple[Path | None, AcquisitionResult]:
    specs, outputs, settings = case
    res = result(outputs, acquisition)
    return w.finish(res, specs, settings), res


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def enospc() -> OSError:
    """The error h5py really raises on a full disk (from /dev/full), or a stand-in."""
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        try:
            h5py.File("/dev/full", "w").close()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return exc
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- naming and indices ------------------------------------------------------------------
def test_index_continues_from_the_directory(tmp_path: Path, case: Case) -> None:
    for name in ("run_000003.h5", "run_000010.h5", "other_000050.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    w = writer(tmp_path)
    assert (w.file_index, w.previous_file_index) == (11, 10)
    assert w.prepare(0) == (11, tmp_path / "run_000011.h5")
    path, res = finish(w, case)
    assert path == tmp_path / "run_000011.h5" and res.file == str(path) and res.error is None
    assert (w.file_index, w.previous_file_index) == (12, 11)
    assert_outputs_equal(read_outputs(path), res.outputs)
    with h5py.File(path) as f:
        assert f["entry/file_index"][()] == 11 and check_nexus(f) == []


def test_consecutive_acquisitions_get_consecutive_files(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path / "new" / "dir")  # created on demand
    paths = []
    for acquisition in range(3):
        w.prepare(acquisition)
        paths.append(finish(w, case, acquisition)[0])
    assert [p.name for p in paths if p] == ["run_000000.h5", "run_000001.h5", "run_000002.h5"]


def test_finish_without_prepare_reserves_the_index(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path)
    path, _ = finish(w, case)
    assert path == tmp_path / "run_000000.h5" and w.file_index == 1


def test_existing_files_are_skipped_never_overwritten(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path)
    w.file_index = 5
    (tmp_path / "run_000005.h5").write_bytes(b"five")
    assert w.prepare(0)[0] == 6
    (tmp_path / "run_000006.h5").write_bytes(b"six")  # appears during the acquisition
    path, res = finish(w, case)
    assert path == tmp_path / "run_000007.h5" and res.file == str(path)
    assert (tmp_path / "run_000005.h5").read_bytes() == b"five"
    assert (tmp_path / "run_000006.h5").read_bytes() == b"six"
    assert w.file_index == 8


def test_a_name_taken_at_the_last_moment_moves_on(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer creates the file between the index check and the exclusive create."""
    real = writer_module.create_file

    def racing(path: Path) -> h5py.File:
        if path.name == "run_000000.h5":
            path.write_bytes(b"theirs")
        return real(path)

    monkeypatch.setattr(writer_module, "create_file", racing)
    w = writer(tmp_path, frames=True)
    assert w.prepare(0) == (1, tmp_path / "run_000001.h5")
    assert (tmp_path / "run_000000.h5").read_bytes() == b"theirs"
    assert w.append_frames(np.ones((1, 2, 2), np.uint16), [0])
    assert w.finish(result({}), [], {}) == tmp_path / "run_000001.h5"
    assert w.file_index == 2


def test_setters_validate_and_rescan(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "scan_000041.h5").write_bytes(b"")
    w = writer(tmp_path)
    with pytest.raises(ValueError, match="filename"):
        w.filename = "x/y"
    with pytest.raises(ValueError, match="file_index"):
        w.file_index = -2
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ValueError, match="directory"):
        w.directory = tmp_path / "f"
    w.directory = tmp_path / "a"
    w.filename = "scan"
    assert w.file_index == 42 and w.path == tmp_path / "a" / "scan_000042.h5"
    w.file_index = 7
    assert (w.file_index, w.previous_file_index) == (7, 6)


def test_changes_during_an_acquisition_apply_to_the_next(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path)
    w.prepare(0)
    w.file_index = 20
    w.filename = "other"  # a later change wins: rescan for the new name
    path, _ = finish(w, case)
    assert path == tmp_path / "run_000000.h5"
    assert w.filename == "other" and w.file_index == 0
    w.prepare(1)
    w.file_index = 20
    path, _ = finish(w, case, 1)
    assert path == tmp_path / "other_000000.h5" and w.file_index == 20


def test_disabled_writes_nothing(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path / "out", enabled=False)
    w.prepare(0)
    assert not w.append_frames(np.zeros((1, 2, 2), np.uint16), [0])
    path, res = finish(w, case)
    assert path is None and res.error is None and res.file is None
    assert not (tmp_path / "out").exists()


def test_aborted_acquisition_is_written(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.prepare(0)
    res = result({}, outcome="aborted")
    path = w.finish(res, [], {})
    assert path is not None
    with h5py.File(path) as f:
        assert f["entry/outcome"].asstr()[()] == "aborted"


# -- per-frame stacks ----------------------------------------------------------------------
def test_stacks_are_appended_per_batch(tmp_path: Path, case: Case) -> None:
    w = writer(tmp_path, frames=True)
    index, path = w.prepare(0)
    assert path.exists()  # the name is taken from the start
    rng = np.random.default_rng(1)
    batches = [(rng.integers(0, 900, (3, 24, 30)).astype(np.uint16),
                np.arange(3 * i, 3 * i + 3)) for i in range(4)]
    for frames, numbers in batches:
        assert w.append_frames(frames, numbers)
    got, res = finish(w, case)
    assert got == path and res.error is None
    numbers, frames = read_frames(path)
    np.testing.assert_array_equal(frames, np.concatenate([b[0] for b in batches]))
    np.testing.assert_array_equal(numbers, np.arange(12))
    assert_outputs_equal(read_outputs(path), res.outputs)
    with h5py.File(path) as f:
        assert check_nexus(f) == []
        assert f["entry"].attrs["default"] == "sum"


def test_stacks_without_image_outputs_default_to_the_frames(tmp_path: Path) -> None:
    w = writer(tmp_path, frames=True)
    w.prepare(0)
    w.append_frames(np.ones((2, 4, 4), np.uint16), [0, 1])
    path = w.finish(result({"n": 2}), [OutputSpec("n", "scalar", "int64", ())], {})
    assert path is not None
    with h5py.File(path) as f:
        assert f["entry"].attrs["default"] == "frames" and check_nexus(f) == []


def test_close_keeps_an_unfinished_stack(tmp_path: Path) -> None:
    w = writer(tmp_path, frames=True)
    _, path = w.prepare(0)
    w.append_frames(np.ones((2, 4, 4), np.uint16), [0, 1])
    w.close()
    assert read_frames(path)[1].shape == (2, 4, 4)
    assert w.file_index == 1


def test_prepare_twice_closes_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    w = writer(tmp_path, frames=True)
    w.prepare(0)
    assert w.prepare(1)[0] == 1
    assert "never finished" in caplog.text


def test_stack_failure_keeps_frames_and_still_writes_results(
        tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    w = writer(tmp_path, frames=True)
    _, path = w.prepare(0)
    block = np.ones((2, 24, 30), np.uint16)
    assert w.append_frames(block, [0, 1])
    monkeypatch.setattr(os, "posix_fallocate", _raise(enospc()))
    assert not w.append_frames(block, [2, 3])
    assert not w.append_frames(block, [4, 5])  # failed once: no more stacks, no more logs
    monkeypatch.undo()
    got, res = finish(w, case)
    assert got == path
    assert res.error is not None and "No space left on device (ENOSPC)" in res.error
    assert len(errors(caplog)) == 1
    assert read_frames(path)[1].shape == (2, 24, 30)
    assert_outputs_equal(read_outputs(path), res.outputs)


# -- failures keep the results in memory -------------------------------------------------
def test_disk_full_at_creation(tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    real = enospc()
    assert real.errno == errno.ENOSPC
    monkeypatch.setattr(h5py, "File", _raise(real))
    w = writer(tmp_path)
    w.prepare(0)
    specs, outputs, settings = case
    res = result(outputs)
    before = copy.deepcopy(res.outputs)
    assert w.finish(res, specs, settings) is None
    _assert_failed_cleanly(res, before, caplog, tmp_path / "run_000000.h5", "ENOSPC")
    assert w.file_index == 0  # nothing was written: the index is still free
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing(tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """Creating works, the data does not fit: no partial file, results kept."""
    monkeypatch.setattr(os, "posix_fallocate", _raise(OSError(errno.ENOSPC, "full")))
    w = writer(tmp_path)
    specs, outputs, settings = case
    res = result(outputs)
    before = copy.deepcopy(res.outputs)
    assert w.finish(res, specs, settings) is None
    _assert_failed_cleanly(res, before, caplog, tmp_path / "run_000000.h5", "ENOSPC")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_with_stacks_keeps_the_frames(tmp_path: Path, case: Case,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    w = writer(tmp_path, frames=True)
    _, path = w.prepare(0)
    w.append_frames(np.ones((2, 24, 30), np.uint16), [0, 1])
    monkeypatch.setattr(nexus_module, "reserve", _raise(OSError(errno.ENOSPC, "full")))
    specs, outputs, settings = case
    res = result(outputs)
    before = copy.deepcopy(res.outputs)
    assert w.finish(res, specs, settings) is None
    _assert_failed_cleanly(res, before, caplog, path, "ENOSPC")
    assert read_frames(path)[1].shape == (2, 24, 30)  # valid, frames intact
    assert w.file_index == 1  # the file exists: its index is used


def test_directory_that_cannot_be_created(tmp_path: Path, case: Case,
                                          caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "plain-file").write_bytes(b"")
    w = writer(tmp_path / "plain-file" / "sub")
    specs, outputs, settings = case
    res = result(outputs)
    before = copy.deepcopy(res.outputs)
    assert w.finish(res, specs, settings) is None
    _assert_failed_cleanly(res, before, caplog, tmp_path / "plain-file" / "sub", "ENOTDIR")


def test_permission_denied(tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(Path, "mkdir", _raise(PermissionError(errno.EACCES, "denied")))
    w = writer(tmp_path / "locked")
    specs, outputs, settings = case
    res = result(outputs)
    before = copy.deepcopy(res.outputs)
    assert w.finish(res, specs, settings) is None
    _assert_failed_cleanly(res, before, caplog, tmp_path / "locked", "EACCES")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path: Path, case: Case,
                             caplog: pytest.LogCaptureFixture) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        w = writer(locked)
        specs, outputs, settings = case
        res = result(outputs)
        before = copy.deepcopy(res.outputs)
        assert w.finish(res, specs, settings) is None
        _assert_failed_cleanly(res, before, caplog, locked / "run_000000.h5", "EACCES")
    finally:
        locked.chmod(0o755)


def test_frames_file_that_cannot_be_created_is_retried_at_finish(
        tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", _raise(enospc()))
    w = writer(tmp_path, frames=True)
    _, path = w.prepare(0)
    assert not w.append_frames(np.ones((1, 24, 30), np.uint16), [0])
    monkeypatch.setattr(h5py, "File", real_file)  # space was freed
    got, res = finish(w, case)
    assert got == path and res.error is not None and "frames are not stored" in res.error
    assert len(errors(caplog)) == 1
    assert_outputs_equal(read_outputs(path), res.outputs)


def test_unexpected_errors_are_logged_with_the_trace(tmp_path: Path, case: Case,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    specs, outputs, settings = case
    broken = {**outputs, "bad": Series(np.arange(2), np.zeros(3))}
    res = result(broken)
    w = writer(tmp_path)
    assert w.finish(res, specs, settings) is None
    (record,) = errors(caplog)
    assert record.exc_info is not None and "frame numbers" in (res.error or "")
    assert res.outputs is broken and list(tmp_path.iterdir()) == []


def test_free_bytes(tmp_path: Path) -> None:
    free = writer(tmp_path / "not" / "yet").free_bytes
    assert free is not None and free > 0


# -- helpers -------------------------------------------------------------------------------
def _raise(exc: BaseException) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc
    return fail


def _assert_failed_cleanly(res: AcquisitionResult, before: dict[str, OutputValue],
                           caplog: pytest.LogCaptureFixture, where: Path, code: str) -> None:
    """One clear error naming the path and the errno; the outputs untouched."""
    (record,) = errors(caplog)
    message = record.getMessage()
    assert str(where) in message and f"({code})" in message, message
    assert "kept in memory" in message
    assert res.error == message and res.file is None
    assert_outputs_equal(res.outputs, before)


def test_writer_file_settings_by_their_seed_names(tmp_path: Path) -> None:
    from actors.config import OutputConfig
    from actors.output import AcquisitionWriter

    w = AcquisitionWriter(OutputConfig(directory=str(tmp_path), filename="scan"))
    state = w.set("file_index", 7)
    assert (state["filename"], state["file_index"], state["previous_file_index"]) == ("scan", 7, 6)
    # a new directory: the index continues from what is there (nothing yet)
    assert w.set("filepath", str(tmp_path / "sub"))["filepath"] == str(tmp_path / "sub")
    assert w.set("filename", "run")["path"] == str(tmp_path / "sub" / "run_000000.h5")
    with pytest.raises(ValueError, match="unknown output setting 'colour'"):
        w.set("colour", 1)


def test_a_full_disk_before_any_frame_leaves_no_frameless_file(
        tmp_path: Path, case: Case, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """frames: true, and the first frames do not fit: no 8 KB file without frames or results
    is left behind (result.file is None and the directory is empty)."""
    w = writer(tmp_path, frames=True)
    _, path = w.prepare(0)
    assert path.exists()  # created early for the stacks
    monkeypatch.setattr(os, "posix_fallocate", _raise(enospc()))
    assert not w.append_frames(np.ones((2, 24, 30), np.uint16), [0, 1])
    monkeypatch.setattr(nexus_module, "reserve", _raise(OSError(errno.ENOSPC, "full")))
    got, res = finish(w, case)
    assert got is None and res.file is None and res.error is not None
    assert list(tmp_path.iterdir()) == []


def test_files_go_only_under_the_allowed_roots(tmp_path: Path) -> None:
    data = tmp_path / "beamtime" / "data"
    w = writer(data)  # the default root: the parent of the configured directory
    w.directory = data / "scan1" / ".." / "scan2"
    assert w.directory == data / "scan1" / ".." / "scan2"
    (data / "escape").parent.mkdir(parents=True, exist_ok=True)
    (data / "escape").symlink_to("/proc/1")
    for outside in ("/proc/1/", str(tmp_path / "elsewhere"), str(data / "escape"),
                    str(tmp_path / "beamtime" / ".." / "x")):
        with pytest.raises(ValueError, match="outside the allowed directories"):
            w.directory = outside  # type: ignore[assignment]
    assert w.directory == data / "scan1" / ".." / "scan2"
    wider = writer(data, allowed_roots=[str(tmp_path)])
    wider.directory = tmp_path / "elsewhere"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="outside the allowed directories"):
        OutputConfig(directory="/tmp/x", allowed_roots=[str(tmp_path)])
