"""From registers to events: status words passed through, sensor faults, series, detectors.

* A ``bits`` point raises the event each configured bit stands for (fire alarm, fault,
  supervisory, shield, manual alarm, test mode) when the bit rises, and clears it (state normal)
  when it falls. On the first read after start only bits that are set are reported.
* An ``enum`` point raises the event of its new value and clears the old one's.
* A numeric point whose raw value is its ``break_value`` (sensor break), below ``open_below``
  or above ``short_above`` raises a FAULT (break_line, open_circuit, short_circuit) and its
  sample is withheld: a broken sensor is a fault, never a zero reading.
* Valid numeric samples are fed to the point's detectors (edge/detect.py) and collected into a
  MEASUREMENT series flushed every ``series_s``.
* Device communication lost/restored become COMMS events; exception faults FAULT events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from emberlink.protocol import codes
from emberlink.protocol import profile as schema
from emberlink.protocol.messages import FIELDS, KINDS, MAX_SAMPLES, Event

from .detect import Detectors
from .poller import Device

log = logging.getLogger("emberlink.points")

Emit = Callable[[Event, int], None]


class _Series:
    __slots__ = ("exp", "part", "period", "samples", "t0", "unit")

    def __init__(self, t0: int, period: int, exp: int, unit: int | None, part: int) -> None:
        self.t0 = t0
        self.period = period
        self.exp = exp
        self.unit = unit
        self.part = part
        self.samples: list[int] = []


class PointTranslator:
    """The gateway's ``PollSink``: turns poll results into events through ``emit``."""

    def __init__(self, emit: Emit, series_s: int = 60, detectors: Detectors | None = None) -> None:
        self.emit = emit
        self.series_ms = series_s * 1000
        self.detectors = detectors
        self._last: dict[int, int] = {}  # src -> last status word / enum value
        self._fault: dict[int, int] = {}  # src -> active sensor-fault condition code
        self._series: dict[int, _Series] = {}
        self.events = 0
        self.test_all = False  # the whole gateway is in test mode
        self.test_srcs: set[int] = set()  # devices (src with point 0) in test mode

    def _out(self, kind: int, t_ms: int, src: int, **fields: Any) -> None:
        # only the fields this kind carries (test_mode, for one, has no code, sys or part)
        req, opt = KINDS[kind]
        allowed = {FIELDS[k][0] for k in (*req, *opt)}
        if kind in codes.PRIORITY_KINDS and self.in_test(src):
            fields["eflags"] = (fields.get("eflags") or 0) | codes.EF_TEST  # a test, not a fire
        self.events += 1
        self.emit(Event(kind, 0, src, **{k: v for k, v in fields.items() if k in allowed}), t_ms)

    def in_test(self, src: int) -> bool:
        return self.test_all or (src & 0xFFFF0000) in self.test_srcs

    # --- PollSink --------------------------------------------------------------------------------
    def on_block(self, dev: Device, block: dict[str, Any], regs: list[int], t_ms: int) -> None:
        prof = dev.cfg.profile
        for p in block["points"]:
            off = p["address"] - block["address"]
            r = regs[off : off + p["words"]]
            src = schema.src_of(dev.bus, dev.unit, p["id"])
            try:
                if p["type"] == "bits":
                    self._bits(p, prof, src, r[0], t_ms)
                elif p["type"] == "enum":
                    self._enum(p, prof, src, r[0], t_ms)
                else:
                    self._value(dev, p, prof, src, r, t_ms)
            except (ValueError, TypeError) as e:  # a value the codec refuses: log, never crash
                log.warning("%s point %s: %s", dev.name, p["name"], e)

    def on_comms(self, dev: Device, lost: bool, code: int, t_ms: int) -> None:
        state = codes.ACTIVE if lost else codes.NORMAL
        part = dev.cfg.profile["part"] or None
        # The last known status words are kept: when the device answers again, a bit that fell
        # while it was silent raises its NORMAL event and one that rose its ACTIVE event.
        self._out(codes.COMMS, t_ms, dev.src, state=state, code=code or None, part=part)

    def on_device_fault(self, dev: Device, exc_code: int, active: bool, t_ms: int) -> None:
        state = codes.ACTIVE if active else codes.NORMAL
        prof = dev.cfg.profile
        self._out(
            codes.FAULT, t_ms, dev.src, state=state, code=57, sys=prof["sys"] or None,
            part=prof["part"] or None,
        )  # fmt: skip

    # --- point kinds -----------------------------------------------------------------------------
    def _cond(self, kind: int, code: int, on: bool, p: dict[str, Any], prof: dict[str, Any],
              src: int, t_ms: int) -> None:  # fmt: skip
        self._out(
            kind, t_ms, src, state=codes.ACTIVE if on else codes.NORMAL, code=code,
            sys=prof["sys"] or None, part=p["part"] or None,
        )  # fmt: skip

    def _bits(self, p: dict[str, Any], prof: dict[str, Any], src: int, word: int, t: int) -> None:
        prev = self._last.get(src)
        self._last[src] = word
        if prev == word:
            return
        for b in p["bits"]:
            on = bool(word >> b["bit"] & 1)
            was = None if prev is None else bool(prev >> b["bit"] & 1)
            if on == was or (was is None and not on):
                continue
            self._cond(b["kind"], b["code"], on, p, prof, src, t)

    def _enum(self, p: dict[str, Any], prof: dict[str, Any], src: int, v: int, t: int) -> None:
        prev = self._last.get(src)
        self._last[src] = v
        if prev == v:
            return
        by_value = {e["value"]: e for e in p["values"]}
        old = by_value.get(prev) if prev is not None else None
        new = by_value.get(v)
        if new is None:
            log.warning("point %s: value %d is not in its enum", p["name"], v)
        if old is not None and old["kind"] is not None:
            self._cond(old["kind"], old["code"], False, p, prof, src, t)
        if new is not None and new["kind"] is not None:
            self._cond(new["kind"], new["code"], True, p, prof, src, t)

    def _sensor_fault(self, p: dict[str, Any], regs: list[int]) -> int:
        raw = regs[0]
        if p["break_value"] is not None and raw == p["break_value"]:
            return 53  # break_line
        val = schema.decode_raw(p, regs)
        if p["open_below"] is not None and val < p["open_below"]:
            return 51  # open_circuit
        if p["short_above"] is not None and val > p["short_above"]:
            return 52  # short_circuit
        return 0

    def _value(self, dev: Device, p: dict[str, Any], prof: dict[str, Any], src: int,
               r: list[int], t: int) -> None:  # fmt: skip
        fault = self._sensor_fault(p, r)
        was = self._fault.get(src, 0)
        if fault != was:
            if was:
                self._cond(codes.FAULT, was, False, p, prof, src, t)
            if fault:
                self._cond(codes.FAULT, fault, True, p, prof, src, t)
                self._fault[src] = fault
            else:
                self._fault.pop(src, None)
        if fault:
            return
        val = schema.decode(p, r)
        if self.detectors is not None:
            for ev, at in self.detectors.feed(src, val, t):
                self.events += 1
                self.emit(ev, at)
        period = dev.cfg.telemetry_ms or prof["poll"]["telemetry_ms"]
        if p["class"] == "status":
            period = dev.cfg.status_ms or prof["poll"]["status_ms"]
        s = self._series.get(src)
        if s is None:
            s = self._series[src] = _Series(t, period, p["exp"], p["unit"], p["part"])
        s.samples.append(max(-(2**31), min(2**31 - 1, int(val))))
        if t - s.t0 + period >= self.series_ms or len(s.samples) >= MAX_SAMPLES:
            self._flush(src, s)

    def _flush(self, src: int, s: _Series) -> None:
        del self._series[src]
        self._out(
            codes.MEASUREMENT, s.t0, src, period=s.period, samples=s.samples,
            exp=s.exp or None, unit=s.unit, part=s.part or None,
        )  # fmt: skip

    def flush_all(self) -> None:
        """Emit every partial series now (shutdown)."""
        for src, s in list(self._series.items()):
            self._flush(src, s)

    def flush_stale(self, now_ms: int) -> None:
        """Emit series that stopped growing (their device went silent) once they are due."""
        for src, s in list(self._series.items()):
            if now_ms - s.t0 >= self.series_ms + s.period:
                self._flush(src, s)
