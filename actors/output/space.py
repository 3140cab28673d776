"""Disk space reserved before HDF5 writes, so a full disk fails cleanly.

HDF5 cannot survive a write that fails half-way: the superblock may already record an end
of file the data never reached, and the file no longer opens. So before each block of
writes the output stage allocates the disk blocks they will need (``posix_fallocate`` after
HDF5's end of allocation). A full disk (ENOSPC), a quota (EDQUOT) or a file size limit
(EFBIG) then raises here, before the file is touched, and the file stays as it was after
its last flush. The unused reserved tail is cut off by :func:`close_trimmed`.
"""

from __future__ import annotations

import errno
import logging
import os

import h5py

logger = logging.getLogger(__name__)

#: reserved on top of the raw data of every block (object headers, chunk index nodes)
METADATA_MARGIN = 1 << 20
#: errnos meaning "this file system cannot preallocate": writes go ahead unprotected
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.ESPIPE}


def reserve(file: h5py.File, nbytes: int) -> None:
    """Allocate ``nbytes`` (+ a metadata margin) past the file's end of allocation.

    Raises OSError (ENOSPC, EDQUOT, EFBIG, ...) when the space is not there. A no-op for
    file drivers without a descriptor and file systems that cannot preallocate.
    """
    fd = _descriptor(file)
    if fd is None or not hasattr(os, "posix_fallocate"):  # e.g. macOS: unprotected
        return
    end = int(file.id.get_filesize())
    try:
        os.posix_fallocate(fd, end, max(int(nbytes), 0) + METADATA_MARGIN)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            logger.debug("cannot preallocate in %s (%s); writing unprotected",
                         file.filename, exc)
            return
        raise


def close_trimmed(file: h5py.File) -> None:
    """Flush and close ``file``, then cut the reserved tail past HDF5's end of allocation."""
    path = file.filename
    fd = _descriptor(file)
    file.flush()
    end = int(file.id.get_filesize())
    file.close()
    if fd is None:
        return
    try:
        if os.path.getsize(path) > end:
            os.truncate(path, end)
    except OSError as exc:  # the file is valid with its tail; only space is wasted
        logger.warning("could not trim the reserved tail of %s: %s", path, exc)


def _descriptor(file: h5py.File) -> int | None:
    try:
        fd = file.id.get_vfd_handle()
    except (ValueError, TypeError, RuntimeError, OSError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None
