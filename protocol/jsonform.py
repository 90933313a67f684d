"""The readable JSON form of EmberLink messages, and back, losslessly.

``to_json(msg)`` names every code (kinds, states, units, GB/T 26875.3 types, flags) and spells
sources as ``{"bus", "unit", "point"}``; ``from_json(obj)`` accepts that form (names or raw
codes) and rebuilds the message, so ``encode(from_json(to_json(decode(b)))) == b`` for every
valid message. ``emberlink decode``/``encode`` and the golden vectors use this form.

Decoded batches show each event's ``seq``; on the way back it is checked, not needed.
A MAC-wrapped batch is ``{"cose_mac0": {"alg", "kid", "tag"}, "batch": {...}}``.

MicroPython-compatible (uses binascii rather than bytes.hex).
"""

import binascii

from . import codes, mac, messages
from .errors import MISSING_KEY, NOT_A_MESSAGE, UNKNOWN_KEY, WRONG_TYPE, MessageError


def _hex(b):
    return binascii.hexlify(b).decode()


def _unhex(s, what):
    if not isinstance(s, str):
        raise MessageError(WRONG_TYPE, what + " must be a hex string")
    try:
        return binascii.unhexlify(s)
    except ValueError:
        raise MessageError(WRONG_TYPE, what + " is not valid hex") from None


def src_to_json(src):
    if src == 0:
        return "gateway"
    return {"bus": src >> 24, "unit": (src >> 16) & 0xFF, "point": src & 0xFFFF}


def src_from_json(v):
    if v == "gateway":
        return 0
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, dict):
        raise MessageError(WRONG_TYPE, 'src must be "gateway", an int or {bus, unit, point}')
    for k in v:
        if k not in ("bus", "unit", "point"):
            raise MessageError(UNKNOWN_KEY, "src." + k)
    bus = v.get("bus", 0)
    unit = v.get("unit", 0)
    point = v.get("point", 0)
    for name, x, hi in (("bus", bus, 0xFF), ("unit", unit, 0xFF), ("point", point, 0xFFFF)):
        if not isinstance(x, int) or isinstance(x, bool) or x < 0 or x > hi:
            raise MessageError(WRONG_TYPE, "src." + name + " must be an int in 0.." + str(hi))
    return (bus << 24) | (unit << 16) | point


# Field name -> code table for fields shown by name.
_NAMED = {
    "state": codes.STATE_NAMES,
    "unit": codes.UNIT_NAMES,
    "sys": codes.SYSTEM_NAMES,
    "part": codes.PART_NAMES,
}


def _code_json(kind, name, v):
    if name in _NAMED:
        return codes.name_of(_NAMED[name], v)
    if name == "code" and kind != codes.MAINTENANCE:
        return codes.name_of(codes.CONDITION_NAMES, v)
    return v


def _code_back(kind, name, v):
    if name in _NAMED:
        return codes.code_of(_NAMED[name], v, name)
    if name == "code" and kind != codes.MAINTENANCE:
        return codes.code_of(codes.CONDITION_NAMES, v, name)
    return v


def _map_json(table, m):
    out = {}
    for k in sorted(m):
        out[codes.name_of(table, k)] = m[k]
    return out


def _map_back(table, d, what):
    if not isinstance(d, dict):
        raise MessageError(WRONG_TYPE, what + " must be an object")
    out = {}
    for k in d:
        out[codes.code_of(table, k, what)] = d[k]
    return out


def _info_json(info):
    out = {}
    for k in sorted(info):
        v = info[k]
        name = codes.name_of(codes.INFO_NAMES, k)
        if k == 1:
            v = codes.name_of(codes.PLATFORM_NAMES, v)
        elif k == 2:
            v = codes.flag_names(codes.CAP_NAMES, v)
        elif k in codes.INFO_BYTES_KEYS:
            v = _hex(v)
        out[name] = v
    return out


def _info_back(d):
    if not isinstance(d, dict):
        raise MessageError(WRONG_TYPE, "info must be an object")
    out = {}
    for name in d:
        k = codes.code_of(codes.INFO_NAMES, name, "info")
        v = d[name]
        if k == 1:
            v = codes.code_of(codes.PLATFORM_NAMES, v, "info.platform")
        elif k == 2:
            v = codes.flag_bits(codes.CAP_NAMES, v, "info.caps") if isinstance(v, list) else v
        elif k in codes.INFO_BYTES_KEYS:
            v = _unhex(v, "info." + name)
        out[k] = v
    return out


