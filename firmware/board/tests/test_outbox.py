"""The flash outbox: durable through kill -9 on micropython (no loss, no hole), lanes, acks,
eviction with DROPPED ranges (alarms never), and hypothesis properties over random histories."""

from __future__ import annotations

import random
import signal
import time

import pytest
from emberlink.firmware.board import outbox as obx
from emberlink.protocol import codes
from emberlink.protocol.messages import Batch, Event, decode_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import HERE, Lines, mp_popen


def alarm(i: int = 1) -> Event:
    return Event(codes.FIRE_ALARM, 0, 0x01030001, state=codes.ACTIVE, code=i % 200 + 1)


def series(i: int = 1) -> Event:
    return Event(codes.MEASUREMENT, 0, 0x01030001, period=1000, samples=[i, i + 1])


def batch_of(p: tuple) -> Batch:  # type: ignore[type-arg]
    """The Batch of a next_batch() answer: its bytes decode strictly (canonical CBOR)."""
    assert isinstance(p[4], bytes)
    return decode_batch(p[4])


def drain(ob: obx.Outbox, gw: int = 9) -> list:  # type: ignore[type-arg]
    """Every batch until empty, alarms first, each acknowledged."""
    out = []
    while True:
        p = ob.next_batch(obx.ALARM_LANE, gw) or ob.next_batch(obx.BULK_LANE, gw)
        if p is None:
            return out
        out.append(batch_of(p))
        ob.ack(p[1], p[2], p[3])


def test_alarms_go_first_and_batches_are_contiguous_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ob = obx.Outbox(str(tmp_path / "ob"), seg_records=8)
    kinds = ["s", "s", "a", "s", "a", "a", "s"]
    for i, k in enumerate(kinds):
        ob.append(alarm(i) if k == "a" else series(i), 1000 + i)
    first = ob.next_batch(obx.ALARM_LANE, 9)
    assert first is not None and first[2:4] == (3, 3)
    b = batch_of(first)
    assert b.events[0].kind == codes.FIRE_ALARM and b.t0 == 1002
    batches = [b]
    ob.ack(*first[1:4])
    batches += drain(ob)
    seqs = sorted(b.seq0 + i for b in batches for i in range(len(b.events)))
    assert seqs == list(range(1, 8))
    assert ob.depth() == 0
    assert next(b for b in batches if b.seq0 == 5).events[1].kind == codes.FIRE_ALARM


def test_restart_replays_what_was_not_acknowledged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "ob")
    ob = obx.Outbox(d, seg_records=4)
    for i in range(10):
        ob.append(alarm(i) if i % 3 == 0 else series(i), 5000 + i)
    p = ob.next_batch(obx.BULK_LANE, 9)
    assert p is not None
    ob.ack(*p[1:4])  # seq 2..3
    ob.next_batch(obx.ALARM_LANE, 9)  # in flight, never acked: a crash now
    ob2 = obx.Outbox(d, seg_records=4)
    assert ob2.boot == ob.boot + 1
    left = sorted(s for b, s, _, _ in ob2.stored())
    assert left == [1, 4, 5, 6, 7, 8, 9, 10]
    batches = drain(ob2)
    assert all(b.flags & codes.BF_REPLAYED for b in batches)  # an older boot's records
    assert obx.Outbox(d).depth() == 0


def test_telemetry_is_evicted_with_a_dropped_range_and_alarms_never(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ob = obx.Outbox(str(tmp_path / "ob"), max_telemetry=10, seg_records=8)
    appended_alarms, telemetry = set(), set()
    for i in range(40):
        seq = ob.append(alarm(i) if i % 4 == 0 else series(i), 100 + i)
        (telemetry if i % 4 else appended_alarms).add(seq)
    batches = drain(ob)
    got = {b.seq0 + i: e for b in batches for i, e in enumerate(b.events)}
    dropped = [e.fields()["range"] for e in got.values() if e.kind == codes.DROPPED]
    assert dropped, "over the cap: something was dropped"
    lost = {s for r in dropped for s in range(r[0], r[1] + 1)}
    assert appended_alarms <= {s for s, e in got.items() if e.kind == codes.FIRE_ALARM}
    assert not lost & appended_alarms
    assert telemetry == lost | {s for s, e in got.items() if e.kind == codes.MEASUREMENT}
    assert ob.dropped == len(lost)


def test_a_torn_tail_is_ignored_and_the_next_boot_starts_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "ob"
    ob = obx.Outbox(str(d), seg_records=100)
    for i in range(5):
        ob.append(alarm(i), i)
    seg = next(p for p in d.iterdir() if p.name.startswith("s"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])  # the last record half written
    ob2 = obx.Outbox(str(d))
    assert ob2.torn == 1
    assert [s for _, s, _, _ in ob2.stored()] == [1, 2, 3, 4]
    assert ob2.append(alarm(), 9) == 1 and ob2.boot == 2


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from([codes.FIRE_ALARM, codes.FAULT,
                                                      codes.MEASUREMENT, codes.HEALTH])),
        st.tuples(st.just("send"), st.sampled_from([obx.ALARM_LANE, obx.BULK_LANE])),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("requeue"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(2, 12), st.integers(2, 9))
