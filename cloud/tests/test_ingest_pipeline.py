"""The ingest pipeline against a real database: exactly once, acks, quarantine."""

from __future__ import annotations

import threading
import time

import pytest
from emberlink.cloud import models
from emberlink.cloud.ingest.pipeline import Ingestor
from emberlink.protocol import codes, messages, topics, wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from .utils import KEY, batch, make_gateway, make_site

EV = topics.topic(7, "ev")


def _events(sessions: sessionmaker[Session]) -> list[tuple[int, int, int]]:
    with sessions() as s:
        q = select(models.Event.gateway_id, models.Event.boot, models.Event.seq).order_by(
            models.Event.gateway_id, models.Event.boot, models.Event.seq
        )
        return [tuple(r) for r in s.execute(q)]  # type: ignore[misc]


def _quarantine(sessions: sessionmaker[Session]) -> list[models.Quarantine]:
    with sessions() as s:
        return list(s.scalars(select(models.Quarantine).order_by(models.Quarantine.id)))


@pytest.fixture
def gw7(sessions: sessionmaker[Session]) -> int:
    with sessions() as s, s.begin():
        make_gateway(s, 7)
    return 7


def test_batch_is_stored_and_acked_after_commit(sessions: sessionmaker[Session], gw7: int) -> None:
    ing = Ingestor(sessions)
    assert ing.accept(EV, wire.seal(batch(7, 1, 3))) is None
    assert _events(sessions) == []  # nothing is written before the flush
    res = ing.flush()
    assert (res.stored, res.duplicates, res.quarantined) == (3, 0, 0)
    assert res.acks == [messages.Ack(7, 1, 3)]
    assert _events(sessions) == [(7, 1, 1), (7, 1, 2), (7, 1, 3)]
    with sessions() as s:
        ev = s.scalars(select(models.Event).where(models.Event.seq == 2)).one()
    assert ev.kind == codes.MEASUREMENT
    assert ev.t_ms == 1_700_000_000_000 + 1
    assert ev.data["samples"] == [10, 11, 12]
    assert ev.data["period"] == 1000


