"""What ingest and the health sweep write: events, streams, health, device liveness, alarms.

Keyword-only functions that take a Session and never commit; the caller owns the transaction
(``Ingestor.flush`` for ingest, ``run_sweep`` for the sweep). Rows are touched in sorted key
order so that concurrent workers on PostgreSQL take locks in one order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from emberlink.protocol import codes, messages
from sqlalchemy import and_, case, func, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .. import models
from ..health import (
    OFFLINE,
    ONLINE,
    UNKNOWN,
    GatewayFacts,
    HealthPolicy,
    derive_gateway,
    effective_heartbeat_s,
    settle,
)

# Kinds that open an alarm object when their state is ACTIVE.
ALARM_KINDS = (
    codes.FIRE_ALARM,
    codes.PRE_ALARM,
    codes.FAULT,
    codes.SUPERVISORY,
    codes.MANUAL_ALARM,
    codes.COMMS,
)
HWM_SCAN_LIMIT = 100_000  # seqs read per stream per flush while advancing the high-water mark
STREAMS_PER_QUERY = 200  # OR terms per query: SQLite refuses expressions deeper than 1000
H_OUTBOX = 4  # codes.HEALTH_NAMES keys
H_DEVICES_DOWN = 7
H_HEARTBEAT = 10
I_SW = 0  # codes.INFO_NAMES keys
I_HEARTBEAT = 3
# What a gateway announces lands in typed columns and in the offline deadline: a value outside
# these ranges (a gateway's bug; any i64 is valid on the wire) is ignored, so that it can neither
# make a gateway look online forever nor make its batch, fire alarms included, fail to store.
MAX_HEARTBEAT_S = 86_400
MAX_COUNT = 2**31 - 1


def _in_range(v: object, lo: int, hi: int) -> int | None:
    return v if isinstance(v, int) and lo <= v <= hi else None


def _insert(session: Session, table: Any) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


def device_key(src: int) -> tuple[int, int]:
    """(bus, modbus unit) of an event source; src = (bus << 24) | (unit << 16) | point."""
    return (src >> 24) & 0xFF, (src >> 16) & 0xFF


@dataclass
class GatewaySeen:
    """What one flush learned about one gateway."""

    gateway_id: int
    last_seen_ms: int | None = None
    will_ms: int | None = None
    boot: int | None = None
    health_t: int | None = None
    health: dict[int, int] | None = None
    heartbeat_s: int | None = None
    sw: str | None = None
    clock_unsynced: bool | None = None

    def observe(self, on_state: bool, b: messages.Batch, received: int, retained: bool) -> None:
        if on_state:
            for ev in b.events:
                if ev.kind == codes.DEATH and not retained:
                    # The will: a fast hint that the connection is gone (not a sign of life).
                    self.will_ms = max(self.will_ms or 0, received)
                elif ev.kind == codes.BIRTH:
                    self._birth(ev)
            if retained or all(ev.kind == codes.DEATH for ev in b.events):
                return
        self.last_seen_ms = max(self.last_seen_ms or 0, received)
        self.boot = b.boot if self.boot is None else max(self.boot, b.boot)
        self.clock_unsynced = bool(b.flags & codes.BF_CLOCK_UNSYNCED)
        for ev in b.events:
            t = b.t0 + ev.dt
            # the gateway's own health (src 0); a device's (src = the device) is its poll
            # counters, applied to that device, and must not stand in for the gateway's
            if ev.kind == codes.HEALTH and ev.health is not None and ev.src == 0:
                if self.health_t is None or t >= self.health_t:
                    self.health_t, self.health = t, dict(ev.health)
            elif ev.kind == codes.BIRTH:
                self._birth(ev)

    def _birth(self, ev: messages.Event) -> None:
        info = ev.info or {}
        if isinstance(info.get(I_SW), str):
            self.sw = info[I_SW][:64]
        hb = _in_range(info.get(I_HEARTBEAT), 1, MAX_HEARTBEAT_S)
        if hb is not None:
            self.heartbeat_s = hb


EVENT_COLUMNS = (
    "gateway_id",
    "boot",
    "seq",
    "kind",
    "src",
    "state",
    "code",
    "t_ms",
    "received_ms",
    "batch_flags",
    "late",
    "data",
)
_COLS = ", ".join(EVENT_COLUMNS)
# PostgreSQL fast path: COPY into a per-connection staging table, then one INSERT ... SELECT.
# A multi-row INSERT of thousands of rows spends most of its time building and parsing SQL.
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (gateway_id bigint, boot bigint, seq bigint, "
    "kind integer, src bigint, state integer, code integer, t_ms bigint, received_ms bigint, "
    "batch_flags integer, late boolean, data json) ON COMMIT DELETE ROWS"
)
_STAGE_COPY = f"COPY ingest_stage ({_COLS}) FROM STDIN"
_STAGE_INSERT = (
    f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM ingest_stage "
    "ORDER BY gateway_id, boot, seq ON CONFLICT (gateway_id, boot, seq) DO NOTHING "
    "RETURNING gateway_id, boot, seq"
)


def insert_events(*, session: Session, rows: list[dict[str, Any]]) -> set[tuple[int, int, int]]:
    """Insert rows, skipping stored (gateway, boot, seq); returns the keys that were new.

    ``rows`` must be sorted by key, so that concurrent workers lock index entries in one order.
    """
    if not rows:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        try:
            return _copy_events(session, rows)
        except psycopg.Error as e:
            # Raised by the driver directly: give it SQLAlchemy's class (IntegrityError, ...)
            # so that callers handle it like any other statement's error.
            raise DBAPIError.instance(_STAGE_INSERT, None, e, psycopg.Error) from e
    t = models.Event.__table__
    stmt = (
        _insert(session, t)
        .on_conflict_do_nothing(index_elements=["gateway_id", "boot", "seq"])
        .returning(t.c.gateway_id, t.c.boot, t.c.seq)
    )
    res = session.execute(stmt, rows)
    return {(r[0], r[1], r[2]) for r in res}


def _copy_events(session: Session, rows: list[dict[str, Any]]) -> set[tuple[int, int, int]]:
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(_STAGE_DDL)
        with cur.copy(_STAGE_COPY) as cp:
            for r in rows:
                cp.write_row([r[c] for c in EVENT_COLUMNS[:-1]] + [json.dumps(r["data"])])
        cur.execute(_STAGE_INSERT)
        new = {(g, b, q) for g, b, q in cur.fetchall()}
        cur.execute("TRUNCATE ingest_stage")  # a retried flush must start empty
        return new


def advance_streams(
    *, session: Session, streams: list[tuple[int, int]], now_ms: int
) -> dict[tuple[int, int], int]:
    """Move each stream's contiguous high-water mark as far as stored seqs allow.

    DROPPED events cover the seq range the gateway evicted, so those seqs never hold it back.
    Returns (gateway, boot) -> hwm. Three statements per STREAMS_PER_QUERY streams.
    """
    if not streams:
        return {}
    keys = sorted(set(streams))
    S, E = models.Stream, models.Event
    session.execute(
        _insert(session, S.__table__).on_conflict_do_nothing(index_elements=["gateway_id", "boot"]),
        [{"gateway_id": g, "boot": b, "hwm": 0, "updated_ms": now_ms} for g, b in keys],
    )
    rows = {
        (st.gateway_id, st.boot): st
        for st in session.scalars(
            select(S)
            .where(tuple_(S.gateway_id, S.boot).in_(keys))
            .order_by(S.gateway_id, S.boot)
            .with_for_update()
        )
    }
    spans: dict[tuple[int, int], list[tuple[int, int]]] = {k: [] for k in keys}
    q = select(E.gateway_id, E.boot, E.seq, case((E.kind == codes.DROPPED, E.data), else_=None))
    for i in range(0, len(keys), STREAMS_PER_QUERY):
        window = or_(
            *(
                and_(
                    E.gateway_id == g,
                    E.boot == b,
                    E.seq > rows[g, b].hwm,
                    E.seq <= rows[g, b].hwm + HWM_SCAN_LIMIT,
                )
                for g, b in keys[i : i + STREAMS_PER_QUERY]
            )
        )
        for g, b, seq, data in session.execute(q.where(window)):
            spans[g, b].append((seq, seq))
            r = data.get("range") if isinstance(data, dict) else None
            if isinstance(r, list) and len(r) == 2:
                spans[g, b].append((int(r[0]), int(r[1])))
    out = {}
    for k in keys:
        st = rows[k]
        new = st.hwm
        for a, z in sorted(spans[k]):
            if a > new + 1:
                break
            new = max(new, z)
        if new > st.hwm:
            st.hwm, st.updated_ms = new, now_ms
        out[k] = new
    return out


def _transition(
    session: Session,
    gateway_id: int,
    device_id: int | None,
    old: str,
    new: str,
    reason: str,
    at: int,
) -> None:
    session.add(
        models.HealthTransition(
            gateway_id=gateway_id,
            device_id=device_id,
            from_status=old,
            to_status=new,
            reason=reason[:300],
            at_ms=at,
        )
    )


def gateway_health_rows(
    *, session: Session, gateway_ids: list[int], now_ms: int
) -> dict[int, models.GatewayHealth]:
    """The health rows of ``gateway_ids`` (created as unknown if missing), locked, in id order."""
    if not gateway_ids:
        return {}
    ids = sorted(set(gateway_ids))
    GH = models.GatewayHealth
    session.execute(
        _insert(session, GH.__table__).on_conflict_do_nothing(index_elements=["gateway_id"]),
        [
            {
                "gateway_id": g,
                "status": UNKNOWN,
                "reason": "never heard from",
                "since_ms": now_ms,
                "clock_unsynced": False,
            }
            for g in ids
        ],
    )
    q = select(GH).where(GH.gateway_id.in_(ids)).order_by(GH.gateway_id).with_for_update()
    return {h.gateway_id: h for h in session.scalars(q)}


def evaluate_gateway(
    *,
    session: Session,
    row: models.GatewayHealth,
    now_ms: int,
    policy: HealthPolicy,
    heartbeat_override: int | None,
    misses_override: int | None,
) -> bool:
    """Re-derive one gateway's status into ``row``; True when the status changed."""
    facts = GatewayFacts(
        status=row.status,
        last_seen_ms=row.last_seen_ms,
        heartbeat_s=effective_heartbeat_s(heartbeat_override, row.heartbeat_s, policy),
        misses=misses_override or policy.misses,
        will_ms=row.will_ms,
        outbox_depth=row.outbox_depth,
        devices_down=row.devices_down,
        clock_unsynced=row.clock_unsynced,
    )
    verdict = derive_gateway(facts, now_ms, policy)
    take, next_check = settle(row.status, row.since_ms, verdict, now_ms, policy.min_dwell_ms)
    row.next_check_ms = next_check
    if take:
        _transition(
            session, row.gateway_id, None, row.status, verdict.status, verdict.reason, now_ms
        )
        row.status, row.reason, row.since_ms = verdict.status, verdict.reason[:300], now_ms
        return True
    if verdict.status == row.status:
        row.reason = verdict.reason[:300]
    return False


