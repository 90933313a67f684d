"""``emberlink maint ...``: maintenance records for contractors in the field.

Talks to the cloud API over HTTP with an API token (``--url``/``--token`` or the environment
variables ``EMBERLINK_URL``/``EMBERLINK_TOKEN``). ``--json`` prints the API's JSON for scripts.

    emberlink maint schedule UNIT [--on YYYY-MM-DD]
    emberlink maint open --contract C --kind monthly_check --lead TECH [--tech TECH ...]
    emberlink maint item VISIT CODE --result pass [--gateway G --src S] [--value X] [--note ..]
    emberlink maint defect VISIT --severity critical --description "..." [--item CODE]
    emberlink maint attach VISIT FILE
    emberlink maint close VISIT
    emberlink maint show VISIT
    emberlink maint sign VISIT --lead TECH --manager NAME [--method on_screen]
    emberlink maint correct VISIT --reason "..."
    emberlink maint report UNIT (--month YYYY-MM | --year YYYY) [--format csv|pdf] [-o FILE]
    emberlink maint overdue [--on YYYY-MM-DD]
    emberlink maint purge --before YYYY-MM-DD   (admin; records whose retention is over)

Exit codes: 0 done; 1 the server refused or could not be reached (the reason on stderr); 2 bad
usage or input the server rejected as invalid (400/422). ``purge`` deletes, one by one through
the API, every record whose retention date is over and before the given day, and lists them;
it exits 1 if any of them was refused (the others are still purged).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

LOCAL = timezone(timedelta(hours=8))
API = "/api/v1/maint"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # no usage dump and SystemExit: a reason and code 2
        raise _Usage(message)


class _Usage(Exception):
    pass


class _Failed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _src(text: str) -> int:
    """A point as an integer or BUS-UNIT-POINT (as the evidence prints it)."""
    if "-" in text:
        bus, unit, point = (int(p) for p in text.split("-"))
        if not (0 <= bus < 256 and 0 <= unit < 256 and 0 <= point < 65536):
            raise argparse.ArgumentTypeError(f"point out of range: {text}")
        return (bus << 24) | (unit << 16) | point
    return int(text, 0)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="emberlink maint", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("EMBERLINK_URL", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("EMBERLINK_TOKEN"))
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("schedule", help="a unit's requirements and their states")
    s.add_argument("unit", type=int)
    s.add_argument("--on")
    s = sub.add_parser("open", help="open a check window (a visit)")
    s.add_argument("--contract", type=int, required=True)
    s.add_argument(
        "--kind", choices=["monthly_check", "annual_test", "repair", "patrol"], required=True
    )
    s.add_argument("--lead", type=int, required=True, help="technician id of the lead")
    s.add_argument("--tech", type=int, action="append", default=[])
    s = sub.add_parser("item", help="record one item's result")
    s.add_argument("visit", type=int)
    s.add_argument("code")
    s.add_argument("--result", choices=["pass", "fail", "na", "not_accessible"], required=True)
    s.add_argument("--gateway", type=int)
    s.add_argument("--src", type=_src, help="point: integer or BUS-UNIT-POINT")
    s.add_argument("--value", type=float)
    s.add_argument("--note", default="")
    s = sub.add_parser("defect", help="record a defect")
    s.add_argument("visit", type=int)
    s.add_argument("--severity", choices=["minor", "major", "critical"], required=True)
    s.add_argument("--description", required=True)
    s.add_argument("--item")
    s = sub.add_parser("attach", help="attach a file (stored by its SHA-256)")
    s.add_argument("visit", type=int)
    s.add_argument("file", type=Path)
    for name, text in (("close", "close the check window"), ("show", "show a visit")):
        sub.add_parser(name, help=text).add_argument("visit", type=int)
    s = sub.add_parser("sign", help="sign a closed visit (lead and fire-safety manager)")
    s.add_argument("visit", type=int)
    s.add_argument("--lead", type=int, required=True)
    s.add_argument("--manager", required=True)
    s.add_argument("--method", choices=["on_screen", "paper_scan", "pin"], default="on_screen")
    s = sub.add_parser("correct", help="start a corrected revision of a signed visit")
    s.add_argument("visit", type=int)
    s.add_argument("--reason", required=True)
    s = sub.add_parser("report", help="monthly record or annual test report")
    s.add_argument("unit", type=int)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--month")
    g.add_argument("--year", type=int)
    s.add_argument("--format", choices=["csv", "pdf"], default="csv")
    s.add_argument("-o", "--output", type=Path)
    s = sub.add_parser("overdue", help="requirements past due, per firm")
    s.add_argument("--on")
    s = sub.add_parser("purge", help="delete the records whose retention is over (admin)")
    s.add_argument("--before", type=_date, required=True, help="retained until before this day")
    return p


def _date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        r = client.request(method, API + path, **kw)
    except httpx.HTTPError as e:
        raise _Failed(1, f"cannot reach {client.base_url}: {e}") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:200]
        if not isinstance(detail, str):
            detail = json.dumps(detail)[:300]
        raise _Failed(2 if r.status_code in (400, 422) else 1, f"{r.status_code}: {detail}")
    return r


def _t(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(LOCAL).strftime("%Y-%m-%d %H:%M")


def _print_visit(v: dict[str, Any]) -> None:
    print(
        f"visit {v['id']} rev {v['revision']} {v['kind']} unit {v['unit_id']}: {v['status']}"
        f" ({_t(v['started_ms'])} - {_t(v['ended_ms'])})"
    )
    for i in v["items"]:
        value = "" if i["measured"] is None else f" {i['measured']:g}"
        limits = {None: "", True: " (within limits)", False: " (OUT OF LIMITS)"}
        print(f"  {i['code']:<12} {i['result']}{value}{limits[i['within_limits']]}")
        for e in i["evidence"]:
            print(f"      {e['text']}")
        if i["flag"]:
            print(f"      REVIEW: {i['flag']}")
    for d in v["defects"]:
        state = "closed" if d["closed_ms"] else f"due {_t(d['due_ms'])}"
        print(f"  defect {d['id']} ({d['severity']}, {state}): {d['description']}")
    for issue in v["device_issues"]:
        print(f"  since last visit: {issue['text']}")
    if v["signed_ms"]:
        print(f"  signed {_t(v['signed_ms'])}, content hash {v['content_hash']}")
    print(f"  {v['flagged']} item(s) flagged for review")


def run(args: argparse.Namespace, client: httpx.Client) -> int:
    out: Any
    c = args.cmd
    if c == "schedule":
        params = {"on": args.on} if args.on else {}
        out = _call(client, "GET", f"/units/{args.unit}/schedule", params=params).json()
        if not args.json:
            print(f"unit {out['unit_id']} on {out['on']}")
            for r in out["rows"]:
                print(
                    f"  {r['code']:<12} {r['state']:<10} next due {r['next_due'] or '-':<10}"
                    f" last {r['last_done'] or '-':<10} {r['title'][:60]}"
                )
            for rem in out["reminders"]:
                print(f"  REMINDER: {rem}")
            return 0
    elif c == "open":
        crew = [{"technician_id": args.lead, "role": "lead"}]
        crew += [{"technician_id": t, "role": "tech"} for t in args.tech]
        body = {"contract_id": args.contract, "kind": args.kind, "crew": crew}
        out = _call(client, "POST", "/visits", json=body).json()
    elif c == "item":
        body = {"code": args.code, "result": args.result, "note": args.note}
        if args.gateway is not None:
            body["gateway_id"] = args.gateway
        if args.src is not None:
            body["src"] = args.src
        if args.value is not None:
            body["measured"] = args.value
        out = _call(client, "POST", f"/visits/{args.visit}/items", json=body).json()
    elif c == "defect":
        body = {"severity": args.severity, "description": args.description}
        if args.item:
            body["item_code"] = args.item
        out = _call(client, "POST", f"/visits/{args.visit}/defects", json=body).json()
        if not args.json:
            print(f"defect {out['id']} ({out['severity']}) due {_t(out['due_ms'])}")
            return 0
    elif c == "attach":
        try:
            data = args.file.read_bytes()
        except OSError as e:
            raise _Failed(2, f"cannot read {args.file}: {e.strerror}") from None
        media = mimetypes.guess_type(args.file.name)[0] or "application/octet-stream"
        out = _call(
            client,
            "POST",
            f"/visits/{args.visit}/attachments",
            params={"name": args.file.name},
            content=data,
            headers={"content-type": media},
        ).json()
        if not args.json:
            print(f"{out['sha256']}  {out['name']} ({out['size']} bytes)")
            return 0
    elif c in ("close", "show"):
        method = "POST" if c == "close" else "GET"
        path = f"/visits/{args.visit}" + ("/close" if c == "close" else "")
        out = _call(client, method, path).json()
    elif c == "sign":
        body = {
            "lead_technician_id": args.lead,
            "manager": {"name": args.manager, "method": args.method},
        }
        out = _call(client, "POST", f"/visits/{args.visit}/sign", json=body).json()
    elif c == "correct":
        body = {"reason": args.reason}
        out = _call(client, "POST", f"/visits/{args.visit}/corrections", json=body).json()
    elif c == "report":
        if args.month:
            path, params = "/reports/monthly", {"month": args.month}
        else:
            path, params = "/reports/annual", {"year": args.year}
        params |= {"unit_id": args.unit, "format": args.format}
        r = _call(client, "GET", path, params=params)
        if args.output:
            args.output.write_bytes(r.content)
            print(f"wrote {args.output} ({len(r.content)} bytes)", file=sys.stderr)
        elif args.format == "pdf":
            sys.stdout.buffer.write(r.content)
        else:
            sys.stdout.write(r.text)
        return 0
    elif c == "purge":
        return _purge(args, client)
    else:  # overdue
        params = {"on": args.on} if args.on else {}
        out = _call(client, "GET", "/reports/overdue", params=params).json()
        if not args.json:
            for firm in out:
                print(f"{firm['firm']}:")
                for i in firm["items"]:
                    print(f"  {i['unit']:<20} {i['code']:<12} {i['state']:<10} due {i['next_due']}")
            if not out:
                print("nothing overdue")
            return 0
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        _print_visit(out)
    return 0


def _purge(args: argparse.Namespace, client: httpx.Client) -> int:
    """Purge each expired record through ``DELETE /maint/visits/{id}``; a refusal of one (e.g.
    a correction started since the listing) does not stop the others."""
    expired = _call(client, "GET", "/expired", params={"before": args.before}).json()
    purged, refused = [], []
    for rec in expired:
        try:
            _call(client, "DELETE", f"/visits/{rec['visit_id']}")
        except _Failed as e:
            if e.code == 1 and str(e).startswith("cannot reach"):
                raise
            refused.append({**rec, "reason": str(e)})
            continue
        purged.append(rec)
    if args.json:
        print(json.dumps({"purged": purged, "refused": refused}, indent=2))
    else:
        for rec in purged:
            print(
                f"purged visit {rec['visit_id']} ({rec['revisions']} revision(s), {rec['kind']},"
                f" unit {rec['unit_id']}, retained until {_t(rec['retention_until_ms'])[:10]})"
            )
        if not expired:
            print(f"nothing to purge (no record's retention ended before {args.before})")
    for rec in refused:
        print(
            f"emberlink maint: visit {rec['visit_id']} not purged: {rec['reason']}", file=sys.stderr
        )
    return 1 if refused else 0


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
        if not args.token:
            raise _Usage("no token: pass --token or set EMBERLINK_TOKEN")
        headers = {"Authorization": f"Bearer {args.token}"}
        with httpx.Client(
            base_url=args.url, headers=headers, timeout=30, transport=transport
        ) as client:
            return run(args, client)
    except _Usage as e:
        print(f"emberlink maint: {e}", file=sys.stderr)
        return 2
    except _Failed as e:
        print(f"emberlink maint: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
