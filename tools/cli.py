"""The ``emberlink`` command: one entry point, one module per sub-command.

Each sub-command lives in its own module under ``emberlink.tools`` (or another room) and
exposes ``main(argv: list[str]) -> int``. This file only maps names to modules, so adding a
command never touches another's code, and ``emberlink --help`` lists them all.

Exit codes across all sub-commands: 0 success, 1 the operation failed (a device did not
answer, a check failed), 2 bad input or usage (with a one-line reason on stderr).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "decode": ("emberlink.tools.codec_cli", "print a CBOR message as readable JSON"),
    "encode": ("emberlink.tools.codec_cli", "turn that JSON back into identical CBOR bytes"),
    "bench": ("emberlink.tools.bench", "run a benchmark: protocol | core"),
    "replay": ("emberlink.tools.replay", "run a configuration's detectors over a recorded trace"),
    "gateway": ("emberlink.edge.cli", "run the Raspberry Pi gateway service"),
    "sim": ("emberlink.tools.simulator", "run a simulated site of Modbus devices"),
    "cloud": ("emberlink.cloud.cli", "cloud registry: serve | ingest | migrate"),
    "demo": ("emberlink.tools.demo", "the main job: a simulated site end to end"),
    "maint": ("emberlink.tools.maint", "maintenance records for contractors in the field"),
    "discover": ("emberlink.tools.discover", "list the EmberLink gateways on the LAN (mDNS)"),
    "commission": ("emberlink.tools.commission", "configure, scan and commission a gateway"),
    "claim": ("emberlink.tools.claim", "bind a gateway to the cloud with its own credentials"),
}


def usage() -> str:
    lines = ["usage: emberlink <command> [options]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("emberlink <command> --help shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"emberlink: unknown command {name!r} (see emberlink --help)", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"emberlink: command {name!r} is not available yet", file=sys.stderr)
            return 2
        raise
    try:
        rc: int = module.main(args if module_name.endswith("codec_cli") else args[1:])
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
