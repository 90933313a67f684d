# mypy: disable-error-code="attr-defined,misc,assignment,var-annotated"
# (this file also runs on micropython: time.ticks_us, gc.mem_alloc, no typing at run time)
"""Benchmark variants of one channel's detection chain; runs on CPython and on micropython.

``emberlink bench core`` (tools/bench_core.py) imports this module on CPython and runs it as a
script on micropython (``micropython bench_core_variants.py N REPS``), which prints one JSON line
per variant. The reference variants follow shared/research/protocol-core-anchors.md B1, same
semantics in each:

* ring of W=64 integer samples, running sums s and s2;
* rolling max by a monotonic queue; flatline when the window is full and s == max * n;
* peak supervisory when max > PK;
* alarm verification: s > THR*n for HOLD consecutive samples raises, s < CLR*n clears;
* inverse-time accumulator: acc += LUT[(x*16)//IS] above pickup, trip at 65536 then restart,
  decay by 2048 per sample below.

``a0`` recomputes everything from a list each sample (O(W)); ``a`` is a preallocated list ring;
``c`` uses collections.deque. These only count what they detect. ``c_full`` is the deque ring
doing the core's whole job, the like-for-like reference: range supervision, the time of the
last sample, inverse-time accumulation over the real dt, and every alarm, flatline and trip
raised and cleared as an Event through ``lifecycle.Condition``. The project's core (``core``)
runs the equivalent chain through
``emberlink.firmware``: a Point with a W=64 ring (sums, s2, rolling max), the stuck-sensor
check, a definite-time stage (threshold held for 200 ms = 10 samples at 20 ms) and the IEC SI
inverse-time stage integrated over the real time between samples.
"""

import gc
import sys
import time

try:
    from collections import deque
except ImportError:  # pragma: no cover - every tested build has it
    deque = None

W = 64
THR = 2600  # mean above this for HOLD samples raises
CLR = 2400
HOLD = 10
PK = 3900
IS = 2000  # inverse-time pickup
TRIP = 65536
DECAY = 2048
PERIOD_MS = 20

MP = sys.implementation.name == "micropython"


def make_lut():
    # IEC SI, TMS 0.1, 20 ms per sample: acc units per sample at multiple idx/16 of IS
    lut = [0] * 40
    for i in range(16, 40):
        m = i / 16.0
        if m <= 1.0:
            continue
        t = 0.1 * 0.14 / (m**0.02 - 1.0)
        lut[i] = int(TRIP * 0.02 / t)
    return lut


LUT = make_lut()


