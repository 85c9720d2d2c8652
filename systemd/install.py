#!/usr/bin/python3
"""Install the hall appliance on Raspberry Pi OS Bookworm (or plain Debian 12) as services.

Runs with the system python3 before any virtual environment exists, so it uses the standard
library only. Every step is printed; ``--dry-run`` prints and records them without running
or writing anything, and ``--root DIR`` writes files under DIR while only recording the
commands that would act on this machine (apt-get, systemd-sysusers, systemctl, chown).
Running it twice changes nothing the second time. See docs/install.md.

    sudo python3 systemd/install.py                      # from a source checkout, PyPI for deps
    sudo python3 systemd/install.py --wheelhouse /media/usb/wheels   # offline
    sudo python3 systemd/install.py --release /media/usb/hall-appliance-0.2.0.tar  # offline, signed
    python3 systemd/install.py --root /tmp/pi --dry-run --json       # check the plan anywhere
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent

UNITS = (
    "hall-appliance.service",
    "hall-web.service",
    "hall-enroll.service",
    "hall-update.path",
    "hall-update.service",
    "hall-update-boot.service",
    "hall-update-resume.service",
)
# hall-update.service has no [Install]: only hall-update.path (the daemon's request) starts it.
ENABLED = tuple(u for u in UNITS if u != "hall-update.service")
SYSUSERS = "hall-appliance.sysusers.conf"

OPT = Path("/opt/hall-appliance")
RELEASES = OPT / "releases"
CURRENT = OPT / "current"
CONFIG_DIR = Path("/etc/hall-appliance")
CONFIG = CONFIG_DIR / "appliance.toml"
STATE_DIR = Path("/var/lib/hall-appliance")
UNIT_DIR = Path("/etc/systemd/system")
SYSUSERS_FILE = Path("/etc/sysusers.d/hall-appliance.conf")
TIMESYNCD_DROPIN = Path("/etc/systemd/timesyncd.conf.d/hall.conf")
# Bookworm moved the firmware partition; older images still have /boot/config.txt.
CONFIG_TXT = (Path("/boot/firmware/config.txt"), Path("/boot/config.txt"))
SPI_LINE = "dtparam=spi=on"
DOCS = ("install.md", "operations.md", "configuration.md", "updates.md")

# The venv uses the system python3 with --system-site-packages, so apt's python3-lgpio,
# python3-evdev and python3-spidev are visible in it (PEP 668: no system-wide pip).
APT_COMMON = (
    "python3",
    "python3-venv",
    # The board's font: GNU Unifont at its native 16 px (DESIGN.md).
    "fonts-unifont",
    # mosquitto_sub/pub to look at the uplink from the device.
    "mosquitto-clients",
    # The county CA is ours, but TLS tooling expects the store.
    "ca-certificates",
    # Reading a damaged store that was moved aside (docs/operations.md, store_damaged).
    "sqlite3",
    # Bookworm ships timesyncd as its own package; it reads our NTP drop-in.
    "systemd-timesyncd",
    # The badge reader (evdev) and the LED board (spidev), both in Debian and Pi OS.
    "python3-evdev",
    "python3-spidev",
    # PyNaCl for the system python3: --release checks the bundle's Ed25519 signature before
    # any venv exists (the venv gets its own PyNaCl from the wheels).
    "python3-nacl",
)
# Only in the Raspberry Pi OS archive (archive.raspberrypi.com): the lgpio pin factory.
APT_PI = ("python3-lgpio",)


class InstallError(Exception):
    """A step cannot be taken; the message says why and what to do."""


@dataclass
class Step:
    """One thing the installer did, or would do (``done`` False: only recorded)."""

    kind: str  # run, write, mkdir, symlink, chown, verify, skip, note
    what: str
    argv: list[str] | None = None
    path: str | None = None
    done: bool = False
    why: str = ""

    def line(self) -> str:
        mark = "done" if self.done else ("skip" if self.kind in ("skip", "note") else "plan")
        if self.argv:
            text = shlex.join(self.argv)
        elif self.kind == "symlink":
            text = f"{self.path} -> {self.what}"
        else:
            text = " ".join(t for t in (self.what, self.path) if t)
        return f"[{mark}] {self.kind:<7} {text}" + (f"    # {self.why}" if self.why else "")


@dataclass
class Plan:
    """Every step, in order; printed as it goes and available as JSON for checking."""

    steps: list[Step] = field(default_factory=list)
    quiet: bool = False

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        if not self.quiet:
            print(step.line(), flush=True)
        return step


class Host:
    """The machine itself: runs commands that act on it, or only records them.

    ``act`` is False for a dry run and for ``--root`` (whose commands would change this
    machine, not the tree under the root).
    """

    def __init__(self, plan: Plan, *, act: bool) -> None:
        self.plan = plan
        self.act = act
        # With --json, stdout carries only the plan: the commands' own output goes to stderr.
        self.stdout = sys.stderr if plan.quiet else None

    def run(self, argv: list[str], why: str = "", *, env: dict[str, str] | None = None) -> Step:
        step = self.plan.add(Step("run", argv[0], argv=list(argv), why=why))
        if self.act:
            result = subprocess.run(argv, env={**os.environ, **(env or {})}, stdout=self.stdout)
            if result.returncode != 0:
                raise InstallError(f"{shlex.join(argv)} failed with exit code {result.returncode}")
            step.done = True
        return step

    def chown(self, path: Path, user: str, group: str, root: "Tree") -> Step:
        step = self.plan.add(Step("chown", f"{user}:{group}", path=str(path), why=f"owner {user}:{group}"))
        if self.act:
            shutil.chown(root.at(path), user, group)
            step.done = True
        return step


class Tree:
    """The filesystem under ``root``: writes files, or only records them (dry run)."""

    def __init__(self, plan: Plan, root: Path, *, write: bool) -> None:
        self.plan = plan
        self.root = root
        self.write = write

    def at(self, path: Path) -> Path:
        """``path`` (absolute, as on the device) under the root."""
        return self.root / path.relative_to("/")

    def exists(self, path: Path) -> bool:
        return self.at(path).exists()

    def read_text(self, path: Path) -> str | None:
        try:
            return self.at(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def mkdir(self, path: Path, mode: int, why: str = "") -> Step:
        target = self.at(path)
        if target.is_dir() and (target.stat().st_mode & 0o7777) == mode:
            return self.plan.add(Step("skip", "mkdir", path=str(path), why=f"exists, mode {mode:04o}"))
        step = self.plan.add(Step("mkdir", f"{mode:04o}", path=str(path), why=why or f"mode {mode:04o}"))
        if self.write:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, mode)
            step.done = True
        return step

    def write_text(self, path: Path, text: str, mode: int = 0o644, why: str = "") -> Step:
        target = self.at(path)
        if self.read_text(path) == text and (target.stat().st_mode & 0o777) == mode:
            return self.plan.add(Step("skip", "write", path=str(path), why="unchanged"))
        step = self.plan.add(Step("write", f"{mode:04o}", path=str(path), why=why))
        if self.write:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write beside it and rename: a power cut never leaves half a unit or config.txt.
            temp = target.with_name(f".{target.name}.hall-install")
            temp.write_text(text, encoding="utf-8")
            os.chmod(temp, mode)
            os.replace(temp, target)
            step.done = True
        return step

    def symlink(self, path: Path, target: str, why: str = "") -> Step:
        link = self.at(path)
        if link.is_symlink() and os.readlink(link) == target:
            return self.plan.add(Step("skip", "symlink", path=str(path), why=f"already -> {target}"))
        step = self.plan.add(Step("symlink", target, path=str(path), why=why or f"-> {target}"))
        if self.write:
            # Make the new link beside the old one and rename over it: atomic, so the
            # services never see a missing `current` (the updater does the same).
            temp = link.with_name(f".{link.name}.hall-install")
            temp.unlink(missing_ok=True)
            os.symlink(target, temp)
            os.replace(temp, link)
            step.done = True
        return step


def source_version(source: Path) -> str:
    """The version in the checkout's appliance/__init__.py (read, not imported)."""
    text = (source / "appliance" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise InstallError(f"{source}/appliance/__init__.py has no __version__")
    return match.group(1)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.+-]", version))


