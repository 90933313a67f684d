"""The fast paths (feed's quiet path, feed_block) give exactly the events of the full pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from emberlink.firmware import ring as ring_mod
from emberlink.firmware.config import build_detectors
from emberlink.tools import micropython
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIGS = [
    {
        "input": "current",
        "window": 8,
        "overcurrent": {
            "inverse": {"curve": "iec_vi", "pickup": 1000, "tms": 0.05},
            "definite": {"pickup": 1500, "delay_ms": 300},
            "instantaneous": {"pickup": 3000},
        },
    },
    {
        "input": "current",
        "window": 4,
        "stuck": {"tolerance": 2},
        "overcurrent": {
            "inverse": {"curve": "ieee_mi", "pickup": 800, "tms": 0.1, "reset": "ieee"},
            "latching": False,
        },
    },
    {
        "input": "cable_temperature",
        "window": 6,
        "cable_temperature": {"level": 800, "pre": 700, "delay_ms": 500, "latching": False},
    },
    {"input": "heat", "window": 0, "heat": {"class": "A2", "delay_ms": 200}},
]

steps = st.lists(
    st.tuples(
        st.integers(0, 400),  # ms since the previous step
        st.one_of(st.integers(0, 3500), st.sampled_from(["tick", "reset", "ack", "flat"])),
    ),
    min_size=1,
    max_size=250,
)


def _build(cfg: dict, board: bool) -> object:
    if not board:
        return build_detectors(cfg, 3)
    # MicroPython's layout (arrays, circular queues) and its bytecode feed, on CPython: what a
    # board runs for the points the viper paths do not serve (e.g. a negative range)
    saved = ring_mod._MICROPYTHON
    ring_mod._MICROPYTHON = True
    try:
        p = build_detectors(cfg, 3)
    finally:
        ring_mod._MICROPYTHON = saved
    assert p.buf is None or p.qi is not None
    p.feed = p.pyfeed  # type: ignore[method-assign]
    return p


def _run(cfg: dict, seq: list[tuple[int, object]], mode: str) -> list[tuple[int, dict]]:
    p: Any = _build(cfg, mode.startswith("board_"))
    if mode == "full":
        p.quiet_ok = False  # the full pass for every sample
    out: list = []
    t = 0
    ts: list[int] = []
    xs: list[int] = []
    last = 500

    def flush() -> None:
        if mode.endswith("block"):
            p.feed_block(ts, xs, out)
        else:
            for k in range(len(xs)):
                if mode == "full":
                    p._full(ts[k], xs[k], out)
                else:
                    p.feed(ts[k], xs[k], out)
        ts.clear()
        xs.clear()

    for dt, v in seq:
        t += dt
        if v == "flat":
            v = last
        if isinstance(v, int):
            ts.append(t)
            xs.append(v)
            last = v
            continue
        flush()
        if v == "tick":
            p.tick(t + 200000, out)
            t += 200000
        elif v == "reset":
            p.reset(t, out)
        else:
            p.ack(t, out)
    flush()
    r = p.ring
    ring = None
    if r is not None:  # the ring's state too: no detector reads the sums
        ring = (r.samples(), r.s, r.s2 if r.variance else 0, r.max(), r.n)
    return [(tt, e.fields()) for tt, e in out] + [(-1, ring)]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(len(CONFIGS))), steps)
def test_fast_paths_equal_the_full_pass(i: int, seq: list[tuple[int, object]]) -> None:
    full = _run(CONFIGS[i], seq, "full")
    assert _run(CONFIGS[i], seq, "feed") == full
    assert _run(CONFIGS[i], seq, "block") == full
    assert _run(CONFIGS[i], seq, "board_feed") == full
    assert _run(CONFIGS[i], seq, "board_block") == full


def test_cpython_runs_cpyfeed_over_deques() -> None:
    from collections import deque

    from emberlink.firmware import cpyfeed
    from emberlink.firmware.point import Point

    p = build_detectors(CONFIGS[0], 3)
    assert Point.feed is cpyfeed.feed
    assert isinstance(p.qv, deque) and p.qi is None and p.rq is None and p.dq is not None


def test_state_word_numbers_agree() -> None:
    """fastpath.py repeats ring.py's state-word numbers as local consts (viper needs them)."""
    from emberlink.firmware import fastpath, ring

    for name, k in fastpath.WORDS.items():
        assert getattr(ring, name) == k, name


