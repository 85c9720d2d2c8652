"""Writing a new key pair's two files: never over a file that exists, never half a pair."""

from __future__ import annotations

import os
from pathlib import Path


def write_key_pair(
    private_out: Path,
    public_out: Path,
    private_text: str,
    public_text: str,
    *,
    tool: str,
    why: str,
    error: type[Exception],
    exists: type[FileExistsError],
) -> None:
    """Create ``private_out`` 0600 and ``public_out`` 0644; neither may exist already.

    ``tool`` and ``why`` go into the message when a file exists (``why`` says what an
    overwritten key would break); ``error`` is the tool's exception for other refusals and
    ``exists`` its subclass for a file that exists. If the public key cannot be written, the
    private key just made is removed again.
    """
    if private_out.resolve() == public_out.resolve():
        raise error("--private-out and --public-out name the same file; give two paths")
    for path in (private_out, public_out):
        if path.exists() or path.is_symlink():
            raise exists(f"{path} exists; {tool} never overwrites a key ({why}). Move it away first, or choose another path")
        if not path.parent.is_dir():
            raise error(f"{path.parent} is not a directory; create it first")
    _write_new(private_out, private_text, 0o600, tool, exists)
    try:
        _write_new(public_out, public_text, 0o644, tool, exists)
    except BaseException:
        private_out.unlink(missing_ok=True)
        raise


def _write_new(path: Path, text: str, mode: int, tool: str, exists: type[FileExistsError]) -> None:
    # O_EXCL|O_NOFOLLOW: a file or link that appeared since the check above is refused, not followed.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise exists(f"{path} exists; {tool} never overwrites a key. Move it away first, or choose another path") from None
    try:
        # The umask can only take bits away; set exactly the mode asked for.
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
