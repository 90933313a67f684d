"""The ingest pipeline, without I/O to the broker: payloads in, stored rows and acks out.

``Ingestor.accept(topic, payload)`` decodes, authenticates and buffers one message (or
quarantines it with the reason); ``Ingestor.flush()`` writes everything buffered in one
transaction and returns the acks to publish, which the caller publishes only after the commit
succeeded. The MQTT worker and the HTTP endpoint both drive this class, so one pipeline serves
both.

Exactly once: the events table is unique on (gateway_id, boot, seq) and every insert is
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the keys that were new, so a duplicate (a
redelivery, a replay, the same batch handled by two workers at once) is stored once and its
side effects (alarms, device liveness) happen once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emberlink.protocol import codes, mac, messages, topics, wire
from emberlink.protocol.errors import MAC_MALFORMED, MacError, ProtocolError
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .. import models
from ..health import HealthPolicy
from . import store

log = logging.getLogger(__name__)

# Quarantine reasons of our own (protocol errors bring theirs in ``.reason``).
R_BAD_TOPIC = "bad topic"
R_UNKNOWN_GATEWAY = "unknown gateway"
R_GW_MISMATCH = "gateway does not match topic"
R_BAD_WILL = "bad will message"
R_TIME = "event time out of range"
R_STORE = "refused by the database"
R_INGEST = "ingest error"  # an unexpected error (a bug, an overflow) while writing the batch

MAX_T_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: later times are not real clocks

REGISTRY_TTL_S = 10.0  # a changed MAC key or heartbeat override reaches workers this fast
FLUSH_RETRIES = 3  # a PostgreSQL deadlock between workers aborts one flush; it is retried


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class GatewayInfo:
    id: int
    mac_key: bytes | None
    heartbeat_s: int | None
    offline_after_misses: int | None
    # MAC keys of a rotation the gateway redeemed but has not confirmed yet (see
    # ``Ingestor._open``); read only on a MAC failure, so empty in cached entries.
    pending_keys: tuple[bytes, ...] = ()


@dataclass
class Accepted:
    """A decoded, authenticated batch waiting for the next flush."""

    topic: str
    leaf: str
    batch: messages.Batch
    received_ms: int
    retained: bool = False
    source: str = "mqtt"
    payload: bytes = b""


@dataclass
class Buffered:
    batches: list[Accepted]
    quarantine: list[dict[str, Any]]


@dataclass
class FlushResult:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    acks: list[messages.Ack] = field(default_factory=list)
    # Gateways that sent newly stored events flagged clock-unsynced: the worker syncs them.
    unsynced: list[int] = field(default_factory=list)
    # Of those, the ones whose unsynced events include a birth: a gateway just (re)started, so
    # it is synced at once, whatever the rate limit says (births are one per boot or reconnect).
    reborn: list[int] = field(default_factory=list)


class GatewayCache:
    """Registry lookups (MAC key, health overrides) cached for REGISTRY_TTL_S."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = REGISTRY_TTL_S) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._cache: dict[int, tuple[float, GatewayInfo | None]] = {}

    def get(self, gw: int, session: Session | None = None) -> GatewayInfo | None:
        """``session``: read through the caller's open transaction. Inside a write transaction
        this is required on SQLite, where every transaction takes the write lock (BEGIN
        IMMEDIATE): a second connection would wait for our own lock until busy_timeout."""
        hit = self._cache.get(gw)
        t = time.monotonic()
        if hit is not None and t - hit[0] < self._ttl_s:
            return hit[1]
        if session is not None:
            info = self._lookup(session, gw)
        else:
            with self._sessions() as s:
                info = self._lookup(s, gw)
        self._cache[gw] = (t, info)
        return info

    def reload(self, gw: int) -> GatewayInfo | None:
        """Read ``gw`` from the database now, whatever the cache holds, with the MAC keys of
        its pending (redeemed, unconfirmed) rotation; the cache keeps the fresh entry."""
        with self._sessions() as s:
            info = self._lookup(s, gw, pending=True)
        self._cache[gw] = (time.monotonic(), info)
        return info

    @staticmethod
    def _lookup(session: Session, gw: int, *, pending: bool = False) -> GatewayInfo | None:
        row = session.get(models.Gateway, gw)
        if row is None:
            return None
        keys: tuple[bytes, ...] = ()
        if pending:
            c = models.GatewayCredential
            q = (
                select(c.mac_key)
                .where(
                    c.gateway_id == gw,
                    c.revoked_ms.is_(None),
                    c.confirmed_ms.is_(None),
                    c.mac_key.is_not(None),
                )
                .order_by(c.id.desc())
            )
            keys = tuple(k for k in session.scalars(q) if k is not None and k != row.mac_key)
        return GatewayInfo(row.id, row.mac_key, row.heartbeat_s, row.offline_after_misses, keys)

    def forget(self) -> None:
        self._cache.clear()


