"""The condition life-cycle: the full state after each step; refused inputs change nothing."""

from __future__ import annotations

import pytest
from emberlink.firmware.lifecycle import ACK, CLEAR, RAISE, RESET, TRANSITIONS, Condition
from emberlink.protocol import codes

N, A, K = codes.NORMAL, codes.ACTIVE, codes.ACKNOWLEDGED


class _Point:
    src = 7
    part = None
    test = False


def _cond(latching: bool) -> Condition:
    return Condition(_Point(), codes.FIRE_ALARM, 4, latching, 1, -3)


# (input, expected state, expected number of events) after each step
LATCHING = [
    (RAISE, A, 1),
    (RAISE, A, 0),
    (CLEAR, A, 0),
    (ACK, K, 1),
    (ACK, K, 0),
    (CLEAR, K, 0),
    (RESET, N, 1),
    (RESET, N, 0),
    (CLEAR, N, 0),
    (ACK, N, 0),
    (RAISE, A, 1),
    (RESET, N, 1),
]
NON_LATCHING = [
    (RAISE, A, 1),
    (CLEAR, N, 1),
    (CLEAR, N, 0),
    (ACK, N, 0),
    (RAISE, A, 1),
    (ACK, K, 1),
    (RAISE, K, 0),
    (CLEAR, N, 1),
    (RESET, N, 0),
]


@pytest.mark.parametrize(("latching", "steps"), [(True, LATCHING), (False, NON_LATCHING)])
def test_state_after_each_step(latching: bool, steps: list[tuple[int, int, int]]) -> None:
    c = _cond(latching)
    for i, (inp, state, n) in enumerate(steps):
        out: list = []
        before = c.state
        changed = c.apply(inp, i, 123, out)
        assert c.state == state, (i, inp)
        assert len(out) == n and changed == bool(n)
        if n:
            t, ev = out[0]
            assert t == i and ev.kind == codes.FIRE_ALARM and ev.state == state and ev.src == 7
            assert ev.code == 4 and ev.dt == 0
            assert bool(ev.eflags and ev.eflags & codes.EF_LATCHED) == latching
        else:
            assert c.state == before


def test_refused_pairs_are_exactly_the_ones_missing_from_the_table() -> None:
    for state in (N, A, K):
        for inp in (RAISE, CLEAR, ACK, RESET):
            c = _cond(False)
            c.state = state
            out: list = []
            c.apply(inp, 0, None, out)
            if (state, inp) not in TRANSITIONS or TRANSITIONS[(state, inp)][0] == state:
                assert out == [] and c.state == state
            else:
                assert c.state == TRANSITIONS[(state, inp)][0] and len(out) == 1


def test_events_in_test_mode_are_marked_not_dropped() -> None:
    c = _cond(True)
    c.point.test = True
    out: list = []
    c.apply(RAISE, 5, 310, out, verify=[20000, 60000])
    ((_t, ev),) = out
    assert ev.eflags == codes.EF_TEST | codes.EF_LATCHED | codes.EF_VERIFIED
    assert ev.verify == [20000, 60000] and ev.val == 310 and ev.exp == -3 and ev.unit == 1
