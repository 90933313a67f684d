"""Derived health: the pure rules, then ingest + sweep against the database."""

from __future__ import annotations

import pytest
from emberlink.cloud import models
from emberlink.cloud.health import (
    NEVER,
    GatewayFacts,
    HealthPolicy,
    Verdict,
    derive_gateway,
    settle,
)
from emberlink.cloud.ingest.pipeline import Ingestor
from emberlink.cloud.ingest.store import run_sweep
from emberlink.protocol import codes, messages, topics, wire
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, heartbeat, make_gateway

P = HealthPolicy(
    misses=3, default_heartbeat_s=60, min_dwell_ms=30_000, backlog_high=1000, backlog_low=100
)
T = 1_000_000_000


def facts(**kw: object) -> GatewayFacts:
    base: dict[str, object] = {
        "status": "online",
        "last_seen_ms": T,
        "heartbeat_s": 10,
        "misses": 3,
    }
    base.update(kw)
    return GatewayFacts(**base)  # type: ignore[arg-type]


def test_online_while_heartbeats_are_on_time() -> None:
    v = derive_gateway(facts(), T + 5_000, P)
    assert v == Verdict("online", "heartbeats on time", T + 15_001)


def test_overdue_heartbeat_degrades_then_three_misses_go_offline() -> None:
    assert derive_gateway(facts(), T + 15_001, P) == Verdict(
        "degraded", "heartbeat overdue: silent for 15 s", T + 30_001
    )
    assert derive_gateway(facts(), T + 30_000, P).status == "degraded"
    assert derive_gateway(facts(), T + 30_001, P) == Verdict(
        "offline", "no message for 30 s (timeout 30 s = 3 x 10 s heartbeat)", NEVER
    )


def test_the_will_is_a_fast_hint_until_the_next_message() -> None:
    assert derive_gateway(facts(will_ms=T + 1), T + 2, P).status == "offline"
    assert derive_gateway(facts(will_ms=T - 1), T + 2, P).status == "online"


def test_backlog_degrades_with_a_band() -> None:
    assert derive_gateway(facts(outbox_depth=999), T, P).status == "online"
    assert derive_gateway(facts(outbox_depth=1000), T, P).reason == "outbox backlog 1000 events"
    # Inside the band the status holds: degraded stays degraded, online stays online.
    assert derive_gateway(facts(status="degraded", outbox_depth=500), T, P).status == "degraded"
    assert derive_gateway(facts(status="online", outbox_depth=500), T, P).status == "online"
    assert derive_gateway(facts(status="degraded", outbox_depth=100), T, P).status == "online"


def test_devices_down_and_clock_are_reasons() -> None:
    v = derive_gateway(facts(devices_down=2, clock_unsynced=True), T, P)
    assert v.status == "degraded"
    assert v.reason == "2 device(s) not answering; gateway clock not synchronised"


def test_never_heard_from_is_unknown() -> None:
    assert derive_gateway(facts(last_seen_ms=None), T, P) == Verdict(
        "unknown", "never heard from", NEVER
    )


@pytest.mark.parametrize(
    ("status", "since", "target", "now", "take"),
    [
        ("online", T, "degraded", T + 29_999, False),  # flapping is held back
        ("online", T, "degraded", T + 30_000, True),
        ("degraded", T, "online", T + 1, False),
        ("online", T, "offline", T + 1, True),  # offline is never delayed
        ("unknown", T, "online", T + 1, True),
    ],
)
def test_settle_holds_changes_for_the_dwell_time(
    status: str, since: int, target: str, now: int, take: bool
) -> None:
    got, next_check = settle(status, since, Verdict(target, "r", NEVER), now, 30_000)
    assert got is take
    if not take:
        assert next_check == since + 30_000


# ---- against the database -------------------------------------------------------------------


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def _health(sessions: sessionmaker[Session], gw: int) -> models.GatewayHealth:
    with sessions() as s:
        h = s.get(models.GatewayHealth, gw)
        assert h is not None
        return h


def _sweep(sessions: sessionmaker[Session], now: int, policy: HealthPolicy) -> int:
    with sessions() as s, s.begin():
        return run_sweep(session=s, now_ms=now, policy=policy)


def test_sweep_marks_silent_gateways_offline_with_history(
    sessions: sessionmaker[Session],
) -> None:
    policy = HealthPolicy(min_dwell_ms=0)
    with sessions() as s, s.begin():
        make_gateway(s, 4, heartbeat_s=10)
    clock = Clock(T)
    ing = Ingestor(sessions, policy=policy, clock=clock)
    ing.accept(topics.topic(4, "ev"), wire.seal(batch(4, 1, events=[heartbeat()])))
    ing.flush()
    assert _health(sessions, 4).status == "online"
    assert _sweep(sessions, T + 15_000, policy) == 0  # nothing is due yet
    assert _sweep(sessions, T + 15_001, policy) == 1
    assert _health(sessions, 4).status == "degraded"
    assert _sweep(sessions, T + 30_001, policy) == 1
    h = _health(sessions, 4)
    assert (h.status, h.since_ms) == ("offline", T + 30_001)
    assert h.reason == "no message for 30 s (timeout 30 s = 3 x 10 s heartbeat)"
    with sessions() as s:
        hist = [
            (t.from_status, t.to_status)
            for t in s.scalars(select(models.HealthTransition).order_by(models.HealthTransition.id))
        ]
    assert hist == [("unknown", "online"), ("online", "degraded"), ("degraded", "offline")]


