"""``emberlink discover``: list the EmberLink gateways on the LAN (mDNS ``_emberlink._tcp``).

    emberlink discover [--timeout 3] [--interface 192.168.1.20] [--json] [-v]

Each gateway's provisioning API is then checked against the certificate fingerprint of its TXT
record (``cert``): the TLS column says ``pinned`` (the API presents that certificate),
``MISMATCH`` (another certificate: do not commission it; one line on stderr says so),
``no cert`` (the record has none: a gateway too old for TLS) or ``unreachable``.

Exit codes: 0 at least one gateway found, 1 none found, 2 bad usage. Device-supplied strings
(TXT records, names) are stripped of control characters and capped in length before printing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

SERVICE_TYPE = "_emberlink._tcp.local."
FORMAT = "{: <28} | {: <14} | {: <9} | {: <10} | {: <16} | {: <11} | {}"
COLUMN_NAMES = ("Name", "Serial", "State", "Version", "Fingerprint", "TLS", "Address")
MAX_FIELD = 64  # a TXT value longer than this is cut: no gateway needs more, a hostile one could
RESOLVE_TIMEOUT_MS = 3000
TLS_CHECK_S = 3.0  # per gateway, all at once


def sanitize(value: object, limit: int = MAX_FIELD) -> str:
    """A device-supplied value as printable text: control characters dropped, length capped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = "".join(ch for ch in str(value) if ch.isprintable())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row(info: AsyncServiceInfo) -> dict[str, Any]:
    props = {sanitize(k): sanitize(v or b"") for k, v in (info.properties or {}).items()}
    addrs = info.parsed_addresses()
    return {
        "name": sanitize(info.name.removesuffix("." + SERVICE_TYPE)),
        "serial": props.get("serial", "?"),
        "state": props.get("state", "?"),
        "sw": props.get("sw", "?"),
        "fingerprint": props.get("fp", "?"),
        "cert": props.get("cert"),
        "address": addrs[0] if addrs else "?",
        "port": info.port,
    }


def _browse(
    interfaces: list[str] | None,
) -> tuple[AsyncZeroconf, AsyncServiceBrowser, list[str]]:
    """Start browsing for gateways: the names seen so far grow in the returned list."""
    kw: dict[str, Any] = {"ip_version": IPVersion.V4Only}
    if interfaces:
        kw["interfaces"] = interfaces
    azc = AsyncZeroconf(**kw)
    names: list[str] = []

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed and name not in names:
            names.append(name)

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    return azc, browser, names


async def discover(timeout_s: float, interfaces: list[str] | None = None) -> list[dict[str, Any]]:
    """Gateways that answer within ``timeout_s``, sorted by serial."""
    azc, browser, names = _browse(interfaces)
    try:
        await asyncio.sleep(timeout_s)
        rows = []
        for name in names:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(azc.zeroconf, RESOLVE_TIMEOUT_MS):
                rows.append(_row(info))
    finally:
        await browser.async_cancel()
        await azc.async_close()
    return sorted(rows, key=lambda r: r["serial"])


async def find(
    host: str, port: int, timeout_s: float, interfaces: list[str] | None = None
) -> dict[str, Any] | None:
    """The advertised gateway at ``host:port``, as soon as it answers (None after the timeout).
    A loopback address is looked for on the loopback interface unless ``interfaces`` says."""
    if interfaces is None and host.startswith("127."):
        interfaces = [host]
    azc, browser, names = _browse(interfaces)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    done = 0
    try:
        while loop.time() < deadline:
            while done < len(names):
                info = AsyncServiceInfo(SERVICE_TYPE, names[done])
                done += 1
                left_ms = max(100, int((deadline - loop.time()) * 1000))
                found = await info.async_request(azc.zeroconf, min(left_ms, RESOLVE_TIMEOUT_MS))
                if found and info.port == port and host in info.parsed_addresses():
                    return _row(info)
            await asyncio.sleep(0.05)
    finally:
        await browser.async_cancel()
        await azc.async_close()
    return None


def tls_check(row: dict[str, Any]) -> str:
    """``pinned``, ``MISMATCH``, ``no cert`` or ``unreachable``: does the gateway's API present
    the certificate its TXT record names?"""
    from .commission import PinMismatch, Refused, pinned_context

    if not row.get("cert"):
        return "no cert"
    try:
        pinned_context(row["address"], row["port"], row["cert"], "its mDNS record", TLS_CHECK_S)
    except PinMismatch:
        return "MISMATCH"
    except Refused:
        return "unreachable"
    return "pinned"


async def main_async(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="emberlink discover", description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default 3)")
    ap.add_argument("--interface", action="append", help="interface address to browse on")
    ap.add_argument("--json", action="store_true", help="one JSON list on stdout")
    ap.add_argument("-v", "--verbose", action="store_true")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not 0 < args.timeout <= 60:
        print("emberlink discover: --timeout must be in (0, 60] seconds", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    print(f"browsing {SERVICE_TYPE} for {args.timeout:g} s ...", file=sys.stderr)
    rows = await discover(args.timeout, args.interface)
    checks = await asyncio.gather(*(asyncio.to_thread(tls_check, r) for r in rows))
    for r, tls in zip(rows, checks, strict=True):
        r["tls"] = tls
        if tls == "MISMATCH":
            print(f"emberlink discover: {r['serial']} at {r['address']}:{r['port']} presents a "
                  "certificate other than its mDNS record's: do not commission it",
                  file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    else:
        print(FORMAT.format(*COLUMN_NAMES))
        print("-" * len(FORMAT.format(*COLUMN_NAMES)))
        for r in rows:
            addr = f"{r['address']}:{r['port']}"
            print(FORMAT.format(r["name"], r["serial"], r["state"], r["sw"], r["fingerprint"],
                                r["tls"], addr))  # fmt: skip
    return 0 if rows else 1


def main(argv: list[str]) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(argv))
    return 130
