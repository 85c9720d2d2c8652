"""Signed offline updates: real bundles from this checkout, real venvs in a temporary root, a
real daemon started by a stand-in for systemd, rollback of a release that never reaches READY,
and nothing a person recorded lost on the way (docs/updates.md)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import select
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from appliance import cli
from appliance import update as update_module
from appliance.clock import FakeClock
from appliance.config import load_config
from appliance.control import ControlClient
from appliance.errors import CommandRejected
from appliance.events import Recorder, Topics
from appliance.store import SCHEMA_VERSION, Store
from appliance.update import (
    DAEMON_UNIT,
    EXIT_BROKEN,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    WEB_UNIT,
    BundleRefused,
    DownloadFailed,
    Layout,
    NoRoom,
    Outcome,
    ServiceFailed,
    Target,
    Updater,
    backup_store,
    choose_bundle,
    default_ca_file,
    download,
    hand_back_store,
    load_release_key,
    read_bundle,
    read_update_state,
    request_install,
    store_schema,
    take_request,
    validate_install_args,
    version_key,
    wheel_problem,
)
from conftest import write_config
from contract import registry, validate_message
from jsonschema import Draft202012Validator
from provisioning import cli as provision_cli
from provisioning.release import KeyFileExists, build_wheelhouse, keygen, load_signing_key, make_bundle, read_release

REPO = Path(__file__).resolve().parent.parent
SOURCE = ("setup.py", "README.md", "appliance", "drivers", "services", "provisioning")
READY_LINE = 'notify("READY=1\\nSTATUS=recording")'
STORE_END = "\n)\nSCHEMA_VERSION = len(MIGRATIONS)"
# A later release's migration: a column and a table the checkout's schema does not have.
KIOSK = "ALTER TABLE ratings ADD COLUMN kiosk TEXT; CREATE TABLE kiosk_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"
MIGRATION_7 = f'    "{KIOSK}",'
MIGRATION_8 = '    "CREATE TABLE broken_feature (id INTEGER PRIMARY KEY)",'
HERE = Target.this()
# What the status message carries about updates (appliance.update.read_update_state).
STATUS_UPDATE = Draft202012Validator({"$ref": "https://hall-appliance.example/schemas/status.json#/$defs/online/properties/update"}, registry=registry())


# -- releases made once per session ------------------------------------------------------------


@pytest.fixture(scope="session")
def release_keys(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    keygen(d / "release.key", d / "release.pub")
    return d / "release.key", d / "release.pub"


@pytest.fixture(scope="session")
def dependency_wheels(tmp_path_factory) -> Path:
    """Every wheel the checkout needs, built once (``pip wheel .``: about 8 s from the local mirror)."""
    d = tmp_path_factory.mktemp("wheelhouse")
    started = time.monotonic()
    build_wheelhouse(REPO, d)
    print(f"\nwheelhouse built in {time.monotonic() - started:.1f} s: {len(list(d.glob('*.whl')))} wheels")
    return d


def project_wheel_at(tmp: Path, version: str, *, migrations: tuple[str, ...] = (), broken: bool = False) -> Path:
    """The project's wheel as a later release would be: another version, maybe more migrations,
    maybe a daemon that exits before READY (after it has opened and migrated the store)."""
    src = tmp / f"src-{version}"
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    init = src / "appliance" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    if migrations:
        store = src / "appliance" / "store.py"
        text = store.read_text()
        assert STORE_END in text, "store.MIGRATIONS no longer ends as this test expects"
        store.write_text(text.replace(STORE_END, "\n" + "\n".join(migrations) + STORE_END))
    if broken:
        daemon = src / "appliance" / "daemon.py"
        text = daemon.read_text()
        assert READY_LINE in text, "the daemon no longer says READY as this test expects"
        daemon.write_text(text.replace(READY_LINE, 'raise SystemExit("this release is broken on purpose (tests/test_update.py)")'))
    out = tmp / f"wheel-{version}"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("hall_appliance-*.whl")
    return wheel


def wheelhouse_with(tmp: Path, dependency_wheels: Path, project: Path, extra: tuple[Path, ...] = ()) -> Path:
    d = tmp / f"house-{project.name}-{len(extra)}"
    d.mkdir()
    for w in dependency_wheels.glob("*.whl"):
        if not w.name.startswith("hall_appliance-"):
            os.symlink(w, d / w.name)
    shutil.copy2(project, d / project.name)
    for w in extra:
        shutil.copy2(w, d / w.name)
    return d


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, dependency_wheels, release_keys) -> dict[str, Path]:
    """0.1.0 (this checkout), 0.2.0 (one more migration) and 0.3.0 (another, and no READY)."""
    tmp = tmp_path_factory.mktemp("bundles")
    key = load_signing_key(release_keys[0])
    made = {"0.1.0": make_bundle(dependency_wheels, key, tmp / "out")[0]}
    w2 = project_wheel_at(tmp, "0.2.0", migrations=(MIGRATION_7,))
    made["0.2.0"] = make_bundle(wheelhouse_with(tmp, dependency_wheels, w2), key, tmp / "out")[0]
    w3 = project_wheel_at(tmp, "0.3.0", migrations=(MIGRATION_7, MIGRATION_8), broken=True)
    made["0.3.0"] = make_bundle(wheelhouse_with(tmp, dependency_wheels, w3), key, tmp / "out")[0]
    return made


# -- a device in a temporary root ------------------------------------------------------------------


class Device:
    """A device's files under ``root``: the config, the release key, the store, release 0.1.0.

    Release 0.1.0 is this checkout run by the test's interpreter (a wrapper, not a venv: one
    real venv less to build); the releases an update installs are real venvs.
    """

    def __init__(self, root: Path, public_key: Path) -> None:
        self.root = root
        self.state = root / "var" / "lib" / "hall-appliance"
        self.work = root / "var" / "lib" / "hall-update"  # the updater's own (root's) files
        self.sock_dir = Path(tempfile.mkdtemp(prefix="hu-", dir="/tmp"))  # AF_UNIX paths are short
        path = write_config(self.state)
        text = path.read_text().replace(f'socket = "{self.state / "control.sock"}"', f'socket = "{self.sock_dir / "control.sock"}"')
        self.config_path = root / "etc" / "hall-appliance" / "appliance.toml"
        self.config_path.parent.mkdir(parents=True)
        self.config_path.write_text(text)
        path.unlink()
        shutil.copy2(public_key, self.config_path.parent / "release.pub")
        self.config = load_config(self.config_path)
        self.db = self.state / "hall.db"
        base = root / "opt" / "hall-appliance"
        old = base / "releases" / "0.1.0"
        (old / "bin").mkdir(parents=True)
        script = old / "bin" / "hall-appliance"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m appliance.cli "$@"\n')
        script.chmod(0o755)
        (old / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
        (old / "hall-release.json").write_text(json.dumps({"version": "0.1.0"}))
        os.symlink("releases/0.1.0", base / "current")
        self.base = base

    def link(self, name: str) -> str | None:
        link = self.base / name
        return os.readlink(link) if link.is_symlink() else None

    def releases(self) -> list[str]:
        return sorted(p.name for p in (self.base / "releases").iterdir())

    def count(self, sql: str) -> int:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql).fetchone()[0]
        finally:
            conn.close()

    count_text = count  # the same, for a query that answers text

    def events(self, prefix: str = "update.") -> list[dict]:
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute("SELECT topic, payload FROM outbox WHERE type LIKE ? ORDER BY id", (prefix + "%",)).fetchall()
        finally:
            conn.close()
        for topic, payload in rows:
            validate_message(topic, payload)  # every update event is what the contract says
        return [json.loads(payload) for _, payload in rows]

    def init_store(self) -> None:
        Store(self.db, free_space_floor_mb=0, reserve_mb=0).close()

    def close(self) -> None:
        shutil.rmtree(self.sock_dir, ignore_errors=True)


class Services:
    """systemd for the tests: ``start`` runs ROOT/opt/hall-appliance/current/bin/hall-appliance run
    with a NOTIFY_SOCKET and returns at READY=1, as ``systemctl start`` of a Type=notify unit
    does; every call is recorded with the release ``current`` pointed at."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.calls: list[tuple[str, str, str]] = []
        self.proc: subprocess.Popen | None = None
        self.log = device.root / "daemon.log"

    def _current(self) -> str:
        return os.readlink(self.device.base / "current")

    def start(self, unit: str, timeout: float) -> None:
        self.calls.append(("start", unit, self._current()))
        if unit != DAEMON_UNIT:
            return  # the config page is not run here
        notify_path = self.device.sock_dir / "notify"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            exe = self.device.base / "current" / "bin" / "hall-appliance"
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(exe), "run", "--config", str(self.device.config_path)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.device.root, env=dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1"),
                )  # fmt: skip
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if select.select([notify], [], [], 0.1)[0] and b"READY=1" in notify.recv(4096):
                    return
                if self.proc.poll() is not None:
                    raise ServiceFailed(f"{unit} exited with {self.proc.returncode} before READY", "see the log")
            self.stop(unit)
            raise ServiceFailed(f"{unit} did not report READY within {timeout:.0f} s", "see the log")

    def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit, self._current()))
        if unit == DAEMON_UNIT and self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def is_active(self, unit: str) -> bool:
        return unit != DAEMON_UNIT or (self.proc is not None and self.proc.poll() is None)

    def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset-failed", unit, self._current()))