class Ingestor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        policy: HealthPolicy | None = None,
        late_after_ms: int = 120_000,
        clock: Callable[[], int] = now_ms,
        registry_ttl_s: float = REGISTRY_TTL_S,
    ) -> None:
        self._sessions = sessions
        self.policy = policy or HealthPolicy()
        self.late_after_ms = late_after_ms
        self.clock = clock
        self.gateways = GatewayCache(sessions, registry_ttl_s)
        self._pending: list[Accepted] = []
        self._pending_events = 0
        self._quarantine: list[dict[str, Any]] = []

    # ---- accept -----------------------------------------------------------------------------

    @property
    def pending_events(self) -> int:
        return self._pending_events + len(self._quarantine)

    def accept(
        self, topic: str, payload: bytes, *, source: str = "mqtt", retained: bool = False
    ) -> str | None:
        """Decode and buffer one message. Returns None, or the quarantine reason."""
        received = self.clock()
        gw: int | None = None
        try:
            gw, leaf = topics.parse(topic)
        except ValueError as e:
            return self._quarantined(received, source, topic, None, R_BAD_TOPIC, str(e), payload)
        if leaf not in (topics.EVENTS, topics.STATE):
            return self._quarantined(
                received, source, topic, gw, R_BAD_TOPIC, f"ingest does not take {leaf!r}", payload
            )
        info = self.gateways.get(gw)
        if info is None:
            return self._quarantined(
                received,
                source,
                topic,
                gw,
                R_UNKNOWN_GATEWAY,
                f"gateway {gw} is not registered",
                payload,
            )
        try:
            batch = self._open(gw, info, payload)
        except ProtocolError as e:
            return self._quarantined(received, source, topic, gw, e.reason, str(e), payload)
        except Exception as e:  # a decoder bug must not stop the worker either
            log.exception("decoder failed on %s", topic)
            return self._quarantined(
                received, source, topic, gw, "decoder error", repr(e)[:500], payload
            )
        if batch.gw != gw:
            return self._quarantined(
                received,
                source,
                topic,
                gw,
                R_GW_MISMATCH,
                f"batch says gateway {batch.gw}, topic says {gw}",
                payload,
            )
        if leaf == topics.STATE:
            kinds = [e.kind for e in batch.events]
            if batch.seq0 == 0 and kinds != [codes.DEATH]:
                return self._quarantined(
                    received,
                    source,
                    topic,
                    gw,
                    R_BAD_WILL,
                    "seq0 = 0 is reserved for a will holding one death event",
                    payload,
                )
        elif batch.seq0 == 0:
            return self._quarantined(
                received, source, topic, gw, R_BAD_WILL, "seq0 = 0 on the event topic", payload
            )
        last_t = batch.t0 + max(e.dt for e in batch.events)
        if last_t > MAX_T_MS:
            return self._quarantined(
                received,
                source,
                topic,
                gw,
                R_TIME,
                f"t0 + dt = {last_t} ms is after 9999",
                payload,
            )
        self._pending.append(
            Accepted(topic, leaf, batch, received, retained, source, bytes(payload))
        )
        self._pending_events += len(batch.events)
        return None

    def _open(self, gw: int, info: GatewayInfo, payload: bytes) -> messages.Batch:
        """Open a batch with the gateway's MAC key. A MAC failure may be our cache's fault, not
        the sender's: a gateway that just rotated its credentials seals with the new key while
        the cache (REGISTRY_TTL_S) still holds the old one. So before a MAC failure is final the
        gateway's key is read from the database once more, bypassing the cache, and the batch
        is tried with it, and then with the key of a rotation the gateway redeemed but has not
        confirmed yet: a batch that verifies with that key can only come from the gateway the
        key was issued to (over TLS, against a one-time token bound to its serial), so it is
        authentic and stored. Ingest does not confirm the rotation itself: that stays the
        gateway's proof of its new broker password (``provision.claims.confirm``)."""
        fresh: GatewayInfo | None = None
        if info.mac_key is None and mac.is_mac0(payload):
            # Sealed, but our entry has no key to check it with: the gateway may have been
            # given one since (a claim). A stale entry must not let a MAC through unchecked.
            fresh = self.gateways.reload(gw)
            if fresh is not None:
                info = fresh
        try:
            return wire.open_batch(payload, key=info.mac_key, require_mac=info.mac_key is not None)
        except MacError as e:
            if e.reason == MAC_MALFORMED:
                raise
            first = e
        if fresh is None:
            fresh = self.gateways.reload(gw)
        if fresh is None:
            raise first
        tried = {info.mac_key}
        candidates = [(fresh.mac_key, False)] + [(k, True) for k in fresh.pending_keys]
        for key, pending in candidates:
            if key in tried:
                continue
            tried.add(key)
            try:
                batch = wire.open_batch(payload, key=key, require_mac=key is not None)
            except MacError:
                continue
            if not pending:
                log.info("gateway %d: MAC key changed in the registry; cache refreshed", gw)
            else:
                log.warning(
                    "gateway %d: batch verifies with the key of its unconfirmed rotation; stored",
                    gw,
                )
            return batch
        raise first

    def _quarantined(
        self,
        received: int,
        source: str,
        topic: str,
        gw: int | None,
        reason: str,
        detail: str,
        payload: bytes,
    ) -> str:
        log.warning("quarantined message on %r: %s (%s)", topic[:200], reason, detail[:200])
        self._quarantine.append(
            self._quarantine_row(received, source, topic, gw, reason, detail, payload)
        )
        return reason

    @staticmethod
    def _quarantine_row(
        received: int,
        source: str,
        topic: str,
        gw: int | None,
        reason: str,
        detail: str,
        payload: bytes,
    ) -> dict[str, Any]:
        return {
            "received_ms": received,
            "source": source,
            "topic": topic[:200],
            "gateway_id": gw,
            "reason": reason[:100],
            "detail": detail[:2000],
            "payload": bytes(payload),
        }

    # ---- flush ------------------------------------------------------------------------------

    def take(self) -> Buffered:
        """Hand over everything buffered (to write, perhaps in another thread)."""
        out = Buffered(self._pending, self._quarantine)
        self._pending, self._quarantine, self._pending_events = [], [], 0
        return out

    def put_back(self, buf: Buffered) -> None:
        """Return a buffer whose write failed, ahead of anything accepted since."""
        self._pending = buf.batches + self._pending
        self._quarantine = buf.quarantine + self._quarantine
        self._pending_events += sum(len(a.batch.events) for a in buf.batches)

    def write(self, buf: Buffered) -> FlushResult:
        """Write ``buf`` in one transaction; the acks are safe to publish once this returns.

        Thread-safe with respect to ``accept`` (it touches only ``buf`` and the database).
        When the database refuses the data itself (not a lost connection), or writing it raises
        an unexpected error that is not the database's (a bug, an overflow in a driver), the
        batches are written one by one and the one at fault is quarantined with the reason, so
        that no message can stop ingest by failing every flush it is part of. Only a database
        that cannot be reached (or keeps deadlocking) fails the whole write: the caller keeps the
        buffer and tries again, since nothing in it is at fault.
        """
        if not buf.batches and not buf.quarantine:
            return FlushResult()
        try:
            return self._write_retrying(buf.batches, buf.quarantine)
        except DBAPIError as e:
            if _unavailable(e):
                raise
            log.warning("flush refused (%s); isolating the batch at fault", e.orig)
        except Exception:
            log.exception("flush failed with an unexpected error; isolating the batch at fault")
        total = FlushResult()
        for a in buf.batches:
            try:
                res = self._write_retrying([a], [])
            except DBAPIError as e:
                if _unavailable(e):
                    raise
                res = self._quarantine_batch(a, R_STORE, str(e.orig).splitlines()[0][:500])
            except Exception as e:
                log.exception("batch on %s failed to write; quarantined", a.topic)
                res = self._quarantine_batch(a, R_INGEST, f"{type(e).__name__}: {e}"[:500])
            _add(total, res)
        if buf.quarantine:
            _add(total, self._write_quarantine(buf.quarantine))
        best: dict[tuple[int, int], int] = {}
        for ack in total.acks:
            best[ack.gw, ack.boot] = max(best.get((ack.gw, ack.boot), 0), ack.hwm)
        total.acks = [messages.Ack(g, b, h) for (g, b), h in sorted(best.items())]
        return total

    def _quarantine_batch(self, a: Accepted, reason: str, detail: str) -> FlushResult:
        row = self._quarantine_row(
            a.received_ms, a.source, a.topic, a.batch.gw, reason, detail, a.payload
        )
        return self._write_quarantine([row])

    def _write_quarantine(self, rows: list[dict[str, Any]]) -> FlushResult:
        """Write quarantine rows; if that fails (not for want of a database), one by one, and a
        row that cannot be written at all is logged and dropped: nothing loops forever."""
        try:
            return self._write_retrying([], rows)
        except DBAPIError as e:
            if _unavailable(e):
                raise
            err: Exception = e
        except Exception as e:
            err = e
        if len(rows) > 1:
            total = FlushResult()
            for r in rows:
                _add(total, self._write_quarantine([r]))
            return total
        r = rows[0]
        log.error(
            "quarantine row for %r (%s) cannot be written, dropped: %r",
            r["topic"],
            r["reason"],
            err,
        )
        return FlushResult()

    def _write_retrying(
        self, batches: list[Accepted], quarantine: list[dict[str, Any]]
    ) -> FlushResult:
        for attempt in range(1, FLUSH_RETRIES + 1):
            try:
                with self._sessions() as session, session.begin():
                    return self._write(session, batches, quarantine)
            except DBAPIError as e:
                if attempt == FLUSH_RETRIES or not _retryable(e):
                    raise
                log.warning("flush attempt %d failed, retrying: %s", attempt, e.orig)
        raise AssertionError("unreachable")

    def flush(self) -> FlushResult:
        """Write everything buffered; on failure the buffer is kept for the next try."""
        buf = self.take()
        try:
            return self.write(buf)
        except Exception:
            self.put_back(buf)
            raise

    def _write(
        self, session: Session, pending: list[Accepted], quarantine: list[dict[str, Any]]
    ) -> FlushResult:
        now = self.clock()
        out = FlushResult(quarantined=len(quarantine))
        if quarantine:
            session.execute(insert(models.Quarantine), quarantine)
        rows: dict[tuple[int, int, int], dict[str, Any]] = {}
        offered = 0
        seen: dict[int, store.GatewaySeen] = {}
        for acc in pending:
            b = acc.batch
            g = seen.setdefault(b.gw, store.GatewaySeen(b.gw))
            g.observe(acc.leaf == topics.STATE, acc.batch, acc.received_ms, acc.retained)
            if acc.leaf == topics.STATE:
                continue
            replayed = bool(b.flags & codes.BF_REPLAYED)
            # An unsynchronised clock says nothing about age: only the replayed flag counts.
            by_age = not b.flags & codes.BF_CLOCK_UNSYNCED
            offered += len(b.events)
            for seq, ev in b.seqs():
                key = (b.gw, b.boot, seq)
                if key in rows:
                    continue
                t = b.t0 + ev.dt
                late = replayed or (by_age and acc.received_ms - t > self.late_after_ms)
                rows[key] = _row(b, seq, ev, t, acc.received_ms, late)
        new_keys = store.insert_events(session=session, rows=[rows[k] for k in sorted(rows)])
        out.stored = len(new_keys)
        out.duplicates = offered - len(new_keys)
        new_rows = [rows[k] for k in sorted(new_keys)]
        unsynced_rows = [r for r in new_rows if r["batch_flags"] & codes.BF_CLOCK_UNSYNCED]
        out.unsynced = sorted({r["gateway_id"] for r in unsynced_rows})
        out.reborn = sorted({r["gateway_id"] for r in unsynced_rows if r["kind"] == codes.BIRTH})
        store.apply_device_reports(session=session, rows=new_rows, now_ms=now, policy=self.policy)
        store.apply_alarm_events(
            session=session,
            rows=new_rows,
            now_ms=now,
            confirm_ms=self.policy.restart_confirm_ms,
        )
        health = store.gateway_health_rows(session=session, gateway_ids=list(seen), now_ms=now)
        for gw in sorted(seen):
            info = self.gateways.get(gw, session)  # a stale entry is read in this transaction
            store.update_gateway_health(
                session=session,
                row=health[gw],
                seen=seen[gw],
                now_ms=now,
                policy=self.policy,
                heartbeat_override=info.heartbeat_s if info else None,
                misses_override=info.offline_after_misses if info else None,
            )
        hwms = store.advance_streams(
            session=session, streams=[(k[0], k[1]) for k in rows], now_ms=now
        )
        out.acks = [messages.Ack(g, b, h) for (g, b), h in sorted(hwms.items()) if h > 0]
        return out