def wheelhouse_version(wheelhouse: Path) -> str:
    """The newest hall-appliance wheel's version in an offline wheelhouse."""
    versions = [w.name.split("-")[1] for w in wheelhouse.glob("hall_appliance-*.whl")]
    if not versions:
        raise InstallError(f"{wheelhouse} holds no hall_appliance-*.whl; build one with `pip wheel -w {wheelhouse} .` in the checkout")
    return max(versions, key=_version_key)


def is_raspberry_pi(tree: Tree) -> bool:
    """A Pi (or an SD card image of one under --root): config.txt, or the device tree says so."""
    if any(tree.exists(p) for p in CONFIG_TXT):
        return True
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


def enable_spi(text: str) -> str | None:
    """config.txt with SPI on, or None when it already is.

    An active ``dtparam=spi=on`` must sit outside any conditional section (before the first
    ``[...]`` or under ``[all]``); Pi OS ships it commented (``#dtparam=spi=on``), which is
    uncommented in place. Otherwise it is appended under an explicit ``[all]``.
    """
    lines = text.splitlines()
    section = "all"
    commented = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
            continue
        if section != "all":
            continue
        if stripped.replace(" ", "") == SPI_LINE:
            return None
        if commented is None and stripped.lstrip("#").strip().replace(" ", "") == SPI_LINE:
            commented = i
    if commented is not None:
        lines[commented] = SPI_LINE
    else:
        lines += ["", "[all]", "# The hall appliance's LED board (MAX7219) is on SPI0.", SPI_LINE]
    return "\n".join(lines) + "\n"


