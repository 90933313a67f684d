"""``Point.feed`` on CPython: ``Point.pyfeed``'s two paths over CPython's ring layout.

point.py installs ``feed`` as ``Point.feed`` when the interpreter is not MicroPython (a board
never imports this module: its bytecode would take heap there for nothing). The steps and their
order are pyfeed's -- the quiet path (stuck run, times, ring), the busy path (supervision
word, stuck run, times and dt, ring, then each detector's ``step``, which returns its quiet
bound) and the full pass for anything that changes a supervision condition -- and the golden
vectors and test_fastpaths hold both to the full pass. What differs:

* the ring update: CPython's rolling-max queue is a ``collections.deque`` of values (ring.py),
  so the push is a few C calls (``popleft``/``pop``/``append``) instead of circular-index
  arithmetic, and the next ring position is one tuple subscript (``Point.dq``);
* a point with one detector (the common case) calls it directly (``Point.one``), no loop; when
  that detector is an Overcurrent with an inverse stage (``Point.oinv``), its step is inlined
  (detectors.py holds the original; test_fastpaths and the golden vectors hold the copy to it);
* ``block`` is ``Point.feed_block``'s loop for this layout: quiet runs in ``quiet_run``, the
  samples between them through the same busy path inlined, with the point's storage in locals
  for the whole block;
* smaller things that count on CPython, where a sample costs about 2 ns a bytecode: the quiet
  test reads ``xq`` first (a busy sample fails it at once), ``st[k] = st[k] + v`` instead of
  ``+=`` (two bytecodes fewer), the state words as literal numbers (ring.py names them;
  test_ring checks the numbers).

``ring_push`` is ``Ring.push`` for that layout (ring.py calls it; this module imports nothing
from the package, so ring.py can import it).
"""


