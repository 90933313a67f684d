"""A reading outside anything an event can carry never makes the core raise (issue 3 bug).

A decoder error can hand the core any int (2**70, -2**70, a 64-bit register read as unsigned):
it must become a FAULT out_of_range (condition 50; open/short where configured), the value
kept when it fits the protocol's int64 and omitted otherwise, on both interpreters.
"""

from __future__ import annotations

import json

import pytest
from emberlink.firmware.config import build_detectors
from emberlink.protocol.messages import I64_MAX, I64_MIN
from emberlink.tools import micropython
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIGS = [
    {"input": "residual_current", "residual_current": {"level_mA": 300}},
    {
        "input": "current",
        "window": 8,
        "overcurrent": {
            "inverse": {"curve": "iec_si", "pickup": 1000, "tms": 0.1},
            "definite": {"pickup": 1500, "delay_ms": 200},
        },
    },
    {
        "input": "cable_temperature",
        "open_below": -300,
        "short_above": 2000,
        "cable_temperature": {"level": 800},
    },
    {"input": "panel_status", "panel": {"fire": 1, "fault": 2}},
    {"input": "smoke", "smoke": {"alarm": 150}, "window": 0},
]

huge = st.one_of(
    st.integers(min_value=2**31),
    st.integers(max_value=-(2**31)),
    st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 2**70, -(2**70)]),
)


def _feed(cfg: dict, xs: list[int], block: bool) -> list[tuple[int, dict]]:
    p = build_detectors(cfg, 7)
    out: list = []
    if block:
        p.feed_block(list(range(0, 1000 * len(xs), 1000)), xs, out)
    else:
        for k, x in enumerate(xs):
            p.feed(1000 * k, x, out)
    return [(t, e.fields()) for t, e in out]


@settings(max_examples=150, deadline=None)
@given(
    cfg=st.sampled_from(CONFIGS),
    xs=st.lists(st.one_of(huge, st.integers(-500, 3000)), min_size=1, max_size=40),
)
def test_any_int_is_a_fault_or_a_reading_never_an_exception(cfg: dict, xs: list[int]) -> None:
    got = _feed(cfg, xs, False)
    assert _feed(cfg, xs, True) == got
    for t, f in got:
        v = f.get("val")
        assert v is None or I64_MIN <= v <= I64_MAX
        x = xs[t // 1000]
        if f["kind"] == 3 and f["code"] in (50, 51, 52) and f["state"] == 1:
            # the reading that raised it: its value when the protocol can carry it
            assert v == (x if I64_MIN <= x <= I64_MAX else None)


@given(x=huge, cfg=st.sampled_from(CONFIGS))
@settings(max_examples=100, deadline=None)
def test_a_huge_sample_raises_a_range_fault(x: int, cfg: dict) -> None:
    got = _feed(cfg, [5, x], False)
    raised = [f for t, f in got if t == 1000 and f["kind"] == 3 and f["state"] == 1]
    assert [f["code"] for f in raised] in ([50], [51], [52])


_MP = """
import json, sys
from emberlink.firmware.config import build_detectors
job = json.loads(sys.stdin.read())
res = []
for cfg in job["configs"]:
    for block in (False, True):
        p = build_detectors(cfg, 7)
        out = []
        xs = job["xs"]
        try:
            if block:
                p.feed_block(list(range(0, 1000 * len(xs), 1000)), xs, out)
            else:
                for k in range(len(xs)):
                    p.feed(1000 * k, xs[k], out)
            res.append([[t, e.fields()] for t, e in out])
        except Exception as e:
            res.append(repr(e))
print(json.dumps(res))
"""


@pytest.mark.micropython
def test_micropython_gives_cpythons_events_for_huge_values() -> None:
    xs = [5, 2**70, 6, -(2**70), 2**63, 2**63 - 1, -(2**63) - 1, 2**31 + 5, 2**30, 2**30 - 1]
    xs += [2**64 + 100, 1500, 2**100, 1500, 1600, -(2**40), 7, 2**32 + 5, 8]
    job = {"configs": CONFIGS, "xs": xs}
    proc = micropython.run(code=_MP, stdin=json.dumps(job).encode())
    got = json.loads(proc.stdout.decode())
    want = []
    for cfg in CONFIGS:
        for block in (False, True):
            want.append([[t, f] for t, f in _feed(cfg, xs, block)])
    assert got == want
