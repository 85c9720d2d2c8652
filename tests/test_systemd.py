"""The systemd units, the users file and the installer (issue #8).

What can be checked off the Pi is checked here: every unit passes `systemd-analyze verify`
with no warning about it, every directive is commented, the hardening is all there and
consistent with the config's defaults, MemoryDenyWriteExecute= does not break our stack,
and the installer's every step (dry run, into a temporary root, twice, and once with a real
venv). What only a Pi can confirm is listed in docs/install.md.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
INSTALL = SYSTEMD / "install.py"
UNITS = (
    "hall-appliance.service",
    "hall-web.service",
    "hall-enroll.service",
    "hall-update.path",
    "hall-update.service",
    "hall-update-boot.service",
    "hall-update-resume.service",
)
SERVICES = tuple(u for u in UNITS if u.endswith(".service"))
# hall-update.service is started only by hall-update.path, never at boot by itself.
ENABLED = tuple(u for u in UNITS if u != "hall-update.service")
DEVICE_BINARY = "/opt/hall-appliance/current/bin/hall-appliance"
# The installer runs with the distribution's python3, before any venv exists: test it so.
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
PI_CONFIG_TXT = (
    "# For more options and information see\n"
    "# http://rptl.io/configtxt\n"
    "#dtparam=i2c_arm=on\n"
    "#dtparam=i2s=on\n"
    "#dtparam=spi=on\n"
    "\n"
    "[cm4]\n"
    "otg_mode=1\n"
    "\n"
    "[all]\n"
)


def parse_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat), as systemd reads it (no continuations used)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"{key}= missing from [{section}]"
    return values[-1]


# --- systemd-analyze verify -----------------------------------------------------------


def binary_here() -> Path:
    binary = Path(sys.prefix) / "bin" / "hall-appliance"
    if not binary.exists():
        pytest.skip(f"{binary} is not installed (make venv)")
    return binary


def verify(tmp_path: Path, texts: dict[str, str]) -> list[str]:
    """systemd-analyze verify on copies of the units; the stderr lines that name one of them."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    paths = []
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    # It exits 0 even for an unknown key (DESIGN.md): its warnings are what count.
    return [line for line in (result.stdout + result.stderr).splitlines() if any(name in line for name in texts)]


def rewritten_units() -> dict[str, str]:
    """Our units with ExecStart= pointing at this environment's binary (verify needs it to exist)."""
    binary = str(binary_here())
    texts = {}
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        if name in SERVICES:
            assert DEVICE_BINARY in text, f"{name}: ExecStart= should use {DEVICE_BINARY}"
        texts[name] = text.replace(DEVICE_BINARY, binary)
    return texts


def test_every_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path):
    # Users hall and hall-web need not exist: systemd 252's verify does not resolve User=,
    # Group= or SupplementaryGroups= (checked on a machine without them), so nothing is
    # filtered here; should a later systemd warn about them, this test says so.
    assert verify(tmp_path, rewritten_units()) == []


def test_verify_check_catches_a_bad_directive(tmp_path):
    # The check above has teeth: an unknown key and a bad value are reported against the unit.
    texts = rewritten_units()
    texts["hall-appliance.service"] = texts["hall-appliance.service"].replace("[Service]\n", "[Service]\nProtectSystm=strict\nMemoryDenyWriteExecute=maybe\n", 1)
    problems = verify(tmp_path, texts)
    assert any("ProtectSystm" in p for p in problems), problems
    assert any("Failed to parse boolean value" in p and "maybe" in p for p in problems), problems


# --- comments and hardening ----------------------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_every_directive_has_a_comment_line_above_it(name):
    lines = (SYSTEMD / name).read_text().splitlines()
    bare = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith(("#", ";", "[")):
            continue
        above = lines[number - 2].lstrip() if number > 1 else ""
        if not above.startswith("#"):
            bare.append(f"{name}:{number}: {line}")
    assert bare == []


COMMON_HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "DevicePolicy": "closed",
}


@pytest.mark.parametrize("name", SERVICES)
def test_every_unit_has_the_common_hardening(name):
    unit = parse_unit(name)
    for key, value in COMMON_HARDENING.items():
        assert one(unit, "Service", key) == value, f"{name}: {key}"
    assert one(unit, "Service", "SystemCallFilter").split()[0] == "@system-service"
    if name == "hall-update-resume.service":  # the previous release first (see its test below)
        assert one(unit, "Service", "ExecStart").startswith("/bin/sh -c '" + DEVICE_BINARY.replace("/current/", "/previous/") + " ")
    else:
        assert one(unit, "Service", "ExecStart").startswith(DEVICE_BINARY + " ")
    assert "CapabilityBoundingSet" in unit["Service"]


