"""Atomic file writes: write to a temp file in the target directory, fsync, then rename over the target.

Temporary names carry the writing process's id (``.<name>.<pid>-XXXXXXXX.tmp``), so a later run can
tell the leftovers of a killed process (SIGKILL, power loss: no ``finally`` runs) from the files of a
write in progress, and remove them: :func:`remove_stale` is called before every write into a folder.
In folders only gridctl writes (the store), leftovers without a process id (older versions) are also
removed once older than an hour.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: Age after which a leftover without a process id in its name counts as abandoned.
STALE_AFTER_S = 3600.0
#: The 8 random characters tempfile adds to a name.
RANDOM_PART = r"[a-z0-9_]{8}"
#: Temporary files of atomic_write: ``.<name>.<pid>-<random>.tmp`` (``.<name>.<random>.tmp`` before ids).
ATOMIC_TEMP = re.compile(rf"^\..+\.(?:(?P<pid>\d+)-)?{RANDOM_PART}\.tmp$")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def tagged(prefix: str) -> str:
    """``prefix`` followed by this process's id, for a temporary name :func:`remove_stale` can judge."""
    return f"{prefix}{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_leftovers(directory: Path, pattern: re.Pattern[str], untagged: bool = False) -> list[Path]:
    """Entries of ``directory`` matching ``pattern`` whose ``pid`` group names a process that is gone;
    with ``untagged``, also matches without a pid that are older than ``STALE_AFTER_S``.

    A write in progress (its process alive, or a young untagged entry) is never listed.
    """
    found: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return found
    now = time.time()
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = match.groupdict().get("pid")
        if pid is not None:
            if not _alive(int(pid)):
                found.append(entry)
            continue
        if not untagged:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if age > STALE_AFTER_S:
            found.append(entry)
    return sorted(found)


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; one already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(directory: Path, pattern: re.Pattern[str], untagged: bool = False) -> int:
    """Remove what :func:`stale_leftovers` finds; returns how many entries went."""
    stale = stale_leftovers(directory, pattern, untagged)
    for path in stale:
        remove_path(path)
    return len(stale)


def restore_or_remove_stale(directory: Path, pattern: re.Pattern[str], target: Path) -> int:
    """Leftovers of a killed swap: the previous version moved aside (``pattern``) while ``target`` was
    being replaced. If ``target`` is missing, the newest one is put back as ``target``; the rest go.

    Returns how many entries were restored or removed.
    """
    stale = stale_leftovers(directory, pattern, untagged=True)
    if stale and not target.exists() and not target.is_symlink():
        newest = max(stale, key=lambda p: p.lstat().st_mtime)
        os.replace(newest, target)
        stale.remove(newest)
    for path in stale:
        remove_path(path)
    return len(stale)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], None], clean_untagged: bool = False
) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    Nothing is left at ``path`` (nor a stray temp file) if ``write`` raises. Temp files that killed
    processes left in the folder are removed first; ``clean_untagged`` (for folders only gridctl
    writes, like the store's) also removes hour-old ones without a process id.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, ATOMIC_TEMP, untagged=clean_untagged)
    fd, tmp_name = tempfile.mkstemp(prefix=tagged(f".{target.name}."), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
