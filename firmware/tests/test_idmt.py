"""Inverse-time and thermal accuracy against the IEC 60255-151 / IEEE C37.112 / IEC 60255-149
formulas, with irregular (jittered) sample spacing: |t_trip - t_formula| <= max(5 %, 40 ms)
plus one sample period (standards.md §5.2, §7 row 22)."""

from __future__ import annotations

import math
import random

import pytest
from emberlink.firmware import idmt
from emberlink.firmware.idmt import CURVES, ONE, THETA_ONE, InverseTime, Thermal, operate_time_s

PICKUP = 1000  # 100.0 A in 0.1 A


def trip_time_ms(
    stage: InverseTime,
    x: int,
    period: float,
    jitter: float,
    seed: int,
    t0: int = 0,
    limit_ms: int = 10**7,
) -> tuple[int, int]:
    """Feed constant ``x`` from t0 at jittered spacing; return (trip time, largest spacing)."""
    rng = random.Random(seed)
    t, prev, widest = t0, None, 0
    while t - t0 <= limit_ms:
        dt = 0 if prev is None else t - prev
        widest = max(widest, dt)
        if stage.step(dt, x):
            return t - t0, widest
        prev = t
        t += max(1, round(period * (1 + jitter * (2 * rng.random() - 1))))
    raise AssertionError("no trip")


def within(t_ms: float, expect_s: float, period_ms: float) -> bool:
    tol = max(0.05 * expect_s * 1000, 40.0) + period_ms
    return abs(t_ms - expect_s * 1000) <= tol


# The worked values of standards.md §5.1 (TMS = TD = 1) pin the constants.
WORKED = {
    "iec_si": (10.03, 4.28, 2.97, 2.27),
    "iec_vi": (13.5, 3.375, 1.50, 0.711),
    "iec_ei": (26.67, 3.333, 0.808, 0.201),
    "iec_lti": (120, 30, 13.33, 6.32),
    "ieee_mi": (3.80, 1.69, 1.21, 0.948),
    "ieee_vi": (7.03, 1.31, 0.689, 0.540),
    "ieee_ei": (9.52, 1.30, 0.407, 0.192),
}


@pytest.mark.parametrize("curve", sorted(WORKED))
def test_formula_matches_the_worked_table(curve: str) -> None:
    for m, t in zip((2, 5, 10, 20), WORKED[curve], strict=True):
        assert operate_time_s(curve, m, 1.0) == pytest.approx(t, rel=0.006)


@pytest.mark.parametrize(
    ("curve", "tms", "m", "expect_s"),
    [
        ("iec_si", 0.1, 2, 1.003),
        ("iec_si", 0.1, 10, 0.297),
        ("iec_ei", 1.0, 2, 26.67),
        ("ieee_vi", 1.0, 2, 7.03),
    ],
)
@pytest.mark.parametrize("period", [20, 100])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_issue_check_values_with_jitter(
    curve: str, tms: float, m: int, expect_s: float, period: int, seed: int
) -> None:
    stage = InverseTime(curve, PICKUP, tms)
    t, widest = trip_time_ms(stage, m * PICKUP, period, 0.5, seed)
    assert within(t, expect_s, widest), (t, expect_s)


@pytest.mark.parametrize("curve", sorted(CURVES))
@pytest.mark.parametrize("tms", [0.1, 1.0])
@pytest.mark.parametrize("period", [20, 200, 1000])
def test_every_curve_2x_to_20x_with_jitter(curve: str, tms: float, period: int) -> None:
    for m in (2.0, 3.3, 5.0, 7.5, 10.0, 14.0, 20.0):
        stage = InverseTime(curve, PICKUP, tms)
        expect = operate_time_s(curve, m, tms)
        t, widest = trip_time_ms(stage, int(m * PICKUP), period, 0.5, int(m * 10) + period)
        assert within(t, expect, widest), (curve, tms, m, t, expect)


def test_research_oracles_at_20_ms() -> None:
    # constant 5 x Is, IEC SI TMS 0.1: analytic 0.428 s, the discrete accumulator trips at 0.44 s
    t, _ = trip_time_ms(InverseTime("iec_si", PICKUP, 0.1), 5 * PICKUP, 20, 0.0, 0)
    assert t == 440
    # 3 x Is for 0.5 s, then 6 x Is: trips at 0.58 s
    stage = InverseTime("iec_si", PICKUP, 0.1)
    t = 0
    while True:
        x = 3 * PICKUP if t < 500 else 6 * PICKUP
        if stage.step(20 if t else 0, x):
            break
        t += 20
    assert t == 580


def test_a_gap_before_the_first_high_sample_is_not_counted() -> None:
    stage = InverseTime("iec_si", PICKUP, 0.1)
    assert not stage.step(0, 500)
    assert not stage.step(60000, 3500)  # a minute of silence, then a high reading
    assert stage.acc == 0


