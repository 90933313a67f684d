"""Commands through the ingest workers, against a private Mosquitto and a real database:
automatic time syncs for clock-unsynced gateways (rate-limited across workers) and results
on ``el/v1/<gw>/res`` stored into their command rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest
from emberlink.cloud import commands, models
from emberlink.cloud.core.config import Settings
from emberlink.cloud.ingest.pipeline import now_ms
from emberlink.cloud.ingest.worker import IngestWorker
from emberlink.protocol import cbor, codes, messages, topics, wire
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, heartbeat, make_gateway, until

pytestmark = pytest.mark.broker
WAIT_S = 20  # every wait is bounded


def _settings(port: int, **kw: object) -> Settings:
    return Settings(mqtt_port=port, flush_events=100, flush_ms=50, sweep_interval_s=0.5, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def _workers(settings: Settings, sessions: sessionmaker[Session], n: int) -> AsyncIterator[
    list[IngestWorker]
]:  # fmt: skip
    stop = asyncio.Event()
    ws = [IngestWorker(settings, sessions, client_id=f"w{i}") for i in range(n)]
    tasks = [asyncio.create_task(w.run(stop)) for w in ws]
    try:
        for w in ws:
            await asyncio.wait_for(w.subscribed.wait(), WAIT_S)
        yield ws
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


@asynccontextmanager
async def _gateway_sim(port: int, gw: int) -> AsyncIterator[tuple[aiomqtt.Client, list[bytes]]]:
    """A client on the gateway's side that records what arrives on its cmd topic."""
    got: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"gw-sim-{gw}") as c:
        await c.subscribe(topics.topic(gw, "cmd"), qos=1)

        async def read() -> None:
            async for m in c.messages:
                got.append(bytes(m.payload))  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        try:
            yield c, got
        finally:
            reader.cancel()


def _commands(sessions: sessionmaker[Session], gw: int) -> list[models.Command]:
    with sessions() as s:
        C = models.Command
        return list(s.scalars(select(C).where(C.gateway_id == gw).order_by(C.id)))


UNSYNCED = codes.BF_CLOCK_UNSYNCED


async def test_unsynced_batches_get_one_time_sync_across_two_workers(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 1)
        make_gateway(s, 2)
    settings = _settings(mosquitto)  # the default 30 s interval
    async with (
        _workers(settings, sessions, 2) as ws,
        _gateway_sim(mosquitto, 1) as (gw, got),
        _gateway_sim(mosquitto, 2) as (_, got2),
    ):
        before = now_ms()
        # 12 batches, flagged unsynced, split by the shared subscription between both workers
        for i in range(12):
            b = batch(1, 1 + 3 * i, t0=1000 + i, flags=UNSYNCED)  # a clock near 1970
            await gw.publish(topics.topic(1, "ev"), wire.seal(b), qos=1)
            await asyncio.sleep(0.02)
        # gateway 2's clock is synchronised: it gets nothing
        await gw.publish(topics.topic(2, "ev"), wire.seal(batch(2, 1)), qos=1)
        await until(lambda: sum(w.stats.stored for w in ws) == 39, "39 events stored")
        await until(lambda: len(got) >= 1, "a time sync")
        await asyncio.sleep(0.5)  # room for a second (wrong) one to arrive
        after = now_ms()
        assert all(w.stats.messages > 0 for w in ws)  # both workers saw unsynced batches
    assert len(got) == 1 and got2 == []
    cmd = messages.command_from_map(cbor.loads(got[0]))
    assert (cmd.gw, cmd.op) == (1, messages.OP_TIME_SYNC)
    assert cmd.args is not None and before <= cmd.args[0] <= after
    (row,) = _commands(sessions, 1)
    assert row.id == cmd.id and row.who == "cloud" and row.status == "sent"
    assert row.args == {"utc_ms": cmd.args[0]} and row.sent_ms is not None
    assert sum(w.stats.time_syncs for w in ws) == 1
    assert _commands(sessions, 2) == []


async def test_time_sync_again_after_the_interval_and_not_for_duplicates(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 3)
    async with (
        _workers(_settings(mosquitto, time_sync_interval_s=1), sessions, 1) as (w,),
        _gateway_sim(mosquitto, 3) as (gw, got),
    ):
        first = wire.seal(batch(3, 1, flags=UNSYNCED))
        await gw.publish(topics.topic(3, "ev"), first, qos=1)
        await until(lambda: len(got) == 1, "the first sync")
        await asyncio.sleep(1.1)
        # a redelivered batch stores nothing: no sync for it
        await gw.publish(topics.topic(3, "ev"), first, qos=1)
        await until(lambda: w.stats.duplicates == 3, "the duplicate")
        await asyncio.sleep(0.2)
        assert len(got) == 1
        await gw.publish(topics.topic(3, "ev"), wire.seal(batch(3, 4, flags=UNSYNCED)), qos=1)
        await until(lambda: len(got) == 2, "a second sync after the interval")
    ids = [messages.command_from_map(cbor.loads(p)).id for p in got]
    assert [r.id for r in _commands(sessions, 3)] == ids