def test_missed_heartbeats_before_offline_are_configurable(
    sessions: sessionmaker[Session],
) -> None:
    """The setting (here 2 instead of 3) for every gateway, and a gateway's own override (5)."""
    policy = HealthPolicy(misses=2, min_dwell_ms=0)
    with sessions() as s, s.begin():
        make_gateway(s, 5, heartbeat_s=10)
        make_gateway(s, 6, heartbeat_s=10).offline_after_misses = 5
    ing = Ingestor(sessions, policy=policy, clock=Clock(T))
    for gw in (5, 6):
        ing.accept(topics.topic(gw, "ev"), wire.seal(batch(gw, 1, events=[heartbeat()])))
    ing.flush()
    _sweep(sessions, T + 20_000, policy)
    assert (_health(sessions, 5).status, _health(sessions, 6).status) == ("degraded", "degraded")
    _sweep(sessions, T + 20_001, policy)
    h5 = _health(sessions, 5)
    assert (h5.status, h5.reason) == (
        "offline",
        "no message for 20 s (timeout 20 s = 2 x 10 s heartbeat)",
    )
    _sweep(sessions, T + 50_000, policy)
    assert _health(sessions, 6).status == "degraded"
    _sweep(sessions, T + 50_001, policy)
    h6 = _health(sessions, 6)
    assert (h6.status, h6.reason) == (
        "offline",
        "no message for 50 s (timeout 50 s = 5 x 10 s heartbeat)",
    )


def test_heartbeat_reports_feed_gateway_and_device_health(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 6)
    ing = Ingestor(sessions, policy=HealthPolicy(min_dwell_ms=0), clock=Clock(T))
    src = (1 << 24) | (3 << 16)
    lost = messages.Event(codes.COMMS, 0, src, state=codes.ACTIVE, code=55)
    ing.accept(
        topics.topic(6, "ev"),
        wire.seal(batch(6, 1, events=[heartbeat(outbox_depth=1500, devices_down=1), lost])),
    )
    ing.flush()
    h = _health(sessions, 6)
    assert (h.status, h.outbox_depth, h.devices_down, h.heartbeat_s) == ("degraded", 1500, 1, 30)
    assert h.reason == "1 device(s) not answering; outbox backlog 1500 events"
    with sessions() as s:
        dev = s.scalars(select(models.Device).where(models.Device.gateway_id == 6)).one()
        dh = s.get(models.DeviceHealth, dev.id)
    assert (dev.bus, dev.unit_addr) == (1, 3)
    assert dh is not None
    assert (dh.status, dh.reason) == ("offline", "gateway reports communication lost (no_response)")


def test_retained_birth_gives_facts_but_not_liveness(sessions: sessionmaker[Session]) -> None:
    """A retained birth may be days old: it tells the software and period, not that it is up."""
    with sessions() as s, s.begin():
        make_gateway(s, 9)
    ing = Ingestor(sessions, policy=HealthPolicy(min_dwell_ms=0), clock=Clock(T))
    birth = messages.Event(codes.BIRTH, 0, 0, info={0: "edge 1.2.3", 3: 15})
    payload = wire.seal(batch(9, 1, events=[birth]))
    ing.accept(topics.topic(9, "state"), payload, retained=True)
    ing.flush()
    h = _health(sessions, 9)
    assert (h.status, h.sw, h.heartbeat_s, h.last_seen_ms) == ("unknown", "edge 1.2.3", 15, None)
    ing.accept(topics.topic(9, "state"), payload)  # a live birth is a sign of life
    ing.flush()
    h = _health(sessions, 9)
    assert (h.status, h.last_seen_ms) == ("online", T)
    with sessions() as s:
        assert s.scalars(select(models.Event)).all() == []  # births on state are not events


def test_a_flapping_device_recovers_only_after_the_dwell_time(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 11)
    policy = HealthPolicy(min_dwell_ms=30_000)
    clock = Clock(T)
    ing = Ingestor(sessions, policy=policy, clock=clock)
    src = (2 << 24) | (5 << 16)
    seq = iter(range(1, 100))

    def comms(state: int, at: int) -> None:
        clock.t = at
        ev = messages.Event(codes.COMMS, 0, src, state=state, code=55)
        ing.accept(topics.topic(11, "ev"), wire.seal(batch(11, next(seq), events=[ev])))
        ing.flush()

    def device() -> models.DeviceHealth:
        with sessions() as s:
            return s.scalars(select(models.DeviceHealth)).one()

    comms(codes.ACTIVE, T)  # lost: offline at once
    comms(codes.NORMAL, T + 5_000)  # restored too soon: held
    d = device()
    assert (d.status, d.pending_status, d.next_check_ms) == ("offline", "online", T + 30_000)
    comms(codes.ACTIVE, T + 10_000)  # lost again: the pending recovery is dropped
    assert (device().status, device().pending_status) == ("offline", None)
    comms(codes.NORMAL, T + 20_000)
    assert _sweep(sessions, T + 29_999, policy) == 0
    assert device().status == "offline"
    assert _sweep(sessions, T + 30_000, policy) == 1
    d = device()
    assert (d.status, d.reason, d.since_ms) == (
        "online",
        "gateway reports communication restored",
        T + 30_000,
    )
    with sessions() as s:
        hist = [
            (t.from_status, t.to_status)
            for t in s.scalars(
                select(models.HealthTransition)
                .where(models.HealthTransition.device_id.is_not(None))
                .order_by(models.HealthTransition.id)
            )
        ]
    assert hist == [("unknown", "offline"), ("offline", "online")]
