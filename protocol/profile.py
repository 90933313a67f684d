"""Device profiles as data: the schema, its validator, register decoding and read planning.

A profile describes one device model: its register map, how each point is encoded (type, byte
order, word order, scale and exponent, unit) and what each point feeds (a status bit that is a
fire alarm, an analog value that feeds a residual-current detector, ...). A site lists instances
of profiles (unit id, name, zone); the gateway (edge/) and the board (firmware/) both poll from
the same validated profile.

``validate(raw)`` takes the plain dict read from a profile file (TOML on the Pi) and returns a
normalised plain dict with every default filled in, or raises ``ProfileError`` naming the bad
field (``points[3].type: unknown type 'u17'``). The result holds only dicts, lists, ints and
strings, so the board can use the same structure.

``decode(point, regs)`` turns the registers of one point into an integer ``val`` (engineering
value = val * 10**exp). ``encode(point, val)`` is its inverse (simulators use it).
``plan_reads(points, max_regs, max_gap)`` coalesces points into block reads.

MicroPython-compatible: no dataclasses, no typing at run time, no enum; struct only for f32.
"""

import struct

from . import codes
from .errors import ProtocolError

# Limits with their reasons.
MAX_READ_REGS = 125  # FC03/FC04 answer fits a 256-byte RTU ADU (Modbus spec §6.3)
DEFAULT_MAX_GAP = 8  # unused registers bridged in one read: 16 bytes cost < one extra request
MAX_POINTS = 512  # one device; a profile is a device model, not a site
NAME_MAX = 48

TYPES = ("u16", "i16", "u32", "i32", "f32", "bits", "u8_hi", "u8_lo", "enum")
TYPE_WORDS = {
    "u16": 1,
    "i16": 1,
    "u32": 2,
    "i32": 2,
    "f32": 2,
    "bits": 1,
    "u8_hi": 1,
    "u8_lo": 1,
    "enum": 1,
}
ORDERS = ("big", "little")
TABLES = ("holding", "input")
CLASSES = ("status", "telemetry")
# Event kinds a status bit or an enum value may raise: conditions with a state.
CONDITION_KINDS = {
    "fire_alarm": codes.FIRE_ALARM,
    "pre_alarm": codes.PRE_ALARM,
    "fault": codes.FAULT,
    "supervisory": codes.SUPERVISORY,
    "shield": codes.SHIELD,
    "manual_alarm": codes.MANUAL_ALARM,
    "test_mode": codes.TEST_MODE,
}
DETECTORS = ("smoke", "heat", "residual_current", "cable_temperature", "overcurrent")

_PROFILE_KEYS = (
    "name",
    "title",
    "vendor",
    "model",
    "sys",
    "part",
    "byte_order",
    "word_order",
    "table",
    "poll",
    "max_gap",
    "points",
    "source",
    "signature",
)
_POINT_KEYS = (
    "id",
    "name",
    "address",
    "type",
    "table",
    "byte_order",
    "word_order",
    "scale",
    "exp",
    "unit",
    "class",
    "part",
    "detector",
    "detectors",
    "bits",
    "values",
    "open_below",
    "short_above",
    "break_value",
    "note",
)
_POLL_KEYS = ("status_ms", "telemetry_ms")
_BIT_KEYS = ("bit", "event", "code", "name")
_VALUE_KEYS = ("value", "event", "code", "name")
# A signature register identifies the model during a bus scan: read it, and the value must
# equal ``value`` (after ``mask``). Optional, so profiles without one stay valid.
_SIGNATURE_KEYS = ("address", "table", "value", "mask", "note")
MAX_SIGNATURES = 4  # a scan probes every candidate unit with each: keep the bus time small


