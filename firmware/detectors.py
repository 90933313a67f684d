# mypy: disable-error-code="union-attr"
# (Overcurrent holds None for a stage it does not run; every use checks the stage first)
"""Detector functions: each turns (t_ms, dt_ms, sample) into inputs to its conditions.

Every detector has ``step(t, dt, x, out)`` (the per-sample path: integers only, allocates
nothing unless a condition changes state), ``conditions`` (its ``lifecycle.Condition``s) and
``restart()`` (forget timers after an operator reset, so a cause still present is detected
afresh). A detector with ``quiet = True`` also has ``quiet_below()`` -- samples below it
change nothing now, None while it is busy -- and its ``step`` returns that bound as it stands
after the sample (one call a sample for the point's quiet paths instead of two); any other
detector's ``step`` returns None. Thresholds are given in the sample's fixed-point units;
``config.py`` documents them and names the standard each default comes from.

Times: ``t`` is monotonic ms; only differences modulo 2**30 are used (``elapsed``), so a board
can pass ``time.ticks_ms()`` directly and nothing becomes a long int.
"""

from array import array

from ..protocol import codes
from .lifecycle import CLEAR, RAISE, Condition
from .ring import _MICROPYTHON, DTDELAY_, DTDROP_, DTON_, DTP_, DTT0_, OCSPEC_

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


TICKS_MASK = const(0x3FFFFFFF)  # monotonic ms wrap like time.ticks_ms() on a board


def elapsed(t, t0):
    """ms from ``t0`` to ``t`` modulo 2**30 (wrap-safe for intervals below ~12 days)."""
    return (t - t0) & TICKS_MASK


class Threshold:
    """Level alarm with a hold delay and hysteresis, plus an optional pre-warning level.

    Raises ``alarm`` when x >= ``level`` continuously for ``delay_ms``; the cause goes away
    when x < ``clear``. The pre-warning works the same way with its own levels.
    """

    quiet = True  # knows when it is idle: Point.feed_block may skip it (quiet_below)

    def __init__(
        self,
        point,
        kind,
        code,
        level,
        clear,
        delay_ms,
        latching,
        pre=None,
        pre_clear=None,
        pre_delay_ms=0,
    ):
        self.alarm = Condition(point, kind, code, latching, point.unit, point.exp)
        self.level = level
        self.clear = clear
        self.delay = delay_ms
        self.timing = False
        self.t0 = 0
        self.pre = None
        self.conditions = [self.alarm]
        if pre is not None:
            self.pre = Condition(point, codes.PRE_ALARM, code, False, point.unit, point.exp)
            self.conditions.append(self.pre)
        self.pre_level = pre if pre is not None else 0
        self.pre_clear = pre_clear if pre_clear is not None else 0
        self.pre_delay = pre_delay_ms
        self.pre_timing = False
        self.pre_t0 = 0

    def restart(self):
        self.timing = False
        self.pre_timing = False

    def quiet_below(self):
        """Samples below this change nothing now (None: busy). For Point.feed_block."""
        if self.timing or self.alarm.cause:
            return None
        if self.pre is None:
            return self.level
        if self.pre_timing or self.pre.cause:
            return None
        return self.pre_level if self.pre_level < self.level else self.level

    def quiet_done(self):
        pass

    def step(self, t, dt, x, out):
        c = self.alarm
        if x >= self.level:
            if not c.cause:
                if not self.timing:
                    self.timing = True
                    self.t0 = t
                if elapsed(t, self.t0) >= self.delay:
                    c.apply(RAISE, t, x, out)
        else:
            self.timing = False
            if c.cause and x < self.clear:
                c.apply(CLEAR, t, x, out)
        p = self.pre
        if p is not None:
            if x >= self.pre_level:
                if not p.cause:
                    if not self.pre_timing:
                        self.pre_timing = True
                        self.pre_t0 = t
                    if elapsed(t, self.pre_t0) >= self.pre_delay:
                        p.apply(RAISE, t, x, out)
            else:
                self.pre_timing = False
                if p.cause and x < self.pre_clear:
                    p.apply(CLEAR, t, x, out)
        return self.quiet_below()


