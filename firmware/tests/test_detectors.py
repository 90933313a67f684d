"""Detector timing limits from the standards, as properties; 30-bit state bounds."""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator

import pytest
from emberlink.firmware.config import build_detectors
from emberlink.protocol import codes
from hypothesis import given, settings
from hypothesis import strategies as st

SMALL = 2**30


def _times(rng: random.Random, period: int, start: int, n: int) -> Iterator[int]:
    t = start
    for _ in range(n):
        yield t
        t += max(1, round(period * (0.5 + rng.random())))  # jitter: 0.5..1.5 x period


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10000), st.integers(200, 6666), st.integers(0, 10**6), st.integers(0, 99))
def test_residual_current_alarms_within_30_s_of_onset(
    delay: int, period: int, onset: int, seed: int
) -> None:
    """GB 50166-2019 §4.8.4: <= 30 s for every allowed delay (<= 10 s) with polls <= 10 s apart.

    Worst case: up to one poll gap to the first high sample, the delay, then one more gap.
    """
    p = build_detectors(
        {
            "input": "residual_current",
            "stuck": False,
            "residual_current": {"level_mA": 300, "delay_ms": delay},
        }
    )
    out: list = []
    rng = random.Random(seed)
    for t in _times(rng, period, 0, 10**6):
        p.feed(t, 100 if t < onset else 320, out)
        if any(e.kind == codes.FIRE_ALARM for _, e in out):
            break
    (t_alarm,) = [t for t, e in out if e.kind == codes.FIRE_ALARM]
    assert onset <= t_alarm <= onset + 30000


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20000), st.integers(200, 6666), st.integers(0, 10**6), st.integers(0, 99))
def test_cable_temperature_alarms_within_40_s(
    delay: int, period: int, onset: int, seed: int
) -> None:
    """GB 50166-2019 §4.8.5: <= 40 s after reaching the setpoint (delay <= 20 s, polls <= 10 s)."""
    p = build_detectors(
        {"input": "cable_temperature", "stuck": False, "cable_temperature": {"delay_ms": delay}}
    )
    out: list = []
    for t in _times(random.Random(seed), period, 0, 10**6):
        p.feed(t, 700 if t < onset else 800, out)
        if out:
            break
    (t_alarm,) = [t for t, e in out]
    assert onset <= t_alarm <= onset + 40000


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 60000), st.integers(60000, 120000), st.integers(500, 5000), st.integers(0, 99)
)
def test_verified_smoke_alarm_is_bounded(retard: int, window: int, period: int, seed: int) -> None:
    """Persistent smoke: alarm no later than retard + one sample after the first crossing."""
    p = build_detectors(
        {
            "input": "smoke",
            "stuck": False,
            "smoke": {
                "alarm": 150,
                "hold_samples": 1,
                "verification": {"retard_ms": retard, "window_ms": window},
            },
        }
    )
    out: list = []
    onset = None
    for t in _times(random.Random(seed), period, 0, 10**5):
        x = 10 if t < 30000 else 200
        if x == 200 and onset is None:
            onset = t
        p.feed(t, x, out)
        if any(e.kind == codes.FIRE_ALARM for _, e in out):
            break
    assert onset is not None
    ((t_alarm, ev),) = [(t, e) for t, e in out if e.kind == codes.FIRE_ALARM]
    assert onset + retard <= t_alarm <= onset + retard + int(1.5 * period) + 1
    assert ev.eflags & codes.EF_VERIFIED and ev.verify == [t_alarm - onset, window]


def test_panel_alarm_has_no_added_delay() -> None:
    p = build_detectors({"input": "panel_status", "panel": {"fire": 1, "manual_alarm": 2}})
    out: list = []
    p.feed(1000, 0, out)
    p.feed(1234, 3, out)
    assert [(t, e.kind, e.state) for t, e in out] == [
        (1234, codes.FIRE_ALARM, codes.ACTIVE),
        (1234, codes.MANUAL_ALARM, codes.ACTIVE),
    ]


def test_a_fault_value_never_reaches_the_detectors() -> None:
    """A break-line code of 0 is a fault, not a zero reading: the leakage peak is untouched."""
    p = build_detectors(
        {
            "input": "residual_current",
            "stuck": False,
            "fault_values": {"0": "break_line"},
            "residual_current": {},
        }
    )
    out: list = []
    p.feed(0, 120, out)
    p.feed(1000, 0, out)
    rc = p.detectors[0]
    assert rc.cur == 120 and p.ring.last() == 120
    assert [(e.kind, e.code) for _, e in out] == [(codes.FAULT, 53)]


# --- Every stored integer stays a small int on a 32-bit board -----------------------------------

CONFIGS = {
    "smoke": (
        {
            "input": "smoke",
            "smoke": {
                "alarm": 150,
                "baseline": 100,
                "verification": True,
                "drift": {"baseline_min": 0, "baseline_max": 400, "tau_ms": 3600000},
            },
        },
        (-500, 4000),
    ),
    "heat": ({"input": "heat", "heat": {"class": "A1R"}}, (-400, 2000)),
    "rc": ({"input": "residual_current", "residual_current": {}}, (0, 30000)),
    "current": (
        {
            "input": "current",
            "overcurrent": {
                "inverse": {"curve": "ieee_ei", "pickup": 500, "tms": 0.5, "reset": "ieee"},
                "definite": {"pickup": 5000, "delay_ms": 100},
                "instantaneous": {"pickup": 9000},
            },
            "thermal": {"k_ib": 800, "tau_heat_ms": 60000, "tau_cool_ms": 180000},
        },
        (0, 200000),
    ),
}


def _ints(obj: object, seen: set[int]) -> list[int]:
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int):
        return [obj]
    if isinstance(obj, array):
        return list(obj)
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _ints(o, seen)]
    if isinstance(obj, dict):
        return [v for o in obj.values() for v in _ints(o, seen)]
    if hasattr(obj, "__dict__"):
        return [v for o in vars(obj).values() for v in _ints(o, seen)]
    return []


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(CONFIGS)), st.data())
def test_state_stays_inside_30_bits(name: str, data: st.DataObject) -> None:
    cfg, (lo, hi) = CONFIGS[name]
    p = build_detectors(cfg)
    out: list = []
    t = 0
    steps = data.draw(
        st.lists(st.tuples(st.integers(0, 120000), st.integers(lo, hi)), min_size=1, max_size=150)
    )
    for dt, x in steps:
        t = (t + dt) & (SMALL - 1)  # a board's ticks_ms() wraps at 2**30
        p.feed(t, x, out)
        for v in _ints(p, set()):
            assert -SMALL <= v < SMALL, (name, v)


def test_a_point_takes_one_overcurrent() -> None:
    """The definite stage's timer lives in the point's state array: one Overcurrent a point."""
    from emberlink.firmware.detectors import Overcurrent

    p = build_detectors(
        {"input": "current", "overcurrent": {"definite": {"pickup": 100, "delay_ms": 100}}},
        1,
    )
    with pytest.raises(ValueError, match="one Overcurrent"):
        Overcurrent(p, 4, False, None, 200, 100, 0, 95)
