"""``emberlink gateway``: run the Raspberry Pi gateway service.

emberlink gateway run --config /etc/emberlink/gateway.toml
emberlink gateway check --config FILE     validate the configuration and print the plan
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import GatewayConfig, load
from .errors import ConfigError, OutboxError


def _plan(cfg: GatewayConfig) -> str:
    from .poller import Link

    class _Null:
        def on_block(self, *a: object) -> None: ...
        def on_comms(self, *a: object) -> None: ...
        def on_device_fault(self, *a: object) -> None: ...

    class _Clock:
        def now_ms(self) -> int:
            return 0

    lines = [f"gateway {cfg.id}: {len(cfg.buses)} buses, {len(cfg.devices)} devices"]
    for b in cfg.buses:
        lk = Link(b, [d for d in cfg.devices if d.bus == b.id], _Null(), _Clock())
        where = f"{b.device} @ {b.baud}" if b.type == "rtu" else f"{b.host}:{b.port}"
        lines.append(
            f"  bus {b.id} {b.type} {where}: {len(lk.devices)} devices, {len(lk.reads)} reads, "
            f"load {lk.load():.0%}"
        )
        w = lk.check_budget()
        if w:
            lines.append(f"  WARNING {w}")
    return "\n".join(lines)


def _provision(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .provision import runner

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    return asyncio.run(
        runner.run(
            Path(args.state_dir),
            serial=args.serial,
            host=args.host,
            port=args.port,
            advertise_addresses=args.advertise,
            mdns_interfaces=args.mdns_interface,
        )
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="emberlink gateway", description="the EmberLink gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("run", "run the service"), ("check", "validate the configuration")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="configuration file (TOML)")
        p.add_argument("-v", "--verbose", action="store_true")
    pp = sub.add_parser("provision", help="provisioning mode (unclaimed), then the service")
    pp.add_argument("--state-dir", required=True, help="the gateway's state directory")
    pp.add_argument("--serial", help="serial on the label (first start only)")
    pp.add_argument("--host", default="0.0.0.0", help="provisioning API address")
    pp.add_argument("--port", type=int, default=8470, help="provisioning API port")
    pp.add_argument("--advertise", action="append", help="address to advertise over mDNS")
    pp.add_argument("--mdns-interface", action="append", help="mDNS interface address")
    pp.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "provision":
        return _provision(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we log failures by meaning
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"emberlink gateway: bad configuration: {e}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        from .detect import Detectors

        try:
            Detectors.from_config([(d.bus, d) for d in cfg.devices])
        except ConfigError as e:
            print(f"emberlink gateway: bad configuration: {e}", file=sys.stderr)
            return 2
        print(_plan(cfg))
        return 0
    from .service import Gateway

    try:
        gw = Gateway(cfg)
    except ConfigError as e:
        print(f"emberlink gateway: bad configuration: {e}", file=sys.stderr)
        return 2
    except OutboxError as e:
        print(f"emberlink gateway: {e}", file=sys.stderr)
        return 1
    asyncio.run(gw.run())
    return 0