def test_reset_instantaneous_definite_and_ieee() -> None:
    # instantaneous: one sample below dropout empties the accumulator
    s = InverseTime("iec_si", PICKUP, 0.1)
    s.step(0, 2000)
    s.step(500, 2000)
    assert s.acc > 0
    s.step(20, 900)
    assert s.acc == 0
    # between dropout (950) and pickup the accumulator holds
    s.step(0, 2000)
    s.step(300, 960)
    held = s.acc
    s.step(5000, 960)
    assert s.acc == held > 0
    # definite: falls linearly to 0 over reset_ms
    d = InverseTime("iec_si", PICKUP, 0.1, reset="definite", reset_ms=1000)
    d.step(0, 2000)
    d.step(600, 0)  # 0.6 s at 2x: acc ~ 0.598
    a0 = d.acc / ONE
    d.step(500, 0)  # half the reset time
    assert d.acc / ONE == pytest.approx(a0 - 0.5, abs=0.002)
    d.step(600, 0)
    assert d.acc == 0
    # ieee disk emulation: acc -= dt / tr(M), tr(0) = TD * 21.6 s for IEEE VI
    e = InverseTime("ieee_vi", PICKUP, 1.0, reset="ieee")
    e.step(0, 2000)
    e.step(3515, 0)  # half of the 7.03 s operate time
    assert e.acc / ONE == pytest.approx(0.5, abs=0.002)
    e.step(5400, 0)  # a quarter of tr(0)
    assert e.acc / ONE == pytest.approx(0.25, abs=0.003)
    t, _ = trip_time_ms(e, 2000, 20, 0.0, 0, t0=10**6)
    assert within(t, 0.75 * 7.03, 20)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curve": "iec_xx"}, "^curve: unknown 'iec_xx'"),
        ({"curve": "iec_si", "reset": "ieee"}, "^reset: 'ieee' disk emulation needs an IEEE curve"),
        ({"tms": 0.001}, "^tms: 0.001 outside"),
        ({"reset": "definite"}, "^reset_ms: 0 outside"),
        ({"pickup": 0}, "^pickup: 0 outside"),
    ],
)
def test_bad_stage_settings(kwargs: dict, message: str) -> None:
    args = {"curve": "iec_si", "pickup": PICKUP, "tms": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        InverseTime(**args)


def test_rate_tables_respect_the_30_bit_bounds() -> None:
    for curve in CURVES:
        for tms in (0.05, 0.1, 1.0, 10.0):
            try:
                tab = idmt.build_rate_table(curve, tms)
            except ValueError:
                continue  # refused at build time: fine
            assert all(0 <= r <= idmt.RATE_MAX for r in tab)
            assert all(abs(tab[j + 1] - tab[j]) * 255 < 2**30 for j in range(len(tab) - 1))


# --- Thermal overload, IEC 60255-149 ----------------------------------------------------------

TAU = 600_000  # 10 min


def thermal_trip_ms(model: Thermal, x: int, period: float, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    t, prev, widest = 0, None, 0
    while t < 20 * TAU:
        dt = 0 if prev is None else t - prev
        widest = max(widest, dt)
        model.step(dt, x)
        if model.theta >= THETA_ONE:
            return t, widest
        prev = t
        t += max(1, round(period * (1 + 0.5 * (2 * rng.random() - 1))))
    raise AssertionError("no trip")


@pytest.mark.parametrize("m", [1.2, 1.5, 2, 3, 6])
@pytest.mark.parametrize("pre", [0.0, 0.9])
def test_thermal_cold_and_hot_curves(m: float, pre: float) -> None:
    kib = 1000
    model = Thermal(kib, TAU, theta=int(pre * pre * THETA_ONE))
    expect_s = TAU / 1000 * math.log((m * m - pre * pre) / (m * m - 1))
    t, widest = thermal_trip_ms(model, int(m * kib), 1000, int(m * 10))
    assert within(t, expect_s, widest), (m, pre, t, expect_s)


def test_thermal_golden_value_and_memory_across_restart() -> None:
    # cold, I = 2 k IB: t = 0.2877 tau
    assert math.log(4 / 3) == pytest.approx(0.2877, abs=1e-4)
    model = Thermal(1000, TAU)
    model.step(0, 2000)
    model.step(TAU // 10, 2000)
    saved = model.theta
    # a restart keeps the thermal image: rebuild from the saved state and cool for the outage
    again = Thermal(1000, TAU, theta=saved)
    again.cool(TAU)
    assert again.theta == pytest.approx(saved * math.exp(-1), rel=0.01)
    with pytest.raises(ValueError, match=r"^theta: "):
        Thermal(1000, TAU, theta=-1)


def test_point_thermal_memory_survives_a_restart() -> None:
    from emberlink.firmware.config import build_detectors

    cfg = {"input": "current", "stuck": False,
           "thermal": {"k_ib": 1000, "tau_heat_ms": 60000}}  # fmt: skip
    p = build_detectors(cfg)
    out: list = []
    for k in range(15):
        p.feed(k * 1000, 2000, out)  # 14 s at 2x: theta ~ 0.81, no trip yet
    saved = p.thermal_state()
    assert saved is not None and 0.7 * THETA_ONE < saved < THETA_ONE and out == []
    again = build_detectors(cfg)
    again.restore_thermal(saved, 1000)  # off for 1 s
    assert again.thermal_state() == pytest.approx(saved * math.exp(-1 / 60), rel=0.01)
    # the restarted image trips much sooner than a cold one would (17.3 s at 2x)
    for k in range(20):
        again.feed(10**6 + k * 1000, 2000, out)
        if out:
            break
    assert out and out[0][0] - 10**6 <= 6000
    assert build_detectors({"input": "current", "overcurrent": {
        "instantaneous": {"pickup": 100}}}).thermal_state() is None  # fmt: skip
