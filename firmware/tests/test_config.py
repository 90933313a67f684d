"""The configuration builder: clear errors naming the field, warnings, profile sections."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from emberlink.firmware import detectors as det
from emberlink.firmware.config import ConfigError, build_detectors, build_point
from emberlink.protocol import codes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ("x", "detectors: expected a table"),
        ({}, "detectors.input: expected one of smoke, heat"),
        ({"input": "residual_current"}, "detectors.residual_current: required for input"),
        (
            {"input": "residual_current", "residual_current": {"level_mA": 1500}},
            "detectors.residual_current.level_mA: 1500 outside 20..1000",
        ),
        (
            {"input": "residual_current", "residual_current": {"level_mA": 10}},
            "detectors.residual_current.level_mA: 10 outside 20..1000",
        ),
        (
            {"input": "residual_current", "residual_current": {"delay_ms": 10001}},
            "detectors.residual_current.delay_ms: 10001 outside 0..10000",
        ),
        (
            {"input": "residual_current", "residual_current": {"level": 300}},
            "detectors.residual_current.level: unknown field",
        ),
        (
            {"input": "smoke", "smoke": {"alarm": 150, "verification": {"retard_ms": 61000}}},
            "detectors.smoke.verification.retard_ms: 61000 outside 0..60000",
        ),
        (
            {"input": "smoke", "smoke": {"alarm": 150, "verification": {"window_ms": 59000}}},
            "detectors.smoke.verification.window_ms: 59000 outside 60000..600000",
        ),
        (
            {"input": "heat", "heat": {"class": "A1", "verification": True}},
            "detectors.heat.verification: unknown field",
        ),
        (
            {"input": "panel_status", "verification": True, "panel": {"fire": 1}},
            "detectors.verification: belongs in the smoke section",
        ),
        ({"input": "heat", "heat": {"class": "Z"}}, "detectors.heat.class: unknown EN 54-5 class"),
        (
            {"input": "heat", "heat": {"class": "A1", "fixed": 700}},
            "detectors.heat.fixed: 700 outside 540..650",
        ),
        (
            {"input": "heat", "heat": {"class": "A1S", "rate_of_rise": True}},
            "detectors.heat.rate_of_rise: class A1S (suffix S)",
        ),
        (
            {
                "input": "current",
                "overcurrent": {"inverse": {"pickup": 100, "tms": 0.1, "curve": "x"}},
            },
            "detectors.overcurrent.inverse.curve: unknown 'x'",
        ),
        (
            {
                "input": "current",
                "overcurrent": {"inverse": {"pickup": 100, "tms": 0.1, "reset": "ieee"}},
            },
            "detectors.overcurrent.inverse.reset: 'ieee' disk emulation needs an IEEE curve",
        ),
        ({"input": "current"}, "detectors.overcurrent: current needs overcurrent or thermal"),
        (
            {"input": "residual_current", "range": [10, 5], "residual_current": {}},
            "detectors.range: expected [low, high]",
        ),
        (
            {
                "input": "residual_current",
                "fault_values": {"x": "break_line"},
                "residual_current": {},
            },
            "detectors.fault_values.x: key must be an integer",
        ),
        (
            {
                "input": "residual_current",
                "fault_values": {"65535": "residual_current"},
                "residual_current": {},
            },
            "detectors.fault_values.65535: must name a supervision condition",
        ),
        (
            {
                "input": "residual_current",
                "window": 64,
                "range": [0, 2**25],
                "residual_current": {},
            },
            "detectors.range: limit: |sample| 33554432 with window 64 overflows",
        ),
        ({"input": "panel_status", "panel": {}}, "detectors.panel: needs at least one of fire"),
        (
            {"input": "residual_current", "residual_current": {"latching": "yes"}},
            "detectors.residual_current.latching: expected true or false",
        ),
        (
            {"input": "residual_current", "residual_current": {"kind": "birth"}},
            "detectors.residual_current.kind: must be fire_alarm",
        ),
    ],
)
def test_errors_name_the_field(cfg: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_detectors(cfg)
    assert str(e.value).startswith(message), str(e.value)


def test_defaults_carry_the_standards_numbers() -> None:
    warnings: list[str] = []
    p = build_detectors({"input": "residual_current", "residual_current": {}}, 9, warnings)
    (rc,) = p.detectors
    assert isinstance(rc, det.ResidualCurrent)
    assert (rc.level, rc.pre_level, rc.delay) == (300, 240, 1000)  # 300 mA, 80 %, 1 s
    assert rc.alarm.kind == codes.FIRE_ALARM and rc.alarm.latching and not rc.pre.latching
    assert warnings == []
    p = build_detectors({"input": "cable_temperature", "cable_temperature": {}})
    assert p.detectors[0].level == 800  # 80.0 Cel
    p = build_detectors({"input": "heat", "heat": {"class": "B"}})
    assert p.detectors[0].level == 690 and len(p.detectors) == 1  # EN 54-5 class B


def test_setpoints_outside_the_recommended_band_warn() -> None:
    warnings: list[str] = []
    build_detectors(
        {"input": "residual_current", "residual_current": {"level_mA": 100}}, 0, warnings
    )
    build_detectors(
        {"input": "cable_temperature", "cable_temperature": {"level": 1500}}, 0, warnings
    )
    assert len(warnings) == 2
    assert "recommended 300-500 mA" in warnings[0] and "55-140" in warnings[1]


def test_open_and_short_limits_are_their_own_faults() -> None:
    p = build_detectors(
        {
            "input": "cable_temperature",
            "open_below": -300,
            "short_above": 1800,
            "stuck": False,
            "cable_temperature": {},
        }
    )
    out: list = []
    p.feed(0, -350, out)
    p.feed(1, 1900, out)
    p.feed(2, 250, out)
    got = [(t, e.code, e.state) for t, e in out]
    assert got == [(0, 51, 1), (1, 51, 0), (1, 52, 1), (2, 52, 0)]


def _profile_points() -> list[dict]:
    pts = []
    for f in sorted((ROOT / "protocol" / "profiles").glob("*.toml")):
        for p in tomllib.loads(f.read_text())["points"]:
            if p.get("detector"):
                pts.append(p)
    return pts


def test_every_profile_detector_section_builds() -> None:
    pts = _profile_points()
    assert pts
    for p in pts:
        pp = build_point(1, p, p.get("detectors"))
        assert pp.point.detectors, p["name"]


def test_profile_point_feeds_like_the_edge_expects() -> None:
    p = {
        "name": "rc",
        "detector": "residual_current",
        "unit": "A",
        "exp": -3,
        "type": "u16",
        "part": 17,
        "detectors": {"residual_current": {"alarm_mA": 300, "pre_alarm_mA": 240, "hold_ms": 1000}},
    }
    pp = build_point(0x01020001, p, p["detectors"])
    assert pp.feed(100, 0) == []
    pre = pp.feed(310.4, 1000)
    assert [(e.kind, t) for e, t in pre] == [(codes.PRE_ALARM, 1000)]
    alarm = pp.feed(310, 2000)
    assert [(e.kind, e.state, e.val, e.src, t) for e, t in alarm] == [
        (codes.FIRE_ALARM, codes.ACTIVE, 310, 0x01020001, 2000)
    ]
    ev, t = pp.reset(3000)[0]
    assert ev.kind == codes.RESET and t == 3000
    with pytest.raises(ConfigError, match=r"^points\.x\.detectors\.residual_current\.level_mA"):
        build_point(
            1,
            {"name": "x", "detector": "residual_current"},
            {"residual_current": {"alarm_mA": 5000}},
        )


def test_a_reading_that_is_not_a_number_is_a_fault_not_a_crash() -> None:
    p = {"name": "ia", "detector": "overcurrent", "unit": "A", "exp": -2, "type": "f32",
         "detectors": {"overcurrent": {"pickup_cA": 6300, "curve": "iec_standard_inverse",
                                       "tms_milli": 100}}}  # fmt: skip
    pp = build_point(5, p, p["detectors"])
    assert pp.feed(4000.0, 0) == []
    ((ev, t),) = pp.feed(float("nan"), 1000)
    assert (ev.kind, ev.code, ev.state, t) == (codes.FAULT, 50, codes.ACTIVE, 1000)
    assert pp.feed(float("inf"), 2000) == []
    ((ev, t),) = pp.feed(4100.4, 3000)
    assert (ev.kind, ev.code, ev.state) == (codes.FAULT, 50, codes.NORMAL)