class ResidualCurrent(Threshold):
    """Residual-current alarm (GB 14287.2) with a natural-leakage margin check.

    Besides the level alarm it tracks the highest leakage seen below the pre-warning (or
    alarm) level over the last one to two ``leak_period_ms`` (two-bucket max, 24 h default)
    and raises a SUPERVISORY residual_current condition when the setpoint is below ``margin``
    times that natural leakage (GB 50116-2013 §9.2.3 commentary; Acrel: setting >= 2x the
    maximum normal leakage).
    """

    quiet = False  # tracks the leakage on every sample: never skipped

    def __init__(
        self,
        point,
        kind,
        level,
        clear,
        delay_ms,
        latching,
        pre,
        pre_clear,
        pre_delay_ms,
        margin,
        leak_period_ms,
    ):
        Threshold.__init__(
            self, point, kind, 4, level, clear, delay_ms, latching, pre, pre_clear, pre_delay_ms
        )
        self.margin_cond = Condition(point, codes.SUPERVISORY, 4, False, point.unit, point.exp)
        self.conditions.append(self.margin_cond)
        self.margin = margin
        self.period = leak_period_ms
        self.natural = pre if pre is not None else level
        self.cur = 0
        self.prev = 0
        self.b0 = 0
        self.started = False

    def step(self, t, dt, x, out):  # (returns None: never quiet)
        Threshold.step(self, t, dt, x, out)
        if not self.started:
            self.started = True
            self.b0 = t
        elif elapsed(t, self.b0) >= self.period:
            self.prev = self.cur
            self.cur = 0
            self.b0 = t
        if x < self.natural and x > self.cur:
            self.cur = x
        peak = self.cur if self.cur > self.prev else self.prev
        low = self.level < self.margin * peak
        mc = self.margin_cond
        if low != mc.cause:
            mc.apply(RAISE if low else CLEAR, t, peak, out)


