"""``emberlink commission``: configure, scan and commission a gateway over its provisioning API.

    emberlink commission status    --gateway HOST:PORT --code CODE
    emberlink commission configure --gateway ... --code ... --unit NAME --site site.toml
    emberlink commission scan      --gateway ... --code ... --bus 1 [--units 1-247]
    emberlink commission read      --gateway ... --code ... [--report FILE] [--signed-by NAME]

The pairing code (on the gateway's label) may also come from ``EMBERLINK_PAIRING_CODE``. Every
sub-command takes ``--json`` (the gateway's answer on stdout). Progress goes to stderr.

The provisioning API is HTTPS only, with the gateway's self-signed certificate; an ``http://``
address is upgraded, so the pairing code never crosses the LAN in clear. The certificate is
pinned: ``--fingerprint`` (its SHA-256, as ``emberlink discover --json`` shows it in ``cert``),
else the fingerprint in the gateway's mDNS TXT record, looked up by its address and port. Any
other certificate is refused before the pairing code is sent.
Exit codes: 0 done (``read``: every point ok), 1 the gateway refused or a point is flagged,
2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import json
import os
import re
import ssl
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from emberlink.edge.provision.tls import fingerprint_pem

from . import discover
from .discover import sanitize

HTTP_TIMEOUT_S = 30.0
CERT_TIMEOUT_S = 10.0  # fetching the gateway's certificate to compare with the pin
RESOLVE_S = 5.0  # looking the gateway's certificate fingerprint up over mDNS
DEFAULT_PORT = 8470
FINGERPRINT_ENV = "EMBERLINK_GATEWAY_FINGERPRINT"
PIN_HELP = f"SHA-256 of the gateway's TLS certificate (or {FINGERPRINT_ENV}; else from mDNS)"
READ_FORMAT = "{: <16} | {: <24} | {: >12} | {: <5} | {}"
READ_COLUMNS = ("Device", "Point", "Value", "Unit", "Status")
SCAN_FORMAT = "{: >4} | {: <14} | {}"
SCAN_COLUMNS = ("Unit", "Profile", "Note")


class Refused(Exception):
    """The gateway (or the cloud) answered with an error; ``str()`` is its reason."""


class PinMismatch(Refused):
    """The gateway presents a certificate other than the pinned one."""


class Usage(Exception):
    """Bad input on our side: exit 2."""


def gateway_url(text: str) -> str:
    """``https://HOST:PORT`` for ``HOST:PORT``, ``http://...`` or ``https://...``: the API is
    TLS only, so a plain address is upgraded rather than refused."""
    text = text.strip().rstrip("/")
    text = re.sub(r"^https?://", "", text)
    return "https://" + text


# What gateways' mDNS records said, by (host, port), for this process's later calls.
_mdns_pins: dict[tuple[str, int], str] = {}
_contexts: dict[tuple[str, int, str], ssl.SSLContext] = {}


def normalize_fingerprint(text: str) -> str:
    """64 hex digits, colons and case as ``openssl x509 -fingerprint`` prints them accepted."""
    fp = text.strip().replace(":", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", fp):
        raise Usage(f"a certificate fingerprint is 64 hex digits (SHA-256), not {text!r}")
    return fp


def _expected(host: str, port: int, fingerprint: str | None) -> tuple[str, str]:
    """The pin for the gateway at ``host:port`` and where it came from."""
    if fingerprint:
        return normalize_fingerprint(fingerprint), "--fingerprint"
    hit = _mdns_pins.get((host, port))
    if hit is not None:
        return hit, "its mDNS record"
    with concurrent.futures.ThreadPoolExecutor(1) as ex:  # also when called on an event loop
        row = ex.submit(asyncio.run, discover.find(host, port, RESOLVE_S)).result()
    if row is None:
        raise Refused(
            f"no gateway advertised at {host}:{port} over mDNS, so no certificate to pin: pass "
            "--fingerprint (its 'cert' in `emberlink discover --json` on the gateway's LAN)"
        )
    if not row.get("cert"):
        raise Refused(f"the gateway at {host}:{port} advertises no certificate fingerprint "
                      "(software without TLS): update it before commissioning")  # fmt: skip
    fp = normalize_fingerprint(str(row["cert"]))
    _mdns_pins[(host, port)] = fp
    return fp, "its mDNS record"


def pinned_context(
    host: str, port: int, expected: str, source: str, timeout_s: float = CERT_TIMEOUT_S
) -> ssl.SSLContext:
    """A TLS context that trusts exactly the gateway's certificate, after checking that the
    certificate it presents has the ``expected`` fingerprint; PinMismatch says which differ."""
    hit = _contexts.get((host, port, expected))
    if hit is not None:
        return hit
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout_s)
    except (OSError, ssl.SSLError) as e:
        raise Refused(f"cannot reach the gateway's TLS API at {host}:{port}: {e}") from e
    got = fingerprint_pem(pem)
    if not hmac.compare_digest(got, expected):
        raise PinMismatch(
            f"the gateway at {host}:{port} presents certificate {got[:16]}..., not "
            f"{expected[:16]}... ({source}): refusing to send the pairing code (another machine "
            "may be answering in its place)"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the pin, not a name, identifies the gateway
    ctx.load_verify_locations(cadata=pem)
    _contexts[(host, port, expected)] = ctx
    return ctx


def _client(url: str, fingerprint: str | None) -> httpx.Client:
    u = httpx.URL(url)
    host, port = u.host, u.port or DEFAULT_PORT
    fp, source = _expected(host, port, fingerprint)
    return httpx.Client(timeout=HTTP_TIMEOUT_S, verify=pinned_context(host, port, fp, source))


def request(method: str, url: str, code: str, *, fingerprint: str | None = None, **kw: Any) -> Any:
    """One call to the gateway's API over pinned TLS; Refused with the reason."""
    url = gateway_url(url)
    try:
        with _client(url, fingerprint) as c:
            r = c.request(method, url, headers={"X-Pairing-Code": code}, **kw)
    except httpx.HTTPError as e:
        raise Refused(f"cannot reach the gateway: {e}") from e
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        raise Refused(f"{r.status_code}: {sanitize(detail, 300)}")
    return r.json()


