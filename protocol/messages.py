"""EmberLink v1 messages: batches of events, the cloud's ack, commands and their results.

Each message is a small class with ``__slots__`` and a validating constructor, so an invalid
message cannot exist (h11's events work the same way). ``encode_*`` turns one into
deterministic CBOR; ``decode_*`` turns bytes back and raises ``MessageError`` (or
``CBORError``) with a specific reason when the bytes are not a valid message.
``protocol/schema.cddl`` is the normative contract; the tests validate what this module
produces against it.

Wire layout (all map keys are small integers, so each key is one byte):

* Batch   {0 ver, 1 gw, 2 boot, 3 seq0, 4 t0, 5 [events], ?6 ackd, ?7 flags}
* Event   {0 kind, 1 dt, 2 src, ...kind-specific keys, see FIELDS and KINDS below}
* Ack     {0 ver, 1 gw, 2 boot, 8 hwm}
* Command {0 ver, 1 gw, 9 id, 10 op, ?11 args}
* Result  {0 ver, 1 gw, 9 id, 12 result, ?13 note}

Event i of a batch has sequence number seq0 + i; its identity is (gw, boot, seq). Sample
series travel as the first value followed by deltas.

MicroPython-compatible: no dataclasses, no typing at run time, no enum.
"""

from . import cbor
from .codes import PROTOCOL_VERSION
from .errors import (
    BAD_VERSION,
    MISSING_KEY,
    NOT_A_MESSAGE,
    OUT_OF_RANGE,
    TOO_MANY,
    UNKNOWN_KEY,
    UNKNOWN_KIND,
    WRONG_TYPE,
    MessageError,
)

# Limits with their reasons.
MAX_EVENTS = 1024  # one MQTT publish; a gateway splits longer backlogs into several batches
MAX_SAMPLES = 4096  # one series: about an hour at 1 Hz
MAX_NOTE = 64  # bytes of UTF-8 in a note: a hint for people, not a document
MAX_GW_ID = 0xFFFFFFFF
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
I64_MIN = -0x8000000000000000
I64_MAX = 0x7FFFFFFFFFFFFFFF
I32_MIN = -0x80000000  # samples are scaled sensor values: 32 bits is ample
I32_MAX = 0x7FFFFFFF
EXP_MIN = -24  # value = val * 10**exp; the exponent fits in one byte
EXP_MAX = 23
MAX_BATCH_BYTES = 65536  # a decoder refuses larger payloads before parsing

# Value types of event fields.
_U = 0  # unsigned int <= 2**32-1
_I = 1  # signed int in int64
_T = 2  # text, at most MAX_NOTE bytes
_PAIR = 3  # [uint, uint]
_SUM = 4  # [min int, max int, mean int, n uint]
_SERIES = 5  # [+ int32] absolute; on the wire the first value, then deltas
_HMAP = 6  # {uint(0..23) => int}
_INFO = 7  # birth information map
_EXP = 8  # int in EXP_MIN..EXP_MAX
_STATE = 9  # uint 0..3

# key -> (attribute name, value type)
FIELDS = {
    0: ("kind", _U),
    1: ("dt", _U),  # ms after the batch's t0
    2: ("src", _U),  # (bus << 24) | (modbus unit << 16) | point; 0 = the gateway itself
    3: ("code", _U),  # condition code (codes.CONDITION_NAMES) or check type (maintenance)
    4: ("state", _STATE),  # codes.STATE_NAMES
    5: ("val", _I),  # value = val * 10**exp, in unit
    6: ("exp", _EXP),
    7: ("unit", _U),  # codes.UNIT_NAMES
    8: ("period", _U),  # sample period, ms
    9: ("samples", _SERIES),
    10: ("summary", _SUM),
    11: ("verify", _PAIR),  # alarm verification evidence: [hold ms, confirmation window ms]
    12: ("note", _T),
    13: ("actor", _U),  # operator or technician id
    14: ("result", _U),  # maintenance result: 0 pass, else a fail code
    15: ("health", _HMAP),  # codes.HEALTH_NAMES
    16: ("eflags", _U),  # codes.EVENT_FLAG_NAMES bits
    17: ("range", _PAIR),  # dropped: [first seq, last seq] evicted
    18: ("sys", _U),  # GB/T 26875.3 system type
    19: ("part", _U),  # GB/T 26875.3 component type
    20: ("info", _INFO),  # birth information
}
_KEY_OF = {}
for _k in FIELDS:
    _KEY_OF[FIELDS[_k][0]] = _k