@pytest.mark.micropython
def test_viper_fast_paths_equal_the_full_pass_on_micropython() -> None:
    """On micropython feed is the viper fastpath.feed and feed_block the viper fastpath.block:
    random sequences give the full pass's events through both, and the same events as CPython."""
    cfgs = [dict(c, range=[0, 4000]) for c in CONFIGS]
    cfgs.append(
        {
            "input": "current",
            "range": [0, 4095],
            "window": 64,
            "overcurrent": {
                "inverse": {"curve": "iec_si", "pickup": 2000, "tms": 0.1},
                "definite": {"pickup": 2600, "delay_ms": 200},
                "latching": False,
            },
        }
    )
    # not viper points (a window above 256, a negative range): the bytecode pyfeed over arrays
    cfgs.append(dict(CONFIGS[0], range=[0, 4000], window=300))
    cfgs.append(dict(CONFIGS[2], range=[-100, 4000]))
    proc = micropython.run(
        script=Path(__file__).with_name("mp_fastpaths.py"),
        args=["1", "12"],
        stdin=json.dumps(cfgs).encode(),
    )
    rows = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    assert len(rows) == 12 * len(cfgs)
    check = micropython.run(
        code="from emberlink.firmware import fastpath, point\n"
        "print(point.Point.feed is fastpath.feed, point.vblock is fastpath.block is not None)\n"
    )
    assert check.stdout.decode().split() == ["True", "True"]
    events = 0
    for r in rows:
        assert r["feed"] == r["full"], (r["config"], r["seed"])
        assert r["block"] == r["full"], (r["config"], r["seed"])
        seq = [(dt, v) for dt, v in r["seq"]]
        assert _run_cpython(cfgs[r["config"]], seq) == r["full"]
        events += len(r["full"]) - 1
    assert events > 0


def _run_cpython(cfg: dict, seq: list[tuple[int, object]]) -> list:
    p = build_detectors(cfg, 3)
    out: list = []
    t = 0
    for dt, v in seq:
        t += dt
        if isinstance(v, int):
            p.feed(t, v, out)
        elif v == "tick":
            t += 200000
            p.tick(t, out)
        elif v == "reset":
            p.reset(t, out)
        else:
            p.ack(t, out)
    r = p.ring
    ring = None
    if r is not None:
        ring = [r.samples(), r.s, r.s2 if r.variance else 0, r.max(), r.n]
    return [[tt, json.loads(json.dumps(e.fields()))] for tt, e in out] + [ring]


@pytest.mark.micropython
def test_viper_feed_takes_long_ints_as_the_full_pass_does() -> None:
    """viper's int() truncates a long int, so the viper feed sends |x| >= 2**30 to the full pass
    (on a 32-bit board 2**32 + 5 would read as 5; the 64-bit unix port only truncates beyond
    2**63, which the protocol refuses as an event value anyway: this pins the results)."""
    cfg = {
        "input": "current",
        "range": [0, 4095],
        "window": 8,
        "overcurrent": {"definite": {"pickup": 2600, "delay_ms": 200}},
    }
    steps = [(20 * k, 1000 + k) for k in range(20)]
    steps += [(500, 2**32 + 5), (520, 1000), (540, 2**40 + 7), (560, -(2**40)), (2**40 + 580, 1001)]
    prog = (
        "import json\n"
        "from emberlink.firmware.config import build_detectors\n"
        f"p = build_detectors({cfg!r}, 1)\n"
        "out = []\n"
        f"for t, x in {steps!r}:\n"
        "    p.feed(t, x, out)\n"
        "print(json.dumps([[t, e.fields()] for t, e in out]))\n"
    )
    # the program goes in on stdin: the unix port crashes on an argument of 256 bytes or more
    proc = micropython.run(code="import sys; exec(sys.stdin.read())", stdin=prog.encode())
    got = json.loads(proc.stdout.decode())
    p = build_detectors(cfg, 1)
    out: list = []
    for t, x in steps:
        p.feed(t, x, out)
    want = json.loads(json.dumps([[t, e.fields()] for t, e in out]))
    assert len(want) == 4 and want[0][1]["code"] == 50  # out_of_range, never a reading of 5
    assert got == want