def timesyncd_dropin(server: str) -> str:
    """The timesyncd drop-in naming the county's NTP server.

    `hall-appliance enroll` writes the same bytes (appliance/enroll.py, which this script cannot
    import: it runs before any venv); tests/test_provisioning.py checks the two agree, so
    whichever runs second finds the file unchanged.
    """
    return (
        "# Written by the hall appliance (systemd/install.py or hall-appliance enroll) from\n"
        "# [clock] ntp_server: halls on the government network may reach only the county's NTP server.\n"
        "[Time]\n"
        f"NTP={server}\n"
    )


def configured_ntp_server(tree: Tree) -> str | None:
    """[clock] ntp_server from an enrolled config, if there is one."""
    text = tree.read_text(CONFIG)
    if text is None:
        return None
    try:
        value = tomllib.loads(text).get("clock", {}).get("ntp_server")
    except tomllib.TOMLDecodeError as exc:
        raise InstallError(f"{CONFIG}: not valid TOML ({exc}); fix it or pass --ntp-server") from None
    return value if isinstance(value, str) and value.strip() else None


_NTP_SERVER = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


# -- a signed release bundle (--release) ------------------------------------------------------
#
# The same bundle `hall-provision release` makes and `hall-appliance update` installs
# (provisioning/release.py, appliance/update.py: read_bundle, docs/updates.md). This checks it
# again here, on purpose without importing appliance: nothing from the bundle, and no code
# that could come from it, runs before the bundle is verified; and this script runs with the
# system python3 before any venv exists (PyNaCl from apt's python3-nacl). Keep it in step with
# appliance/update.py; tests/test_systemd.py checks a real bundle against both.

RELEASE_KEY = CONFIG_DIR / "release.pub"
PUBLIC_KEY_TAG = "hall-release-public-v1"
PRIVATE_KEY_TAG = "hall-release-private-v1"
BUNDLE_MANIFEST, BUNDLE_SIGNATURE, BUNDLE_WHEELS = "manifest.json", "manifest.sig", "wheels"
MAX_MANIFEST = 1 << 20
# A release version names its directory releases/<version>: digits and dots, maybe a pre-release.
RELEASE_VERSION = re.compile(r"\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?\Z")
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
COPY_AGAIN = "copy the bundle again exactly as `hall-provision release` made it"


class BundleRefused(InstallError, ValueError):
    """The release bundle or its key failed a check; nothing was written."""


