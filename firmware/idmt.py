"""Inverse-time overcurrent (IEC 60255-151, IEEE C37.112) and thermal overload (IEC 60255-149).

Theory of operation
-------------------
The operate time of an inverse-time stage at a multiple M = I / Is of the pickup current is

* IEC 60255-151:  t(M) = TMS * k / (M**a - 1)          (c = 0 for the IEC curves)
* IEEE C37.112:   t(M) = TD  * (A / (M**p - 1) + B)

(constants in ``CURVES``; source: shared/research/standards.md §5.1). Because a Modbus gateway
polls irregularly, the stage integrates over the real time between samples (C37.112's integral
form, §5.2): ``acc += dt / t(M)`` above pickup; trip when ``acc >= 1``.

Everything on the per-sample path is a small integer. ``acc`` is fixed point with
``ONE = 2**29`` meaning 1.0, and the rate ``ONE / t(M) [per ms]`` comes from a table built once
(floats are fine there) over M = 1 .. ``M_MAX`` in steps of 1/8, linearly interpolated in
1/2048 steps of M. The rate 1/t(M) is a smooth function of M (it is ~(M**a - 1)), so linear
interpolation is accurate to well under 0.1 % where the standards claim accuracy (2x..20x).
A trip is detected without forming ``rate * dt`` when it could overflow: ``dt >= ceil((ONE -
acc) / rate)``. Bounds, checked when built: rate <= 2**25 per ms (operate times >= 16 ms),
adjacent table entries differ by < 2**22 (so the interpolation product stays < 2**30), and
the pickup satisfies ``20 * pickup * 2048 < 2**30``; samples above 20x pickup are
clamped before any shift, so any sample the ring accepts is safe.

Reset below dropout (configurable, §5.2): ``instantaneous`` (acc = 0), ``definite`` (acc
falls linearly to 0 over ``reset_ms``), ``ieee`` (disk emulation, IEEE curves only:
``acc -= dt / tr(M)`` with tr(M) = TD * tr0 / (1 - M**2); tr0 values are [R] in the research,
see §5.1).

Thermal overload (IEC 60255-149, §5.3): theta' = (I / (k*IB))**2, first-order with heating and
cooling time constants; theta = 1 is the trip level. Fixed point ``THETA_ONE = 2**16``; the
target is clamped at M = 8 (GE clamps there too), and the update carries the division remainder,
so the discrete model is exact Euler in rational arithmetic (no floor bias).
"""

import sys

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


ONE = const(0x20000000)  # 2**29: accumulator value meaning "operate time reached"
M_SHIFT = const(11)  # M is computed in 1/2048 steps
M_STEP_SHIFT = const(8)  # table step = 2**(11-8) ... 1/8 of M
M_MAX = const(20)  # accuracy range upper end (IEC 60255-151 claims 2x..20x)
RATE_MAX = const(0x2000000)  # 2**25 per ms: operate times below ~16 ms are clamped
DIFF_MAX = const(0x400000)  # 2**22: interpolation product (diff * 255) stays < 2**30
I_MAX = const(0x7FFFF)  # 524,287: I << 11 stays < 2**30
THETA_ONE = const(0x10000)  # 2**16: thermal state 1.0 (trip)
THETA_M_MAX = const(8)  # thermal target clamped at (8 k IB)**2 = 64
_MICROPYTHON = sys.implementation.name == "micropython"

# name -> (family, k or A, alpha or p, c or B, IEEE reset tr0 or 0)
# Source: IEC 60255-151:2009 Table 1; IEEE C37.112-1996 Table 1 (via standards.md §5.1 [S]);
# IEEE reset tr0 values are [R] (recalled) in standards.md: verify before a compliance claim.
CURVES = {
    "iec_si": ("iec", 0.14, 0.02, 0.0, 0.0),  # IEC standard (normal) inverse
    "iec_vi": ("iec", 13.5, 1.0, 0.0, 0.0),  # IEC very inverse
    "iec_ei": ("iec", 80.0, 2.0, 0.0, 0.0),  # IEC extremely inverse
    "iec_lti": ("iec", 120.0, 1.0, 0.0, 0.0),  # IEC long-time inverse
    "ieee_mi": ("ieee", 0.0515, 0.02, 0.1140, 4.85),  # IEEE moderately inverse
    "ieee_vi": ("ieee", 19.61, 2.0, 0.491, 21.6),  # IEEE very inverse
    "ieee_ei": ("ieee", 28.2, 2.0, 0.1217, 29.1),  # IEEE extremely inverse
}

