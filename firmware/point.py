"""One monitored point: supervision, its ring buffer and its detectors, and the operator actions.

``Point.feed(t_ms, x, out)`` is the per-sample entry (sans-I/O: the caller passes the sample and
the monotonic time; transitions are appended to ``out`` as ``(t_ms, Event)``).
``tick(t_ms, out)`` checks for a silent device; ``ack``/``reset``/``set_test`` are the operator's.

Supervision comes first and a bad sample never reaches the detectors (standards.md §2.5, §7
row 19: "break line", open or short is a fault, never a zero reading):

1. a configured fault value (e.g. 0xFFFF = break line) -> FAULT with that condition code;
2. outside the plausible ``range`` -> FAULT out_of_range;
3. otherwise any supervision fault clears, the sample enters the ring, the stuck-sensor check
   runs (window full and max - min <= tolerance -> FAULT stuck_sensor), then each detector.

No fresh sample for ``comms_timeout_ms`` -> FAULT no_response (cleared by the next sample).
"""

from array import array

from ..protocol import codes
from ..protocol.messages import Event
from . import fastpath
from .fastpath import quiet_ring
from .lifecycle import ACK, CLEAR, RAISE, RESET, Condition
from .ring import (
    CMAX_,
    HMAX_,
    I_,
    LAST_,
    LO_,
    N_,
    PREV_,
    RUN_,
    RUNX_,
    RX_,
    S2_,
    S_,
    STATE_WORDS,
    STUCK_,
    STUCKON_,
    TOL_,
    VAR_,
    VIPER_,
    W_,
    XQ_,
    Ring,
    _ints,
    max_abs_sample,
)

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef]
        return x


TICKS_MASK = const(0x3FFFFFFF)


