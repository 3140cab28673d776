"""Acquisition file names: ``{filename}_{file_index:06d}.h5`` and index discovery.

The index continues from what is in the directory (as the seed servers did): the next index
is the largest existing ``{filename}_NNNNNN.h5`` index + 1, 0 when there is none. Files of
other names are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

INDEX_DIGITS = 6
EXTENSION = ".h5"
#: indices above this are ignored by discovery (a name with absurdly many digits)
MAX_INDEX_DIGITS = 18

_FORBIDDEN = ("/", "\\", "\0")


def validate_filename(filename: object, setting: str = "output.filename") -> str:
    """``filename`` if it is a usable file-name prefix, else a ValueError naming ``setting``."""
    if not isinstance(filename, str):
        raise ValueError(f"{setting} must be a string, got {type(filename).__name__}")
    if not filename or filename.strip() != filename:
        raise ValueError(f"{setting} {filename!r} must be non-empty, without leading or "
                         "trailing spaces")
    bad = [c for c in _FORBIDDEN if c in filename]
    if bad or os.sep in filename or (os.altsep and os.altsep in filename):
        raise ValueError(f"{setting} {filename!r} must be a plain name, without a path "
                         "separator (set the directory separately)")
    if filename in (".", "..") or any(ord(c) < 32 for c in filename):
        raise ValueError(f"{setting} {filename!r} is not a usable file name")
    if len(filename) > 200:
        raise ValueError(f"{setting} is too long ({len(filename)} characters, at most 200)")
    return filename


def validate_directory(directory: object, setting: str = "output.directory") -> Path:
    """``directory`` as a Path; a ValueError naming ``setting`` if it cannot be one."""
    if not isinstance(directory, str | os.PathLike):
        raise ValueError(f"{setting} must be a path, got {type(directory).__name__}")
    text = os.fspath(directory)
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"{setting} {text!r} is not a usable directory path")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{setting} {text!r} exists and is not a directory")
    return path


def validate_index(index: object, setting: str = "file_index") -> int:
    """A non-negative int (bools are refused)."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"{setting} must be an integer, got {index!r}")
    if index < 0:
        raise ValueError(f"{setting} must be >= 0, got {index}")
    return index


def file_path(directory: str | os.PathLike[str], filename: str, index: int) -> Path:
    """``directory/{filename}_{index:06d}.h5``."""
    validate_filename(filename)
    validate_index(index)
    return Path(directory) / f"{filename}_{index:0{INDEX_DIGITS}d}{EXTENSION}"


def index_pattern(filename: str) -> re.Pattern[str]:
    """The regex whose group 1 is the index of a file of this name prefix."""
    return re.compile(rf"^{re.escape(filename)}_(\d{{{INDEX_DIGITS},{MAX_INDEX_DIGITS}}})"
                      rf"{re.escape(EXTENSION)}$")


def existing_indices(directory: str | os.PathLike[str], filename: str) -> list[int]:
    """Indices of the ``{filename}_NNNNNN.h5`` entries of ``directory`` (sorted)."""
    validate_filename(filename)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        logger.warning("cannot list %s to find the next file index: %s", directory, exc)
        return []
    pattern = index_pattern(filename)
    return sorted(int(m.group(1)) for m in map(pattern.match, names) if m is not None)


def next_file_index(directory: str | os.PathLike[str], filename: str) -> int:
    """Largest existing index + 1 (0 if none); never raises on odd names in the directory."""
    indices = existing_indices(directory, filename)
    return indices[-1] + 1 if indices else 0


def free_index(directory: str | os.PathLike[str], filename: str, start: int) -> int:
    """The first index >= ``start`` whose file (or anything of that name) does not exist."""
    index = validate_index(start)
    while os.path.lexists(file_path(directory, filename, index)):
        index += 1
    return index
