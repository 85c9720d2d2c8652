"""Signed offline updates: verify a release bundle, install it beside the running release, switch,
and come back on the old release by itself if the new one does not start (docs/updates.md).

A bundle is one tar file: ``manifest.json`` (version, target Python and platform, the store
schema the release needs, the sha256 and size of every file), ``manifest.sig`` (the county's
Ed25519 signature over the manifest's exact bytes) and ``wheels/``. Everything is checked before
anything on the device changes. Each release is a virtual environment in
``/opt/hall-appliance/releases/<dir>``; ``current`` and ``previous`` are symlinks beside them and
are switched atomically (a new link under a temporary name, then ``os.replace``).

The store is the part that cannot simply be switched back: the new release migrates it
forward when its daemon opens it. The database is backed up (sqlite3's backup API) while the
services are stopped, before the new release starts; if the new release has to be rolled back
after it migrated, everything in the migrated database is carried back into a copy of the
backup, table by table, column by column (migrations only ever add), so nothing recorded
before or during the attempt is lost and the old release opens a schema it knows.

The updater imports everything it uses at the top of this module: once ``current`` points at
the new release, a lazy import in this process could load the new release's code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import errno
import hashlib
import http.client
import json
import logging
import os
import platform
import re
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from . import __version__
from .clock import SystemClock, boot_id
from .config import Config, load_config
from .control import ControlClient
from .errors import ApplianceError, CommandRejected, ControlError
from .events import Recorder
from .files import fsync_dir, write_atomic
from .store import PERSON, SCHEMA_VERSION, STREAMS, TELEMETRY, Recorded

log = logging.getLogger(__name__)

PROJECT = "hall-appliance"
BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
WHEELS = "wheels"
MAX_MANIFEST = 1 << 20
PUBLIC_KEY_TAG = "hall-release-public-v1"
PRIVATE_KEY_TAG = "hall-release-private-v1"
RELEASE_INFO = "hall-release.json"

UPDATE_STARTED = "update.started"
UPDATE_SUCCEEDED = "update.succeeded"
UPDATE_FAILED = "update.failed"

DAEMON_UNIT = "hall-appliance.service"
WEB_UNIT = "hall-web.service"

# Exit codes of `hall-appliance update` (2 is argparse's, for bad arguments).
EXIT_OK = 0
EXIT_REFUSED = 1  # nothing changed on the device
EXIT_ROLLED_BACK = 3  # the new release did not start; the old one runs again
EXIT_BROKEN = 4  # neither release would start: a person must look

# An alarm among these that was not active before the update and is after it means the new
# release broke something that worked: its store, its board, its badge reader, its complaint
# key, or it refuses the content and roster the old release took. The pins are judged by the
# factory in use, the same as before (health_problems): the pin_factory alarm says that `auto`
# fell back from lgpio, which earlier releases did not report: a newly active one is no regression.
REGRESSION_ALARMS = ("store_damaged", "board_error", "badge_reader", "complaint_key", "board_items_refused", "roster_invalid")
# Uplink states that mean "sending, or queuing until the broker answers" (appliance.uplink).
UPLINK_WORKING = ("connected", "connecting", "waiting", "disabled")

# A venv unpacks its wheels to about five times their size (measured: 27 MB of wheels, a 136 MB
# venv with bytecode); keep room for that, the staged wheels, and some air.
INSTALL_FACTOR = 6
INSTALL_AIR = 32 << 20
KEEP_BACKUPS = 5
REQUEST_FILE = "update-request.json"
STATE_FILE = "update-state.json"
# In the updater's own directory while an attempt's switch is under way (Updater.resume).
ATTEMPT_FILE = "attempt.json"
# The request is a few hundred bytes; the state file a few kilobytes. Anything larger is not ours.
MAX_REQUEST = 64 << 10
MAX_STATE = 1 << 20
# A download whose size neither the command nor the server gives stops here (a bundle is ~30 MB).
MAX_UNSIZED_DOWNLOAD = 200 << 20
# A partial download of this bundle older than this is started again rather than resumed.
STALE_PART_S = 7 * 86400
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
VERSION = re.compile(r"(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?\Z")
WHEEL_NAME = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-\d[A-Za-z0-9_.]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl\Z")
MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


# -- errors ---------------------------------------------------------------------------------


class UpdateError(ApplianceError):
    """An update could not go ahead; ``reason`` says what, ``fix`` what to do, ``stage`` where."""

    stage = "verify"

    def __init__(self, reason: str, fix: str) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason}; {fix}" if fix else reason)


class BundleRefused(UpdateError, ValueError):
    """The bundle is not one this device may install (signature, files, platform, version)."""


class NoRoom(UpdateError, OSError):
    """Not enough free disk for the new release or the store's backup."""


class DownloadFailed(UpdateError, ConnectionError):
    """The bundle could not be downloaded whole, or what arrived is not what the county announced."""

    stage = "download"


class InstallFailed(UpdateError, RuntimeError):
    """The new release's virtual environment could not be made."""

    stage = "install"


class ServiceFailed(UpdateError, RuntimeError):
    """A service did not start, did not report READY, or was not healthy in time."""

    stage = "start"


class UnsafeDirectory(UpdateError, PermissionError):
    """The updater's own working directory is not one that only the updater's user controls."""


# -- versions, keys, platforms ----------------------------------------------------------------