def test_no_history_loses_an_alarm_or_leaves_a_hole(tmp_path_factory, ops, cap, seg) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path_factory.mktemp("ob"))
    ob = obx.Outbox(d, max_telemetry=cap, seg_records=seg)
    appended: dict[tuple[int, int], int] = {}
    pending: list = []  # type: ignore[type-arg]
    delivered: dict[tuple[int, int], int] = {}
    dropped: set[tuple[int, int]] = set()

    def take(b) -> None:  # type: ignore[no-untyped-def]
        for i, e in enumerate(b.events):
            delivered[(b.boot, b.seq0 + i)] = e.kind
            if e.kind == codes.DROPPED:
                r = e.fields()["range"]
                dropped.update((b.boot, s) for s in range(r[0], r[1] + 1))

    for op, arg in ops:
        if op == "append":
            ev = (
                Event(arg, 0, 1, state=1, code=1)
                if arg in codes.PRIORITY_KINDS
                else (series() if arg == codes.MEASUREMENT else Event(arg, 0, 0, health={0: 1}))
            )
            seq = ob.append(ev, 1000)
            appended[(ob.boot, seq)] = arg
            queued_tel = sum(1 for _, _, c, st_ in ob.stored() if c == obx.CLS_TELEMETRY
                             and st_ == obx.QUEUED)  # fmt: skip
            assert queued_tel <= cap
        elif op == "send":
            p = ob.next_batch(arg, 9)
            if p is not None:
                pending.append(p)
        elif op == "ack" and pending:
            p = pending.pop(min(arg, len(pending) - 1))
            take(batch_of(p))
            ob.ack(p[1], p[2], p[3])
        elif op == "requeue":
            ob.requeue()
            pending.clear()
        elif op == "restart":
            ob = obx.Outbox(d, max_telemetry=cap, seg_records=seg)
            pending.clear()
    ob.requeue()  # the link drops: whatever was in flight and unacknowledged goes again
    for b in drain(ob):
        take(b)
    for key, kind in appended.items():
        if kind in codes.PRIORITY_KINDS:
            assert key in delivered, f"alarm {key} lost"
        else:
            assert key in delivered or key in dropped, f"{key} neither delivered nor dropped"
    assert not {k for k in dropped if appended.get(k) in codes.PRIORITY_KINDS}
    boots: dict[int, list[int]] = {}
    for b, s in delivered:
        boots.setdefault(b, []).append(s)
    for b, seqs in boots.items():  # no hole: delivered + dropped cover 1..max of every boot
        top = max(seqs)
        have = set(seqs) | {s for bb, s in dropped if bb == b}
        assert have >= set(range(1, top + 1)), f"hole in boot {b}"


@pytest.mark.micropython
def test_kill_9_mid_burst_loses_nothing_and_leaves_no_hole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "ob")
    rnd = random.Random(3)
    told: set[tuple[int, int]] = set()
    boots = []
    for _ in range(12):
        proc = mp_popen(HERE / "mp_outbox_writer.py", [d])
        lines = Lines(proc)
        boot = int(lines.until("boot", 20).split()[1])
        boots.append(boot)
        time.sleep(rnd.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        lines.t.join(5)
        said = [x.split() for x in lines.lines if x.startswith("seq")]
        told |= {(int(w[1]), int(w[2])) for w in said if len(w) == 3}  # whole lines only
    assert boots == list(range(1, 13))  # the boot counter survives every kill
    assert len(told) > 100
    ob = obx.Outbox(d, new_boot=False)
    stored = {(b, s) for b, s, _, _ in ob.stored()}
    assert told <= stored, f"lost {sorted(told - stored)[:5]}"
    for boot in boots:
        seqs = sorted(s for b, s in stored if b == boot)
        assert seqs == list(range(1, len(seqs) + 1)), f"hole in boot {boot}"
    assert ob.torn <= len(boots)


def test_cloud_ack_upto_and_resend_from(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The cloud's Ack marks every record of a boot up to its hwm delivered, durably; a resend
    queues stored records from a seq (and later boots) again, flagged replayed."""
    path = str(tmp_path / "ob")
    ob = obx.Outbox(path, seg_records=4)
    for i in range(6):
        ob.append(series(i), 1000 + i)
    p = ob.next_batch(obx.BULK_LANE, 9)
    assert p is not None and p[2:4] == (1, 4)  # one segment's run, in flight
    assert ob.ack_upto(1, 2) == 2
    assert ob.ack_upto(1, 2) == 0  # nothing new: no acks record written
    assert [s for _, s, _, _ in ob.stored()] == [3, 4, 5, 6]
    ob = obx.Outbox(path, seg_records=4)  # restart (boot 2): the ack held
    assert [(b, s) for b, s, _, _ in ob.stored()] == [(1, 3), (1, 4), (1, 5), (1, 6)]
    ob.append(series(9), 2000)
    while ob.next_batch(obx.BULK_LANE, 9):  # everything in flight
        pass
    assert ob.resend_from(1, 5) == 3  # 1/5, 1/6 and 2/1; 1/3 and 1/4 stay in flight
    again = ob.next_batch(obx.BULK_LANE, 9)
    assert again is not None and again[1:4] == (1, 5, 6)
    assert batch_of(again).flags & codes.BF_REPLAYED
    again = ob.next_batch(obx.BULK_LANE, 9)
    assert again is not None and again[1:4] == (2, 1, 1)
    assert batch_of(again).flags & codes.BF_REPLAYED  # sent before: a replay, same boot or not
    assert ob.ack_upto(1, 6) == 4 and ob.ack_upto(2, 1) == 1
    assert ob.depth() == 0