class RateOfRise:
    """Heat rate-of-rise (EN 54-5 class R): slope over a sliding ``window_ms`` >= ``rate``.

    Keeps ``ANCHORS`` (t, x) points, one every window/ANCHORS ms; the slope is taken against
    the oldest anchor once at least half the window is covered. ``rate`` is in sample units
    per minute (0.1 K/min). Only above ``t_min`` (class typical application temperature).
    """

    ANCHORS = 8

    def __init__(self, point, kind, rate, window_ms, t_min, latching):
        self.alarm = Condition(point, kind, 3, latching, 15, point.exp)  # unit Cel/min
        self.conditions = [self.alarm]
        self.rate = rate
        self.window = window_ms
        self.every = window_ms // self.ANCHORS
        self.t_min = t_min
        self.at = array("i", bytes(4 * self.ANCHORS))
        self.ax = array("i", bytes(4 * self.ANCHORS))
        self.restart()

    def restart(self):
        self.n = 0  # anchors held
        self.head = 0  # oldest anchor
        self.last = 0  # newest anchor time

    def step(self, t, dt, x, out):
        a = self.ANCHORS
        tm = t & TICKS_MASK
        if self.n == 0 or elapsed(tm, self.last) >= self.every:
            j = self.head + self.n
            if j >= a:
                j -= a
            if self.n == a:
                self.head = self.head + 1 if self.head + 1 < a else 0
            else:
                self.n += 1
            self.at[j] = tm
            self.ax[j] = x
            self.last = tm
        # Drop anchors older than the window.
        while self.n > 1 and elapsed(tm, self.at[self.head]) > self.window:
            self.head = self.head + 1 if self.head + 1 < a else 0
            self.n -= 1
        span = elapsed(tm, self.at[self.head])
        rise = x - self.ax[self.head]
        # rise [units] * 60000 / span [ms] >= rate [units/min], without dividing
        fast = (
            span * 2 >= self.window
            and span <= self.window  # (keeps rate * span inside 30 bits)
            and x >= self.t_min
            and rise * 60000 >= self.rate * span
        )
        c = self.alarm
        if fast:
            if not c.cause:
                c.apply(RAISE, t, rise * 60000 // span, out)
        elif c.cause:
            c.apply(CLEAR, t, rise * 60000 // span if span else 0, out)


# Smoke verification states
_V_IDLE = const(0)
_V_RETARD = const(1)  # retard + reset + restart: readings ignored until it ends
_V_CONFIRM = const(2)  # confirmation window: any re-alarm is an immediate, verified alarm


class Smoke:
    """Analog smoke: pre-alarm, alarm (optionally verified), drift compensation.

    ``x`` is the raw chamber reading (0.001 dB/m). The clean-air ``base`` follows x slowly
    (time constant ``tau_ms``) while x < base + pre-alarm margin, and is frozen otherwise (a
    slow smoulder must not be compensated away). The alarm compares ``x - base`` with the
    levels. Compensation % = (base - base_min) * 100 / (base_max - base_min): >= ``maint_pct``
    raises a SUPERVISORY drift_compensation alert, >= 100 % a SUPERVISORY maintenance_due
    (urgent), <= ``low_pct`` a FAULT low_chamber (Notifier pattern, standards.md §4.3).
    """

    def __init__(
        self,
        point,
        kind,
        alarm,
        pre,
        hold,
        verify,
        retard_ms,
        window_ms,
        base,
        base_min,
        base_max,
        tau_ms,
        maint_pct,
        low_pct,
        latching,
    ):
        self.alarm_c = Condition(point, kind, 1, latching, point.unit, point.exp)
        self.pre_c = Condition(point, codes.PRE_ALARM, 1, False, point.unit, point.exp)
        self.maint_c = Condition(point, codes.SUPERVISORY, 11, False, 14, 0)
        self.urgent_c = Condition(point, codes.SUPERVISORY, 59, False, 14, 0)
        self.low_c = Condition(point, codes.FAULT, 58, False, 14, 0)
        self.conditions = [self.alarm_c, self.pre_c, self.maint_c, self.urgent_c, self.low_c]
        self.level = alarm
        self.pre = pre
        self.hold = hold
        self.verify = verify
        self.retard = retard_ms
        self.vwindow = window_ms
        self.base = base
        self.base_min = base_min
        self.span = base_max - base_min
        self.tau = tau_ms
        self.maint = maint_pct
        self.low = low_pct
        self.rem = 0
        self.checked = False
        self.restart()

    def restart(self):
        self.over = 0  # consecutive samples at or above the alarm level
        self.vstate = _V_IDLE
        self.vt0 = 0

    def comp_pct(self):
        return (self.base - self.base_min) * 100 // self.span

    def _drift(self, dt, x):
        # base += (x - base) * dt / tau, carrying the remainder (exact, no floor bias)
        num = (x - self.base) * dt + self.rem
        stp = num // self.tau
        self.rem = num - stp * self.tau
        if stp:
            self.base += stp
            return True
        return False

    def step(self, t, dt, x, out):
        d = x - self.base
        if not self.checked:
            self.checked = True
            if self.tau:
                self._maintenance(t, out)
        # Drift compensation, frozen at and above pre-alarm and while verifying.
        if self.tau and d < self.pre and self.vstate == _V_IDLE and not self.alarm_c.cause:
            if dt > 60000:
                dt = 60000
            if self._drift(dt, x):
                self._maintenance(t, out)
                d = x - self.base
        # Pre-alarm: non-latching, follows the compensated level.
        pc = self.pre_c
        if d >= self.pre:
            if not pc.cause:
                pc.apply(RAISE, t, d, out)
        elif pc.cause:
            pc.apply(CLEAR, t, d, out)
        ac = self.alarm_c
        if d >= self.level:
            self.over += 1
        else:
            self.over = 0
            if ac.cause:
                ac.apply(CLEAR, t, d, out)
        if ac.cause:
            return
        vs = self.vstate
        if vs == _V_IDLE:
            if self.over >= self.hold:
                if self.verify:
                    self.vstate = _V_RETARD
                    self.vt0 = t
                else:
                    ac.apply(RAISE, t, d, out)
        elif vs == _V_RETARD:
            e = elapsed(t, self.vt0)
            if e >= self.retard:
                if self.over:
                    self._verified(t, d, e, out)
                else:
                    self.vstate = _V_CONFIRM
        elif elapsed(t, self.vt0) > self.retard + self.vwindow:
            self.vstate = _V_IDLE
            if self.over >= self.hold:  # a new first crossing starts a new verification
                self.vstate = _V_RETARD
                self.vt0 = t
        elif self.over:
            self._verified(t, d, elapsed(t, self.vt0), out)

    def _verified(self, t, d, e, out):
        # evidence: [ms from the first crossing to the verified alarm, confirmation window ms]
        self.vstate = _V_IDLE
        self.alarm_c.apply(RAISE, t, d, out, [e, self.vwindow])

    def _maintenance(self, t, out):
        # no tuples or lists here: it runs whenever the baseline moves
        pct = self.comp_pct()
        c = self.maint_c
        if (pct >= self.maint) != c.cause:
            c.apply(CLEAR if c.cause else RAISE, t, pct, out)
        c = self.urgent_c
        if (pct >= 100) != c.cause:
            c.apply(CLEAR if c.cause else RAISE, t, pct, out)
        c = self.low_c
        if (pct <= self.low) != c.cause:
            c.apply(CLEAR if c.cause else RAISE, t, pct, out)


class Overcurrent:
    """Inverse-time, definite-time and instantaneous overcurrent stages on one current channel.

    ``inverse`` is an ``idmt.InverseTime`` (or None); the definite stage trips when x >
    ``dt_pickup`` continuously for ``dt_delay_ms``; the instantaneous stage on the first sample
    >= ``inst_pickup``. Each stage is its own condition (overcurrent_inverse / _definite /
    _instantaneous); a stage's cause goes away below its dropout.
    """

    quiet = True
    # A stage's condition is made when it first raises (a transition allocates an Event
    # anyway); until then these class attributes stand in, as do the unconfigured stages'.
    inv_c = None  # type: Condition | None
    dt_c = None  # type: Condition | None
    inst_c = None  # type: Condition | None
    inst_pickup = 0
    conditions = ()  # type: tuple | list  # a list once a condition is made

    def __init__(
        self, point, kind, latching, inverse, dt_pickup, dt_delay_ms, inst_pickup, dropout_pct
    ):
        for d in point.detectors:
            if isinstance(d, Overcurrent):  # (its definite stage owns words of point.st)
                raise ValueError("a point takes one Overcurrent (it has all three stages)")
        self.point = point
        self.inv = inverse
        if not _MICROPYTHON:  # instance attributes read faster on CPython (see Point)
            self.inv_c = self.dt_c = self.inst_c = None
            self.inst_pickup = 0
        # the kind and latching, and the definite stage's levels and timer, are words of the
        # point's state array (ring.py OCSPEC_, DT*_), not instance slots: 4 bytes each on a
        # board instead of 16
        point.st[OCSPEC_] = kind | (32 if latching else 0)
        point.st[DTP_] = dt_pickup
        if dt_pickup:
            point.st[DTDROP_] = dt_pickup * dropout_pct // 100
            point.st[DTDELAY_] = dt_delay_ms
        if inst_pickup:
            self.inst_pickup = inst_pickup
            self.inst_drop = inst_pickup * dropout_pct // 100
        self.restart()

    @property
    def spec(self):
        """The conditions' kind, plus 32 when they latch: point.st[OCSPEC_]."""
        return self.point.st[OCSPEC_]

    @property
    def dt_pickup(self):
        """The definite stage's pickup (0: no definite stage): point.st[DTP_]."""
        return self.point.st[DTP_]

    def _cond(self, name, code):
        c = getattr(self, name)
        if c is None:
            p = self.point
            spec = p.st[OCSPEC_]
            c = Condition(p, spec & 31, code, bool(spec & 32), p.unit, p.exp)
            setattr(self, name, c)
            cs = list(self.conditions)  # the conditions made so far, in stage order (6, 7, 8)
            k = 0
            while k < len(cs) and cs[k].code < code:
                k += 1
            cs.insert(k, c)
            self.conditions = cs
        return c

    def restart(self):
        st = self.point.st
        st[DTON_] = 0
        st[DTT0_] = 0
        if self.inv is not None:
            self.inv.acc = 0

    def quiet_below(self):
        """Samples below this change nothing now (None: busy). For Point.feed_block."""
        b = 0x3FFFFFFF
        inv = self.inv
        if inv is not None:
            c = self.inv_c
            if inv.acc or inv.rate > 0 or (c is not None and c.cause):
                return None
            b = inv.pickup + 1  # x <= pickup: nothing accumulates
        st = self.point.st
        p = st[DTP_]
        if p:
            c = self.dt_c
            if st[DTON_] or (c is not None and c.cause):
                return None
            if p + 1 < b:
                b = p + 1
        if self.inst_pickup:
            c = self.inst_c
            if c is not None and c.cause:
                return None
            if self.inst_pickup < b:
                b = self.inst_pickup
        return b

    def quiet_done(self):
        # after quiet samples (x <= pickup, acc == 0) the held rate is 0 (no accumulation)
        if self.inv is not None:
            self.inv.rate = 0

    def step(self, t, dt, x, out):
        inv = self.inv
        if inv is not None:
            r = inv.rate
            pickup = inv.pickup
            if r >= 0 and x > pickup:
                # InverseTime.step for an operating stage (the busy case), inlined: integrate
                # dt at the held rate, then take x's rate (idmt.py holds the commented original;
                # literals: ONE = 0x20000000, M_SHIFT = 11, M_STEP_SHIFT = 8, TICKS_MASK). Above
                # the pickup nothing drops out, so only a trip can change the condition.
                if r:
                    acc = inv.acc
                    if (  # no trip: r * dt < ONE - acc (idmt.rate_reaches, negated)
                        (r * dt < 0x20000000 - acc)
                        if dt < 32
                        else (dt < (0x20000000 - acc + r - 1) // r)
                    ):
                        inv.acc = acc + r * dt
                    else:
                        inv.acc = 0
                        c = self.inv_c
                        if c is None or not c.cause:
                            self._cond("inv_c", 6).apply(RAISE, t, x, out)
                q = inv.qmax if x >= pickup * 20 else (x << 11) // pickup  # xmax: M_MAX = 20
                tab = inv.table
                k = q >> 8
                r = tab[k]
                inv.rate = r + (((tab[k + 1] - r) * (q & 0xFF)) >> 8)
            else:
                tripped = inv.step(dt, x)
                c = self.inv_c
                if c is not None and c.cause:  # (the condition is made when it first raises)
                    if not tripped and x <= (inv._drop or pickup * 95 // 100):  # inv.dropout
                        c.apply(CLEAR, t, x, out)
                elif tripped:
                    self._cond("inv_c", 6).apply(RAISE, t, x, out)
        st = self.point.st
        p = st[7]  # DTP_
        if p:
            c = self.dt_c
            if x > p:
                if c is None or not c.cause:  # (raised: only the dropout matters)
                    if not st[36]:  # DTON_ (literals: CPython loads a global for each name)
                        st[36] = 1
                        st[35] = t & 0x3FFFFFFF  # DTT0_ (only differences mod 2**30 are used)
                    if (t - st[35]) & 0x3FFFFFFF >= st[38]:  # DTDELAY_
                        self._cond("dt_c", 7).apply(RAISE, t, x, out)
            elif x <= st[37]:  # DTDROP_
                st[36] = 0
                if c is not None and c.cause:
                    c.apply(CLEAR, t, x, out)
        p = self.inst_pickup
        if p:
            c = self.inst_c
            on = c is not None and c.cause
            if x >= p:
                if not on:
                    self._cond("inst_c", 8).apply(RAISE, t, x, out)
            elif on and x <= self.inst_drop:
                c.apply(CLEAR, t, x, out)
        if inv is not None and inv.rate > 0:
            return None  # (quiet_below's first test, for the case that dominates while busy)
        return self.quiet_below()


class ThermalOverload:
    """IEC 60255-149 thermal image (``idmt.Thermal``) with trip and optional alarm levels.

    Levels are in percent of the trip state theta = 1; the cause goes away below
    ``clear_pct``. ``model.theta`` is the thermal memory to persist across restarts.
    """

    def __init__(self, point, kind, latching, model, alarm_pct, clear_pct, max_dt_ms):
        from .idmt import THETA_ONE

        self.model = model
        self.trip_c = Condition(point, kind, 9, latching, 14, 0)
        self.conditions = [self.trip_c]
        self.trip = THETA_ONE * alarm_pct // 100
        self.clear = THETA_ONE * clear_pct // 100
        self.max_dt = max_dt_ms

    def restart(self):
        pass

    def step(self, t, dt, x, out):
        m = self.model
        if dt > self.max_dt:
            dt = self.max_dt
        m.step(dt, x)
        c = self.trip_c
        if m.theta >= self.trip:
            if not c.cause:
                c.apply(RAISE, t, m.theta * 100 >> 16, out)
        elif c.cause and m.theta < self.clear:
            c.apply(CLEAR, t, m.theta * 100 >> 16, out)


class PanelStatus:
    """Fire-panel status word: each configured bit mask is a condition, passed through at once.

    No delay, no verification, no latching (the panel latches its own alarms): the gateway
    reports exactly what the panel declares (standards.md §4.6, §7 row 25).
    """

    def __init__(self, point, masks):
        # masks: list of (mask, kind)
        self.masks = array("i", [m for m, _ in masks])
        self.conditions = [Condition(point, k, 10, False) for _, k in masks]
        self.prev = 0

    def restart(self):
        pass

    def step(self, t, dt, x, out):
        if x == self.prev:
            return
        self.prev = x
        ms = self.masks
        cs = self.conditions
        for j in range(len(ms)):
            on = (x & ms[j]) != 0
            c = cs[j]
            if on != c.cause:
                c.apply(RAISE if on else CLEAR, t, x, out)