def event_to_json(e, seq=None):
    out = {}
    if seq is not None:
        out["seq"] = seq
    out["kind"] = codes.name_of(codes.KIND_NAMES, e.kind)
    out["dt"] = e.dt
    out["src"] = src_to_json(e.src)
    for name in messages.Event.__slots__:
        if name in ("kind", "dt", "src"):
            continue
        v = getattr(e, name)
        if v is None:
            continue
        if name == "summary":
            v = {"min": v[0], "max": v[1], "mean": v[2], "n": v[3]}
        elif name == "verify":
            v = {"hold_ms": v[0], "window_ms": v[1]}
        elif name == "range":
            v = {"first": v[0], "last": v[1]}
        elif name == "health":
            v = _map_json(codes.HEALTH_NAMES, v)
        elif name == "info":
            v = _info_json(v)
        elif name == "eflags":
            name = "flags"
            v = codes.flag_names(codes.EVENT_FLAG_NAMES, v)
        elif name == "samples":
            v = list(v)
        else:
            v = _code_json(e.kind, name, v)
        out[name] = v
    return out


def _pair(d, a, b, what):
    if not isinstance(d, dict):
        return d
    for k in d:
        if k not in (a, b):
            raise MessageError(UNKNOWN_KEY, what + "." + k)
    if a not in d or b not in d:
        raise MessageError(MISSING_KEY, what + " needs " + a + " and " + b)
    return [d[a], d[b]]


def event_from_json(d, seq=None):
    if not isinstance(d, dict):
        raise MessageError(WRONG_TYPE, "an event must be an object")
    if "kind" not in d:
        raise MessageError(MISSING_KEY, "event kind")
    try:
        kind = codes.code_of(codes.KIND_NAMES, d["kind"], "kind")
    except ValueError as e:
        raise MessageError(messages.UNKNOWN_KIND, str(e)) from None
    fields = {}
    for name in d:
        v = d[name]
        if name in ("kind", "dt", "src"):
            continue
        if name == "seq":
            if seq is not None and v != seq:
                raise MessageError(WRONG_TYPE, "seq " + str(v) + " where " + str(seq) + " is due")
            continue
        if name == "summary":
            if isinstance(v, dict):
                v = [v.get("min"), v.get("max"), v.get("mean"), v.get("n")]
        elif name == "verify":
            v = _pair(v, "hold_ms", "window_ms", "verify")
        elif name == "range":
            v = _pair(v, "first", "last", "range")
        elif name == "health":
            v = _map_back(codes.HEALTH_NAMES, v, "health")
        elif name == "info":
            v = _info_back(v)
        elif name == "flags":
            name = "eflags"
            if isinstance(v, list):
                v = codes.flag_bits(codes.EVENT_FLAG_NAMES, v, "flags")
        elif name in messages.Event.__slots__:
            v = _code_back(kind, name, v)
        else:
            raise MessageError(UNKNOWN_KEY, "event field " + repr(name))
        fields[name] = v
    return messages.Event(kind, d.get("dt", 0), src_from_json(d.get("src", 0)), **fields)


def to_json(msg):
    """Readable JSON-ready dict of a Batch, Ack, Command or Result."""
    if isinstance(msg, messages.Batch):
        out = {"ver": codes.PROTOCOL_VERSION, "gw": msg.gw, "boot": msg.boot, "seq0": msg.seq0}
        out["t0"] = msg.t0
        if msg.ackd is not None:
            out["ackd"] = msg.ackd
        if msg.flags:
            out["flags"] = codes.flag_names(codes.BATCH_FLAG_NAMES, msg.flags)
        out["events"] = [event_to_json(e, s) for s, e in msg.seqs()]
        return out
    if isinstance(msg, messages.Ack):
        return {"ack": {"gw": msg.gw, "boot": msg.boot, "hwm": msg.hwm}}
    if isinstance(msg, messages.Command):
        c = {"gw": msg.gw, "id": msg.id, "op": codes.name_of(messages.OP_NAMES, msg.op)}
        if msg.args:
            c["args"] = {str(k): msg.args[k] for k in sorted(msg.args)}
        return {"command": c}
    if isinstance(msg, messages.Result):
        r = {"gw": msg.gw, "id": msg.id}
        r["result"] = codes.name_of(messages.RESULT_NAMES, msg.result)
        if msg.note is not None:
            r["note"] = msg.note
        return {"result": r}
    raise MessageError(NOT_A_MESSAGE, type(msg).__name__)