class ProfileError(ProtocolError):
    """A profile (or site entry) that does not satisfy the schema; ``field`` is its path."""

    def __init__(self, field, detail):
        super().__init__("bad profile", field + ": " + detail)
        self.field = field


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _int(d, key, where, lo, hi, default=None):
    v = d.get(key, default)
    if v is None:
        raise ProfileError(where + key, "required")
    if not _is_int(v):
        raise ProfileError(where + key, "must be an integer, got " + repr(v))
    if v < lo or v > hi:
        raise ProfileError(where + key, str(v) + " not in " + str(lo) + ".." + str(hi))
    return v


def _name(d, key, where, required=True, default=None, limit=NAME_MAX):
    v = d.get(key, default)
    if v is None:
        if required:
            raise ProfileError(where + key, "required")
        return None
    if not isinstance(v, str) or not v:
        raise ProfileError(where + key, "must be a non-empty string")
    if len(v) > limit:
        raise ProfileError(where + key, "longer than " + str(limit) + " characters")
    return v


def _choice(d, key, where, options, default):
    v = d.get(key, default)
    if v not in options:
        raise ProfileError(where + key, repr(v) + " is not one of " + ", ".join(options))
    return v


def _only(d, keys, where):
    if not isinstance(d, dict):
        raise ProfileError(where.rstrip("."), "must be a table")
    for k in d:
        if k not in keys:
            raise ProfileError(where + str(k), "unknown field")


def _code(v, table, what):
    try:
        return codes.code_of(table, v, what)
    except ValueError as e:
        raise ProfileError(what, str(e).split(": ", 1)[-1]) from None


def _event_map(e, where, keys, id_key, id_max):
    _only(e, keys, where)
    out = {id_key: _int(e, id_key, where, 0, id_max)}
    ev = _choice(e, "event", where, tuple(CONDITION_KINDS), None)
    out["kind"] = CONDITION_KINDS[ev]
    out["code"] = _code(e.get("code", "panel_status"), codes.CONDITION_NAMES, where + "code")
    out["name"] = _name(e, "name", where, required=False, default=ev)
    return out


def _point(p, i, prof):
    where = "points[" + str(i) + "]."
    _only(p, _POINT_KEYS, where)
    t = _choice(p, "type", where, TYPES, None)
    out = {
        "id": _int(p, "id", where, 1, 0xFFFF),
        "name": _name(p, "name", where),
        "address": _int(p, "address", where, 0, 0xFFFF),
        "type": t,
        "words": TYPE_WORDS[t],
        "table": _choice(p, "table", where, TABLES, prof["table"]),
        "byte_order": _choice(p, "byte_order", where, ORDERS, prof["byte_order"]),
        "word_order": _choice(p, "word_order", where, ORDERS, prof["word_order"]),
        "scale": _int(p, "scale", where, -1000000, 1000000, 1),
        "exp": _int(p, "exp", where, -9, 9, 0),
        "class": _choice(
            p, "class", where, CLASSES, "status" if t in ("bits", "enum") else "telemetry"
        ),
        "part": _int(p, "part", where, 0, 255, prof["part"]),
    }
    if out["address"] + out["words"] - 1 > 0xFFFF:
        raise ProfileError(where + "address", "point runs past register 65535")
    if out["scale"] == 0:
        raise ProfileError(where + "scale", "must not be 0")
    unit = p.get("unit")
    out["unit"] = None if unit is None else _code(unit, codes.UNIT_NAMES, where + "unit")
    det = p.get("detector")
    if det is not None and det not in DETECTORS:
        raise ProfileError(where + "detector", repr(det) + " is not one of " + ", ".join(DETECTORS))
    out["detector"] = det
    dets = p.get("detectors", {})
    if not isinstance(dets, dict):
        raise ProfileError(where + "detectors", "must be a table")
    out["detectors"] = dets
    bits = p.get("bits", [])
    if t == "bits":
        if not isinstance(bits, list) or not bits:
            raise ProfileError(where + "bits", "a bits point lists at least one bit")
        seen = {}
        out["bits"] = []
        for j in range(len(bits)):
            b = _event_map(bits[j], where + "bits[" + str(j) + "].", _BIT_KEYS, "bit", 15)
            if b["bit"] in seen:
                raise ProfileError(where + "bits[" + str(j) + "].bit", "bit listed twice")
            seen[b["bit"]] = 1
            out["bits"].append(b)
    elif bits:
        raise ProfileError(where + "bits", "only a point of type 'bits' has bits")
    vals = p.get("values", [])
    if t == "enum":
        if not isinstance(vals, list) or not vals:
            raise ProfileError(where + "values", "an enum point lists its values")
        out["values"] = []
        for j in range(len(vals)):
            vw = where + "values[" + str(j) + "]."
            v = vals[j]
            _only(v, _VALUE_KEYS, vw)
            if "event" in v:
                out["values"].append(_event_map(v, vw, _VALUE_KEYS, "value", 0xFFFF))
            else:
                out["values"].append(
                    {
                        "value": _int(v, "value", vw, 0, 0xFFFF),
                        "name": _name(v, "name", vw),
                        "kind": None,
                        "code": None,
                    }
                )
    elif vals:
        raise ProfileError(where + "values", "only a point of type 'enum' has values")
    for k in ("open_below", "short_above", "break_value"):
        v = p.get(k)
        if v is not None and not _is_int(v):
            raise ProfileError(where + k, "must be an integer (raw register value)")
        out[k] = v
    return out