_COND = (3, 4, 5, 6, 7, 11, 16, 18, 19)  # condition-like kinds: optional keys
_OPER = (13, 16, 18, 19)  # operator actions: optional keys

# kind -> (required keys beyond 0/1/2, optional keys)
KINDS = {
    1: ((4,), _COND),  # fire_alarm
    2: ((4,), _COND),  # pre_alarm
    3: ((4,), _COND),  # fault
    4: ((4,), _COND),  # supervisory
    5: ((4,), _COND),  # shield
    6: ((), _OPER),  # reset
    7: ((), _OPER),  # silence
    8: ((4,), _COND),  # manual_alarm
    9: ((4,), (13, 16)),  # test_mode: active = on
    10: ((4,), (3, 16, 19)),  # comms: active = lost
    11: ((8, 9), (3, 6, 7, 10, 16, 19)),  # measurement
    12: ((15,), (16,)),  # health
    13: ((20,), ()),  # birth
    14: ((), (3,)),  # death
    15: ((3, 14), (12, 13, 16, 18, 19)),  # maintenance
    16: ((17,), (3,)),  # dropped
}

_INFO_TYPES = {0: _T, 1: _U, 2: _U, 3: _U, 4: _T, 5: 100}  # 100: bytes, at most 32


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_u(v, what, limit=U32):
    if not _is_int(v):
        raise MessageError(WRONG_TYPE, what + " must be an unsigned integer")
    if v < 0 or v > limit:
        raise MessageError(OUT_OF_RANGE, what + " = " + str(v))


def _check_i(v, what):
    if not _is_int(v):
        raise MessageError(WRONG_TYPE, what + " must be an integer")
    if v < I64_MIN or v > I64_MAX:
        raise MessageError(OUT_OF_RANGE, what + " = " + str(v))


def _check_text(v, what):
    if not isinstance(v, str):
        raise MessageError(WRONG_TYPE, what + " must be text")
    if len(v.encode("utf-8")) > MAX_NOTE:
        raise MessageError(OUT_OF_RANGE, what + " longer than " + str(MAX_NOTE) + " bytes")


def _check_list(v, what, n=-1):
    if not isinstance(v, (list, tuple)):
        raise MessageError(WRONG_TYPE, what + " must be an array")
    if n >= 0 and len(v) != n:
        raise MessageError(WRONG_TYPE, what + " must have " + str(n) + " elements")


