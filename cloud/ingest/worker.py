"""The MQTT ingest worker: a shared subscription in, acks out after each commit.

Several workers (processes) subscribe to ``$share/emberlink-ingest/el/v1/+/ev`` and split the
load (with ``mqtt_shared_subscription`` off, one worker subscribes to ``el/v1/+/ev``). Each
buffers decoded batches and flushes them in one transaction when ``flush_events`` are waiting
or ``flush_ms`` has passed, in a thread so that the MQTT link keeps being served.
The ack (the contiguous high-water mark) is published only after the commit.

paho acknowledges a QoS 1 delivery when it arrives, before our commit; if the worker dies in
between, the events are not lost: the gateway keeps them in its outbox until our application
ack and sends them again (dedup makes the second copy harmless).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import aiomqtt
from emberlink.protocol import messages, topics
from sqlalchemy.orm import Session, sessionmaker

from ..core.config import Settings
from ..health import HealthPolicy
from .pipeline import FlushResult, Ingestor, now_ms
from .store import run_sweep

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0  # after a failed flush or a lost broker connection
BACKLOG_FACTOR = 10  # stop reading from the broker while this many flushes' worth waits


@dataclass
class WorkerStats:
    messages: int = 0
    quarantined: int = 0
    dropped: int = 0  # not checked (registry unreachable) and not acked: the gateway resends
    stored: int = 0
    duplicates: int = 0
    acks: int = 0
    flushes: int = 0
    transitions: int = 0
    started: float = field(default_factory=time.monotonic)


class IngestWorker:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        client_id: str | None = None,
        sweep: bool = True,
    ) -> None:
        self.settings = settings
        self.policy = HealthPolicy.from_settings(settings)
        self.ingestor = Ingestor(
            sessions, policy=self.policy, late_after_ms=settings.late_after_s * 1000
        )
        self.sessions = sessions
        self.client_id = client_id or f"{settings.mqtt_client_prefix}-{os.getpid()}"
        self.sweep = sweep
        self.stats = WorkerStats()
        self.subscribed = asyncio.Event()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or forever), reconnecting after broker failures."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self._session(stop)
            except aiomqtt.MqttError as e:
                log.warning("broker connection lost: %s; reconnecting", e)
                self.subscribed.clear()
                await _sleep_or_stop(stop, RETRY_DELAY_S)
            except Exception:
                # The database is down, say: keep the process and try again. Nothing is lost:
                # what was not committed was not acked, and the gateways send it again.
                log.exception("ingest session failed; restarting it")
                self.subscribed.clear()
                await _sleep_or_stop(stop, RETRY_DELAY_S)

    async def _session(self, stop: asyncio.Event) -> None:
        async with aiomqtt.Client(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            identifier=self.client_id,
            clean_session=True,  # shared-subscription consumers must not queue while away
        ) as client:
            shared = self.settings.mqtt_shared_subscription
            filters = [topics.subscription(leaf, shared=shared) for leaf in ("ev", "state")]
            await client.subscribe([(f, topics.QOS) for f in filters])
            self.subscribed.set()
            log.info("%s subscribed to %s", self.client_id, " and ".join(filters))
            tasks = [
                asyncio.create_task(self._consume(client)),
                asyncio.create_task(self._flusher(client, stop)),
            ]
            if self.sweep:
                tasks.append(asyncio.create_task(self._sweeper(stop)))
            stopper = asyncio.create_task(stop.wait())
            try:
                done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stopper and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                for t in [*tasks, stopper]:
                    t.cancel()
                await asyncio.gather(*tasks, stopper, return_exceptions=True)
                await self.flush(client)  # what was accepted is written before leaving

    async def _consume(self, client: aiomqtt.Client) -> None:
        limit = self.settings.flush_events * BACKLOG_FACTOR
        async for msg in client.messages:
            payload = (
                msg.payload if isinstance(msg.payload, bytes) else bytes(str(msg.payload), "utf-8")
            )
            self.stats.messages += 1
            try:
                reason = self.ingestor.accept(msg.topic.value, payload, retained=bool(msg.retain))
            except Exception:
                # Only the registry lookup can fail here (the database is unreachable): drop the
                # message unacknowledged; the gateway keeps it and sends it again.
                log.exception("could not check %s against the registry; dropped unacked", msg.topic)
                self.stats.dropped += 1
                await asyncio.sleep(RETRY_DELAY_S / 10)
                continue
            if reason is not None:
                self.stats.quarantined += 1
            if self.ingestor.pending_events >= self.settings.flush_events:
                self._wake.set()
                while self.ingestor.pending_events >= limit:
                    await asyncio.sleep(0.01)

    async def _flusher(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        period = self.settings.flush_ms / 1000
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush(client)
            except aiomqtt.MqttError:
                raise
            except Exception:
                log.exception("flush failed; keeping the buffer and retrying")
                await _sleep_or_stop(stop, RETRY_DELAY_S)

    async def flush(self, client: aiomqtt.Client) -> FlushResult:
        async with self._flush_lock:
            buf = self.ingestor.take()
            try:
                res = await asyncio.to_thread(self.ingestor.write, buf)
            except Exception:
                self.ingestor.put_back(buf)
                raise
            self.stats.flushes += 1
            self.stats.stored += res.stored
            self.stats.duplicates += res.duplicates
            # Committed: now the gateways may forget these events.
            for ack in res.acks:
                await client.publish(
                    topics.topic(ack.gw, "ack"), messages.encode(ack), qos=topics.QOS
                )
            self.stats.acks += len(res.acks)
            return res

    async def _sweeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _sleep_or_stop(stop, self.settings.sweep_interval_s)
            try:
                self.stats.transitions += await asyncio.to_thread(self.sweep_once)
            except Exception:
                log.exception("health sweep failed")

    def sweep_once(self) -> int:
        with self.sessions() as s, s.begin():
            return run_sweep(session=s, now_ms=now_ms(), policy=self.policy)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