# Long names accepted too (device profiles use them).
CURVE_ALIASES = {
    "iec_standard_inverse": "iec_si",
    "iec_normal_inverse": "iec_si",
    "iec_very_inverse": "iec_vi",
    "iec_extremely_inverse": "iec_ei",
    "iec_long_time_inverse": "iec_lti",
    "ieee_moderately_inverse": "ieee_mi",
    "ieee_very_inverse": "ieee_vi",
    "ieee_extremely_inverse": "ieee_ei",
}

RESET_POLICIES = ("instantaneous", "definite", "ieee")


def operate_time_s(curve, m, tms):
    """The analytic operate time in seconds at multiple ``m`` (> 1); floats, not hot path."""
    _fam, k, a, c, _ = CURVES[curve]
    return tms * (k / (m**a - 1.0) + c)


def reset_time_s(curve, m, tms):
    """IEEE C37.112 reset time tr(M) = TD * tr0 / (1 - M**2) for m < 1."""
    tr0 = CURVES[curve][4]
    return tms * tr0 / (1.0 - m * m)


def _interp(table, q):
    # q: M in 1/2048 steps, 0 <= q < (len(table) - 1) << 8
    i = q >> M_STEP_SHIFT
    f = q & 0xFF
    r = table[i]
    return r + (((table[i + 1] - r) * f) >> M_STEP_SHIFT)


_TABLES = {}  # type: dict
_TABLE_SPECS = {}  # type: dict  # id(table) -> (curve, tms): InverseTime.curve / .tms
# Rate tables are read-only: points with the same curve and multiplier share one (648 bytes).


def build_rate_table(curve, tms):
    """Operate rates ONE / t(M) per ms for M = 1, 1 1/8, ... M_MAX (shared, read-only)."""
    key = curve + ":" + repr(tms)
    tab = _TABLES.get(key)
    if tab is None:
        tab = _build_rate_table(curve, tms)
        _TABLES[key] = tab
        _TABLE_SPECS[id(tab)] = (curve, tms)
    return tab


def _table(n):
    # array('i') on MicroPython (4 bytes an entry); a list on CPython, where reading an array
    # item makes a new int object and a list read is a specialised, allocation-free subscript
    if _MICROPYTHON:
        from array import array

        return array("i", bytes(4 * n))
    return [0] * n


def _build_rate_table(curve, tms):
    n = (M_MAX << 3) + 1
    tab = _table(n + 1)
    for j in range(8, n):
        m = j / 8.0
        if m <= 1.0:
            continue
        t_ms = operate_time_s(curve, m, tms) * 1000.0
        r = int(ONE / t_ms + 0.5) if t_ms > 0 else RATE_MAX
        tab[j] = r if r < RATE_MAX else RATE_MAX
    tab[n] = tab[n - 1]  # beyond M_MAX the rate stays at its M_MAX value
    for j in range(8, n):
        if tab[j + 1] - tab[j] >= DIFF_MAX:
            raise ValueError("tms: too small for curve " + curve + " (operate time < ~16 ms)")
    return tab


def build_reset_table(curve, tms):
    """IEEE disk-emulation reset rates ONE / tr(M) per ms for M = 0 .. 1 in steps of 1/8."""
    tab = _table(10)
    for j in range(9):
        m = j / 8.0
        if m >= 1.0:
            tab[j] = 0
            continue
        tr_ms = reset_time_s(curve, m, tms) * 1000.0
        tab[j] = int(ONE / tr_ms + 0.5)
    return tab


