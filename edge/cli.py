"""``emberlink gateway``: run the Raspberry Pi gateway service.

emberlink gateway run --config /etc/emberlink/gateway.toml
emberlink gateway check --config FILE     validate the configuration and print the plan
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

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


def label_text(state_dir: Path, serial: str | None = None) -> dict[str, str]:
    """The label's fields, made as at first start when absent (the factory runs this before the
    gateway ever starts): serial, pairing code and the SHA-256 of the provisioning API's TLS
    certificate. The fingerprint on the label lets an installer pin the certificate from a
    source an attacker on the LAN cannot forge (mDNS can be)."""
    from .provision.store import ProvisionStore
    from .provision.tls import cert_fingerprint, ensure_cert

    store = ProvisionStore(state_dir, serial)
    if serial is not None and serial != store.serial:
        raise ValueError(f"this state directory belongs to serial {store.serial}, not {serial}")
    ensure_cert(store.dir, store.serial)
    fp = cert_fingerprint(store.dir) or ""
    return {"serial": store.serial, "pairing_code": store.pairing_code, "cert": fp}


def _label(args: argparse.Namespace) -> int:
    from .provision.tls import TlsError

    try:
        row = label_text(Path(args.state_dir), args.serial)
    except (OSError, ValueError, TlsError) as e:
        print(f"emberlink gateway label: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(row))
        return 0
    fp = row["cert"]
    groups = " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))
    print(f"serial        {row['serial']}")
    print(f"pairing code  {row['pairing_code']}")
    print(f"certificate   {groups[:39]}")
    print(f"  (SHA-256)   {groups[40:]}")
    print(f"emberlink commission status --gateway HOST:8470 --fingerprint {fp}")
    return 0


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
    lp = sub.add_parser(
        "label",
        help="print the label (serial, pairing code, certificate fingerprint), made if absent",
    )
    lp.add_argument("--state-dir", required=True, help="the gateway's state directory")
    lp.add_argument("--serial", help="serial to give a new gateway (checked on an existing one)")
    lp.add_argument("--json", action="store_true", help="the fields as one JSON object")
    args = ap.parse_args(argv)
    if args.cmd == "provision":
        return _provision(args)
    if args.cmd == "label":
        return _label(args)
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
