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
from gridctl.configs.files import path_kind


def require_path_lengths(target: Path, option: str) -> None:
    """Refuse a path with a name over 255 bytes or over 4,095 bytes in all: every later look at it
    (exists, is_dir, stat) would raise ENAMETOOLONG, a traceback instead of a refusal."""
    long_part = next((p for p in target.parts if len(p.encode()) > 255), None)
    if long_part is not None:
        raise GridctlError(
            f"{option}: the folder name {long_part[:40]}... is {len(long_part.encode())} bytes; "
            "names stop at 255 bytes"
        )
    size = len(os.fsencode(target.absolute()))
    if size > 4095:
        raise GridctlError(f"{option}: the path is {size:,} bytes; at most 4,095")


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
    require_path_lengths(target, option)
    kind = path_kind(target)
    if not kind.startswith("missing") and kind != "a folder":
        raise GridctlError(f"{option}: {target} is {kind}, not a folder")
    anchor = _nearest_existing(target)
    if not anchor.is_dir():
        raise GridctlError(f"{option}: cannot create {target}: {anchor} is a file, not a folder")
    _probe_writable(anchor, option, target)
    return target


def require_existing_dir(path: str | os.PathLike[str], option: str, hint: str = "") -> Path:
    """``path`` as an existing folder; a missing path or a file is a GridctlError naming ``option``."""
    target = Path(path).expanduser()
    require_path_lengths(target, option)
    if target.is_dir():
        return target
    kind = path_kind(target)
    if not kind.startswith("missing"):
        raise GridctlError(f"{option}: {target} is {kind}, not a folder")
    anchor = _nearest_existing(target)
    if anchor.exists() and not anchor.is_dir():
        raise GridctlError(f"{option}: {target} does not exist ({anchor} is a file, not a folder)")
    raise GridctlError(f"{option}: folder {target} does not exist{f'; {hint}' if hint else ''}")


#: Longest file or folder name an output may have: the usual 255-byte limit (NAME_MAX) less the 20 bytes
#: of the temporary name it is written under first (``.<name>.new-XXXXXXXX``, ``.<name>.XXXXXXXX.tmp``).
MAX_OUTPUT_NAME_BYTES = 235


def _output_name_and_link(target: Path, option: str) -> None:
    """Refuse an output path that is a symlink (the write would replace the link, not its target) or
    whose name is too long for the temporary name it is written under. Lengths come first: a folder name
    over 255 bytes, or a path over 4,095, makes every later look at the path fail (ENAMETOOLONG)."""
    size = len(target.name.encode())
    if size > MAX_OUTPUT_NAME_BYTES:
        raise GridctlError(
            f"{option}: the name {target.name[:40]}... is {size} bytes; at most {MAX_OUTPUT_NAME_BYTES} "
            "(it is written under a longer temporary name first, and names stop at 255 bytes)"
        )
    long_part = next((p for p in target.parts if len(p.encode()) > 255), None)
    if long_part is not None:
        raise GridctlError(
            f"{option}: the folder name {long_part[:40]}... is {len(long_part.encode())} bytes; "
            "names stop at 255 bytes"
        )
    if len(os.fsencode(target.absolute())) > 4095:
        raise GridctlError(
            f"{option}: the path is {len(os.fsencode(target.absolute())):,} bytes; at most 4,095"
        )
    if target.is_symlink():
        raise GridctlError(
            f"{option}: {target} is a symlink (to {os.readlink(target)}); give the real path, gridctl "
            "replaces outputs by renaming and would replace the link itself"
        )


def require_output_dir(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as an output folder gridctl can create or replace: not a symlink, a name short enough
    for its temporary sibling, and creatable or writable (see :func:`require_writable_dir`)."""
    target = Path(path).expanduser()
    _output_name_and_link(target, option)
    return require_writable_dir(target, option)


def require_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as an output file gridctl can write atomically: not a symlink, not a folder or other
    non-regular file, a short enough name, and a folder to write it in that accepts new files."""
    target = Path(path).expanduser()
    _output_name_and_link(target, option)
    kind = path_kind(target)
    if not kind.startswith("missing") and kind != "a regular file":
        raise GridctlError(f"{option}: {target} is {kind}, not a file gridctl can write")
    anchor = _nearest_existing(target.parent)
    if not anchor.is_dir():
        raise GridctlError(f"{option}: cannot create {target}: {anchor} is a file, not a folder")
    _probe_writable(anchor, option, target)
    return target
