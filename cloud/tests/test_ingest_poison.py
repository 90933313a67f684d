"""A batch whose write fails with an error that is not the database refusing it (a bug, an
overflow in a driver) is quarantined alone; the rest of its flush is stored; nothing spins. And
absurd numbers a gateway announces in its health are ignored rather than failing the write."""

from __future__ import annotations

from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.cloud.core.db import make_engine, make_sessionmaker
from emberlink.cloud.ingest import pipeline
from emberlink.cloud.ingest.pipeline import R_INGEST, Ingestor
from emberlink.protocol import messages, topics, wire
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, fire, heartbeat, make_gateway


def _events(sessions: sessionmaker[Session]) -> list[tuple[int, int]]:
    with sessions() as s:
        q = select(models.Event.gateway_id, models.Event.seq).order_by(
            models.Event.gateway_id, models.Event.seq
        )
        return [(g, n) for g, n in s.execute(q)]


def _quarantine(sessions: sessionmaker[Session]) -> list[models.Quarantine]:
    with sessions() as s:
        return list(s.scalars(select(models.Quarantine).order_by(models.Quarantine.id)))


@pytest.fixture
def two(sessions: sessionmaker[Session]) -> Ingestor:
    with sessions() as s, s.begin():
        make_gateway(s, 7)
        make_gateway(s, 8)
    return Ingestor(sessions)


def test_absurd_health_numbers_are_ignored_and_the_batch_with_its_fire_alarm_stored(
    sessions: sessionmaker[Session], two: Ingestor
) -> None:
    # Any i64 is valid on the wire. A heartbeat period of 2**62 s once made SQLite's driver raise
    # OverflowError (PostgreSQL: DataError) and the whole batch went to quarantine, a fire alarm
    # in it included. Out-of-range announcements are now ignored; the events are stored.
    hb = heartbeat(heartbeat_s=2**62, devices_down=2**40, outbox_depth=-5)
    b = batch(8, 1, events=[hb, fire(1), heartbeat(1, heartbeat_s=-30)])
    assert two.accept(topics.topic(8, "ev"), wire.seal(b)) is None
    res = two.flush()
    assert (res.stored, res.quarantined) == (3, 0)
    assert res.acks == [messages.Ack(8, 1, 3)]
    assert _events(sessions) == [(8, 1), (8, 2), (8, 3)]
    assert _quarantine(sessions) == []
    with sessions() as s:
        gh = s.get(models.GatewayHealth, 8)
        assert gh is not None
        assert gh.heartbeat_s is None and gh.outbox_depth in (None, 0) and not gh.devices_down
    # a sane announcement is still taken
    assert two.accept(topics.topic(8, "ev"), wire.seal(batch(8, 4, events=[heartbeat(2)]))) is None
    assert two.flush().stored == 1
    with sessions() as s:
        assert s.get(models.GatewayHealth, 8).heartbeat_s == 30  # type: ignore[union-attr]


def test_an_unexpected_error_in_one_batch_quarantines_that_batch_with_the_error(
    sessions: sessionmaker[Session], two: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The only stand-in: one internal function fails (as a bug would) for gateway 8's rows.
    real_row = pipeline._row

    def row(b: messages.Batch, *args: Any) -> dict[str, Any]:
        if b.gw == 8:
            raise KeyError("a bug in the row builder")
        return real_row(b, *args)

    monkeypatch.setattr(pipeline, "_row", row)
    bad = wire.seal(batch(8, 1, 3))
    two.accept(topics.topic(7, "ev"), wire.seal(batch(7, 1, 2)))
    two.accept(topics.topic(8, "ev"), bad)
    two.accept(topics.topic(7, "ev"), wire.seal(batch(7, 3, 1)))
    res = two.flush()
    assert (res.stored, res.quarantined) == (3, 1)
    assert res.acks == [messages.Ack(7, 1, 3)]
    assert two.pending_events == 0
    assert _events(sessions) == [(7, 1), (7, 2), (7, 3)]
    (q,) = _quarantine(sessions)
    assert (q.reason, q.topic, q.gateway_id, q.payload) == (R_INGEST, "el/v1/8/ev", 8, bad)
    assert q.detail == "KeyError: 'a bug in the row builder'"


def test_an_unreachable_database_keeps_the_buffer_and_quarantines_nothing(
    sessions: sessionmaker[Session], two: Ingestor
) -> None:
    two.accept(topics.topic(7, "ev"), wire.seal(batch(7, 1, 2)))
    reachable = two._sessions
    down = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        two._sessions = make_sessionmaker(down)
        with pytest.raises(OperationalError):
            two.flush()
    finally:
        two._sessions = reachable
        down.dispose()
    assert two.pending_events == 2  # kept: nothing in it is at fault
    assert two.flush().stored == 2
    assert _quarantine(sessions) == []