def progress_bar(done: int, total: int, width: int = 30) -> str:
    n = width * done // max(total, 1)
    return f"\r[{'#' * n}{'.' * (width - n)}] {done}/{total}"


def scan(
    url: str, code: str, bus: int, units: str, *, quiet: bool = False,
    fingerprint: str | None = None,
) -> list[dict]:  # fmt: skip
    """Stream the gateway's scan; draw progress on stderr; return the devices found."""
    body = {"bus": bus, "units": units}
    url = gateway_url(url)
    try:
        with (
            _client(url, fingerprint) as c,
            c.stream("POST", url + "/scan", json=body, headers={"X-Pairing-Code": code}) as r,
        ):
            if r.status_code >= 400:
                r.read()
                raise Refused(f"{r.status_code}: {sanitize(r.json().get('detail'), 300)}")
            for line in r.iter_lines():
                if not line:
                    continue
                item = json.loads(line)
                if "done" in item and not quiet:
                    print(progress_bar(item["done"], item["total"]), end="", file=sys.stderr)
                elif "error" in item:
                    raise Refused(sanitize(item["error"], 300))
                elif "found" in item:
                    if not quiet:
                        print(file=sys.stderr)
                    return list(item["found"])
    except httpx.HTTPError as e:
        raise Refused(f"cannot reach the gateway: {e}") from e
    raise Refused("the gateway ended the scan without a result")


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="emberlink commission", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", required=True, help="HOST:PORT of the provisioning API")
        p.add_argument("--code", default=os.environ.get("EMBERLINK_PAIRING_CODE"),
                       help="pairing code on the label (or EMBERLINK_PAIRING_CODE)")  # fmt: skip
        p.add_argument("--fingerprint", default=os.environ.get(FINGERPRINT_ENV), help=PIN_HELP)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    common(sub.add_parser("status", help="serial, state, fingerprint"))
    p = sub.add_parser("configure", help="push the site configuration")
    common(p)
    p.add_argument("--unit", required=True, help="the unit (building owner) the gateway serves")
    p.add_argument("--site", required=True, type=Path, help="TOML with [[bus]] and [[device]]")
    p = sub.add_parser("scan", help="find and identify devices on a bus")
    common(p)
    p.add_argument("--bus", type=int, required=True)
    p.add_argument("--units", default="1-247", help="unit ids, e.g. 1-32,100 (default 1-247)")
    p = sub.add_parser("read", help="commissioning run: read every point, write the report")
    common(p)
    p.add_argument("--report", type=Path, help="where to write the report (JSON)")
    p.add_argument("--signed-by", help="installer's name, recorded in the report")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    if not args.code:
        raise Usage("a pairing code is needed (--code or EMBERLINK_PAIRING_CODE)")
    url = gateway_url(args.gateway)
    fp = args.fingerprint
    if fp:
        normalize_fingerprint(fp)  # Usage before anything is sent
    out: Any
    if args.cmd == "status":
        out = request("GET", url + "/status", args.code, fingerprint=fp)
        text = "\n".join(f"{k}: {sanitize(v)}" for k, v in out.items())
    elif args.cmd == "configure":
        try:
            site = tomllib.loads(args.site.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise Usage(f"cannot read {args.site}: {e}") from e
        out = request("PUT", url + "/config", args.code, fingerprint=fp,
                      json={"unit": args.unit, "config": site})  # fmt: skip
        text = f"configured: {out['buses']} buses, {out['devices']} devices"
    elif args.cmd == "scan":
        found = scan(url, args.code, args.bus, args.units, quiet=args.json, fingerprint=fp)
        out = found
        lines = [SCAN_FORMAT.format(*SCAN_COLUMNS)]
        for f in found:
            note = (
                ""
                if f["profile"]
                else "unknown device: "
                + ("matches " + ", ".join(f["candidates"]) if f["candidates"] else "no signature")
            )
            lines.append(SCAN_FORMAT.format(f["unit"], sanitize(f["profile"] or "?"), note))
        text = "\n".join(lines)
    else:
        print("reading every configured point ...", file=sys.stderr)
        out = request("POST", url + "/commission", args.code, fingerprint=fp)
        out["signed_off_by"] = args.signed_by
        if args.signed_by:
            out["signed_off_ms"] = time.time_ns() // 1_000_000
        if args.report:
            args.report.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        lines = [READ_FORMAT.format(*READ_COLUMNS)]
        for r in out["readings"]:
            v = "-" if r["value"] is None else f"{r['value']:g}"
            st = r["status"] + (f" ({r['detail']})" if r["detail"] else "")
            lines.append(READ_FORMAT.format(sanitize(r["device"], 16), sanitize(r["point"], 24),
                                            v, r["unit_name"], st))  # fmt: skip
        lines.append(f"{out['ok']}/{out['points']} points ok, {out['flagged']} flagged")
        text = "\n".join(lines)
    print(json.dumps(out) if args.json else text)
    if args.cmd == "read" and not out["passed"]:
        return 1
    return 0


def run_command(
    prog: str,
    parse: Callable[[list[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace], int],
    argv: list[str],
) -> int:
    """The installer commands' exit codes: 2 and a reason for a usage error, 1 and the reason
    for a refusal (by the gateway or the cloud), else what ``run`` returns."""
    try:
        args = parse(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return run(args)
    except Usage as e:
        print(f"emberlink {prog}: {e}", file=sys.stderr)
        return 2
    except Refused as e:
        print(f"emberlink {prog}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    return run_command("commission", _args, run, argv)
