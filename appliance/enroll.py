"""Enrolment on the device: install the bundle county IT made (``hall-appliance enroll``).

A bundle (``hall-provision bundle``) is a tar.gz of a few files and a ``manifest.json`` with
the sha256 of each. Enrolling checks every hash (a damaged or truncated bundle is refused,
naming the file), refuses a bundle made for another device (another id already enrolled
here, or another Pi's serial) unless forced, installs the files with the secrets readable only
by the service that needs them, sets the one-time password of the config page's county IT
account (to be changed at the first sign-in), and writes ``appliance.toml`` last and
atomically, so a half-installed bundle never looks enrolled. Then, when the config names the
county's NTP server, it writes systemd-timesyncd's drop-in (the same bytes as
systemd/install.py) and restarts timesyncd as root on the device, or says to.

``--from-boot`` is the first-boot path: county IT copies ``hall-bundle-DEVICE.tar.gz`` onto
the SD card's boot partition (FAT, readable from any PC); the first-boot unit enrols it and
then **deletes** it, because it holds the broker password, the page's key and the one-time
password. Without a bundle there, it logs one line and exits 0.

The manifest protects against damage, not against a forged bundle: a bundle is as
trustworthy as the hands it came through. ``hall-provision verify`` reads bundles with
:func:`read_bundle` too.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import stat
import subprocess
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from .errors import ApplianceError, ConfigError
from .files import write_atomic

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
BUNDLE_KIND = "hall-appliance-bundle"
MANIFEST = "manifest.json"
# What first boot looks for on the boot partition.
BOOT_PATTERN = "hall-bundle*.tar.gz"

DEFAULT_ETC = "/etc/hall-appliance"
DEFAULT_SERIAL_FILE = "/proc/device-tree/serial-number"
DEFAULT_BOOT_DIR = "/boot/firmware"
# The service users agreed for the device (systemd/): the daemon, and the config page.
DAEMON_USER = "hall"
WEB_USER = "hall-web"
# The config page's county IT account the bundle's one-time password is for.
COUNTY_IT_ACCOUNT = "county-it"

# The store's directory when enrolment has to make it: hall:hall, group-writable for the page,
# setgid so what the page creates belongs to group hall (hall-appliance.service's
# StateDirectoryMode=2770; systemd/install.py makes it the same way).
STORE_DIR_MODE = 0o2770

# The county's NTP server for systemd-timesyncd: the same drop-in, byte for byte, as
# systemd/install.py writes (tests/test_provisioning.py checks they agree), so whichever runs
# second finds it unchanged. Its directory is the one beside --etc's (/etc/systemd/...).
TIMESYNCD_DROPIN = "hall.conf"
DEFAULT_TIMESYNCD_DIR = "/etc/systemd/timesyncd.conf.d"
RESTART_TIMESYNCD = ["systemctl", "restart", "systemd-timesyncd.service"]
# One host name or address: nothing that could add a line to the drop-in (install.py's check).
NTP_SERVER = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")

# No file of a bundle is anywhere near this; a bigger one is not a bundle (or a zip bomb).
MAX_FILE_BYTES = 1 << 20
MAX_FILES = 16


@dataclass(frozen=True)
class BundleFile:
    """How one file of the bundle is installed: its mode, its owner (a service user, or root), or not at all."""

    required: bool
    mode: int | None  # None: not installed (read during enrolment only)
    owner: str | None = None


# Every file a bundle may hold. Secrets are 0600 and owned by the one service that reads
# them; the config names them relative to its own directory, so /etc/hall-appliance holds
# the whole identity of the device.
FILES: dict[str, BundleFile] = {
    "appliance.toml": BundleFile(True, 0o644),
    "ca.crt": BundleFile(True, 0o644),
    "broker-password": BundleFile(True, 0o600, DAEMON_USER),
    "web.crt": BundleFile(True, 0o644),
    "web.key": BundleFile(True, 0o600, WEB_USER),
    "complaints.pub": BundleFile(False, 0o644),
    # Set in the store as the county IT account's password; never written to the device's disk.
    "initial-password": BundleFile(True, None),
}
# The manifest is kept beside the config: what was enrolled, when, from which bundle.
INSTALLED_MANIFEST = "bundle-manifest.json"


class EnrollError(ApplianceError, RuntimeError):
    """The bundle could not be enrolled; nothing that would make the device look enrolled was written."""


class BundleDamaged(EnrollError, ValueError):
    """The bundle is not intact: unreadable, truncated, or a file's hash does not match the manifest."""


