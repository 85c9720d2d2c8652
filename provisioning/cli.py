"""``hall-provision``: county IT's tools for enrolling devices and configuring the broker."""

from __future__ import annotations

import argparse
import sys

AVAILABLE = """\
commands:
  complaints keygen   make the complaint supervisor's key pair (docs/complaints.md)
  complaints open     print sealed complaints decrypted, from a capture file or the broker

"""

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["complaints"]:
        from .complaints import main as complaints

        return complaints(argv[1:], prog="hall-provision complaints")
    parser = argparse.ArgumentParser(
        prog="hall-provision",
        description="County IT tools for the hall appliances.",
        epilog=AVAILABLE + PLANNED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", help="the tool to run")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(f"hall-provision: '{args.command}' is not available yet\n\n{AVAILABLE}{PLANNED}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
