"""A batch whose write fails with an error that is not the database refusing it (a bug, an
overflow in a driver) is quarantined alone; the rest of its flush is stored; nothing spins."""

from __future__ import annotations

from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.cloud.core.db import make_engine, make_sessionmaker
from emberlink.cloud.ingest import pipeline
from emberlink.cloud.ingest.pipeline import R_INGEST, R_STORE, Ingestor
from emberlink.protocol import messages, topics, wire
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, heartbeat, make_gateway


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


def test_a_heartbeat_period_too_large_for_the_database_is_quarantined_alone(
    sessions: sessionmaker[Session], engine: Engine, two: Ingestor
) -> None:
    # A real path: a gateway announcing a heartbeat period of 2**62 s (a valid i64 on the wire).
    # SQLite's driver raises OverflowError (not a database error) for the deadline it makes;
    # PostgreSQL refuses the value (DataError). Either way only that batch is quarantined.
    bad = wire.seal(batch(8, 1, events=[heartbeat(heartbeat_s=2**62)]))
    assert two.accept(topics.topic(7, "ev"), wire.seal(batch(7, 1, 2))) is None
    assert two.accept(topics.topic(8, "ev"), bad) is None
    assert two.accept(topics.topic(7, "ev"), wire.seal(batch(7, 3, 2))) is None
    assert two.accept(topics.topic(7, "ev"), b"\xff") == "indefinite length"
    res = two.flush()
    assert (res.stored, res.quarantined) == (4, 2)
    assert res.acks == [messages.Ack(7, 1, 4)]
    assert two.pending_events == 0  # nothing kept for another try
    assert _events(sessions) == [(7, 1), (7, 2), (7, 3), (7, 4)]
    rows = {q.reason: q for q in _quarantine(sessions)}
    assert set(rows) == {"indefinite length", R_INGEST if _sqlite(engine) else R_STORE}
    assert rows.pop("indefinite length").topic == "el/v1/7/ev"
    (q,) = rows.values()
    assert (q.topic, q.gateway_id, q.payload) == ("el/v1/8/ev", 8, bad)
    if _sqlite(engine):
        assert q.detail.startswith("OverflowError: Python int too large"), q.detail
    assert two.flush() == pipeline.FlushResult()  # the next flush has nothing to redo


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


def _sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
