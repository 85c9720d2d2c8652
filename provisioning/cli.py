"""``hall-provision``: county IT's tools for enrolling devices and configuring the broker."""

from __future__ import annotations

import argparse
import sys

PLANNED = """\
commands (arriving with the provisioning work):
  init            create a county workspace: CA, broker certificate and configuration
  import          import devices from an inventory CSV
  bundle DEVICE   build one device's enrolment bundle
  broker-files    regenerate the Mosquitto password file and ACL
  revoke DEVICE   stop a device from connecting
  verify DEVICE   check a bundle against the running broker
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hall-provision",
        description="County IT tools for the hall appliances.",
        epilog=PLANNED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", help="the tool to run")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(f"hall-provision: '{args.command}' is not available yet\n\n{PLANNED}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
