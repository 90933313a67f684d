"""The MQTT worker against a private Mosquitto and a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from emberlink.cloud import models
from emberlink.cloud.core.config import Settings
from emberlink.cloud.ingest.worker import IngestWorker
from emberlink.protocol import codes, messages, topics, wire
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, heartbeat, make_gateway, until

pytestmark = pytest.mark.broker
WAIT_S = 20  # every wait in these tests is bounded


def _settings(port: int) -> Settings:
    return Settings(mqtt_port=port, flush_events=100, flush_ms=50, sweep_interval_s=0.2)


def _count(sessions: sessionmaker[Session], model: type[models.Base]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
async def workers(
    mosquitto: int, sessions: sessionmaker[Session]
) -> AsyncIterator[list[IngestWorker]]:
    with sessions() as s, s.begin():
        for gw in (1, 2, 3):
            make_gateway(s, gw)
    stop = asyncio.Event()
    ws = [IngestWorker(_settings(mosquitto), sessions, client_id=f"w{i}") for i in range(2)]
    tasks = [asyncio.create_task(w.run(stop)) for w in ws]
    for w in ws:
        await asyncio.wait_for(w.subscribed.wait(), WAIT_S)
    yield ws
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def test_events_are_stored_once_and_acked_after_commit(
    mosquitto: int, sessions: sessionmaker[Session], workers: list[IngestWorker]
) -> None:
    acks: list[messages.Ack] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto, identifier="gw-sim") as gw:
        await gw.subscribe(topics.topic(1, "ack"), qos=1)

        async def read_acks() -> None:
            async for m in gw.messages:
                acks.append(messages.decode_ack(m.payload))

        reader = asyncio.create_task(read_acks())
        for i in range(10):
            p = wire.seal(batch(1, 1 + 20 * i, 20))
            await gw.publish(topics.topic(1, "ev"), p, qos=1)
            await gw.publish(topics.topic(1, "ev"), p, qos=1)  # a duplicate on purpose
        await until(lambda: any(a.hwm == 200 for a in acks), "ack 200")
        await until(lambda: sum(w.stats.messages for w in workers) == 20, "20 messages")
        await until(lambda: sum(w.stats.duplicates for w in workers) == 200, "200 duplicates")
        reader.cancel()
    assert _count(sessions, models.Event) == 200
    assert all(a.gw == 1 and a.boot == 1 for a in acks)
    # Both workers took part in the shared subscription.
    assert all(w.stats.messages > 0 for w in workers)
    assert sum(w.stats.stored for w in workers) == 200
    assert sum(w.stats.duplicates for w in workers) == 200


async def test_garbage_is_quarantined_and_the_worker_goes_on(
    mosquitto: int, sessions: sessionmaker[Session], workers: list[IngestWorker]
) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto, identifier="gw-sim") as gw:
        await gw.publish(topics.topic(2, "ev"), b"\xff\xff\xff", qos=1)
        await gw.publish(topics.topic(2, "ev"), wire.seal(batch(3, 1, 1)), qos=1)
        await gw.publish(topics.topic(2, "ev"), wire.seal(batch(2, 1, 4)), qos=1)
    await until(lambda: _count(sessions, models.Event) == 4, "4 events")
    await until(lambda: _count(sessions, models.Quarantine) == 2, "2 quarantined")
    with sessions() as s:
        reasons = sorted(s.scalars(select(models.Quarantine.reason)))
    assert reasons == ["gateway does not match topic", "indefinite length"]


async def test_will_marks_the_gateway_offline_at_once(
    mosquitto: int, sessions: sessionmaker[Session], workers: list[IngestWorker]
) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto, identifier="gw-sim") as gw:
        await gw.publish(topics.topic(3, "ev"), wire.seal(batch(3, 1, events=[heartbeat()])), qos=1)

        def status() -> str:
            with sessions() as s:
                h = s.get(models.GatewayHealth, 3)
                return h.status if h else "none"

        await until(lambda: status() == "online", "online")
        will = messages.Batch(3, 1, 0, 1_700_000_000_000, [messages.Event(codes.DEATH, 0, 0)])
        await gw.publish(topics.topic(3, "state"), wire.seal(will), qos=1)
        await until(lambda: status() == "offline", "offline")
    with sessions() as s:
        h = s.get(models.GatewayHealth, 3)
    assert h is not None
    assert h.reason == "broker delivered the will: connection lost"
    assert _count(sessions, models.Event) == 1


async def test_a_flush_comes_at_the_event_count_before_its_time(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    """flush_events reached: written at once; below it, nothing until flush_ms (here 60 s)."""
    with sessions() as s, s.begin():
        make_gateway(s, 1)
    settings = Settings(mqtt_port=mosquitto, flush_events=10, flush_ms=60_000)
    w = IngestWorker(settings, sessions, client_id="count", sweep=False)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(w.subscribed.wait(), WAIT_S)
    async with aiomqtt.Client("127.0.0.1", mosquitto, identifier="gw-sim") as gw:
        await gw.publish(topics.topic(1, "ev"), wire.seal(batch(1, 1, 6)), qos=1)
        await until(lambda: w.stats.messages == 1, "the first batch")
        await asyncio.sleep(0.5)
        assert (_count(sessions, models.Event), w.stats.flushes) == (0, 0)  # 6 < 10 events
        await gw.publish(topics.topic(1, "ev"), wire.seal(batch(1, 7, 4)), qos=1)
        await until(lambda: _count(sessions, models.Event) == 10, "10 events, by count")
    assert w.stats.flushes == 1
    stop.set()
    await asyncio.wait_for(task, WAIT_S)