class InverseTime:
    """One inverse-time stage: ``step(dt_ms, i)`` returns True on the sample that trips.

    ``pickup`` in the sample's units (e.g. 0.1 A); ``dropout`` (default 95 % of pickup, §5.2)
    is where reset starts. After a trip the accumulator restarts from 0.
    """

    # Class attributes for what most stages share (no instance slot spent on a board).
    policy = 0  # RESET_POLICIES index: instantaneous
    reset_rate = 0  # ONE / reset_ms for reset "definite"
    rtable = None  # IEEE reset-rate table for reset "ieee"
    qmax = (M_MAX << M_SHIFT) - 1  # M at M_MAX in 1/2048 steps
    _drop = 0  # the dropout when it is not the default pickup * 95 // 100 (0: the default)

    def __init__(self, curve, pickup, tms, dropout=None, reset="instantaneous", reset_ms=0):
        curve = CURVE_ALIASES.get(curve, curve)
        if curve not in CURVES:
            raise ValueError("curve: unknown " + repr(curve) + ", one of " + ", ".join(CURVES))
        if pickup <= 0 or pickup > I_MAX // M_MAX:
            raise ValueError("pickup: " + str(pickup) + " outside 1.." + str(I_MAX // M_MAX))
        if not (0.01 <= tms <= 100):
            raise ValueError("tms: " + str(tms) + " outside 0.01..100")
        if reset not in RESET_POLICIES:
            raise ValueError(
                "reset: unknown " + repr(reset) + ", one of " + ", ".join(RESET_POLICIES)
            )
        if reset == "ieee" and CURVES[curve][0] != "ieee":
            raise ValueError("reset: 'ieee' disk emulation needs an IEEE curve, not " + curve)
        if reset == "definite" and not (0 < reset_ms <= 600000):
            raise ValueError(
                "reset_ms: " + str(reset_ms) + " outside 1..600000 for reset 'definite'"
            )
        if dropout is None:
            dropout = pickup * 95 // 100
        if not (0 < dropout <= pickup):
            raise ValueError("dropout: " + str(dropout) + " must be in 1..pickup")
        self.pickup = pickup
        if dropout != pickup * 95 // 100 or not _MICROPYTHON:
            # (CPython: always an instance attribute, the faster read; memory is no concern)
            self._drop = dropout
        if reset != "instantaneous":
            self.policy = RESET_POLICIES.index(reset)
        if reset == "definite":
            self.reset_rate = (ONE + reset_ms - 1) // reset_ms
        self.table = build_rate_table(curve, tms)
        if reset == "ieee":
            self.rtable = build_reset_table(curve, tms)
        self.acc = 0
        self.rate = 0  # rate of the previous sample: > 0 operating, < 0 resetting

    # dropout and xmax follow from pickup (no instance slots spent on a board)
    @property
    def dropout(self):
        return self._drop or self.pickup * 95 // 100

    @property
    def xmax(self):
        return self.pickup * M_MAX

    # curve and tms name the shared rate table (no instance slots spent on a board)
    @property
    def curve(self):
        return _TABLE_SPECS[id(self.table)][0]

    @property
    def tms(self):
        return _TABLE_SPECS[id(self.table)][1]

    def step(self, dt, x):
        """Integrate the ``dt`` ms since the previous sample, then take ``x`` as the new value.

        Zero-order hold: a polled value holds until the next poll, so the interval before a
        sample is integrated at the *previous* sample's rate (a long gap before the first high
        sample never counts as overcurrent). Returns True on the sample that trips.
        """
        r = self.rate
        tripped = False
        if r > 0:
            acc = self.acc
            # rate_reaches(r, dt, ONE - acc), inlined
            if (r * dt >= ONE - acc) if dt < 32 else (dt >= (ONE - acc + r - 1) // r):
                self.acc = 0
                tripped = True
            else:
                self.acc = acc + r * dt
        elif r < 0 and self.acc:
            r = -r
            if rate_reaches(r, dt, self.acc):
                self.acc = 0
            else:
                self.acc -= r * dt
        pickup = self.pickup
        if x > pickup:
            # beyond M_MAX the rate stays at its M_MAX value (and x << 11 stays small)
            q = self.qmax if x >= pickup * M_MAX else (x << M_SHIFT) // pickup
            # _interp(self.table, q), inlined
            tab = self.table
            k = q >> M_STEP_SHIFT
            r = tab[k]
            self.rate = r + (((tab[k + 1] - r) * (q & 0xFF)) >> M_STEP_SHIFT)
        elif x <= (self._drop or pickup * 95 // 100):  # self.dropout
            if self.policy == 0:
                self.acc = 0
                self.rate = 0
            elif self.policy == 1:
                self.rate = -self.reset_rate
            else:
                self.rate = -_interp(self.rtable, (x << M_SHIFT) // pickup)
        else:
            self.rate = 0  # between dropout and pickup the accumulator holds
        return tripped


def rate_reaches(rate, dt, need):
    """rate * dt >= need, without forming a product that could leave 30 bits."""
    if dt < 32:
        return rate * dt >= need
    return dt >= (need + rate - 1) // rate


class Thermal:
    """IEC 60255-149 thermal image. ``theta`` is fixed point, THETA_ONE = trip level.

    ``step(dt_ms, i)`` advances the model; the caller compares ``theta`` with its levels.
    ``theta`` is the state to persist across restarts (thermal memory): build a new one with
    ``theta=`` the saved value and call ``cool(elapsed_ms)`` for the time the gateway was off.
    """

    def __init__(self, k_ib, tau_heat_ms, tau_cool_ms=None, theta=0):
        if k_ib <= 0 or k_ib > I_MAX // THETA_M_MAX:
            raise ValueError("k_ib: " + str(k_ib) + " outside 1.." + str(I_MAX // THETA_M_MAX))
        if tau_cool_ms is None:
            tau_cool_ms = tau_heat_ms
        for name, v in (("tau_heat_ms", tau_heat_ms), ("tau_cool_ms", tau_cool_ms)):
            if not isinstance(v, int) or not (1000 <= v <= 0x10000000):
                raise ValueError(name + ": " + str(v) + " outside 1000..268435456 ms")
        if not (0 <= theta <= THETA_ONE * THETA_M_MAX * THETA_M_MAX):
            raise ValueError("theta: " + str(theta) + " outside 0..4194304")
        self.k_ib = k_ib
        self.tau_heat = tau_heat_ms
        self.tau_cool = tau_cool_ms
        self.xmax = k_ib * THETA_M_MAX
        self.theta = theta
        self.chunk = (tau_heat_ms if tau_heat_ms < tau_cool_ms else tau_cool_ms) >> 8
        self.tgt = 0  # steady-state theta of the previous sample's current
        self.rem = 0  # division remainder carried to the next update

    def target(self, x):
        """Steady-state theta for current x: (x / k_ib)**2 in THETA_ONE units (clamped)."""
        if x < 0:
            x = -x
        if x > self.xmax:
            x = self.xmax
        # (x << 8) // k_ib < 2**11; its square < 2**22, then << 0: THETA_ONE = (1 << 8) ** 2
        m = (x << 8) // self.k_ib
        return m * m

    def step(self, dt, x):
        """Advance ``dt`` ms at the previous sample's current (zero-order hold), then take x.

        theta += dt/tau * (target - theta), in chunks so no product leaves 30 bits.
        """
        tgt = self.tgt
        self.tgt = self.target(x)
        while dt > 0:
            d = tgt - self.theta
            if d == 0:
                self.rem = 0
                return
            tau = self.tau_heat if d > 0 else self.tau_cool
            ad = d if d > 0 else -d
            c = 0x10000000 // ad  # chunk so that d * c < 2**28
            if c > self.chunk:
                c = self.chunk  # and <= tau/256, so Euler stays within ~0.2 % of exp()
            if c > dt:
                c = dt
            if c == 0:
                c = 1
            num = d * c + self.rem
            stp = num // tau
            self.rem = num - stp * tau
            self.theta += stp
            dt -= c

    def cool(self, elapsed_ms):
        """Apply ``elapsed_ms`` at zero current (the time the gateway was off)."""
        self.tgt = 0
        self.step(elapsed_ms, 0)
