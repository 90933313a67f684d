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

from ..protocol import codes
from ..protocol.messages import I64_MAX, I64_MIN, Event
from . import fastpath
from .fastpath import ring_push
from .lifecycle import ACK, CLEAR, RAISE, RESET, Condition
from .ring import (
    _MICROPYTHON,
    BAD_,
    CLEAN_,
    CMAX_,
    COMMSON_,
    EXP_,
    FV_,
    GAP_,
    HASPREV_,
    HI_,
    HICODE_,
    HMAX_,
    I_,
    LAST_,
    LO_,
    LOCODE_,
    N_,
    NONE_WORD,
    PREV_,
    QOK_,
    RUN_,
    RUNX_,
    RX_,
    RXOK_,
    S2_,
    S_,
    STATE_WORDS,
    STUCK_,
    STUCKON_,
    TMO_,
    TOL_,
    UNIT_,
    VAR_,
    VIPER_,
    W_,
    XQ_,
    Ring,
    _ints,
    max_abs_sample,
)

if not _MICROPYTHON:
    from . import cpyfeed  # CPython's feed and ring layout (a board never imports it)

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


TICKS_MASK = const(0x3FFFFFFF)
_NO_FAULT_VALUES = {}  # type: dict  # read-only: the fault values of points with none


class Point:
    """A point's detector chain. Built by ``config.build_detectors``; attributes are public."""

    # Defaults most points keep: class attributes, so they cost no instance slot on a board.
    test = False  # test mode: events carry EF_TEST
    part = None  # the part number events carry (an instance slot only when given)
    # The point is its own ring: its buf/qv/qi arrays and state words are a Ring's (instance
    # slots only with a window), ``ring`` returns the point, and Ring's methods and views are
    # borrowed -- not inherited: on MicroPython a base class slows the point's attribute stores
    # and method lookups. No Ring object is spent.
    buf = None
    track_min = False
    mv = mi = Ring.mv
    clear = Ring.clear
    push = Ring.push
    max = Ring.max
    min = Ring.min
    full = Ring.full
    flat = Ring.flat
    last = Ring.last
    mean_floor = Ring.mean_floor
    variance_num = Ring.variance_num
    samples = Ring.samples
    i = Ring.i
    n = Ring.n
    s = Ring.s
    s2 = Ring.s2
    window = Ring.window
    compact = Ring.compact
    variance = Ring.variance
    fault_values = _NO_FAULT_VALUES  # raw value -> Condition
    fault_list = ()  # type: tuple
    nfv = 0  # len(fault_values)
    detectors = ()  # type: tuple  # add() makes a new tuple
    rq = None  # type: tuple | None  # (buf, qv, qi, window, variance) of a ring with no min queue
    # Supervision conditions are made when they first raise (a transition may allocate: it
    # makes an Event anyway); until then the class's None stands in and costs no slot.
    low_c = None  # type: Condition | None  # below lo (out_of_range or open_circuit)
    high_c = None  # type: Condition | None  # above hi, when its code is not low_c's
    stuck_c = None  # type: Condition | None  # stuck_sensor (its cause: st[STUCKON_])
    comms_c = None  # type: Condition | None  # no_response

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
        if part is not None:
            self.part = part
        # a reading an event cannot carry (outside int64) is never in range: a FAULT
        # out_of_range (_out_of_range omits its value), never an exception in Event()
        if lo < I64_MIN:
            lo = I64_MIN
        if hi > I64_MAX:
            hi = I64_MAX
        self.lo = lo
        self.hi = hi
        limit = hi if hi > -lo else -lo
        if window:
            Ring.__init__(self, window, limit, limit <= max_abs_sample(window, True), False)  # type: ignore[arg-type]
        # Stuck sensor: ``window`` consecutive valid samples within ``tolerance`` of the first of
        # the run (for tolerance 0: the whole window equal, i.e. max == min) -- a run counter,
        # O(1) with no queue.
        # one state array: the ring's words, the stuck run (value, length), the times and the
        # words the viper fast paths read (ring.py names them)
        if not window:
            self.st = _ints(STATE_WORDS)
        st = self.st
        st[STUCK_] = 1 if stuck and window else 0
        st[LAST_] = window - 1  # the stuck run raises at ``window`` samples
        st[GAP_] = max_gap_ms
        st[UNIT_] = NONE_WORD if unit is None else unit  # (a code, and -24..23: words)
        st[EXP_] = NONE_WORD if exp is None else exp
        # (clamped to what a word holds; a larger one acts the same: a masked difference of
        # times never reaches it, and |x - run| <= 2 * 2**30 with a ring)
        st[TMO_] = comms_timeout_ms if comms_timeout_ms < 0x40000000 else 0x40000000
        st[TOL_] = stuck_tolerance if stuck_tolerance < 0x7FFFFFFF else 0x7FFFFFFF
        # below lo / above hi: out_of_range, or open_circuit / short_circuit when configured
        st[LOCODE_] = lo_code
        st[HICODE_] = hi_code
        if fault_values:
            self.fault_values = {}
            fl = []
            for v in fault_values:
                c = Condition(self, codes.FAULT, fault_values[v], False)
                self.fault_values[v] = c
                fl.append(c)
            self.fault_list = tuple(fl)
            self.nfv = len(fl)
            st[FV_] = 1
        if not _MICROPYTHON:
            # CPython reads instance attributes faster than class ones: copy the defaults the
            # full pass reads (memory is no concern there)
            self.comms_c = None
            self.nfv = self.nfv
        self.xq = lo  # quiet bound for feed's fast path; lo = disabled
        # viper fast paths (MicroPython, compact ring, non-negative range): see fastpath.py
        r = self.ring
        viper = fastpath.block is not None and r is not None and r.compact and lo >= 0
        if viper:
            st[LO_] = lo
            st[HI_] = hi
            st[XQ_] = lo
            st[VAR_] = 1 if r.variance else 0  # type: ignore[union-attr]
            st[VIPER_] = 1
        elif r is not None and not r.track_min:
            # the ring's storage for the inlined push (one load instead of five); viper points
            # (fastpath.py) do without it. CPython's ring keeps its queue in a deque (ring.py)
            if r.qi is None:
                self.dq = (r.buf, r.qv, cpyfeed.next_positions(r.window), r.variance)
            else:
                self.rq = (r.buf, r.qv, r.qi, r.window, r.variance)

    @property
    def ring(self):
        """The point's window (the point itself: a ``Ring``), or None without one."""
        return None if self.buf is None else self

    @property
    def quiet_ok(self):
        """Every detector knows when it is idle: the quiet paths may skip them (st[QOK_])."""
        return bool(self.st[QOK_])

    @quiet_ok.setter
    def quiet_ok(self, on):
        self.st[QOK_] = 1 if on else 0

    @property
    def unit(self):
        """The unit code of reported values: st[UNIT_] (None: no unit)."""
        v = self.st[UNIT_]
        return None if v == NONE_WORD else v

    @property
    def exp(self):
        """The exponent of reported values: st[EXP_] (None: none)."""
        v = self.st[EXP_]
        return None if v == NONE_WORD else v

    @property
    def tol(self):
        """The stuck-sensor tolerance: st[TOL_]."""
        return self.st[TOL_]

    @property
    def timeout(self):
        """comms_timeout_ms: st[TMO_]."""
        return self.st[TMO_]

    @property
    def gap(self):
        """max_gap_ms: the longest interval integrated at one sample's value."""
        return self.st[GAP_]

    def add(self, detector):
        ds = list(self.detectors)
        ds.append(detector)
        self.detectors = tuple(ds)
        # the block fast path serves points whose detectors all know when they are idle
        ok = not self.track_min
        for d in self.detectors:
            if not getattr(d, "quiet", False):
                ok = False
        self.st[QOK_] = 1 if ok else 0
        if not _MICROPYTHON:  # (an instance slot, which a board would pay for)
            self.one = detector if len(ds) == 1 else None
            # an Overcurrent's inverse stage when it is the only detector (cpyfeed inlines it)
            self.oinv = getattr(detector, "inv", None) if len(ds) == 1 else None
        return detector

    def conditions(self):
        """Every condition of the point, supervision first (allocates: reporting only)."""
        out = []
        for c in (self.low_c, self.stuck_c, self.comms_c, self.high_c):
            if c is not None:  # (one never made has never left NORMAL)
                out.append(c)
        out.extend(self.fault_list)
        for d in self.detectors:
            out.extend(d.conditions)
        return out

    # The hot paths below (pyfeed, _full, _detect) index ``st`` with literal word numbers and
    # write TICKS_MASK as 0x3FFFFFFF: CPython loads a module global for each name (MicroPython
    # folds the const()s anyway). ring.py names the words; test_ring checks the numbers.
    def pyfeed(self, t, x, out):
        """One sample ``x`` (an int in the point's units) at monotonic ``t`` ms."""
        st = self.st
        if self.lo <= x < self.xq:
            # Quiet sample: every detector is idle and x is below anything that could make one
            # act (``xq``, refreshed after each full pass), so only the stuck-run counter, the
            # times and the ring move -- exactly what the full pass would do.
            if st[14]:
                # the stuck run: x leaves it when it is more than the tolerance (most often 0)
                # from the run's first sample
                d = x - st[8]
                if d and (not st[12] or d > st[12] or d < -st[12]):
                    if st[15]:
                        self._full(t, x, out)  # the stuck_sensor cause goes away
                        return
                    st[8] = x
                    st[9] = 1
                elif st[9] >= st[13] and not st[15]:
                    self._full(t, x, out)  # the run reaches the window: stuck_sensor
                    return
                else:
                    st[9] += 1
            st[18] = st[19] = t & 0x3FFFFFFF
            if not st[39]:  # CLEAN_ (off: no window, or it is not full yet)
                if self.buf is not None:
                    self.push(x)
                    if st[1] == st[17]:  # it has just filled: let the inlined push take over
                        self._refresh_quiet()
                return
            # Ring.push for the case that dominates (window full, no min queue), inlined
            buf, qv, qi, w, var = self.rq  # type: ignore[misc]
            i = st[0]
            old = buf[i]
            buf[i] = x
            st[2] += x - old
            if var:
                st[3] += x * x - old * old
            h = st[4]
            c = st[5]
            w1 = w - 1
            if qi[h] == i:
                h = 0 if h == w1 else h + 1
                st[4] = h
                c -= 1
            k = h + c - 1
            if k >= w:
                k -= w
            while c and qv[k] <= x:
                c -= 1
                k = w1 if k == 0 else k - 1
            k = k + 1 if k < w1 else 0
            qv[k] = x
            qi[k] = i
            st[5] = c + 1
            st[0] = i + 1 if i < w1 else 0
            return
        # Busy: a detector is timing or integrating, or x is above the quiet bound. When the
        # supervision, the ring and the stuck run change no condition (st[CLEAN_], the range
        # and the run below), they are done here and the detectors run (the end of _full,
        # without its call and generic branches); any other sample goes to the full pass
        # first thing, before any state moves.
        if not st[39] or x > self.hi or x < self.lo:
            self._full(t, x, out)
            return
        if st[14]:  # the stuck run, as above
            d = x - st[8]
            if d and (not st[12] or d > st[12] or d < -st[12]):
                if st[15]:
                    self._full(t, x, out)
                    return
                st[8] = x
                st[9] = 1
            elif st[9] >= st[13] and not st[15]:
                self._full(t, x, out)
                return
            else:
                st[9] += 1
        tm = t & 0x3FFFFFFF
        dt = (tm - st[19]) & 0x3FFFFFFF
        if dt > st[21]:
            dt = st[21]
        st[18] = st[19] = tm
        # Ring.push, full window and no min queue, inlined (as above)
        buf, qv, qi, w, var = self.rq  # type: ignore[misc]
        i = st[0]
        old = buf[i]
        buf[i] = x
        st[2] += x - old
        if var:
            st[3] += x * x - old * old
        h = st[4]
        c = st[5]
        w1 = w - 1
        if qi[h] == i:
            h = 0 if h == w1 else h + 1
            st[4] = h
            c -= 1
        k = h + c - 1
        if k >= w:
            k -= w
        while c and qv[k] <= x:
            c -= 1
            k = w1 if k == 0 else k - 1
        k = k + 1 if k < w1 else 0
        qv[k] = x
        qi[k] = i
        st[5] = c + 1
        st[0] = i + 1 if i < w1 else 0
        # each detector's step returns its quiet bound (None: busy); xq is the lowest
        lo = self.lo
        xq = self.hi + 1 if st[27] else lo
        for d in self.detectors:
            q = d.step(t, dt, x, out)
            if q is None:
                xq = lo
            elif q < xq:
                xq = q
        self.xq = xq

    # MicroPython: fastpath.feed (viper; at the end of this module), which calls pyfeed for the
    # points it does not serve, or pyfeed where viper is missing. CPython: cpyfeed.feed
    feed = pyfeed

    def _full(self, t, x, out):
        """The full pass: supervision, ring, stuck sensor, every detector; then the quiet bound."""
        st = self.st
        st[18] = t & 0x3FFFFFFF
        st[23] = 1
        c = self.comms_c
        if c is not None and c.cause:
            c.apply(CLEAR, t, None, out)
            st[29] = 0
        if self.nfv and x in self.fault_values:
            self._fault_value(t, x, out)
            self._refresh_quiet()
            return
        if x < self.lo or x > self.hi:
            self._out_of_range(t, x, out)
            self._refresh_quiet()
            return
        if st[24]:
            self._good(t, x, out)
        if st[22]:
            dt = (t - st[19]) & 0x3FFFFFFF
            if dt > st[21]:
                dt = st[21]
        else:
            dt = 0
            st[22] = 1
        st[19] = t & 0x3FFFFFFF
        rq = self.rq
        if rq is None or st[1] != rq[3]:
            if st[20]:
                ring_push(self, x)  # type: ignore[misc]
            elif self.buf is not None:
                self.push(x)
        else:
            # Ring.push, full window and no min queue, inlined (as in pyfeed)
            buf, qv, qi, w, var = rq
            i = st[0]
            old = buf[i]
            st[2] += x - old
            if var:
                st[3] += x * x - old * old
            h = st[4]
            c = st[5]
            w1 = w - 1
            if qi[h] == i:
                h = 0 if h == w1 else h + 1
                st[4] = h
                c -= 1
            buf[i] = x
            k = h + c - 1
            if k >= w:
                k -= w
            while c and qv[k] <= x:
                c -= 1
                k = w1 if k == 0 else k - 1
            k = k + 1 if k < w1 else 0
            qv[k] = x
            qi[k] = i
            st[5] = c + 1
            st[0] = i + 1 if i < w1 else 0
        if st[14]:
            d = x - st[8]
            tol = st[12]
            if -tol <= d <= tol:
                run = st[9] + 1
                st[9] = run
                if run > st[13] and not st[15]:
                    self._fault("stuck_c", 54).apply(RAISE, t, x, out)
                    st[15] = 1
            else:
                st[8] = x
                st[9] = 1
                if st[15]:
                    self.stuck_c.apply(CLEAR, t, x, out)  # type: ignore[union-attr]
                    st[15] = 0
        # _refresh_quiet, inlined (comms_c and bad are clear here and has_prev is set): each
        # detector's step returns its quiet bound (None: busy); xq is the lowest
        lo = self.lo
        nfv = self.nfv
        xq = self.hi + 1 if st[27] and not nfv else lo
        for d in self.detectors:
            q = d.step(t, dt, x, out)
            if q is None:
                xq = lo
            elif q < xq:
                xq = q
        self.xq = xq
        if st[20]:
            st[11] = xq if xq < 0x3FFFFFFF else 0x3FFFFFFF
        st[39] = 1 if self.buf is not None and st[1] == st[17] and not nfv else 0  # CLEAN_

    def _detect(self, t, dt, x, out):
        # the end of _full, for fastpath.feed's busy path (viper points: supervision, ring and
        # stuck run done in machine code, nothing to raise or clear there). The quiet bound of
        # a viper point is st[XQ_] (exact: its range is compact); self.xq is not stored here,
        # as a store to a point costs a class lookup on MicroPython (its properties)
        st = self.st
        lo = self.lo
        # (no fault values: the fast path leaves those points to _full)
        xq = self.hi + 1 if st[27] else lo
        for d in self.detectors:
            q = d.step(t, dt, x, out)  # its quiet bound (None: busy)
            if q is None:
                xq = lo
            elif q < xq:
                xq = q
        st[11] = xq if xq < 0x3FFFFFFF else 0x3FFFFFFF

    def _refresh_quiet(self):
        # xq = lo disables the quiet path (no x satisfies lo <= x < lo)
        xq = self.lo
        st = self.st
        c = self.comms_c
        comms = c is not None and c.cause
        ok = st[HASPREV_] and not (comms or st[BAD_] or self.nfv)
        st[CLEAN_] = 1 if ok and self.buf is not None and st[N_] == st[W_] else 0
        if ok and st[QOK_]:
            b = self._quiet_bound()
            if b is not None:
                xq = b
        self.xq = xq
        if st[VIPER_]:
            st[XQ_] = xq if xq < TICKS_MASK else TICKS_MASK

    def _quiet_off(self):
        self.xq = self.lo
        self.st[CLEAN_] = 0
        if self.st[VIPER_]:
            self.st[XQ_] = self.lo

    def feed_block(self, ts, xs, out, start=0, end=-1):
        """``feed`` for samples ``xs[start:end]`` at times ``ts[...]``: the same events, faster.

        While every detector is idle and a sample cannot change any state (the common case: a
        normal reading), ``_quiet_run`` takes it with the ring update inlined; any other sample
        goes through ``feed``. The golden vectors run through both paths. On MicroPython this
        is ``fastpath.block`` (viper; the end of this module), which calls this one, ``pyblock``,
        for the points it does not serve and for blocks that are not ``array('i')``.
        """
        n = len(xs) if end < 0 else end
        if not _MICROPYTHON and self.dq is not None:  # CPython's ring layout
            cpyfeed.block(self, ts, xs, out, start, n)
            return
        j = start
        # a sample that is not quiet: feed's busy path on viper points and on CPython, else
        # _full (two direct calls: a bound method kept in a local would allocate)
        st = self.st
        viper = st[VIPER_]
        while j < n:
            # something can be quiet (xq <= lo: a detector is busy); viper points: st[XQ_]
            if (st[XQ_] if viper else self.xq) > self.lo:
                j = self._quiet_run(ts, xs, j, n)
                if j >= n:
                    break
            # sample j is not quiet (the quiet run stopped at it, or nothing is quiet now)
            if viper or not _MICROPYTHON:
                self.feed(ts[j], xs[j], out)
            else:
                self._full(ts[j], xs[j], out)
            j += 1

    pyblock = feed_block

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
        # refreshed after every full pass; lo when something is busy (viper points: st[XQ_])
        xq = self.st[XQ_] if self.st[VIPER_] else self.xq
        lo = self.lo
        if xq <= lo:
            return j
        stuck = self.st[STUCK_]
        stuck_on = self.st[STUCKON_]
        r = self.ring
        j0 = j
        if r is not None and r.qi is None:  # CPython's ring layout
            j = cpyfeed.quiet_run(self, xs, j, n, xq)
        else:
            pst = self.st
            tol = pst[TOL_]
            run_x = pst[RUNX_]
            run = pst[RUN_]
            last = pst[LAST_]
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

    def _fault(self, name, code):
        """The supervision condition ``name`` (made on its first use; see the class attributes)."""
        c = getattr(self, name)
        if c is None:
            if code == 55:  # no_response reports no value
                c = Condition(self, codes.FAULT, code, False)
            else:
                c = Condition(self, codes.FAULT, code, False, self.unit, self.exp)
            setattr(self, name, c)
        return c

    def _fault_value(self, t, x, out):
        c = self.fault_values[x]
        for f in self.fault_list:
            if f is not c and f.cause:
                f.apply(CLEAR, t, None, out)
        self._range_clear(t, None, None, out)
        if not c.cause:
            c.apply(RAISE, t, None, out)
        self.st[BAD_] = 1

    def _range_clear(self, t, x, keep, out):
        c = self.low_c
        if c is not None and c is not keep and c.cause:
            c.apply(CLEAR, t, x, out)
        h = self.high_c
        if h is not None and h is not keep and h.cause:
            h.apply(CLEAR, t, x, out)

    def _out_of_range(self, t, x, out):
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        st = self.st
        if x < self.lo or st[HICODE_] == st[LOCODE_]:
            c = self._fault("low_c", st[LOCODE_])
        else:
            c = self._fault("high_c", st[HICODE_])
        v = x if I64_MIN <= x <= I64_MAX else None  # the protocol's val is an int64
        self._range_clear(t, v, c, out)
        if not c.cause:
            c.apply(RAISE, t, v, out)
        self.st[BAD_] = 1

    def _good(self, t, x, out):
        self.st[BAD_] = 0
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        self._range_clear(t, x, None, out)

    def invalid(self, t, out):
        """A reading that is not a number at all (NaN, inf from a float register): a fault."""
        self.st[RX_] = t & TICKS_MASK
        self.st[RXOK_] = 1
        c = self.comms_c
        if c is not None and c.cause:
            c.apply(CLEAR, t, None, out)
            self.st[COMMSON_] = 0
        for f in self.fault_list:
            if f.cause:
                f.apply(CLEAR, t, None, out)
        st = self.st
        if st[HICODE_] == st[LOCODE_]:
            c = self._fault("low_c", st[LOCODE_])
        else:
            c = self._fault("high_c", st[HICODE_])
        self._range_clear(t, None, c, out)
        if not c.cause:
            c.apply(RAISE, t, None, out)
        self.st[BAD_] = 1
        self._quiet_off()

    def tick(self, t, out):
        """Call when a poll brought nothing new: raises no_response after the timeout."""
        st = self.st
        c = self.comms_c
        if st[RXOK_] and not (c is not None and c.cause) and (t - st[RX_]) & TICKS_MASK >= st[TMO_]:
            self._fault("comms_c", 55).apply(RAISE, t, None, out)
            st[COMMSON_] = 1
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


if not _MICROPYTHON:
    # CPython's feed (cpyfeed.py) and the class attributes only it reads (a board's Point keeps
    # none: on MicroPython every attribute store to a point probes the class dict first)
    Point.feed = cpyfeed.feed  # type: ignore[method-assign]
    Point.dq = None  # type: ignore[assignment]  # (buf, qv deque, next positions, variance)
    Point.one = None  # the only detector of a point with one (feed calls it directly)
    Point.oinv = None  # its inverse-time stage when it is an Overcurrent with one

vblock = fastpath.block  # (a module global: tests may wrap it)
if vblock is not None:

    def _feed_block(self, ts, xs, out, start=0, end=-1):  # Point.feed_block on MicroPython
        vblock(self, ts, xs, out, start, end)  # type: ignore[misc]  # (viper takes no defaults)

    Point.feed_block = _feed_block  # type: ignore[assignment,method-assign]
if fastpath.feed is not None:
    Point.feed = fastpath.feed  # type: ignore[assignment]
    fastpath.detect = Point._detect  # type: ignore[assignment]  # (a global: a method lookup on a point costs more)
