"""Errors of the output stage, and one readable line for any I/O failure."""

from __future__ import annotations

import errno as errno_mod
import os


class OutputWriteError(OSError):
    """Writing an acquisition file failed; ``errno`` and ``filename`` say where and why."""


def describe_os_error(exc: BaseException) -> str:
    """``No space left on device (ENOSPC)`` for an errno-carrying error, else its text.

    h5py errors carry the errno but a long HDF5 message; the errno text is what an
    operator needs.
    """
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        name = errno_mod.errorcode.get(code, str(code))
        return f"{os.strerror(code)} ({name})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_error(action: str, path: str | os.PathLike[str], exc: BaseException) -> OutputWriteError:
    """An :class:`OutputWriteError` "``action`` ``path``: ``reason``" keeping the errno."""
    code = getattr(exc, "errno", None)
    message = f"{action} {path}: {describe_os_error(exc)}"
    if isinstance(code, int):
        return OutputWriteError(code, message, str(path))
    return OutputWriteError(errno_mod.EIO, message, str(path))