def update_gateway_health(
    *,
    session: Session,
    row: models.GatewayHealth,
    seen: GatewaySeen,
    now_ms: int,
    policy: HealthPolicy,
    heartbeat_override: int | None,
    misses_override: int | None,
) -> None:
    if seen.last_seen_ms is not None and seen.last_seen_ms > (row.last_seen_ms or 0):
        row.last_seen_ms = seen.last_seen_ms
        if seen.clock_unsynced is not None:
            row.clock_unsynced = seen.clock_unsynced
    if seen.will_ms is not None and seen.will_ms > (row.will_ms or 0):
        row.will_ms = seen.will_ms
    if seen.boot is not None and seen.boot >= (row.boot or 0):
        row.boot = seen.boot
    h, ht = seen.health, seen.health_t
    if h is not None and ht is not None and ht >= (row.last_heartbeat_ms or 0):
        row.last_heartbeat_ms = ht
        depth = _in_range(h.get(H_OUTBOX), 0, 2**63 - 1)
        if depth is not None:
            row.outbox_depth = depth
        down = _in_range(h.get(H_DEVICES_DOWN), 0, MAX_COUNT)
        if down is not None:
            row.devices_down = down
        hb = _in_range(h.get(H_HEARTBEAT), 1, MAX_HEARTBEAT_S)
        if hb is not None:
            row.heartbeat_s = hb
    if seen.heartbeat_s:
        row.heartbeat_s = seen.heartbeat_s
    if seen.sw is not None:
        row.sw = seen.sw
    evaluate_gateway(
        session=session,
        row=row,
        now_ms=now_ms,
        policy=policy,
        heartbeat_override=heartbeat_override,
        misses_override=misses_override,
    )