def _check_value(t, v, what):
    if t == _U:
        _check_u(v, what)
    elif t == _I:
        _check_i(v, what)
    elif t == _T:
        _check_text(v, what)
    elif t == _EXP:
        if not _is_int(v):
            raise MessageError(WRONG_TYPE, what + " must be an integer")
        if v < EXP_MIN or v > EXP_MAX:
            raise MessageError(OUT_OF_RANGE, what + " = " + str(v))
    elif t == _STATE:
        _check_u(v, what, 3)
    elif t == _PAIR:
        _check_list(v, what, 2)
        _check_u(v[0], what + "[0]")
        _check_u(v[1], what + "[1]")
    elif t == _SUM:
        _check_list(v, what, 4)
        _check_i(v[0], what + ".min")
        _check_i(v[1], what + ".max")
        _check_i(v[2], what + ".mean")
        _check_u(v[3], what + ".n")
    elif t == _SERIES:
        _check_list(v, what)
        if not v:
            raise MessageError(OUT_OF_RANGE, what + " is empty")
        if len(v) > MAX_SAMPLES:
            raise MessageError(TOO_MANY, what + " has more than " + str(MAX_SAMPLES))
        for i in range(len(v)):
            x = v[i]
            if not _is_int(x):
                raise MessageError(WRONG_TYPE, what + "[" + str(i) + "] must be an integer")
            if x < I32_MIN or x > I32_MAX:
                raise MessageError(OUT_OF_RANGE, what + "[" + str(i) + "] = " + str(x))
    elif t == _HMAP:
        if not isinstance(v, dict):
            raise MessageError(WRONG_TYPE, what + " must be a map")
        for k in v:
            _check_u(k, what + " key", 23)
            _check_i(v[k], what + "[" + str(k) + "]")
    elif t == _INFO:
        if not isinstance(v, dict):
            raise MessageError(WRONG_TYPE, what + " must be a map")
        for k in v:
            _check_u(k, what + " key", 23)
            it = _INFO_TYPES.get(k)
            if it is None:
                raise MessageError(UNKNOWN_KEY, what + " key " + str(k))
            if it == 100:
                if not isinstance(v[k], bytes) or len(v[k]) > 32:
                    raise MessageError(WRONG_TYPE, what + "[" + str(k) + "] must be <= 32 bytes")
            else:
                _check_value(it, v[k], what + "[" + str(k) + "]")


class Event:
    """One event of a batch.

    Fields (attributes, ``None`` when absent): kind, dt, src, code, state, val, exp, unit,
    period, samples (absolute values; deltas only on the wire), summary, verify, note, actor,
    result, health, eflags, range, sys, part, info. Which fields a kind requires or allows is
    the KINDS table; the constructor raises MessageError for anything else.
    """

    __slots__ = (
        "actor",
        "code",
        "dt",
        "eflags",
        "exp",
        "health",
        "info",
        "kind",
        "note",
        "part",
        "period",
        "range",
        "result",
        "samples",
        "src",
        "state",
        "summary",
        "sys",
        "unit",
        "val",
        "verify",
    )

    def __init__(self, kind, dt=0, src=0, **fields):
        for name in Event.__slots__:
            setattr(self, name, None)
        _check_u(kind, "kind")
        spec = KINDS.get(kind)
        if spec is None:
            raise MessageError(UNKNOWN_KIND, str(kind))
        self.kind = kind
        _check_u(dt, "dt")
        _check_u(src, "src")
        self.dt = dt
        self.src = src
        required, optional = spec
        for name in fields:
            key = _KEY_OF.get(name)
            v = fields[name]
            if v is None:
                continue
            if key is None or (key not in required and key not in optional):
                raise MessageError(UNKNOWN_KEY, name + " is not a field of kind " + str(kind))
            _check_value(FIELDS[key][1], v, name)
            setattr(self, name, v)
        for key in required:
            if getattr(self, FIELDS[key][0]) is None:
                raise MessageError(MISSING_KEY, FIELDS[key][0] + " for kind " + str(kind))

    def to_map(self):
        """The CBOR map of this event, as it goes on the wire."""
        m = {}
        for key in FIELDS:
            v = getattr(self, FIELDS[key][0])
            if v is None:
                continue
            if key == 9:
                v = _deltas(v)
            elif key in (10, 11, 17):
                v = list(v)
            m[key] = v
        return m

    def fields(self):
        """The present fields as a name -> value dict (wire-level values)."""
        out = {}
        for name in Event.__slots__:
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out

    def __eq__(self, other):
        return isinstance(other, Event) and self.to_map() == other.to_map()

    def __repr__(self):
        return "Event(" + repr(self.fields()) + ")"


def _deltas(samples):
    out = [samples[0]]
    for i in range(1, len(samples)):
        out.append(samples[i] - samples[i - 1])
    return out


def _undeltas(deltas):
    out = [deltas[0]]
    acc = deltas[0]
    for i in range(1, len(deltas)):
        acc += deltas[i]
        if acc < I64_MIN or acc > I64_MAX:
            raise MessageError(OUT_OF_RANGE, "samples[" + str(i) + "] leaves int64")
        out.append(acc)
    return out


