"""Optional ``@micropython.viper`` fast path for ``Point.feed_block``'s quiet run (MicroPython).

``quiet_ring(xs, j, n, buf, qv, qi, st, prm)`` is ``Point._quiet_run``'s ring loop compiled to
machine code. It takes samples ``xs[j:n]`` (an ``array('i')``) while they change no condition,
updates the ring in its compact layout (``buf``, ``qv``: ``array('h')``; ``qi``:
``array('B')``) and the stuck-run state, and returns the index of the first sample it did not
take. The ring's state words ``st`` (ring.py: i, n, s, s2, max head, max count, -, -, run
value, run length) are read and written in place; ``prm`` holds lo, the quiet bound,
tolerance, run limit, stuck on/off, stuck active, variance, window.

Viper integers are machine words and ``ptr`` loads are unsigned, so the caller uses this only
for compact rings (window <= 256, |sample| <= 32767) with non-negative ranges.

On CPython (or a build without viper) ``quiet_ring`` is None and the pure-Python loop runs; the
golden vectors run through both (``golden.run_vector(..., block=True)`` hands micropython
arrays).
"""

quiet_ring = None

try:
    import micropython

    @micropython.viper
    def _quiet_ring(xs, j: int, n: int, buf, qv, qi, st, prm) -> int:
        Xp = ptr32(xs)  # type: ignore[name-defined]  # noqa: F821
        Bp = ptr16(buf)  # type: ignore[name-defined]  # noqa: F821
        Qp = ptr16(qv)  # type: ignore[name-defined]  # noqa: F821
        Ip = ptr8(qi)  # type: ignore[name-defined]  # noqa: F821
        Sp = ptr32(st)  # type: ignore[name-defined]  # noqa: F821
        Pp = ptr32(prm)  # type: ignore[name-defined]  # noqa: F821
        lo = int(Pp[0])
        xq = int(Pp[1])
        tol = int(Pp[2])
        last = int(Pp[3])
        stuck = int(Pp[4])
        stuck_on = int(Pp[5])
        var = int(Pp[6])
        w = int(Pp[7])
        i = int(Sp[0])
        rn = int(Sp[1])
        s = int(Sp[2])
        s2 = int(Sp[3])
        h = int(Sp[4])
        c = int(Sp[5])
        run_x = int(Sp[8])
        run = int(Sp[9])
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
                    h = 0 if h == w - 1 else h + 1
                    c -= 1
            else:
                rn += 1
                s += x
                if var:
                    s2 += x * x
            Bp[i] = x
            t = h + c - 1
            if t >= w:
                t -= w
            while c and int(Qp[t]) <= x:
                c -= 1
                t = w - 1 if t == 0 else t - 1
            t = 0 if t == w - 1 else t + 1
            Qp[t] = x
            Ip[t] = i
            c += 1
            i = 0 if i == w - 1 else i + 1
            j += 1
        Sp[0] = i
        Sp[1] = rn
        Sp[2] = s
        Sp[3] = s2
        Sp[4] = h
        Sp[5] = c
        Sp[8] = run_x
        Sp[9] = run
        return j

    quiet_ring = _quiet_ring
except (ImportError, AttributeError, SyntaxError):  # CPython, or a port without viper
    pass
