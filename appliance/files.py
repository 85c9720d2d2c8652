"""Whole-file writes that a crash or a planted symlink cannot leave half done."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` whole, with exactly ``mode`` and ``owner`` before any byte.

    The directory must exist: callers create it with the mode they need. Safe in a directory
    others can write: mkstemp creates a new name with O_EXCL (it never opens a name that
    exists, a planted symlink included), and os.replace replaces a symlink at ``path``
    instead of writing through it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes 0600 and the umask only takes bits away: set exactly the mode asked for.
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Never let a failed clean-up hide why the write failed.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power cut; a no-op where a directory cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