def signal(n):
    """Deterministic 12-bit test signal (LCG noise, an overcurrent phase, a flatline, spikes)."""
    xs = [0] * n
    s = 12345
    for k in range(n):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        r = (s >> 16) & 0xFF
        ph = (k // 2000) % 4
        if ph == 0:
            x = 1500 + r
        elif ph == 1:
            x = 2500 + r * 2  # overheat / overcurrent
        elif ph == 2:
            x = 1800  # stuck sensor
        else:
            x = 1200 + r
        if k % 997 == 0:
            x = 4000  # spike
        xs[k] = x
    return xs


class RefNaive:
    """a0: list append + pop(0), sum/max recomputed every sample."""

    def __init__(self):
        self.buf = []
        self.over = 0
        self.alarm = False
        self.acc = 0
        self.alarms = self.peaks = self.flats = self.trips = 0

    def push(self, x):
        b = self.buf
        b.append(x)
        if len(b) > W:
            b.pop(0)
        n = len(b)
        s = sum(b)
        mx = max(b)
        if n == W and s == mx * n:
            self.flats += 1
        if mx > PK:
            self.peaks += 1
        self._tail(x, s, n)

    def _tail(self, x, s, n):
        if s > THR * n:
            self.over += 1
            if self.over >= HOLD and not self.alarm:
                self.alarm = True
                self.alarms += 1
        else:
            self.over = 0
            if self.alarm and s < CLR * n:
                self.alarm = False
        if x > IS:
            self.acc += LUT[(x * 16) // IS]
            if self.acc >= TRIP:
                self.trips += 1
                self.acc = 0
        elif self.acc:
            self.acc = self.acc - DECAY if self.acc > DECAY else 0


class RefList(RefNaive):
    """a: preallocated list ring, index arithmetic, monotonic max queue in two list rings."""

    def __init__(self):
        RefNaive.__init__(self)
        self.buf = [0] * W
        self.qt = [0] * W
        self.qv = [0] * W
        self.i = self.n = self.s = self.s2 = 0
        self.h = self.c = 0
        self.k = 0

    def push(self, x):
        buf = self.buf
        i = self.i
        if self.n == W:
            old = buf[i]
            self.s += x - old
            self.s2 += x * x - old * old
        else:
            self.n += 1
            self.s += x
            self.s2 += x * x
        buf[i] = x
        i += 1
        self.i = 0 if i == W else i
        k = self.k + 1
        self.k = k
        qv = self.qv
        qt = self.qt
        h = self.h
        c = self.c
        if c and k - qt[h] >= W:
            h = h + 1 if h + 1 < W else 0
            c -= 1
        while c:
            t = h + c - 1
            if t >= W:
                t -= W
            if qv[t] > x:
                break
            c -= 1
        t = h + c
        if t >= W:
            t -= W
        qv[t] = x
        qt[t] = k
        self.h = h
        self.c = c + 1
        mx = qv[h]
        n = self.n
        s = self.s
        if n == W and s == mx * n:
            self.flats += 1
        if mx > PK:
            self.peaks += 1
        self._tail(x, s, n)


class RefDeque(RefNaive):
    """c: deque(maxlen=W) ring, deques for the max queue."""

    def __init__(self):
        RefNaive.__init__(self)
        self.buf = deque((), W)
        self.qv = deque((), W)
        self.qt = deque((), W)
        self.n = self.s = self.s2 = self.k = 0

    def push(self, x):
        buf = self.buf
        if self.n == W:
            old = buf.popleft()
            self.s += x - old
            self.s2 += x * x - old * old
        else:
            self.n += 1
            self.s += x
            self.s2 += x * x
        buf.append(x)
        k = self.k + 1
        self.k = k
        qv = self.qv
        qt = self.qt
        if qt and k - qt[0] >= W:
            qv.popleft()
            qt.popleft()
        while qv and qv[-1] <= x:
            qv.pop()
            qt.pop()
        qv.append(x)
        qt.append(k)
        mx = qv[0]
        n = self.n
        s = self.s
        if n == W and s == mx * n:
            self.flats += 1
        if mx > PK:
            self.peaks += 1
        self._tail(x, s, n)


class RefDequeFull(RefDeque):
    """c_full: the deque ring doing the core's whole job (a like-for-like reference).

    ``c_deque`` only counts: no supervision, no events, a fixed dt. This one adds what the
    core does per sample: range check (a FAULT condition), the time of the last sample (comms
    supervision) and the clamped dt since the previous one, inverse-time accumulation scaled by
    that real dt, and every alarm, flatline and trip raised and cleared through
    ``emberlink.firmware.lifecycle.Condition`` (the same Event objects the core emits).
    """

    test = False  # Condition reads point.test / src / part
    src = 1
    part = None

    def __init__(self):
        from emberlink.firmware.lifecycle import Condition

        RefDeque.__init__(self)
        self.out = []
        self.t = 0
        self.last_rx = 0
        self.prev_t = 0
        self.has_prev = False
        self.range_c = Condition(self, 2, 50, False, 3, -1)
        self.flat_c = Condition(self, 2, 54, False, 3, -1)
        self.alarm_c = Condition(self, 4, 7, False, 3, -1)
        self.trip_c = Condition(self, 4, 6, False, 3, -1)

    def push(self, x):
        t = self.t + PERIOD_MS
        self.t = t
        self.last_rx = t
        out = self.out
        if x < 0 or x > 4095:
            if not self.range_c.cause:
                self.range_c.apply(0, t, x, out)
            return
        if self.range_c.cause:
            self.range_c.apply(1, t, x, out)
        if self.has_prev:
            dt = (t - self.prev_t) & 0x3FFFFFFF
            if dt > 60000:
                dt = 60000
        else:
            dt = 0
            self.has_prev = True
        self.prev_t = t
        buf = self.buf
        if self.n == W:
            old = buf.popleft()
            self.s += x - old
            self.s2 += x * x - old * old
        else:
            self.n += 1
            self.s += x
            self.s2 += x * x
        buf.append(x)
        k = self.k + 1
        self.k = k
        qv = self.qv
        qt = self.qt
        if qt and k - qt[0] >= W:
            qv.popleft()
            qt.popleft()
        while qv and qv[-1] <= x:
            qv.pop()
            qt.pop()
        qv.append(x)
        qt.append(k)
        mx = qv[0]
        n = self.n
        s = self.s
        fc = self.flat_c
        if n == W and s == mx * n:
            self.flats += 1
            if not fc.cause:
                fc.apply(0, t, x, out)
        elif fc.cause:
            fc.apply(1, t, x, out)
        if mx > PK:
            self.peaks += 1
        ac = self.alarm_c
        if s > THR * n:
            self.over += 1
            if self.over >= HOLD and not self.alarm:
                self.alarm = True
                self.alarms += 1
                ac.apply(0, t, x, out)
        else:
            self.over = 0
            if self.alarm and s < CLR * n:
                self.alarm = False
                ac.apply(1, t, x, out)
        tc = self.trip_c
        if x > IS:
            self.acc += LUT[(x * 16) // IS] * dt // PERIOD_MS
            if self.acc >= TRIP:
                self.trips += 1
                self.acc = 0
                if not tc.cause:
                    tc.apply(0, t, x, out)
        else:
            if self.acc:
                self.acc = self.acc - DECAY if self.acc > DECAY else 0
            if tc.cause:
                tc.apply(1, t, x, out)


CORE_CFG = {
    "input": "current",
    "range": [0, 4095],
    "window": W,
    "overcurrent": {
        "inverse": {"curve": "iec_si", "pickup": IS, "tms": 0.1},
        "definite": {"pickup": THR, "delay_ms": HOLD * PERIOD_MS},
        "kind": "supervisory",
        "latching": False,
    },
}


class Core:
    """The project's core: emberlink.firmware Point, one feed() per sample."""

    def __init__(self):
        from emberlink.firmware.config import build_detectors

        self.point = build_detectors(CORE_CFG, 1)
        self.out = []
        self.t = 0

    def push(self, x):
        self.t += PERIOD_MS
        self.point.feed(self.t, x, self.out)


def _clock():
    if MP:
        return time.ticks_us()
    return int(time.perf_counter() * 1e6)


def _elapsed_us(t0):
    if MP:
        return time.ticks_diff(time.ticks_us(), t0)
    return _clock() - t0


def run_per_sample(obj, xs):
    push = obj.push
    t0 = _clock()
    for x in xs:
        push(x)
    return _elapsed_us(t0)


def _core_loop(point, xs, out):
    # the gateway's own loop: time advances, one feed per sample
    feed = point.feed
    t = 0
    for x in xs:
        t += PERIOD_MS
        feed(t, x, out)


def _core_loop_from(point, xs, out, t):
    feed = point.feed
    for x in xs:
        t += PERIOD_MS
        feed(t, x, out)


def _core_blocks(point, ts, xs, out, block=64):
    # the same samples handed over in blocks (a poll cycle's backlog, a replay, a buffer)
    n = len(xs)
    feed_block = point.feed_block
    for j in range(0, n, block):
        e = j + block
        feed_block(ts, xs, out, j, e if e < n else n)


def _times(n):
    ts = _seq(n)
    for k in range(n):
        ts[k] = (k + 1) * PERIOD_MS
    return ts


def _seq(n):
    if MP:
        from array import array

        return array("i", bytes(4 * n))
    return [0] * n


def _run_core(name, obj, ts, xs):
    if name == "core":
        _core_loop(obj.point, xs, obj.out)
    else:
        _core_blocks(obj.point, ts, xs, obj.out)


def time_variant(name, xs, reps, ts=None):
    """Median samples/s of ``reps`` runs over xs; fresh object each run."""
    rates = []
    for _ in range(reps):
        gc.collect()
        obj = VARIANTS[name]()
        if name.startswith("core"):
            t0 = _clock()
            _run_core(name, obj, ts, xs)
            us = _elapsed_us(t0)
        else:
            us = run_per_sample(obj, xs)
        rates.append(len(xs) * 1e6 / max(us, 1))
    rates.sort()
    return rates[len(rates) // 2]


def time_all(names, xs, reps, ts, short=()):
    """Median samples/s per variant; the runs go round-robin so load spikes hit every variant."""
    rates = {}
    for name in names:
        rates[name] = []
    for _ in range(reps):
        for name in names:
            sub = xs
            if name in short:
                sub = xs[: len(xs) // 4]
            rates[name].append(time_variant(name, sub, 1, ts))
    out = {}
    for name in names:
        r = sorted(rates[name])
        out[name] = r[len(r) // 2]
    return out


def heap_per_sample_mp(name, xs, ts):
    """gc.mem_alloc growth per sample with the GC off (micropython)."""
    obj = VARIANTS[name]()
    n = len(xs)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    a = gc.mem_alloc()
    if name.startswith("core"):
        _run_core(name, obj, ts, xs)
    else:
        run_per_sample(obj, xs)
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) / n


def bytes_per_channel_mp(name, channels=100):
    """gc.mem_alloc per channel with the window filled (micropython)."""
    xs = signal(2 * W)
    ts = _times(2 * W)
    gc.collect()
    a = gc.mem_alloc()
    keep = []
    for _ in range(channels):
        obj = VARIANTS[name]()
        if name.startswith("core"):
            _run_core(name, obj, ts, xs)
            obj = obj.point  # the channel is the Point (the time and out list are the caller's)
        else:
            for x in xs:
                obj.push(x)
        keep.append(obj)
    gc.collect()
    b = gc.mem_alloc()
    return (b - a) / channels


VARIANTS = {"a0_naive": RefNaive, "a_list": RefList, "core": Core, "core_block64": Core}
if deque is not None:
    VARIANTS["c_deque"] = RefDeque
    VARIANTS["c_full"] = RefDequeFull


def quiet_signal(n):
    """A normal channel: noise around 40 % of pickup, no threshold crossed, never flat."""
    xs = _seq(n)
    s = 777
    for k in range(n):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        xs[k] = 800 + ((s >> 16) & 0xFF)
    return xs


def main(argv):
    import json

    n = int(argv[0]) if argv else 100000
    reps = int(argv[1]) if len(argv) > 1 else 3
    names = argv[2].split(",") if len(argv) > 2 else None
    ts = _times(n)
    for sig_name, make in (("chain", signal), ("quiet", quiet_signal)):
        xs0 = make(n)
        xs = _seq(n)
        for k in range(n):
            xs[k] = xs0[k]
        del xs0
        todo = [
            v
            for v in ("a0_naive", "a_list", "c_deque", "c_full", "core", "core_block64")
            if v in VARIANTS and not (names and v not in names)
        ]
        rates = time_all(todo, xs, reps, ts)
        for name in todo:
            rate = rates[name]
            row = {"signal": sig_name, "variant": name, "samples_per_s": rate}
            if MP:
                m = 10000 if n > 10000 else n
                row["heap_b_per_sample"] = heap_per_sample_mp(name, xs[:m], ts)
                row["bytes_per_channel"] = bytes_per_channel_mp(name)
            print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
