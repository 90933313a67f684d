"""Alarm life-cycle: one ``Condition`` per thing a point can report, and its transition table.

Rule 1 (as in h11's _state.py): every state change of a condition happens in this file, through
``TRANSITIONS``. Detectors only say what they observed -- the cause appeared (RAISE) or went
away (CLEAR); operators say ACK or RESET. A refused input changes nothing and emits nothing.

States are the wire's condition states (``codes.NORMAL`` / ``ACTIVE`` / ``ACKNOWLEDGED``).
A latching condition stays ACTIVE (or ACKNOWLEDGED) after its cause has gone, until RESET
(GB 14287.5 §5.3.4: an alarm latches until the monitoring unit is reset). A non-latching one
(pre-alarm, faults, panel pass-through) follows its cause. Events raised while the point is in
test mode carry ``EF_TEST``: they are marked, never dropped.

Each accepted transition appends ``(t_ms, Event)`` to the caller's ``out`` list; Event.dt is 0
(the gateway's outbox sets it when it batches). Only transitions allocate.
"""

from ..protocol import codes
from ..protocol.messages import Event

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


# Inputs to a condition.
RAISE = const(0)  # the detector sees the cause
CLEAR = const(1)  # the cause has gone
ACK = const(2)  # an operator acknowledged
RESET = const(3)  # an operator (or the panel) reset the point

INPUT_NAMES = {RAISE: "raise", CLEAR: "clear", ACK: "ack", RESET: "reset"}

_N = codes.NORMAL
_A = codes.ACTIVE
_K = codes.ACKNOWLEDGED

# (state, input) -> (next state when non-latching, next state when latching).
# Pairs not listed are refused: nothing changes, nothing is emitted.
TRANSITIONS = {
    (_N, RAISE): (_A, _A),
    (_A, CLEAR): (_N, _A),  # a latched alarm outlives its cause
    (_K, CLEAR): (_N, _K),
    (_A, ACK): (_K, _K),
    (_A, RESET): (_N, _N),
    (_K, RESET): (_N, _N),
}

# The same table keyed by state * 4 + input, so a lookup builds no tuple on MicroPython.
_TABLE = {}
for _key in TRANSITIONS:
    _TABLE[_key[0] * 4 + _key[1]] = TRANSITIONS[_key]


class Condition:
    """One reportable condition of a point: a kind (FIRE_ALARM, FAULT...) and a condition code.

    ``cause`` is what the detector last said (True while the cause is present); ``state`` is
    the wire state. ``unit``/``exp`` describe ``val`` in emitted events (value = val * 10**exp).
    """

    def __init__(self, point, kind, code, latching=False, unit=None, exp=None):
        self.point = point
        # kind, code, latching, unit and exp never change: packed into one small int, so a
        # condition costs four attribute slots and no tuple (a board keeps several per point)
        if not (0 < kind < 32 and 0 <= code < 128):
            raise ValueError("condition: kind " + str(kind) + " / code " + str(code))
        self.spec = (
            kind
            | code << 5
            | (4096 if latching else 0)
            | (unit or 0) << 13
            | (0 if exp is None else exp + 32) << 18
        )
        self.state = _N
        self.cause = False

    @property
    def kind(self):
        return self.spec & 31

    @property
    def code(self):
        return (self.spec >> 5) & 127

    @property
    def latching(self):
        return bool(self.spec & 4096)

    @property
    def unit(self):
        return ((self.spec >> 13) & 31) or None

    @property
    def exp(self):
        e = (self.spec >> 18) & 63
        return e - 32 if e else None

    def active(self):
        return self.state != _N

    def apply(self, inp, t_ms, val, out, verify=None, actor=None):
        """Feed one input; on an accepted transition append ``(t_ms, Event)``; return it."""
        if inp == RAISE:
            self.cause = True
        elif inp == CLEAR:
            self.cause = False
        nxt = _TABLE.get(self.state * 4 + inp)
        if nxt is None:
            return False
        kind = self.kind
        code = self.code
        latching = self.latching
        unit = self.unit
        exp = self.exp
        new = nxt[1] if latching else nxt[0]
        if new == self.state:
            return False
        self.state = new
        flags = 0
        if self.point.test:
            flags |= codes.EF_TEST
        if latching:
            flags |= codes.EF_LATCHED
        if verify is not None:
            flags |= codes.EF_VERIFIED
        ev = Event(
            kind,
            0,
            self.point.src,
            code=code,
            state=new,
            val=val,
            exp=exp if val is not None else None,
            unit=unit if val is not None else None,
            verify=verify,
            eflags=flags or None,
            part=self.point.part,
        )
        out.append((t_ms, ev))
        return True
