"""``emberlink replay --config FILE --trace FILE``: run a configuration's detectors over a trace.

Installers use it to tune thresholds against recorded data: the same portable core the gateway
runs (``emberlink.firmware``) is fed the trace row by row and every event it raises is printed as
one JSON line.

Config (TOML, or JSON when the file ends in ``.json``): a ``points`` table of named points, each
``{src = <int, optional>, detectors = {...}}`` with the ``detectors`` section documented in
firmware/README.md; a ``[[points]]`` list with a ``name`` per entry works too.

Trace (CSV): ``time_ms,point,value`` per row, an optional header row, ``#`` comments. ``point``
is a point's name (or its src number); ``value`` is an integer in the point's units, or one of
``ack``, ``reset``, ``test_on``, ``test_off`` (operator actions at that time). Rows must be in
time order. Every bad row is reported as ``FILE:LINE: reason``; then the command exits 2 without
replaying anything.

Exit codes: 0 replayed, 2 bad config, trace or usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from emberlink.firmware.config import ConfigError, build_detectors
from emberlink.firmware.point import Point
from emberlink.protocol import codes
from emberlink.protocol.messages import Event

ACTIONS = ("ack", "reset", "test_on", "test_off")
MAX_ERRORS = 20  # report at most this many bad rows, then stop reading


class ReplayError(Exception):
    """Bad input for the replay: the message is what the user sees."""


def load_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ReplayError(f"{path}: cannot read: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ReplayError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise ReplayError(f"{path}: expected a table at the top level")
    return data


def build_points(cfg: dict[str, Any], where: str) -> tuple[dict[str, Point], list[str]]:
    """Points by name from a configuration; ReplayError names the bad field."""
    raw = cfg.get("points")
    entries: list[tuple[str, Any]]
    if isinstance(raw, dict):
        entries = list(raw.items())
    elif isinstance(raw, list):
        entries = []
        for i, p in enumerate(raw):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise ReplayError(f"{where}: points[{i}].name: required (text)")
            entries.append((p["name"], p))
    else:
        raise ReplayError(f"{where}: points: required (a table of named points)")
    if not entries:
        raise ReplayError(f"{where}: points: empty")
    points: dict[str, Point] = {}
    warnings: list[str] = []
    seen: dict[int, str] = {}
    for n, (name, p) in enumerate(entries):
        path = f"points.{name}"
        if not isinstance(p, dict):
            raise ReplayError(f"{where}: {path}: expected a table")
        src = p.get("src", n + 1)
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src <= 0xFFFFFFFF:
            raise ReplayError(f"{where}: {path}.src: expected an integer 0..2**32-1")
        if src in seen:
            raise ReplayError(f"{where}: {path}.src: {src} is also points.{seen[src]}")
        seen[src] = name
        try:
            points[name] = build_detectors(p.get("detectors"), src, warnings, path + ".detectors")
        except ConfigError as e:
            raise ReplayError(f"{where}: {e}") from None
    return points, warnings


def read_trace(path: Path, points: dict[str, Point]) -> list[tuple[int, str, int | str]]:
    """Rows (t_ms, point name, value or action); ReplayError lists every bad row."""
    by_src = {str(p.src): name for name, p in points.items()}
    rows: list[tuple[int, str, int | str]] = []
    errors: list[str] = []
    last_t: int | None = None
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ReplayError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        try:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if len(errors) >= MAX_ERRORS:
                    errors.append(f"{path}: stopped after {MAX_ERRORS} bad rows")
                    break
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                cells = [c.strip() for c in row]
                if line_no == 1 and not cells[0].lstrip("-").isdigit():
                    continue  # header
                err = _row_error(cells, points, by_src, last_t)
                if err:
                    errors.append(f"{path}:{line_no}: {err}")
                    continue
                t = int(cells[0])
                name = cells[1] if cells[1] in points else by_src[cells[1]]
                v = cells[2]
                rows.append((t, name, v if v in ACTIONS else int(v)))
                last_t = t
        except (csv.Error, UnicodeDecodeError) as e:
            errors.append(f"{path}: unreadable CSV: {e}")
    if errors:
        raise ReplayError("\n".join(errors))
    return rows


def _row_error(
    cells: list[str], points: dict[str, Point], by_src: dict[str, str], last_t: int | None
) -> str:
    if len(cells) != 3:
        return f"expected 3 columns (time_ms, point, value), got {len(cells)}"
    t, name, v = cells
    if not t.isdigit():
        return f"time_ms {t!r} is not a non-negative integer"
    if last_t is not None and int(t) < last_t:
        return f"time_ms {t} goes backwards (previous row {last_t})"
    if name not in points and name not in by_src:
        return f"unknown point {name!r} (configured: {', '.join(sorted(points))})"
    if v in ACTIONS:
        return ""
    try:
        int(v)
    except ValueError:
        return f"value {v!r} is not an integer or one of {', '.join(ACTIONS)}"
    return ""


def event_json(t: int, name: str, ev: Event) -> str:
    """One event as a JSON line with readable names."""
    d: dict[str, Any] = {"t_ms": t, "point": name, "src": ev.src}
    d["kind"] = codes.name_of(codes.KIND_NAMES, ev.kind)
    if ev.code is not None:
        d["code"] = codes.name_of(codes.CONDITION_NAMES, ev.code)
    if ev.state is not None:
        d["state"] = codes.name_of(codes.STATE_NAMES, ev.state)
    if ev.val is not None:
        d["val"] = ev.val
        if ev.exp is not None:
            d["exp"] = ev.exp
        if ev.unit is not None:
            d["unit"] = codes.name_of(codes.UNIT_NAMES, ev.unit)
    if ev.verify is not None:
        d["verify_ms"] = list(ev.verify)
    if ev.eflags:
        d["flags"] = codes.flag_names(codes.EVENT_FLAG_NAMES, ev.eflags)
    return json.dumps(d, ensure_ascii=False)


def replay(points: dict[str, Point], rows: list[tuple[int, str, int | str]]) -> list[str]:
    lines: list[str] = []
    out: list[tuple[int, Event]] = []
    names = {p.src: n for n, p in points.items()}
    for t, name, v in rows:
        for p in points.values():  # silence on other points: comms-loss supervision
            p.tick(t, out)
        p = points[name]
        if isinstance(v, int):
            p.feed(t, v, out)
        elif v == "ack":
            p.ack(t, out)
        elif v == "reset":
            p.reset(t, out)
        else:
            p.set_test(t, v == "test_on", out)
        for te, ev in out:
            lines.append(event_json(te, names[ev.src], ev))
        out.clear()
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="emberlink replay",
        description="Run a configuration's detectors over a recorded trace; print events as JSON"
        " lines.",
    )
    ap.add_argument("--config", required=True, type=Path, help="TOML or JSON: points + detectors")
    ap.add_argument("--trace", required=True, type=Path, help="CSV: time_ms, point, value")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    try:
        points, warnings = build_points(load_config(args.config), str(args.config))
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        rows = read_trace(args.trace, points)
    except ReplayError as e:
        print(f"emberlink replay: {e}", file=sys.stderr)
        return 2
    for line in replay(points, rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
