# mypy: ignore-errors
# (CPython, not board code: this line only keeps it out of the MicroPython-stubs run of
#  firmware/mypy.ini; without it the file passes plain mypy against CPython's typeshed.)
"""Build the board: its configuration from the Pi's site file, and .mpy files with a size report.

Runs on CPython (the board has no TOML parser)::

    python firmware/board/build.py config --site site.toml --out config.json [--data-dir /data]
    python firmware/board/build.py mpy [--out build/board] [--arch armv6m --arch xtensawin]

``config`` reads the same site file and device profiles the Pi gateway reads (edge/config.py,
protocol/profiles/*.toml, validated by protocol/profile.py), plans the block reads exactly as
the Pi does (``profile.plan_reads`` per point class) and writes the JSON the board loads
(firmware/board/conf.py). ``mpy`` compiles everything the board imports with ``mpy-cross``
for RP2040 (armv6m) and ESP32 (xtensawin) into ``<out>/<arch>/emberlink/...`` and prints the
size of each module, source and compiled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARCHES = ("armv6m", "xtensawin")
ALL_ARCHES = (*ARCHES, "x64")  # x64: the unix port on this host (memory figures)
# firmware modules a board never imports: the golden-vector runner, the CPython feed path
NOT_ON_BOARD = ("golden", "cpyfeed")
# what the board imports: (package dir in the repository, package path on the board)
BOARD_MODULES = {
    "protocol": ["__init__", "errors", "codes", "cbor", "messages", "mac", "topics"],
    "firmware": sorted(
        p.stem for p in (ROOT / "firmware").glob("*.py") if p.stem not in NOT_ON_BOARD
    ),
    "firmware/board": ["__init__", "compat", "enc", "mqtt", "client", "modbus_rtu", "outbox",
                       "points", "hw", "conf", "commands", "cloudack", "app"],
}  # fmt: skip
KEEP_POINT = (
    "id", "name", "address", "type", "words", "table", "byte_order", "word_order", "scale",
    "exp", "class", "part", "unit", "detector", "detectors", "bits", "values", "open_below",
    "short_above", "break_value",
)  # fmt: skip


def board_profile(prof: dict[str, Any]) -> dict[str, Any]:
    """A validated profile, trimmed for the board, with its read plan (indices into points)."""
    from emberlink.protocol import profile as schema

    points = [{k: p[k] for k in KEEP_POINT if k in p} for p in prof["points"]]
    index = {id(p): i for i, p in enumerate(prof["points"])}
    reads = []
    for cls in ("status", "telemetry"):
        pts = [p for p in prof["points"] if p["class"] == cls]
        for block in schema.plan_reads(pts, schema.MAX_READ_REGS, prof["max_gap"]):
            reads.append({"class": cls, "table": block["table"], "address": block["address"],
                          "count": block["count"],
                          "points": [index[id(p)] for p in block["points"]]})  # fmt: skip
    return {"name": prof["name"], "sys": prof["sys"], "part": prof["part"],
            "poll": prof["poll"], "points": points, "reads": reads}  # fmt: skip


def board_config(site: Path, data_dir: str | None = None, clock_synced: bool = False,
                 **overrides: Any) -> dict[str, Any]:  # fmt: skip
    """The board configuration for a Pi site file (RTU buses only: a board has no TCP bus)."""
    from emberlink.edge import config as gwconfig

    g = gwconfig.load(site)
    buses = []
    for b in g.buses:
        if b.type != "rtu":
            raise gwconfig.ConfigError(f"bus {b.id}", "a board polls RTU buses only")
        deadline = b.timeout_ms if b.timeout_ms is not None else b.turnaround_ms + 250
        buses.append({"id": b.id, "device": b.device, "baud": b.baud, "char_bits": b.char_bits,
                      "timeout_ms": deadline, "down_after": b.down_after})  # fmt: skip
    profiles = {}
    devices = []
    for d in g.devices:
        profiles[d.profile["name"]] = board_profile(d.profile)
        devices.append({"bus": d.bus, "unit": d.unit, "name": d.name, "profile": d.profile["name"],
                        "status_ms": d.status_ms, "telemetry_ms": d.telemetry_ms})  # fmt: skip
    m = g.mqtt
    cfg: dict[str, Any] = {
        "gw": g.id,
        "serial": g.serial,
        "heartbeat_s": g.heartbeat_s,
        "series_s": g.series_s,
        "data_dir": data_dir or str(g.data_dir),
        "clock_synced": clock_synced,
        "mqtt": {"host": m.host, "port": m.port, "keepalive_s": m.keepalive_s,
                 "username": m.username, "password": m.password,
                 "retry_ms": int(m.puback_timeout_s * 1000),
                 "backoff_min_ms": int(m.backoff_min_s * 1000),
                 "backoff_max_ms": int(m.backoff_max_s * 1000),
                 "cloud_ack": m.cloud_ack,
                 "cloud_ack_timeout_ms": int(m.cloud_ack_timeout_s * 1000)},
        "outbox": {"max_telemetry": min(g.outbox.max_telemetry, 512), "seg_records": 64,
                   "batch_max_events": min(g.outbox.batch_max_events, 32)},
        "buses": buses,
        "devices": devices,
        "profiles": profiles,
    }  # fmt: skip
    if m.mac_key:
        cfg["mqtt"]["mac_key_hex"] = m.mac_key.hex()
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    return str(here) if here.exists() else (shutil.which("mpy-cross") or "mpy-cross")


def build_mpy(out: Path, arches: tuple[str, ...] = ARCHES) -> list[tuple[str, int, dict[str, int]]]:
    """Compile the board's modules; returns [(module, source bytes, {arch: mpy bytes})]."""
    rows = []
    for pkg, mods in BOARD_MODULES.items():
        dest_pkg = "emberlink/" + pkg
        for mod in mods:
            src = ROOT / pkg / (mod + ".py")
            sizes = {}
            for arch in arches:
                dest = out / arch / dest_pkg / (mod + ".mpy")
                dest.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([mpy_cross(), "-march=" + arch, "-o", str(dest), str(src)],
                               check=True)  # fmt: skip
                sizes[arch] = dest.stat().st_size
            rows.append((dest_pkg + "/" + mod, src.stat().st_size, sizes))
            plain = out / "src" / dest_pkg / (mod + ".py")  # for freezing (manifest.py)
            plain.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, plain)
    (out / "src" / "emberlink" / "__init__.py").write_text("")
    for arch in arches:
        (out / arch / "emberlink" / "__init__.py").write_text("")
        shutil.copy(ROOT / "firmware" / "board" / "main.py", out / arch / "main.py")
    return rows


