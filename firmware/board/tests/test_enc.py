"""The board's batch bytes (enc.py: stored records spliced, nothing decoded) are exactly
``messages.encode_batch`` of the same batch, on CPython (hypothesis) and on micropython."""

from __future__ import annotations

import pytest
from emberlink.firmware.board import enc
from emberlink.firmware.board.outbox import event_body
from emberlink.protocol import codes
from emberlink.protocol.messages import Batch, Event, decode_batch, encode_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import HERE, mp_run

U32 = st.integers(0, 0xFFFFFFFF)
SRC = st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 0x01030001, 0xFFFFFFFF])
OPT = st.none() | st.sampled_from([0, 1, 23, 24, 255, 256, 70000])


@st.composite
def events(draw):  # type: ignore[no-untyped-def]
    kind = draw(st.sampled_from([1, 2, 3, 4, 10, 11, 12, 13, 14, 16]))
    src = draw(SRC)
    if kind == codes.MEASUREMENT:
        samples = draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=40))
        return Event(kind, 0, src, period=draw(st.integers(1, 10**6)), samples=samples,
                     exp=draw(st.none() | st.integers(-24, 23)), unit=draw(OPT),
                     part=draw(OPT))  # fmt: skip
    if kind == codes.HEALTH:
        h = draw(st.dictionaries(st.integers(0, 23), st.integers(-(2**40), 2**40), min_size=1))
        return Event(kind, 0, src, health=h)
    if kind == codes.BIRTH:
        return Event(kind, 0, src, info={0: "0.1.0", 1: 2, 2: draw(U32), 3: 30, 4: "sn-1"})
    if kind == codes.DEATH:
        return Event(kind, 0, src, code=draw(OPT))
    if kind == codes.DROPPED:
        a = draw(U32)
        return Event(kind, 0, src, range=[a, draw(U32)], code=100)
    if kind == codes.COMMS:
        return Event(kind, 0, src, state=draw(st.integers(0, 3)), code=draw(OPT), part=draw(OPT))
    return Event(kind, 0, src, state=draw(st.integers(0, 3)), code=draw(OPT), sys=draw(OPT),
                 part=draw(OPT), val=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
                 exp=draw(st.none() | st.integers(-24, 23)), unit=draw(OPT),
                 verify=draw(st.none() | st.tuples(U32, U32).map(list)),
                 eflags=draw(st.none() | st.integers(0, 7)))  # fmt: skip


def reference(gw, boot, seq0, t0, flags, evs):  # type: ignore[no-untyped-def]
    out = []
    for ev, t in evs:
        m = ev.fields()
        kind, _, src = m.pop("kind"), m.pop("dt"), m.pop("src")
        out.append(Event(kind, t - t0, src, **m))
    return encode_batch(Batch(gw, boot, seq0, t0, out, None, flags))


def spliced(gw, boot, seq0, t0, flags, evs):  # type: ignore[no-untyped-def]
    buf = enc.batch(gw, boot, seq0, t0, len(evs), flags)
    for ev, t in evs:
        enc.event(buf, event_body(ev), t - t0)
    return enc.end(buf, flags)


@settings(max_examples=300, deadline=None)
@given(
    gw=U32,
    boot=U32,
    seq0=st.integers(1, 2**31),
    t0=st.integers(0, 2**63),
    flags=st.integers(0, 3),
    evs=st.lists(st.tuples(events(), U32), min_size=1, max_size=8),
)
def test_spliced_batches_are_the_protocol_bytes(gw, boot, seq0, t0, flags, evs) -> None:  # type: ignore[no-untyped-def]
    evs = [(e, t0 + dt) for e, dt in evs]
    mine = spliced(gw, boot, seq0, t0, flags, evs)
    assert mine == reference(gw, boot, seq0, t0, flags, evs)
    assert decode_batch(mine).seq0 == seq0


def test_one_event_batch_with_seq0_zero_is_the_death_message() -> None:
    death = Event(codes.DEATH, 0, 0, code=102)
    mine = enc.one(12, 3, 0, 1_700_000_000_000, event_body(death))
    assert mine == encode_batch(Batch(12, 3, 0, 1_700_000_000_000, [death]))


CASES = [
    "(7, 1, 1, 1700000000000, 0, [(Event(codes.FIRE_ALARM, 0, 0x01030001, state=1, code=4,"
    " sys=100, part=17), 1700000000250)])",
    "(4294967295, 70000, 65536, 2**40, 3, [(Event(codes.MEASUREMENT, 0, 0x01030002,"
    " period=1000, samples=[300, -5, 2**31 - 1, -(2**31)], exp=-3, unit=1, part=17),"
    " 2**40 + 70000), (Event(codes.HEALTH, 0, 0, health={0: 12, 1: -3, 23: 2**40}), 2**40)])",
    "(9, 2, 30, 5, 2, [(Event(codes.BIRTH, 0, 0, info={0: '0.1.0', 1: 2, 2: 33, 3: 30,"
    " 4: 'sn'}), 5), (Event(codes.DROPPED, 0, 0, range=[3, 300], code=100), 300),"
    " (Event(codes.COMMS, 0, 0x01040000, state=1, code=55, part=17), 2**32 - 1)])",
    "(7, 1, 0, 1700000000000, 0, [(Event(codes.DEATH, 0, 0, code=102), 1700000000000)])",
]


@pytest.mark.micropython
def test_the_same_bytes_on_micropython(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "cases.txt"
    f.write_text("\n".join(CASES) + "\n")
    got = mp_run(HERE / "mp_enc.py", [str(f)]).splitlines()
    assert len(got) == len(CASES)
    for case, line in zip(CASES, got, strict=True):
        gw, boot, seq0, t0, flags, evs = eval(case, {"Event": Event, "codes": codes})
        assert line == "same " + reference(gw, boot, seq0, t0, flags, evs).hex()
