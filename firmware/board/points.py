"""From registers to events on the board: the Pi's translation (edge/points.py), heap-free.

Each configured point becomes a ``Pt`` built once at start. Per poll, ``Pt.update`` reads its
registers straight from the RTU master's buffer, and:

* a ``bits`` point raises the event each configured bit stands for when the bit rises and
  clears it (state normal) when it falls; on the first read only set bits are reported;
* an ``enum`` point raises its new value's event and clears the old one's;
* a numeric point whose raw value is its ``break_value``, below ``open_below`` or above
  ``short_above`` raises a FAULT (break_line 53, open_circuit 51, short_circuit 52) and its
  sample is withheld (a broken sensor is a fault, never a zero reading); otherwise the value
  feeds the point's detectors (the portable core, built by ``firmware.config.build_point``
  exactly as the Pi builds them) and a preallocated series that becomes a MEASUREMENT event
  every ``series_s``.

Detectors run on ``ticks_ms``; ``emit(event, t_ticks)`` gets the tick time. Nothing here
allocates unless an event is raised (an unchanged status word, a quiet detector and a series
append are free), which is what the memory test checks with ``micropython.heap_lock``.
"""

from array import array

from ...protocol import codes
from ...protocol.messages import MAX_SAMPLES, Event
from .compat import ticks_diff

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


T_U16 = const(0)
T_I16 = const(1)
T_U32 = const(2)
T_I32 = const(3)
T_F32 = const(4)
T_BITS = const(5)
T_U8H = const(6)
T_U8L = const(7)
T_ENUM = const(8)
TYPES = {
    "u16": T_U16,
    "i16": T_I16,
    "u32": T_U32,
    "i32": T_I32,
    "f32": T_F32,
    "bits": T_BITS,
    "u8_hi": T_U8H,
    "u8_lo": T_U8L,
    "enum": T_ENUM,
}
I32_MIN = -(2**31)
I32_MAX = 2**31 - 1


def src_of(bus, unit, point):
    return ((bus & 0xFF) << 24) | ((unit & 0xFF) << 16) | (point & 0xFFFF)


