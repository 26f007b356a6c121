"""What a path is, in words, and the refusal of anything that is not a regular file where one is read.

``open()`` on a FIFO blocks until a writer appears, a character device such as /dev/zero never ends,
and "not found" for a directory or a symlink loop sends the user looking in the wrong place. Every
command that reads a named file asks :func:`require_regular_file` first (configs, data partitions,
imports), so each of these is one line saying what the path is.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from gridctl.configs.errors import GridctlError


def path_kind(path: str | os.PathLike[str]) -> str:
    """``path`` described in a few words: "a regular file", "a folder", "a FIFO (named pipe)", ...

    Never opens the path (a FIFO would block); symlinks are followed, and a loop or a dangling link is
    named as such. A path that does not exist is "missing".
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop"
        if os.path.islink(path):
            return f"a symlink to a missing target ({os.readlink(path)})"
        if err.errno == errno.ENOTDIR:
            return "missing (a parent of it is a file, not a folder)"
        if err.errno == errno.ENOENT:
            return "missing"
        return f"unreadable ({err.strerror or err})"
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def require_regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` when it is a regular file; else a GridctlError saying what it is instead.

    ``what`` names the role, e.g. "strategy config" or "data partition".
    """
    target = Path(path)
    kind = path_kind(target)
    if kind == "a regular file":
        return target
    if kind == "missing":
        raise GridctlError(f"{what} {target}: no such file")
    raise GridctlError(f"{what} {target}: is {kind}, not a regular file")