def _add(total: FlushResult, res: FlushResult) -> None:
    total.stored += res.stored
    total.duplicates += res.duplicates
    total.quarantined += res.quarantined
    total.acks += res.acks
    total.unsynced += [g for g in res.unsynced if g not in total.unsynced]
    total.reborn += [g for g in res.reborn if g not in total.reborn]


def _unavailable(e: DBAPIError) -> bool:
    """The database could not be used (down, connection lost, still locked or deadlocked
    after the retries), as opposed to refusing what we sent (constraint, data, statement):
    nothing in the buffer is at fault, so the whole buffer waits for the next try."""
    return e.connection_invalidated or isinstance(e, (OperationalError, InterfaceError))


def _retryable(e: DBAPIError) -> bool:
    code = getattr(e.orig, "sqlstate", None)
    # 40P01 deadlock, 40001 serialization failure; SQLite "database is locked" after the timeout.
    return code in ("40P01", "40001") or "locked" in str(e.orig)


def _row(
    b: messages.Batch, seq: int, ev: messages.Event, t: int, received: int, late: bool
) -> dict[str, Any]:
    data = ev.fields()
    for k in ("kind", "dt", "src", "state", "code"):
        data.pop(k, None)
    for k, v in list(data.items()):
        if isinstance(v, tuple):
            data[k] = list(v)
        elif isinstance(v, dict):
            data[k] = {str(kk): (vv.hex() if isinstance(vv, bytes) else vv) for kk, vv in v.items()}
    return {
        "gateway_id": b.gw,
        "boot": b.boot,
        "seq": seq,
        "kind": ev.kind,
        "src": ev.src,
        "state": ev.state,
        "code": ev.code,
        "t_ms": t,
        "received_ms": received,
        "batch_flags": b.flags,
        "late": late,
        "data": data,
    }