def run_sweep(*, session: Session, now_ms: int, policy: HealthPolicy) -> int:
    """Re-derive every gateway (and device) whose status can change by time alone, and settle
    the alarms whose restart re-raise window has passed (``reconcile_alarms``).

    Returns the number of status changes (alarms settled included).
    """
    GH, G = models.GatewayHealth, models.Gateway
    q = (
        select(GH, G.heartbeat_s, G.offline_after_misses)
        .join(G, G.id == GH.gateway_id)
        .where(GH.next_check_ms <= now_ms)
        .order_by(GH.gateway_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=GH, skip_locked=True)  # concurrent sweepers split the work
    changed = 0
    for row, hb, misses in session.execute(q).all():
        changed += evaluate_gateway(
            session=session,
            row=row,
            now_ms=now_ms,
            policy=policy,
            heartbeat_override=hb,
            misses_override=misses,
        )
    changed += sweep_devices(session=session, now_ms=now_ms)
    return changed + reconcile_alarms(session=session, now_ms=now_ms)


def apply_device_reports(
    *, session: Session, rows: list[dict[str, Any]], now_ms: int, policy: HealthPolicy
) -> None:
    """Device liveness from new events: COMMS says lost/restored, any event says it is there."""
    by_key: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["src"] != 0:
            bus, unit = device_key(r["src"])
            by_key.setdefault((r["gateway_id"], bus, unit), []).append(r)
    if not by_key:
        return
    keys = sorted(by_key)
    D, DH = models.Device, models.DeviceHealth
    session.execute(
        _insert(session, D.__table__).on_conflict_do_nothing(
            index_elements=["gateway_id", "bus", "unit_addr"]
        ),
        [{"gateway_id": g, "bus": b, "unit_addr": u, "name": ""} for g, b, u in keys],
    )
    ids = {
        (g, b, u): i
        for i, g, b, u in session.execute(
            select(D.id, D.gateway_id, D.bus, D.unit_addr).where(
                tuple_(D.gateway_id, D.bus, D.unit_addr).in_(keys)
            )
        )
    }
    session.execute(
        _insert(session, DH.__table__).on_conflict_do_nothing(index_elements=["device_id"]),
        [
            {"device_id": ids[k], "status": UNKNOWN, "reason": "no report yet", "since_ms": now_ms}
            for k in keys
        ],
    )
    health = {
        h.device_id: h
        for h in session.execute(
            select(DH)
            .where(DH.device_id.in_(ids.values()))
            .order_by(DH.device_id)
            .with_for_update()
        ).scalars()
    }
    for k in keys:
        h = health[ids[k]]
        for r in by_key[k]:
            h.last_seen_ms = max(h.last_seen_ms or 0, r["received_ms"])
            target, reason = None, ""
            if r["kind"] == codes.COMMS and r["state"] == codes.ACTIVE:
                cond = codes.name_of(codes.CONDITION_NAMES, r["code"]) if r["code"] else "lost"
                target, reason = OFFLINE, f"gateway reports communication lost ({cond})"
            elif r["kind"] == codes.COMMS and r["state"] == codes.NORMAL:
                target, reason = ONLINE, "gateway reports communication restored"
            elif h.status == UNKNOWN:
                target, reason = ONLINE, "events received"
            if target is not None:
                _device_target(session, k[0], h, target, reason, now_ms, policy.min_dwell_ms)


def _device_target(
    session: Session,
    gateway_id: int,
    h: models.DeviceHealth,
    target: str,
    reason: str,
    now_ms: int,
    min_dwell_ms: int,
) -> None:
    """Move a device towards ``target``: a loss at once, a recovery after the dwell time."""
    if target == h.status:
        h.pending_status = h.pending_reason = h.next_check_ms = None
        return
    if target == OFFLINE or h.status == UNKNOWN or now_ms - h.since_ms >= min_dwell_ms:
        _transition(session, gateway_id, h.device_id, h.status, target, reason, now_ms)
        h.status, h.reason, h.since_ms = target, reason, now_ms
        h.pending_status = h.pending_reason = h.next_check_ms = None
        return
    h.pending_status, h.pending_reason = target, reason
    h.next_check_ms = h.since_ms + min_dwell_ms


def sweep_devices(*, session: Session, now_ms: int) -> int:
    """Take the pending recoveries whose dwell time has passed; returns how many."""
    D, DH = models.Device, models.DeviceHealth
    q = (
        select(DH, D.gateway_id)
        .join(D, D.id == DH.device_id)
        .where(DH.next_check_ms <= now_ms)
        .order_by(DH.device_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=DH, skip_locked=True)
    n = 0
    for h, gateway_id in session.execute(q).all():
        if h.pending_status is not None:
            _transition(
                session,
                gateway_id,
                h.device_id,
                h.status,
                h.pending_status,
                h.pending_reason or "",
                now_ms,
            )
            h.status, h.reason, h.since_ms = h.pending_status, h.pending_reason or "", now_ms
            n += 1
        h.pending_status = h.pending_reason = h.next_check_ms = None
    return n


def _latched(r: dict[str, Any]) -> bool:
    return bool((r["data"].get("eflags") or 0) & codes.EF_LATCHED)


def apply_alarm_events(
    *, session: Session, rows: list[dict[str, Any]], now_ms: int, confirm_ms: int
) -> None:
    """Raise, acknowledge (at the panel) or return to normal the alarm objects of new events.

    Then the restart reconciliation of the same new events: a new boot's BIRTH makes the open
    alarms of older boots await a re-raise (``confirm_after_birth``), an activation by the
    awaited boot (or a newer one) confirms an alarm, and an activation replayed from an older
    boot than the gateway's newest never confirms one: when it (re)opens an alarm, that alarm
    awaits the newest boot too. A NORMAL from an older boot than the newest that reported the
    condition active is history and changes nothing.
    """
    rel = [r for r in rows if r["kind"] in ALARM_KINDS and r["state"] is not None]
    births = sorted({(r["gateway_id"], r["boot"]) for r in rows if r["kind"] == codes.BIRTH})
    if rel:
        _apply_alarm_rows(session, rows, rel, now_ms, confirm_ms)
    for gw, boot in births:
        confirm_after_birth(
            session=session, gateway_id=gw, boot=boot, now_ms=now_ms, confirm_ms=confirm_ms
        )


def _apply_alarm_rows(
    session: Session,
    rows: list[dict[str, Any]],
    rel: list[dict[str, Any]],
    now_ms: int,
    confirm_ms: int,
) -> None:
    A = models.Alarm
    keys = sorted({(r["gateway_id"], r["src"], r["kind"], r["code"] or 0) for r in rel})
    # The newest boot each gateway has shown (stored before, or in these rows).
    newest: dict[int, int] = {}
    for r in rows:
        newest[r["gateway_id"]] = max(newest.get(r["gateway_id"], 0), r["boot"])
    GH = models.GatewayHealth
    for g, b in session.execute(
        select(GH.gateway_id, GH.boot).where(GH.gateway_id.in_(sorted(newest)))
    ):
        newest[g] = max(newest[g], b or 0)
    open_q = (
        select(A)
        .where(tuple_(A.gateway_id, A.src, A.kind, A.code).in_(keys), A.status != "cleared")
        .order_by(A.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Locked, so that the sweep's settling (reconcile_alarms) and these changes serialise:
        # whichever commits second sees the other's result (SQLite: one writer at a time).
        open_q = open_q.with_for_update()
    open_alarms = {(a.gateway_id, a.src, a.kind, a.code): a for a in session.scalars(open_q)}
    stale: dict[int, models.Alarm] = {}  # alarms a replayed old-boot activation left open
    for r in rel:
        k = (r["gateway_id"], r["src"], r["kind"], r["code"] or 0)
        a = open_alarms.get(k)
        state, t = r["state"], r["t_ms"]
        if state == codes.ACTIVE:
            if a is not None:
                if a.active_boot is not None and r["boot"] < a.active_boot:
                    continue  # an older boot's activation: history, the alarm is open anyway
                if not a.condition_active:
                    a.condition_active, a.normal_ms = True, None
                a.active_boot = r["boot"]
                a.latched = a.latched or _latched(r)
                if a.confirm_boot is not None and r["boot"] >= a.confirm_boot:
                    a.confirm_boot = a.confirm_by_ms = None  # re-raised: confirmed
            else:
                stmt = _insert(session, A.__table__).on_conflict_do_nothing(
                    index_elements=["gateway_id", "src", "kind", "code"],
                    index_where=text("status != 'cleared'"),
                )
                session.execute(
                    stmt,
                    {
                        "gateway_id": k[0],
                        "src": k[1],
                        "kind": k[2],
                        "code": k[3],
                        "status": "active",
                        "condition_active": True,
                        "late": r["late"],
                        "test": bool((r["data"].get("eflags") or 0) & codes.EF_TEST),
                        "raised_ms": t,
                        "received_ms": r["received_ms"],
                        "boot": r["boot"],
                        "seq": r["seq"],
                        "active_boot": r["boot"],
                        "latched": _latched(r),
                        "needs_reset": False,
                    },
                )
                a = session.scalars(
                    select(A).where(
                        A.gateway_id == k[0],
                        A.src == k[1],
                        A.kind == k[2],
                        A.code == k[3],
                        A.status != "cleared",
                    )
                ).one()
                open_alarms[k] = a
            if r["boot"] < newest[k[0]]:
                stale[a.id] = a
            else:
                stale.pop(a.id, None)
        elif a is None:
            continue
        elif state == codes.ACKNOWLEDGED and a.status == "active":
            a.status, a.acked_by, a.acked_ms = "acknowledged", "panel", t
        elif state == codes.NORMAL:
            if a.active_boot is not None and r["boot"] < a.active_boot:
                continue  # a newer boot reported the condition active since: history
            a.condition_active, a.normal_ms = False, t
            a.confirm_boot = a.confirm_by_ms = None
            stale.pop(a.id, None)
            if a.status == "acknowledged":
                a.status, a.cleared_by, a.cleared_ms = "cleared", "device", t
                del open_alarms[k]
    for a in stale.values():
        b = newest[a.gateway_id]
        if a.condition_active and (a.active_boot or 0) < b and (a.confirm_boot or 0) < b:
            # Replayed from a boot that has ended: only the newest boot can say it is still on.
            a.confirm_boot, a.confirm_by_ms = b, now_ms + confirm_ms


def confirm_after_birth(
    *, session: Session, gateway_id: int, boot: int, now_ms: int, confirm_ms: int
) -> int:
    """A BIRTH of ``boot``: the gateway's open alarms last reported by an older boot await a
    re-raise by this boot until ``now_ms + confirm_ms``. Returns how many.

    Conditional, so a redelivered or repeated birth (a reconnect in the same boot) moves no
    deadline, and an older boot's birth replayed late matches nothing newer.
    """
    A = models.Alarm
    session.flush()  # the ORM changes of this flush first
    due = (
        select(A.id)
        .where(
            A.gateway_id == gateway_id,
            A.status != "cleared",
            A.condition_active.is_(True),
            A.needs_reset.is_(False),
            func.coalesce(A.active_boot, A.boot) < boot,
            or_(A.confirm_boot.is_(None), A.confirm_boot < boot),
        )
        .order_by(A.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update()  # in id order, as every other writer of alarms
    ids = list(session.scalars(due))
    if not ids:
        return 0
    session.execute(
        update(A)
        .where(A.id.in_(ids))
        .values(confirm_boot=boot, confirm_by_ms=now_ms + confirm_ms)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()  # loaded alarm objects see the new columns
    return len(ids)


def restart_reason(boot: int) -> str:
    return f"not reported active after gateway restart (boot {boot})"


def reconcile_alarms(*, session: Session, now_ms: int) -> int:
    """Settle the alarms whose re-raise window has passed; returns how many changed.

    Only once the gateway has been heard from since the deadline (a gateway silent since its
    birth gives no evidence either way; a fire alarm's re-raise has the alarm lane, so it is not
    behind a message sent later). Not re-raised: taken as returned to normal by "cloud" with
    the reason, the same as a NORMAL from the device (cleared when acknowledged, else waiting
    for an operator's acknowledgement with ``condition_active`` false); a latched alarm stays
    as it is, marked ``needs_reset``. Each is one conditional UPDATE on the deadline the sweep
    read, so of two workers' sweeps one changes the alarm and the other matches nothing.
    """
    A, GH = models.Alarm, models.GatewayHealth
    q = (
        select(A)
        .join(GH, GH.gateway_id == A.gateway_id)
        .where(
            A.confirm_by_ms <= now_ms,
            A.status != "cleared",
            GH.last_seen_ms >= A.confirm_by_ms,
        )
        .order_by(A.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=A, skip_locked=True)
    n = 0
    for a in session.scalars(q).all():
        boot = a.confirm_boot or 0
        values: dict[str, Any] = {"confirm_boot": None, "confirm_by_ms": None}
        if a.latched:
            note = f"{restart_reason(boot)}; latched on the gateway: needs an operator's reset"
            values.update(needs_reset=True, note=note)
        else:
            note = restart_reason(boot)
            values.update(condition_active=False, normal_ms=now_ms, note=note)
            if a.status == "acknowledged":
                values.update(status="cleared", cleared_by="cloud", cleared_ms=now_ms)
        res = session.execute(
            update(A)
            .where(
                A.id == a.id,
                A.status == a.status,
                A.confirm_boot == a.confirm_boot,
                A.confirm_by_ms == a.confirm_by_ms,
                A.condition_active.is_(True),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if getattr(res, "rowcount", 0) == 1:
            session.add(models.AlarmComment(alarm_id=a.id, author="cloud", at_ms=now_ms, text=note))
            n += 1
    return n