class WrongDevice(EnrollError, PermissionError):
    """The bundle was made for another device (another id enrolled here, or another Pi's serial)."""


@dataclass(frozen=True)
class Bundle:
    """A bundle read into memory, every hash checked."""

    source: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def device_id(self) -> str:
        return self.manifest["device"]

    @property
    def serial(self) -> str | None:
        return self.manifest.get("serial")

    def text(self, name: str) -> str:
        return self.files[name].decode("utf-8")


def _damaged(source: Path, what: str, fix: str = "copy the bundle again from county IT's workspace (bundles/), or have county IT build a new one") -> BundleDamaged:
    return BundleDamaged(f"{source}: {what}; {fix}")


def read_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle: only known regular files, a manifest, every sha256 matching."""
    source = Path(path)
    files: dict[str, bytes] = {}
    member_name = None
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                member_name = member.name
                name = member.name.removeprefix("./")
                if not member.isfile():
                    raise _damaged(source, f"holds {member.name!r}, which is not a regular file (a bundle holds only files)")
                if name not in FILES and name != MANIFEST:
                    raise _damaged(source, f"holds {member.name!r}, which is not a file of a bundle")
                if name in files:
                    raise _damaged(source, f"holds {name} twice")
                if len(files) >= MAX_FILES:
                    raise _damaged(source, f"holds more than {MAX_FILES} files; a bundle holds at most {len(FILES) + 1}")
                if member.size > MAX_FILE_BYTES:
                    raise _damaged(source, f"{name} is {member.size} bytes; no file of a bundle is over {MAX_FILE_BYTES}")
                f = tar.extractfile(member)
                data = f.read() if f else b""
                if len(data) != member.size:
                    raise _damaged(source, f"{name} is cut short ({len(data)} of {member.size} bytes): the bundle is truncated")
                files[name] = data
                member_name = None
    except FileNotFoundError:
        raise EnrollError(f"{source}: no such file; give the path of the bundle (hall-bundle-DEVICE.tar.gz)") from None
    except IsADirectoryError:
        raise EnrollError(f"{source}: is a directory; give the bundle file itself") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, BundleDamaged):
            raise
        where = f"while reading {member_name}" if member_name else f"after {', '.join(files) or 'no complete file'}"
        raise _damaged(source, f"is damaged or truncated ({where}: {exc})") from None
    if MANIFEST not in files:
        raise _damaged(source, f"has no {MANIFEST}, or it is truncated before it")
    try:
        manifest = json.loads(files.pop(MANIFEST))
    except ValueError as exc:
        raise _damaged(source, f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise _damaged(source, f"{MANIFEST} is not a hall appliance bundle's manifest")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise EnrollError(f"{source}: {MANIFEST} format = {manifest.get('format')!r}; this software reads format {BUNDLE_FORMAT}. Update the software, or build the bundle with the matching hall-provision")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not isinstance(manifest.get("device"), str):
        raise _damaged(source, f"{MANIFEST} lacks its device or files")
    for name, entry in listed.items():
        if name not in files:
            raise _damaged(source, f"{name} is listed in {MANIFEST} but missing from the bundle (truncated?)")
        digest = hashlib.sha256(files[name]).hexdigest()
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            raise _damaged(source, f"{name} does not match its sha256 in {MANIFEST} (damaged or changed)")
    for name in files:
        if name not in listed:
            raise _damaged(source, f"{name} is in the bundle but not in {MANIFEST}")
    for name, spec in FILES.items():
        if spec.required and name not in files:
            raise _damaged(source, f"has no {name}, which every bundle holds")
    return Bundle(source, manifest, files)


# -- installing -------------------------------------------------------------------------------


def _owner(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) to give a file: only as root, and only when the service user exists (off the Pi it does not)."""
    if user is None or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_serial(path: Path) -> str:
    """This Pi's serial number as /proc/device-tree gives it (NUL-terminated hex)."""
    return path.read_bytes().decode("ascii", errors="replace").strip().strip("\x00").strip().lower()


