"""Hypothesis strategies for every message the v1 schema allows."""

from __future__ import annotations

from typing import Any

from emberlink.protocol import codes, messages
from emberlink.protocol.messages import FIELDS, KINDS, Batch, Event
from hypothesis import strategies as st

U32 = st.integers(0, 0xFFFFFFFF)
I64 = st.integers(messages.I64_MIN, messages.I64_MAX)
I32 = st.integers(messages.I32_MIN, messages.I32_MAX)
SMALL = st.integers(0, 300)

# text up to the 64-byte limit, short and non-ASCII as well as exactly at it
_T = st.one_of(
    st.text(max_size=20).filter(lambda s: len(s.encode()) <= messages.MAX_NOTE),
    st.text("abcXYZ0-9 ", min_size=60, max_size=messages.MAX_NOTE),
)

VALUES: dict[int, Any] = {
    3: st.one_of(st.sampled_from(sorted(codes.CONDITION_NAMES)), U32),
    4: st.integers(0, 3),
    5: st.one_of(st.integers(-1000, 100000), I64),
    6: st.integers(messages.EXP_MIN, messages.EXP_MAX),
    7: st.one_of(st.sampled_from(sorted(codes.UNIT_NAMES)), U32),
    8: st.one_of(st.sampled_from([100, 500, 1000, 2000]), U32),
    9: st.one_of(
        st.lists(st.integers(-5000, 5000), min_size=1, max_size=80),
        st.lists(I32, min_size=1, max_size=10),
    ),
    10: st.tuples(I64, I64, I64, U32).map(list),
    11: st.tuples(U32, U32).map(list),
    12: _T,
    13: U32,
    14: st.one_of(st.just(0), U32),
    15: st.dictionaries(st.integers(0, 23), I64, max_size=12),
    16: st.one_of(st.integers(0, 7), U32),  # the codec takes any u32 of flag bits
    17: st.tuples(U32, U32).map(list),
    18: st.one_of(st.sampled_from(sorted(codes.SYSTEM_NAMES)), U32),
    19: st.one_of(st.sampled_from(sorted(codes.PART_NAMES)), U32),
    20: st.fixed_dictionaries(
        {},
        optional={
            0: _T,
            1: st.one_of(st.sampled_from([1, 2]), U32),
            2: st.one_of(st.integers(0, 127), U32),
            3: st.one_of(SMALL, U32),
            4: _T,
            5: st.binary(max_size=32),
        },
    ),
}


@st.composite
def events(draw: st.DrawFn, kind: int | None = None) -> Event:
    if kind is None:
        kind = draw(st.sampled_from(sorted(KINDS)))
    required, optional = KINDS[kind]
    fields = {}
    for key in required:
        fields[FIELDS[key][0]] = draw(VALUES[key])
    for key in optional:
        if draw(st.booleans()):
            fields[FIELDS[key][0]] = draw(VALUES[key])
    dt = draw(st.one_of(SMALL, U32))
    src = draw(st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF)))
    return Event(kind, dt, src, **fields)


@st.composite
def batches(draw: st.DrawFn, max_events: int = 8) -> Batch:
    evs = draw(st.lists(events(), min_size=1, max_size=max_events))
    seq0 = draw(st.integers(1, 0xFFFFFFFF - len(evs) + 1))
    return Batch(
        draw(U32),
        draw(U32),
        seq0,
        draw(
            st.one_of(st.integers(1_700_000_000_000, 1_900_000_000_000), st.integers(0, 2**64 - 1))
        ),
        evs,
        draw(st.one_of(st.none(), U32)),
        draw(st.one_of(st.integers(0, 3), st.integers(0, 255))),
    )


def acks() -> st.SearchStrategy[messages.Ack]:
    return st.builds(messages.Ack, U32, U32, U32)


def commands() -> st.SearchStrategy[messages.Command]:
    args = st.one_of(
        st.none(),
        st.dictionaries(st.integers(0, 23), st.one_of(st.integers(-5, 5), I64), min_size=1),
    )
    ops = st.one_of(st.sampled_from(sorted(messages.OP_NAMES)), U32)
    return st.builds(messages.Command, U32, U32, ops, args)


def results() -> st.SearchStrategy[messages.Result]:
    codes_ = st.one_of(st.sampled_from(sorted(messages.RESULT_NAMES)), U32)
    return st.builds(messages.Result, U32, U32, codes_, st.one_of(st.none(), _T))
