"""``hall-appliance``: run the daemon, the simulator, check a config, drive a running simulator.

No traceback ever reaches the person at the keyboard: every failure is one clear message and
an exit code (2 for a bad config or bad arguments, 1 for anything else).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .broker import BrokerUnavailable, PrivateBroker, mosquitto_binary
from .config import load_config
from .control import ControlClient
from .errors import ApplianceError, ConfigError

DEFAULT_CONFIG = "/etc/hall-appliance/appliance.toml"
SIMULATOR_CONFIG = "config/simulator.toml"

log = logging.getLogger("appliance")


def _default_config() -> str:
    env = os.environ.get("HALL_APPLIANCE_CONFIG")
    if env:
        return env
    return SIMULATOR_CONFIG if Path(SIMULATOR_CONFIG).exists() else DEFAULT_CONFIG


def _setup_logging(verbose: bool = False) -> None:
    # stdout, no timestamps of our own: journald adds them (and our clock may be wrong).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stdout,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _print_config_error(exc: ConfigError, path: str) -> None:
    print(f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    print(f"{args.path}: OK — device {config.device.id}, {len(config.windows)} window(s), broker {config.broker.host or 'none (queue only)'}")
    return 0


def _run_daemon(config, *, simulate: bool) -> int:
    from .daemon import Daemon

    daemon = Daemon(config, simulate=simulate)
    daemon.install_signal_handlers()
    page = None
    try:
        daemon.start()
        if simulate:
            page = _start_simulator_page(config)
            _print_simulator_help(config)
        daemon.serve()
    finally:
        if page:
            page.stop()
            page.app.extensions["hall"].close()
        daemon.stop()
    return 0


def _start_simulator_page(config):
    """The config page beside the simulated daemon (a thread here), and two accounts to sign in with."""
    from .web import create_app
    from .web.server import PageServer

    try:
        app = create_app({"HALL_CONFIG": config, "HALL_SIMULATOR": True})
    except ApplianceError as exc:
        print(f"the config page cannot start ({exc}); the simulated hall runs without it", flush=True)
        return None
    hall = app.extensions["hall"]
    # No default password anywhere: each simulator store gets its own, printed once.
    passwords = {name: hall.accounts.create_if_missing(name, role, by="simulator") for name, role in (("director", "director"), ("county-it", "county_it"))}
    page = PageServer(app, config.web)
    try:
        page.start()
    except OSError as exc:
        hall.close()
        print(f"the config page cannot listen on {config.web.host}:{config.web.port} ({exc}); try --web-port 0", flush=True)
        return None
    print(f"\nThe config page: {page.url}   the public complaint form: {page.url.rstrip('/')}/ts", flush=True)
    for name, password in passwords.items():
        if password:
            print(f"    sign in as {name:<10} password {password}", flush=True)
        else:
            print(f"    sign in as {name:<10} (its password was set before; reset it with: hall-appliance passwd {name} --config {config.source or 'CONFIG'} --generate)", flush=True)
    return page


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    config = load_config(args.config)
    return _run_daemon(config, simulate=False)


def cmd_simulate(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    config = load_config(args.config)
    if args.web_port is not None:
        config = dataclasses.replace(config, web=dataclasses.replace(config.web, port=args.web_port))
    config = _simulator_complaint_key(config)
    broker = None
    if not config.broker.host and not args.no_broker:
        if mosquitto_binary():
            broker = PrivateBroker(config.store.path.parent / "broker")
            try:
                broker.start()
            except BrokerUnavailable as exc:
                print(f"could not start a private Mosquitto ({exc}); events are recorded and queued", file=sys.stderr)
                broker = None
            else:
                config = dataclasses.replace(config, broker=dataclasses.replace(config.broker, host=broker.host, port=broker.port))
                print(f"private Mosquitto on {broker.host}:{broker.port}. Watch the events with:\n\n    {broker.sub_command()}\n", flush=True)
        else:
            print("no broker configured and mosquitto is not installed: events are recorded and queued (apt-get install mosquitto)", flush=True)
    try:
        return _run_daemon(config, simulate=True)
    finally:
        if broker:
            broker.stop()


def _simulator_complaint_key(config):
    """A simulated hall without a supervisor key gets a throwaway one beside its store.

    So the complaint box is open in `make run`, and what it seals can be opened with
    `hall-provision complaints open`. A real device's key comes only from its bundle.
    """
    if config.complaints.public_key is not None:
        return config
    from provisioning.complaints import keygen

    private, public = config.store.path.parent / "simulator-supervisor.key", config.store.path.parent / "simulator-supervisor.pub"
    if not public.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        private.unlink(missing_ok=True)
        keygen(private, public)
    print(
        f"complaints are sealed to a simulator key; open them with:\n\n    hall-provision complaints open --key {private} --file CAPTURE\n",
        flush=True,
    )
    return dataclasses.replace(config, complaints=dataclasses.replace(config.complaints, public_key=public))


def _print_simulator_help(config) -> None:
    w = config.windows[0] if config.windows else None
    example = f"{w.id} {w.buttons[0][0]}" if w and w.buttons else "WINDOW LEVEL"
    print(
        "\nThe simulated hall is running. From another shell:\n\n"
        f"    hall-appliance sim press {example}      # press a rating button\n"
        "    hall-appliance sim status\n"
        "    hall-appliance sim events\n\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )


def cmd_sim(args: argparse.Namespace) -> int:
    socket_path = args.socket
    if not socket_path:
        socket_path = load_config(args.config).control.socket
    client = ControlClient(socket_path)
    if args.action == "press":
        result = client.call("press", window=args.window, level=args.level)
        if result["recorded"]:
            print(f"pressed {result['level']} at {result['window']} (seq {result['seq']})")
        else:
            print(f"pressed {result['level']} at {result['window']}: not recorded (the button is held or jammed; see hall-appliance sim status)")
    elif args.action == "badge":
        result = client.call("badge", card=args.card)
        print(json.dumps(result, ensure_ascii=False))
    elif args.action == "status":
        print(json.dumps(client.call("status"), ensure_ascii=False, indent=2))
    elif args.action == "events":
        for event in reversed(client.call("events", limit=args.limit)):
            print(f"{event['seq']:>6} {event['stream']:<9} {event['type']:<18} {event['outbox_state']:<9} {json.dumps(event['data'], ensure_ascii=False)}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    config = load_config(args.config)
    if args.port is not None:
        config = dataclasses.replace(config, web=dataclasses.replace(config.web, port=args.port))
    from .web import create_app
    from .web.server import PageServer

    app = create_app({"HALL_CONFIG": config})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    page = PageServer(app, config.web)
    try:
        page.start()
        print(f"the config page is at {page.url}", flush=True)
        stop.wait()
    finally:
        page.stop()
        app.extensions["hall"].close()
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    import getpass

    from .accounts import AccountError, Accounts, generate_password, password_problem
    from .store import Store

    config = load_config(args.config)
    if args.generate:
        password = generate_password()
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.username}: ")
        problem = password_problem(password, args.username)
        if problem:
            print(f"hall-appliance passwd: {problem}; nothing changed", file=sys.stderr)
            return 2
        if getpass.getpass("the same again: ") != password:
            print("hall-appliance passwd: the two passwords differ; nothing changed", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    # recover=False: only the daemon moves a damaged store aside.
    store = Store(config.store.path, reserve_mb=0, recover=False)
    try:
        # A generated password is read off a screen by someone else: its holder sets their own.
        account = Accounts(store).set_password(args.username, password, by=f"cli:{getpass.getuser()}", role=args.role, must_change=args.generate)
    except AccountError as exc:
        print(f"hall-appliance passwd: {exc}; nothing changed", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.generate:
        print(f"{account.username} ({account.role}): new password {password} (to be changed at the first sign-in)")
    else:
        print(f"{account.username} ({account.role}): password set")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import run

    return run(args)


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hall-appliance", description="The township service hall appliance.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon on the device (systemd starts this)")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="run the whole appliance with simulated hardware")
    sim.add_argument("--config", default=SIMULATOR_CONFIG, help=f"config file (default {SIMULATOR_CONFIG})")
    sim.add_argument("--no-broker", action="store_true", help="do not start a private Mosquitto; record and queue only")
    sim.add_argument("--web-port", type=int, metavar="PORT", help="serve the config page on PORT instead of [web] port (0: any free port)")
    sim.add_argument("-v", "--verbose", action="store_true")
    sim.set_defaults(func=cmd_simulate)

    check = sub.add_parser("check-config", help="list every problem in a config file (exit 2 if any)")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

    ctl = sub.add_parser("sim", help="drive a running appliance: press buttons, swipe badges, read status")
    ctl.add_argument("--config", default=_default_config(), help="config whose control socket to use")
    ctl.add_argument("--socket", help="control socket path (overrides --config)")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    press = actions.add_parser("press", help="press WINDOW's LEVEL button")
    press.add_argument("window")
    press.add_argument("level", help="very_satisfied, satisfied, basically_satisfied, dissatisfied or very_dissatisfied")
    badge = actions.add_parser("badge", help="swipe a badge")
    badge.add_argument("card")
    actions.add_parser("status", help="print the live status")
    events = actions.add_parser("events", help="print the latest events")
    events.add_argument("-n", "--limit", type=int, default=20)
    ctl.set_defaults(func=cmd_sim)

    web = sub.add_parser("web", help="serve the local config page (its own unprivileged process beside the daemon)")
    web.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    web.add_argument("--port", type=int, help="listen on PORT instead of [web] port (0: any free port)")
    web.add_argument("-v", "--verbose", action="store_true")
    web.set_defaults(func=cmd_web)

    pw = sub.add_parser("passwd", help="set or reset a config-page password (read from stdin, or --generate)")
    pw.add_argument("username")
    pw.add_argument("--role", choices=("director", "county_it"), help="the account's role (needed to create it)")
    pw.add_argument("--generate", action="store_true", help="make a random password, print it, and have it changed at the first sign-in")
    pw.add_argument("--config", default=_default_config(), help="config whose store holds the accounts")
    pw.set_defaults(func=cmd_passwd)

    en = sub.add_parser("enroll", help="install the bundle county IT made for this device (hall-provision bundle)")
    en.add_argument("bundle", nargs="?", metavar="BUNDLE", help="the bundle, hall-bundle-DEVICE.tar.gz")
    en.add_argument("--from-boot", action="store_true", help="enrol the hall-bundle*.tar.gz on the boot partition, then delete it; nothing there: exit 0")
    en.add_argument("--boot-dir", default="/boot/firmware", metavar="DIR", help="the boot partition (default /boot/firmware)")
    en.add_argument("--etc", default="/etc/hall-appliance", metavar="DIR", help="where the config and secrets go (default /etc/hall-appliance)")
    en.add_argument("--serial-file", default="/proc/device-tree/serial-number", metavar="PATH", help="this Pi's serial number, checked against the bundle's")
    en.add_argument("--force", action="store_true", help="enrol even if the device is enrolled as another id or the bundle names another Pi's serial")
    en.set_defaults(func=cmd_enroll)

    _add_update_parser(sub)

    ver = sub.add_parser("version", help="print the software version")
    ver.set_defaults(func=cmd_version)
    return p


def _add_update_parser(sub: argparse._SubParsersAction) -> None:
    """``hall-appliance update`` (appliance/update.py, imported only when it runs: the daemon never needs it)."""
    p = sub.add_parser(
        "update",
        help="install a signed release bundle, rolling back by itself if it does not start (docs/updates.md)",
        description="Verify a release bundle signed by the county, install it beside the running release, switch to it, and switch back if it does not become healthy.",
        epilog="Exit status: 0 installed (or nothing newer to install), 1 refused or failed with nothing changed, 2 bad arguments, 3 rolled back to the old release, 4 neither release would start.",
    )
    p.add_argument("bundle", nargs="?", type=Path, help="the bundle file (hall-appliance-<version>.tar)")
    p.add_argument("--from-dir", type=Path, metavar="DIR", help="install the newest valid bundle in DIR (a USB stick or the boot partition)")
    p.add_argument("--url", help="download the bundle from the county's file server (with --sha256)")
    p.add_argument("--sha256", help="the bundle's sha256, with --url")
    p.add_argument("--size", type=int, help="the bundle's size in bytes, with --url (optional)")
    p.add_argument("--resume", action="store_true", help="roll back an update that a power cut or a restart interrupted after the switch (hall-update-resume.service runs this at boot); nothing to do: exit 0")
    p.add_argument("--request", type=Path, metavar="FILE", help="carry out an update.install request the daemon left (systemd's hall-update unit passes this)")
    p.add_argument("--ca-file", metavar="PATH", help="a CA certificate to trust besides the system's for an https file server (default with --request: the device's county CA, [broker.tls] ca_file or ROOT/etc/hall-appliance/ca.crt)")
    p.add_argument("--root", type=Path, default=Path("/"), help="the device's root (default /; tests use a temporary directory)")
    p.add_argument("--config", type=Path, help="the appliance config (default ROOT/etc/hall-appliance/appliance.toml)")
    p.add_argument("--force", action="store_true", help="county IT: install even if the bundle is not newer than the running release")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds the new release has to report READY and be healthy (default 60)")
    p.set_defaults(func=cmd_update)


def cmd_update(args: argparse.Namespace) -> int:
    from .update import cmd_update as update

    return update(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        _print_config_error(exc, exc.path or "the config")
        return 2
    except ApplianceError as exc:
        print(f"hall-appliance: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hall-appliance: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the person, the details in the log
        log.debug("unexpected failure", exc_info=True)
        print(f"hall-appliance: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