def _need(d, keys, what):
    if not isinstance(d, dict):
        raise MessageError(WRONG_TYPE, what + " must be an object")
    for k in keys:
        if k not in d:
            raise MessageError(MISSING_KEY, what + "." + k)


def _arg_key(k):
    # JSON object keys are strings: "0".."23" name the args keys
    if isinstance(k, int) and not isinstance(k, bool):
        return k
    # (str.isdigit() would also take superscripts, which int() refuses)
    if not isinstance(k, str) or not k or not all(c in "0123456789" for c in k):
        raise MessageError(WRONG_TYPE, "command.args keys are numbers 0..23, not " + repr(k))
    return int(k)


def from_json(d):
    """Rebuild the message of a readable JSON dict (see to_json)."""
    if not isinstance(d, dict):
        raise MessageError(NOT_A_MESSAGE, "expected a JSON object")
    if "events" in d:
        for k in d:
            if k not in ("ver", "gw", "boot", "seq0", "t0", "ackd", "flags", "events"):
                raise MessageError(UNKNOWN_KEY, "batch." + k)
        _need(d, ("gw", "boot", "seq0", "t0"), "batch")
        if d.get("ver", codes.PROTOCOL_VERSION) != codes.PROTOCOL_VERSION:
            raise MessageError(messages.BAD_VERSION, repr(d.get("ver")))
        evs = d["events"]
        if not isinstance(evs, list):
            raise MessageError(WRONG_TYPE, "events must be an array")
        seq0 = d["seq0"]
        seq_ok = isinstance(seq0, int)
        events = []
        for i in range(len(evs)):
            events.append(event_from_json(evs[i], seq0 + i if seq_ok else None))
        flags = d.get("flags", 0)
        if isinstance(flags, list):
            flags = codes.flag_bits(codes.BATCH_FLAG_NAMES, flags, "flags")
        return messages.Batch(d["gw"], d["boot"], seq0, d["t0"], events, d.get("ackd"), flags)
    if "ack" in d:
        a = d["ack"]
        _need(a, ("gw", "boot", "hwm"), "ack")
        return messages.Ack(a["gw"], a["boot"], a["hwm"])
    if "command" in d:
        c = d["command"]
        _need(c, ("gw", "id", "op"), "command")
        args = c.get("args")
        if isinstance(args, dict):
            args = {_arg_key(k): args[k] for k in args}
        op = codes.code_of(messages.OP_NAMES, c["op"], "op")
        return messages.Command(c["gw"], c["id"], op, args)
    if "result" in d:
        r = d["result"]
        _need(r, ("gw", "id", "result"), "result")
        res = codes.code_of(messages.RESULT_NAMES, r["result"], "result")
        return messages.Result(r["gw"], r["id"], res, r.get("note"))
    raise MessageError(NOT_A_MESSAGE, "no events, ack, command or result")


def decode_to_json(data, key=None):
    """Readable JSON dict of any wire payload; a COSE_Mac0 shows its envelope.

    With ``key`` the MAC is verified ("verified": true) or MacError is raised.
    """
    if mac.is_mac0(data):
        env = mac.unwrap(data)
        verified = None
        if key is not None:
            env.verify(key)
            verified = True
        m = {"alg": codes.name_of(mac.ALG_NAMES, env.alg)}
        m["kid"] = _hex(env.kid) if env.kid is not None else None
        m["tag"] = _hex(env.tag)
        if verified is not None:
            m["verified"] = verified
        return {"cose_mac0": m, "batch": to_json(messages.decode_batch(env.payload))}
    from . import cbor

    return to_json(messages.from_map(cbor.loads(data)))


def encode_from_json(d, key=None):
    """Wire bytes of a readable JSON dict. A ``cose_mac0`` envelope is rebuilt from its tag,
    or recomputed when ``key`` is given."""
    if isinstance(d, dict) and "cose_mac0" in d:
        m = d["cose_mac0"]
        if not isinstance(m, dict) or "batch" not in d:
            raise MessageError(WRONG_TYPE, "cose_mac0 needs an object and a batch")
        alg = codes.code_of(mac.ALG_NAMES, m.get("alg", mac.ALG_HMAC256_256), "alg")
        kid = m.get("kid")
        kid = _unhex(kid, "kid") if kid is not None else None
        payload = messages.encode(from_json(d["batch"]))
        if key is not None:
            return mac.wrap(payload, key, alg, kid)
        if "tag" not in m:
            raise MessageError(MISSING_KEY, "cose_mac0.tag (or give a key)")
        return mac.with_tag(payload, alg, kid, _unhex(m["tag"], "tag"))
    return messages.encode(from_json(d))
