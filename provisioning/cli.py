"""``hall-provision``: county IT's tools for enrolling devices and configuring the broker.

No traceback reaches the person at the keyboard: every refusal is one message naming the
field, the value and the fix. Exit status: 0 done, 1 a check failed (verify) or the system
refused (a file, the network), 2 bad input (arguments, inventory rows, workspace).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .complaints import ProvisionError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WORKSPACE_ENV = "HALL_PROVISION_WORKSPACE"

COMMANDS = """\
a county's day (docs/provisioning.md):
  init DIR --county ID --broker-host HOST   create the county workspace: CA, broker certificate and config
  import inventory.csv                      add devices from a spreadsheet (all rows or none)
  add --device ID --township ID --hall NAME add one device
  list                                      show the inventory
  bundle DEVICE... | --all                  build each device's enrolment bundle (rotates its broker password)
  broker-files                              regenerate the Mosquitto password file, ACL and mosquitto.conf
  revoke DEVICE                             stop a device from connecting (then reload Mosquitto)
  verify BUNDLE [--broker HOST:PORT]        check a bundle against the running broker
  complaints keygen                         make the complaint supervisor's key pair (docs/complaints.md)
  complaints open                           print sealed complaints decrypted
  release-keygen --private-out --public-out make the county's release signing key pair (docs/updates.md)
  release --key KEY --out DIR [--wheelhouse DIR]  build a signed software release bundle