class Pt:
    """One profile point of one device: decoding, supervision, detectors, series."""

    test = False  # the device (or gateway) in test mode: alarms carry EF_TEST (set per point
    # only by a test-mode command: a class default costs the 16 points' instances nothing)

    def __init__(self, p, prof, bus, unit, period_ms, series_ms, warnings):
        self.name = p["name"]
        self.src = src_of(bus, unit, p["id"])
        self.type = TYPES[p["type"]]
        self.words = p["words"]
        self.address = p["address"]
        self.off = 0  # set per read block
        self.little = p["byte_order"] == "little"
        self.word_big = p["word_order"] == "big"
        self.scale = p["scale"]
        self.exp = p["exp"]
        self.unit = p["unit"]
        self.part = p["part"] or None
        self.sys = prof["sys"] or None
        self.break_value = p.get("break_value")
        self.open_below = p.get("open_below")
        self.short_above = p.get("short_above")
        # (bit, kind, code) and value -> (kind, code): not the configuration's dicts, which
        # the application lets go once the points are built
        self.bits = tuple((b["bit"], b["kind"], b["code"]) for b in p.get("bits") or ())
        self.values = {}
        for v in p.get("values") or []:
            if v["kind"] is not None:
                self.values[v["value"]] = (v["kind"], v["code"])
        self.last = -1  # last status word / enum value; -1: nothing seen
        self.fault = 0  # active sensor-fault condition code
        self.det = None
        if p.get("detector"):
            from ..config import build_point  # at start only: app.py drops the builder after

            pp = build_point(self.src, p, p.get("detectors") or {})
            warnings.extend(pp.warnings)
            self.det = pp.point
        self.period = period_ms
        self.series_ms = series_ms
        cap = series_ms // period_ms + 2
        self.series = array("i", [0] * min(cap, MAX_SAMPLES))
        self.n = 0
        self.t0 = 0

    def raw(self, regs, base):
        i = base + self.off
        w = regs[i]
        if self.little:
            w = ((w & 0xFF) << 8) | (w >> 8)
        t = self.type
        if self.words == 2:
            w2 = regs[i + 1]
            if self.little:
                w2 = ((w2 & 0xFF) << 8) | (w2 >> 8)
            r = (w << 16) | w2 if self.word_big else (w2 << 16) | w
            if t == T_I32 and r & 0x80000000:
                return r - 0x100000000
            if t == T_F32:
                import struct

                return struct.unpack(">f", struct.pack(">I", r))[0]
            return r
        if t == T_I16:
            return w - 0x10000 if w & 0x8000 else w
        if t == T_U8H:
            return w >> 8
        if t == T_U8L:
            return w & 0xFF
        return w

    def _cond(self, emit, kind, code, on, t):
        # in test mode an alarm-class event says so (the Pi's PointTranslator._out): a test,
        # not a fire; the detectors' own events are marked by the core (Point.set_test)
        test = self.test and kind in codes.PRIORITY_KINDS
        plain = kind == codes.TEST_MODE  # a panel's test bit: test_mode has no code, sys, part
        ev = Event(
            kind,
            0,
            self.src,
            state=codes.ACTIVE if on else codes.NORMAL,
            code=None if plain else code,
            sys=None if plain else self.sys,
            part=None if plain else self.part,
            eflags=codes.EF_TEST if test else None,
        )
        emit(ev, t)

    def update(self, regs, base, t, emit, out):
        """One fresh reading at ``t`` (ticks); events go to ``emit(event, t_ticks)``."""
        typ = self.type
        if typ == T_BITS:
            w = self.raw(regs, base)
            prev = self.last
            if w == prev:
                return
            self.last = w
            for bit, kind, code in self.bits:
                on = (w >> bit) & 1
                if prev < 0:
                    if on:
                        self._cond(emit, kind, code, True, t)
                elif on != (prev >> bit) & 1:
                    self._cond(emit, kind, code, bool(on), t)
            return
        if typ == T_ENUM:
            v = self.raw(regs, base)
            prev = self.last
            if v == prev:
                return
            self.last = v
            old = self.values.get(prev)
            new = self.values.get(v)
            if old is not None:
                self._cond(emit, old[0], old[1], False, t)
            if new is not None:
                self._cond(emit, new[0], new[1], True, t)
            return
        raw = self.raw(regs, base)
        fault = 0
        if self.break_value is not None and raw == self.break_value:
            fault = 53  # break_line
        elif self.open_below is not None and raw < self.open_below:
            fault = 51  # open_circuit
        elif self.short_above is not None and raw > self.short_above:
            fault = 52  # short_circuit
        if fault != self.fault:
            if self.fault:
                self._cond(emit, codes.FAULT, self.fault, False, t)
            if fault:
                self._cond(emit, codes.FAULT, fault, True, t)
            self.fault = fault
        if fault:
            return
        if typ == T_F32:
            if raw != raw or raw in (float("inf"), float("-inf")):
                return
            val = round(raw * 10 ** (-self.exp))
        else:
            val = raw * self.scale
        d = self.det
        if d is not None:
            d.feed(t, val, out)
            if out:
                for i in range(len(out)):
                    emit(out[i][1], out[i][0])
                out.clear()
        if self.n == 0:
            self.t0 = t
        if val < I32_MIN:
            val = I32_MIN
        elif val > I32_MAX:
            val = I32_MAX
        self.series[self.n] = val
        self.n += 1
        if ticks_diff(t, self.t0) + self.period >= self.series_ms or self.n >= len(self.series):
            self.flush(emit)

    def flush(self, emit):
        """The series so far as one MEASUREMENT event (allocates: once per ``series_s``)."""
        if not self.n:
            return
        samples = [self.series[i] for i in range(self.n)]
        self.n = 0
        ev = Event(
            codes.MEASUREMENT,
            0,
            self.src,
            period=self.period,
            samples=samples,
            exp=self.exp or None,
            unit=self.unit,
            part=self.part,
        )
        emit(ev, self.t0)

    def stale(self):
        """The device was lost: re-report status words when it answers again."""
        self.last = -1


class Read:
    """One block read of one device, polled every ``period`` ms."""

    def __init__(self, dev, block, prio, period, pts):
        self.dev = dev
        self.fc = 3 if block["table"] == "holding" else 4
        self.address = block["address"]
        self.count = block["count"]
        self.prio = prio
        self.period = period
        self.due = 0
        self.pts = pts
        for p in pts:
            p.off = p.address - self.address