def validate(raw):
    """The normalised profile for ``raw`` (a dict read from TOML); raises ProfileError."""
    _only(raw, _PROFILE_KEYS, "")
    prof = {
        "name": _name(raw, "name", ""),
        "title": _name(raw, "title", "", required=False, default="-", limit=160),
        "vendor": raw.get("vendor", ""),
        "model": raw.get("model", ""),
        "source": raw.get("source", ""),
        "sys": _int(raw, "sys", "", 0, 255, 0),
        "part": _int(raw, "part", "", 0, 255, 0),
        "byte_order": _choice(raw, "byte_order", "", ORDERS, "big"),
        "word_order": _choice(raw, "word_order", "", ORDERS, "big"),
        "table": _choice(raw, "table", "", TABLES, "holding"),
        "max_gap": _int(raw, "max_gap", "", 0, MAX_READ_REGS, DEFAULT_MAX_GAP),
    }
    poll = raw.get("poll", {})
    _only(poll, _POLL_KEYS, "poll.")
    prof["poll"] = {
        "status_ms": _int(poll, "status_ms", "poll.", 100, 2000, 1000),  # ≤ 2 s: standards §6.3
        "telemetry_ms": _int(poll, "telemetry_ms", "poll.", 100, 3600000, 5000),
    }
    pts = raw.get("points")
    if not isinstance(pts, list) or not pts:
        raise ProfileError("points", "a profile lists at least one point")
    if len(pts) > MAX_POINTS:
        raise ProfileError("points", "more than " + str(MAX_POINTS))
    prof["points"] = []
    ids = {}
    names = {}
    for i in range(len(pts)):
        p = _point(pts[i], i, prof)
        if p["id"] in ids:
            raise ProfileError("points[" + str(i) + "].id", "id " + str(p["id"]) + " used twice")
        if p["name"] in names:
            raise ProfileError("points[" + str(i) + "].name", repr(p["name"]) + " used twice")
        ids[p["id"]] = 1
        names[p["name"]] = 1
        prof["points"].append(p)
    prof["signature"] = _signature(raw.get("signature", []), prof)
    return prof


def _signature(sigs, prof):
    if not isinstance(sigs, list):
        raise ProfileError("signature", "must be a list of tables")
    if len(sigs) > MAX_SIGNATURES:
        raise ProfileError("signature", "more than " + str(MAX_SIGNATURES))
    out = []
    for i in range(len(sigs)):
        where = "signature[" + str(i) + "]."
        s = sigs[i]
        _only(s, _SIGNATURE_KEYS, where)
        out.append(
            {
                "address": _int(s, "address", where, 0, 0xFFFF),
                "table": _choice(s, "table", where, TABLES, prof["table"]),
                "value": _int(s, "value", where, 0, 0xFFFF),
                "mask": _int(s, "mask", where, 1, 0xFFFF, 0xFFFF),
            }
        )
    return out


