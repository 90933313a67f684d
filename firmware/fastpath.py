"""Optional ``@micropython.viper`` fast paths for ``Point.feed`` and ``Point.feed_block``.

Both take quiet samples (``lo <= x < xq``: every detector idle and the sample unable to change
any condition) with the ring update and the stuck-sensor run compiled to machine code; any other
sample goes to the bytecode full pass. State lives in one ``array('i')``, the point's ``st``
(ring.py names the words: ring i, n, s, s2, max head, max count, -, -, run value, run length,
then lo, xq, tolerance, run limit, stuck on/off, stuck active, variance, window, last rx time,
last valid time, viper on/off); the ring is the compact layout (``buf``, ``qv``:
``array('h')``; ``qi``: ``array('B')``).

* ``feed(point, t, x, out)`` replaces ``Point.feed`` on MicroPython (one call per sample).
  Quiet samples end there; a busy sample whose supervision, ring and stuck run change no
  condition gets those done there and goes on to the bytecode detectors (``Point._detect``);
  any other sample takes the bytecode full pass (``Point._full``). Points the fast path does
  not serve (``st[VIPER_] == 0``) go to the bytecode ``feed``.
* ``ring_push(ring, x)`` is ``Ring.push`` for those rings (no min queue), for the full pass.
* ``block(point, ts, xs, out, start, end)`` is ``Point.feed_block`` on MicroPython (point.py
  wraps it for the default arguments, which viper functions cannot have): quiet runs of an
  ``array('i')`` block take the supervision, stuck run and ring update in one machine-code loop
  with the state in registers; every other sample goes to ``feed`` (above), so the events come
  at the same samples as per call. Other points and blocks that are not ``array('i')`` go to
  the bytecode ``Point.pyblock``. Like ``feed``'s quiet samples it leaves an Overcurrent's
  held rate alone (``quiet_done``): a quiet run needs the rate <= 0 and the accumulator 0, and
  a negative rate over a zero accumulator acts as 0.

Viper integers are machine words and ``ptr`` loads are unsigned, so the point uses these only
for compact rings (window <= 256, |sample| <= 32767) with non-negative ranges.

On CPython (or a build without viper) all three are None and the pure-Python paths run; the golden
vectors run through both (``golden.run_vector`` feeds per call and, with ``block=True``, hands
micropython arrays).
"""

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


# state words (the same numbers as ring.py's; test_fastpaths checks they agree)
_I = const(0)
_N = const(1)
_S = const(2)
_S2 = const(3)
_H = const(4)
_C = const(5)
_RUNX = const(8)
_RUN = const(9)
_LO = const(10)
_XQ = const(11)
_TOL = const(12)
_LAST = const(13)
_STUCK = const(14)
_STUCKON = const(15)
_VAR = const(16)
_W = const(17)
_RX = const(18)
_PREV = const(19)
_VIPER = const(20)
_GAP = const(21)
_HASPREV = const(22)
_BAD = const(24)
_HI = const(28)
_COMMSON = const(29)
_FV = const(30)
_MASK = const(0x3FFFFFFF)
XMAX = 0x3FFFFFFF  # objects, not consts: viper compares them with an object sample
XMIN = -0x3FFFFFFF

WORDS = {
    "I_": _I,
    "N_": _N,
    "S_": _S,
    "S2_": _S2,
    "HMAX_": _H,
    "CMAX_": _C,
    "RUNX_": _RUNX,
    "RUN_": _RUN,
    "LO_": _LO,
    "XQ_": _XQ,
    "TOL_": _TOL,
    "LAST_": _LAST,
    "STUCK_": _STUCK,
    "STUCKON_": _STUCKON,
    "VAR_": _VAR,
    "W_": _W,
    "RX_": _RX,
    "PREV_": _PREV,
    "VIPER_": _VIPER,
    "GAP_": _GAP,
    "HASPREV_": _HASPREV,
    "BAD_": _BAD,
    "HI_": _HI,
    "COMMSON_": _COMMSON,
    "FV_": _FV,
}

block = None
feed = None
ring_push = None
detect = None  # Point._detect (point.py sets it)

