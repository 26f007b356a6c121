"""Check folders a command reads or writes before any work starts, so a bad path fails in a second.

A folder that cannot be created (under a regular file, on /proc or /sys, on a read-only disk, without
permission) is found by creating and removing a probe folder in the nearest existing ancestor: the
only test that agrees with what the operating system will do later (``os.access`` says yes to root
everywhere, even on /proc).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gridctl.configs.errors import GridctlError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (as anything: folder, file, ...)."""
    current = path
    while not current.exists() and not current.is_symlink():
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".gridctl-probe-", dir=folder)
    except OSError as err:
        where = "it" if folder == target else str(folder)
        raise GridctlError(
            f"{option}: cannot write {target}: {where} does not accept new files or folders "
            f"({err.strerror or err})"
        ) from None
    os.rmdir(probe)


def require_writable_dir(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as a folder gridctl may create and write into; GridctlError naming ``option`` if not.

    Nothing is created: an existing folder is probed, a missing one is probed at its nearest existing
    ancestor (which must be a folder, not a file).
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise GridctlError(f"{option}: {target} exists and is not a folder")
    anchor = _nearest_existing(target)
    if not anchor.is_dir():
        raise GridctlError(f"{option}: cannot create {target}: {anchor} is a file, not a folder")
    _probe_writable(anchor, option, target)
    return target


def require_existing_dir(path: str | os.PathLike[str], option: str, hint: str = "") -> Path:
    """``path`` as an existing folder; a missing path or a file is a GridctlError naming ``option``."""
    target = Path(path).expanduser()
    if target.is_dir():
        return target
    if target.exists():
        raise GridctlError(f"{option}: {target} is not a folder")
    anchor = _nearest_existing(target)
    if anchor.exists() and not anchor.is_dir():
        raise GridctlError(f"{option}: {target} does not exist ({anchor} is a file, not a folder)")
    raise GridctlError(f"{option}: folder {target} does not exist{f'; {hint}' if hint else ''}")
