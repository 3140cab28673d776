"""File names and index discovery: {filename}_{index:06d}.h5, continuing from the directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.output.naming import (
    existing_indices,
    file_path,
    free_index,
    next_file_index,
    validate_directory,
    validate_filename,
    validate_index,
)


def touch(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_bytes(b"")


def test_empty_or_missing_directory_starts_at_zero(tmp_path: Path) -> None:
    assert next_file_index(tmp_path, "run") == 0
    assert next_file_index(tmp_path / "not-there", "run") == 0
    touch(tmp_path, "afile")
    assert next_file_index(tmp_path / "afile", "run") == 0  # not a directory


def test_continues_after_the_largest_index(tmp_path: Path) -> None:
    touch(tmp_path, "run_000000.h5", "run_000007.h5", "run_000003.h5")
    assert next_file_index(tmp_path, "run") == 8
    assert existing_indices(tmp_path, "run") == [0, 3, 7]


def test_other_files_are_ignored(tmp_path: Path) -> None:
    touch(tmp_path,
          "run_000005.h5",
          "run_000099.nxs",          # other extension
          "run_12.h5",               # too few digits
          "run_0000ab.h5",           # not digits
          "other_000050.h5",         # other prefix
          "run_x_000070.h5",         # longer prefix
          "xrun_000080.h5",
          "run_000090.h5.tmp",
          "run_" + "9" * 240 + ".h5",  # absurd: ignored, never an error
          "run_" + "1" * 19 + ".h5")
    undecodable = os.path.join(os.fsencode(tmp_path), b"run_\xff_000001.h5")
    os.close(os.open(undecodable, os.O_CREAT | os.O_WRONLY))
    (tmp_path / "run_000006.h5").mkdir()  # a directory of that name takes the name too
    assert next_file_index(tmp_path, "run") == 7


def test_prefix_is_matched_literally(tmp_path: Path) -> None:
    touch(tmp_path, "2026.05.01_run_000004.h5", "2026x05x01_run_000009.h5")
    assert next_file_index(tmp_path, "2026.05.01_run") == 5


def test_seven_digit_indices_continue(tmp_path: Path) -> None:
    touch(tmp_path, "run_999999.h5")
    assert next_file_index(tmp_path, "run") == 1_000_000
    assert file_path(tmp_path, "run", 1_000_000).name == "run_1000000.h5"
    touch(tmp_path, "run_1000000.h5")
    assert next_file_index(tmp_path, "run") == 1_000_001


def test_file_path(tmp_path: Path) -> None:
    assert file_path(tmp_path, "20260501_run", 12) == tmp_path / "20260501_run_000012.h5"
    with pytest.raises(ValueError, match="file_index"):
        file_path(tmp_path, "run", -1)


def test_free_index_skips_anything_taken(tmp_path: Path) -> None:
    touch(tmp_path, "run_000002.h5", "run_000003.h5")
    (tmp_path / "run_000004.h5").symlink_to(tmp_path / "nowhere")  # dangling link
    assert free_index(tmp_path, "run", 0) == 0
    assert free_index(tmp_path, "run", 2) == 5


@pytest.mark.parametrize("bad", ["", " run", "run ", "a/b", "a\\b", "..", ".", "a\0b",
                                 "a\nb", "x" * 201, 5, None])
def test_bad_filenames_name_the_setting(bad: object) -> None:
    with pytest.raises(ValueError, match="output.filename"):
        validate_filename(bad)


def test_good_filenames() -> None:
    for good in ("run", "20260501_run", "sample-3.a", "échantillon"):
        assert validate_filename(good) == good


def test_directory_validation(tmp_path: Path) -> None:
    assert validate_directory(str(tmp_path / "new")) == tmp_path / "new"
    touch(tmp_path, "file")
    with pytest.raises(ValueError, match="output.directory .* not a directory"):
        validate_directory(tmp_path / "file")
    with pytest.raises(ValueError, match="output.directory"):
        validate_directory("")
    with pytest.raises(ValueError, match="output.directory"):
        validate_directory(3)


@pytest.mark.parametrize("bad", [-1, True, 1.0, "3", None])
def test_index_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="file_index"):
        validate_index(bad)