class Point:
    """A point's detector chain. Built by ``config.build_detectors``; attributes are public."""

    def __init__(
        self,
        src,
        unit,
        exp,
        lo,
        hi,
        fault_values=None,
        window=64,
        stuck=True,
        stuck_tolerance=0,
        comms_timeout_ms=100000,
        max_gap_ms=60000,
        part=None,
        lo_code=50,
        hi_code=50,
    ):
        self.src = src
        self.unit = unit
        self.exp = exp
        self.part = part
        self.test = False
        self.lo = lo
        self.hi = hi
        limit = hi if hi > -lo else -lo
        self.ring = None
        if window:
            self.ring = Ring(window, limit, limit <= max_abs_sample(window, True), False)
        # Stuck sensor: ``window`` consecutive valid samples within ``tolerance`` of the first of
        # the run (for tolerance 0: the whole window equal, i.e. max == min) -- a run counter,
        # O(1) with no queue.
        self.stuck = bool(stuck and window)
        self.stuck_n = window
        self.tol = stuck_tolerance
        # one state array: the ring's words, the stuck run (value, length), the times and the
        # words the viper fast paths read (ring.py names them)
        self.st = st = self.ring.st if self.ring is not None else _ints(STATE_WORDS)
        self.timeout = comms_timeout_ms
        self.gap = max_gap_ms
        # below lo / above hi: out_of_range, or open_circuit / short_circuit when configured
        self.low_c = Condition(self, codes.FAULT, lo_code, False, unit, exp)
        self.high_c = self.low_c
        if hi_code != lo_code:
            self.high_c = Condition(self, codes.FAULT, hi_code, False, unit, exp)
        self.stuck_c = Condition(self, codes.FAULT, 54, False, unit, exp)
        self.comms_c = Condition(self, codes.FAULT, 55, False)
        self.fault_values = {}
        self.fault_list = []
        for v in fault_values or {}:
            c = Condition(self, codes.FAULT, fault_values[v], False)
            self.fault_values[v] = c
            self.fault_list.append(c)
        self.nfv = len(self.fault_values)
        self.bad = False  # a supervision fault (value or range) has its cause present
        self.detectors = []
        self.quiet_ok = False
        self.xq = lo  # quiet bound for feed's fast path; lo = disabled
        # viper fast paths (MicroPython, compact ring, non-negative range): see fastpath.py
        self.viper = quiet_ring is not None and self.ring is not None and self.ring.compact
        self.viper = self.viper and lo >= 0
        if self.viper:
            st[LO_] = lo
            st[XQ_] = lo
            st[TOL_] = stuck_tolerance
            st[LAST_] = window - 1
            st[STUCK_] = 1 if self.stuck else 0
            st[VAR_] = 1 if self.ring.variance else 0  # type: ignore[union-attr]
            st[W_] = window
            st[VIPER_] = 1
        self.rx = False  # a sample has come (its time: st[RX_], ms mod 2**30)
        self.has_prev = False  # a valid sample has been seen (its time: st[PREV_])

    def add(self, detector):
        self.detectors.append(detector)
        # the block fast path serves points whose detectors all know when they are idle
        self.quiet_ok = self.ring is None or not self.ring.track_min
        for d in self.detectors:
            if not getattr(d, "quiet", False):
                self.quiet_ok = False
        return detector

    def conditions(self):
        """Every condition of the point, supervision first (allocates: reporting only)."""
        out = [self.low_c, self.stuck_c, self.comms_c]
        if self.high_c is not self.low_c:
            out.append(self.high_c)
        out.extend(self.fault_list)
        for d in self.detectors:
            out.extend(d.conditions)
        return out

    def pyfeed(self, t, x, out):
        """One sample ``x`` (an int in the point's units) at monotonic ``t`` ms."""
        if self.lo <= x < self.xq:
            # Quiet sample: every detector is idle and x is below anything that could make one
            # act (``xq``, refreshed after each full pass), so only the ring, the stuck-run
            # counter and the times move -- exactly what the full pass would do.
            st = self.st
            if self.stuck:
                d = x - st[RUNX_]
                tol = self.tol
                if -tol <= d <= tol:
                    if st[RUN_] + 1 >= self.stuck_n and not self.stuck_c.cause:
                        self._full(t, x, out)
                        return
                    st[RUN_] += 1
                elif self.stuck_c.cause:
                    self._full(t, x, out)
                    return
                else:
                    st[RUNX_] = x
                    st[RUN_] = 1
            t &= TICKS_MASK
            st[RX_] = t
            st[PREV_] = t
            r = self.ring
            if r is None:
                return
            # Ring.push for the case that dominates (window full, no min queue), inlined
            w = r.window
            if st[N_] != w or r.track_min:
                r.push(x)
                return
            buf = r.buf
            i = st[I_]
            old = buf[i]
            st[S_] += x - old
            if r.variance:
                st[S2_] += x * x - old * old
            qv = r.qv
            qi = r.qi
            h = st[HMAX_]
            c = st[CMAX_]
            if qi[h] == i:
                h = 0 if h == w - 1 else h + 1
                st[HMAX_] = h
                c -= 1
            buf[i] = x
            k = h + c - 1
            if k >= w:
                k -= w
            while c and qv[k] <= x:
                c -= 1
                k = w - 1 if k == 0 else k - 1
            k = 0 if k == w - 1 else k + 1
            qv[k] = x
            qi[k] = i
            st[CMAX_] = c + 1
            st[I_] = 0 if i == w - 1 else i + 1
            return
        self._full(t, x, out)

    feed = pyfeed  # MicroPython: fastpath.feed (viper), which calls pyfeed or _full

    def _full(self, t, x, out):
        """The full pass: supervision, ring, stuck sensor, every detector; then the quiet bound."""
        st = self.st
        st[RX_] = t & TICKS_MASK
        self.rx = True
        if self.comms_c.cause:
            self.comms_c.apply(CLEAR, t, None, out)
        if self.nfv and x in self.fault_values:
            self._fault_value(t, x, out)
            self._refresh_quiet()
            return
        if x < self.lo or x > self.hi:
            self._out_of_range(t, x, out)
            self._refresh_quiet()
            return
        if self.bad:
            self._good(t, x, out)
        if self.has_prev:
            dt = (t - st[PREV_]) & TICKS_MASK
            if dt > self.gap:
                dt = self.gap
        else:
            dt = 0
            self.has_prev = True
        st[PREV_] = t & TICKS_MASK
        r = self.ring
        if r is not None:
            w = r.window
            if st[N_] != w or r.track_min:
                r.push(x)
            else:
                # Ring.push, full window and no min queue, inlined (as in pyfeed)
                buf = r.buf
                i = st[I_]
                old = buf[i]
                st[S_] += x - old
                if r.variance:
                    st[S2_] += x * x - old * old
                qv = r.qv
                qi = r.qi
                h = st[HMAX_]
                c = st[CMAX_]
                if qi[h] == i:
                    h = 0 if h == w - 1 else h + 1
                    st[HMAX_] = h
                    c -= 1
                buf[i] = x
                k = h + c - 1
                if k >= w:
                    k -= w
                while c and qv[k] <= x:
                    c -= 1
                    k = w - 1 if k == 0 else k - 1
                k = 0 if k == w - 1 else k + 1
                qv[k] = x
                qi[k] = i
                st[CMAX_] = c + 1
                st[I_] = 0 if i == w - 1 else i + 1
        sc = self.stuck_c
        if self.stuck:
            d = x - st[RUNX_]
            tol = self.tol
            if -tol <= d <= tol:
                run = st[RUN_] + 1
                st[RUN_] = run
                if run >= self.stuck_n and not sc.cause:
                    sc.apply(RAISE, t, x, out)
            else:
                st[RUNX_] = x
                st[RUN_] = 1
                if sc.cause:
                    sc.apply(CLEAR, t, x, out)
        dets = self.detectors
        for d in dets:
            d.step(t, dt, x, out)
        # _refresh_quiet, inlined: comms_c and bad are clear here and has_prev is set
        xq = self.lo
        if self.quiet_ok and not self.nfv:
            xq = self.hi + 1
            for d in dets:
                q = d.quiet_below()
                if q is None:
                    xq = self.lo
                    break
                if q < xq:
                    xq = q
        self.xq = xq
        if self.viper:
            st[XQ_] = xq if xq < TICKS_MASK else TICKS_MASK
            st[STUCKON_] = 1 if sc.cause else 0

    def _refresh_quiet(self):
        # xq = lo disables the quiet path (no x satisfies lo <= x < lo)
        xq = self.lo
        if self.quiet_ok and self.has_prev and not (self.comms_c.cause or self.bad or self.nfv):
            b = self._quiet_bound()
            if b is not None:
                xq = b
        self.xq = xq
        if self.viper:
            st = self.st
            st[XQ_] = xq if xq < TICKS_MASK else TICKS_MASK
            st[STUCKON_] = 1 if self.stuck_c.cause else 0

    def _quiet_off(self):
        self.xq = self.lo
        if self.viper:
            self.st[XQ_] = self.lo

    def feed_block(self, ts, xs, out, start=0, end=-1):
        """``feed`` for samples ``xs[start:end]`` at times ``ts[...]``: the same events, faster.

        While every detector is idle and a sample cannot change any state (the common case: a
        normal reading), ``_quiet_run`` takes it with the ring update inlined; any other sample
        goes through ``feed``. The golden vectors run through both paths.
        """
        n = len(xs) if end < 0 else end
        j = start
        while j < n:
            if self.xq > self.lo:  # something can be quiet (xq <= lo: a detector is busy)
                j = self._quiet_run(ts, xs, j, n)
                if j >= n:
                    break
            # sample j is not quiet (the quiet run stopped at it, or nothing is quiet now)
            self._full(ts[j], xs[j], out)
            j += 1

    def _quiet_bound(self):
        # The smallest sample that could make a detector act now, or None when one is busy.
        xq = self.hi + 1
        for d in self.detectors:
            b = d.quiet_below()
            if b is None:
                return None
            if b < xq:
                xq = b
        return xq

    def _quiet_run(self, ts, xs, j, n):
        """Take samples from ``j`` while they change no condition; return the first it left."""
        xq = self.xq  # refreshed after every full pass; lo when something is busy
        lo = self.lo
        if xq <= lo:
            return j
        stuck = self.stuck
        stuck_on = self.stuck_c.cause
        r = self.ring
        j0 = j
        if self.viper and isinstance(xs, array):
            # st[XQ_] and st[STUCKON_] are current (_refresh_quiet)
            j = quiet_ring(xs, j, n, r.buf, r.qv, r.qi, r.st)  # type: ignore[misc,union-attr]
        else:
            pst = self.st
            tol = self.tol
            run_x = pst[RUNX_]
            run = pst[RUN_]
            last = self.stuck_n - 1
            if r is not None:
                buf = r.buf
                qv = r.qv
                qi = r.qi
                w = r.window
                st = r.st
                i = st[I_]
                rn = st[N_]
                s = st[S_]
                s2 = st[S2_]
                var = r.variance
                h = st[HMAX_]
                c = st[CMAX_]
            while j < n:
                x = xs[j]
                if x < lo or x >= xq:
                    break
                if stuck:
                    d = x - run_x
                    if -tol <= d <= tol:
                        if run >= last and not stuck_on:
                            break
                        run += 1
                    else:
                        if stuck_on:
                            break
                        run_x = x
                        run = 1
                j += 1
                if r is None:
                    continue
                # Ring.push, inlined (ring.py holds the commented original)
                if rn == w:
                    old = buf[i]
                    s += x - old
                    if var:
                        s2 += x * x - old * old
                    if qi[h] == i:
                        h = 0 if h == w - 1 else h + 1
                        c -= 1
                else:
                    rn += 1
                    s += x
                    if var:
                        s2 += x * x
                buf[i] = x
                t = h + c - 1
                if t >= w:
                    t -= w
                while c and qv[t] <= x:
                    c -= 1
                    t = w - 1 if t == 0 else t - 1
                t = 0 if t == w - 1 else t + 1
                qv[t] = x
                qi[t] = i
                c += 1
                i = 0 if i == w - 1 else i + 1
            if r is not None:
                st[I_] = i
                st[N_] = rn
                st[S_] = s
                st[S2_] = s2
                st[HMAX_] = h
                st[CMAX_] = c
            pst[RUNX_] = run_x
            pst[RUN_] = run
        if j > j0:
            t = ts[j - 1] & TICKS_MASK
            st = self.st
            st[RX_] = t
            st[PREV_] = t
            for d in self.detectors:
                d.quiet_done()
        return j

    def _fault_value(self, t, x, out):
        c = self.fault_values[x]
        for f in self.fault_list:
            if f is not c and f.cause:
                f.apply(CLEAR, t, None, out)
        self._range_clear(t, None, None, out)
        if not c.cause:
            c.apply(RAISE, t, None, out)
        self.bad = True

    def _range_clear(self, t, x, keep, out):
        for c in (self.low_c, self.high_c):
            if c is not keep and c.cause:
                c.apply(CLEAR, t, x, out)

    def _out_of_range(self, t, x, out):
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        c = self.low_c if x < self.lo else self.high_c
        self._range_clear(t, x, c, out)
        if not c.cause:
            c.apply(RAISE, t, x, out)
        self.bad = True

    def _good(self, t, x, out):
        self.bad = False
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        self._range_clear(t, x, None, out)

    def invalid(self, t, out):
        """A reading that is not a number at all (NaN, inf from a float register): a fault."""
        self.st[RX_] = t & TICKS_MASK
        self.rx = True
        if self.comms_c.cause:
            self.comms_c.apply(CLEAR, t, None, out)
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        c = self.high_c
        self._range_clear(t, None, c, out)
        if not c.cause:
            c.apply(RAISE, t, None, out)
        self.bad = True
        self._quiet_off()

    def tick(self, t, out):
        """Call when a poll brought nothing new: raises no_response after the timeout."""
        if self.rx and not self.comms_c.cause and (t - self.st[RX_]) & TICKS_MASK >= self.timeout:
            self.comms_c.apply(RAISE, t, None, out)
            self._quiet_off()

    def ack(self, t, out, actor=None):
        """Acknowledge every active condition (ACTIVE -> ACKNOWLEDGED)."""
        for c in self.conditions():
            c.apply(ACK, t, None, out)

    def reset(self, t, out, actor=None):
        """Operator or panel reset: log it, return latched conditions to normal, re-detect.

        A cause still present is detected afresh (after its delay), so a reset never hides a
        standing alarm for longer than the detector's own delay.
        """
        out.append(
            (
                t,
                Event(
                    codes.RESET,
                    0,
                    self.src,
                    actor=actor,
                    part=self.part,
                    eflags=codes.EF_TEST if self.test else None,
                ),
            )
        )
        for d in self.detectors:
            for c in d.conditions:
                if c.latching:
                    c.apply(RESET, t, None, out)
                    c.cause = False
            d.restart()
        self._refresh_quiet()

    def set_test(self, t, on, out, actor=None):
        """Enter or leave test mode; events raised meanwhile carry EF_TEST."""
        on = bool(on)
        if on == self.test:
            return
        self.test = on
        out.append(
            (
                t,
                Event(
                    codes.TEST_MODE,
                    0,
                    self.src,
                    state=codes.ACTIVE if on else codes.NORMAL,
                    actor=actor,
                ),
            )
        )

    def thermal_state(self):
        """The thermal image (theta, 1.0 = 2**16) to persist across restarts, or None."""
        for d in self.detectors:
            m = getattr(d, "model", None)
            if m is not None:
                return m.theta
        return None

    def restore_thermal(self, theta, off_ms):
        """Thermal memory after a restart: the saved theta, cooled for the ``off_ms`` offline."""
        for d in self.detectors:
            m = getattr(d, "model", None)
            if m is not None:
                m.theta = theta
                m.rem = 0
                m.cool(off_ms)

    def summary(self):
        """[min, max, mean, n] of the window for a MEASUREMENT event (allocates)."""
        r = self.ring
        if r is None or not r.n:
            return None
        return [r.min(), r.max(), r.mean_floor(), r.n]


if fastpath.feed is not None:
    Point.feed = fastpath.feed  # type: ignore[assignment]