def version_key(text: str) -> tuple:
    """A sortable key for a release version: 1.2.3, 1.2 (= 1.2.0), 1.3.0rc1 (before 1.3.0)."""
    m = VERSION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a release version like 1.4.2 or 1.5.0rc1")
    release = [int(p) for p in m.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = (("a", "b", "rc").index(m.group(2)), int(m.group(3))) if m.group(2) else (3, 0)
    return (tuple(release), pre)


def is_newer(version: str, than: str) -> bool:
    """Whether release ``version`` is newer than ``than`` (an unreadable ``than`` is older than anything)."""
    try:
        old = version_key(than)
    except ValueError:
        return True
    return version_key(version) > old


def key_id(public_key: bytes) -> str:
    """A release key's fingerprint: the first 32 hex digits of SHA-256 over its 32 raw bytes."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def format_key_file(tag: str, raw: bytes, comment: str) -> str:
    """A key file: ``#`` comment lines, then ``<tag> <base64 key>``."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    return "\n".join(lines + [f"{tag} {base64.b64encode(raw).decode()}", ""])


def parse_key_file(text: str, tag: str, source: str) -> bytes:
    """The 32 raw key bytes of a release key file with ``tag``."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    found, _, value = lines[0].partition(" ") if len(lines) == 1 else ("", "", "")
    if found == PRIVATE_KEY_TAG and tag == PUBLIC_KEY_TAG:
        raise BundleRefused(f"{source} is the county's PRIVATE release key", "it must never be on a hall device: install the .pub file release-keygen wrote beside it, and take this one back to the county")
    if found != tag:
        raise BundleRefused(f"{source} is not a release key file (expected one line '{tag} <base64>')", "install the file `hall-provision release-keygen` wrote")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleRefused(f"{source}: the key is damaged (not 32 bytes of base64)", "copy the file release-keygen wrote again")
    return raw


def load_release_key(path: Path) -> VerifyKey:
    """The county's release public key installed on the device."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleRefused(f"no county release key at {path}", "install the county's release.pub there (it comes with provisioning); without it no bundle can be trusted") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleRefused(f"cannot read the release key {path} ({exc})", "copy the county's release.pub there again") from None
    return VerifyKey(parse_key_file(text, PUBLIC_KEY_TAG, str(path)))


@dataclass(frozen=True)
class Target:
    """The interpreter and platform a release's wheels are for (or this device's)."""

    implementation: str  # 'cp'
    python: str  # '3.11'
    machine: str  # 'x86_64', 'aarch64', 'armv7l', or 'any' for pure-Python wheels only
    glibc: str | None = None  # this device's C library; in a manifest, the newest the wheels need

    @classmethod
    def this(cls) -> "Target":
        """The interpreter running this process (the one that makes the new release's venv)."""
        impl = {"cpython": "cp", "pypy": "pp"}.get(sys.implementation.name, sys.implementation.name)
        # sysconfig's platform is the interpreter's own: a 32-bit Python on a 64-bit kernel says armv7l.
        machine = sysconfig.get_platform().split("-", 1)[-1].replace("-", "_").replace(".", "_")
        libc, libc_version = platform.libc_ver()
        return cls(impl, f"{sys.version_info[0]}.{sys.version_info[1]}", machine, libc_version if libc == "glibc" else None)

    @property
    def abi(self) -> str:
        return f"{self.implementation}{self.python.replace('.', '')}"

    def as_dict(self) -> dict:
        return {"implementation": self.implementation, "python": self.python, "abi": self.abi, "machine": self.machine, "glibc": self.glibc}


def wheel_tags(filename: str) -> tuple[list[str], list[str], list[str]]:
    m = WHEEL_NAME.match(filename)
    if not m:
        raise ValueError(f"{filename} is not a wheel file name")
    return m.group("py").split("."), m.group("abi").split("."), m.group("plat").split(".")


def glibc_of(plat: str) -> tuple[int, int] | None:
    """The glibc a manylinux platform tag needs, or None for a tag that is not manylinux."""
    m = re.match(r"manylinux_(\d+)_(\d+)_", plat)
    if m:
        return int(m.group(1)), int(m.group(2))
    legacy = plat.split("_", 1)[0]
    return MANYLINUX_LEGACY.get(legacy)


def wheel_problem(filename: str, device: Target) -> str | None:
    """Why the wheel ``filename`` cannot be installed on ``device``, or None if it can."""
    try:
        py_tags, abi_tags, plat_tags = wheel_tags(filename)
    except ValueError:
        return "is not a wheel file name (name-version-python-abi-platform.whl)"
    major, minor = (int(p) for p in device.python.split("."))
    impl = device.implementation

    def python_fits(tag: str, abi: str) -> bool:
        if tag.startswith("py"):
            digits = tag[2:]
            return digits == str(major) or (len(digits) > 1 and digits[0] == str(major) and int(digits[1:]) <= minor)
        if not tag.startswith(impl):
            return False
        digits = tag[len(impl):]
        if abi == "abi3":  # the stable ABI: built for this minor version or an older one
            return digits[:1] == str(major) and digits[1:].isdigit() and int(digits[1:]) <= minor
        return digits == f"{major}{minor}"

    def abi_fits(abi: str) -> bool:
        return abi in ("none", "abi3", device.abi)

    def plat_fits(plat: str) -> bool:
        if plat == "any":
            return True
        if not plat.endswith("_" + device.machine):
            return False
        if plat == f"linux_{device.machine}":
            return True
        need = glibc_of(plat)
        if need is None or device.glibc is None:
            return False  # musllinux, or a device without glibc
        return tuple(int(p) for p in device.glibc.split(".")[:2]) >= need

    if not any(python_fits(p, a) and abi_fits(a) for p in py_tags for a in abi_tags):
        return f"is for Python {'/'.join(py_tags)} ({'/'.join(abi_tags)}), this device runs {device.abi}"
    if not any(plat_fits(p) for p in plat_tags):
        glibc = f" with glibc {device.glibc}" if device.glibc else ""
        return f"is for {'/'.join(plat_tags)}, this device is linux_{device.machine}{glibc}"
    return None


# -- the bundle ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a signed manifest says about its release."""

    version: str
    created: str
    store_schema: int
    target: dict
    files: dict[str, dict]
    key_id: str
    raw: dict = field(repr=False, compare=False, default_factory=dict)
    signed: bytes = field(repr=False, compare=False, default=b"")  # the exact bytes the signature covers

    @property
    def wheels(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith(WHEELS + "/"))


def _member_name_ok(name: str) -> bool:
    if name in (MANIFEST, SIGNATURE):
        return True
    parts = name.split("/")
    return len(parts) == 2 and parts[0] == WHEELS and parts[1].endswith(".whl") and parts[1] not in (".whl",) and not parts[1].startswith(".")


def _parse_manifest(raw_bytes: bytes, where: str) -> Manifest:
    fix = "ask the county for a bundle made by `hall-provision release`"
    try:
        doc = json.loads(raw_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleRefused(f"{where}: manifest.json is not JSON ({exc})", fix) from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT or doc.get("project") != PROJECT:
        raise BundleRefused(f"{where}: manifest.json is not a {PROJECT} release manifest of format {BUNDLE_FORMAT}", fix)
    try:
        version = doc["version"]
        version_key(version)
        files = doc["files"]
        for name, info in files.items():
            if not _member_name_ok(name) or name in (MANIFEST, SIGNATURE):
                raise ValueError(f"file name {name!r}")
            if not (isinstance(info.get("size"), int) and info["size"] >= 0 and isinstance(info.get("sha256"), str) and SHA256.match(info["sha256"])):
                raise ValueError(f"files[{name!r}] needs a size and a sha256")
        schema = doc["store_schema"]
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise ValueError("store_schema must be a whole number from 1")
        target = doc["target"]
        if not all(isinstance(target.get(k), str) for k in ("implementation", "python", "machine")):
            raise ValueError("target needs implementation, python and machine")
        return Manifest(version, str(doc.get("created", "")), schema, target, files, str(doc.get("key_id", "")), doc, raw_bytes)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BundleRefused(f"{where}: manifest.json is malformed ({exc})", fix) from None


def _hash_stream(src: BinaryIO, out: BinaryIO | None = None) -> tuple[str, int]:
    digest, n = hashlib.sha256(), 0
    for chunk in iter(lambda: src.read(1 << 20), b""):
        n += len(chunk)
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), n


def read_bundle(path: Path, key: VerifyKey, *, extract_to: Path | None = None) -> Manifest:
    """Check a bundle whole: the signature over its manifest, then every file's size and sha256.

    With ``extract_to``, the wheels are written there as they are checked, so what is installed
    is exactly what was verified (a USB stick can change between two reads). Raises BundleRefused.
    """
    where = path.name
    damaged = "copy the bundle again (the file is damaged or was cut short)"
    try:
        tar = tarfile.open(path, "r:")
    except FileNotFoundError:
        raise BundleRefused(f"{path} does not exist", "give the path of the .tar bundle from the county") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"{where} is not a release bundle (not a tar file: {exc})", damaged) from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleRefused(f"{where} is cut short or damaged ({exc})", damaged) from None
        by_name: dict[str, tarfile.TarInfo] = {}
        for m in members:
            if m.isdir() and m.name.rstrip("/") == WHEELS:
                continue
            if not m.isreg() or not _member_name_ok(m.name):
                raise BundleRefused(f"{where} holds {m.name!r}, which no release bundle has (only manifest.json, manifest.sig and wheels/*.whl files)", "use the bundle exactly as the county made it")
            if m.name in by_name:
                raise BundleRefused(f"{where} holds {m.name!r} twice", "use the bundle exactly as the county made it")
            by_name[m.name] = m
        for required in (MANIFEST, SIGNATURE):
            if required not in by_name:
                raise BundleRefused(f"{where} has no {required}", damaged)
            if by_name[required].size > MAX_MANIFEST:
                raise BundleRefused(f"{where}: {required} is {by_name[required].size} bytes, too large to be one", "use the bundle exactly as the county made it")

        def read(name: str) -> bytes:
            try:
                return tar.extractfile(by_name[name]).read()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleRefused(f"{where}: cannot read {name} ({exc})", damaged) from None

        manifest_bytes, sig_text = read(MANIFEST), read(SIGNATURE)
        try:
            signature = base64.b64decode(sig_text.strip(), validate=True)
            key.verify(manifest_bytes, signature)
        except (ValueError, BadSignatureError):
            raise BundleRefused(
                f"{where}: the signature does not match the county release key ({key_id(bytes(key))[:16]}…): the bundle was altered, or signed with another key",
                "use a bundle signed by the county's release key; if the county changed its key, install the new release.pub first",
            ) from None
        manifest = _parse_manifest(manifest_bytes, where)
        unlisted = sorted(set(by_name) - set(manifest.files) - {MANIFEST, SIGNATURE})
        if unlisted:
            raise BundleRefused(f"{where} holds files its manifest does not list: {', '.join(unlisted)}", "use the bundle exactly as the county made it")
        if extract_to is not None:
            try:
                extract_to.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _extract_failed(exc, extract_to) from None
        for name in manifest.wheels:
            info = manifest.files[name]
            member = by_name.get(name)
            if member is None:
                raise BundleRefused(f"{where}: {name} is missing", damaged)
            if member.size != info["size"]:
                raise BundleRefused(f"{where}: {name} is {member.size} bytes, the manifest says {info['size']}: the file was cut short or altered", damaged)
            target = None
            try:
                src = tar.extractfile(member)
                if extract_to is not None:
                    target = open(extract_to / Path(name).name, "wb")
                digest, n = _hash_stream(src, target)
                if target is not None:
                    target.close()  # a full disk can show only here, as the last block is written
            except (tarfile.TarError, OSError, EOFError) as exc:
                if target is not None and isinstance(exc, OSError) and exc.errno in NO_ROOM:
                    raise _extract_failed(exc, extract_to) from None
                raise BundleRefused(f"{where}: cannot read {name} ({exc})", damaged) from None
            finally:
                if target is not None:
                    with contextlib.suppress(OSError):
                        target.close()
            if n != info["size"] or digest != info["sha256"]:
                raise BundleRefused(f"{where}: {name} does not have the sha256 its signed manifest gives (got {digest[:16]}…): the file was altered or damaged", damaged)
        return manifest


NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def _extract_failed(exc: OSError, where: Path) -> UpdateError:
    """What a write error while extracting the wheels means: no room, or a directory we cannot use."""
    if exc.errno in NO_ROOM:
        return NoRoom(f"no room left on the disk to extract the wheels into {where}", "free some space (`journalctl --vacuum-size=50M`, old backups) and try again; the running release is unchanged")
    return InstallFailed(f"cannot extract the wheels into {where} ({exc.strerror or exc})", "the running release is unchanged; run the update as root")