@pytest.fixture
def device(tmp_path, release_keys):
    d = Device(tmp_path / "root", release_keys[1])
    yield d
    d.close()


@pytest.fixture
def services(device):
    s = Services(device)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(10)


def updater(device: Device, runner=None, **kwargs) -> Updater:
    kwargs.setdefault("settle_s", 1.0)
    kwargs.setdefault("timeout", 60.0)
    lines: list[str] = []
    u = Updater(device.root, config_path=device.config_path, runner=runner or Services(device), out=lines.append, **kwargs)
    u.lines = lines
    return u


def press(device: Device, n: int, level: str = "satisfied") -> None:
    client = ControlClient(device.config.control.socket)
    for _ in range(n):
        assert client.call("press", window="w1", level=level)["recorded"]


# -- the whole story: update, then a release that never reaches READY ----------------------------


def test_an_update_installs_and_a_release_that_never_reaches_ready_is_rolled_back_with_nothing_lost(device, services, bundles):
    services.start(DAEMON_UNIT, 30)  # 0.1.0 runs, as systemd started it at boot
    press(device, 3)
    assert device.count("SELECT COUNT(*) FROM ratings") == 3
    u = updater(device, services)

    # 0.2.0: verified, installed as a real venv, switched to, healthy; the store migrated after a backup.
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_OK, "\n".join(u.lines)
    assert (device.link("current"), device.link("previous")) == ("releases/0.2.0", "releases/0.1.0")
    # Each start is preceded by reset-failed: systemd's start limit must not refuse it.
    assert services.calls[1:] == [
        ("stop", WEB_UNIT, "releases/0.1.0"), ("stop", DAEMON_UNIT, "releases/0.1.0"),
        ("reset-failed", DAEMON_UNIT, "releases/0.2.0"), ("start", DAEMON_UNIT, "releases/0.2.0"),
        ("reset-failed", WEB_UNIT, "releases/0.2.0"), ("start", WEB_UNIT, "releases/0.2.0"),
    ]  # fmt: skip
    status = ControlClient(device.config.control.socket).call("status")
    assert status["version"] == "0.2.0"
    assert store_schema(device.db) == SCHEMA_VERSION + 1
    [backup] = (device.work / "backups").glob("hall-0.1.0-*.db")
    assert stat.S_IMODE(device.work.stat().st_mode) == 0o700
    assert store_schema(backup) == SCHEMA_VERSION
    assert sqlite3.connect(backup).execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 3
    assert device.count("SELECT COUNT(*) FROM ratings") == 3
    started, succeeded = device.events()
    assert started["data"] == {"version": "0.2.0", "from_version": "0.1.0", "source": "file", "store_schema": SCHEMA_VERSION + 1, "forced": False}
    assert succeeded["type"] == "update.succeeded" and succeeded["data"]["backup"] == backup.name
    state = read_update_state(device.state)
    assert (state["running"], state["previous"], state["last"]["outcome"]) == ("0.2.0", "0.1.0", "succeeded")
    STATUS_UPDATE.validate(state)

    # People go on using the hall on 0.2.0; then 0.3.0 arrives, migrates the store and dies before READY.
    press(device, 2, "dissatisfied")  # a 差评 opens a follow-up too
    person_seq = device.count("SELECT value FROM counters WHERE name = 'person'")
    calls = len(services.calls)
    outcome = u.install(bundles["0.3.0"])
    assert outcome.code == EXIT_ROLLED_BACK, "\n".join(u.lines)
    assert "did not come up" in "\n".join(u.lines)
    assert (device.link("current"), device.link("previous")) == ("releases/0.2.0", "releases/0.1.0")
    assert device.releases() == ["0.1.0", "0.2.0"]  # the failed release is gone
    assert [c[:3] for c in services.calls[calls:]] == [
        ("stop", WEB_UNIT, "releases/0.2.0"), ("stop", DAEMON_UNIT, "releases/0.2.0"),
        ("reset-failed", DAEMON_UNIT, "releases/0.3.0"), ("start", DAEMON_UNIT, "releases/0.3.0"),
        ("stop", WEB_UNIT, "releases/0.3.0"), ("stop", DAEMON_UNIT, "releases/0.3.0"),
        ("reset-failed", DAEMON_UNIT, "releases/0.2.0"), ("start", DAEMON_UNIT, "releases/0.2.0"),
        ("reset-failed", WEB_UNIT, "releases/0.2.0"), ("start", WEB_UNIT, "releases/0.2.0"),
    ]  # fmt: skip
    assert ControlClient(device.config.control.socket).call("status")["version"] == "0.2.0"
    # The store is back at 0.2.0's schema with everything in it; the migrated copy is kept.
    assert store_schema(device.db) == SCHEMA_VERSION + 1
    assert device.count("SELECT COUNT(*) FROM ratings") == 5
    assert device.count("SELECT COUNT(*) FROM followups") == 2
    assert device.count("SELECT value FROM counters WHERE name = 'person'") == person_seq
    assert device.count("SELECT COUNT(*) FROM outbox WHERE type = 'rating.recorded'") == 5
    [kept] = (device.work / "backups").glob("hall-0.3.0-failed-*.db")
    assert store_schema(kept) == SCHEMA_VERSION + 2
    failed = device.events()[-1]
    assert failed["type"] == "update.failed"
    data = failed["data"]
    assert (data["version"], data["from_version"], data["stage"], data["rolled_back"]) == ("0.3.0", "0.2.0", "start", True)
    assert "exited with" in data["reason"] and "before READY" in data["reason"]
    assert f"handed back at schema {SCHEMA_VERSION + 1}" in data["store"] and kept.name in data["store"]
    state = read_update_state(device.state)
    assert (state["running"], state["previous"], state["last"]["outcome"], state["last"]["version"]) == ("0.2.0", "0.1.0", "rolled_back", "0.3.0")
    STATUS_UPDATE.validate(state)
    press(device, 1)  # and the hall goes on recording on 0.2.0
    assert device.count("SELECT COUNT(*) FROM ratings") == 6