def signature_matches(sig, word):
    """True when the register ``word`` read at ``sig``'s address carries the signature."""
    return (word & sig["mask"]) == (sig["value"] & sig["mask"])


# --- Register codec ------------------------------------------------------------------------


def _swap16(w):
    return ((w & 0xFF) << 8) | (w >> 8)


def _raw(point, regs):
    """The raw unsigned integer of a point from its registers (orders applied)."""
    if point["byte_order"] == "little":
        regs = [_swap16(r) for r in regs]
    if point["words"] == 1:
        return regs[0]
    hi, lo = (regs[0], regs[1]) if point["word_order"] == "big" else (regs[1], regs[0])
    return (hi << 16) | lo


def decode_raw(point, regs):
    """The signed or unsigned raw value of a point (before scale), f32 as a float."""
    t = point["type"]
    r = _raw(point, regs)
    if t == "i16":
        return r - 0x10000 if r & 0x8000 else r
    if t == "i32":
        return r - 0x100000000 if r & 0x80000000 else r
    if t == "f32":
        return struct.unpack(">f", struct.pack(">I", r))[0]
    if t == "u8_hi":
        return r >> 8
    if t == "u8_lo":
        return r & 0xFF
    return r


def decode(point, regs):
    """``val`` of a point: raw * scale as an integer (f32 rounded to the point's exponent)."""
    raw = decode_raw(point, regs)
    if point["type"] == "f32":
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise ValueError("not a number")
        return round(raw * 10 ** (-point["exp"]))
    return raw * point["scale"]


def encode(point, val):
    """Registers that ``decode`` turns into ``val`` (for an f32, val is in 10**exp units)."""
    t = point["type"]
    if t == "f32":
        r = struct.unpack(">I", struct.pack(">f", val * 10 ** point["exp"]))[0]
    else:
        raw = val // point["scale"] if point["scale"] != 1 else val
        if t in ("u8_hi", "u8_lo"):
            raise ValueError("a packed byte shares its register; write the register")
        r = raw & (0xFFFF if point["words"] == 1 else 0xFFFFFFFF)
    if point["words"] == 1:
        regs = [r]
    elif point["word_order"] == "big":
        regs = [r >> 16, r & 0xFFFF]
    else:
        regs = [r & 0xFFFF, r >> 16]
    if point["byte_order"] == "little":
        regs = [_swap16(w) for w in regs]
    return regs


def plan_reads(points, max_regs=MAX_READ_REGS, max_gap=DEFAULT_MAX_GAP):
    """Coalesce points into block reads: a list of {table, address, count, points}.

    Points of one table are sorted by address and merged while the block stays within
    ``max_regs`` registers and the hole between neighbours is at most ``max_gap`` registers.
    Several points may share a register (packed bytes).
    """
    blocks = []
    for table in TABLES:
        pts = [p for p in points if p["table"] == table]
        pts.sort(key=lambda p: (p["address"], p["id"]))
        cur = None
        for p in pts:
            end = p["address"] + p["words"]
            if cur is not None:
                cur_end = cur["address"] + cur["count"]
                new_end = end if end > cur_end else cur_end
                if p["address"] - cur_end <= max_gap and new_end - cur["address"] <= max_regs:
                    cur["count"] = new_end - cur["address"]
                    cur["points"].append(p)
                    continue
            cur = {"table": table, "address": p["address"], "count": p["words"], "points": [p]}
            blocks.append(cur)
    return blocks


def src_of(bus, unit, point):
    """The event ``src`` of a point: (bus << 24) | (unit << 16) | point (messages.FIELDS)."""
    return ((bus & 0xFF) << 24) | ((unit & 0xFF) << 16) | (point & 0xFFFF)
