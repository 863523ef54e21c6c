"""Opening files from trees nobody has checked: regular files only, never blocking.

A crash tree or a copy of a debugfs directory may hold FIFOs, sockets,
devices and links to ``/dev/zero``; opening one can block forever or read
without end.  kho-triage's discovery and kho-debugfs's reader both open
through :func:`open_regular`: the path is stat()ed first, opened
``O_NONBLOCK``, and checked again on the descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ("NotRegularFile", "file_kind", "identity", "open_regular")


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device, directory or (not followed) link."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words ("FIFO", "character device", ...)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def identity(st: os.stat_result) -> tuple[int, int]:
    """What makes two paths one file: device and inode."""
    return st.st_dev, st.st_ino


def open_regular(path: Path, follow_links: bool = True) -> BinaryIO:
    """Open a regular file for reading, never blocking.

    The path is stat()ed first (a FIFO, socket or device, also behind links
    when they are followed, is refused unopened), opened ``O_NONBLOCK`` and
    checked again on the descriptor, so a file swapped for a FIFO in between
    is not waited on either.  With ``follow_links=False`` a link is refused.

    :raises NotRegularFile: the path is not a regular file.
    :raises OSError: it cannot be opened.
    """
    st = os.stat(path) if follow_links else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(
            errno.EINVAL, f"not a regular file ({file_kind(st.st_mode)})", str(path)
        )
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or identity(now) != identity(st):
            raise NotRegularFile(errno.EINVAL, "changed while it was opened", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
