"""The MQTT uplink (aiomqtt 2.x): outbox batches out at QoS 1, the cloud's acks and commands in.

Session rules (protocol/topics.py):

* The will is a batch with one DEATH event (condition connection_lost) and seq0 = 0, retained on
  ``el/v1/<gw>/state``; the broker sends it when the link dies. On each connect the gateway
  stores a BIRTH event in the outbox and publishes it retained on the same topic, so the
  retained state is always the latest birth or death.
* Batches go to ``el/v1/<gw>/ev``. A record is deleted after the broker's PUBACK, or, with
  ``cloud_ack``, after the cloud's Ack (``el/v1/<gw>/ack``) covers it; unacked batches are sent
  again after ``cloud_ack_timeout_s``, alarm-lane batches after ``cloud_ack_alarm_timeout_s``
  (2 s), and only the late lane is sent again.
* Every publish has a PUBACK deadline (``puback_timeout_s``). The health heartbeat goes through
  the outbox every ``heartbeat_s``, so a link that dies silently (aiomqtt does not always notice:
  issues #326, #381) misses a deadline within heartbeat + deadline and is torn down.
* Reconnects back off exponentially with full jitter, from backoff_min_s to backoff_max_s.
* The alarm lane has a publish slot of its own, and while it is busy no telemetry batch starts:
  a fire alarm never waits behind telemetry, not even behind a backlog after an outage.
* Commands (``el/v1/<gw>/cmd``): rebirth, time sync, resend from a sequence number; each gets a
  Result on ``el/v1/<gw>/res``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TextIO

import aiomqtt
from emberlink.protocol import cbor, codes, messages, topics, wire
from emberlink.protocol.errors import ProtocolError
from emberlink.protocol.messages import Batch, Event

from .config import MqttConfig
from .errors import UplinkError
from .outbox import ALARM_LANE, BULK_LANE, Outbox, Pending

log = logging.getLogger("emberlink.uplink")

OP_RESEND = messages.OP_RESEND  # args {0: seq, ?1: boot}
CONNECT_TIMEOUT_S = 10.0  # a broker that does not CONNACK in 10 s is treated as down
ALARM_QUICK_RESENDS = 3  # alarm-lane resends at cloud_ack_alarm_timeout_s before it doubles


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


class Uplink:
    """Owns the MQTT connection; ``run()`` until cancelled, ``wake()`` when the outbox grows."""

    def __init__(
        self,
        cfg: MqttConfig,
        gw: int,
        outbox: Outbox,
        *,
        birth_info: Callable[[], dict[int, Any]],
        now_ms: Callable[[], int],
        on_time_sync: Callable[[int], None] | None = None,
        on_rebirth: Callable[[], None] | None = None,
        on_command: Callable[[int, dict[int, int]], tuple[int, str | None]] | None = None,
        batch_max_events: int = 256,
        inflight: int = 4,
        client_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.gw = gw
        self.outbox = outbox
        self.birth_info = birth_info
        self.now_ms = now_ms
        self.on_time_sync = on_time_sync
        self.on_rebirth = on_rebirth
        self.on_command = on_command  # every other op: (result code, note)
        self.batch_max_events = batch_max_events
        self.inflight = max(2, inflight)
        self.client_id = client_id or f"emberlink-gw-{gw}"
        self.state = LinkState.DISCONNECTED
        self.connects = 0
        self.published = 0
        self.acked_hwm: dict[int, int] = {}
        self.last_puback_ms = 0
        # benchmark hook: "boot seq monotonic_s" per record at PUBACK (CLOCK_MONOTONIC is
        # system-wide on Linux, so another process can match it to a register change)
        self.puback_log: TextIO | None = None
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._awaiting_cloud: dict[tuple[int, int], tuple[Pending, float]] = {}
        self._alarm_resends = 0  # alarm-lane resends since the cloud's ack last moved on

    def wake(self) -> None:
        self._wake.set()

    # --- connection ------------------------------------------------------------------------------
    def _will(self) -> aiomqtt.Will:
        death = Batch(
            self.gw,
            self.outbox.boot,
            0,
            self.now_ms(),
            [Event(codes.DEATH, 0, 0, code=102)],  # connection_lost
        )
        return aiomqtt.Will(
            topics.topic(self.gw, "state"), wire.seal(death, self.cfg.mac_key), qos=1, retain=True
        )

    def _make_client(self) -> aiomqtt.Client:
        tls = None
        if self.cfg.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=self.cfg.ca_file, certfile=self.cfg.cert_file, keyfile=self.cfg.key_file
            )
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=self.cfg.password,
            identifier=self.client_id,
            will=self._will(),
            keepalive=self.cfg.keepalive_s,
            timeout=CONNECT_TIMEOUT_S,
            tls_params=tls,
            clean_session=True,
        )

    async def run(self) -> None:
        """Connect, serve the session, reconnect with backoff; forever until cancelled."""
        backoff = self.cfg.backoff_min_s
        while True:
            self.state = LinkState.CONNECTING
            started = time.monotonic()
            try:
                client = self._make_client()
                async with client:
                    self._client = client
                    self.state = LinkState.CONNECTED
                    self.connects += 1
                    log.info("connected to %s:%s", self.cfg.host, self.cfg.port)
                    await self._session(client)
            except (aiomqtt.MqttError, UplinkError, OSError, TimeoutError) as e:
                log.warning("uplink: %s", e)
            finally:
                self._client = None
                self.state = LinkState.DISCONNECTED
                self.outbox.requeue_all()
                self._awaiting_cloud.clear()
            if time.monotonic() - started > 60:
                backoff = self.cfg.backoff_min_s  # the session was healthy: start over
            delay = random.uniform(0, backoff)  # full jitter: a fleet does not reconnect in step
            backoff = min(backoff * 2, self.cfg.backoff_max_s)
            await asyncio.sleep(max(delay, self.cfg.backoff_min_s / 2))

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(topics.topic(self.gw, "cmd"), qos=1)
        if self.cfg.cloud_ack:
            await client.subscribe(topics.topic(self.gw, "ack"), qos=1)
        await self.publish_birth(client)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client))
                tg.create_task(self._send(client))
                if self.cfg.cloud_ack:
                    tg.create_task(self._cloud_ack_watch())
        except ExceptionGroup as eg:  # one task failed and the others were cancelled
            raise eg.exceptions[0] from eg

    async def publish_birth(self, client: aiomqtt.Client) -> None:
        ev = Event(codes.BIRTH, 0, 0, info=self.birth_info())
        t = self.now_ms()
        seq = self.outbox.append(ev, t)
        birth = Batch(self.gw, self.outbox.boot, seq, t, [ev])
        await client.publish(
            topics.topic(self.gw, "state"),
            wire.seal(birth, self.cfg.mac_key),
            qos=1,
            retain=True,
            timeout=self.cfg.puback_timeout_s,
        )
        self.wake()

    async def publish_death(self, code: int = 101) -> bool:
        """Clean shutdown: the death goes retained on the state topic (and into the outbox)."""
        client = self._client
        ev = Event(codes.DEATH, 0, 0, code=code)
        t = self.now_ms()
        seq = self.outbox.append(ev, t)
        if client is None:
            return False
        batch = Batch(self.gw, self.outbox.boot, seq, t, [ev])
        try:
            await client.publish(
                topics.topic(self.gw, "state"),
                wire.seal(batch, self.cfg.mac_key),
                qos=1,
                retain=True,
                timeout=self.cfg.puback_timeout_s,
            )
        except aiomqtt.MqttError as e:
            log.warning("death not published: %s", e)
            return False
        return True

    # --- sending ---------------------------------------------------------------------------------
    async def _send(self, client: aiomqtt.Client) -> None:
        bulk_slots = asyncio.Semaphore(self.inflight - 1)
        alarm_slot = asyncio.Semaphore(1)  # reserved: alarms never wait for a telemetry slot
        failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        tasks: set[asyncio.Task[None]] = set()

        async def publish(p: Pending, slot: asyncio.Semaphore) -> None:
            try:
                ackd = self.acked_hwm.get(p.boot)
                if ackd is not None and ackd != p.batch.ackd:
                    p.batch.ackd = ackd
                await client.publish(
                    topics.topic(self.gw, "ev"),
                    wire.seal(p.batch, self.cfg.mac_key),
                    qos=1,
                    timeout=self.cfg.puback_timeout_s,
                )
                self._on_puback(p)
            except Exception as e:  # any failure ends the session; the outbox keeps the records
                if not failed.done():
                    failed.set_result(e)
            finally:
                slot.release()
                self.wake()

        try:
            while not failed.done():
                self._wake.clear()
                started = False
                if not alarm_slot.locked():
                    p = self.outbox.next_batch(ALARM_LANE, self.gw, self.batch_max_events)
                    if p is not None:
                        await alarm_slot.acquire()
                        tasks.add(asyncio.create_task(publish(p, alarm_slot)))
                        started = True
                # Strict priority: while the alarm lane has a batch in flight (and so, possibly,
                # more queued behind it), telemetry waits. After an outage the queued faults and
                # the fire alarm behind them all go before the backlog, one PUBACK each, rather
                # than sharing the link with it.
                if not bulk_slots.locked() and not alarm_slot.locked():
                    p = self.outbox.next_batch(BULK_LANE, self.gw, self.batch_max_events)
                    if p is not None:
                        await bulk_slots.acquire()
                        tasks.add(asyncio.create_task(publish(p, bulk_slots)))
                        started = True
                tasks = {t for t in tasks if not t.done()}
                if not started:
                    waiter: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
                    either: list[asyncio.Future[Any]] = [waiter, failed]
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
            raise UplinkError(f"publish failed: {failed.result()}")
        finally:
            for t in tasks:
                t.cancel()

    def _on_puback(self, p: Pending) -> None:
        self.published += 1
        self.last_puback_ms = self.now_ms()
        if self.puback_log is not None:
            mono = time.monotonic()
            for s in range(p.seqs[0], p.seqs[1] + 1):
                self.puback_log.write(f"{p.boot} {s} {mono:.6f}\n")
            self.puback_log.flush()
        if self.cfg.cloud_ack:
            self._awaiting_cloud[(p.boot, p.seqs[1])] = (p, time.monotonic())
        else:
            self.outbox.acknowledge(p)

    def _cloud_ack_limit_s(self, lane: int) -> float:
        """How long a batch of ``lane`` waits for the cloud's ack. The alarm lane's short wait
        doubles after the first ALARM_QUICK_RESENDS resends without progress (up to the bulk
        lane's): a cloud that is down gets the alarm again within seconds when it is back, a
        cloud that keeps refusing a batch is not sent it every 2 s forever."""
        if lane == ALARM_LANE:
            extra = max(0, self._alarm_resends - ALARM_QUICK_RESENDS)
            quick = self.cfg.cloud_ack_alarm_timeout_s * 2 ** min(extra, 16)
            return min(quick, self.cfg.cloud_ack_timeout_s)
        return self.cfg.cloud_ack_timeout_s

    async def _cloud_ack_watch(self) -> None:
        tick = min(5.0, self._cloud_ack_limit_s(ALARM_LANE) / 4, self.cfg.cloud_ack_timeout_s / 2)
        while True:
            await asyncio.sleep(tick)
            self.resend_late(time.monotonic())

    def resend_late(self, now: float) -> list[int]:
        """Queue again, per lane, what the cloud has not acked in that lane's time limit; the
        lanes sent again."""
        late: dict[int, list[tuple[int, int]]] = {}
        for k, (p, t) in self._awaiting_cloud.items():
            if now - t > self._cloud_ack_limit_s(p.lane):
                late.setdefault(p.lane, []).append(k)
        for lane, keys in sorted(late.items()):
            log.warning("no cloud ack for %d %s batches: sending them again", len(keys),
                        "alarm" if lane == ALARM_LANE else "bulk")  # fmt: skip
            first = min(self._awaiting_cloud[k][0].keys[0] for k in keys)
            for k in keys:
                del self._awaiting_cloud[k]
            self.outbox.resend_from(*first, lanes=(lane,))
            if lane == ALARM_LANE:
                self._alarm_resends += 1
        if late:
            self.wake()
        return sorted(late)

    # --- receiving -------------------------------------------------------------------------------
    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            try:
                leaf = topics.parse(str(msg.topic))[1]
                if leaf == "ack":
                    self._on_ack(messages.decode_ack(payload))
                elif leaf == "cmd":
                    await self._on_command(client, payload)
            except (ProtocolError, ValueError) as e:
                log.warning("refused %s message: %s", msg.topic, e)

    def _on_ack(self, ack: messages.Ack) -> None:
        if ack.gw != self.gw:
            log.warning("ack for gateway %s on our topic: ignored", ack.gw)
            return
        n = self.outbox.acknowledge_upto(ack.boot, ack.hwm)
        if ack.hwm > self.acked_hwm.get(ack.boot, 0):
            self._alarm_resends = 0  # the cloud stores again: back to quick alarm resends
        self.acked_hwm[ack.boot] = max(ack.hwm, self.acked_hwm.get(ack.boot, 0))
        for k in [k for k in self._awaiting_cloud if k[0] == ack.boot and k[1] <= ack.hwm]:
            del self._awaiting_cloud[k]
        log.debug("cloud ack boot %d hwm %d: %d records deleted", ack.boot, ack.hwm, n)

    async def _on_command(self, client: aiomqtt.Client, payload: bytes) -> None:
        try:
            cmd = messages.command_from_map(cbor.loads(payload))
        except ProtocolError as e:
            log.warning("refused command: %s", e)
            return
        if cmd.gw != self.gw:
            return
        args = cmd.args or {}
        res, note = messages.RES_OK, None
        if cmd.op == messages.OP_REBIRTH:
            await self.publish_birth(client)
            if self.on_rebirth:
                self.on_rebirth()
        elif cmd.op == messages.OP_TIME_SYNC:
            if 0 not in args or args[0] <= 0:
                res, note = messages.RES_BAD_ARGS, "args {0: UTC ms} required"
            elif self.on_time_sync:
                self.on_time_sync(int(args[0]))
        elif cmd.op == OP_RESEND:
            if 0 not in args or args[0] < 1:
                res, note = messages.RES_BAD_ARGS, "args {0: seq, ?1: boot} required"
            else:
                self.outbox.resend_from(int(args.get(1, self.outbox.boot)), int(args[0]))
                self.wake()
        elif self.on_command is not None:
            res, note = self.on_command(cmd.op, dict(args))
        else:
            res, note = messages.RES_UNKNOWN_OP, f"op {cmd.op} not supported by this gateway"
        result = messages.Result(self.gw, cmd.id, res, note)
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(
                topics.topic(self.gw, "res"), messages.encode(result), qos=1,
                timeout=self.cfg.puback_timeout_s,
            )  # fmt: skip