def test_flush_with_a_stale_registry_entry_does_not_wait_for_its_own_lock(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    # The registry entry expires between accept and flush (TTL 0 here, 10 s in service): the
    # flush reads it again inside its own transaction. On SQLite (BEGIN IMMEDIATE) a second
    # connection used to wait for that transaction's write lock: 30 s, then "locked".
    ing = Ingestor(sessions, registry_ttl_s=0)
    assert ing.accept(EV, wire.seal(batch(7, 1, 3))) is None
    started = time.monotonic()
    res = ing.flush()
    assert time.monotonic() - started < 5
    assert (res.stored, res.acks) == (3, [messages.Ack(7, 1, 3)])


def test_duplicate_batch_is_stored_once_and_acked_again(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    ing = Ingestor(sessions)
    payload = wire.seal(batch(7, 1, 3))
    ing.accept(EV, payload)
    ing.accept(EV, payload)  # same flush
    first = ing.flush()
    ing.accept(EV, payload)  # a later redelivery
    second = ing.flush()
    assert (first.stored, first.duplicates) == (3, 3)
    assert (second.stored, second.duplicates) == (0, 3)
    assert second.acks == [messages.Ack(7, 1, 3)]
    assert len(_events(sessions)) == 3


def test_ack_is_the_contiguous_high_water_mark(sessions: sessionmaker[Session], gw7: int) -> None:
    ing = Ingestor(sessions)
    ing.accept(EV, wire.seal(batch(7, 1, 2)))  # seqs 1..2
    ing.accept(EV, wire.seal(batch(7, 5, 2)))  # seqs 5..6, a gap at 3..4
    assert ing.flush().acks == [messages.Ack(7, 1, 2)]
    ing.accept(EV, wire.seal(batch(7, 3, 2)))
    assert ing.flush().acks == [messages.Ack(7, 1, 6)]


def test_each_boot_is_its_own_stream(sessions: sessionmaker[Session], gw7: int) -> None:
    ing = Ingestor(sessions)
    ing.accept(EV, wire.seal(batch(7, 1, 4, boot=1)))
    ing.accept(EV, wire.seal(batch(7, 1, 2, boot=2)))
    assert sorted(ing.flush().acks, key=lambda a: a.boot) == [
        messages.Ack(7, 1, 4),
        messages.Ack(7, 2, 2),
    ]


def test_dropped_range_does_not_hold_the_ack_back(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    ing = Ingestor(sessions)
    ing.accept(EV, wire.seal(batch(7, 1, 2)))
    # seqs 3..10 were evicted by the gateway; seq 11 announces it.
    dropped = messages.Event(codes.DROPPED, 0, 0, range=[3, 10])
    ing.accept(EV, wire.seal(batch(7, 11, events=[dropped])))
    assert ing.flush().acks == [messages.Ack(7, 1, 11)]


def test_two_workers_same_batches_store_each_event_once(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    payloads = [wire.seal(batch(7, 1 + 50 * i, 50)) for i in range(8)]
    results = []
    barrier = threading.Barrier(2)

    def work() -> None:
        ing = Ingestor(sessions)
        for p in payloads:
            ing.accept(EV, p)
        barrier.wait()
        results.append(ing.flush())

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.stored for r in results) == 400
    assert sum(r.duplicates for r in results) == 400
    assert _events(sessions) == [(7, 1, s) for s in range(1, 401)]
    assert max(r.acks[0].hwm for r in results) == 400


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("el/v1/7/ev", b"\xff\x00", "indefinite length", None),
        (
            "el/v1/7/ev",
            wire.seal(batch(8, 1, 1)),
            "gateway does not match topic",
            "batch says gateway 8, topic says 7",
        ),
        ("el/v1/9/ev", wire.seal(batch(9, 1, 1)), "unknown gateway", "gateway 9 is not registered"),
        ("el/v1/x/ev", wire.seal(batch(7, 1, 1)), "bad topic", None),
        ("el/v1/7/cmd", wire.seal(batch(7, 1, 1)), "bad topic", "ingest does not take 'cmd'"),
        ("el/v1/7/ev", b"\xa0", "missing key", "missing key: batch: ver"),
    ],
)
def test_malformed_messages_are_quarantined_with_the_reason(
    sessions: sessionmaker[Session],
    gw7: int,
    topic: str,
    payload: bytes,
    reason: str,
    detail: str | None,
) -> None:
    ing = Ingestor(sessions)
    got = ing.accept(topic, payload)
    assert got is not None
    assert got == reason
    ing.accept(EV, wire.seal(batch(7, 1, 1)))  # the worker goes on
    res = ing.flush()
    assert (res.stored, res.quarantined) == (1, 1)
    (q,) = _quarantine(sessions)
    assert q.reason == got
    assert q.topic == topic
    assert q.payload == payload
    assert q.source == "mqtt"
    if detail is not None:
        assert q.detail == detail


def test_mac_is_verified_when_the_gateway_has_a_key(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 5, key=KEY)
    ing = Ingestor(sessions)
    t = topics.topic(5, "ev")
    assert ing.accept(t, wire.seal(batch(5, 1, 2), key=KEY)) is None
    assert ing.accept(t, wire.seal(batch(5, 3, 1))) == "MAC required"
    assert ing.accept(t, wire.seal(batch(5, 3, 1), key=bytes(32))) == "MAC does not verify"
    res = ing.flush()
    assert (res.stored, res.quarantined) == (2, 2)
    assert [q.reason for q in _quarantine(sessions)] == ["MAC required", "MAC does not verify"]


def test_will_is_not_stored_as_an_event(sessions: sessionmaker[Session], gw7: int) -> None:
    ing = Ingestor(sessions)
    will = messages.Batch(7, 1, 0, 1_700_000_000_000, [messages.Event(codes.DEATH, 0, 0)])
    assert ing.accept(topics.topic(7, "state"), wire.seal(will)) is None
    res = ing.flush()
    assert (res.stored, res.acks) == (0, [])
    assert _events(sessions) == []
    # seq0 = 0 is refused on the event topic.
    assert ing.accept(EV, wire.seal(will)) == "bad will message"


def _wipe_events(engine: Engine) -> None:
    with engine.begin() as conn:
        for t in ("alarms", "events", "streams", "device_health", "health_transitions", "devices"):
            conn.execute(text(f"DELETE FROM {t}"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spans=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 8)), min_size=1, max_size=12),
    flush_every=st.integers(1, 5),
)
def test_any_redelivery_pattern_stores_each_seq_once(
    sessions: sessionmaker[Session],
    engine: Engine,
    gw7: int,
    spans: list[tuple[int, int]],
    flush_every: int,
) -> None:
    """Property: stored = union of sent seqs, each once; ack = longest prefix from 1."""
    _wipe_events(engine)
    ing = Ingestor(sessions)
    sent: set[int] = set()
    hwm = 0
    for i, (seq0, n) in enumerate(spans):
        ing.accept(EV, wire.seal(batch(7, seq0, n)))
        sent.update(range(seq0, seq0 + n))
        if (i + 1) % flush_every == 0:
            for a in ing.flush().acks:
                hwm = max(hwm, a.hwm)
    for a in ing.flush().acks:
        hwm = max(hwm, a.hwm)
    with sessions() as s:
        seqs = list(s.scalars(select(models.Event.seq).order_by(models.Event.seq)))
        n_rows = s.scalar(select(func.count()).select_from(models.Event))
    assert seqs == sorted(sent)
    assert n_rows == len(sent)
    expect = 0
    while expect + 1 in sent:
        expect += 1
    assert hwm == expect


