"""The MQTT ingest worker: a shared subscription in, acks out after each commit.

Several workers (processes) subscribe to ``$share/emberlink-ingest/el/v1/+/ev`` and split the
load (with ``mqtt_shared_subscription`` off, one worker subscribes to ``el/v1/+/ev``). Each
buffers decoded batches and flushes them in one transaction when ``flush_events`` are waiting
or ``flush_ms`` has passed, in a thread so that the MQTT link keeps being served.
The ack (the contiguous high-water mark) is published only after the commit.

Commands: the worker also subscribes to ``el/v1/+/res`` (shared the same way) and stores each
gateway's Result into its command row. A flush that stored events flagged clock-unsynced sends
that gateway a time sync (``OP_TIME_SYNC`` with our UTC ms, QoS 1), at most once per
``time_sync_interval_s``: a per-worker memory skips the database within the interval, and
``commands.claim_time_sync`` (a conditional UPDATE) makes one worker of several the sender.

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
from emberlink.protocol.errors import ProtocolError
from sqlalchemy.orm import Session, sessionmaker

from .. import commands, models
from ..core.config import Settings, mqtt_client_options
from ..health import HealthPolicy
from .pipeline import FlushResult, Ingestor, now_ms
from .store import run_sweep

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0  # after a failed flush or a lost broker connection
LOGIN_RETRY_MAX_S = 30.0  # a refused login is retried with backoff up to this (files may change)
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135).
LOGIN_REFUSED = (4, 5, 134, 135)
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
    time_syncs: int = 0  # automatic time syncs this worker sent
    results: int = 0  # command results stored
    results_ignored: int = 0  # malformed, or for an unknown command
    login_refused: int = 0  # connection attempts the broker refused for our login
    last_error: str = ""  # why the last broker session ended (or never started)
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
        self._time_synced: dict[int, float] = {}  # gw -> monotonic time of our last claim

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or forever), reconnecting after broker failures."""
        stop = stop or asyncio.Event()
        refused = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                refused = 0
            except aiomqtt.MqttError as e:
                self.subscribed.clear()
                self.stats.last_error = str(e) or type(e).__name__
                if _login_refused(e):
                    # Not a glitch: a wrong or missing login stays wrong until someone fixes the
                    # settings or the broker's password file. Say so loudly, keep trying (slower).
                    refused += 1
                    self.stats.login_refused += 1
                    delay = min(RETRY_DELAY_S * 2 ** (refused - 1), LOGIN_RETRY_MAX_S)
                    user = self.settings.mqtt_username
                    log.error(
                        "broker %s:%d refused the login of %s: %s; check EMBERLINK_MQTT_USERNAME"
                        " / EMBERLINK_MQTT_PASSWORD and the broker's password file (retry %d"
                        " in %.0f s)",
                        self.settings.mqtt_host,
                        self.settings.mqtt_port,
                        f"user {user!r}" if user else "an anonymous client",
                        self.stats.last_error,
                        refused,
                        delay,
                    )
                    await _sleep_or_stop(stop, delay)
                    continue
                refused = 0
                log.warning("broker connection lost: %s; reconnecting", e)
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
            **mqtt_client_options(self.settings),
        ) as client:
            shared = self.settings.mqtt_shared_subscription
            leaves = (topics.EVENTS, topics.STATE, topics.RESULT)
            filters = [topics.subscription(leaf, shared=shared) for leaf in leaves]
            await client.subscribe([(f, topics.QOS) for f in filters])
            self.subscribed.set()
            log.info("%s subscribed to %s", self.client_id, ", ".join(filters))
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
            if msg.topic.value.endswith("/" + topics.RESULT):
                await self._on_result(msg.topic.value, payload)
                continue
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
            for gw in res.unsynced:
                await self._time_sync(client, gw, reborn=gw in res.reborn)
            return res

    async def _time_sync(self, client: aiomqtt.Client, gw: int, reborn: bool = False) -> None:
        """Send ``gw`` our UTC ms unless it was synced within the interval (by any worker); a
        gateway whose unsynced events include a birth has just started a boot (or reconnected)
        and is synced at once: it must not show a wrong clock for a whole interval."""
        interval_s = self.settings.time_sync_interval_s
        if interval_s == 0:
            return  # turned off
        t = time.monotonic()
        last = self._time_synced.get(gw)
        if not reborn and last is not None and t - last < interval_s:
            return
        self._time_synced[gw] = t
        try:
            row = await asyncio.to_thread(
                self._claim_time_sync, gw, 0 if reborn else interval_s * 1000
            )
        except Exception:
            log.exception("could not record a time sync for gateway %d", gw)
            return
        if row is None:
            return  # another worker sent one within the interval
        try:
            await client.publish(
                topics.topic(gw, topics.COMMAND),
                messages.encode(commands.message(row)),
                qos=topics.QOS,
            )
        except aiomqtt.MqttError as e:
            await asyncio.to_thread(self._mark, row.id, str(e) or "publish failed")
            raise
        self.stats.time_syncs += 1
        log.info("gateway %d sends clock-unsynced events: time sync %d sent", gw, row.id)
        try:
            await asyncio.to_thread(self._mark, row.id, None)
        except Exception:
            log.exception("could not mark time sync %d sent", row.id)

    def _claim_time_sync(self, gw: int, interval_ms: int) -> models.Command | None:
        with self.sessions() as s, s.begin():
            return commands.claim_time_sync(
                session=s, gateway_id=gw, now_ms=now_ms(), interval_ms=interval_ms
            )

    def _mark(self, command_id: int, error: str | None) -> None:
        with self.sessions() as s, s.begin():
            if error is None:
                commands.mark_sent(session=s, command_id=command_id, now_ms=now_ms())
            else:
                commands.mark_send_failed(session=s, command_id=command_id, error=error)

    async def _on_result(self, topic: str, payload: bytes) -> None:
        """Store a gateway's command Result; anything wrong is logged and skipped."""
        try:
            res = commands.decode_result(topic, payload)
        except (ProtocolError, ValueError) as e:
            self.stats.results_ignored += 1
            log.warning("ignored result on %r: %s", topic[:200], e)
            return
        try:
            why = await asyncio.to_thread(self._store_result, res)
        except Exception:
            # The database is unreachable, say: the result is lost (the command row stays
            # "sent"); ingest goes on.
            self.stats.results_ignored += 1
            log.exception("could not store result of command %d (gateway %d)", res.id, res.gw)
            return
        if why is not None:
            self.stats.results_ignored += 1
            log.warning("ignored result on %r: %s", topic[:200], why)
        else:
            self.stats.results += 1

    def _store_result(self, res: messages.Result) -> str | None:
        with self.sessions() as s, s.begin():
            return commands.store_result(session=s, result=res, now_ms=now_ms())

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


def _login_refused(e: aiomqtt.MqttError) -> bool:
    rc = getattr(e, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(value, int) and value in LOGIN_REFUSED


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