def read_release_key(path: Path) -> bytes:
    """The 32 raw bytes of a release public key file: `#` comments, then one `<tag> <base64>` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleRefused(f"cannot read the release key {path} ({exc}); give the county's release.pub with --release-key FILE") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    tag, _, value = lines[0].partition(" ") if len(lines) == 1 else ("", "", "")
    if tag == PRIVATE_KEY_TAG:
        raise BundleRefused(f"{path} is the county's PRIVATE release key; it must never be on a hall: give the .pub file release-keygen wrote beside it")
    try:
        raw = base64.b64decode(value, validate=True) if tag == PUBLIC_KEY_TAG else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleRefused(f"{path} is not a release public key (one line '{PUBLIC_KEY_TAG} <32 bytes of base64>'); give the file `hall-provision release-keygen --public-out` wrote")
    return raw


def _verify_key(raw: bytes):
    """PyNaCl's VerifyKey, or None when PyNaCl is not importable (python3-nacl not installed yet)."""
    importlib.invalidate_caches()  # apt may have installed python3-nacl since we started
    try:
        from nacl.signing import VerifyKey
    except ImportError:
        return None
    return VerifyKey(raw)


@dataclass
class ReleaseBundle:
    """What a checked bundle holds: its version and its wheels' names (``wheels/x.whl``)."""

    version: str
    wheels: list[str]
    signed: bool  # False only in a dry run without PyNaCl: the signature is still to be checked


def check_release_bundle(bundle: Path, key: bytes, *, extract_to: Path | None, require_signature: bool) -> ReleaseBundle:
    """Check the bundle whole, as appliance.update.read_bundle does; wheels into ``extract_to`` as they are hashed.

    Only manifest.json, manifest.sig and wheels/*.whl; the Ed25519 signature over manifest.json's
    exact bytes (manifest.sig: base64) by ``key``; every wheel listed with its size and sha256,
    and nothing else. Raises BundleRefused naming the file and the fix.
    """
    where = str(bundle)
    try:
        tar = tarfile.open(bundle, "r:")  # a plain tar: the wheels are compressed already
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleRefused(f"{where} is not a release bundle ({exc}); give the hall-appliance-<version>.tar that `hall-provision release` made") from None
    with tar:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            for m in tar.getmembers():
                if m.isdir() and m.name.rstrip("/") == BUNDLE_WHEELS:
                    continue  # a directory entry for wheels/, as update.py allows
                name_ok = m.name in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE) or re.fullmatch(r"wheels/[^/.][^/]*\.whl", m.name)
                if not m.isreg() or not name_ok:
                    raise BundleRefused(f"{where} holds {m.name!r}, which no release bundle has (only manifest.json, manifest.sig and wheels/*.whl); {COPY_AGAIN}")
                if m.name in members:
                    raise BundleRefused(f"{where} holds {m.name} twice; {COPY_AGAIN}")
                members[m.name] = m
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BundleRefused(f"{where} is cut short or damaged ({exc}); {COPY_AGAIN}") from None

        def read(name: str) -> bytes:
            if name not in members:
                raise BundleRefused(f"{where} has no {name}; {COPY_AGAIN}")
            if members[name].size > MAX_MANIFEST:
                raise BundleRefused(f"{where}: {name} is {members[name].size} bytes, too large to be one; {COPY_AGAIN}")
            try:
                return tar.extractfile(members[name]).read()
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BundleRefused(f"{where}: cannot read {name} ({exc}); {COPY_AGAIN}") from None

        manifest_bytes, signature_text = read(BUNDLE_MANIFEST), read(BUNDLE_SIGNATURE)
        # The signature first: nothing the manifest says is believed before it checks out.
        verify_key = _verify_key(key)
        if verify_key is None and require_signature:
            raise BundleRefused("python3-nacl is not installed, so the bundle's signature cannot be checked; install it (sudo apt-get install python3-nacl, or drop --no-apt) and run this again")
        if verify_key is not None:
            from nacl.exceptions import BadSignatureError

            try:
                verify_key.verify(manifest_bytes, base64.b64decode(signature_text.strip(), validate=True))
            except (ValueError, BadSignatureError):
                fingerprint = hashlib.sha256(key).hexdigest()[:16]
                raise BundleRefused(
                    f"{where}: manifest.sig does not match the county release key ({fingerprint}…): the bundle was altered, or signed with another key; "
                    "use a bundle signed by the county's key, or give the key it was signed with (--release-key FILE)"
                ) from None
        try:
            manifest = json.loads(manifest_bytes.decode("utf-8"))
            version, files = manifest["version"], manifest["files"]
            if manifest.get("format") != 1 or manifest.get("project") != "hall-appliance" or not isinstance(version, str) or not RELEASE_VERSION.match(version):
                raise ValueError("not a hall-appliance release manifest of format 1")
            for name, info in files.items():
                if not (re.fullmatch(r"wheels/[^/.][^/]*\.whl", name) and isinstance(info.get("size"), int) and SHA256_HEX.match(str(info.get("sha256")))):
                    raise ValueError(f"files[{name!r}] is not a wheel with a size and a sha256")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleRefused(f"{where}: manifest.json is malformed ({exc}); ask the county for a bundle made by `hall-provision release`") from None
        unlisted = sorted(set(members) - set(files) - {BUNDLE_MANIFEST, BUNDLE_SIGNATURE})
        if unlisted:
            raise BundleRefused(f"{where} holds files its manifest does not list: {', '.join(unlisted)}; {COPY_AGAIN}")
        if not any(n.startswith(f"wheels/hall_appliance-{version}-") for n in files):
            raise BundleRefused(f"{where}: its manifest lists no hall_appliance-{version} wheel; ask the county for a bundle made by `hall-provision release`")
        for name in sorted(files):
            info, member = files[name], members.get(name)
            if member is None:
                raise BundleRefused(f"{where}: {name} is missing; {COPY_AGAIN}")
            if member.size != info["size"]:
                raise BundleRefused(f"{where}: {name} is {member.size} bytes, the manifest says {info['size']}; {COPY_AGAIN}")
            # Hash while extracting: what pip installs is exactly what was checked.
            digest = hashlib.sha256()
            out = open(extract_to / name.split("/", 1)[1], "wb") if extract_to is not None else None
            try:
                src = tar.extractfile(member)
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    if out is not None:
                        out.write(chunk)
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BundleRefused(f"{where}: cannot read {name} ({exc}); {COPY_AGAIN}") from None
            finally:
                if out is not None:
                    out.close()
            if digest.hexdigest() != info["sha256"]:
                raise BundleRefused(f"{where}: {name} does not have the sha256 its signed manifest gives: the file was altered or damaged; {COPY_AGAIN}")
    return ReleaseBundle(version, sorted(files), signed=verify_key is not None)