def test_event_time_beyond_9999_is_quarantined(sessions: sessionmaker[Session], gw7: int) -> None:
    ing = Ingestor(sessions)
    far = batch(7, 1, 1, t0=2**63)
    assert ing.accept(EV, wire.seal(far)) == "event time out of range"
    assert ing.flush().quarantined == 1
    (q,) = _quarantine(sessions)
    assert q.detail == f"t0 + dt = {2**63} ms is after 9999"


def test_a_batch_the_database_refuses_is_quarantined_alone(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    """A gateway deleted while still cached: its batch fails; the others are stored."""
    with sessions() as s, s.begin():
        make_gateway(s, 8)
    ing = Ingestor(sessions)
    assert ing.gateways.get(8) is not None  # now cached
    with sessions() as s, s.begin():
        s.execute(text("DELETE FROM gateway_health WHERE gateway_id = 8"))
        s.execute(text("DELETE FROM gateways WHERE id = 8"))
    ing.accept(EV, wire.seal(batch(7, 1, 2)))
    ing.accept(topics.topic(8, "ev"), wire.seal(batch(8, 3, 2)))
    ing.accept(EV, wire.seal(batch(7, 3, 2)))
    res = ing.flush()
    assert (res.stored, res.quarantined) == (4, 1)
    assert res.acks == [messages.Ack(7, 1, 4)]
    (q,) = _quarantine(sessions)
    assert (q.reason, q.topic, q.gateway_id) == ("refused by the database", "el/v1/8/ev", 8)
    assert q.payload == wire.seal(batch(8, 3, 2))


def test_lateness_from_the_flag_or_the_age_of_a_synced_clock(
    sessions: sessionmaker[Session], gw7: int
) -> None:
    ing = Ingestor(sessions, late_after_ms=60_000)
    now = 1_800_000_000_000
    ing.clock = lambda: now  # type: ignore[method-assign]
    ing.accept(EV, wire.seal(batch(7, 1, 1, t0=now - 1_000)))  # fresh
    ing.accept(EV, wire.seal(batch(7, 2, 1, t0=now - 1_000, flags=codes.BF_REPLAYED)))
    ing.accept(EV, wire.seal(batch(7, 3, 1, t0=now - 600_000)))  # ten minutes old
    ing.accept(EV, wire.seal(batch(7, 4, 1, t0=now - 600_000, flags=codes.BF_CLOCK_UNSYNCED)))
    ing.flush()
    with sessions() as s:
        got = list(
            s.execute(select(models.Event.seq, models.Event.late).order_by(models.Event.seq))
        )
    assert [tuple(r) for r in got] == [(1, False), (2, True), (3, True), (4, False)]


def test_one_flush_for_many_gateways(sessions: sessionmaker[Session]) -> None:
    """A flush touching 1,500 streams (SQLite limits expression depth to 1000)."""
    with sessions() as s, s.begin():
        site = make_site(s)
        s.execute(
            insert(models.Gateway),
            [
                {"id": g, "site_id": site.id, "name": f"g{g}", "created_ms": 0}
                for g in range(1000, 2500)
            ],
        )
    ing = Ingestor(sessions)
    for g in range(1000, 2500):
        ing.accept(topics.topic(g, "ev"), wire.seal(batch(g, 1, 2)))
    res = ing.flush()
    assert res.stored == 3000
    assert len(res.acks) == 1500 and {a.hwm for a in res.acks} == {2}