every command but init works on the workspace in --workspace DIR, or $HALL_PROVISION_WORKSPACE,
or the current directory. On the device: hall-appliance enroll BUNDLE (or --from-boot).
"""


def _workspace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-w", "--workspace", metavar="DIR", default=os.environ.get(WORKSPACE_ENV, "."), help=f"the county workspace (default ${WORKSPACE_ENV}, else the current directory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hall-provision", description="County IT tools for the hall appliances.", epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a county workspace", description="Create a county workspace: its CA (key 0600), the broker's certificate and Mosquitto configuration, the service accounts' passwords, and the standard kit every device's config ends with. Never overwrites a workspace.")
    p.add_argument("dir", metavar="DIR", help="a new or empty directory (keep it on an encrypted volume: it holds the CA key)")
    p.add_argument("--county", required=True, metavar="ID", help="the county (旗/县/区) id, e.g. xilinhot")
    p.add_argument("--broker-host", required=True, metavar="HOST", help="the broker's host name or address as devices reach it (it goes into the broker's certificate)")
    p.add_argument("--broker-port", type=int, default=8883, metavar="PORT", help="the broker's TLS port (default 8883)")
    p.add_argument("--ntp-server", metavar="HOST", help="the county's NTP server (halls on the government network may reach no public one)")
    p.add_argument("--broker-dir", default="/etc/mosquitto/hall", metavar="DIR", help="where the broker files will live on the broker host (default /etc/mosquitto/hall)")
    p.add_argument("--web-port", type=int, default=8080, metavar="PORT", help="the config page's port on every device (default 8080)")

    p = sub.add_parser("import", help="add devices from an inventory CSV (all or nothing)", description="Add every device of a CSV whose first row names the columns: device, township, hall (required); county, address, serial (optional). Every bad row is reported with its line and field, and nothing is imported while any row is bad.")
    p.add_argument("csv", metavar="inventory.csv")
    _workspace_option(p)

    p = sub.add_parser("add", help="add one device")
    p.add_argument("--device", required=True, metavar="ID", help="the device id: its MQTT username and topic level, e.g. xlgl-baiyinxile-01")
    p.add_argument("--township", required=True, metavar="ID", help="the township (苏木/镇/街道) id")
    p.add_argument("--hall", required=True, metavar="NAME", help="the hall's name, e.g. 白音锡勒苏木政务服务中心")
    p.add_argument("--county", metavar="ID", help="the county id (default: the workspace's)")
    p.add_argument("--address", metavar="IP", help="the hall's fixed address, if it has one (goes into the page's certificate)")
    p.add_argument("--serial", metavar="PI-SERIAL", help="the Pi's serial (cat /proc/device-tree/serial-number): the bundle is then refused on any other Pi")
    _workspace_option(p)

    p = sub.add_parser("list", help="show the inventory")
    _workspace_option(p)

    p = sub.add_parser("bundle", help="build device bundles", description="Build each device's enrolment bundle (0600, in bundles/ unless --out) and its enrolment sheet (sheets/, 0600), and refresh the broker files. A new bundle rotates the device's broker password: the previous one stops working at the broker's next reload.")
    p.add_argument("devices", nargs="*", metavar="DEVICE")
    p.add_argument("--all", action="store_true", help="every active device that has no bundle yet")
    p.add_argument("--out", metavar="FILE", help="where to write the bundle (one DEVICE only); keep the name hall-bundle*.tar.gz for first-boot enrolment")
    p.add_argument("--serial", metavar="PI-SERIAL", help="record the Pi's serial first (a replacement Pi for the same hall); one DEVICE only")
    _workspace_option(p)

    p = sub.add_parser("broker-files", help="regenerate the Mosquitto password file, ACL and config from the inventory")
    _workspace_option(p)

    p = sub.add_parser("revoke", help="stop a device from connecting")
    p.add_argument("device", metavar="DEVICE")
    _workspace_option(p)

    p = sub.add_parser("verify", help="check a bundle against the running broker (PASS/FAIL per check)")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--broker", metavar="HOST:PORT", help="the broker to check (default: the bundle's [broker] host and port)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help=argparse.SUPPRESS)

    sub.add_parser("complaints", help="the complaint supervisor's keys (hall-provision complaints --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["complaints"]:
        from .complaints import main as complaints

        return complaints(argv[1:], prog="hall-provision complaints")
    if argv[:1] in (["release"], ["release-keygen"]):
        from .release import main as release  # signed software releases (docs/updates.md)

        return release(argv, prog="hall-provision")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        return COMMAND_FUNCTIONS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except ProvisionError as exc:
        print(f"hall-provision {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"hall-provision {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - one line for the person, never a traceback
        print(f"hall-provision {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_init(args: argparse.Namespace) -> int:
    from .workspace import init

    ws = init(args.dir, args.county, args.broker_host, args.broker_port, args.ntp_server, broker_dir=args.broker_dir, web_port=args.web_port)
    s = ws.settings()
    print(f"county workspace {ws.root} for {s.county}: broker {s.broker_host}:{s.broker_port}" + (f", NTP {s.ntp_server}" if s.ntp_server else ", no NTP server (give one before bundling: edit workspace.toml)"))
    print(f"  CA           {ws.ca_cert_path} (key {ws.ca_key_path}, 0600: keep the workspace on an encrypted volume, backed up)")
    print(f"  broker       {ws.broker_dir}/ (server certificate for {s.broker_host}; passwords and acl come with broker-files)")
    print(f"  services     {ws.root / 'services'}/*.password (0600): svc_aggregator, svc_publisher, svc_supervisor, svc_dashboard")
    print(f"  standard kit {ws.resolve(s.device_template)} (windows, pins, board: edit to match the county's boxes)")
    print(f"  complaints   put the supervisor's public key at {ws.resolve(s.complaints_public_key)}:")
    print(f"               hall-provision complaints keygen --public-out {ws.resolve(s.complaints_public_key)} --private-out /secure/supervisor.key")
    print("next: hall-provision import inventory.csv, then bundle --all, then broker-files")
    return EXIT_OK


def _open(args: argparse.Namespace):
    from .workspace import Workspace

    ws = Workspace(args.workspace)
    ws.settings()  # NotAWorkspace, with the fix, before anything else
    return ws


def cmd_import(args: argparse.Namespace) -> int:
    from .inventory import import_csv
    from .workspace import now_text

    ws = _open(args)
    with ws.lock():
        existing = ws.devices()
        devices, note = import_csv(Path(args.csv), ws.settings().county, existing, now_text())
        ws.save_devices(existing + devices)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"imported {len(devices)} device{'s' if len(devices) != 1 else ''} from {args.csv}; the inventory holds {len(existing) + len(devices)}")
    for d in devices:
        print(f"  {d.id:<32} {d.township:<20} {d.hall}")
    print("next: hall-provision bundle --all")
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from .inventory import Candidate, check_candidates
    from .workspace import now_text

    ws = _open(args)
    values = {"device": args.device, "township": args.township, "hall": args.hall, "county": args.county or "", "address": args.address or "", "serial": args.serial or ""}
    with ws.lock():
        existing = ws.devices()
        (device,) = check_candidates([Candidate(None, values)], ws.settings().county, existing, now_text(), source="the device")
        ws.save_devices(existing + [device])
    print(f"added {device.id} ({device.hall}, township {device.township}); next: hall-provision bundle {device.id}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    ws = _open(args)
    devices = ws.devices()
    for d in devices:
        state = f"revoked {d.revoked}" if d.revoked else (f"bundled {d.bundled}" if d.bundled else "no bundle yet")
        print(f"{d.id:<32} {d.township:<20} {state:<36} {d.address or '-':<15} {d.serial or '-':<16} {d.hall}")
    print(f"{len(devices)} device{'s' if len(devices) != 1 else ''}, {sum(1 for d in devices if d.revoked)} revoked")
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    from .broker_files import install_hint
    from .bundle import build_bundle

    ws = _open(args)
    ids = list(args.devices)
    if args.all:
        if ids:
            raise ProvisionError("give DEVICE ids or --all, not both")
        ids = [d.id for d in ws.devices() if d.active and not d.bundled]
        if not ids:
            print("every active device has a bundle already; name a DEVICE to build a new one (it rotates the broker password)")
            return EXIT_OK
    if not ids:
        raise ProvisionError("name the DEVICE(s) to bundle, or give --all")
    if (args.out or args.serial) and len(ids) != 1:
        raise ProvisionError(f"--out and --serial need exactly one DEVICE; {len(ids)} were given")
    for device_id in ids:
        built = build_bundle(ws, device_id, out=args.out, serial=args.serial)
        print(built.sheet)
        print(f"(this sheet is also in {built.sheet_path}, mode 0600)\n")
    print(f"broker files refreshed in {ws.broker_dir}/; {install_hint(ws)}")
    return EXIT_OK


def cmd_broker_files(args: argparse.Namespace) -> int:
    from .broker_files import install_hint, write_broker_files

    ws = _open(args)
    with ws.lock():
        files = write_broker_files(ws)
    print(f"wrote {files.directory}/passwords, acl and mosquitto.conf: {len(files.devices)} device(s), {len(files.services)} service accounts")
    if files.without_password:
        print(f"  no bundle yet, so no password (they cannot log in): {', '.join(files.without_password)}")
    if files.revoked:
        print(f"  revoked, left out: {', '.join(files.revoked)}")
    print(install_hint(ws))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    from .broker_files import install_hint, revoke_device

    ws = _open(args)
    device, _ = revoke_device(ws, args.device)
    print(f"revoked {device.id} ({device.hall}) at {device.revoked}: no password and no ACL entry in {ws.broker_dir}/")
    print(f"it can still connect until the broker reloads; {install_hint(ws)}")
    print("(a reload also disconnects it if it is connected now)")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import CHECKS, verify

    checks = verify(args.bundle, args.broker, timeout=args.timeout)
    passed = sum(1 for c in checks if c.passed)
    ok = tuple(c.name for c in checks) == CHECKS and all(c.passed for c in checks)
    print(f"verify: {passed} of {len(checks)} checks passed" + ("" if ok else "; FAILED"))
    return EXIT_OK if ok else EXIT_FAILED


COMMAND_FUNCTIONS = {
    "init": cmd_init,
    "import": cmd_import,
    "add": cmd_add,
    "list": cmd_list,
    "bundle": cmd_bundle,
    "broker-files": cmd_broker_files,
    "revoke": cmd_revoke,
    "verify": cmd_verify,
}


if __name__ == "__main__":
    sys.exit(main())