def event_from_map(m, where="event"):
    """Build an Event from its decoded CBOR map; raises MessageError with the reason."""
    if not isinstance(m, dict):
        raise MessageError(WRONG_TYPE, where + " must be a map")
    if 0 not in m:
        raise MessageError(MISSING_KEY, where + ": kind")
    kind = m[0]
    _check_u(kind, where + ".kind")
    if kind not in KINDS:
        raise MessageError(UNKNOWN_KIND, where + ": " + str(kind))
    for k in (1, 2):
        if k not in m:
            raise MessageError(MISSING_KEY, where + ": " + FIELDS[k][0])
    fields = {}
    for k in m:
        if k in (0, 1, 2):
            continue
        if not _is_int(k) or k not in FIELDS:
            raise MessageError(UNKNOWN_KEY, where + ": key " + repr(k))
        v = m[k]
        if v is None:
            # absent, never null: Event() takes None as absent, so null would re-encode
            # without the key (a second encoding of one message)
            raise MessageError(WRONG_TYPE, where + ": key " + str(k) + " is null")
        if k == 9:
            _check_list(v, where + ".samples")
            if not v:
                raise MessageError(OUT_OF_RANGE, where + ".samples is empty")
            if len(v) > MAX_SAMPLES:
                raise MessageError(TOO_MANY, where + ".samples has more than " + str(MAX_SAMPLES))
            for i in range(len(v)):
                _check_i(v[i], where + ".samples[" + str(i) + "]")
            v = _undeltas(v)
        fields[FIELDS[k][0]] = v
    try:
        return Event(kind, m[1], m[2], **fields)
    except MessageError as e:
        raise MessageError(e.reason, where + ": " + str(e).split(": ", 1)[-1]) from None


class Batch:
    """One MQTT publish: the envelope and its events, in sequence order.

    gw: registry gateway number; boot: boot counter (+1 per start, persisted); seq0: the
    sequence number of events[0] (>= 1; 0 is reserved for the broker-sent will); t0: UTC ms
    of the batch base; ackd: highest seq the gateway saw acknowledged (diagnostic); flags:
    codes.BATCH_FLAG_NAMES bits.
    """

    __slots__ = ("ackd", "boot", "events", "flags", "gw", "seq0", "t0")

    def __init__(self, gw, boot, seq0, t0, events, ackd=None, flags=0):
        _check_u(gw, "gw", MAX_GW_ID)
        _check_u(boot, "boot")
        _check_u(seq0, "seq0")
        _check_u(t0, "t0", U64)
        if not isinstance(events, (list, tuple)):
            raise MessageError(WRONG_TYPE, "events must be an array")
        if not events:
            raise MessageError(OUT_OF_RANGE, "a batch holds at least one event")
        if len(events) > MAX_EVENTS:
            raise MessageError(TOO_MANY, "more than " + str(MAX_EVENTS) + " events")
        if seq0 + len(events) - 1 > U32:
            raise MessageError(OUT_OF_RANGE, "sequence numbers pass 2**32-1")
        for e in events:
            if not isinstance(e, Event):
                raise MessageError(WRONG_TYPE, "events must be Event objects")
        if ackd is not None:
            _check_u(ackd, "ackd")
        _check_u(flags, "flags", 0xFF)
        self.gw = gw
        self.boot = boot
        self.seq0 = seq0
        self.t0 = t0
        self.events = list(events)
        self.ackd = ackd
        self.flags = flags

    def seqs(self):
        """(seq, event) pairs in order."""
        return [(self.seq0 + i, self.events[i]) for i in range(len(self.events))]

    def to_map(self):
        m = {
            0: PROTOCOL_VERSION,
            1: self.gw,
            2: self.boot,
            3: self.seq0,
            4: self.t0,
            5: [e.to_map() for e in self.events],
        }
        if self.ackd is not None:
            m[6] = self.ackd
        if self.flags:
            m[7] = self.flags
        return m

    def __eq__(self, other):
        return isinstance(other, Batch) and self.to_map() == other.to_map()

    def __repr__(self):
        return "Batch(" + repr(self.to_map()) + ")"