def enrolled_device(etc: Path) -> str | None:
    """The device id of the config already in ``etc``, or None when there is none."""
    path = etc / "appliance.toml"
    if not path.exists():
        return None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        device_id = doc["device"]["id"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise WrongDevice(f"{path} exists but does not say which device this is ({type(exc).__name__}: {exc}); check it, or give --force to replace it with the bundle's") from None
    return str(device_id)


def timesyncd_dropin(server: str) -> str:
    """The timesyncd drop-in naming the county's NTP server: systemd/install.py's, byte for byte."""
    return (
        "# Written by the hall appliance (systemd/install.py or hall-appliance enroll) from\n"
        "# [clock] ntp_server: halls on the government network may reach only the county's NTP server.\n"
        "[Time]\n"
        f"NTP={server}\n"
    )


def timesyncd_dir_beside(etc: str | Path) -> Path:
    """The timesyncd drop-in directory of the same /etc as ``etc`` (/etc/hall-appliance -> /etc/systemd/timesyncd.conf.d)."""
    return Path(etc).parent / "systemd" / "timesyncd.conf.d"


class CommandRunner(Protocol):
    """Runs a command that acts on this machine (systemctl); returns its exit status. Tests record instead."""

    def __call__(self, argv: list[str]) -> int: ...


def run_command(argv: list[str]) -> int:
    """The real thing: run ``argv``, its output to the journal via ours."""
    try:
        return subprocess.run(argv, timeout=120).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s: %s", " ".join(argv), exc)
        return 127


def systemd_runner_for(dropin_dir: Path) -> CommandRunner | None:
    """The real runner only as root, on a machine booted with systemd, for its own /etc; else None (say it instead)."""
    if os.geteuid() != 0 or not Path("/run/systemd/system").is_dir():
        return None
    if Path(dropin_dir).resolve() != Path(DEFAULT_TIMESYNCD_DIR).resolve():
        return None  # an image or a test directory: restarting this machine's timesyncd is wrong
    return run_command


@dataclass
class Enrolment:
    """What an enrolment did, for the person at the keyboard and the journal."""

    device: str
    hall: str
    etc: Path
    installed: list[tuple[Path, int, str]] = field(default_factory=list)
    store: Path | None = None
    replaced: str | None = None
    moved_store: Path | None = None
    made_store_dir: Path | None = None
    ntp_dropin: Path | None = None
    # What became of timesyncd: "restarted", "restart-needed", "unchanged", "restart-failed".
    ntp_restart: str | None = None
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"enrolled {self.device} ({self.hall}) into {self.etc}"]
        if self.replaced:
            out.append(f"  replaced the enrolment of {self.replaced} (--force)")
        if self.moved_store:
            out.append(f"  moved {self.replaced}'s store aside to {self.moved_store} (its events belong to that id; a new store starts)")
        for path, mode, owner in self.installed:
            out.append(f"  installed {path} (mode {mode:04o}, owner {owner})")
        if self.made_store_dir:
            out.append(f"  made the store's directory {self.made_store_dir} (mode {STORE_DIR_MODE:04o})")
        if self.store:
            out.append(f"  config page: account {COUNTY_IT_ACCOUNT} (county IT) has the one-time password from the enrolment sheet; it must be changed at the first sign-in (store {self.store})")
        restart = " ".join(RESTART_TIMESYNCD)
        if self.ntp_restart == "unchanged":
            out.append(f"  NTP: {self.ntp_dropin} already names the county's server")
        elif self.ntp_restart == "restarted":
            out.append(f"  NTP: wrote {self.ntp_dropin}; ran `{restart}`")
        elif self.ntp_restart is not None:
            out.append(f"  NTP: wrote {self.ntp_dropin}; restart systemd-timesyncd to use it: {restart}")
        out += [f"  warning: {w}" for w in self.warnings]
        out.append("  restart the services to use it: systemctl restart hall-appliance hall-web")
        return out


