"""Build a point's detector chain from its ``detectors`` configuration (a plain dict).

``build_detectors(cfg, src=0, warnings=None) -> point.Point`` is the one entry point; the edge
gateway calls it for each point of its site configuration, ``emberlink replay`` for each point
of a replay file. The accepted structure is documented in firmware/README.md ("Detector
configuration"). Errors raise ``ConfigError`` whose message starts with the dotted path of the
bad field (``detectors.residual_current.level_mA: 1500 outside 20..1000``). Advisory problems
(a setpoint outside the recommended band) are appended to ``warnings`` as strings.

Every default that comes from a standard names it; the numbers are in
shared/research/standards.md (§ given) with that file's confidence tags, and they stay
configurable because GB 14287.2-2026 and GB 26875.9-2026 are being re-pinned.
"""

from ..protocol import codes
from . import detectors as det
from . import idmt
from .point import Point

# --- Defaults with their sources --------------------------------------------------------------
# Residual current (GB 14287.2 product range [R]; GB 50116-2013 §9.2.3 [P]; §7 rows 16-17)
RC_LEVEL_MIN_MA = 20  # GB 14287.2-2014 alarm-setting range, lower end [R]
RC_LEVEL_MAX_MA = 1000  # GB 14287.2-2014 upper end [R]; Acrel ARCM: <= 1000 mA [S]
RC_LEVEL_DEFAULT_MA = 300  # GB 50116-2013 §9.2.3: 300 mA can ignite a fire [P]
RC_RECOMMENDED_MA = (300, 500)  # GB 50116-2013 §9.2.3 design setting 300-500 mA [P]
RC_PRE_PCT = 80  # pre-warning at 80 % of the setpoint (§7 row 17, ASJ/Circutor pattern [S])
RC_DELAY_DEFAULT_MS = 1000  # §7 row 17 default delay
RC_DELAY_MAX_MS = 10000  # delay 0-10 s (ASJ 0x0010, Circutor RGU-10 [S]); <= 30 s with 10 s polls
RC_ALARM_LIMIT_MS = 30000  # GB 50166-2019 §4.8.4: alarm within 30 s of the set value [S]
RC_MARGIN = 2  # setpoint >= 2x the natural leakage (Acrel ARCM300 manual [S])
RC_LEAK_PERIOD_MS = 86400000  # natural leakage observed over 24 h (§7 row 16)
# Cable / terminal temperature (GB 50166-2019 §4.8.5 [S]; GB 14287.3 [R])
CT_LEVEL_DEFAULT = 800  # 80.0 Cel default setpoint (§7 row 18 [D])
CT_RECOMMENDED = (550, 1400)  # 55-140 Cel setting range, GB 14287.3 [R]
CT_DELAY_MAX_MS = 20000  # 40 s limit (GB 50166 §4.8.5) = poll gap + delay + poll gap, polls <= 10 s
# Smoke (GB 4715-2024 §5.7 [P]; Notifier [S]; UL 864 via Mircom/Bosch [S]; §7 rows 24-25)
SMOKE_ALARM_MIN = 50  # 0.05 dB/m: most sensitive A-type setting allowed (GB 4715-2024 [P])
SMOKE_ALARM_MAX = 600  # 0.6 dB/m: top of the photoelectric listed range (§7 row 24)
SMOKE_PRE_PCT = (50, 80)  # pre-alarm 50-80 % of the alarm level (§7 row 24)
SMOKE_PRE_DEFAULT_PCT = 60
SMOKE_RETARD_MAX_MS = 60000  # UL 864: retard + reset + restart <= 60 s
SMOKE_WINDOW_MIN_MS = 60000  # UL 864: confirmation window >= 60 s
SMOKE_MAINT_PCT = 80  # maintenance alert at >= 80 % compensation (§7 row 24)
SMOKE_LOW_PCT = 5  # low-chamber fault at <= 5 % (Notifier LOW THRESHOLD 0-5 % [S])
SMOKE_TAU_DEFAULT_MS = 86400000  # drift time constant 24 h (§4.6 [D]: 24 h - 7 d)
SMOKE_TAU_RANGE_MS = (3600000, 604800000)  # 1 h .. 7 d
# Heat, EN 54-5 classes (GB 4716 equivalent), 0.1 Cel: (typical, max application, min static
# response, max static response) -- standards.md §4.5 [S]
HEAT_CLASSES = {
    "A1": (250, 500, 540, 650),
    "A2": (250, 500, 540, 700),
    "B": (400, 650, 690, 850),
    "C": (550, 800, 840, 1000),
    "D": (700, 950, 990, 1150),
    "E": (850, 1100, 1140, 1300),
    "F": (1000, 1250, 1290, 1450),
    "G": (1150, 1400, 1440, 1600),
}
HEAT_ROR_RATE_DEFAULT = 100  # 10 K/min over 60 s ([D]; EN 54-5 Table 5 timings are [R])
HEAT_ROR_WINDOW_MS = 60000  # 60 s slope window (§7 row 26)
# Supervision
COMMS_TIMEOUT_DEFAULT_MS = 100000  # fault <= 100 s after onset (GB 14287.1 by analogy [R])
MAX_GAP_DEFAULT_MS = 60000  # longest interval integrated at one sample's value (slow polls: 5-30 s)
WINDOW_DEFAULT = 64
# Overcurrent (IEC 60255-151 / IEEE C37.112, §5.1-5.2)
OC_DROPOUT_PCT = 95  # dropout 0.95-0.97 x pickup (§5.2 [S])