def _check_version(m, what):
    if 0 not in m:
        raise MessageError(MISSING_KEY, what + ": ver")
    if m[0] != PROTOCOL_VERSION:
        raise MessageError(BAD_VERSION, what + ": " + repr(m[0]))


def _only_keys(m, allowed, what):
    for k in m:
        if k not in allowed:
            raise MessageError(UNKNOWN_KEY, what + ": key " + repr(k))
        if m[k] is None:
            # An optional key is absent, never null: null would be a second encoding of the
            # same message (the constructors treat None as absent).
            raise MessageError(WRONG_TYPE, what + ": key " + str(k) + " is null")


def _require(m, keys, what):
    for k in keys:
        if k not in m:
            raise MessageError(MISSING_KEY, what + ": key " + str(k))


def batch_from_map(m):
    if not isinstance(m, dict):
        raise MessageError(NOT_A_MESSAGE, "a batch is a CBOR map")
    _check_version(m, "batch")
    _only_keys(m, (0, 1, 2, 3, 4, 5, 6, 7), "batch")
    _require(m, (1, 2, 3, 4, 5), "batch")
    evs = m[5]
    if not isinstance(evs, list):
        raise MessageError(WRONG_TYPE, "batch.events must be an array")
    if len(evs) > MAX_EVENTS:
        raise MessageError(TOO_MANY, "more than " + str(MAX_EVENTS) + " events")
    events = [event_from_map(evs[i], "events[" + str(i) + "]") for i in range(len(evs))]
    flags = m.get(7, 0)
    if 7 in m and m[7] == 0:
        # Deterministic: absent and zero must not both be valid encodings.
        raise MessageError(OUT_OF_RANGE, "batch.flags = 0 must be omitted")
    return Batch(m[1], m[2], m[3], m[4], events, m.get(6), flags)


def encode_batch(batch):
    """Deterministic CBOR bytes of a Batch."""
    return cbor.dumps(batch.to_map())


def decode_batch(data):
    """Decode and validate a Batch from CBOR bytes (not MAC-wrapped)."""
    if len(data) > MAX_BATCH_BYTES:
        raise MessageError(TOO_MANY, "payload over " + str(MAX_BATCH_BYTES) + " bytes")
    return batch_from_map(cbor.loads(data))


class Ack:
    """The cloud's application ack: every seq <= hwm of (gw, boot) is durably stored."""

    __slots__ = ("boot", "gw", "hwm")

    def __init__(self, gw, boot, hwm):
        _check_u(gw, "gw", MAX_GW_ID)
        _check_u(boot, "boot")
        _check_u(hwm, "hwm")
        self.gw = gw
        self.boot = boot
        self.hwm = hwm

    def to_map(self):
        return {0: PROTOCOL_VERSION, 1: self.gw, 2: self.boot, 8: self.hwm}

    def __eq__(self, other):
        return isinstance(other, Ack) and self.to_map() == other.to_map()

    def __repr__(self):
        return "Ack(" + repr(self.to_map()) + ")"


def ack_from_map(m):
    if not isinstance(m, dict):
        raise MessageError(NOT_A_MESSAGE, "an ack is a CBOR map")
    _check_version(m, "ack")
    _only_keys(m, (0, 1, 2, 8), "ack")
    _require(m, (1, 2, 8), "ack")
    return Ack(m[1], m[2], m[8])


def encode_ack(ack):
    return cbor.dumps(ack.to_map())


def decode_ack(data):
    return ack_from_map(cbor.loads(data, 4, 16, 64))