# -- the device ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where releases, links and keys are on the device, under ``root`` (``/`` on a Pi)."""

    root: Path

    @property
    def base(self) -> Path:
        return self.root / "opt" / "hall-appliance"

    @property
    def releases(self) -> Path:
        return self.base / "releases"

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def previous(self) -> Path:
        return self.base / "previous"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "hall-appliance" / "appliance.toml"

    @property
    def release_key(self) -> Path:
        return self.root / "etc" / "hall-appliance" / "release.pub"

    @property
    def county_ca(self) -> Path:
        return self.root / "etc" / "hall-appliance" / "ca.crt"

    @property
    def work(self) -> Path:
        """The updater's own files (downloads, backups, hand-back work files): root's alone.

        Not the store's directory: the daemon and the page can write there, and root must never
        open a name in it that one of them could have made a symlink to a file of root's.
        """
        return self.root / "var" / "lib" / "hall-update"


def release_version(release_dir: Path) -> str | None:
    """The version installed in a release directory (its hall-release.json, else its name)."""
    try:
        return json.loads((release_dir / RELEASE_INFO).read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        name = release_dir.name
        return name if VERSION.match(name) else None


def _link_target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def point(link: Path, target: Path) -> None:
    """Make ``link`` point at ``target`` atomically: a new link beside it, then os.replace."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """:func:`write_atomic` for text, making the directory first (the state directory may not exist yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"), mode)


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` when it is a regular file of at most ``limit`` bytes.

    For names in the store's directory, which root reads: never follows a symlink (O_NOFOLLOW),
    never waits on a FIFO (O_NONBLOCK), never reads a huge file. Raises OSError saying which.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link, not a file", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"it is larger than {limit} bytes", str(path))
    return data


def _private_dir(path: Path) -> Path:
    """``path`` as a directory only this process's user can use: made 0700 when missing.

    Raises UnsafeDirectory when it is a symlink, not a directory, or another user's: files
    root writes there must be out of reach of the daemon and the page.
    """
    fix = f"remove {path} as root and run the update again (the updater makes it itself, 0700)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        what = exc.strerror
        with contextlib.suppress(OSError):
            mode = os.lstat(path).st_mode
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory" if not stat.S_ISDIR(mode) else what
        raise UnsafeDirectory(f"the updater's directory {path} cannot be used: {what}", fix) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeDirectory(f"the updater's directory {path} belongs to uid {st.st_uid}, not to the updater (uid {os.geteuid()})", fix)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def _check_store_files(db: Path) -> None:
    """Refuse to open the store as root when its file, WAL, shared memory or journal is a symlink
    or not a regular file: SQLite follows links, and the daemon and the page can make them.

    (A link made between this check and the open is not caught; the files root writes itself
    are in its own directory, ``Layout.work``.)
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        name = Path(f"{db}{suffix}")
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise sqlite3.DatabaseError(f"{name} is {kind}; the updater does not open it")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# -- the state file that the status and the page show ---------------------------------------------


def read_update_state(path: str | Path) -> dict | None:
    """What the last update did, for the status message and the config page; None before any.

    ``{"running": "0.2.0", "previous": "0.1.0", "last": {"outcome": "succeeded" | "rolled_back"
    | "refused" | "failed" | "broken", "version", "from_version", "at", "reason"}}``. Never
    raises: a damaged file is reported as such.
    """
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    try:
        doc = json.loads(_read_regular(path, MAX_STATE).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"running": None, "previous": None, "last": None, "error": f"{path} cannot be read ({exc})"}
    if not isinstance(doc, dict):
        return {"running": None, "previous": None, "last": None, "error": f"{path} is not a JSON object"}
    last = doc.get("last") if isinstance(doc.get("last"), dict) else None
    return {
        "running": doc.get("running"),
        "previous": doc.get("previous"),
        "last": None if last is None else {k: last.get(k) for k in ("outcome", "version", "from_version", "at", "reason")},
    }


def write_update_state(path: Path, layout: Layout, outcome: str, version: str | None, from_version: str | None, reason: str | None, *, out: Callable[[str], None] = lambda line: None) -> None:
    """Record an attempt's outcome in ``update-state.json`` (the last ten are kept); never raises."""
    previous = _link_target(layout.previous)
    current = _link_target(layout.current)
    state = {
        "running": release_version(current) if current else None,
        "previous": release_version(previous) if previous else None,
        "last": {"outcome": outcome, "version": version, "from_version": from_version, "at": _now(), "reason": reason},
    }
    try:
        old = json.loads(_read_regular(path, MAX_STATE).decode("utf-8"))
        history = [h for h in old.get("history", []) if isinstance(h, dict)][-9:]
    except (OSError, ValueError, AttributeError):
        history = []
    state["history"] = history + [state["last"]]
    try:
        _write_atomic(path, json.dumps(state, ensure_ascii=False, indent=2) + "\n")
    except OSError as exc:
        out(f"warning: could not write {path} ({exc})")


# -- services ------------------------------------------------------------------------------------


class ServiceRunner(Protocol):
    """Starts and stops the appliance's units: systemctl on the device, a recording fake in tests."""

    def start(self, unit: str, timeout: float) -> None:
        """Start ``unit``; return once it is up (READY for the daemon), raise ServiceFailed if not."""

    def stop(self, unit: str) -> None: ...

    def is_active(self, unit: str) -> bool: ...

    def reset_failed(self, unit: str) -> None:
        """Forget ``unit``'s failures, so its start limit does not refuse the next start."""


class Systemctl:
    """The real units through systemctl; ``start`` of a Type=notify unit returns at READY=1."""

    def __init__(self, systemctl: str = "systemctl") -> None:
        self.systemctl = systemctl

    def _run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([self.systemctl, *args], capture_output=True, text=True, timeout=timeout)

    def start(self, unit: str, timeout: float) -> None:
        try:
            done = self._run("start", unit, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServiceFailed(f"{unit} did not report READY within {timeout:.0f} s", f"see `journalctl -u {unit}`") from None
        except OSError as exc:
            raise ServiceFailed(f"cannot run systemctl ({exc})", "run the update on the device, as root") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()
            if unit != DAEMON_UNIT and "not found" in said:
                log.warning("%s is not installed on this device; not started", unit)
                return
            raise ServiceFailed(f"{unit} did not start ({said[:300]})", f"see `journalctl -u {unit}`")

    def stop(self, unit: str) -> None:
        try:
            self._run("stop", unit)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop %s: %s", unit, exc)

    def is_active(self, unit: str) -> bool:
        try:
            return self._run("is-active", "--quiet", unit, timeout=15).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def reset_failed(self, unit: str) -> None:
        # Fails harmlessly for a unit that is not loaded (no hall-web on this device); start says so.
        try:
            self._run("reset-failed", unit, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not reset %s: %s", unit, exc)


# -- events straight into the store --------------------------------------------------------------


class _Outbox:
    """Appends events to the store's outbox without opening it as a ``Store``.

    The updater is the old release's code, and the store may have a newer schema once the new
    release has migrated it (a ``Store`` would refuse it). The outbox and the counters are in
    the first migration and, migrations only ever adding, in every schema after it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _check_store_files(path)
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        finally:
            conn.close()
        if row is None:
            raise sqlite3.DatabaseError("the store has no store_id")
        self.store_id = row[0]

    def append(self, stream: str, event_type: str, topic: str, build: Callable[[int], dict], *, droppable: bool = False, domain=None) -> Recorded:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        _check_store_files(self.path)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = conn.execute("UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", (stream,)).fetchone()[0]
                envelope = build(seq)
                payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
                cur = conn.execute(
                    "INSERT INTO outbox (stream, seq, event_id, type, topic, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (stream, seq, envelope["event_id"], event_type, topic, payload, envelope["time"]),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return Recorded(cur.lastrowid, stream, seq, envelope, topic, payload)


# -- the store across an update -----------------------------------------------------------------


def store_schema(db: Path) -> int | None:
    """The database's schema version (PRAGMA user_version), or None when there is no database."""
    if not db.exists():
        return None
    _check_store_files(db)
    conn = sqlite3.connect(db, timeout=10.0)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def store_id(db: Path) -> str | None:
    """The store's ``store_id`` (its meta table), or None when the file is missing or has none."""
    if not db.exists():
        return None
    _check_store_files(db)
    conn = sqlite3.connect(db, timeout=10.0)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def backup_store(db: Path, dest: Path) -> None:
    """A consistent copy of ``db`` at ``dest`` through sqlite3's online backup API.

    ``dest`` belongs in the updater's own directory (``Layout.work``): the copy is made under
    a temporary name there and renamed, and is never left half-written.
    """
    _check_store_files(db)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(db, timeout=10.0)
        try:
            out = sqlite3.connect(tmp)
            try:
                src.backup(out)
            finally:
                out.close()
        finally:
            src.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def restore_store(db: Path, backup: Path, owner: os.stat_result | None = None) -> None:
    """Make the live store at ``db`` the backup again, whole, through the backup API.

    Writing into the live file keeps it the daemon's (owner, mode, WAL). When there is no
    file at all (the failed release moved it aside and never made another), one is created
    for ``owner``'s uid, gid and mode, never through a link.
    """
    _check_store_files(db)
    if not db.exists():
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if owner is not None:
                os.fchown(fd, owner.st_uid, owner.st_gid)
                os.fchmod(fd, stat.S_IMODE(owner.st_mode))
        finally:
            os.close(fd)
    src = sqlite3.connect(backup, timeout=10.0)
    try:
        live = sqlite3.connect(db, timeout=10.0)
        try:
            src.backup(live)
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            live.close()
    finally:
        src.close()


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[tuple[str, bool, bool]]:
    """(name, not null, has a default) for each column of ``schema.table``."""
    return [(r[1], bool(r[3]), r[4] is not None or bool(r[5])) for r in conn.execute(f'PRAGMA "{schema}".table_info("{table}")')]


def hand_back_store(db: Path, backup: Path) -> list[str]:
    """Give the store back to the old release after the new one migrated it.

    Starts from the backup (the old schema, as it was before the attempt) and replaces each of
    its tables' rows with the migrated database's rows, in the columns the two have in common.
    Migrations only add tables, columns and indexes, so this carries everything recorded
    before and during the attempt back, in a schema the old release knows. A table that cannot
    be carried (a column the old schema requires is gone) keeps the backup's rows and is named
    in the returned list. The live file is overwritten through the backup API, in one
    transaction, so its WAL stays consistent.

    The work file is made beside ``backup`` (the updater's own directory), never in the
    store's. Raises sqlite3.DatabaseError when ``db`` is not the backup's store (another
    ``store_id``): its rows would replace the backup's; use ``restore_store`` then.
    """
    live_id, backup_id = store_id(db), store_id(backup)
    if live_id != backup_id:
        raise sqlite3.DatabaseError(f"{db} is not the store backed up in {backup.name} (store_id {live_id}, not {backup_id})")
    work = backup.with_name(f".{db.name}.handback")
    work.unlink(missing_ok=True)
    backup_store(backup, work)
    kept: list[str] = []
    conn = sqlite3.connect(work, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("ATTACH DATABASE ? AS migrated", (str(db),))
        old_tables = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%' ORDER BY name")]
        new_tables = {r[0] for r in conn.execute("SELECT name FROM migrated.sqlite_master WHERE type = 'table'")}
        conn.execute("BEGIN IMMEDIATE")
        for table in old_tables:
            if table not in new_tables:
                kept.append(f"{table} (gone from the new schema)")
                continue
            old_cols = _columns(conn, "main", table)
            new_names = {c[0] for c in _columns(conn, "migrated", table)}
            lost = [name for name, not_null, has_default in old_cols if name not in new_names and not_null and not has_default]
            if lost:
                kept.append(f"{table} (column {', '.join(lost)} gone)")
                continue
            common = ", ".join(f'"{name}"' for name, _, _ in old_cols if name in new_names)
            conn.execute(f'SAVEPOINT "t_{table}"')
            try:
                conn.execute(f'DELETE FROM main."{table}"')
                conn.execute(f'INSERT INTO main."{table}" ({common}) SELECT {common} FROM migrated."{table}"')
                conn.execute(f'RELEASE "t_{table}"')
            except sqlite3.DatabaseError as exc:
                conn.execute(f'ROLLBACK TO "t_{table}"')
                conn.execute(f'RELEASE "t_{table}"')
                kept.append(f"{table} ({exc})")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE migrated")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"the handed-back store fails its check: {check}")
        _check_store_files(db)
        live = sqlite3.connect(db, timeout=10.0)
        try:
            conn.backup(live)
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            live.close()
    finally:
        conn.close()
        work.unlink(missing_ok=True)
    return kept


# -- the update -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How an update ended: the exit code and a sentence for the person who ran it."""

    code: int
    message: str
    version: str | None = None


def _free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _device_of(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev


class Updater:
    """Installs verified bundles on one device and rolls back a release that does not come up."""

    def __init__(
        self,
        root: str | Path = "/",
        config: Config | None = None,
        *,
        config_path: str | Path | None = None,
        runner: ServiceRunner | None = None,
        python: str | None = None,
        timeout: float = 60.0,
        settle_s: float = 10.0,
        free_bytes: Callable[[Path], int] = _free_bytes,
        out: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.layout = Layout(Path(root))
        self.config = config or load_config(config_path or self.layout.config)
        self.runner = runner or Systemctl()
        self.python = python or sys.executable
        self.timeout = timeout
        self.settle_s = settle_s
        self.free_bytes = free_bytes
        self.out = out
        self.db = Path(self.config.store.path)
        self.state_dir = self.db.parent
        self.state_path = self.state_dir / STATE_FILE
        # Root's own files never go in the store's directory, which the daemon and the page
        # can write (a planted symlink there would have root write wherever it points).
        self.work = self.layout.work
        self.backups = self.work / "backups"
        self.downloads = self.work / "downloads"
        self.boot = boot_id()

    def work_dir(self) -> Path:
        """The updater's own directory, made 0700 if missing; raises UnsafeDirectory if it is not its own."""
        return _private_dir(self.work)

    # -- what is there --------------------------------------------------------------------

    def current_release(self) -> Path | None:
        return _link_target(self.layout.current)

    def current_version(self) -> str | None:
        target = self.current_release()
        return release_version(target) if target else None

    def key(self) -> VerifyKey:
        return load_release_key(self.layout.release_key)

    # -- events and state -----------------------------------------------------------------

    def _emit(self, what: str, record: Callable[[Recorder], Any]) -> None:
        """Record one update event in the store; never raises (the update matters more)."""
        if not self.db.exists():
            log.warning("no store at %s: %s not recorded", self.db, what)
            return
        try:
            record(Recorder(_Outbox(self.db), self.config.device, SystemClock(self.config.clock.source), self.boot))
        except (sqlite3.Error, OSError, ApplianceError) as exc:
            log.error("could not record %s: %s", what, exc)
            self.out(f"warning: could not record {what} in {self.db} ({exc})")

    def write_state(self, outcome: str, version: str | None, from_version: str | None, reason: str | None) -> None:
        write_update_state(self.state_path, self.layout, outcome, version, from_version, reason, out=self.out)

    def _fail(self, exc: UpdateError, *, version: str | None, from_version: str | None, source: str, rolled_back: bool = False, store: str = "untouched", outcome: str | None = None, code: int = EXIT_REFUSED) -> Outcome:
        data = {
            "version": version,
            "from_version": from_version,
            "source": source,
            "stage": exc.stage,
            "reason": exc.reason,
            "fix": exc.fix,
            "rolled_back": rolled_back,
            "store": store,
        }
        self._emit(UPDATE_FAILED, lambda r: r.telemetry(UPDATE_FAILED, data, droppable=False))
        outcome = outcome or ("rolled_back" if rolled_back else "refused" if exc.stage in ("verify", "download") else "failed")
        self.write_state(outcome, version, from_version, exc.reason)
        return Outcome(code, str(exc), version)

    # -- checks before anything changes -------------------------------------------------------

    def check(self, manifest: Manifest, current: str | None, *, force: bool) -> None:
        """Platform, version, store schema and disk space; raises BundleRefused or NoRoom."""
        device = Target.this()
        target = manifest.target
        if (target["implementation"], target["python"]) != (device.implementation, device.python):
            raise BundleRefused(
                f"release {manifest.version} is built for Python {target['python']} ({target.get('abi', target['implementation'])}), this device runs Python {device.python} ({device.abi})",
                f"ask the county for a bundle built with --wheelhouse for Python {device.python} on {device.machine}",
            )
        if target["machine"] not in ("any", device.machine):
            raise BundleRefused(
                f"release {manifest.version} is built for {target['machine']}, this device is {device.machine}",
                f"ask the county for a bundle whose wheelhouse was built on a {device.machine} Pi",
            )
        for name in manifest.wheels:
            problem = wheel_problem(Path(name).name, device)
            if problem:
                raise BundleRefused(f"{Path(name).name} {problem}", f"ask the county for a bundle built for Python {device.python} on {device.machine}")
        if not any(Path(n).name.startswith("hall_appliance-") for n in manifest.wheels):
            raise BundleRefused(f"release {manifest.version} has no hall_appliance wheel", "ask the county for a bundle made by `hall-provision release`")
        if current is not None and not is_newer(manifest.version, current) and not force:
            same = "the same as" if version_key(manifest.version) == version_key(current) else "older than"
            raise BundleRefused(f"release {manifest.version} is {same} the running {current}", "nothing to do; county IT can reinstall or go back with --force")
        schema = store_schema(self.db)
        if schema is not None and manifest.store_schema < schema:
            raise BundleRefused(
                f"release {manifest.version} knows store schema {manifest.store_schema}, the store is at {schema}: it could not open the database",
                "install a release at least as new as the store (or restore the store's backup from before its migration, by hand)",
            )
        self.check_space(manifest)

    def check_space(self, manifest: Manifest) -> None:
        """Room for the venv and for everything a rollback writes, before anything changes."""
        wheels = sum(manifest.files[n]["size"] for n in manifest.wheels)
        need_release = wheels * (INSTALL_FACTOR + 1) + INSTALL_AIR
        store = 0
        if self.db.exists():
            wal = Path(str(self.db) + "-wal")
            store = self.db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        # In the updater's directory: the backup, and on a rollback the kept copy of the
        # migrated store and the hand-back work file. Beside the store: the migration's and the
        # hand-back's growth of the live file and its WAL.
        places = [
            (self.layout.releases, need_release, "the new release"),
            (self.backups, 3 * store, "the store's backups"),
            (self.db.parent, store, "the store's migration"),
        ]
        by_device: dict[int, list] = {}
        for where, need, what in places:
            by_device.setdefault(_device_of(where), []).append((where, need, what))
        for group in by_device.values():
            need = sum(n for _, n, _ in group)
            where = group[0][0]
            free = self.free_bytes(where)
            if free < need:
                names = [w for _, n, w in group if n] or [group[0][2]]
                what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
                raise NoRoom(
                    f"not enough free disk for {what}: {need >> 20} MB needed on {where}, {free >> 20} MB free",
                    f"free some space (old files in {self.backups}, or `journalctl --vacuum-size=50M`) and try again",
                )

    # -- choosing and installing -------------------------------------------------------------

    def install(self, bundle: Path, *, force: bool = False, source: str = "file", expect_version: str | None = None) -> Outcome:
        """Verify ``bundle``, install it beside the current release, switch, and roll back if need be.

        ``expect_version``: the version the command announced; a bundle of another is refused.
        """
        current = self.current_version()
        version = None
        try:
            self.work_dir()
            key = self.key()
            manifest = read_bundle(bundle, key)
            version = manifest.version
            if expect_version is not None and version_key(expect_version) != version_key(version):
                raise BundleRefused(f"{bundle.name} is release {version}, the command announced {expect_version}", "check the command: its URL or its version is not the release the county meant")
            self.check(manifest, current, force=force)
        except UpdateError as exc:
            self.out(f"refused: {exc}")
            return self._fail(exc, version=version, from_version=current, source=source)
        self.out(f"{bundle.name}: release {version} verified (signed by {key_id(bytes(key))[:16]}…, {len(manifest.wheels)} wheels)")
        started = {"version": version, "from_version": current, "source": source, "store_schema": manifest.store_schema, "forced": force}
        self._emit(UPDATE_STARTED, lambda r: r.telemetry(UPDATE_STARTED, started, droppable=False))
        try:
            release = self._install_release(bundle, manifest, key)
        except OSError as err:  # writing the release's files: nothing has switched yet
            what = f"{err.strerror or err}" + (f": {err.filename}" if getattr(err, "filename", None) else "")
            if err.errno in NO_ROOM:
                exc = InstallFailed(f"installing release {version} ran out of disk space ({what})", "free some space and try again; the running release is unchanged")
            else:
                exc = InstallFailed(f"installing release {version} failed ({what})", "the running release is unchanged; run the update as root")
            self.out(f"failed: {exc}")
            return self._fail(exc, version=version, from_version=current, source=source)
        except UpdateError as exc:
            self.out(f"failed: {exc}")
            return self._fail(exc, version=version, from_version=current, source=source, outcome="refused" if exc.stage == "verify" else "failed")
        return self._switch(release, manifest, current, source)

    def _install_release(self, bundle: Path, manifest: Manifest, key: VerifyKey) -> Path:
        releases = self.layout.releases
        releases.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        keep = {p for p in (self.current_release(), _link_target(self.layout.previous)) if p}
        target = releases / manifest.version
        if target.exists() and target.resolve() in keep:
            target = releases / f"{manifest.version}-{stamp}"  # a forced reinstall beside the running copy
        elif target.exists():
            shutil.rmtree(target)  # left by an attempt that did not finish
        staging = releases / f".staging-{manifest.version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        # The venv is made at its final path (a venv cannot be moved: its scripts name their
        # interpreter by absolute path); hall-release.json, written last, marks it complete.
        partial = target
        try:
            # Extract while hashing again: the file may have changed since it was checked (a USB
            # stick swapped, a file rewritten). What is extracted must be what was checked.
            again = read_bundle(bundle, key, extract_to=staging / WHEELS)
            if again.signed != manifest.signed:
                raise BundleRefused(
                    f"{bundle.name} changed between the check and the install (it is now release {again.version}, signed {again.created or 'at an unknown time'})",
                    "copy the bundle again, and leave the stick in until the update has finished",
                )
            # -I: isolated, so nothing from the working directory or PYTHON* variables leaks in.
            venv = [self.python, "-I", "-m", "venv"]
            current = self.current_release()
            if current and _system_site_packages(current):
                venv.append("--system-site-packages")  # apt's python3-lgpio on Raspberry Pi OS
            self._run(venv + [str(partial)], "making the virtual environment")
            # The device's pip config must not add indexes or constraints: the bundle is all there is.
            self._run(
                [str(partial / "bin" / "python"), "-I", "-m", "pip", "install", "--no-index", "--find-links", str(staging / WHEELS),
                 "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--quiet", f"{PROJECT}=={manifest.version}"],
                "installing the wheels",
            )  # fmt: skip
            got = self._run([str(partial / "bin" / "python"), "-I", "-c", "import appliance; print(appliance.__version__)"], "checking the installed version").strip()
            if got != manifest.version:
                raise InstallFailed(f"the bundle's hall_appliance wheel installs version {got}, its manifest says {manifest.version}", "ask the county to build the bundle again")
            info = {"version": manifest.version, "store_schema": manifest.store_schema, "created": manifest.created, "installed": _now(), "bundle": bundle.name}
            _write_atomic(partial / RELEASE_INFO, json.dumps(info, indent=2) + "\n")
            fsync_dir(releases)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _run(self, argv: list[str], what: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.layout.releases, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallFailed(f"{what} failed ({exc})", "see the message above; the running release is unchanged") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            if any("No space left" in line for line in tail):
                raise InstallFailed(f"{what} ran out of disk space", "free some space and try again; the running release is unchanged")
            raise InstallFailed(f"{what} failed: {' '.join(tail)[:400]}", "the running release is unchanged; report this to the county with the bundle's name")
        return done.stdout

    # -- switching, health, rollback ----------------------------------------------------------

    def _status(self, timeout: float = 3.0) -> dict | None:
        try:
            return ControlClient(self.config.control.socket, timeout=timeout).call("status")
        except (ControlError, OSError, ValueError):
            return None

    def health_problems(self, status: dict | None, version: str | None, before: dict | None, schema: int | None) -> list[str]:
        """Why the daemon answering on the control socket is not a healthy ``version`` (empty: healthy)."""
        if status is None:
            return ["the daemon does not answer on its control socket"]
        problems = []
        if version is not None and status.get("version") != version:
            problems.append(f"the daemon answering is version {status.get('version')}, not {version}")
        uplink = (status.get("uplink") or {}).get("state")
        was = ((before or {}).get("uplink") or {}).get("state")
        if uplink not in UPLINK_WORKING:
            problems.append(f"the uplink is {uplink}")
        elif was == "connected" and uplink != "connected":
            problems.append(f"the uplink is {uplink}; before the update it was connected")
        active = {a.get("code") for a in status.get("alarms", []) if isinstance(a, dict)}
        had = {a.get("code") for a in (before or {}).get("alarms", []) if isinstance(a, dict)}
        for code in REGRESSION_ALARMS:
            if code in active and code not in had:
                detail = next((a.get("detail") for a in status["alarms"] if a.get("code") == code), "")
                problems.append(f"alarm {code}: {detail}")
        if not status.get("pin_factory"):
            problems.append("no GPIO pin factory is in use")
        elif before and before.get("pin_factory") and status["pin_factory"] != before["pin_factory"]:
            problems.append(f"the pins are driven by {status['pin_factory']}, before the update by {before['pin_factory']}")
        if before and (before.get("badge_reader") or {}).get("connected") and not (status.get("badge_reader") or {}).get("connected"):
            problems.append("the badge reader was connected before the update and is not now")
        if "outbox" not in status:
            problems.append("the status has no outbox: the store is not open")
        if schema is not None:
            found = store_schema(self.db)
            if found != schema:
                problems.append(f"the store is at schema {found}, the release needs {schema}")
        return problems

    def _start(self, unit: str, timeout: float) -> None:
        # hall-appliance.service allows 5 starts in 10 min with Restart=on-failure: a release
        # that crashes after READY is restarted during the health window, and the rollback's
        # start would then be refused by the start limit. Each start of ours begins afresh.
        self.runner.reset_failed(unit)
        self.runner.start(unit, timeout)

    def wait_healthy(self, version: str | None, before: dict | None, schema: int | None, deadline: float, *, web: bool = True) -> None:
        """Start the daemon, wait until it has been healthy for ``settle_s``, then start the page
        (when ``web``); raises ServiceFailed if the daemon does not get there by ``deadline``."""
        self._start(DAEMON_UNIT, max(deadline - time.monotonic(), 1.0))
        healthy_since = None
        problems = ["not checked yet"]
        while True:
            status = self._status()
            problems = self.health_problems(status, version, before, schema)
            now = time.monotonic()
            if problems:
                healthy_since = None
            elif healthy_since is None:
                healthy_since = now
            if healthy_since is not None and now - healthy_since >= self.settle_s:
                if self.runner.is_active(DAEMON_UNIT):
                    break
                problems = [f"{DAEMON_UNIT} stopped after it answered"]
                healthy_since = None
            if now >= deadline:
                raise ServiceFailed(f"release {version} was not healthy within {self.timeout:.0f} s: {'; '.join(problems)}", f"see `journalctl -u {DAEMON_UNIT}`")
            time.sleep(0.25)
        if web:
            self._start(WEB_UNIT, max(deadline - time.monotonic(), 10.0))

    def _stop_all(self) -> bool:
        """Stop the page, then the daemon; returns whether the page was running."""
        web = self.runner.is_active(WEB_UNIT)
        for unit in (WEB_UNIT, DAEMON_UNIT):
            self.runner.stop(unit)
        return web

    def _switch(self, release: Path, manifest: Manifest, from_version: str | None, source: str) -> Outcome:
        version = manifest.version
        old = self.current_release()
        old_previous = _link_target(self.layout.previous)
        before = self._status()
        self.out(f"stopping {from_version or 'the appliance'} to switch to {version}")
        # From the first stop on, whatever goes wrong (a full disk during the backup, a bug, an
        # interrupt) ends in _roll_back, which always starts a release again: never a dark hall.
        web, step, old_schema, backup, owner = True, "stopping the services", None, None, None
        try:
            web = self._stop_all()
            step = "backing up the store"
            old_schema = store_schema(self.db)
            if old_schema is not None:
                owner = os.stat(self.db)
                dest = self.backups / f"hall-{from_version or 'unknown'}-{time.strftime('%Y%m%dT%H%M%S')}.db"
                backup_store(self.db, dest)
                backup = dest
                self.out(f"store backed up to {backup}")
            step = "switching the links"
            # From here a power cut would leave the new release running unchecked: the note
            # below lets `update --resume` (hall-update-resume.service, at boot) roll it back.
            self._begin_attempt(release, version, old, old_previous, from_version, old_schema, backup, source, web, owner)
            point(self.layout.current, release)
            if old is not None:
                point(self.layout.previous, old)
            step = "starting"
            deadline = time.monotonic() + self.timeout
            self.wait_healthy(version, before, manifest.store_schema if old_schema is not None else None, deadline, web=web)
        except BaseException as exc:
            if isinstance(exc, UpdateError):
                failure = exc
            else:
                failure = ServiceFailed(f"{step} for release {version} failed ({_describe(exc)})", "report this to the county with `journalctl -u hall-update`")
            self.out(f"release {version} did not come up: {failure.reason}; going back to {from_version}")
            outcome = self._roll_back(failure, release, version, old, old_previous, from_version, old_schema, backup, source, web, switched=step in ("switching the links", "starting"), started=step == "starting", owner=owner)
            self._end_attempt()
            if not isinstance(exc, Exception):
                raise  # an interrupt: the hall runs again, now stop as asked
            return outcome
        # Found healthy: from here nothing may roll it back, and the success is on record
        # before the pruning below (seconds on a card) can be cut short.
        self._end_attempt()
        done = {"version": version, "from_version": from_version, "source": source, "store_schema": manifest.store_schema, "backup": backup.name if backup else None}
        self._emit(UPDATE_SUCCEEDED, lambda r: r.telemetry(UPDATE_SUCCEEDED, done, droppable=False))
        self.write_state("succeeded", version, from_version, None)
        try:
            self._prune(keep={release, old})
        except OSError as exc:
            log.warning("could not remove old releases or backups: %s", exc)
        return Outcome(EXIT_OK, f"release {version} is running (previous: {from_version})", version)

    def _roll_back(
        self, exc: UpdateError, release: Path, version: str, old: Path | None, old_previous: Path | None, from_version: str | None,
        old_schema: int | None, backup: Path | None, source: str, web: bool, *, switched: bool = True, started: bool = True, owner: os.stat_result | None = None,
    ) -> Outcome:  # fmt: skip
        """Put the links and the store back as they were and start the old release; never raises
        (an interrupt aside): every step is tried, and what failed is in the event."""
        trouble: list[str] = []
        try:
            self._stop_all()
        except Exception as err:
            trouble.append(f"stopping the services failed ({_describe(err)})")
        if switched:
            try:
                if old is None:
                    self.layout.current.unlink(missing_ok=True)
                else:
                    point(self.layout.current, old)
                if old_previous is not None:
                    point(self.layout.previous, old_previous)
                else:
                    self.layout.previous.unlink(missing_ok=True)
            except OSError as err:
                trouble.append(f"the links could not be switched back ({_describe(err)})")
        store = "untouched"
        if started and backup is not None and old_schema is not None:
            try:
                store = self._give_store_back(version, old_schema, backup, owner)
            except Exception as err:
                store = f"could not be given back to {from_version} ({_describe(err)}); the backup from before the update is {backup}"
        if release != old:
            shutil.rmtree(release, ignore_errors=True)
        if trouble:
            exc = ServiceFailed(f"{exc.reason}; {'; '.join(trouble)}", exc.fix)
        if old is None:
            return self._fail(exc, version=version, from_version=from_version, source=source, rolled_back=False, store=store, outcome="broken", code=EXIT_BROKEN)
        try:
            self.wait_healthy(from_version, None, old_schema, time.monotonic() + self.timeout, web=web)
        except Exception as err:
            again = err.reason if isinstance(err, UpdateError) else _describe(err)
            self.out(f"the old release {from_version} did not come up either: {again}")
            broken = ServiceFailed(f"{exc.reason}; after going back, {from_version} did not come up either: {again}", f"a person must look: `journalctl -u {DAEMON_UNIT}`")
            return self._fail(broken, version=version, from_version=from_version, source=source, rolled_back=switched, store=store, outcome="broken", code=EXIT_BROKEN)
        if not switched:
            self.out(f"{from_version} is running again; nothing was switched")
            return self._fail(exc, version=version, from_version=from_version, source=source, rolled_back=False, store=store, outcome="failed", code=EXIT_REFUSED)
        self.out(f"rolled back: {from_version} is running again")
        return self._fail(exc, version=version, from_version=from_version, source=source, rolled_back=True, store=store, code=EXIT_ROLLED_BACK)

    def _give_store_back(self, version: str, old_schema: int, backup: Path, owner: os.stat_result | None) -> str:
        """Leave the store as the old release can open it, with nothing lost; says what was done."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept_copy = self.backups / f"hall-{version}-failed-{stamp}.db"
        live_id, backup_id = store_id(self.db), store_id(backup)
        if live_id != backup_id:
            # store.py treats any error while opening (a failing migration included) as damage:
            # it moves the real file aside (hall.db.damaged-*) and starts an empty store. Its rows
            # must not replace the backup's: the backup itself becomes the store again.
            kept = ""
            if live_id is not None:
                try:
                    backup_store(self.db, kept_copy)
                    kept = f"; what {version} recorded in its new store is kept as {kept_copy.name}"
                except (sqlite3.Error, OSError) as err:  # the real data comes first
                    kept = f"; what {version} recorded in its new store could not be kept ({_describe(err)})"
            restore_store(self.db, backup, owner)
            return (
                f"{version} did not open the store: it put it aside as damaged ({self.db.name}.damaged-*) and started an empty one"
                f" (store_id {live_id or 'none'}, not {backup_id}); the backup from before the update was restored as the store{kept}"
            )
        schema_now = store_schema(self.db)
        if schema_now is None or schema_now <= old_schema:
            return "untouched"
        backup_store(self.db, kept_copy)
        try:
            left = hand_back_store(self.db, backup)
        except (sqlite3.Error, OSError) as err:
            # The old release cannot open the newer schema: restore the backup whole rather than
            # leave the hall dark; what the attempt recorded is in the kept copy.
            restore_store(self.db, backup, owner)
            return (
                f"migrated to schema {schema_now} by {version} and could not be handed back ({_describe(err)}); the backup from before"
                f" the update was restored, and everything recorded during the attempt is kept as {kept_copy.name}"
            )
        store = f"migrated to schema {schema_now} by {version}, handed back at schema {old_schema} with everything recorded; the migrated copy is kept as {kept_copy.name}"
        if left:
            store += f"; not carried back (the backup's rows kept): {', '.join(left)}"
        return store

    # -- an attempt cut short -------------------------------------------------------------------

    def _begin_attempt(
        self, release: Path, version: str, old: Path | None, old_previous: Path | None, from_version: str | None,
        old_schema: int | None, backup: Path | None, source: str, web: bool, owner: os.stat_result | None,
    ) -> None:  # fmt: skip
        """Note, durably, what a roll-back of this attempt needs; it is removed when the attempt ends."""
        note = {
            "format": 1,
            "version": version,
            "release": str(release),
            "old": str(old) if old else None,
            "old_previous": str(old_previous) if old_previous else None,
            "from_version": from_version,
            "old_schema": old_schema,
            "backup": str(backup) if backup else None,
            "source": source,
            "web": web,
            "owner": None if owner is None else {"uid": owner.st_uid, "gid": owner.st_gid, "mode": stat.S_IMODE(owner.st_mode)},
            "at": _now(),
        }
        _write_atomic(self.work_dir() / ATTEMPT_FILE, json.dumps(note, ensure_ascii=False, indent=2) + "\n", 0o600)

    def _end_attempt(self) -> None:
        path = self.work / ATTEMPT_FILE
        if not os.path.lexists(path):
            return
        try:
            path.unlink()
            fsync_dir(self.work)
        except OSError as exc:
            self.out(f"warning: could not remove {self.work / ATTEMPT_FILE} ({exc})")

    def resume(self) -> Outcome:
        """At boot: roll back an update that a power cut or a kill interrupted after its backup.

        The new release was never found healthy, so it is not trusted: the links, the store and
        the services go back exactly as a failed health check would have put them, and
        ``update.failed`` says so. Without an interrupted attempt this does nothing.
        """
        path = self.work / ATTEMPT_FILE
        try:
            note = json.loads(_read_regular(path, MAX_STATE).decode("utf-8"))
            version, source, web = note["version"], note["source"], bool(note["web"])
            release = Path(note["release"])
            old, old_previous, backup = (Path(note[k]) if note[k] else None for k in ("old", "old_previous", "backup"))
            from_version, old_schema, owner = note["from_version"], note["old_schema"], note["owner"]
            if owner is not None:
                owner = os.stat_result((stat.S_IFREG | owner["mode"], 0, 0, 0, owner["uid"], owner["gid"], 0, 0, 0, 0))
        except FileNotFoundError:
            return Outcome(EXIT_OK, "no interrupted update to finish", self.current_version())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"{path} cannot be read ({_describe(exc)}), so an interrupted update cannot be rolled back"
            self.write_state("broken", None, self.current_version(), reason)
            return Outcome(EXIT_BROKEN, f"{reason}; a person must look: `journalctl -u hall-update-resume`", self.current_version())
        self.out(f"the update to {version} was cut short before it was found healthy; going back to {from_version}")
        failure = ServiceFailed(
            f"the update to release {version} was cut short (a power cut, a restart or a kill) before it was found healthy",
            "nothing to do on the device: the old release runs again; send the update again when convenient",
        )
        outcome = self._roll_back(failure, release, version, old, old_previous, from_version, old_schema, backup, source, web, switched=True, started=True, owner=owner)
        self._end_attempt()
        return outcome

    def _prune(self, keep: set) -> None:
        """Remove releases other than current and previous, and all but the newest backups."""
        keep = {p.resolve() for p in keep if p}
        for entry in self.layout.releases.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.resolve() not in keep:
                shutil.rmtree(entry, ignore_errors=True)
        if self.backups.is_dir():
            for old in sorted(self.backups.glob("hall-*.db"), key=lambda p: p.stat().st_mtime)[:-KEEP_BACKUPS]:
                old.unlink(missing_ok=True)

    # -- delivery --------------------------------------------------------------------------------

    def install_from_dir(self, directory: Path, *, force: bool = False) -> Outcome:
        """Install the newest valid bundle in ``directory`` (a USB stick, the boot partition)."""
        key = self.key()
        chosen, refused = choose_bundle(directory, key)
        for path, reason in refused:
            self.out(f"skipped {path.name}: {reason}")
        if chosen is None:
            exc = BundleRefused(f"no valid release bundle in {directory}" + (f" ({len(refused)} refused)" if refused else ""), "copy the county's hall-appliance-<version>.tar there")
            self.out(f"refused: {exc}")
            return self._fail(exc, version=None, from_version=self.current_version(), source="dir")
        path, manifest = chosen
        current = self.current_version()
        if current is not None and not force and not is_newer(manifest.version, current):
            # A stick left in the slot: nothing to do, and nothing worth an event.
            return Outcome(EXIT_OK, f"the newest bundle in {directory} is {manifest.version}; {current} is already running", current)
        return self.install(path, force=force, source="dir")

    def install_from_url(
        self, url: str, sha256: str, *, size: int | None = None, version: str | None = None, force: bool = False, ca_file: str | None = None, source: str = "url",
    ) -> Outcome:  # fmt: skip
        """Download the bundle (resuming after a cut), check its sha256, then install it.

        ``version``: what the command announced; a bundle of another version is refused.
        """
        current = self.current_version()
        try:
            self.work_dir()
            path = download(url, self.downloads, sha256, size=size, ca_file=ca_file, free_bytes=self.free_bytes, out=self.out)
        except UpdateError as exc:
            self.out(f"refused: {exc}")
            return self._fail(exc, version=None, from_version=current, source=source)
        try:
            return self.install(path, force=force, source=source, expect_version=version)
        finally:
            path.unlink(missing_ok=True)


def default_ca_file(config: Config, layout: Layout) -> str | None:
    """The CA an https download trusts besides the system's when none is given: the device's own
    county CA (``[broker.tls] ca_file``, else ``/etc/hall-appliance/ca.crt`` when there is one)."""
    tls = config.broker.tls
    if tls is not None and tls.ca_file:
        return str(tls.ca_file)
    return str(layout.county_ca) if layout.county_ca.is_file() else None


def _system_site_packages(venv: Path) -> bool:
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "include-system-site-packages":
                return value.strip().lower() == "true"
    except OSError:
        pass
    return False


def choose_bundle(directory: Path, key: VerifyKey) -> tuple[tuple[Path, Manifest] | None, list[tuple[Path, str]]]:
    """The newest bundle in ``directory`` that passes its signature and hashes, and those refused."""
    valid, refused = [], []
    try:
        candidates = sorted(p for p in directory.iterdir() if p.suffix == ".tar" and p.is_file())
    except OSError as exc:
        raise BundleRefused(f"cannot read {directory} ({exc.strerror})", "give the directory where the USB stick or the boot partition is mounted") from None
    for path in candidates:
        try:
            valid.append((path, read_bundle(path, key)))
        except BundleRefused as exc:
            refused.append((path, exc.reason))
    if not valid:
        return None, refused
    return max(valid, key=lambda pm: version_key(pm[1].version)), refused


# -- downloading ------------------------------------------------------------------------------


def download(
    url: str,
    directory: Path,
    sha256: str,
    *,
    size: int | None = None,
    attempts: int = 6,
    timeout: float = 30.0,
    ca_file: str | None = None,
    free_bytes: Callable[[Path], int] = _free_bytes,
    sleep: Callable[[float], None] = time.sleep,
    out: Callable[[str], None] = lambda line: None,
) -> Path:
    """Fetch ``url`` into ``directory``, resuming with HTTP Range after a cut, and check its sha256.

    The partial file is kept between runs (``<sha256>.part``), so a later attempt goes on where
    the last one stopped; parts of other bundles, and one of this bundle older than a week, are
    removed first. ``directory`` must be the updater's own (``Layout.work``), never one the
    services can write. Without a size from the command or the server, at most
    MAX_UNSIZED_DOWNLOAD bytes are taken. ``ca_file`` is trusted besides the system's CAs.
    Returns the complete file; raises DownloadFailed.
    """
    check_url(url)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(directory, sha256)
    part = directory / f"{sha256}.part"
    final = directory / f"{sha256}.tar"
    if final.exists():
        if _file_sha256(final) == sha256:
            return final
        final.unlink()
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        if ca_file:
            try:
                context.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise DownloadFailed(f"cannot use the CA certificate {ca_file} ({exc})", "give the county CA certificate with --ca-file, or install it as [broker.tls] ca_file") from None
    last_error = "no attempt made"
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        headers = {"User-Agent": f"hall-appliance/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout, context=context) as resp:
                if resp.status == 206 and not (have and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")):
                    part.unlink(missing_ok=True)  # not the part we asked for: start again
                    last_error = f"the server sent the range {resp.headers.get('Content-Range')!r}, not bytes {have}-"
                    continue
                if resp.status == 206:
                    append = True
                    total = _total_from(resp.headers.get("Content-Range"))
                else:
                    append, have = False, 0  # the server sends the whole file again
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                if size is not None and total is not None and total != size:
                    raise DownloadFailed(f"{url} is {total} bytes, the command said {size}", "check the URL; the county's file server may hold another file under that name")
                limit = total if total is not None else size if size is not None else MAX_UNSIZED_DOWNLOAD
                expect = limit - have
                if expect > 0 and free_bytes(directory) < expect + INSTALL_AIR:
                    unsized = "" if total is not None or size is not None else f" (up to {MAX_UNSIZED_DOWNLOAD >> 20} MB: neither the command nor the server gives the size)"
                    raise DownloadFailed(f"not enough free disk to download {expect >> 20} MB into {directory}{unsized}", "free some space and send the command again")
                if have:
                    out(f"resuming the download at {have} bytes")
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
                with os.fdopen(os.open(part, flags, 0o600), "ab" if append else "wb") as f:
                    got = have
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        got += len(chunk)
                        if got > limit:
                            f.close()
                            part.unlink(missing_ok=True)
                            if total is None and size is None:
                                raise DownloadFailed(f"{url} is larger than {MAX_UNSIZED_DOWNLOAD >> 20} MB and neither the command nor the server says its size", "give the bundle's size in the command (args.size)")
                            raise DownloadFailed(f"{url} sent more than the {limit} bytes announced", "check the URL; the county's file server may hold another file under that name")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
            got = part.stat().st_size
            if total is not None and got < total:
                raise http.client.IncompleteRead(b"", total - got)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                break  # we have it all already; the hash decides
            if 400 <= exc.code < 500:
                raise DownloadFailed(f"the file server answered {exc.code} {exc.reason} for {url}", "check the URL in the command") from None
            last_error = f"the file server answered {exc.code} {exc.reason}"
        except DownloadFailed:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ssl.SSLError, socket.timeout) as exc:
            if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                raise DownloadFailed(f"the disk filled up while downloading into {directory}", "free some space and send the command again; the download resumes where it stopped") from None
            last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        out(f"download interrupted ({last_error}); attempt {attempt + 2} of {attempts}" if attempt + 1 < attempts else f"download interrupted ({last_error})")
        if attempt + 1 < attempts:
            sleep(min(2 ** attempt, 30))
    else:
        raise DownloadFailed(f"{url} could not be downloaded whole in {attempts} attempts ({last_error})", f"the partial file is kept in {directory}; send the command again to resume")
    digest = _file_sha256(part)
    if digest != sha256:
        part.unlink(missing_ok=True)
        raise DownloadFailed(f"the file from {url} has sha256 {digest[:16]}…, not the {sha256[:16]}… the command gave: it is truncated or not the announced bundle", "check the URL and the sha256 in the command")
    os.replace(part, final)
    return final


def _remove_stale_downloads(directory: Path, sha256: str) -> None:
    """Remove downloads of other bundles (they would only pile up) and a part of this one older than STALE_PART_S."""
    for entry in directory.iterdir():
        if entry.suffix not in (".part", ".tar") or not SHA256.match(entry.stem):
            continue
        try:
            age = time.time() - entry.lstat().st_mtime
            if entry.stem != sha256 or (entry.suffix == ".part" and age > STALE_PART_S):
                entry.unlink()
        except OSError as exc:
            log.warning("could not remove the old download %s: %s", entry, exc)


def _total_from(content_range: str | None) -> int | None:
    m = re.match(r"bytes \d+-\d+/(\d+)", content_range or "")
    return int(m.group(1)) if m else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_url(url: str, field_name: str = "url") -> str:
    """An http or https URL with a host; raises CommandRejected naming the field."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise CommandRejected("must be an http or https URL of at most 2048 characters", field_name)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CommandRejected(f"must be an http:// or https:// URL on the county's file server, got {url[:80]!r}", field_name)
    if any(c.isspace() for c in url):
        raise CommandRejected("must not contain spaces; percent-encode them", field_name)
    return url


# -- the MQTT command update.install ----------------------------------------------------------------


def validate_install_args(args: Any) -> dict:
    """The args of cmd/update.install: ``url``, ``sha256``, and optionally ``size`` and ``version``.

    Raises CommandRejected naming the field. There is no ``force`` here: going back to an
    older release is county IT's decision at the device (``--force``).
    """
    if not isinstance(args, dict):
        raise CommandRejected("must be an object with url and sha256", "args")
    unknown = sorted(set(args) - {"url", "sha256", "size", "version"})
    if unknown:
        raise CommandRejected(f"unknown key {unknown[0]!r}; update.install takes url, sha256, size and version", f"args.{unknown[0]}")
    if "url" not in args:
        raise CommandRejected("is required: the bundle's address on the county's file server", "args.url")
    url = check_url(args["url"], "args.url")
    sha = args.get("sha256")
    if not isinstance(sha, str) or not SHA256.match(sha.lower()):
        raise CommandRejected("must be the bundle's sha256: 64 hex digits (sha256sum prints it)", "args.sha256")
    checked: dict[str, Any] = {"url": url, "sha256": sha.lower()}
    if "size" in args:
        size = args["size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 2 << 30:
            raise CommandRejected("must be the bundle's size in bytes (1 to 2 GiB)", "args.size")
        checked["size"] = size
    if "version" in args:
        version = args["version"]
        try:
            version_key(version if isinstance(version, str) else "")
        except ValueError:
            raise CommandRejected(f"must be a release version like 1.4.2, got {json.dumps(version, ensure_ascii=False)[:40]}", "args.version") from None
        checked["version"] = version
    return checked


def request_install(state_dir: Path, args: dict) -> dict:
    """Leave a validated update.install for the updater; returns the command's result.

    The daemon never installs in its own process (the update restarts it): it writes
    ``update-request.json`` in its state directory, and systemd's hall-update.path starts
    ``hall-appliance update --request FILE`` as root. A newer request replaces one not yet taken.
    """
    path = Path(state_dir) / REQUEST_FILE
    _write_atomic(path, json.dumps(dict(args, requested=_now()), ensure_ascii=False) + "\n", 0o640)
    return {"sha256": args["sha256"], "version": args.get("version")}


def take_request(path: Path) -> dict:
    """Read and remove a request file (so its path unit does not start the updater again).

    Root reads it from a directory the daemon and the page can write: a symlink, a FIFO or
    anything but a small regular file is refused (and removed), never followed or waited on.
    """
    try:
        doc = json.loads(_read_regular(path, MAX_REQUEST).decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise BundleRefused(f"no update request at {path}", "nothing to do") from None
    except (OSError, ValueError) as exc:
        _remove_request(path)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BundleRefused(f"the update request {path} cannot be read ({why})", "send the command again") from None
    _remove_request(path)
    try:
        return validate_install_args({k: v for k, v in doc.items() if k in ("url", "sha256", "size", "version")})
    except CommandRejected as exc:
        raise BundleRefused(f"the update request {path} is not valid ({exc})", "send the command again") from None


def _remove_request(path: Path) -> None:
    # unlink removes a symlink itself, never what it points at; an (empty) directory is removed too,
    # or the path unit would fire for ever.
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        with contextlib.suppress(OSError):
            path.rmdir()
    except OSError as exc:
        log.warning("could not remove the update request %s: %s", path, exc)


# -- the command line --------------------------------------------------------------------------------


def cmd_update(args: argparse.Namespace) -> int:
    sources = [s for s in (args.bundle, args.from_dir, args.url, args.request, args.resume) if s]
    if len(sources) != 1:
        print("hall-appliance update: give exactly one of BUNDLE, --from-dir DIR, --url URL --sha256 HEX, --request FILE or --resume", file=sys.stderr)
        return 2
    if args.url and not args.sha256:
        print("hall-appliance update: --url needs --sha256 (the county announces both)", file=sys.stderr)
        return 2
    if not 5 <= args.timeout <= 3600:
        print("hall-appliance update: --timeout must be 5 to 3600 seconds", file=sys.stderr)
        return 2
    layout = Layout(args.root)
    if args.request:
        return _carry_out_request(args, layout)
    updater = Updater(args.root, config_path=args.config or layout.config, timeout=args.timeout)
    if args.resume:
        outcome = updater.resume()
    elif args.bundle:
        outcome = updater.install(args.bundle, force=args.force)
    elif args.from_dir:
        outcome = updater.install_from_dir(args.from_dir, force=args.force)
    else:
        try:
            validate_install_args({"url": args.url, "sha256": args.sha256} | ({"size": args.size} if args.size else {}))
        except CommandRejected as exc:
            print(f"hall-appliance update: {exc}", file=sys.stderr)
            return 2
        outcome = updater.install_from_url(args.url, args.sha256.lower(), size=args.size, force=args.force, ca_file=args.ca_file)
    stream = sys.stdout if outcome.code == EXIT_OK else sys.stderr
    print(outcome.message, file=stream)
    return outcome.code


def _carry_out_request(args: argparse.Namespace, layout: Layout) -> int:
    """``--request``: take the request first, so that nothing that fails afterwards (a broken
    config) leaves it there for the path unit to start this again until its start limit stops
    it watching for good; a failure to start is recorded in update-state.json beside it."""
    try:
        request = take_request(args.request)
    except BundleRefused as exc:
        print(f"hall-appliance update: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        updater = Updater(args.root, config_path=args.config or layout.config, timeout=args.timeout)
    except (ApplianceError, OSError, ValueError) as exc:
        reason = f"the updater could not start: {exc}"
        current = _link_target(layout.current)
        write_update_state(args.request.parent / STATE_FILE, layout, "failed", request.get("version"), release_version(current) if current else None, reason)
        print(f"hall-appliance update: {reason}", file=sys.stderr)
        return EXIT_REFUSED
    ca_file = args.ca_file or default_ca_file(updater.config, layout)
    outcome = updater.install_from_url(request["url"], request["sha256"], size=request.get("size"), version=request.get("version"), ca_file=ca_file, source="mqtt")
    print(outcome.message, file=sys.stdout if outcome.code == EXIT_OK else sys.stderr)
    return outcome.code