try:
    from array import array as _array

    import micropython

    @micropython.viper
    def _block(self, ts, xs, out, start, end):
        # Point.feed_block on viper points. Quiet runs (lo <= x < xq, the stuck run unable to
        # raise or clear) take the ring and stuck updates here with the state in machine words;
        # any other sample goes through _feed, exactly as a per-call feed would take it.
        Sp = ptr32(self.st)  # type: ignore[name-defined]  # noqa: F821
        if not Sp[_VIPER] or not isinstance(xs, _array):
            self.pyblock(ts, xs, out, start, end)
            return
        n = int(end)
        if n < 0:
            n = int(len(xs))  # noqa: RUF046  (viper: len is an object)
        j = int(start)
        Xp = ptr32(xs)  # type: ignore[name-defined]  # noqa: F821
        Bp = ptr16(self.buf)  # type: ignore[name-defined]  # noqa: F821
        Qp = ptr16(self.qv)  # type: ignore[name-defined]  # noqa: F821
        Ip = ptr8(self.qi)  # type: ignore[name-defined]  # noqa: F821
        lo = int(Sp[_LO])
        tol = int(Sp[_TOL])
        last = int(Sp[_LAST])
        stuck = int(Sp[_STUCK])
        var = int(Sp[_VAR])
        w = int(Sp[_W])
        w1 = w - 1
        while j < n:
            xq = int(Sp[_XQ])  # lo when a detector is busy: nothing is quiet
            if xq > lo:
                stuck_on = int(Sp[_STUCKON])
                i = int(Sp[_I])
                rn = int(Sp[_N])
                s = int(Sp[_S])
                s2 = int(Sp[_S2])
                h = int(Sp[_H])
                c = int(Sp[_C])
                run_x = int(Sp[_RUNX])
                run = int(Sp[_RUN])
                j0 = j
                while j < n:
                    x = int(Xp[j])
                    if x < lo or x >= xq:
                        break
                    if stuck:
                        d = x - run_x
                        if d >= 0 - tol and d <= tol:
                            if run >= last and not stuck_on:
                                break
                            run += 1
                        else:
                            if stuck_on:
                                break
                            run_x = x
                            run = 1
                    if rn == w:
                        old = int(Bp[i])
                        s += x - old
                        if var:
                            s2 += x * x - old * old
                        if int(Ip[h]) == i:
                            h = 0 if h == w1 else h + 1
                            c -= 1
                    else:
                        rn += 1
                        s += x
                        if var:
                            s2 += x * x
                    Bp[i] = x
                    k = h + c - 1
                    if k >= w:
                        k -= w
                    while c and int(Qp[k]) <= x:
                        c -= 1
                        k = w1 if k == 0 else k - 1
                    k = 0 if k == w1 else k + 1
                    Qp[k] = x
                    Ip[k] = i
                    c += 1
                    i = 0 if i == w1 else i + 1
                    j += 1
                if j > j0:
                    Sp[_I] = i
                    Sp[_N] = rn
                    Sp[_S] = s
                    Sp[_S2] = s2
                    Sp[_H] = h
                    Sp[_C] = c
                    Sp[_RUNX] = run_x
                    Sp[_RUN] = run
                    tm = int(ts[j - 1]) & _MASK  # (the low 30 bits; truncation keeps them)
                    Sp[_RX] = tm
                    Sp[_PREV] = tm
                if j >= n:
                    break
            _feed(self, ts[j], xs[j], out)
            j += 1

    @micropython.viper
    def _feed(self, t, xo, out):
        # Point.feed. Quiet samples (lo <= x < xq) end here. A busy sample (a detector is timing
        # or integrating, or x is above the quiet bound) has its supervision, times, ring and
        # stuck run done here when none of them changes a condition, then the bytecode
        # detectors (Point._detect). Anything else goes to the bytecode full pass (_full).
        # t and x stay objects for the calls out (events carry the caller's t); viper's int()
        # truncates a long int, so x must be a small int first (|x| < 2**30 on every port: a
        # larger one is out of any compact range and the full pass says so)
        st = self.st
        Sp = ptr32(st)  # type: ignore[name-defined]  # noqa: F821
        if not Sp[_VIPER]:
            self.pyfeed(t, xo, out)
            return
        if xo > XMAX or xo < XMIN:
            self._full(t, xo, out)
            return
        x = int(xo)
        quiet = x >= int(Sp[_LO]) and x < int(Sp[_XQ])
        if not quiet:
            if x < int(Sp[_LO]) or x > int(Sp[_HI]) or not Sp[_HASPREV]:
                self._full(t, xo, out)
                return
            if Sp[_BAD] or Sp[_COMMSON] or Sp[_FV]:
                self._full(t, xo, out)
                return
        if Sp[_STUCK]:
            d = x - int(Sp[_RUNX])
            tol = int(Sp[_TOL])
            if d >= 0 - tol and d <= tol:
                if int(Sp[_RUN]) >= int(Sp[_LAST]) and not Sp[_STUCKON]:
                    self._full(t, xo, out)
                    return
                Sp[_RUN] = int(Sp[_RUN]) + 1
            else:
                if Sp[_STUCKON]:
                    self._full(t, xo, out)
                    return
                Sp[_RUNX] = x
                Sp[_RUN] = 1
        tm = int(t) & _MASK  # (only the low 30 bits matter, and truncation keeps them)
        dt = (tm - int(Sp[_PREV])) & _MASK
        Sp[_RX] = tm
        Sp[_PREV] = tm
        Bp = ptr16(self.buf)  # type: ignore[name-defined]  # noqa: F821
        Qp = ptr16(self.qv)  # type: ignore[name-defined]  # noqa: F821
        Ip = ptr8(self.qi)  # type: ignore[name-defined]  # noqa: F821
        w = int(Sp[_W])
        i = int(Sp[_I])
        h = int(Sp[_H])
        c = int(Sp[_C])
        if int(Sp[_N]) == w:
            old = int(Bp[i])
            Sp[_S] = int(Sp[_S]) + x - old
            if Sp[_VAR]:
                Sp[_S2] = int(Sp[_S2]) + x * x - old * old
            if int(Ip[h]) == i:
                h = 0 if h == w - 1 else h + 1
                c -= 1
        else:
            Sp[_N] = int(Sp[_N]) + 1
            Sp[_S] = int(Sp[_S]) + x
            if Sp[_VAR]:
                Sp[_S2] = int(Sp[_S2]) + x * x
        Bp[i] = x
        k = h + c - 1
        if k >= w:
            k -= w
        while c and int(Qp[k]) <= x:
            c -= 1
            k = w - 1 if k == 0 else k - 1
        k = 0 if k == w - 1 else k + 1
        Qp[k] = x
        Ip[k] = i
        Sp[_H] = h
        Sp[_C] = c + 1
        Sp[_I] = 0 if i == w - 1 else i + 1
        if not quiet:
            if dt > int(Sp[_GAP]):
                dt = int(Sp[_GAP])
            detect(self, t, dt, xo, out)  # type: ignore[misc]

    @micropython.viper
    def _ring_push(r, x: int):
        # Ring.push for a compact ring with no min queue (Point._full on viper points)
        Sp = ptr32(r.st)  # type: ignore[name-defined]  # noqa: F821
        Bp = ptr16(r.buf)  # type: ignore[name-defined]  # noqa: F821
        Qp = ptr16(r.qv)  # type: ignore[name-defined]  # noqa: F821
        Ip = ptr8(r.qi)  # type: ignore[name-defined]  # noqa: F821
        w = int(Sp[_W])
        i = int(Sp[_I])
        h = int(Sp[_H])
        c = int(Sp[_C])
        if int(Sp[_N]) == w:
            old = int(Bp[i])
            Sp[_S] = int(Sp[_S]) + x - old
            if Sp[_VAR]:
                Sp[_S2] = int(Sp[_S2]) + x * x - old * old
            if int(Ip[h]) == i:
                h = 0 if h == w - 1 else h + 1
                c -= 1
        else:
            Sp[_N] = int(Sp[_N]) + 1
            Sp[_S] = int(Sp[_S]) + x
            if Sp[_VAR]:
                Sp[_S2] = int(Sp[_S2]) + x * x
        Bp[i] = x
        k = h + c - 1
        if k >= w:
            k -= w
        while c and int(Qp[k]) <= x:
            c -= 1
            k = w - 1 if k == 0 else k - 1
        k = 0 if k == w - 1 else k + 1
        Qp[k] = x
        Ip[k] = i
        Sp[_H] = h
        Sp[_C] = c + 1
        Sp[_I] = 0 if i == w - 1 else i + 1

    block = _block
    feed = _feed
    ring_push = _ring_push
except (ImportError, AttributeError, SyntaxError):  # CPython, or a port without viper
    pass