def feed(self, t, x, out):
    """``Point.feed`` on CPython: one sample ``x`` at monotonic ``t`` ms (see the module)."""
    st = self.st
    if x < self.xq and x >= self.lo:  # (a busy sample fails the first test)
        # Quiet sample (see pyfeed)
        if st[14]:
            if x != st[8] and (not st[12] or not -st[12] <= x - st[8] <= st[12]):
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
        st[18] = st[19] = t & 0x3FFFFFFF
        if not st[39]:  # CLEAN_ (off: no window, or it is not full yet)
            if self.buf is not None:
                self.push(x)
                if st[1] == st[17]:
                    self._refresh_quiet()
            return
        # Ring._push_deques, full window and no min queue, inlined
        buf, q, nxt, var = self.dq  # type: ignore[misc]
        i = st[0]
        old = buf[i]
        buf[i] = x
        st[0] = nxt[i]  # i + 1, or 0 at the end: one subscript instead of a test
        st[2] = st[2] + x - old  # (fewer bytecodes than +=)
        if var:
            st[3] = st[3] + x * x - old * old
        if q[0] == old:
            q.popleft()
        if q[-1] < x:  # (never empty here: it holds the previous sample, window >= 2)
            q.pop()
            while q and q[-1] < x:
                q.pop()
        q.append(x)
        return
    # Busy (see pyfeed)
    if not st[39] or x > self.hi or x < self.lo:
        self._full(t, x, out)
        return
    if st[14]:
        if x != st[8] and (not st[12] or not -st[12] <= x - st[8] <= st[12]):
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
    buf, q, nxt, var = self.dq  # type: ignore[misc]
    i = st[0]
    old = buf[i]
    buf[i] = x
    st[0] = nxt[i]  # i + 1, or 0 at the end: one subscript instead of a test
    st[2] = st[2] + x - old  # (fewer bytecodes than +=)
    if var:
        st[3] = st[3] + x * x - old * old
    if q[0] == old:
        q.popleft()
    if q[-1] < x:  # (never empty here: it holds the previous sample, window >= 2)
        q.pop()
        while q and q[-1] < x:
            q.pop()
    q.append(x)
    inv = self.oinv
    if inv is not None:
        # the only detector is an Overcurrent with an inverse stage: its step, inlined (the
        # same code as in block; detectors.py holds the commented original)
        one = self.one
        pickup = inv.pickup
        r = inv.rate
        if r >= 0 and x > pickup:
            if r:
                acc = inv.acc
                if (
                    (r * dt < 0x20000000 - acc)
                    if dt < 32
                    else (dt < (0x20000000 - acc + r - 1) // r)
                ):
                    inv.acc = acc + r * dt
                else:
                    inv.acc = 0
                    c = one.inv_c
                    if c is None or not c.cause:
                        one._cond("inv_c", 6).apply(0, t, x, out)
            m = inv.qmax if x >= pickup * 20 else (x << 11) // pickup
            tab = inv.table
            k = m >> 8
            r = tab[k]
            r = inv.rate = r + (((tab[k + 1] - r) * (m & 0xFF)) >> 8)
        else:
            tripped = inv.step(dt, x)
            r = inv.rate
            c = one.inv_c
            if c is not None and c.cause:
                if not tripped and x <= (inv._drop or pickup * 95 // 100):
                    c.apply(1, t, x, out)
            elif tripped:
                one._cond("inv_c", 6).apply(0, t, x, out)
        p = st[7]
        if p:
            c = one.dt_c
            if x > p:
                if c is None or not c.cause:
                    if not st[36]:
                        st[36] = 1
                        st[35] = tm
                    if (tm - st[35]) & 0x3FFFFFFF >= st[38]:
                        one._cond("dt_c", 7).apply(0, t, x, out)
            elif x <= st[37]:
                st[36] = 0
                if c is not None and c.cause:
                    c.apply(1, t, x, out)
        p = one.inst_pickup
        if p:
            c = one.inst_c
            on = c is not None and c.cause
            if x >= p:
                if not on:
                    one._cond("inst_c", 8).apply(0, t, x, out)
            elif on and x <= one.inst_drop:
                c.apply(1, t, x, out)
        if r > 0:
            self.xq = self.lo
            return
        b = one.quiet_below()
        if b is None or not st[27]:
            self.xq = self.lo
        else:
            self.xq = b if b <= self.hi else self.hi + 1
        return
    # each detector's step returns its quiet bound (None: busy); xq is the lowest
    d = self.one
    if d is not None:  # one detector (the common case): no loop
        b = d.step(t, dt, x, out)
        if b is None or not st[27]:
            self.xq = self.lo
        else:
            self.xq = b if b <= self.hi else self.hi + 1
        return
    lo = self.lo
    xq = self.hi + 1 if st[27] else lo
    for d in self.detectors:
        b = d.step(t, dt, x, out)
        if b is None:
            xq = lo
        elif b < xq:
            xq = b
    self.xq = xq


def block(self, ts, xs, out, j, n):
    """``Point.feed_block`` for this layout (``Point.dq`` set): samples ``xs[j:n]`` at ``ts``.

    Quiet runs go to ``quiet_run``; the samples between them take ``feed``'s busy path inlined
    here, with the point's storage in locals for the whole block (no call per sample); any
    sample that path does not take goes to ``feed`` or the full pass, as in ``feed``.
    """
    st = self.st
    lo = self.lo
    hi = self.hi
    buf, q, nxt, var = self.dq
    one = self.one
    inv = getattr(one, "inv", None)  # an Overcurrent's inverse-time stage (inlined below)
    if inv is not None:
        pickup = inv.pickup
        xmax = pickup * 20  # (idmt.M_MAX)
        tab = inv.table
    while j < n:
        xq = self.xq
        if xq > lo:
            k = quiet_run(self, xs, j, n, xq)
            if k > j:
                st[18] = st[19] = ts[k - 1] & 0x3FFFFFFF
                for d in self.detectors:
                    d.quiet_done()
                j = k
                if j >= n:
                    break
        # sample j is not quiet, or the quiet run left it (its stuck run changes): feed's steps
        x = xs[j]
        t = ts[j]
        j += 1
        if x < xq and x >= lo:
            self.feed(t, x, out)
            continue
        # Busy (feed's busy path)
        if not st[39] or x > hi or x < lo:
            self._full(t, x, out)
            continue
        if st[14]:
            if x != st[8] and (not st[12] or not -st[12] <= x - st[8] <= st[12]):
                if st[15]:
                    self._full(t, x, out)
                    continue
                st[8] = x
                st[9] = 1
            elif st[9] >= st[13] and not st[15]:
                self._full(t, x, out)
                continue
            else:
                st[9] += 1
        tm = t & 0x3FFFFFFF
        dt = (tm - st[19]) & 0x3FFFFFFF
        if dt > st[21]:
            dt = st[21]
        st[18] = st[19] = tm
        i = st[0]
        old = buf[i]
        buf[i] = x
        st[0] = nxt[i]
        st[2] = st[2] + x - old
        if var:
            st[3] = st[3] + x * x - old * old
        if q[0] == old:
            q.popleft()
        if q[-1] < x:  # (never empty here: it holds the previous sample, window >= 2)
            q.pop()
            while q and q[-1] < x:
                q.pop()
        q.append(x)
        if inv is not None:
            # Overcurrent.step (one Overcurrent with an inverse stage), inlined: detectors.py
            # holds the commented original (literals: RAISE 0, CLEAR 1, ONE = 0x20000000,
            # the state words DTP_ 7, DTT0_ 35, DTON_ 36, DTDROP_ 37, DTDELAY_ 38)
            r = inv.rate
            if r >= 0 and x > pickup:
                if r:
                    acc = inv.acc
                    if (
                        (r * dt < 0x20000000 - acc)
                        if dt < 32
                        else (dt < (0x20000000 - acc + r - 1) // r)
                    ):
                        inv.acc = acc + r * dt
                    else:
                        inv.acc = 0
                        c = one.inv_c
                        if c is None or not c.cause:
                            one._cond("inv_c", 6).apply(0, t, x, out)
                m = inv.qmax if x >= xmax else (x << 11) // pickup
                k = m >> 8
                r = tab[k]
                r = inv.rate = r + (((tab[k + 1] - r) * (m & 0xFF)) >> 8)
            else:
                tripped = inv.step(dt, x)
                r = inv.rate
                c = one.inv_c
                if c is not None and c.cause:
                    if not tripped and x <= (inv._drop or pickup * 95 // 100):
                        c.apply(1, t, x, out)
                elif tripped:
                    one._cond("inv_c", 6).apply(0, t, x, out)
            p = st[7]
            if p:
                c = one.dt_c
                if x > p:
                    if c is None or not c.cause:
                        if not st[36]:
                            st[36] = 1
                            st[35] = tm
                        if (tm - st[35]) & 0x3FFFFFFF >= st[38]:
                            one._cond("dt_c", 7).apply(0, t, x, out)
                elif x <= st[37]:
                    st[36] = 0
                    if c is not None and c.cause:
                        c.apply(1, t, x, out)
            p = one.inst_pickup
            if p:
                c = one.inst_c
                on = c is not None and c.cause
                if x >= p:
                    if not on:
                        one._cond("inst_c", 8).apply(0, t, x, out)
                elif on and x <= one.inst_drop:
                    c.apply(1, t, x, out)
            if r > 0:
                self.xq = lo
                continue
            b = one.quiet_below()
            if b is None or not st[27]:
                self.xq = lo
            else:
                self.xq = b if b <= hi else hi + 1
            continue
        if one is not None:
            b = one.step(t, dt, x, out)
            if b is None or not st[27]:
                self.xq = lo
            else:
                self.xq = b if b <= hi else hi + 1
            continue
        xq = hi + 1 if st[27] else lo
        for d in self.detectors:
            b = d.step(t, dt, x, out)
            if b is None:
                xq = lo
            elif b < xq:
                xq = b
        self.xq = xq


_NEXT = {}  # type: dict  # window -> next_positions(window), shared (read-only)


def next_positions(window):
    """The tuple (1, 2, ..., window - 1, 0): the ring position after each (Point.dq)."""
    nxt = _NEXT.get(window)
    if nxt is None:
        nxt = _NEXT[window] = tuple(j + 1 if j + 1 < window else 0 for j in range(window))
    return nxt


def ring_push(r, x):
    """``Ring.push`` for CPython's layout (any fill, min queue or not); ``feed`` inlines the
    case that dominates (window full, no min queue)."""
    buf = r.buf
    st = r.st
    i = st[0]  # I_
    w = st[17]  # W_
    old = buf[i]
    full = st[1] == w  # N_
    if full:
        st[2] += x - old  # S_
        if st[16]:  # VAR_
            st[3] += x * x - old * old  # S2_
    else:
        st[1] += 1
        st[2] += x
        if st[16]:
            st[3] += x * x
    buf[i] = x
    st[0] = 0 if i == w - 1 else i + 1
    # Rolling max: the leaving sample is the head iff it equals it (the queue keeps equal
    # values: each stands for its own sample); drop the tail entries below x, append x.
    q = r.qv
    if full and q[0] == old:
        q.popleft()
    while q and q[-1] < x:
        q.pop()
    q.append(x)
    if r.track_min:
        q = r.mv
        if full and q[0] == old:
            q.popleft()
        while q and q[-1] > x:
            q.pop()
        q.append(x)


def quiet_run(p, xs, j, n, xq):
    """``Point._quiet_run``'s loop for CPython's layout: take ``xs[j:n]`` while quiet (every
    detector idle, ``lo <= x < xq``, the stuck run changing no condition); return the index of
    the first sample it did not take. The caller sets the times and tells the detectors."""
    st = p.st
    if st[1] != st[17]:  # N_ < W_: the window is still filling
        return _quiet_fill(p, xs, j, n, xq)
    lo = p.lo
    stuck = st[14]  # STUCK_
    stuck_on = st[15]  # STUCKON_
    tol = st[12]  # TOL_
    last = st[13]  # LAST_
    run_x = st[8]  # RUNX_
    run = st[9]  # RUN_
    buf, q, nxt, var = p.dq
    i = st[0]
    s = st[2]
    s2 = st[3]
    k = j
    for k in range(j, n):  # (a for loop: fewer bytecodes a sample than j += 1)
        x = xs[k]
        if x < lo or x >= xq:
            break
        if stuck:
            # within the tolerance of the run's first sample (x == run_x: most often tol is 0)
            if x == run_x or (tol and -tol <= x - run_x <= tol):
                if run >= last and not stuck_on:
                    break
                run += 1
            else:
                if stuck_on:
                    break
                run_x = x
                run = 1
        # ring_push for a full window, inlined
        old = buf[i]
        s += x - old
        if var:
            s2 += x * x - old * old
        if q[0] == old:
            q.popleft()
        buf[i] = x
        i = nxt[i]
        if q[-1] < x:  # (never empty here: it holds the previous sample, window >= 2)
            q.pop()
            while q and q[-1] < x:
                q.pop()
        q.append(x)
    else:
        k = n  # every sample taken
    st[0] = i
    st[2] = s
    st[3] = s2
    st[8] = run_x
    st[9] = run
    return k


def _quiet_fill(p, xs, j, n, xq):
    # quiet_run while the window fills (any fill)
    st = p.st
    lo = p.lo
    stuck = st[14]  # STUCK_
    stuck_on = st[15]  # STUCKON_
    tol = st[12]  # TOL_
    last = st[13]  # LAST_
    run_x = st[8]  # RUNX_
    run = st[9]  # RUN_
    buf, q, nxt, var = p.dq
    w = st[17]
    i = st[0]
    rn = st[1]
    s = st[2]
    s2 = st[3]
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
        # ring_push, inlined
        old = buf[i]
        if rn == w:
            s += x - old
            if var:
                s2 += x * x - old * old
            if q[0] == old:
                q.popleft()
        else:
            rn += 1
            s += x
            if var:
                s2 += x * x
        buf[i] = x
        i = nxt[i]
        while q and q[-1] < x:
            q.pop()
        q.append(x)
    st[0] = i
    st[1] = rn
    st[2] = s
    st[3] = s2
    st[8] = run_x
    st[9] = run
    return j
