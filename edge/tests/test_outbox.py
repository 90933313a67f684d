"""The outbox: seq allocated with the row, no loss or hole after kill -9, lanes, eviction."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emberlink.edge.outbox import ALARM_LANE, BULK_LANE, Outbox
from emberlink.protocol import cbor, codes
from emberlink.protocol.messages import Event
from hypothesis import given, settings
from hypothesis import strategies as st

WRITER = Path(__file__).with_name("outbox_writer.py")


def alarm(src: int = 1) -> Event:
    return Event(codes.FIRE_ALARM, 0, src, state=codes.ACTIVE, code=10)


def sample(v: int = 0) -> Event:
    return Event(codes.MEASUREMENT, 0, 9, period=1000, samples=[v])


def covered(ob: Outbox, boot: int) -> set[int]:
    """Seqs of ``boot`` still stored, or announced as dropped by a DROPPED event."""
    out = set()
    for seq, body in ob.db.execute("SELECT seq, body FROM events WHERE boot=?", (boot,)):
        out.add(seq)
        m = cbor.loads(body)
        if m[0] == codes.DROPPED:
            out.update(range(m[17][0], m[17][1] + 1))
    return out


def test_kill_9_loses_nothing_and_leaves_no_hole(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite"
    rnd = random.Random(26875)
    printed: dict[int, set[int]] = {}
    for _ in range(6):
        p = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), "300"], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout is not None
        boot = int(p.stdout.readline().split()[1])
        time.sleep(rnd.uniform(0.1, 0.8))  # a random moment, mid-transaction or not
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate(timeout=10)
        seqs = {int(s) for line in out.splitlines() for s in line.split()}
        printed[boot] = seqs
        assert seqs, "the writer stored nothing before the kill"
    ob = Outbox(db, max_telemetry=300)
    for boot, seqs in printed.items():
        last = ob.last_seq(boot)
        assert covered(ob, boot) == set(range(1, last + 1)), f"hole in boot {boot}"
        assert max(seqs) <= last  # every seq reported durable is allocated ...
        stored = covered(ob, boot)
        assert seqs <= stored  # ... and stored (or explained by a DROPPED range)
    assert ob.boot == max(printed) + 1  # the boot counter persisted and moved on
    ob.close()


def test_alarm_jumps_a_backlog_of_10000(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([(sample(i), 1000 + i) for i in range(10_000)])
    seq = ob.append(alarm(), 99_999)
    p = ob.next_batch(ALARM_LANE, 1)
    assert p is not None and p.seqs == (seq, seq)  # in its own batch, first
    assert p.batch.events[0].kind == codes.FIRE_ALARM
    bulk = ob.next_batch(BULK_LANE, 1, 256)
    assert bulk is not None and bulk.seqs == (1, 256)
    assert [e.samples[0] for e in bulk.batch.events] == list(range(256))
    assert ob.state_of(ob.boot, 1) == "in_flight" and ob.state_of(ob.boot, 300) == "queued"
    ob.acknowledge(p)
    assert ob.state_of(ob.boot, seq) == "acknowledged"


def test_requeue_after_lost_connection_marks_replayed(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([(sample(i), 5000) for i in range(3)])
    p1 = ob.next_batch(BULK_LANE, 1)
    assert p1 is not None and not p1.batch.flags & codes.BF_REPLAYED
    ob.requeue_all()
    p2 = ob.next_batch(BULK_LANE, 1)
    assert p2 is not None and p2.seqs == p1.seqs and p2.batch.flags & codes.BF_REPLAYED
    ob.acknowledge(p2)
    assert ob.depth() == 0


def test_unsynced_clock_flag_and_dt(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append(sample(1), 10_000, unsynced=True)
    ob.append(sample(2), 10_250)
    p = ob.next_batch(BULK_LANE, 3)
    assert p is not None
    assert p.batch.t0 == 10_000 and [e.dt for e in p.batch.events] == [0, 250]
    assert p.batch.flags & codes.BF_CLOCK_UNSYNCED


def test_eviction_never_touches_alarms_and_announces_ranges(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", max_telemetry=100)
    ob.append_many([(sample(i), i) for i in range(50)])
    a = ob.append(alarm(), 50)
    ob.append_many([(sample(i), i) for i in range(80)])  # 130 > 100: evict oldest
    kinds = dict(ob.db.execute("SELECT seq, kind FROM events").fetchall())
    assert kinds[a] == codes.FIRE_ALARM
    assert ob.telemetry_rows <= 100
    assert covered(ob, ob.boot) == set(range(1, ob.last_seq() + 1))
    # oldest first: the 30 over the cap (seqs 1-30) went, announced as one range
    ranges = [cbor.loads(body)[17] for (body,) in ob.db.execute(
        "SELECT body FROM events WHERE kind=?", (codes.DROPPED,))]  # fmt: skip
    assert ranges == [[1, 30]]
    tel = [s for s, k in kinds.items() if k == codes.MEASUREMENT]
    assert min(tel) == 31 and len(tel) == 100


def test_cloud_ack_deletes_up_to_the_high_water_mark(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([(sample(i), 1) for i in range(10)])
    assert ob.acknowledge_upto(ob.boot, 4) == 4
    assert [s for _, s in ob.stored_keys()] == list(range(5, 11))
    sent = ob.next_batch(BULK_LANE, 1)
    assert sent is not None and sent.seqs == (5, 10)
    assert ob.next_batch(BULK_LANE, 1) is None
    ob.resend_from(ob.boot, 7)  # the cloud asks again from 7
    p = ob.next_batch(BULK_LANE, 1)
    assert p is not None and p.seqs == (7, 10) and p.batch.flags & codes.BF_REPLAYED


def test_boot_counter_persists(tmp_path: Path) -> None:
    boots = []
    for _ in range(3):
        ob = Outbox(tmp_path / "o.sqlite")
        boots.append(ob.boot)
        assert ob.append(sample(), 1) == 1  # seq starts at 1 per boot
        ob.close()
    assert boots == [1, 2, 3]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alarm"), st.integers(1, 3)),
        st.tuples(st.just("samples"), st.integers(1, 40)),
        st.tuples(st.just("send"), st.sampled_from([ALARM_LANE, BULK_LANE])),
        st.tuples(st.just("puback"), st.integers(0, 5)),
        st.tuples(st.just("lost"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(20, 200))
def test_outbox_properties(ops: list[tuple[str, int]], cap: int) -> None:
    """Whatever happens: no hole, alarms never dropped, batches contiguous, alarm lane first."""
    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(Path(d) / "o.sqlite", max_telemetry=cap)
        inflight = []
        acked: set[int] = set()
        alarms: set[int] = set()
        for op, n in ops:
            if op == "alarm":
                alarms.update(ob.append_many([(alarm(), 1)] * n))
            elif op == "samples":
                ob.append_many([(sample(i), 1) for i in range(n)])
            elif op == "send":
                p = ob.next_batch(n, 1, 16)
                if p is not None:
                    seqs = [s for s, _ in p.batch.seqs()]
                    assert seqs == list(range(p.seqs[0], p.seqs[1] + 1))
                    pri = [e.kind in codes.PRIORITY_KINDS for e in p.batch.events]
                    assert all(pri) if n == ALARM_LANE else not any(pri)
                    inflight.append(p)
                elif n == BULK_LANE:
                    queued_alarms = [s for s in alarms - acked
                                     if ob.state_of(ob.boot, s) == "queued"]  # fmt: skip
                    assert ob.next_batch(ALARM_LANE, 1) is None or queued_alarms
            elif op == "puback" and inflight:
                p = inflight.pop(min(n, len(inflight) - 1))
                ob.acknowledge(p)
                acked.update(range(p.seqs[0], p.seqs[1] + 1))
                for e in p.batch.events:  # a delivered DROPPED still explains its range
                    if e.kind == codes.DROPPED:
                        acked.update(range(e.range[0], e.range[1] + 1))
            elif op == "lost":
                ob.requeue_all()
                inflight.clear()
        last = ob.last_seq()
        assert covered(ob, ob.boot) | acked == set(range(1, last + 1))
        stored = {s for _, s in ob.stored_keys()}
        assert alarms - acked <= stored  # no alarm is ever evicted
        # after a lost connection every stored record goes out again, each exactly once
        ob.requeue_all()
        seen: list[int] = []
        for lane in (ALARM_LANE, BULK_LANE):
            while (p := ob.next_batch(lane, 1, 16)) is not None:
                seen.extend(range(p.seqs[0], p.seqs[1] + 1))
        assert sorted(seen) == sorted(stored)
        ob.close()