class Installer:
    """The steps, in order: packages, users, directories, release, units, SPI, NTP, summary."""

    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args = args
        self.plan = plan
        self.root = Path(args.root).resolve()
        on_host = self.root == Path("/")
        self.tree = Tree(plan, self.root, write=not args.dry_run)
        # Commands that change this machine run only for a real install onto /.
        self.host = Host(plan, act=on_host and not args.dry_run)
        # The venv and pip act on the tree under the root: they run unless dry or skipped.
        self.builder = Host(plan, act=not args.dry_run and not args.skip_venv)
        self.source = Path(args.source).resolve()
        self.wheelhouse = Path(args.wheelhouse).resolve() if args.wheelhouse else None
        # --release: the version and the wheels come from the bundle, once verify_release() has
        # checked it; until then the version is unknown.
        self.bundle = Path(args.release).resolve() if args.release else None
        if self.bundle and (args.wheelhouse or args.version):
            raise InstallError("--release installs the release its signed manifest names: give it without --wheelhouse and --version")
        if args.release_key and not self.bundle:
            raise InstallError("--release-key is the key a --release bundle is checked with; give --release BUNDLE too")
        # The key: --release-key (a file on this machine), else the one already under the root.
        self.release_key = Path(args.release_key).resolve() if args.release_key else None
        self.scratch: Path | None = None  # the temporary wheelhouse a bundle is extracted to
        if self.bundle:
            self.version = None
        else:
            self.version = args.version or (wheelhouse_version(self.wheelhouse) if self.wheelhouse else source_version(self.source))
        self.pi = {"pi": True, "debian": False}.get(args.platform, None)
        if self.pi is None:
            self.pi = is_raspberry_pi(self.tree)
        self.todo: list[str] = []

    # -- steps ---------------------------------------------------------------------------

    def packages(self) -> None:
        if self.args.no_apt:
            self.plan.add(Step("skip", "apt-get", why="--no-apt: the image already has the packages"))
            return
        packages = list(APT_COMMON) + (list(APT_PI) if self.pi else [])
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        self.host.run(["apt-get", "update"], "package lists", env=env)
        self.host.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], "system packages (never pip outside a venv: PEP 668)", env=env)
        if not self.pi:
            self.todo.append("Not a Raspberry Pi: python3-lgpio is only in the Raspberry Pi OS archive; set [gpio] pin_factory = \"mock\" and [display] driver = \"emulator\", or pip-install the '[pi]' extra into the release's venv (docs/install.md).")

    def verify_release(self) -> None:
        """--release: check the bundle whole before anything is written, then extract its wheels."""
        if self.bundle is None:
            return
        key_path = self.release_key or self.tree.at(RELEASE_KEY)
        if not key_path.exists():
            raise BundleRefused(f"no release key at {key_path}: give the county's release.pub with --release-key FILE (it is then installed as {RELEASE_KEY})")
        key = read_release_key(key_path)
        fingerprint = hashlib.sha256(key).hexdigest()[:16]
        extract = None
        if not self.args.dry_run:
            # Outside the root and removed at the end (close()); wheels land here as they are hashed.
            self.scratch = Path(tempfile.mkdtemp(prefix="hall-release-"))
            extract = self.scratch / BUNDLE_WHEELS
            extract.mkdir()
        # A dry run may lack PyNaCl (python3-nacl comes with the packages step): the signature
        # is then recorded as still to check, the rest is checked all the same.
        checked = check_release_bundle(self.bundle, key, extract_to=extract, require_signature=not self.args.dry_run)
        signed = f"Ed25519 by {key_path} ({fingerprint}…)"
        self.plan.add(Step("verify", "signature", path=str(self.bundle), done=checked.signed, why=signed if checked.signed else f"{signed}: python3-nacl is not importable here; checked when installing"))
        self.plan.add(Step("verify", "wheels", path=str(self.bundle), done=True, why=f"release {checked.version}: {len(checked.wheels)} wheels, each with the size and sha256 the manifest gives, nothing else"))
        self.version = checked.version
        self.wheelhouse = extract if extract is not None else Path(f"<wheels/ of {self.bundle.name}, extracted when installing>")

    def users(self) -> None:
        text = (HERE / SYSUSERS).read_text(encoding="utf-8")
        self.tree.write_text(SYSUSERS_FILE, text, 0o644, "users hall, hall-web; groups hall, gpio, spi")
        self.host.run(["systemd-sysusers", str(SYSUSERS_FILE)], "create the users and groups (existing ones are kept)")

    def directories(self) -> None:
        self.tree.mkdir(CONFIG_DIR, 0o750, "config and secrets: root-owned, readable by group hall")
        self.host.chown(CONFIG_DIR, "root", "hall", self.tree)
        # setgid: whatever the page (hall-web) creates in the store belongs to group hall.
        self.tree.mkdir(STATE_DIR, 0o2770, "the store, shared by the daemon and the page (StateDirectoryMode=2770)")
        self.host.chown(STATE_DIR, "hall", "hall", self.tree)
        self.tree.mkdir(RELEASES, 0o755, "one virtual environment per release")
        # hall-enroll.service may write the NTP drop-in here ('-' in its ReadWritePaths=: a
        # missing directory stays read-only under ProtectSystem=strict and cannot be made).
        self.tree.mkdir(TIMESYNCD_DROPIN.parent, 0o755, "for the NTP drop-in (installer or enrolment)")

    def release(self) -> None:
        release = RELEASES / self.version
        venv_python = release / "bin" / "python"
        installed = self.tree.at(release / "bin" / "hall-appliance").exists()
        if installed and not self.args.reinstall:
            self.plan.add(Step("skip", "venv", path=str(release), why=f"release {self.version} is installed (--reinstall to redo it)"))
        else:
            if installed:
                self.builder.run(["rm", "-rf", str(self.tree.at(release))], "--reinstall: start the release afresh")
            self.builder.run([self.args.python, "-m", "venv", "--system-site-packages", str(self.tree.at(release))], "the release's venv; sees apt's python3-lgpio")
            pip = [str(self.tree.at(venv_python)), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
            env = None
            if self.bundle:
                # The verified wheels are all there is: no pip configuration file or PIP_*
                # variable may add another source (appliance/update.py does the same).
                pip += ["--isolated", "--no-index", "--find-links", str(self.wheelhouse), f"hall-appliance=={self.version}"]
                env = {"PIP_CONFIG_FILE": os.devnull}
                why = f"offline, from the verified wheels of {self.bundle.name}"
            elif self.wheelhouse:
                pip += ["--no-index", "--find-links", str(self.wheelhouse), f"hall-appliance=={self.version}"]
                why = "offline, from the wheelhouse"
            else:
                # The build tools and the dependencies come from the index (PyPI, piwheels on
                # Pi OS, or a mirror given with --pip-arg=--index-url=...).
                pip += [str(self.source)]
                why = "from the source checkout"
            self.builder.run(pip + list(self.args.pip_arg), why, env=env)
        for name in DOCS:
            doc = self.source / "docs" / name
            if doc.exists():
                self.tree.write_text(release / "share" / "doc" / "hall-appliance" / name, doc.read_text(encoding="utf-8"), 0o644, "the units' Documentation=")
        # Relative, so the link is right under --root and on the device alike.
        self.tree.symlink(CURRENT, f"releases/{self.version}", "the active release (ExecStart= uses current/bin)")
        if self.root != Path("/") and not self.args.skip_venv:
            self.todo.append(f"The venv under {self.root} has scripts whose #! lines point into {self.root}: to build an SD card image, run the installer inside the image (chroot), not with --root.")

    def install_release_key(self) -> None:
        """--release: the key the bundle was checked with becomes the device's (docs/updates.md)."""
        if self.bundle is None:
            return
        key_path = self.release_key or self.tree.at(RELEASE_KEY)
        self.tree.write_text(RELEASE_KEY, key_path.read_text(encoding="utf-8"), 0o644, "the county's release key: `hall-appliance update` trusts the same key")

    def close(self) -> None:
        """Remove the temporary wheelhouse of a --release install."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def units(self) -> None:
        changed = False
        for name in UNITS:
            step = self.tree.write_text(UNIT_DIR / name, (HERE / name).read_text(encoding="utf-8"), 0o644, "hardened unit")
            changed |= step.kind != "skip"
        if changed:
            self.host.run(["systemctl", "daemon-reload"], "read the new units")
        # Enabling is idempotent, and also repairs a unit someone disabled by hand.
        self.host.run(["systemctl", "enable", *ENABLED], "start at boot (hall-update.service only through hall-update.path)")

    def spi(self) -> None:
        path = next((p for p in CONFIG_TXT if self.tree.exists(p)), None)
        if path is None:
            why = "no /boot/firmware/config.txt: not a Raspberry Pi" if not self.pi else "no config.txt found under /boot/firmware or /boot"
            self.plan.add(Step("note", "spi", why=f"{why}; SPI not enabled"))
            if self.pi:
                self.todo.append("Enable SPI: `sudo raspi-config nonint do_spi 0` (no config.txt was found).")
            return
        text = self.tree.read_text(path) or ""
        new = enable_spi(text)
        if new is None:
            self.plan.add(Step("skip", "spi", path=str(path), why=f"{SPI_LINE} already set"))
            return
        self.tree.write_text(path, new, self.tree.at(path).stat().st_mode & 0o777, f"{SPI_LINE}: the LED board")
        self.todo.append("Reboot: SPI (the LED board) is enabled from the next boot.")

    def ntp(self) -> None:
        server = self.args.ntp_server or configured_ntp_server(self.tree)
        if not server:
            self.plan.add(Step("note", "ntp", why="no --ntp-server and no enrolled [clock] ntp_server; timesyncd keeps its defaults"))
            self.todo.append("Set the county's NTP server: run this installer again with --ntp-server HOST (or after enrolment, which fills [clock] ntp_server).")
            return
        if not _NTP_SERVER.match(server):
            raise InstallError(f"NTP server {server!r} is not a host name or address; give e.g. --ntp-server ntp.county.example")
        step = self.tree.write_text(TIMESYNCD_DROPIN, timesyncd_dropin(server), 0o644, f"NTP={server}")
        if step.kind != "skip":
            self.host.run(["systemctl", "restart", "systemd-timesyncd.service"], "use the county's NTP server now")

    def start(self) -> None:
        if not self.args.start:
            self.todo.append("Start the services (or reboot): sudo systemctl restart hall-appliance hall-web hall-update.path")
            return
        self.host.run(["systemctl", "restart", "hall-appliance.service", "hall-web.service", "hall-update.path"], "--start")

    def summary(self) -> None:
        if not self.tree.exists(CONFIG):
            self.todo.insert(0, f"Enrol the device: copy its hall-bundle-*.tar.gz to /boot/firmware and reboot (hall-enroll.service applies it), or run `sudo {CURRENT}/bin/hall-appliance enroll --from-boot --boot-dir /boot/firmware`.")
        self.todo.append("Let administrators use `hall-appliance sim status`: sudo usermod -aG hall ADMIN")
        self.todo.append(f"Set the config page's first passwords: sudo -u hall {CURRENT}/bin/hall-appliance passwd director --role director --generate --config {CONFIG}")

    def run(self) -> None:
        if self.root == Path("/") and not self.args.dry_run and os.geteuid() != 0:
            raise InstallError("installing onto / needs root: run it with sudo (or use --dry-run, or --root DIR)")
        # A --release bundle is checked before anything changes; only when apt must first bring
        # python3-nacl (an install onto this machine without it) does apt-get run before.
        nacl_from_apt = self.bundle is not None and self.host.act and not self.args.no_apt and importlib.util.find_spec("nacl") is None
        first = (self.packages, self.verify_release) if nacl_from_apt else (self.verify_release, self.packages)
        steps = (*first, self.users, self.directories, self.release, self.install_release_key, self.units, self.spi, self.ntp, self.start, self.summary)
        try:
            for step in steps:
                step()
        finally:
            self.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Install the hall appliance (venv release, users, hardened systemd units, SPI, NTP).")
    p.add_argument("--root", default="/", help="install into the tree under DIR instead of /; commands that would act on this machine are only recorded")
    p.add_argument("--dry-run", action="store_true", help="print and record every step; run and write nothing")
    p.add_argument("--json", action="store_true", help="print the steps as JSON at the end (and not line by line)")
    p.add_argument("--source", default=str(SOURCE), help="the source checkout to install (default: the one this script is in)")
    p.add_argument("--wheelhouse", metavar="DIR", help="install offline from the wheels in DIR (pip --no-index --find-links DIR)")
    p.add_argument("--release", metavar="BUNDLE", help="install offline from a signed release bundle (hall-provision release); checked whole before anything is written")
    p.add_argument("--release-key", metavar="FILE", help=f"the county's release public key to check --release with (default: {RELEASE_KEY} under --root); installed as {RELEASE_KEY}")
    p.add_argument("--version", help="the release's version (default: from the checkout or the wheelhouse)")
    p.add_argument("--python", default="/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable, help="the interpreter the venv is made from (default: the system python3)")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG", help="pass ARG to pip install (repeatable), e.g. --pip-arg=--index-url=https://mirror.example/simple")
    p.add_argument("--reinstall", action="store_true", help="rebuild the release's venv even if it exists")
    p.add_argument("--skip-venv", action="store_true", help="record the venv and pip steps without running them (tests, or a release built elsewhere)")
    p.add_argument("--no-apt", action="store_true", help="do not run apt-get (the image already has the packages)")
    p.add_argument("--platform", choices=("auto", "pi", "debian"), default="auto", help="Raspberry Pi OS or plain Debian (default: detect)")
    p.add_argument("--ntp-server", metavar="HOST", help="the county's NTP server (default: [clock] ntp_server of an enrolled config)")
    p.add_argument("--start", action="store_true", help="(re)start the services at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = Plan(quiet=args.json)
    try:
        installer = Installer(args, plan)
        if not args.json:
            mode = "dry run: nothing is run or written" if args.dry_run else ("files under " + str(installer.root) + "; host commands only recorded" if installer.root != Path("/") else "installing")
            what = installer.version or f"from {installer.bundle.name}"
            print(f"hall appliance {what} ({'Raspberry Pi OS' if installer.pi else 'Debian'}; {mode})", flush=True)
        installer.run()
    except InstallError as exc:
        print(f"install.py: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc), "steps": [s.__dict__ for s in plan.steps]}, indent=1))
        return 1
    if args.json:
        print(json.dumps({"version": installer.version, "pi": installer.pi, "root": str(installer.root), "dry_run": args.dry_run, "steps": [s.__dict__ for s in plan.steps], "todo": installer.todo}, indent=1))
    else:
        print("\nLeft to do:")
        for item in installer.todo:
            print(f"  - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