async def test_a_restarted_gateway_is_synced_at_once_inside_the_interval(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    """A birth flagged unsynced is a new boot (or a reconnect): it is synced at once, although
    the gateway's previous boot was synced a moment ago; plain unsynced events of that same
    boot right after are not synced again within the interval."""
    with sessions() as s, s.begin():
        make_gateway(s, 8)
    birth = messages.Event(codes.BIRTH, 0, 0, info={0: "edge 1.2.3", 3: 15})
    async with (
        _workers(_settings(mosquitto), sessions, 1) as (w,),  # the default 30 s interval
        _gateway_sim(mosquitto, 8) as (gw, got),
    ):
        b1 = batch(8, 1, boot=1, flags=UNSYNCED, events=[birth])
        await gw.publish(topics.topic(8, "ev"), wire.seal(b1), qos=1)
        await until(lambda: len(got) == 1, "boot 1's sync")
        b2 = batch(8, 1, boot=2, flags=UNSYNCED, events=[birth])  # kill -9, restart
        await gw.publish(topics.topic(8, "ev"), wire.seal(b2), qos=1)
        await until(lambda: len(got) == 2, "boot 2's sync, inside the interval")
        await gw.publish(
            topics.topic(8, "ev"), wire.seal(batch(8, 2, boot=2, flags=UNSYNCED)), qos=1
        )
        await until(lambda: w.stats.stored == 5, "the rest of boot 2")
        await asyncio.sleep(0.3)
    assert len(got) == 2
    assert [r.who for r in _commands(sessions, 8)] == ["cloud", "cloud"]


async def test_interval_zero_turns_the_automatic_sync_off(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 7)
    async with (
        _workers(_settings(mosquitto, time_sync_interval_s=0), sessions, 1) as (w,),
        _gateway_sim(mosquitto, 7) as (gw, got),
    ):
        await gw.publish(topics.topic(7, "ev"), wire.seal(batch(7, 1, flags=UNSYNCED)), qos=1)
        await until(lambda: w.stats.stored == 3, "the batch")
        await asyncio.sleep(0.3)
    assert got == [] and _commands(sessions, 7) == []


async def test_results_update_their_commands_and_bad_ones_are_skipped(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 4)
        make_gateway(s, 5)
        rows = [
            commands.create_command(
                session=s, gateway_id=4, op=op, args=args, who="op", now_ms=now_ms()
            )
            for op, args in (("reset", {"src": 7}), ("rebirth", {}))
        ]
        other = commands.create_command(
            session=s, gateway_id=5, op="rebirth", args={}, who="op", now_ms=now_ms()
        )
    a, b = (r.id for r in rows)
    async with (
        _workers(_settings(mosquitto), sessions, 2) as ws,
        aiomqtt.Client("127.0.0.1", mosquitto, identifier="gw-sim") as gw,
    ):
        res_topic = topics.topic(4, "res")
        bad = [
            b"\xff\x00",  # not CBOR
            cbor.dumps({0: 1, 1: 4, 9: a}),  # no result code
            messages.encode(messages.Result(5, b, 0)),  # says gateway 5 on gateway 4's topic
            messages.encode(messages.Result(4, 999_999, 0)),  # unknown command id
            messages.encode(messages.Result(4, other.id, 0)),  # another gateway's command
        ]
        for p in bad:
            await gw.publish(res_topic, p, qos=1)
        await gw.publish(res_topic, messages.encode(messages.Result(4, a, 0, "3 points")), qos=1)
        await gw.publish(
            res_topic, messages.encode(messages.Result(4, b, messages.RES_FAILED, "busy")), qos=1
        )
        # the workers go on ingesting
        await gw.publish(topics.topic(4, "ev"), wire.seal(batch(4, 1, events=[heartbeat()])), 1)
        await until(lambda: sum(w.stats.results for w in ws) == 2, "2 results")
        await until(lambda: sum(w.stats.results_ignored for w in ws) == 5, "5 ignored")
        await until(lambda: sum(w.stats.stored for w in ws) == 1, "the heartbeat")
    got = {r.id: r for r in _commands(sessions, 4)}
    assert (got[a].status, got[a].result, got[a].note) == ("answered", "ok", "3 points")
    assert (got[b].status, got[b].result, got[b].note) == ("answered", "failed", "busy")
    assert got[a].result_ms is not None
    (o,) = _commands(sessions, 5)
    assert o.result is None and o.status == "pending"


async def test_plain_subscription_syncs_and_stores_results(
    mosquitto: int, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 6)
    settings = _settings(mosquitto, mqtt_shared_subscription=False)
    async with (
        _workers(settings, sessions, 1) as (w,),
        _gateway_sim(mosquitto, 6) as (gw, got),
    ):
        await gw.publish(topics.topic(6, "ev"), wire.seal(batch(6, 1, flags=UNSYNCED)), qos=1)
        await until(lambda: len(got) == 1, "a time sync")
        cmd = messages.command_from_map(cbor.loads(got[0]))
        await gw.publish(topics.topic(6, "res"), messages.encode(messages.Result(6, cmd.id, 0)), 1)
        await until(lambda: w.stats.results == 1, "the result")
    (row,) = _commands(sessions, 6)
    assert (row.status, row.result) == ("answered", "ok")