def enroll(
    bundle_path: str | Path,
    etc: str | Path = DEFAULT_ETC,
    serial_file: str | Path | None = DEFAULT_SERIAL_FILE,
    *,
    force: bool = False,
    timesyncd_dir: str | Path | None = None,
    runner: CommandRunner | None = None,
) -> Enrolment:
    """Install a bundle into ``etc``; see the module docstring for the order of things.

    ``timesyncd_dir`` is where the NTP drop-in goes (default: beside ``etc``, i.e.
    /etc/systemd/timesyncd.conf.d on a device); ``runner`` restarts systemd-timesyncd (default:
    systemctl, only as root on a systemd machine for its own /etc; otherwise it is only said).
    """
    from .accounts import COUNTY_IT, AccountError, Accounts
    from .config import parse_config
    from .store import Store

    bundle = read_bundle(bundle_path)
    etc = Path(etc)
    device_id = bundle.device_id
    # The config is checked before anything is written: a bundle the device would refuse to
    # run is refused now, with check-config's words.
    try:
        config = parse_config(tomllib.loads(bundle.text("appliance.toml")), base_dir=etc.resolve(), source=etc / "appliance.toml")
    except ConfigError as exc:
        raise EnrollError(f"{bundle.source}: its appliance.toml has problems, nothing was installed:\n" + "\n".join(f"  - {p}" for p in exc.problems)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleDamaged(f"{bundle.source}: its appliance.toml is not valid TOML ({exc}); have county IT build a new bundle") from None
    if config.device.id != device_id:
        raise BundleDamaged(f"{bundle.source}: appliance.toml is for {config.device.id} but the manifest for {device_id}; have county IT build a new bundle")
    ntp_server = config.clock.ntp_server
    if ntp_server is not None and not NTP_SERVER.match(ntp_server):
        raise EnrollError(f"{bundle.source}: its appliance.toml's [clock] ntp_server {ntp_server!r} is not a host name or address, nothing was installed; have county IT correct it (hall-provision init --ntp-server) and build a new bundle")

    result = Enrolment(device_id, config.device.hall, etc)
    current = enrolled_device(etc)
    if current is not None and current != device_id:
        if not force:
            raise WrongDevice(f"this device is enrolled as {current} ({etc / 'appliance.toml'}), and the bundle is for {device_id}; use the bundle made for {current}, or give --force to re-enrol it as {device_id}")
        result.replaced = current
    if bundle.serial:
        if serial_file is None:
            problem = "no serial file was given to check it against"
        else:
            try:
                here = read_serial(Path(serial_file))
                problem = None if here == bundle.serial.lower() else f"this Pi's serial is {here} ({serial_file})"
            except OSError as exc:
                problem = f"this Pi's serial cannot be read from {serial_file} ({exc.strerror})"
        if problem:
            if not force:
                raise WrongDevice(f"the bundle for {device_id} is for the Pi with serial {bundle.serial}, but {problem}; use the bundle made for this Pi, or give --force (and correct the inventory: hall-provision bundle {device_id} --serial SERIAL)")
            result.warnings.append(f"serial check overridden (--force): {problem}, the bundle names {bundle.serial}")

    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, spec in FILES.items():
        if name == "appliance.toml" or spec.mode is None or name not in bundle.files:
            continue
        owner = _owner(spec.owner)
        if spec.owner and owner is None and os.geteuid() == 0:
            result.warnings.append(f"user {spec.owner!r} does not exist: {name} stays root's, and the service cannot read it; install the appliance (its users) and enrol again")
        write_atomic(etc / name, bundle.files[name], spec.mode, owner)
        result.installed.append((etc / name, spec.mode, spec.owner if owner else _whoami()))
    if "complaints.pub" not in bundle.files:
        result.warnings.append("the bundle has no complaint supervisor's key: the complaint box stays closed until a bundle brings one")

    if result.replaced:
        result.moved_store = _set_store_aside(config.store.path, result.replaced)

    result.made_store_dir = _make_store_dir(Path(config.store.path).parent, result.warnings)
    # The one-time password, through the accounts module like every other password.
    password = bundle.text("initial-password").strip()
    store = Store(config.store.path, reserve_mb=0, recover=False)
    try:
        Accounts(store).set_password(COUNTY_IT_ACCOUNT, password, by="enroll", role=COUNTY_IT, must_change=True)
    except AccountError as exc:
        raise EnrollError(f"{bundle.source}: the one-time password was refused ({exc}); have county IT build a new bundle") from None
    finally:
        store.close()
    _give_store_to_daemon(config.store.path)
    result.store = config.store.path

    write_atomic(etc / INSTALLED_MANIFEST, json.dumps(bundle.manifest, ensure_ascii=False, indent=2).encode() + b"\n", 0o644)
    # Last, atomically: only now does the device look enrolled as this id.
    write_atomic(etc / "appliance.toml", bundle.files["appliance.toml"], 0o644)
    result.installed.append((etc / "appliance.toml", 0o644, _whoami()))
    _fsync_dir(etc)
    if ntp_server is not None:
        dropin_dir = Path(timesyncd_dir) if timesyncd_dir is not None else timesyncd_dir_beside(etc)
        _set_ntp_server(result, ntp_server, dropin_dir, runner if runner is not None else systemd_runner_for(dropin_dir))
    return result


def _make_store_dir(directory: Path, warnings: list[str]) -> Path | None:
    """Make the store's directory as the daemon's unit would (hall:hall 2770); None when it exists.

    Normally systemd/install.py has made it already, and an existing directory is left as it is.
    """
    if directory.exists():
        return None
    directory.mkdir(mode=0o770, parents=True)
    owner = _owner(DAEMON_USER)
    if owner is not None:
        try:
            gid = grp.getgrnam(DAEMON_USER).gr_gid
        except KeyError:
            gid = owner[1]
        os.chown(directory, owner[0], gid)  # before the chmod: a chown may clear the setgid bit
    try:
        # mkdir() drops the setgid bit from its mode on Linux: set it explicitly.
        os.chmod(directory, STORE_DIR_MODE)
    except PermissionError:
        # hall-enroll.service's RestrictSUIDSGID= refuses setgid bits; the installer makes this
        # directory 2770 before enrolment, so this happens only when it was skipped.
        warnings.append(f"could not make {directory} setgid ({STORE_DIR_MODE:04o}); run `chmod {STORE_DIR_MODE:o} {directory}` (or systemd/install.py) so files the config page creates stay in group {DAEMON_USER}")
    return directory


def _set_ntp_server(result: Enrolment, server: str, dropin_dir: Path, runner: CommandRunner | None) -> None:
    """Write the timesyncd drop-in for ``server`` (unless it already says so) and restart timesyncd, or say to.

    After the config: the device is enrolled whatever happens here, so a failure is a warning.
    """
    path = dropin_dir / TIMESYNCD_DROPIN
    text = timesyncd_dropin(server)
    result.ntp_dropin = path
    try:
        if path.read_text(encoding="utf-8") == text:
            result.ntp_restart = "unchanged"
            return
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
    try:
        dropin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"), 0o644)
    except OSError as exc:
        result.ntp_dropin, result.ntp_restart = None, None
        result.warnings.append(f"could not write {path} ({exc.strerror or exc}); the county's NTP server {server} is not set: run `sudo python3 systemd/install.py --ntp-server {server}` (docs/install.md)")
        return
    if runner is None:
        result.ntp_restart = "restart-needed"
        return
    code = runner(list(RESTART_TIMESYNCD))
    if code == 0:
        result.ntp_restart = "restarted"
    else:
        result.ntp_restart = "restart-failed"
        result.warnings.append(f"`{' '.join(RESTART_TIMESYNCD)}` failed (exit {code}); run it by hand to use the county's NTP server")


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _store_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _set_store_aside(path: Path, old_device: str) -> Path | None:
    """Move the store of the device this one was enrolled as aside: its events, seq and store_id are that device's."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{old_device}-{stamp}")
    for p in _store_files(path):
        if p.exists():
            p.rename(aside.with_name(aside.name + p.name[len(path.name):]))
    return aside


def _give_store_to_daemon(path: Path) -> None:
    """As root, the store enrolment created belongs to the daemon's user and group (the page shares the group).

    Only the files: the installer made their directory hall:hall 2770 (setgid, so what the
    page creates stays in group hall), and that is left as it is.
    """
    owner = _owner(DAEMON_USER)
    if owner is None:
        return
    try:
        gid = grp.getgrnam(DAEMON_USER).gr_gid
    except KeyError:
        gid = owner[1]
    for p in _store_files(path):
        # The store's directory is writable by the services: a file there may be a symlink
        # planted to make root hand something else (a key in /etc) to the daemon's user.
        # Opened without following links, and changed only when it is a regular file.
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("left %s as it is: %s (expected the store's own file)", p, exc.strerror)
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchown(fd, owner[0], gid)
                os.fchmod(fd, 0o660)
            else:
                log.warning("left %s as it is: not a regular file", p)
        finally:
            os.close(fd)


# -- first boot -------------------------------------------------------------------------------------


def enroll_from_boot(
    boot_dir: str | Path = DEFAULT_BOOT_DIR,
    etc: str | Path = DEFAULT_ETC,
    serial_file: str | Path | None = DEFAULT_SERIAL_FILE,
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
    timesyncd_dir: str | Path | None = None,
    runner: CommandRunner | None = None,
) -> Enrolment | None:
    """Enrol the bundle left on the boot partition and delete it; None (and one line said) when there is none."""
    boot = Path(boot_dir)
    found = sorted(boot.glob(BOOT_PATTERN)) if boot.is_dir() else []
    if not found:
        say(f"enroll: no {BOOT_PATTERN} in {boot}; nothing to do")
        return None
    if len(found) > 1:
        raise EnrollError(f"{boot} holds {len(found)} bundles ({', '.join(p.name for p in found)}); leave only this device's and boot again, or run hall-appliance enroll BUNDLE")
    bundle = found[0]
    result = enroll(bundle, etc, serial_file, force=force, timesyncd_dir=timesyncd_dir, runner=runner)
    # It holds the broker password, the page's key and the one-time password, on a FAT
    # partition anyone can read from the card: once installed it has no further use.
    # (Flash wear-levelling means the bytes may survive on the card; see docs/provisioning.md.)
    bundle.unlink()
    _fsync_dir(boot)
    result.warnings.append(f"removed {bundle} from the boot partition (it held secrets)")
    return result


# -- the command line (hall-appliance enroll) ------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``hall-appliance enroll``: exit 0 when enrolled (or nothing on the boot partition), 1 when refused."""
    if args.from_boot:
        if args.bundle:
            raise EnrollError("give either a BUNDLE or --from-boot, not both")
        result = enroll_from_boot(args.boot_dir, args.etc, args.serial_file, force=args.force)
    else:
        if not args.bundle:
            raise EnrollError("give the bundle to enrol (hall-bundle-DEVICE.tar.gz), or --from-boot")
        result = enroll(args.bundle, args.etc, args.serial_file, force=args.force)
    if result is not None:
        print("\n".join(result.lines()), flush=True)
    return 0