INPUTS = {
    # input -> (unit code, exponent, default range, function section, part code)
    "smoke": (7, -3, (-500, 4000), "smoke", 40),  # 0.001 dB/m
    "heat": (4, -1, (-400, 2000), "heat", 30),  # 0.1 Cel
    "residual_current": (1, -3, (0, 30000), "residual_current", 17),  # mA (ASJ 0-30000)
    "cable_temperature": (4, -1, (-400, 2000), "cable_temperature", 18),  # 0.1 Cel
    "current": (1, -1, (0, 200000), None, 201),  # 0.1 A: sections overcurrent / thermal
    "panel_status": (None, None, (0, 65535), "panel", 200),  # a 16-bit status word
}

_COMMON = (
    "input",
    "unit",
    "exp",
    "range",
    "open_below",
    "short_above",
    "fault_values",
    "window",
    "stuck",
    "comms_timeout_ms",
    "max_gap_ms",
    "part",
    "test_mode",
)


class ConfigError(ValueError):
    """A detector configuration that cannot be built; the message starts with the field path."""

    def __init__(self, path, msg):
        super().__init__(path + ": " + msg)
        self.path = path


def _field_error(path, e):
    # "field: message" from a lower layer -> ConfigError at path.field
    parts = str(e).split(": ", 1)
    if len(parts) == 2:
        return ConfigError(path + "." + parts[0], parts[1])
    return ConfigError(path, parts[0])