# Command operations (key 10)
OP_REBIRTH = 1  # publish birth and a health event now
OP_TEST_MODE = 2  # args {0: state (1 on, 0 off), ?1: duration s, ?2: src (0 = whole gateway)}
OP_TIME_SYNC = 3  # args {0: UTC ms}
OP_RESET = 4  # args {?0: src}: reset latched alarms
OP_RESEND = 5  # args {0: seq, ?1: boot (default: current)}: queue stored records from seq again
OP_NAMES = {
    OP_REBIRTH: "rebirth",
    OP_TEST_MODE: "test_mode",
    OP_TIME_SYNC: "time_sync",
    OP_RESET: "reset",
    OP_RESEND: "resend",
}

# Result codes (key 12)
RES_OK = 0
RES_UNKNOWN_OP = 1
RES_BAD_ARGS = 2
RES_FAILED = 3
RESULT_NAMES = {
    RES_OK: "ok",
    RES_UNKNOWN_OP: "unknown_op",
    RES_BAD_ARGS: "bad_args",
    RES_FAILED: "failed",
}


class Command:
    """A command to one gateway (topic .../cmd). id is chosen by the cloud, unique per gw."""

    __slots__ = ("args", "gw", "id", "op")

    def __init__(self, gw, id, op, args=None):
        _check_u(gw, "gw", MAX_GW_ID)
        _check_u(id, "id")
        _check_u(op, "op")
        if args is not None:
            if not isinstance(args, dict):
                raise MessageError(WRONG_TYPE, "args must be a map")
            for k in args:
                _check_u(k, "args key", 23)
                _check_i(args[k], "args[" + str(k) + "]")
        self.gw = gw
        self.id = id
        self.op = op
        self.args = args

    def to_map(self):
        m = {0: PROTOCOL_VERSION, 1: self.gw, 9: self.id, 10: self.op}
        if self.args:
            m[11] = self.args
        return m

    def __eq__(self, other):
        return isinstance(other, Command) and self.to_map() == other.to_map()


def command_from_map(m):
    if not isinstance(m, dict):
        raise MessageError(NOT_A_MESSAGE, "a command is a CBOR map")
    _check_version(m, "command")
    _only_keys(m, (0, 1, 9, 10, 11), "command")
    _require(m, (1, 9, 10), "command")
    if 11 in m and m[11] == {}:
        # Deterministic: no args is written by omitting key 11, as Command.to_map does.
        raise MessageError(OUT_OF_RANGE, "command.args = {} must be omitted")
    return Command(m[1], m[9], m[10], m.get(11))


class Result:
    """A gateway's answer to a Command (topic .../res)."""

    __slots__ = ("gw", "id", "note", "result")

    def __init__(self, gw, id, result, note=None):
        _check_u(gw, "gw", MAX_GW_ID)
        _check_u(id, "id")
        _check_u(result, "result")
        if note is not None:
            _check_text(note, "note")
        self.gw = gw
        self.id = id
        self.result = result
        self.note = note

    def to_map(self):
        m = {0: PROTOCOL_VERSION, 1: self.gw, 9: self.id, 12: self.result}
        if self.note is not None:
            m[13] = self.note
        return m

    def __eq__(self, other):
        return isinstance(other, Result) and self.to_map() == other.to_map()


def result_from_map(m):
    if not isinstance(m, dict):
        raise MessageError(NOT_A_MESSAGE, "a result is a CBOR map")
    _check_version(m, "result")
    _only_keys(m, (0, 1, 9, 12, 13), "result")
    _require(m, (1, 9, 12), "result")
    return Result(m[1], m[9], m[12], m.get(13))


def encode(msg):
    """Deterministic CBOR of any message object."""
    return cbor.dumps(msg.to_map())


def from_map(m):
    """Any message from its decoded map, told apart by the keys only it requires."""
    if isinstance(m, dict):
        if 5 in m:
            return batch_from_map(m)
        if 8 in m:
            return ack_from_map(m)
        if 10 in m:
            return command_from_map(m)
        if 12 in m:
            return result_from_map(m)
    raise MessageError(NOT_A_MESSAGE, "no batch, ack, command or result keys")
