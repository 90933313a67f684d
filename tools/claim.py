"""``emberlink claim``: bind a gateway to the cloud with its own credentials.

    emberlink claim gateway --cloud URL --site N --gateway-id N --gateway HOST:PORT --code CODE
    emberlink claim token   --cloud URL --site N --gateway-id N --serial SERIAL
    emberlink claim rotate  --cloud URL --gateway-id N --gateway HOST:PORT --code CODE
    emberlink claim revoke|decommission --cloud URL --gateway-id N

``gateway`` does the whole claim: it reads the gateway's serial over its provisioning API, asks
the cloud for a one-time claim token bound to the site, the installer (the API token's user)
and that serial (valid <= 10 minutes), and hands the token to the gateway, which exchanges it for
its MQTT login and MAC key; the fingerprint printed is the SHA-256 prefix of that key. The API
token comes from ``--api-token`` or ``EMBERLINK_API_TOKEN``. ``--json`` for scripts. The
gateway's API is reached over TLS with its certificate pinned, as in ``emberlink commission``
(``--fingerprint``, else its mDNS record).

``rotate`` asks the cloud for a one-time rotation token and hands it to the gateway, which
pauses, redeems it for a new MQTT password and MAC key, and resumes with them; its old ones
stay valid until that redeem, so a rotation refused or interrupted leaves the gateway running.
Without ``--gateway`` only the token is printed (hand it over later; it expires in 10 minutes).
``revoke`` cuts the gateway off at once; ``decommission`` also voids its pending tokens.
Exit codes: 0 done, 1 refused (by the cloud or the gateway: the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from .commission import (
    FINGERPRINT_ENV,
    HTTP_TIMEOUT_S,
    PIN_HELP,
    Refused,
    Usage,
    gateway_url,
    normalize_fingerprint,
    request,
    run_command,
)
from .discover import sanitize


def cloud(method: str, url: str, token: str, **kw: Any) -> Any:
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as c:
            r = c.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)
    except httpx.HTTPError as e:
        raise Refused(f"cannot reach the cloud: {e}") from e
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        raise Refused(f"cloud: {r.status_code}: {sanitize(detail, 300)}")
    return r.json()


CODE_HELP = "pairing code on the gateway's label (or EMBERLINK_PAIRING_CODE)"


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="emberlink claim", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cloud", required=True, help="cloud registry URL (http://host:8000)")
        p.add_argument("--api-token", default=os.environ.get("EMBERLINK_API_TOKEN"),
                       help="installer's API token (or EMBERLINK_API_TOKEN)")  # fmt: skip
        p.add_argument("--gateway-id", type=int, required=True, help="registry gateway number")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("gateway", help="claim a gateway end to end")
    common(p)
    p.add_argument("--site", type=int, required=True)
    p.add_argument("--gateway", required=True, help="HOST:PORT of its provisioning API")
    p.add_argument("--code", default=os.environ.get("EMBERLINK_PAIRING_CODE"), help=CODE_HELP)
    p.add_argument("--fingerprint", default=os.environ.get(FINGERPRINT_ENV), help=PIN_HELP)
    p.add_argument("--cloud-for-gateway", help="the cloud URL as the gateway reaches it")
    p = sub.add_parser("token", help="only issue a claim token")
    common(p)
    p.add_argument("--site", type=int, required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--ttl", type=int, default=600, help="seconds, at most 600")
    p = sub.add_parser("rotate", help="give a gateway a new password and MAC key")
    common(p)
    p.add_argument("--gateway", help="HOST:PORT of its provisioning API (else: token only)")
    p.add_argument("--code", default=os.environ.get("EMBERLINK_PAIRING_CODE"), help=CODE_HELP)
    p.add_argument("--fingerprint", default=os.environ.get(FINGERPRINT_ENV), help=PIN_HELP)
    p.add_argument("--cloud-for-gateway", help="the cloud URL as the gateway reaches it")
    p.add_argument("--ttl", type=int, default=600, help="token validity, seconds, at most 600")
    for name in ("revoke", "decommission"):
        common(sub.add_parser(name, help=f"{name} a gateway's credentials"))
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    if not args.api_token:
        raise Usage("an API token is needed (--api-token or EMBERLINK_API_TOKEN)")
    if not 0 <= args.gateway_id <= 0xFFFFFFFF:
        raise Usage("--gateway-id must be an unsigned 32-bit number")
    base = args.cloud.rstrip("/") + "/api/v1"
    fp = getattr(args, "fingerprint", None)
    if fp:
        normalize_fingerprint(fp)  # Usage before anything is sent
    out: Any
    if args.cmd in ("token", "gateway"):
        serial = getattr(args, "serial", None)
        if args.cmd == "gateway":
            if not args.code:
                raise Usage("a pairing code is needed (--code or EMBERLINK_PAIRING_CODE)")
            gw = gateway_url(args.gateway)
            status = request("GET", gw + "/status", args.code, fingerprint=fp)
            serial = status["serial"]
            print(f"gateway serial {sanitize(serial)}, state {sanitize(status['state'])}",
                  file=sys.stderr)  # fmt: skip
        body = {"site_id": args.site, "gateway_id": args.gateway_id, "serial": serial}
        if args.cmd == "token":
            body["ttl_s"] = args.ttl
        tok = cloud("POST", base + "/claims", args.api_token, json=body)
        if args.cmd == "token":
            out = tok
            text = f"claim token (once, until {tok['expires_ms']} ms): {tok['token']}"
        else:
            print("claim token issued; the gateway is redeeming it ...", file=sys.stderr)
            out = request("POST", gw + "/claim", args.code, fingerprint=fp, json={
                "token": tok["token"], "cloud_url": args.cloud_for_gateway or args.cloud,
            })  # fmt: skip
            out["claim_token_id"] = tok["id"]
            text = (f"claimed: gateway {out['gateway_id']}, state {sanitize(out['state'])}, "
                    f"key fingerprint {sanitize(out['fingerprint'])}")  # fmt: skip
    elif args.cmd == "rotate":
        if args.gateway and not args.code:
            raise Usage("a pairing code is needed (--code or EMBERLINK_PAIRING_CODE)")
        if not 10 <= args.ttl <= 600:
            raise Usage("--ttl must be within 10..600 seconds")
        path = f"{base}/gateways/{args.gateway_id}/credentials/rotate"
        tok = cloud("POST", path, args.api_token, params={"ttl_s": args.ttl})
        if not args.gateway:
            out = tok
            text = (f"rotation token for gateway {args.gateway_id} (once, until "
                    f"{tok['expires_ms']} ms): {tok['token']}\n"
                    "its current credentials stay valid until it redeems the token")  # fmt: skip
        else:
            print("rotation token issued; the gateway is redeeming it ...", file=sys.stderr)
            body = {"token": tok["token"], "cloud_url": args.cloud_for_gateway or args.cloud}
            url = gateway_url(args.gateway) + "/rotate"
            out = request("POST", url, args.code, fingerprint=fp, json=body)
            out["claim_token_id"] = tok["id"]
            old, new = sanitize(out["previous_fingerprint"]), sanitize(out["fingerprint"])
            text = f"rotated gateway {out['gateway_id']}: key fingerprint {old} -> {new}"
    else:
        path = "decommission" if args.cmd == "decommission" else f"credentials/{args.cmd}"
        out = cloud("POST", f"{base}/gateways/{args.gateway_id}/{path}", args.api_token)
        text = f"{args.cmd}: gateway {args.gateway_id}, {out['revoked']} credentials revoked"
    print(json.dumps(out) if args.json else text)
    return 0


def main(argv: list[str]) -> int:
    return run_command("claim", _args, run, argv)