def test_the_daemon_unit_is_notify_watchdog_and_hardened_for_its_devices():
    unit = parse_unit("hall-appliance.service")
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "notify"
    assert int(one(unit, "Service", "WatchdogSec")) > 0
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartPreventExitStatus") == "2"  # cli.py: bad config
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0 and int(one(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert one(unit, "Service", "ExecStart").endswith(" run --config /etc/hall-appliance/appliance.toml")
    assert one(unit, "Service", "User") == "hall"
    assert set(one(unit, "Service", "SupplementaryGroups").split()) == {"gpio", "spi", "input"}
    assert one(unit, "Service", "StateDirectory") == "hall-appliance"
    assert one(unit, "Service", "RuntimeDirectory") == "hall-appliance"
    assert "LG_WD=/run/hall-appliance" in service["Environment"]
    assert one(unit, "Service", "PrivateDevices") == "no"  # it would hide the devices
    assert set(service["DeviceAllow"]) >= {"char-gpiochip rw", "char-spi rw", "char-input r"}
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert set(one(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # appliance/clock.py reads the NTP state with adjtimex(): not in @system-service,
    # and denied by ProtectClock=yes.
    assert "adjtimex" in one(unit, "Service", "SystemCallFilter").split()
    assert one(unit, "Service", "ProtectClock") == "no"
    # appliance/control.py reads a peer's /proc/<pid>/status to check its groups.
    assert one(unit, "Service", "ProtectProc") == "default"
    assert one(unit, "Service", "UMask") == "0007"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_page_unit_has_no_devices_and_shares_only_the_store():
    unit = parse_unit("hall-web.service")
    assert one(unit, "Service", "ExecStart").endswith(" web --config /etc/hall-appliance/appliance.toml")
    assert one(unit, "Service", "User") == "hall-web"
    assert one(unit, "Service", "Group") == "hall-web"
    assert one(unit, "Service", "SupplementaryGroups") == "hall"
    assert one(unit, "Service", "PrivateDevices") == "yes"
    assert "DeviceAllow" not in unit["Service"]
    assert one(unit, "Service", "ReadWritePaths") == "/var/lib/hall-appliance"
    # StateDirectory= would hand the store's directory to hall-web.
    assert "StateDirectory" not in unit["Service"] and "RuntimeDirectory" not in unit["Service"]
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert "hall-appliance.service" in one(unit, "Unit", "After").split()
    assert one(unit, "Unit", "Wants") == "hall-appliance.service"
    # Works while the daemon is down: no hard dependency on it.
    for key in ("Requires", "BindsTo", "Requisite", "PartOf"):
        assert key not in unit["Unit"]
    assert "adjtimex" in one(unit, "Service", "SystemCallFilter").split()  # events carry clock_synced


def test_the_enroll_unit_runs_once_on_a_bundle_before_both_services():
    unit = parse_unit("hall-enroll.service")
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Unit", "ConditionPathExistsGlob") == "/boot/firmware/hall-bundle*.tar.gz"
    assert set(one(unit, "Unit", "Before").split()) == {"hall-appliance.service", "hall-web.service"}
    assert one(unit, "Service", "ExecStart") == f"{DEVICE_BINARY} enroll --from-boot --boot-dir /boot/firmware"


def test_the_update_path_unit_starts_the_updater_on_the_daemons_request_file():
    from appliance.update import REQUEST_FILE

    path = parse_unit("hall-update.path")
    config = tomllib.loads((ROOT / "config" / "appliance.example.toml").read_text())
    # The daemon writes the request in its store's directory (Daemon: request_install).
    request = str(Path(config["store"]["path"]).parent / REQUEST_FILE)
    assert one(path, "Path", "PathExists") == request
    assert one(path, "Path", "Unit") == "hall-update.service"
    assert one(path, "Install", "WantedBy") == "multi-user.target"
    service = parse_unit("hall-update.service")
    assert one(service, "Service", "ExecStart") == f"{DEVICE_BINARY} update --request {request}"
    assert one(service, "Service", "Type") == "oneshot"
    # Enabled through the path unit only (no [Install]: `systemctl enable` would refuse it).
    assert "Install" not in service


def test_the_updater_runs_as_root_with_the_network_and_writes_only_the_releases_and_the_store():
    unit = parse_unit("hall-update.service")
    assert one(unit, "Service", "User") == "root"
    assert set(one(unit, "Service", "ReadWritePaths").split()) == {"/opt/hall-appliance", "/var/lib/hall-appliance"}
    assert "network-online.target" in one(unit, "Unit", "After").split()
    assert one(unit, "Unit", "Wants") == "network-online.target"
    assert set(one(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "PrivateNetwork" not in unit["Service"]
    # Reaching the hall-owned store and control socket; nothing like CAP_SYS_ADMIN.
    assert set(one(unit, "Service", "CapabilityBoundingSet").split()) == {"CAP_DAC_OVERRIDE", "CAP_CHOWN"}
    # The new release's venv must be readable by hall and hall-web.
    assert one(unit, "Service", "UMask") == "0022"
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0


def test_the_boot_update_unit_looks_for_the_files_update_from_dir_considers(tmp_path):
    from nacl.signing import SigningKey

    from appliance.update import choose_bundle

    unit = parse_unit("hall-update-boot.service")
    glob = one(unit, "Unit", "ConditionPathExistsGlob")
    directory, _, pattern = glob.rpartition("/")
    assert one(unit, "Service", "ExecStart") == f"{DEVICE_BINARY} update --from-dir {directory}"
    assert one(unit, "Unit", "RequiresMountsFor") == directory == "/boot/firmware"
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Service", "PrivateNetwork") == "yes"  # the bundle is on the card
    # The files choose_bundle() tries (each is refused here: none is a bundle) are exactly the
    # ones the condition's glob matches; the enrolment bundle is not among them.
    names = ("hall-appliance-0.2.0.tar", "other.tar", "hall-bundle-hall-a.tar.gz", "notes.txt", "x.tar.part", "config.txt")
    for name in names:
        (tmp_path / name).write_bytes(b"not a bundle")
    (tmp_path / "dir.tar").mkdir()
    chosen, refused = choose_bundle(tmp_path, SigningKey.generate().verify_key)
    assert chosen is None
    assert sorted(p.name for p, _ in refused) == sorted(p.name for p in tmp_path.glob(pattern) if p.is_file()) == ["hall-appliance-0.2.0.tar", "other.tar"]


def resume_script(tmp_path: Path) -> list[str]:
    """hall-update-resume.service's ExecStart as systemd runs it, with its paths under ``tmp_path``."""
    command = one(parse_unit("hall-update-resume.service"), "Service", "ExecStart").replace("$$", "$")  # systemd's unescaping
    command = command.replace("/opt/hall-appliance", str(tmp_path / "opt")).replace("/var/lib/hall-update", str(tmp_path / "work"))
    return shlex.split(command)


def fake_updater(tmp_path: Path, link: str, script: str) -> None:
    """ROOT/opt/<link>/bin/hall-appliance as a shell script that logs its call and runs ``script``."""
    (tmp_path / "opt" / link / "bin").mkdir(parents=True)
    binary = tmp_path / "opt" / link / "bin" / "hall-appliance"
    binary.write_text(f'#!/bin/sh\necho "{link} $*" >> "{tmp_path}/calls"\n{script}\n')
    binary.chmod(0o755)


@pytest.mark.parametrize(
    ("previous", "calls", "code"),
    [
        ('rm "$NOTE"; exit 3', ["previous update --resume"], 3),  # rolled back by the release that wrote the note
        ('rm "$NOTE"; exit 4', ["previous update --resume"], 4),  # neither release came up: said once, not hidden
        ("exit 1", ["previous update --resume", "current update --resume"], 0),  # it could not run: the new release's reads the note
        (None, ["current update --resume"], 0),  # no previous release at all
    ],
)
def test_the_resume_unit_goes_back_with_the_previous_release_and_falls_back_to_the_current(tmp_path, previous, calls, code):
    note = tmp_path / "work" / "attempt.json"
    note.parent.mkdir()
    note.write_text("{}")
    if previous is not None:
        fake_updater(tmp_path, "previous", previous)
    fake_updater(tmp_path, "current", 'rm -f "$NOTE"; exit 0')
    done = subprocess.run(resume_script(tmp_path), env={"NOTE": str(note), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == code, done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == calls


def test_the_resume_unit_runs_only_for_the_note_the_updater_leaves_and_before_any_update():
    from appliance.update import ATTEMPT_FILE, Layout

    unit = parse_unit("hall-update-resume.service")
    assert one(unit, "Unit", "ConditionPathExists") == str(Layout(Path("/")).work / ATTEMPT_FILE)
    assert set(one(unit, "Unit", "Before").split()) == {"hall-update-boot.service", "hall-update.service"}
    assert one(unit, "Service", "Type") == "oneshot" and one(unit, "Service", "PrivateNetwork") == "yes"
    assert "hall-enroll.service" in one(unit, "Unit", "After").split()


@pytest.mark.parametrize("name", ("hall-update.service", "hall-update-boot.service", "hall-update-resume.service"))
def test_the_updaters_are_never_ordered_before_the_services_they_restart(name):
    # The updater runs `systemctl start hall-appliance.service` while its own oneshot is still
    # starting: were the daemon's start job ordered after it, each would wait for the other.
    services = {"hall-appliance.service", "hall-web.service"}
    unit = parse_unit(name)
    assert not services & set(" ".join(unit["Unit"].get("Before", [])).split())
    assert services <= set(one(unit, "Unit", "After").split())  # their baseline first
    for service in services:
        other = parse_unit(service)["Unit"]
        assert name not in " ".join(other.get("After", []) + other.get("Requires", []) + other.get("Wants", []))
    # Its own unit, so the daemon it stops is never in its cgroup (and it is not in the daemon's).
    assert one(unit, "Service", "User") == "root"


def test_the_boot_update_runs_after_enrolment_and_the_mqtt_update_never_beside_it():
    boot = parse_unit("hall-update-boot.service")
    assert "hall-enroll.service" in one(boot, "Unit", "After").split()  # it reads the config enrolment writes
    assert "hall-update-boot.service" in one(parse_unit("hall-update.service"), "Unit", "After").split()


def test_units_agree_with_the_configs_defaults():
    config = tomllib.loads((ROOT / "config" / "appliance.example.toml").read_text())
    daemon, web = parse_unit("hall-appliance.service"), parse_unit("hall-web.service")
    state = "/var/lib/" + one(daemon, "Service", "StateDirectory")
    runtime = "/run/" + one(daemon, "Service", "RuntimeDirectory")
    assert Path(config["store"]["path"]).parent == Path(state) == Path(one(web, "Service", "ReadWritePaths"))
    assert Path(config["control"]["socket"]).parent == Path(runtime)
    assert config["control"]["group"] == one(daemon, "Service", "Group") == one(web, "Service", "SupplementaryGroups")
    assert config["web"]["port"] >= 1024, "a port below 1024 needs CAP_NET_BIND_SERVICE in hall-web.service"


def test_sysusers_creates_the_users_and_groups_and_is_idempotent(tmp_path):
    if not shutil.which("systemd-sysusers"):
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    conf = str(SYSTEMD / "hall-appliance.sysusers.conf")
    # --root: only the temporary tree is touched, never this machine's users.
    for _ in range(2):
        subprocess.run(["systemd-sysusers", f"--root={tmp_path}", conf], check=True, capture_output=True, timeout=30)
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert set(users) == {"hall", "hall-web"}
    assert users["hall"][6] == users["hall-web"][6] == "/usr/sbin/nologin"
    assert "hall-web" in groups["hall"]
    for device_group in ("gpio", "spi", "input"):
        assert groups[device_group] == ["hall"]
    assert len((tmp_path / "etc/passwd").read_text().splitlines()) == 2  # the second run added nothing


# --- MemoryDenyWriteExecute= -------------------------------------------------------------------

MDWE = r'''
import ctypes, mmap, sys
lib = ctypes.CDLL(sys.argv[1], use_errno=True)
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # allow everything else
EPERM, MASKED_EQ = 0x00050001, 7
# systemd's MemoryDenyWriteExecute= filter: no W+X mmap, no mprotect/pkey_mprotect adding
# PROT_EXEC, no shmat with SHM_EXEC.
for name, bits in (("mmap", mmap.PROT_WRITE | mmap.PROT_EXEC), ("mprotect", mmap.PROT_EXEC), ("pkey_mprotect", mmap.PROT_EXEC), ("shmat", 0o100000)):
    assert lib.seccomp_rule_add_array(ctx, EPERM, lib.seccomp_syscall_resolve_name(name.encode()), 1, (Cmp * 1)(Cmp(2, MASKED_EQ, bits, bits))) == 0
assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert lib.seccomp_load(ctx) == 0
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("the filter is not active")
except PermissionError:
    pass
# What the daemon and the page run: every import, sealing, drawing, a ctypes call.
import appliance.daemon, appliance.web, appliance.uplink, appliance.cli
import drivers.buttons, drivers.display, drivers.badge, services.complaints
from appliance.clock import kernel_ntp_synced
kernel_ntp_synced()
from nacl.public import PrivateKey, SealedBox
key = PrivateKey.generate()
assert SealedBox(key).decrypt(SealedBox(key.public_key).encrypt(b"x")) == b"x"
from PIL import Image, ImageDraw
ImageDraw.Draw(Image.new("1", (128, 16))).text((0, 0), "hall", fill=1)
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7  # libffi closures (trampolines)
print("ok")
'''


def test_our_stack_runs_under_memory_deny_write_execute():
    libseccomp = ctypes.util.find_library("seccomp")
    if not libseccomp:
        pytest.skip("libseccomp is not installed")
    result = subprocess.run([sys.executable, "-c", MDWE, libseccomp], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


# --- the installer -----------------------------------------------------------------------------


def run_installer(*args: str, check: bool = True, python: str = SYSTEM_PYTHON, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([python, str(INSTALL), "--json", *args], capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def commands(plan: dict) -> list[list[str]]:
    return [s["argv"] for s in plan["steps"] if s["kind"] == "run"]


def written(plan: dict) -> set[str]:
    return {s["path"] for s in plan["steps"] if s["kind"] == "write"}


def pi_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(PI_CONFIG_TXT)
    return root


def test_dry_run_records_every_step_and_writes_nothing(tmp_path):
    root = pi_root(tmp_path)
    before = snapshot(root)
    plan = run_installer("--root", str(root), "--dry-run", "--ntp-server", "ntp.county.example")
    assert snapshot(root) == before
    assert not any(s["done"] for s in plan["steps"])
    assert plan["pi"] is True
    runs = commands(plan)
    apt = next(argv for argv in runs if argv[:2] == ["apt-get", "install"])
    assert {"python3-venv", "python3-lgpio", "python3-evdev", "python3-spidev", "fonts-unifont", "mosquitto-clients"} <= set(apt)
    assert ["systemd-sysusers", "/etc/sysusers.d/hall-appliance.conf"] in runs
    release = str(root / "opt/hall-appliance/releases" / plan["version"])
    venv = next(argv for argv in runs if "venv" in argv)
    assert "--system-site-packages" in venv and venv[-1] == release
    pip = next(argv for argv in runs if "pip" in argv)
    assert pip[0] == release + "/bin/python" and pip[-1] == str(ROOT)
    assert ["systemctl", "enable", *ENABLED] in runs
    assert "hall-update.path" in ENABLED and "hall-update-boot.service" in ENABLED and "hall-update.service" not in ENABLED
    assert ["systemctl", "restart", "systemd-timesyncd.service"] in runs
    assert {f"/etc/systemd/system/{u}" for u in UNITS} | {"/boot/firmware/config.txt", "/etc/systemd/timesyncd.conf.d/hall.conf", "/etc/sysusers.d/hall-appliance.conf"} <= written(plan)
    mkdirs = {s["path"]: s["what"] for s in plan["steps"] if s["kind"] == "mkdir"}
    assert mkdirs == {"/etc/hall-appliance": "0750", "/var/lib/hall-appliance": "2770", "/opt/hall-appliance/releases": "0755", "/etc/systemd/timesyncd.conf.d": "0755"}
    chowns = {s["path"]: s["what"] for s in plan["steps"] if s["kind"] == "chown"}
    assert chowns == {"/etc/hall-appliance": "root:hall", "/var/lib/hall-appliance": "hall:hall"}
    link = next(s for s in plan["steps"] if s["kind"] == "symlink")
    assert (link["path"], link["what"]) == ("/opt/hall-appliance/current", f"releases/{plan['version']}")


def test_plain_debian_gets_no_lgpio_and_is_told_what_to_do(tmp_path):
    plan = run_installer("--root", str(tmp_path), "--dry-run", "--platform", "debian")
    apt = next(argv for argv in commands(plan) if argv[:2] == ["apt-get", "install"])
    assert "python3-lgpio" not in apt and "python3-venv" in apt
    assert any("pin_factory" in item for item in plan["todo"])
    assert any(s["what"] == "spi" and s["kind"] == "note" for s in plan["steps"])


def test_wheelhouse_installs_offline_at_the_wheels_version(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for version in ("0.9.0", "0.10.1"):
        (wheels / f"hall_appliance-{version}-py3-none-any.whl").write_bytes(b"")
    plan = run_installer("--root", str(tmp_path / "root"), "--dry-run", "--wheelhouse", str(wheels))
    assert plan["version"] == "0.10.1"
    pip = next(argv for argv in commands(plan) if "pip" in argv)
    assert pip[-4:] == ["--no-index", "--find-links", str(wheels), "hall-appliance==0.10.1"]


def test_install_into_a_root_writes_the_files_and_a_second_run_changes_nothing(tmp_path):
    root = pi_root(tmp_path)
    (root / "etc/hall-appliance").mkdir(parents=True)
    # An enrolled config: the NTP server comes from its [clock] ntp_server.
    (root / "etc/hall-appliance/appliance.toml").write_text('[clock]\nntp_server = "10.1.2.3"\n')
    plan = run_installer("--root", str(root), "--skip-venv", "--no-apt")
    for name in UNITS:
        assert (root / "etc/systemd/system" / name).read_text() == (SYSTEMD / name).read_text()
    assert (root / "etc/sysusers.d/hall-appliance.conf").read_text() == (SYSTEMD / "hall-appliance.sysusers.conf").read_text()
    config_txt = (root / "boot/firmware/config.txt").read_text()
    assert re.findall(r"^dtparam=spi=on$", config_txt, re.M) == ["dtparam=spi=on"]
    assert "#dtparam=spi=on" not in config_txt  # uncommented in place, in the global section
    assert (root / "etc/systemd/timesyncd.conf.d/hall.conf").read_text().splitlines()[-2:] == ["[Time]", "NTP=10.1.2.3"]
    assert stat.S_IMODE((root / "etc/hall-appliance").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var/lib/hall-appliance").stat().st_mode) == 0o2770
    assert os.readlink(root / "opt/hall-appliance/current") == f"releases/{plan['version']}"
    # Commands that act on this machine are recorded, not run, under --root.
    host = [s for s in plan["steps"] if s["kind"] in ("run", "chown")]
    assert host and not any(s["done"] for s in host)
    assert ["systemctl", "daemon-reload"] in commands(plan)

    before = snapshot(root)
    again = run_installer("--root", str(root), "--skip-venv", "--no-apt")
    assert snapshot(root) == before
    assert not [s for s in again["steps"] if s["kind"] in ("write", "mkdir", "symlink")]
    assert ["systemctl", "daemon-reload"] not in commands(again)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dtparam=spi=on\n", None),
        ("[all]\ndtparam=spi=on\n", None),
        ("#dtparam=spi=on\n", "dtparam=spi=on\n"),
        # Under [cm4] it would apply to a CM4 only: append under an explicit [all] instead.
        ("[cm4]\ndtparam=spi=on\n", "[cm4]\ndtparam=spi=on\n\n[all]\n# The hall appliance's LED board (MAX7219) is on SPI0.\ndtparam=spi=on\n"),
        ("", "\n[all]\n# The hall appliance's LED board (MAX7219) is on SPI0.\ndtparam=spi=on\n"),
    ],
)
def test_spi_is_enabled_once_and_outside_conditional_sections(text, expected):
    sys.path.insert(0, str(SYSTEMD))
    try:
        import install
    finally:
        sys.path.remove(str(SYSTEMD))
    assert install.enable_spi(text) == expected
    if expected is not None:
        assert install.enable_spi(expected) is None


def test_a_bad_ntp_server_is_refused_with_the_fix(tmp_path):
    plan = run_installer("--root", str(tmp_path), "--dry-run", "--ntp-server", "ntp.example; rm -rf /", check=False)
    assert "is not a host name or address" in plan["error"] and "--ntp-server" in plan["error"]


def test_a_real_release_venv_is_made_from_the_checkout(tmp_path):
    # The one step the other tests only record: a real venv from the system python3 and pip
    # installing this checkout (--no-deps --no-index: offline; the dependencies are PyPI's).
    if not Path("/usr/bin/python3").exists() or subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True).returncode:
        pytest.skip("needs the distribution's python3 with python3-venv")
    source = tmp_path / "src"
    for name in ("appliance", "drivers", "services", "provisioning", "systemd", "docs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    root = tmp_path / "root"
    plan = run_installer(
        "--root", str(root), "--no-apt", "--platform", "debian", "--source", str(source), "--python", "/usr/bin/python3",
        "--pip-arg=--no-deps", "--pip-arg=--no-index", "--pip-arg=--no-build-isolation",
    )
    assert all(s["done"] for s in plan["steps"] if s["kind"] == "run" and ("venv" in s["argv"] or "pip" in s["argv"]))
    current = root / "opt/hall-appliance/current"
    assert (current / "bin/hall-appliance").exists()
    assert "include-system-site-packages = true" in (current / "pyvenv.cfg").read_text()
    version = subprocess.run([str(current / "bin/python"), "-c", "import appliance; print(appliance.__version__)"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == plan["version"]
    assert (current / "share/doc/hall-appliance/install.md").exists()
    # A second run keeps the release (no venv, no pip).
    again = run_installer("--root", str(root), "--no-apt", "--platform", "debian", "--source", str(source))
    assert not any("pip" in argv or "venv" in argv for argv in commands(again))


# --- the installer from a signed release bundle (--release) -------------------------------------
#
# A bundle made by the real `hall-provision release` from this checkout's wheelhouse, with the
# release key and wheelhouse fixtures of tests/test_update.py (built once per session).

from test_update import dependency_wheels, flip_a_byte_in_the_project_wheel, release_keys, rewrite_bundle  # noqa: E402,F401

# The installer itself runs with the system python3 and apt's python3-nacl on a device; here
# the project's venv stands in for it where the system python3 has no PyNaCl.
NACL_PYTHON = sys.executable


@pytest.fixture(scope="session")
def release_bundle(tmp_path_factory, release_keys, dependency_wheels) -> Path:
    out = tmp_path_factory.mktemp("release")
    done = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "release", "--key", str(release_keys[0]), "--out", str(out), "--wheelhouse", str(dependency_wheels)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [bundle] = out.glob("hall-appliance-*.tar")
    return bundle


def bundle_manifest(bundle: Path) -> dict:
    import tarfile

    with tarfile.open(bundle) as tar:
        return json.loads(tar.extractfile("manifest.json").read())


def test_a_release_bundle_verifies_in_the_dry_run_and_the_plan_installs_from_its_wheels(tmp_path, release_bundle, release_keys):
    root = tmp_path / "root"
    root.mkdir()
    manifest = bundle_manifest(release_bundle)
    plan = run_installer("--root", str(root), "--dry-run", "--no-apt", "--release", str(release_bundle), "--release-key", str(release_keys[1]), python=NACL_PYTHON)
    assert snapshot(root) == {}
    assert plan["version"] == manifest["version"]
    checks = {s["what"]: s for s in plan["steps"] if s["kind"] == "verify"}
    assert checks["signature"]["done"] and checks["wheels"]["done"]  # reading is not writing: both really checked
    assert f"{len(manifest['files'])} wheels" in checks["wheels"]["why"]
    pip = next(argv for argv in commands(plan) if "pip" in argv)
    # Only the verified wheels: no index, no pip configuration or PIP_* variable.
    assert pip[-5:] == ["--isolated", "--no-index", "--find-links", pip[-2], f"hall-appliance=={manifest['version']}"]
    assert release_bundle.name in pip[-2]
    assert "/etc/hall-appliance/release.pub" in written(plan)
    # The checks come before the first write.
    kinds = [s["kind"] for s in plan["steps"]]
    assert kinds.index("verify") < min(kinds.index(k) for k in ("write", "mkdir"))


def test_without_pynacl_a_dry_run_records_the_signature_check_for_the_install(tmp_path, release_bundle, release_keys):
    if subprocess.run([SYSTEM_PYTHON, "-c", "import nacl.signing"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has PyNaCl (python3-nacl): nothing to record")
    args = ("--root", str(tmp_path), "--no-apt", "--release", str(release_bundle), "--release-key", str(release_keys[1]))
    plan = run_installer("--dry-run", *args)
    checks = {s["what"]: s for s in plan["steps"] if s["kind"] == "verify"}
    assert not checks["signature"]["done"] and "python3-nacl is not importable here" in checks["signature"]["why"]
    assert checks["wheels"]["done"]
    assert "python3-nacl" in next(argv for argv in commands(run_installer("--root", str(tmp_path), "--dry-run")) if argv[:2] == ["apt-get", "install"])
    # Installing is refused until it can check the signature, with the fix.
    refused = run_installer(*args, "--skip-venv", check=False)
    assert "python3-nacl is not installed" in refused["error"] and "apt-get install python3-nacl" in refused["error"]
    assert snapshot(tmp_path) == {}


def test_a_release_is_installed_from_its_verified_wheels_with_its_key(tmp_path, release_bundle, release_keys):
    # One real venv from the bundle: its wheels only (--isolated --no-index), about 8 s.
    if not Path("/usr/bin/python3").exists() or subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True).returncode:
        pytest.skip("needs the distribution's python3 with python3-venv")
    from appliance.update import load_release_key, read_bundle

    root, scratch = tmp_path / "root", tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    args = ("--root", str(root), "--no-apt", "--platform", "debian", "--python", "/usr/bin/python3", "--release", str(release_bundle))
    plan = run_installer(*args, "--release-key", str(release_keys[1]), python=NACL_PYTHON, env=env)
    version = bundle_manifest(release_bundle)["version"]
    current = root / "opt/hall-appliance/current"
    assert os.readlink(current) == f"releases/{version}"
    got = subprocess.run([str(current / "bin/python"), "-c", "import appliance; print(appliance.__version__)"], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == version
    key = root / "etc/hall-appliance/release.pub"
    assert key.read_text() == release_keys[1].read_text() and stat.S_IMODE(key.stat().st_mode) == 0o644
    assert list(scratch.iterdir()) == []  # the temporary wheelhouse is gone
    assert all(s["done"] for s in plan["steps"] if s["kind"] == "verify")
    # The updater trusts the key the installer put there, for the same bundle.
    assert read_bundle(release_bundle, load_release_key(key)).version == version
    # Run again, the installed key is the default: nothing changes.
    before = snapshot(root)
    again = run_installer(*args, python=NACL_PYTHON, env=env)
    assert snapshot(root) == before
    assert not [s for s in again["steps"] if s["kind"] in ("write", "mkdir", "symlink")]


def add_a_file(name: str):
    def change(bundle: Path, dest: Path) -> Path:
        import io
        import tarfile

        copy = rewrite_bundle(bundle, dest, lambda n, d: d)
        with tarfile.open(copy, "a") as tar:
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        return copy

    return change


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b, d: rewrite_bundle(b, d, flip_a_byte_in_the_project_wheel), "does not have the sha256 its signed manifest gives"),
        (lambda b, d: rewrite_bundle(b, d, lambda n, data: data[:-10] if n.startswith("wheels/flask-") else data), "bytes, the manifest says"),
        (lambda b, d: rewrite_bundle(b, d, lambda n, data: None if n.startswith("wheels/flask-") else data), "is missing"),
        (lambda b, d: rewrite_bundle(b, d, lambda n, data: data.replace(b'"version": "0.1.0"', b'"version": "9.0.0"') if n == "manifest.json" else data), "manifest.sig does not match the county release key"),
        (add_a_file("wheels/evil-1.0-py3-none-any.whl"), "holds files its manifest does not list: wheels/evil-1.0-py3-none-any.whl"),
        (add_a_file("README.txt"), "holds 'README.txt', which no release bundle has"),
    ],
    ids=["altered-wheel", "shortened-wheel", "missing-wheel", "altered-manifest", "extra-wheel", "extra-file"],
)
def test_a_tampered_release_bundle_is_refused_and_nothing_is_written(tmp_path, release_bundle, release_keys, tamper, message):
    from appliance.update import BundleRefused, load_release_key, read_bundle

    bad = tamper(release_bundle, tmp_path / release_bundle.name)
    root = tmp_path / "root"
    root.mkdir()
    plan = run_installer("--root", str(root), "--no-apt", "--skip-venv", "--release", str(bad), "--release-key", str(release_keys[1]), check=False, python=NACL_PYTHON)
    assert message in plan["error"] and str(bad) in plan["error"]
    assert "copy the bundle again" in plan["error"] or "--release-key" in plan["error"]  # the fix
    assert snapshot(root) == {}
    assert not [s for s in plan["steps"] if s["kind"] not in ("skip", "note")]
    # The device's updater refuses the same bundle.
    with pytest.raises(BundleRefused):
        read_bundle(bad, load_release_key(release_keys[1]))


def test_a_release_bundle_signed_with_another_key_is_refused_and_nothing_is_written(tmp_path, release_bundle, release_keys):
    from provisioning.release import keygen

    keygen(tmp_path / "other.key", tmp_path / "other.pub")
    root = tmp_path / "root"
    (root / "etc/hall-appliance").mkdir(parents=True)
    shutil.copy(tmp_path / "other.pub", root / "etc/hall-appliance/release.pub")  # the device's key: not the one it was signed with
    before = snapshot(root)
    for extra in ((), ("--release-key", str(tmp_path / "other.pub"))):
        plan = run_installer("--root", str(root), "--no-apt", "--skip-venv", "--release", str(release_bundle), *extra, check=False, python=NACL_PYTHON)
        assert "manifest.sig does not match the county release key" in plan["error"] and "--release-key FILE" in plan["error"]
        assert snapshot(root) == before


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("private", "is the county's PRIVATE release key"),
        ("garbage", "is not a release public key"),
        ("missing", "no release key at"),
    ],
)
def test_a_bad_or_missing_release_key_is_refused_with_the_fix(tmp_path, release_bundle, release_keys, key, message):
    root = tmp_path / "root"
    root.mkdir()
    key_args = {"private": ("--release-key", str(release_keys[0])), "missing": ()}.get(key)
    if key == "garbage":
        (tmp_path / "garbage.pub").write_text("hall-release-public-v1 not-base64\n")
        key_args = ("--release-key", str(tmp_path / "garbage.pub"))
    plan = run_installer("--root", str(root), "--no-apt", "--skip-venv", "--release", str(release_bundle), *key_args, check=False, python=NACL_PYTHON)
    assert message in plan["error"]
    assert snapshot(root) == {}