def _int(d, key, path, default=None, lo=None, hi=None):
    v = d.get(key, default) if isinstance(d, dict) else default
    p = path + "." + key
    if v is None:
        raise ConfigError(p, "required")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(p, "expected an integer, got " + repr(v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(p, str(v) + " outside " + str(lo) + ".." + str(hi))
    return v


def _num(d, key, path, default=None, lo=None, hi=None):
    v = d.get(key, default)
    p = path + "." + key
    if v is None:
        raise ConfigError(p, "required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(p, "expected a number, got " + repr(v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(p, str(v) + " outside " + str(lo) + ".." + str(hi))
    return v


def _bool(d, key, path, default):
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(path + "." + key, "expected true or false, got " + repr(v))
    return v


def _section(d, key, path, allowed):
    v = d.get(key)
    if v is None:
        return None
    p = path + "." + key
    if not isinstance(v, dict):
        raise ConfigError(p, "expected a table")
    _only(v, p, allowed)
    return v


def _only(d, path, allowed):
    for k in d:
        if k not in allowed:
            raise ConfigError(
                path + "." + str(k), "unknown field (allowed: " + ", ".join(allowed) + ")"
            )


def _kind(d, path, default):
    v = d.get("kind", default)
    try:
        k = codes.code_of(codes.KIND_NAMES, v, path + ".kind")
    except ValueError as e:
        raise ConfigError(path + ".kind", str(e).split(": ", 1)[-1]) from None
    if k not in (codes.FIRE_ALARM, codes.PRE_ALARM, codes.FAULT, codes.SUPERVISORY):
        raise ConfigError(path + ".kind", "must be fire_alarm, pre_alarm, fault or supervisory")
    return k


def build_detectors(cfg, src=0, warnings=None, path="detectors"):
    """Build the ``Point`` for one point's ``detectors`` configuration (see README)."""
    if warnings is None:
        warnings = []
    if not isinstance(cfg, dict):
        raise ConfigError(path, "expected a table")
    inp = cfg.get("input")
    if inp not in INPUTS:
        raise ConfigError(
            path + ".input", "expected one of " + ", ".join(INPUTS) + ", got " + repr(inp)
        )
    unit, exp, rng, section, part = INPUTS[inp]
    if "unit" in cfg:
        try:
            unit = codes.code_of(codes.UNIT_NAMES, cfg["unit"], path + ".unit")
        except ValueError as e:
            raise ConfigError(path + ".unit", str(e).split(": ", 1)[-1]) from None
    exp = _int(cfg, "exp", path, exp, -24, 23) if "exp" in cfg else exp
    allowed = list(_COMMON)
    if inp == "current":
        allowed += ["overcurrent", "thermal"]
    else:
        allowed.append(str(section))
    if "verification" in cfg:
        raise ConfigError(
            path + ".verification",
            "belongs in the smoke section: alarm verification is for smoke points only, never"
            " manual call points, heat or flow inputs (UL 864)",
        )
    _only(cfg, path, allowed)
    lo, hi = rng
    if "range" in cfg:
        r = cfg["range"]
        if (
            not isinstance(r, (list, tuple))
            or len(r) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            or r[0] >= r[1]
        ):
            raise ConfigError(path + ".range", "expected [low, high] integers, low < high")
        lo, hi = r[0], r[1]
    lo_code, hi_code = 50, 50  # out_of_range
    if cfg.get("open_below") is not None:
        lo = _int(cfg, "open_below", path, None, lo, hi)
        lo_code = 51  # open_circuit
    if cfg.get("short_above") is not None:
        hi = _int(cfg, "short_above", path, None, lo, hi)
        hi_code = 52  # short_circuit
    fv = {}
    raw_fv = cfg.get("fault_values", {})
    if not isinstance(raw_fv, dict):
        raise ConfigError(path + ".fault_values", "expected a table of value = condition name")
    for k in raw_fv:
        p = path + ".fault_values." + str(k)
        try:
            v = int(k)
        except ValueError:
            raise ConfigError(p, "key must be an integer raw value") from None
        try:
            code = codes.code_of(codes.CONDITION_NAMES, raw_fv[k], p)
        except ValueError as e:
            raise ConfigError(p, str(e).split(": ", 1)[-1]) from None
        if not (50 <= code <= 99):
            raise ConfigError(
                p, "must name a supervision condition (open_circuit, short_circuit, break_line ...)"
            )
        fv[v] = code
    window = _int(cfg, "window", path, WINDOW_DEFAULT, 0, 4096)
    if window == 1:
        raise ConfigError(path + ".window", "1 is not a window (0 disables the ring)")
    stuck_cfg = cfg.get("stuck", inp != "panel_status")
    tol = 0
    if isinstance(stuck_cfg, dict):
        _only(stuck_cfg, path + ".stuck", ("tolerance",))
        tol = _int(stuck_cfg, "tolerance", path + ".stuck", 0, 0)
        stuck_cfg = True
    elif not isinstance(stuck_cfg, bool):
        raise ConfigError(path + ".stuck", "expected true, false or {tolerance = n}")
    if inp == "panel_status":
        window = 0
        stuck_cfg = False
    part_code = _int(cfg, "part", path, part, 0)
    try:
        point = Point(
            src,
            unit,
            exp,
            lo,
            hi,
            fv,
            window,
            stuck_cfg,
            tol,
            _int(cfg, "comms_timeout_ms", path, COMMS_TIMEOUT_DEFAULT_MS, 1000),
            _int(cfg, "max_gap_ms", path, MAX_GAP_DEFAULT_MS, 1, 600000),
            part_code,
            lo_code,
            hi_code,
        )
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(path + ".range", str(e)) from None
    if _bool(cfg, "test_mode", path, False):
        point.test = True
    if inp == "smoke":
        _smoke(point, cfg, path, lo, hi, warnings)
    elif inp == "heat":
        _heat(point, cfg, path, warnings)
    elif inp == "residual_current":
        _residual(point, cfg, path, warnings)
    elif inp == "cable_temperature":
        _cable(point, cfg, path, warnings)
    elif inp == "current":
        _current(point, cfg, path, lo, hi)
    else:
        _panel(point, cfg, path)
    if not point.detectors and inp != "current":
        raise ConfigError(path + "." + section, "required for input " + inp)
    if not point.detectors:
        raise ConfigError(path + ".overcurrent", "current needs overcurrent or thermal")
    return point


def _smoke(point, cfg, path, lo, hi, warnings):
    p = path + ".smoke"
    s = _section(
        cfg,
        "smoke",
        path,
        (
            "alarm",
            "pre_alarm",
            "hold_samples",
            "verification",
            "baseline",
            "drift",
            "kind",
            "latching",
        ),
    )
    if s is None:
        return
    if point.unit == 7 and point.exp == -3:  # 0.001 dB/m: the GB 4715 bounds apply
        alarm = _int(s, "alarm", p, None, SMOKE_ALARM_MIN, SMOKE_ALARM_MAX)
    else:  # another unit (e.g. 0.01 %/m obscuration): levels are in the point's units
        alarm = _int(s, "alarm", p, None, 1, hi)
        warnings.append(p + ".alarm: in the point's own units, not checked against GB 4715")
    pre = _int(s, "pre_alarm", p, alarm * SMOKE_PRE_DEFAULT_PCT // 100, 1, alarm - 1)
    if not (SMOKE_PRE_PCT[0] * alarm <= pre * 100 <= SMOKE_PRE_PCT[1] * alarm):
        warnings.append(p + ".pre_alarm: " + str(pre) + " outside 50-80 % of the alarm level")
    hold = _int(s, "hold_samples", p, 2, 1, 100)
    base = _int(s, "baseline", p, 0, lo, hi)
    verify = False
    retard, window = 0, 0
    v = s.get("verification", False)
    if v is not False:
        if v is True:
            v = {}
        if not isinstance(v, dict):
            raise ConfigError(p + ".verification", "expected false, true or a table")
        _only(v, p + ".verification", ("retard_ms", "window_ms"))
        verify = True
        retard = _int(v, "retard_ms", p + ".verification", 30000, 0, SMOKE_RETARD_MAX_MS)
        window = _int(v, "window_ms", p + ".verification", 60000, SMOKE_WINDOW_MIN_MS, 600000)
    base_min, base_max, tau, maint, low = 0, 1, 0, SMOKE_MAINT_PCT, SMOKE_LOW_PCT
    d = _section(
        s, "drift", p, ("baseline_min", "baseline_max", "tau_ms", "maintenance_pct", "low_pct")
    )
    if d is not None:
        pd = p + ".drift"
        base_min = _int(d, "baseline_min", pd, None, lo, hi)
        base_max = _int(d, "baseline_max", pd, None, base_min + 1, hi)
        tau = _int(d, "tau_ms", pd, SMOKE_TAU_DEFAULT_MS, *SMOKE_TAU_RANGE_MS)
        maint = _int(d, "maintenance_pct", pd, SMOKE_MAINT_PCT, 1, 99)
        low = _int(d, "low_pct", pd, SMOKE_LOW_PCT, 0, maint - 1)
        if not (base_min <= base <= base_max):
            raise ConfigError(
                p + ".baseline", str(base) + " outside drift.baseline_min..baseline_max"
            )
        if (hi - lo) * 60000 + tau > 0x3FFFFFFF:
            raise ConfigError(pd + ".tau_ms", "range * 60 s + tau must stay below 2**30")
    point.add(
        det.Smoke(
            point,
            _kind(s, p, codes.FIRE_ALARM),
            alarm,
            pre,
            hold,
            verify,
            retard,
            window,
            base,
            base_min,
            base_max,
            tau,
            maint,
            low,
            _bool(s, "latching", p, True),
        )
    )


def _heat(point, cfg, path, warnings):
    p = path + ".heat"
    s = _section(
        cfg, "heat", path, ("class", "fixed", "delay_ms", "rate_of_rise", "kind", "latching")
    )
    if s is None:
        return
    cls = s.get("class", "A1")
    if not isinstance(cls, str):
        raise ConfigError(p + ".class", "expected a class name such as A1, A2S or BR")
    base = cls[:-1] if cls[-1:] in ("S", "R") and cls[:-1] in HEAT_CLASSES else cls
    if base not in HEAT_CLASSES:
        raise ConfigError(
            p + ".class",
            "unknown EN 54-5 class " + repr(cls) + " (A1, A2, B .. G,"
            " with an optional S or R suffix)",
        )
    typ, _, smin, smax = HEAT_CLASSES[base]
    fixed = _int(s, "fixed", p, smin, smin, smax)
    kind = _kind(s, p, codes.FIRE_ALARM)
    latching = _bool(s, "latching", p, True)
    point.add(
        det.Threshold(
            point, kind, 2, fixed, fixed - 20, _int(s, "delay_ms", p, 0, 0, 10000), latching
        )
    )
    r = s.get("rate_of_rise", cls.endswith("R"))
    if r is False:
        if cls.endswith("R"):
            raise ConfigError(p + ".rate_of_rise", "class " + cls + " is a rate-of-rise class")
        return
    if cls.endswith("S"):
        raise ConfigError(
            p + ".rate_of_rise",
            "class " + cls + " (suffix S) must not alarm below its static response temperature",
        )
    if r is True:
        r = {}
    if not isinstance(r, dict):
        raise ConfigError(p + ".rate_of_rise", "expected false, true or a table")
    pr = p + ".rate_of_rise"
    _only(r, pr, ("rate_per_min", "window_ms", "t_min"))
    point.add(
        det.RateOfRise(
            point,
            kind,
            _int(r, "rate_per_min", pr, HEAT_ROR_RATE_DEFAULT, 1, 1000),
            _int(r, "window_ms", pr, HEAT_ROR_WINDOW_MS, 8000, 600000),
            _int(r, "t_min", pr, typ, -400, smax),
            latching,
        )
    )


def _residual(point, cfg, path, warnings):
    p = path + ".residual_current"
    s = _section(
        cfg,
        "residual_current",
        path,
        (
            "level_mA",
            "clear_mA",
            "pre_mA",
            "delay_ms",
            "pre_delay_ms",
            "margin",
            "leak_period_ms",
            "kind",
            "latching",
        ),
    )
    if s is None:
        return
    level = _int(s, "level_mA", p, RC_LEVEL_DEFAULT_MA, RC_LEVEL_MIN_MA, RC_LEVEL_MAX_MA)
    if not (RC_RECOMMENDED_MA[0] <= level <= RC_RECOMMENDED_MA[1]):
        warnings.append(
            p + ".level_mA: " + str(level) + " mA outside the recommended 300-500 mA"
            " (GB 50116-2013 §9.2.3)"
        )
    clear = _int(s, "clear_mA", p, level * 90 // 100, 0, level)
    pre = s.get("pre_mA", level * RC_PRE_PCT // 100)
    pre_clear = None
    if pre is not False:
        pre = _int(s, "pre_mA", p, pre, 1, level - 1)
        pre_clear = pre * 90 // 100
    else:
        pre = None
    point.add(
        det.ResidualCurrent(
            point,
            _kind(s, p, codes.FIRE_ALARM),
            level,
            clear,
            _int(s, "delay_ms", p, RC_DELAY_DEFAULT_MS, 0, RC_DELAY_MAX_MS),
            _bool(s, "latching", p, True),
            pre,
            pre_clear,
            _int(s, "pre_delay_ms", p, 0, 0, RC_DELAY_MAX_MS),
            _int(s, "margin", p, RC_MARGIN, 1, 10),
            _int(s, "leak_period_ms", p, RC_LEAK_PERIOD_MS, 60000, 7 * RC_LEAK_PERIOD_MS),
        )
    )


def _cable(point, cfg, path, warnings):
    p = path + ".cable_temperature"
    s = _section(
        cfg, "cable_temperature", path, ("level", "clear", "pre", "delay_ms", "kind", "latching")
    )
    if s is None:
        return
    level = _int(s, "level", p, CT_LEVEL_DEFAULT, 0, 2000)
    pre = _int(s, "pre", p, None, -400, level - 1) if s.get("pre") is not None else None
    if not (CT_RECOMMENDED[0] <= level <= CT_RECOMMENDED[1]):
        warnings.append(p + ".level: " + str(level) + " (0.1 Cel) outside 55-140 Cel (GB 14287.3)")
    point.add(
        det.Threshold(
            point,
            _kind(s, p, codes.FIRE_ALARM),
            5,
            level,
            _int(s, "clear", p, level - 50, -400, level),
            _int(s, "delay_ms", p, 0, 0, CT_DELAY_MAX_MS),
            _bool(s, "latching", p, True),
            pre,
            None if pre is None else pre - 20,
        )
    )


def _current(point, cfg, path, lo, hi):
    if lo < 0:
        raise ConfigError(path + ".range", "current is a magnitude: low must be >= 0")
    p = path + ".overcurrent"
    s = _section(
        cfg,
        "overcurrent",
        path,
        ("inverse", "definite", "instantaneous", "kind", "latching", "dropout_pct"),
    )
    if s is not None:
        drop = _int(s, "dropout_pct", p, OC_DROPOUT_PCT, 50, 100)
        inv = None
        si = _section(s, "inverse", p, ("curve", "pickup", "tms", "reset", "reset_ms"))
        if si is not None:
            pi = p + ".inverse"
            curve = si.get("curve", "iec_si")
            pickup = _int(si, "pickup", pi, None, 1, idmt.I_MAX // idmt.M_MAX)
            try:
                inv = idmt.InverseTime(
                    curve,
                    pickup,
                    _num(si, "tms", pi, None, 0.01, 100),
                    pickup * drop // 100,
                    si.get("reset", "instantaneous"),
                    _int(si, "reset_ms", pi, 0, 0, 600000),
                )
            except ValueError as e:
                if isinstance(e, ConfigError):
                    raise
                raise _field_error(pi, e) from None
        dpk, ddl, ipk = 0, 0, 0
        sd = _section(s, "definite", p, ("pickup", "delay_ms"))
        if sd is not None:
            dpk = _int(sd, "pickup", p + ".definite", None, 1, hi)
            ddl = _int(sd, "delay_ms", p + ".definite", None, 0, 600000)
        sn = _section(s, "instantaneous", p, ("pickup",))
        if sn is not None:
            ipk = _int(sn, "pickup", p + ".instantaneous", None, 1, hi)
        if inv is None and not dpk and not ipk:
            raise ConfigError(p, "needs inverse, definite or instantaneous")
        point.add(
            det.Overcurrent(
                point,
                _kind(s, p, codes.SUPERVISORY),
                _bool(s, "latching", p, True),
                inv,
                dpk,
                ddl,
                ipk,
                drop,
            )
        )
    p = path + ".thermal"
    s = _section(
        cfg,
        "thermal",
        path,
        (
            "k_ib",
            "tau_heat_ms",
            "tau_cool_ms",
            "alarm_pct",
            "clear_pct",
            "theta",
            "kind",
            "latching",
        ),
    )
    if s is not None:
        try:
            model = idmt.Thermal(
                _int(s, "k_ib", p, None, 1),
                _int(s, "tau_heat_ms", p, None, 1000, 0x10000000),
                _int(s, "tau_cool_ms", p, s.get("tau_heat_ms"), 1000, 0x10000000),
                _int(s, "theta", p, 0, 0),
            )
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise _field_error(p, e) from None
        alarm = _int(s, "alarm_pct", p, 100, 1, 400)
        point.add(
            det.ThermalOverload(
                point,
                _kind(s, p, codes.SUPERVISORY),
                _bool(s, "latching", p, False),
                model,
                alarm,
                _int(s, "clear_pct", p, alarm * 95 // 100, 0, alarm),
                point.gap,
            )
        )


_PANEL_KINDS = (
    ("fire", codes.FIRE_ALARM),
    ("fault", codes.FAULT),
    ("supervisory", codes.SUPERVISORY),
    ("shield", codes.SHIELD),
    ("manual_alarm", codes.MANUAL_ALARM),
)


def _panel(point, cfg, path):
    p = path + ".panel"
    s = _section(cfg, "panel", path, [n for n, _ in _PANEL_KINDS])
    if s is None:
        return
    masks = []
    for name, kind in _PANEL_KINDS:
        if name in s:
            masks.append((_int(s, name, p, None, 1, 0xFFFF), kind))
    if not masks:
        raise ConfigError(
            p, "needs at least one of fire, fault, supervisory, shield, manual_alarm (bit masks)"
        )
    point.add(det.PanelStatus(point, masks))


# --- Device profiles (protocol/profiles/*.toml) -> build_detectors -----------------------------
# A profile point names its detector (``detector = "residual_current"``) and carries a
# ``detectors`` table whose sections use the profile's field names; these map them to ours.
_PROFILE_FIELDS = {
    "residual_current": {"alarm_mA": "level_mA", "pre_alarm_mA": "pre_mA", "hold_ms": "delay_ms"},
    "cable_temperature": {"alarm_dC": "level", "pre_alarm_dC": "pre", "hold_ms": "delay_ms"},
    "heat": {"alarm_dC": "fixed", "hold_ms": "delay_ms"},
    "smoke": {
        "alarm_cpm": "alarm",
        "pre_alarm_cpm": "pre_alarm",
        "alarm_mdBm": "alarm",
        "pre_alarm_mdBm": "pre_alarm",
    },
}
_PROFILE_INPUT = {"overcurrent": "current"}
# register type -> plausible raw range (the edge has already removed break/open/short values)
_TYPE_RANGE = {"u16": (0, 65535), "i16": (-32768, 32767)}
_WIDE = 16777215  # the 30-bit ring bound at window 64 without variance


def _profile_section(det_name, sec, path):
    if not isinstance(sec, dict):
        raise ConfigError(path, "expected a table")
    if det_name == "overcurrent":
        out = {}
        inv = {}
        for k in sec:
            v = sec[k]
            if k in ("pickup_cA", "pickup"):
                inv["pickup"] = v
            elif k == "curve":
                inv["curve"] = v
            elif k == "tms_milli":
                inv["tms"] = v / 1000
            elif k in ("tms", "reset", "reset_ms"):
                inv[k] = v
            else:
                out[k] = v
        if inv:
            out["inverse"] = inv
        return out
    names = _PROFILE_FIELDS.get(det_name, {})
    return {names.get(k, k): sec[k] for k in sec}


def build_point(src, point, section):
    """Build detectors for a device-profile point (the edge gateway's entry).

    ``point`` is a validated profile point (``emberlink.protocol.profile``): its ``detector``
    names the function, ``unit``/``exp``/``part``/``type`` describe the samples. ``section`` is
    its ``detectors`` table, in profile field names (alarm_mA, pre_alarm_mA, hold_ms,
    alarm_dC, alarm_cpm, pickup_cA, tms_milli, curve ...) or ours. The edge reports sensor
    break/open/short itself, so those are not configured again here. Returns a ``ProfilePoint``
    whose ``feed(val, t_ms)`` returns ``[(Event, t_ms), ...]``. Raises ConfigError.
    """
    det_name = point.get("detector")
    path = "points." + str(point.get("name", src)) + ".detectors"
    if det_name is None:
        raise ConfigError(path, "the point names no detector")
    inp = _PROFILE_INPUT.get(det_name, det_name)
    if inp not in INPUTS:
        raise ConfigError(path, "unknown detector " + repr(det_name))
    lo, hi = _TYPE_RANGE.get(point.get("type"), (-_WIDE, _WIDE))
    if inp == "current":
        lo = 0
    cfg = {"input": inp, "range": [lo, hi]}
    if point.get("unit") is not None:
        cfg["unit"] = point["unit"]
    if point.get("exp") is not None:
        cfg["exp"] = point["exp"]
    if point.get("part") is not None:
        cfg["part"] = point["part"]
    sec = section or {}
    for k in sec:
        if k == det_name:
            cfg[INPUTS[inp][3] or "overcurrent"] = _profile_section(
                det_name, sec[k], path + "." + k
            )
        else:
            cfg[k] = sec[k]
    warnings = []  # type: list
    return ProfilePoint(build_detectors(cfg, src, warnings, path), warnings)


class ProfilePoint:
    """A ``Point`` with the edge's calling convention: ``feed(val, t_ms) -> [(Event, t_ms)]``."""

    def __init__(self, point, warnings):
        self.point = point
        self.warnings = warnings
        self._out = []  # type: list

    def _drain(self):
        if not self._out:
            return []
        got = [(ev, t) for t, ev in self._out]
        self._out.clear()
        return got

    def feed(self, val, t_ms):
        if not isinstance(val, int):
            try:
                val = round(val)
            except (ValueError, OverflowError, TypeError):  # NaN, inf, not a number
                self.point.invalid(t_ms, self._out)
                return self._drain()
        self.point.feed(t_ms, val, self._out)
        return self._drain()

    def ack(self, t_ms, actor=None):
        self.point.ack(t_ms, self._out, actor)
        return self._drain()

    def reset(self, t_ms, actor=None):
        self.point.reset(t_ms, self._out, actor)
        return self._drain()