# -- refused before anything changes ----------------------------------------------------------------


def rewrite_bundle(src: Path, dest: Path, change) -> Path:
    """A copy of bundle ``src`` with ``change(name, data)`` applied to every member (None drops it)."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin.getmembers():
            data = change(m.name, tin.extractfile(m).read() if m.isfile() else b"")
            if data is None:
                continue
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return dest


def flip_a_byte_in_the_project_wheel(name: str, data: bytes) -> bytes:
    if name.startswith("wheels/hall_appliance-"):
        return data[:100] + bytes([data[100] ^ 1]) + data[101:]
    return data


def assert_nothing_changed(device: Device, u: Updater, outcome, message: str) -> dict:
    assert outcome.code == EXIT_REFUSED
    assert message in outcome.message, outcome.message
    assert device.link("current") == "releases/0.1.0" and device.link("previous") is None
    assert device.releases() == ["0.1.0"]
    assert u.runner.calls == []
    [failed] = device.events()
    assert failed["type"] == "update.failed"
    assert failed["data"]["stage"] in ("verify", "download") and failed["data"]["rolled_back"] is False and failed["data"]["store"] == "untouched"
    assert read_update_state(device.state)["last"]["outcome"] == "refused"
    return failed["data"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (flip_a_byte_in_the_project_wheel, "does not have the sha256 its signed manifest gives"),
        (lambda name, data: data[:-10] if name.startswith("wheels/flask-") else data, "the manifest says"),
        (lambda name, data: None if name.startswith("wheels/flask-") else data, "is missing"),
        (lambda name, data: data.replace(b'"version": "0.2.0"', b'"version": "9.0.0"') if name == "manifest.json" else data, "the signature does not match"),
    ],
    ids=["altered-wheel", "shortened-wheel", "missing-wheel", "altered-manifest"],
)
def test_a_tampered_bundle_is_refused_before_anything_changes(device, bundles, tmp_path, change, message):
    device.init_store()
    u = updater(device)
    outcome = u.install(rewrite_bundle(bundles["0.2.0"], tmp_path / "hall-appliance-0.2.0.tar", change))
    data = assert_nothing_changed(device, u, outcome, message)
    assert data["fix"]


def test_an_added_file_and_a_truncated_bundle_are_refused(device, bundles, tmp_path):
    device.init_store()
    u = updater(device)
    extra = rewrite_bundle(bundles["0.2.0"], tmp_path / "extra.tar", lambda n, d: d)
    with tarfile.open(extra, "a") as tar:
        info = tarfile.TarInfo("wheels/evil-1.0-py3-none-any.whl")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    assert "files its manifest does not list: wheels/evil-1.0-py3-none-any.whl" in u.install(extra).message
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundles["0.2.0"].read_bytes()[: bundles["0.2.0"].stat().st_size // 2])
    outcome = u.install(cut)
    assert outcome.code == EXIT_REFUSED and "copy the bundle again" in outcome.message
    assert device.link("current") == "releases/0.1.0" and device.releases() == ["0.1.0"]
    assert [e["data"]["stage"] for e in device.events()] == ["verify", "verify"]


def test_a_bundle_signed_with_another_key_is_refused(device, dependency_wheels, tmp_path):
    device.init_store()
    stranger = make_bundle(dependency_wheels, SigningKey.generate(), tmp_path)[0]
    u = updater(device)
    data = assert_nothing_changed(device, u, u.install(stranger), "the signature does not match the county release key")
    assert "install the new release.pub first" in data["fix"]


def test_without_the_county_release_key_nothing_is_trusted(device, bundles):
    device.init_store()
    (device.config_path.parent / "release.pub").unlink()
    u = updater(device)
    assert_nothing_changed(device, u, u.install(bundles["0.2.0"]), "no county release key at")


def test_the_private_release_key_on_a_device_is_refused_as_such(device, release_keys):
    shutil.copy2(release_keys[0], device.config_path.parent / "release.pub")
    with pytest.raises(BundleRefused, match="PRIVATE release key"):
        load_release_key(device.config_path.parent / "release.pub")


OTHER_MACHINE = "aarch64" if HERE.machine != "aarch64" else "x86_64"
OTHER_PYTHON = "39" if HERE.python != "3.9" else "312"


@pytest.mark.parametrize(
    ("fake_wheel", "message"),
    [
        (f"fakepkg-1.0-cp{HERE.python.replace('.', '')}-cp{HERE.python.replace('.', '')}-manylinux_2_17_{OTHER_MACHINE}.whl", f"is built for {OTHER_MACHINE}, this device is {HERE.machine}"),
        (f"fakepkg-1.0-cp{OTHER_PYTHON}-cp{OTHER_PYTHON}-manylinux_2_17_{HERE.machine}.whl", f"is built for Python {OTHER_PYTHON[0]}.{OTHER_PYTHON[1:]}"),
        (f"fakepkg-1.0-py3-none-manylinux_2_99_{HERE.machine}.whl", "fakepkg-1.0-py3-none-manylinux_2_99"),
    ],
    ids=["machine", "python", "glibc"],
)
def test_a_release_for_another_machine_or_python_is_refused(device, dependency_wheels, release_keys, tmp_path, fake_wheel, message):
    device.init_store()
    house = tmp_path / "house"  # the project's wheel and the odd one out: refused before any install
    house.mkdir()
    [project] = dependency_wheels.glob("hall_appliance-*.whl")
    os.symlink(project, house / project.name)
    (house / fake_wheel).write_bytes(b"not really a wheel")
    bundle = make_bundle(house, load_signing_key(release_keys[0]), tmp_path / "out")[0]
    u = updater(device)
    data = assert_nothing_changed(device, u, u.install(bundle, force=True), message)
    assert "ask the county for a bundle" in data["fix"]


@pytest.mark.parametrize(
    ("wheel", "problem"),
    [
        ("flask-3.1.3-py3-none-any.whl", None),
        ("pynacl-1.6.2-cp38-abi3-manylinux_2_34_x86_64.whl", None),
        ("pillow-13.0.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", None),
        ("x-1-cp311-cp311-linux_x86_64.whl", None),
        ("x-1-cp312-abi3-manylinux_2_17_x86_64.whl", "is for Python cp312 (abi3), this device runs cp311"),
        ("x-1-cp311-cp311-manylinux_2_99_x86_64.whl", "is for manylinux_2_99_x86_64, this device is linux_x86_64 with glibc 2.36"),
        ("x-1-cp311-cp311-musllinux_1_1_x86_64.whl", "is for musllinux_1_1_x86_64"),
        ("x-1-cp311-cp311-manylinux2014_aarch64.whl", "this device is linux_x86_64"),
        ("x-1-py2-none-any.whl", "is for Python py2"),
        ("not-a-wheel.whl", "is not a wheel file name"),
    ],
)
def test_which_wheels_fit_a_device(wheel, problem):
    device = Target("cp", "3.11", "x86_64", "2.36")
    found = wheel_problem(wheel, device)
    assert (found is None) if problem is None else (problem in found)


BEFORE = {"version": "0.1.0", "uplink": {"state": "connected"}, "alarms": [{"code": "disk_low", "detail": "x"}], "pin_factory": "lgpio", "badge_reader": {"connected": True, "detail": "reading"}, "outbox": {}}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"version": "0.1.0"}, "the daemon answering is version 0.1.0, not 0.2.0"),
        ({"uplink": {"state": "waiting"}}, "the uplink is waiting; before the update it was connected"),
        ({"alarms": [{"code": "disk_low", "detail": "x"}, {"code": "board_error", "detail": "SPI gone"}]}, "alarm board_error: SPI gone"),
        ({"pin_factory": "rpigpio"}, "the pins are driven by rpigpio, before the update by lgpio"),
        ({"badge_reader": {"connected": False, "detail": "not present"}}, "the badge reader was connected before the update and is not now"),
    ],
)
def test_the_health_check_wants_the_new_version_and_nothing_that_worked_broken(device, change, problem):
    u = updater(device)
    status = dict(BEFORE, version="0.2.0") | change
    problems = u.health_problems(status, "0.2.0", BEFORE, None)
    assert problems == ([] if problem is None else [problem])
    assert u.health_problems(None, "0.2.0", BEFORE, None) == ["the daemon does not answer on its control socket"]
    # The pins are judged by the factory in use: a release that newly reports the fallback
    # an older one ran on silently has broken nothing.
    fallback = dict(BEFORE, pin_factory="rpigpio")
    reported = dict(fallback, version="0.2.0", alarms=BEFORE["alarms"] + [{"code": "pin_factory", "detail": "gpio.pin_factory = 'auto' fell back to rpigpio: lgpio: …"}])
    assert u.health_problems(reported, "0.2.0", fallback, None) == []
    # Without a baseline (the old daemon was not running), queuing is healthy enough.
    assert u.health_problems(dict(BEFORE, version="0.2.0", uplink={"state": "waiting"}), "0.2.0", None, None) == []
    assert u.health_problems(dict(BEFORE, version="0.2.0", uplink={"state": "stopped"}), "0.2.0", None, None) == ["the uplink is stopped"]


def test_an_older_or_equal_release_is_refused_unless_forced_and_a_full_disk_is_refused(device, bundles):
    device.init_store()
    u = updater(device)
    data = assert_nothing_changed(device, u, u.install(bundles["0.1.0"]), "release 0.1.0 is the same as the running 0.1.0")
    assert "--force" in data["fix"]
    # --force passes the version check; the disk check still stands before anything changes.
    full = updater(device, free_bytes=lambda path: 10 << 20)
    outcome = full.install(bundles["0.1.0"], force=True)
    assert outcome.code == EXIT_REFUSED and "not enough free disk for the new release, the store's backups and the store's migration" in outcome.message
    assert "10 MB free" in outcome.message and "free some space" in outcome.message
    assert device.link("current") == "releases/0.1.0" and device.releases() == ["0.1.0"] and full.runner.calls == []
    assert [e["data"]["reason"].split(":")[0] for e in device.events()] == ["release 0.1.0 is the same as the running 0.1.0", "not enough free disk for the new release, the store's backups and the store's migration"]


def test_a_store_newer_than_the_release_knows_is_refused(device, bundles):
    device.init_store()
    conn = sqlite3.connect(device.db)
    conn.execute("PRAGMA user_version = 40")
    conn.close()
    u = updater(device)
    assert f"release 0.2.0 knows store schema {SCHEMA_VERSION + 1}, the store is at 40" in u.install(bundles["0.2.0"]).message
    assert device.link("current") == "releases/0.1.0"


def test_versions_compare_as_releases():
    assert version_key("0.10.0") > version_key("0.9.9") > version_key("0.9.9rc2") > version_key("0.9.9b1") > version_key("0.9.9a5")
    assert version_key("1.0") == version_key("1.0.0")
    with pytest.raises(ValueError, match="is not a release version"):
        version_key("1.0-dev")


# -- USB stick, boot partition, MQTT ---------------------------------------------------------------


def test_from_a_directory_the_newest_valid_bundle_is_chosen(device, bundles, tmp_path, release_keys):
    stick = tmp_path / "usb"
    stick.mkdir()
    shutil.copy2(bundles["0.1.0"], stick)
    shutil.copy2(bundles["0.2.0"], stick)
    rewrite_bundle(bundles["0.2.0"], stick / "hall-appliance-9.0.0.tar", flip_a_byte_in_the_project_wheel)
    (stick / "notes.txt").write_text("not a bundle")
    (chosen, manifest), refused = choose_bundle(stick, load_release_key(release_keys[1]))
    assert (chosen.name, manifest.version) == ("hall-appliance-0.2.0.tar", "0.2.0")
    assert [(p.name, "does not have the sha256" in reason) for p, reason in refused] == [("hall-appliance-9.0.0.tar", True)]
    # A stick with nothing newer than what runs: nothing to do, no event, no change.
    (stick / "hall-appliance-0.2.0.tar").unlink()
    device.init_store()
    u = updater(device)
    outcome = u.install_from_dir(stick)
    assert (outcome.code, outcome.message) == (EXIT_OK, f"the newest bundle in {stick} is 0.1.0; 0.1.0 is already running")
    assert device.events() == [] and u.runner.calls == []
    assert "skipped hall-appliance-9.0.0.tar" in u.lines[0]


class Server:
    """A file server on a free loopback port that can cut its answer half-way and honours Range."""

    def __init__(self, body: bytes, cut_first: int = 0, ignore_range: bool = False, no_length: bool = False) -> None:
        self.body = body
        self.no_length = no_length
        self.cuts_left = cut_first
        self.ignore_range = ignore_range
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted[6:-1]) if wanted and not server.ignore_range else 0
                part = server.body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                if not server.no_length:  # else the end of the connection is the end of the file
                    self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cuts_left:
                    server.cuts_left -= 1
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hall-appliance.tar"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def make(body: bytes, **kwargs) -> Server:
        servers.append(Server(body, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_a_download_cut_half_way_resumes_where_it_stopped(tmp_path, serve):
    body = os.urandom(3 << 20)
    server = serve(body, cut_first=2)
    path = download(server.url, tmp_path, hashlib.sha256(body).hexdigest(), size=len(body), sleep=lambda s: None)
    assert path.read_bytes() == body
    half = (len(body)) // 2
    assert server.ranges == [None, f"bytes={half}-", f"bytes={half + (len(body) - half) // 2}-"]
    assert list(tmp_path.glob("*.part")) == []


def test_a_download_that_keeps_being_cut_is_refused_and_kept_for_later(tmp_path, serve):
    body = os.urandom(1 << 20)
    server = serve(body, cut_first=100, ignore_range=True)
    sha = hashlib.sha256(body).hexdigest()
    with pytest.raises(DownloadFailed, match="could not be downloaded whole in 3 attempts") as exc:
        download(server.url, tmp_path, sha, attempts=3, sleep=lambda s: None)
    assert "send the command again to resume" in exc.value.fix
    assert (tmp_path / f"{sha}.part").exists()
    server.cuts_left = 0  # the network is back: the next command finishes it
    assert download(server.url, tmp_path, sha, sleep=lambda s: None).read_bytes() == body


def test_a_download_that_is_not_the_announced_bundle_is_refused(device, bundles, serve):
    device.init_store()
    server = serve(bundles["0.2.0"].read_bytes())
    u = updater(device)
    outcome = u.install_from_url(server.url, "0" * 64, source="mqtt")
    assert outcome.code == EXIT_REFUSED and "not the 0000000000000000… the command gave" in outcome.message
    [failed] = device.events()
    assert (failed["data"]["stage"], failed["data"]["source"], failed["data"]["version"]) == ("download", "mqtt", None)
    assert list((device.work / "downloads").iterdir()) == []
    assert device.link("current") == "releases/0.1.0"


def test_a_downloaded_bundle_is_verified_like_any_other(device, dependency_wheels, tmp_path, serve):
    device.init_store()
    stranger = make_bundle(dependency_wheels, SigningKey.generate(), tmp_path)[0]
    server = serve(stranger.read_bytes(), cut_first=1)
    u = updater(device)
    outcome = u.install_from_url(server.url, hashlib.sha256(stranger.read_bytes()).hexdigest())
    assert outcome.code == EXIT_REFUSED and "the signature does not match" in outcome.message
    assert list((device.work / "downloads").iterdir()) == []  # nothing left behind


SHA = "ab" * 32
TOPIC = Topics("xilinhot", "baiyinxile", "xlgl-baiyinxile-01").command("update.install")


@pytest.mark.parametrize(
    "args",
    [
        {"url": "https://files.county.example/hall/hall-appliance-0.2.0.tar", "sha256": SHA},
        {"url": "http://10.1.2.3:8080/r/hall-appliance-0.2.0.tar", "sha256": SHA.upper(), "size": 28_000_000, "version": "0.2.0"},
    ],
)
def test_a_good_update_install_command_is_taken_and_left_for_the_updater(tmp_path, args):
    validate_message(TOPIC, json.dumps({"command_id": "u-1", "args": args}).encode())
    checked = validate_install_args(args)
    assert checked["sha256"] == SHA
    result = request_install(tmp_path, checked)
    assert result == {"sha256": SHA, "version": args.get("version")}
    request = tmp_path / "update-request.json"
    assert stat.S_IMODE(request.stat().st_mode) == 0o640
    assert take_request(request) == checked
    assert not request.exists()  # taken: the path unit does not start the updater again


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        ([], "args", "must be an object with url and sha256"),
        ({"sha256": SHA}, "args.url", "is required: the bundle's address on the county's file server"),
        ({"url": "ftp://files/x.tar", "sha256": SHA}, "args.url", "must be an http:// or https:// URL on the county's file server, got 'ftp://files/x.tar'"),
        ({"url": "https:///x.tar", "sha256": SHA}, "args.url", "must be an http:// or https:// URL on the county's file server, got 'https:///x.tar'"),
        ({"url": "https://f/x y.tar", "sha256": SHA}, "args.url", "must not contain spaces; percent-encode them"),
        ({"url": "https://f/x.tar", "sha256": "abc"}, "args.sha256", "must be the bundle's sha256: 64 hex digits (sha256sum prints it)"),
        ({"url": "https://f/x.tar", "sha256": SHA, "size": 0}, "args.size", "must be the bundle's size in bytes (1 to 2 GiB)"),
        ({"url": "https://f/x.tar", "sha256": SHA, "version": "latest"}, "args.version", 'must be a release version like 1.4.2, got "latest"'),
        ({"url": "https://f/x.tar", "sha256": SHA, "force": True}, "args.force", "unknown key 'force'; update.install takes url, sha256, size and version"),
    ],
)
def test_a_bad_update_install_command_is_rejected_naming_the_field(args, field, reason):
    with pytest.raises(CommandRejected) as exc:
        validate_install_args(args)
    assert (exc.value.field, exc.value.reason) == (field, reason)


# -- the store across a rollback ---------------------------------------------------------------------


def test_handing_back_a_migrated_store_keeps_every_row_and_names_what_it_cannot_carry(tmp_path):
    db = tmp_path / "hall.db"
    store = Store(db, free_space_floor_mb=0, reserve_mb=0)
    recorder = Recorder(store, load_config(write_config(tmp_path / "c")).device, FakeClock(), "boot-1")
    recorder.record("rating.recorded", {"n": 1}, domain=lambda conn, env: conn.execute("INSERT INTO settings VALUES ('a', '1', 'x', 'y')"))
    store.close()
    backup = tmp_path / "backup.db"
    backup_store(db, backup)
    conn = sqlite3.connect(db, isolation_level=None)
    # What a later release might do: add a column and a table, rebuild one table without a
    # NOT NULL column the old schema has, and record more.
    conn.executescript(
        "ALTER TABLE outbox ADD COLUMN priority INTEGER;"
        "CREATE TABLE newer (x);"
        "CREATE TABLE audit2 (id INTEGER PRIMARY KEY, at TEXT, username TEXT, action TEXT); DROP TABLE audit; ALTER TABLE audit2 RENAME TO audit;"
        "INSERT INTO settings VALUES ('b', '2', 'x', 'y');"
        "UPDATE counters SET value = value + 1 WHERE name = 'person';"
        f"PRAGMA user_version = {SCHEMA_VERSION + 1};"
    )
    conn.execute("INSERT INTO outbox (stream, seq, event_id, type, topic, payload, created_at, priority) VALUES ('person', 2, 'e-2', 'rating.recorded', 't', x'7b7d', 'now', 1)")
    conn.close()
    kept = hand_back_store(db, backup)
    assert kept == ["audit (column detail gone)"]
    assert store_schema(db) == SCHEMA_VERSION
    reopened = Store(db, free_space_floor_mb=0, reserve_mb=0)  # the old release opens it
    assert reopened.rows("SELECT key FROM settings ORDER BY key") == [("a",), ("b",)]
    assert reopened.rows("SELECT seq FROM outbox WHERE stream = 'person' ORDER BY seq") == [(1,), (2,)]
    assert reopened.last_seq("person") == 2
    reopened.close()


# -- the release tool and the command lines ----------------------------------------------------------


def test_release_keygen_writes_the_private_key_0600_and_never_overwrites(tmp_path, capsys):
    private, public = tmp_path / "r.key", tmp_path / "r.pub"
    assert provision_cli.main(["release-keygen", "--private-out", str(private), "--public-out", str(public)]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    load_release_key(public)
    before = private.read_bytes()
    with pytest.raises(KeyFileExists):
        keygen(private, tmp_path / "other.pub")
    assert provision_cli.main(["release-keygen", "--private-out", str(private), "--public-out", str(tmp_path / "x.pub")]) == 1
    assert "never overwrites" in capsys.readouterr().err
    assert private.read_bytes() == before and not (tmp_path / "other.pub").exists()


def test_the_manifest_states_version_target_schema_and_every_files_hash(bundles, dependency_wheels, release_keys, tmp_path, capsys):
    manifest = read_bundle(bundles["0.1.0"], load_release_key(release_keys[1]))
    assert manifest.version == "0.1.0" and manifest.store_schema == SCHEMA_VERSION
    assert manifest.target["python"] == HERE.python and manifest.target["machine"] == HERE.machine and manifest.target["abi"] == HERE.abi
    wheels = {f"wheels/{w.name}": w for w in dependency_wheels.glob("*.whl")}
    assert set(manifest.files) == set(wheels)
    for name, info in manifest.files.items():
        data = wheels[name].read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert read_release(next(dependency_wheels.glob("hall_appliance-*.whl"))) == ("0.1.0", SCHEMA_VERSION)
    assert read_bundle(bundles["0.2.0"], load_release_key(release_keys[1])).store_schema == SCHEMA_VERSION + 1
    # The command line prints what cmd/update.install needs.
    code = provision_cli.main(["release", "--key", str(release_keys[0]), "--out", str(tmp_path), "--wheelhouse", str(dependency_wheels)])
    out = capsys.readouterr().out
    assert code == 0 and f"sha256 {hashlib.sha256((tmp_path / 'hall-appliance-0.1.0.tar').read_bytes()).hexdigest()}" in out


def test_hall_appliance_update_on_the_command_line(device, bundles, capsys):
    device.init_store()
    assert cli.main(["update"]) == 2
    assert "give exactly one of BUNDLE" in capsys.readouterr().err
    assert cli.main(["update", "--url", "https://f/x.tar"]) == 2
    code = cli.main(["update", str(bundles["0.1.0"]), "--root", str(device.root)])
    assert code == EXIT_REFUSED
    assert "release 0.1.0 is the same as the running 0.1.0; nothing to do; county IT can reinstall or go back with --force" in capsys.readouterr().err
    assert cli.main(["update", "--resume", "--root", str(device.root)]) == EXIT_OK  # as every boot runs it: nothing to resume
    assert "no interrupted update to finish" in capsys.readouterr().out


def test_the_update_state_reads_safely(tmp_path):
    assert read_update_state(tmp_path) is None
    (tmp_path / "update-state.json").write_text("{not json")
    assert read_update_state(tmp_path)["error"].startswith(f"{tmp_path / 'update-state.json'} cannot be read")
    STATUS_UPDATE.validate(read_update_state(tmp_path))
    STATUS_UPDATE.validate(None)


# -- a hall never left dark: whatever fails after the services stop --------------------------------


def stand_in_release(device: Device, version: str, *, migrations: tuple[str, ...] = (), any_error_is_damage: bool = False) -> Path:
    """Release ``version`` as a wrapper around this checkout (no venv to build): ``migrations``
    added to the store's, and a daemon that opens (and migrates) the store, then exits before
    READY. With ``any_error_is_damage`` its store takes any error while opening for damage and
    sets the file aside (as releases before schema 7 did). The updater is made to install it in
    place of the bundle's wheels."""
    release = device.base / "releases" / version
    (release / "bin").mkdir(parents=True)
    (release / "start.py").write_text(
        "import sys\n"
        "import appliance\n"
        f"appliance.__version__ = {version!r}\n"
        "from appliance import store\n"
        f"store.MIGRATIONS = store.MIGRATIONS + {migrations!r}\n"
        "store.SCHEMA_VERSION = len(store.MIGRATIONS)\n"
        + ("store.is_damage = lambda exc: True\n" if any_error_is_damage else "")
        + "from appliance import daemon\n"
        "def never_ready(message):\n"
        "    if message.startswith('READY=1'):\n"
        "        raise SystemExit('this release is broken on purpose (tests/test_update.py)')\n"
        "    return True\n"
        "daemon.notify = never_ready\n"
        "from appliance import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    script = release / "bin" / "hall-appliance"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{release / "start.py"}" "$@"\n')
    script.chmod(0o755)
    (release / "hall-release.json").write_text(json.dumps({"version": version}))
    return release


def running_with_ratings(device: Device, services: Services, n: int = 3) -> str:
    """0.1.0 running with ``n`` ratings; returns the store's store_id."""
    services.start(DAEMON_UNIT, 30)
    press(device, n)
    return device.count_text("SELECT value FROM meta WHERE key = 'store_id'")


def assert_back_on_010(device: Device, services: Services, calls_before: int) -> None:
    assert (device.link("current"), device.link("previous")) == ("releases/0.1.0", None)
    assert device.releases() == ["0.1.0"]  # the failed release is gone
    assert services.calls[-4:] == [("reset-failed", DAEMON_UNIT, "releases/0.1.0"), ("start", DAEMON_UNIT, "releases/0.1.0"), ("reset-failed", WEB_UNIT, "releases/0.1.0"), ("start", WEB_UNIT, "releases/0.1.0")]
    assert ControlClient(device.config.control.socket).call("status")["version"] == "0.1.0"


def test_a_full_disk_during_the_backup_starts_the_old_release_again_and_says_so(device, services, bundles, monkeypatch):
    running_with_ratings(device, services)
    u = updater(device, services)
    u._install_release = lambda bundle, manifest, key: stand_in_release(device, "0.2.0")

    def disk_full(db, dest):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("appliance.update.backup_store", disk_full)
    calls = len(services.calls)
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_REFUSED, "\n".join(u.lines)
    assert ("start", DAEMON_UNIT, "releases/0.2.0") not in services.calls[calls:]  # never switched
    assert_back_on_010(device, services, calls)
    failed = device.events()[-1]
    assert failed["type"] == "update.failed"
    assert (failed["data"]["stage"], failed["data"]["rolled_back"], failed["data"]["store"]) == ("start", False, "untouched")
    assert "backing up the store for release 0.2.0 failed (OperationalError: database or disk is full)" in failed["data"]["reason"]
    assert read_update_state(device.state)["last"]["outcome"] == "failed"
    assert device.count("SELECT COUNT(*) FROM ratings") == 3


def test_a_store_that_cannot_be_handed_back_is_restored_from_the_backup_and_the_old_release_starts(device, services, bundles, monkeypatch):
    running_with_ratings(device, services)
    # Root's files never go where the daemon and the page can write: links planted there are ignored.
    outside = device.root / "outside"
    outside.mkdir()
    os.symlink(outside, device.state / "backups")
    os.symlink(outside / "victim", device.state / ".hall.db.handback")
    u = updater(device, services)
    u._install_release = lambda bundle, manifest, key: stand_in_release(device, "0.2.0", migrations=(KIOSK,))

    def no_room(db, backup, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("appliance.update.hand_back_store", no_room)
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_ROLLED_BACK, "\n".join(u.lines)
    assert_back_on_010(device, services, 0)
    assert store_schema(device.db) == SCHEMA_VERSION and device.count("SELECT COUNT(*) FROM ratings") == 3
    [kept] = (device.work / "backups").glob("hall-0.2.0-failed-*.db")
    assert store_schema(kept) == SCHEMA_VERSION + 1  # what the attempt recorded is kept
    data = device.events()[-1]["data"]
    assert data["rolled_back"] is True and "could not be handed back (OSError: [Errno 28] No space left on device)" in data["store"]
    assert "the backup from before the update was restored" in data["store"] and kept.name in data["store"]
    assert list(outside.iterdir()) == []
    assert not (device.work / "attempt.json").exists()  # the attempt ended: nothing for the next boot


def test_an_update_cut_short_after_the_switch_is_rolled_back_at_the_next_boot(device, services, bundles, monkeypatch):
    running_with_ratings(device, services)
    u = updater(device, services)
    u._install_release = lambda bundle, manifest, key: stand_in_release(device, "0.2.0", migrations=(KIOSK,))

    def started_then_power_cut(*args, **kwargs):
        with contextlib.suppress(ServiceFailed):
            services.start(DAEMON_UNIT, 30)  # the new release ran (and migrated the store)
        raise ServiceFailed("the health check was under way", "")

    def power_cut(*args, **kwargs):
        raise SystemExit("the power went: nothing after this runs")

    monkeypatch.setattr(u, "wait_healthy", started_then_power_cut)
    monkeypatch.setattr(u, "_roll_back", power_cut)
    with pytest.raises(SystemExit):
        u.install(bundles["0.2.0"])
    assert device.link("current") == "releases/0.2.0" and store_schema(device.db) == SCHEMA_VERSION + 1
    assert json.loads((device.work / "attempt.json").read_text())["backup"].startswith(str(device.work / "backups" / "hall-0.1.0-"))

    # The next boot: hall-update-resume.service runs a new updater with --resume.
    again = updater(device, services)
    outcome = again.resume()
    assert outcome.code == EXIT_ROLLED_BACK, "\n".join(again.lines)
    assert_back_on_010(device, services, 0)
    assert not (device.work / "attempt.json").exists()
    assert store_schema(device.db) == SCHEMA_VERSION and device.count("SELECT COUNT(*) FROM ratings") == 3
    failed = device.events()[-1]
    assert (failed["type"], failed["data"]["version"], failed["data"]["from_version"], failed["data"]["rolled_back"]) == ("update.failed", "0.2.0", "0.1.0", True)
    assert "the update to release 0.2.0 was cut short (a power cut, a restart or a kill) before it was found healthy" in failed["data"]["reason"]
    assert "handed back at schema" in failed["data"]["store"]
    assert read_update_state(device.state)["last"]["outcome"] == "rolled_back"
    assert updater(device, services).resume().code == EXIT_OK  # done: nothing more to resume


def test_a_power_cut_after_the_health_check_passed_leaves_the_new_release(device, services, bundles, monkeypatch):
    services.start(DAEMON_UNIT, 30)
    u = updater(device, services)

    def power_cut(keep):
        raise SystemExit("the power went while old releases were being removed")

    monkeypatch.setattr(u, "_prune", power_cut)
    with pytest.raises(SystemExit):
        u.install(bundles["0.2.0"])
    assert not (device.work / "attempt.json").exists()  # healthy: nothing left to roll back
    assert device.events()[-1]["type"] == "update.succeeded" and read_update_state(device.state)["last"]["outcome"] == "succeeded"
    outcome = updater(device, services).resume()
    assert (outcome.code, outcome.message) == (EXIT_OK, "no interrupted update to finish")
    assert device.link("current") == "releases/0.2.0"


def test_an_attempt_note_that_cannot_be_read_is_reported_not_guessed_at(device, services):
    device.init_store()
    device.work.mkdir(parents=True, mode=0o700)
    (device.work / "attempt.json").write_text("{not json")
    outcome = updater(device, services).resume()
    assert outcome.code == EXIT_BROKEN and "cannot be read" in outcome.message
    assert read_update_state(device.state)["last"]["outcome"] == "broken"
    assert device.link("current") == "releases/0.1.0" and services.calls == []


def test_a_release_whose_migration_fails_leaves_the_store_as_it_was(device, services, bundles):
    store_id = running_with_ratings(device, services)
    u = updater(device, services)
    # A migration that fails on a table with rows is a bug, not damage: the store stays as it is.
    u._install_release = lambda bundle, manifest, key: stand_in_release(device, "0.2.0", migrations=("ALTER TABLE ratings ADD COLUMN kiosk TEXT NOT NULL",))
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_ROLLED_BACK, "\n".join(u.lines)
    assert not list(device.state.glob("hall.db.damaged-*"))
    assert_back_on_010(device, services, 0)
    assert device.count_text("SELECT value FROM meta WHERE key = 'store_id'") == store_id
    assert device.count("SELECT COUNT(*) FROM ratings") == 3 and store_schema(device.db) == SCHEMA_VERSION
    assert device.events()[-1]["data"]["store"] == "untouched"
    press(device, 1)
    assert device.count("SELECT COUNT(*) FROM ratings") == 4


def test_a_release_that_sets_the_real_store_aside_gets_it_back_not_the_empty_one_it_made(device, services, bundles):
    store_id = running_with_ratings(device, services)
    u = updater(device, services)
    # A release whose store takes a failing migration for damage (as before schema 7) moves the
    # real database aside and starts an empty store (where the same migration works).
    u._install_release = lambda bundle, manifest, key: stand_in_release(device, "0.2.0", migrations=("ALTER TABLE ratings ADD COLUMN kiosk TEXT NOT NULL",), any_error_is_damage=True)
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_ROLLED_BACK, "\n".join(u.lines)
    assert list(device.state.glob("hall.db.damaged-*"))  # what the new release did
    assert_back_on_010(device, services, 0)
    assert device.count_text("SELECT value FROM meta WHERE key = 'store_id'") == store_id
    assert device.count("SELECT COUNT(*) FROM ratings") == 3 and store_schema(device.db) == SCHEMA_VERSION
    data = device.events()[-1]["data"]
    assert "put it aside as damaged" in data["store"] and "the backup from before the update was restored as the store" in data["store"]
    press(device, 1)
    assert device.count("SELECT COUNT(*) FROM ratings") == 4


def test_an_error_writing_the_new_release_is_a_failed_install_with_an_event(device, bundles):
    device.init_store()
    u = updater(device)

    def cannot_write(bundle, manifest, key):
        raise OSError(28, "No space left on device", "hall-release.json")

    u._install_release = cannot_write
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_REFUSED and "installing release 0.2.0 ran out of disk space (No space left on device: hall-release.json)" in outcome.message
    assert [e["type"] for e in device.events()] == ["update.started", "update.failed"]
    assert device.events()[-1]["data"]["stage"] == "install" and u.runner.calls == []
    assert read_update_state(device.state)["last"]["outcome"] == "failed"


def test_a_bundle_that_changes_between_the_check_and_the_install_is_refused(device, bundles, tmp_path, monkeypatch):
    device.init_store()
    bundle = tmp_path / "hall-appliance-0.2.0.tar"
    shutil.copy2(bundles["0.2.0"], bundle)
    check = Updater.check

    def check_then_swap(self, manifest, current, *, force):
        check(self, manifest, current, force=force)
        shutil.copy2(bundles["0.3.0"], bundle)  # another validly signed bundle: the stick was swapped

    monkeypatch.setattr(Updater, "check", check_then_swap)
    u = updater(device)
    outcome = u.install(bundle)
    assert outcome.code == EXIT_REFUSED and "changed between the check and the install (it is now release 0.3.0" in outcome.message
    assert device.releases() == ["0.1.0"] and device.link("current") == "releases/0.1.0" and u.runner.calls == []
    assert read_update_state(device.state)["last"]["outcome"] == "refused"


def test_extracting_onto_a_full_disk_is_no_room_not_a_damaged_bundle(bundles, release_keys, tmp_path, monkeypatch):
    real = update_module._hash_stream

    def full(src, out=None):
        if out is not None:
            raise OSError(28, "No space left on device")
        return real(src, out)

    monkeypatch.setattr(update_module, "_hash_stream", full)
    with pytest.raises(NoRoom, match="no room left on the disk to extract the wheels"):
        read_bundle(bundles["0.2.0"], load_release_key(release_keys[1]), extract_to=tmp_path / "wheels")


# -- root never follows a link planted in the store's directory ------------------------------------


def test_links_planted_in_the_store_directory_never_make_root_write_elsewhere(device, bundles, serve):
    device.init_store()
    body = bundles["0.1.0"].read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    outside = device.root / "opt" / "hall-appliance" / "releases" / "0.1.0" / "bin" / "hall-appliance"
    precious = outside.read_bytes()
    victim = device.root / "victim"
    victim.write_text("root's file")
    (device.state / "downloads").mkdir()
    os.symlink(outside, device.state / "downloads" / f"{sha}.part")  # the old place of downloads
    os.symlink(victim, device.state / f".update-state.json.{os.getpid()}.tmp")  # the old temporary name
    os.symlink(victim, device.state / "update-state.json")
    u = updater(device)
    outcome = u.install_from_url(serve(body).url, sha)
    assert "release 0.1.0 is the same as the running 0.1.0" in outcome.message  # downloaded, verified, refused
    assert outside.read_bytes() == precious and victim.read_text() == "root's file"
    state = device.state / "update-state.json"
    assert not state.is_symlink() and stat.S_IMODE(state.stat().st_mode) == 0o644  # replaced, not written through
    assert read_update_state(device.state)["last"]["outcome"] == "refused"
    assert stat.S_IMODE(device.work.stat().st_mode) == 0o700


def test_an_updater_directory_that_is_a_link_is_refused_before_anything_changes(device, bundles):
    device.init_store()
    elsewhere = device.root / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, device.work)
    u = updater(device)
    outcome = u.install(bundles["0.2.0"])
    assert outcome.code == EXIT_REFUSED and f"the updater's directory {device.work} cannot be used: a symbolic link" in outcome.message
    assert list(elsewhere.iterdir()) == [] and u.runner.calls == [] and device.releases() == ["0.1.0"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge", "list"])
def test_a_request_that_is_not_a_small_regular_file_is_refused_and_removed(tmp_path, kind):
    request = tmp_path / "update-request.json"
    target = tmp_path / "root-only.json"
    target.write_text(json.dumps({"url": "https://f/x.tar", "sha256": SHA}))
    if kind == "symlink":
        os.symlink(target, request)
    elif kind == "fifo":
        os.mkfifo(request)  # opening it for reading would wait for ever
    elif kind == "huge":
        request.write_text(json.dumps({"url": "https://f/x.tar", "sha256": SHA, "pad": "x" * (64 << 10)}))
    else:
        request.write_text("[]")
    with pytest.raises(BundleRefused, match="cannot be read"):
        take_request(request)
    assert not os.path.lexists(request) and target.exists()  # the link is gone, not what it named


# -- downloads that would fill the disk --------------------------------------------------------------


def test_a_download_of_unknown_size_is_capped(tmp_path, serve, monkeypatch):
    body = os.urandom(1 << 20)
    sha = hashlib.sha256(body).hexdigest()
    server = serve(body, no_length=True)
    with pytest.raises(DownloadFailed, match="up to 200 MB: neither the command nor the server gives the size"):
        download(server.url, tmp_path, sha, free_bytes=lambda p: 100 << 20, sleep=lambda s: None)
    monkeypatch.setattr(update_module, "MAX_UNSIZED_DOWNLOAD", 512 << 10)
    with pytest.raises(DownloadFailed, match="is larger than 0 MB and neither the command nor the server says its size"):
        download(server.url, tmp_path, sha, sleep=lambda s: None)
    assert list(tmp_path.iterdir()) == []
    assert download(server.url, tmp_path, sha, size=len(body), sleep=lambda s: None).read_bytes() == body


def test_abandoned_partial_downloads_are_removed(tmp_path, serve):
    body = os.urandom(1 << 20)
    sha = hashlib.sha256(body).hexdigest()
    other = tmp_path / f"{'cd' * 32}.part"
    other.write_bytes(b"another bundle, never finished")
    stale = tmp_path / f"{sha}.part"
    stale.write_bytes(b"a week-old start of something else")
    os.utime(stale, (time.time() - 8 * 86400,) * 2)
    server = serve(body)
    assert download(server.url, tmp_path, sha, sleep=lambda s: None).read_bytes() == body
    assert server.ranges == [None]  # the stale part was not resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{sha}.tar"]


def test_a_bundle_that_is_not_the_announced_version_is_refused(device, bundles, serve):
    device.init_store()
    body = bundles["0.2.0"].read_bytes()
    u = updater(device)
    outcome = u.install_from_url(serve(body).url, hashlib.sha256(body).hexdigest(), version="0.9.0", source="mqtt")
    assert outcome.code == EXIT_REFUSED and "is release 0.2.0, the command announced 0.9.0" in outcome.message
    assert device.releases() == ["0.1.0"] and u.runner.calls == []


# -- --request: taken first, with the device's county CA -----------------------------------------------


def test_a_request_is_taken_even_when_the_config_is_broken(device, capsys):
    request = device.state / "update-request.json"
    request_install(device.state, {"url": "https://f/x.tar", "sha256": SHA, "version": "0.2.0"})
    device.config_path.write_text("[device\n")
    assert cli.main(["update", "--request", str(request), "--root", str(device.root)]) == EXIT_REFUSED
    assert not request.exists()  # the path unit does not start the updater again and again
    assert "the updater could not start" in capsys.readouterr().err
    last = read_update_state(device.state)["last"]
    assert (last["outcome"], last["version"], last["from_version"]) == ("failed", "0.2.0", "0.1.0")
    assert "is not valid TOML" in last["reason"]


def test_a_request_trusts_the_devices_county_ca_for_https(device, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(Updater, "install_from_url", lambda self, url, sha256, **kw: seen.append(kw) or Outcome(EXIT_OK, "ok"))
    request = device.state / "update-request.json"

    def run(*extra: str) -> dict:
        request_install(device.state, {"url": "https://f/x.tar", "sha256": SHA, "version": "0.2.0"})
        assert cli.main(["update", "--request", str(request), "--root", str(device.root), *extra]) == EXIT_OK
        return seen[-1]

    assert run()["ca_file"] is None  # no county CA provisioned: the system's CAs only
    ca = device.config_path.parent / "ca.crt"
    ca.write_text("a county CA")
    assert (run()["ca_file"], run()["version"]) == (str(ca), "0.2.0")
    assert run("--ca-file", "/given.pem")["ca_file"] == "/given.pem"
    config = load_config(write_config(tmp_path / "c", broker_extra='\n[broker.tls]\nca_file = "/etc/county/ca.pem"\n'))
    assert default_ca_file(config, Layout(device.root)) == "/etc/county/ca.pem"