def report(rows: list[tuple[str, int, dict[str, int]]], arches: tuple[str, ...]) -> str:
    head = f"{'module':<38} {'source':>8} " + " ".join(f"{a:>10}" for a in arches)
    lines = [head, "-" * len(head)]
    for name, src, sizes in rows:
        lines.append(f"{name:<38} {src:>8} " + " ".join(f"{sizes[a]:>10}" for a in arches))
    tot = [sum(r[2][a] for r in rows) for a in arches]
    lines.append(f"{'total':<38} {sum(r[1] for r in rows):>8} " +
                 " ".join(f"{t:>10}" for t in tot))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="board configuration JSON from a Pi site file")
    c.add_argument("--site", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--data-dir")
    c.add_argument("--clock-synced", action="store_true", help="the host clock is NTP-synced")
    c.add_argument(
        "--uart",
        action="append",
        default=[],
        metavar="BUS=ID[,TX,RX[,DE]]",
        help="on a board: bus BUS is machine.UART(ID) on these pins (DE: RS-485 enable)",
    )
    m = sub.add_parser("mpy", help="compile the board's modules with mpy-cross")
    m.add_argument("--out", default=str(ROOT / "build" / "board"))
    m.add_argument("--arch", action="append", choices=ALL_ARCHES)
    args = ap.parse_args(argv)
    if args.cmd == "config":
        try:
            cfg = board_config(Path(args.site), args.data_dir, args.clock_synced)
            for spec in args.uart:
                bus_id, _, pins = spec.partition("=")
                nums = [int(x) for x in pins.split(",")]
                bus = next(b for b in cfg["buses"] if b["id"] == int(bus_id))
                bus.pop("device")
                bus["uart"] = nums[0]
                for k, v in zip(("tx", "rx", "de"), nums[1:], strict=False):
                    bus[k] = v
        except StopIteration:
            print(f"build.py: --uart names a bus the site does not have: {args.uart}",
                  file=sys.stderr)  # fmt: skip
            return 2
        except ValueError as e:
            print(f"build.py: {e}", file=sys.stderr)
            return 2
        Path(args.out).write_text(json.dumps(cfg, indent=1))
        print(f"wrote {args.out}: {len(cfg['devices'])} devices, {len(cfg['profiles'])} profiles")
        return 0
    arches = tuple(args.arch or ARCHES)
    rows = build_mpy(Path(args.out), arches)
    print(report(rows, arches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
