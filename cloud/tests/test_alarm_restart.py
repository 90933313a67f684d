"""Alarm reconciliation after a gateway restart, through the real ingest path and sweep.

A new boot's BIRTH puts the open alarms of older boots into "awaiting confirmation"; a re-raise
by the new boot within ``restart_confirm_ms`` confirms them; otherwise the sweep takes them as
returned to normal ("cloud", with the reason), or marks a latched one ``needs_reset``.
"""

from __future__ import annotations

import threading

from emberlink.cloud import models
from emberlink.cloud.health import HealthPolicy
from emberlink.cloud.ingest.pipeline import Ingestor
from emberlink.cloud.ingest.store import run_sweep
from emberlink.protocol import codes, messages, topics, wire
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import World
from .utils import batch, heartbeat, make_gateway

T = 1_700_000_000_000
W = 5_000  # the re-raise window in these tests
POLICY = HealthPolicy(min_dwell_ms=0, restart_confirm_ms=W)
SRC = (1 << 24) | (3 << 16) | 1
GW = 31
REASON = "not reported active after gateway restart (boot 2)"


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def fire(state: int, dt: int = 0, *, eflags: int | None = None) -> messages.Event:
    return messages.Event(codes.FIRE_ALARM, dt, SRC, state=state, code=1, eflags=eflags)


def birth() -> messages.Event:
    return messages.Event(codes.BIRTH, 0, 0, info={0: "edge test", 3: 30})


class Bench:
    """A registered gateway, an ingestor on a settable clock, and the sweep."""

    def __init__(self, sessions: sessionmaker[Session], gw: int = GW) -> None:
        self.sessions, self.gw = sessions, gw
        with sessions() as s, s.begin():
            make_gateway(s, gw)
        self.clock = Clock(T)
        self.ing = Ingestor(sessions, policy=POLICY, clock=self.clock)

    def send(
        self, boot: int, seq0: int, *events: messages.Event, flags: int = 0, t0: int | None = None
    ) -> tuple[int, int]:
        self.ing.accept(
            topics.topic(self.gw, "ev"),
            wire.seal(
                batch(
                    self.gw,
                    seq0,
                    boot=boot,
                    t0=self.clock.t if t0 is None else t0,
                    flags=flags,
                    events=[*events],
                )
            ),
        )
        res = self.ing.flush()
        return res.stored, res.duplicates

    def at(self, t: int) -> Bench:
        self.clock.t = t
        return self

    def sweep(self) -> int:
        with self.sessions() as s, s.begin():
            return run_sweep(session=s, now_ms=self.clock.t, policy=POLICY)

    def alarms(self) -> list[models.Alarm]:
        with self.sessions() as s:
            return list(s.scalars(select(models.Alarm).order_by(models.Alarm.id)))

    def alarm(self) -> models.Alarm:
        (a,) = self.alarms()
        return a

    def comments(self) -> list[tuple[str, str]]:
        with self.sessions() as s:
            q = select(models.AlarmComment).order_by(models.AlarmComment.id)
            return [(c.author, c.text) for c in s.scalars(q)]

    def open_then_restart(self, *, acked: bool = False, eflags: int | None = None) -> None:
        """Boot 1: fire (and the panel's acknowledgement); at T+1000 boot 2 is born."""
        evs = [heartbeat(), fire(codes.ACTIVE, 1, eflags=eflags)]
        if acked:
            evs.append(fire(codes.ACKNOWLEDGED, 2, eflags=eflags))
        self.at(T).send(1, 1, *evs)
        self.at(T + 1000).send(2, 1, birth())


def test_not_re_raised_is_cleared_after_the_window_with_the_reason(
    sessions: sessionmaker[Session],
) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    a = b.alarm()
    assert (a.status, a.confirm_boot, a.confirm_by_ms) == ("acknowledged", 2, T + 1000 + W)
    b.at(T + 1000 + W - 1).send(2, 2, heartbeat())
    assert b.sweep() == 0  # inside the window
    assert b.alarm().confirm_boot == 2
    b.at(T + 1000 + W).send(2, 3, heartbeat())
    assert b.sweep() == 1
    a = b.alarm()
    assert (a.status, a.cleared_by, a.cleared_ms) == ("cleared", "cloud", T + 1000 + W)
    assert (a.condition_active, a.normal_ms, a.note) == (False, T + 1000 + W, REASON)
    assert (a.confirm_boot, a.confirm_by_ms, a.needs_reset) == (None, None, False)
    assert b.comments() == [("cloud", REASON)]
    b.at(T + 60_000).sweep()  # (the gateway goes offline here: silent for 3 heartbeats)
    assert b.comments() == [("cloud", REASON)]  # settled once


def test_not_acknowledged_waits_for_the_operator_like_a_device_normal(
    sessions: sessionmaker[Session],
) -> None:
    """The existing rule: a return to normal before an acknowledgement leaves the alarm for the
    operator to acknowledge. An inferred return to normal does no more than a reported one."""
    b = Bench(sessions)
    b.open_then_restart(acked=False)
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 1
    a = b.alarm()
    assert (a.status, a.condition_active, a.normal_ms) == ("active", False, T + 1000 + W)
    assert (a.cleared_by, a.note, a.confirm_boot) == (None, REASON, None)
    assert b.comments() == [("cloud", REASON)]


def test_re_raised_within_the_window_stays_one_open_alarm(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    first = b.alarm().id
    b.at(T + 3000).send(2, 2, fire(codes.ACTIVE))  # the new boot's detector confirms again
    a = b.alarm()
    assert (a.id, a.status, a.condition_active, a.active_boot) == (first, "acknowledged", True, 2)
    assert (a.confirm_boot, a.confirm_by_ms, a.note) == (None, None, None)
    b.at(T + 1000 + W + 10_000).send(2, 3, heartbeat())
    assert b.sweep() == 0
    assert b.alarm().status == "acknowledged"
    b.send(2, 4, fire(codes.NORMAL))  # and its end is reported by boot 2 as usual
    a = b.alarm()
    assert (a.id, a.status, a.cleared_by) == (first, "cleared", "device")
    assert b.comments() == []


def test_re_raise_stored_before_the_birth_is_not_awaited(sessions: sessionmaker[Session]) -> None:
    """The new boot's first poll may be stored before its birth (seq order, or two workers)."""
    b = Bench(sessions)
    b.at(T).send(1, 1, fire(codes.ACTIVE))
    b.at(T + 1000).send(2, 1, fire(codes.ACTIVE))
    b.send(2, 2, birth())
    a = b.alarm()
    assert (a.active_boot, a.confirm_boot) == (2, None)
    b.at(T + 1000 + W).send(2, 3, heartbeat())
    assert b.sweep() == 0
    assert b.alarm().condition_active


def test_latched_alarm_is_kept_open_and_marked(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True, eflags=codes.EF_LATCHED)
    assert b.alarm().latched
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 1
    a = b.alarm()
    note = REASON + "; latched on the gateway: needs an operator's reset"
    assert (a.status, a.condition_active, a.cleared_by) == ("acknowledged", True, None)
    assert (a.needs_reset, a.note, a.confirm_boot) == (True, note, None)
    assert b.comments() == [("cloud", note)]
    b.at(T + 100_000).send(2, 3, birth())  # a reconnect birth: nothing new to await
    assert b.alarm().confirm_boot is None
    assert b.sweep() == 0


def test_test_mode_alarm_follows_the_same_rules(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True, eflags=codes.EF_TEST)
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 1
    a = b.alarm()
    assert (a.test, a.status, a.cleared_by, a.note) == (True, "cleared", "cloud", REASON)


def test_duplicate_birth_and_reconnect_births_move_nothing(
    sessions: sessionmaker[Session],
) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    assert b.at(T + 4000).send(2, 1, birth()) == (0, 1)  # redelivered: stored once, acts once
    assert b.alarm().confirm_by_ms == T + 1000 + W
    b.at(T + 4500).send(2, 2, birth())  # a reconnect within boot 2 is a new birth, same boot
    assert b.alarm().confirm_by_ms == T + 1000 + W
    b.send(1, 9, birth(), flags=codes.BF_REPLAYED)  # boot 1's own birth, replayed late
    assert (b.alarm().confirm_boot, b.alarm().confirm_by_ms) == (2, T + 1000 + W)
    b.at(T + 1000 + W).send(2, 3, heartbeat())
    assert b.sweep() == 1
    assert b.alarm().cleared_by == "cloud"


def test_a_gateway_silent_since_its_birth_is_not_settled(sessions: sessionmaker[Session]) -> None:
    """No message since the deadline: no evidence the new boot did not raise it."""
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    assert b.at(T + 1000 + W + 30_000).sweep() == 0
    assert b.alarm().confirm_boot == 2
    b.send(2, 2, heartbeat())
    assert b.sweep() == 1


def test_late_boot_1_normal_clears_as_usual(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    b.at(T + 2000).send(1, 4, fire(codes.NORMAL), flags=codes.BF_REPLAYED)  # boot 1's backlog
    a = b.alarm()
    assert (a.status, a.cleared_by, a.confirm_boot, a.note) == ("cleared", "device", None, None)
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 0
    assert b.comments() == []


def test_late_boot_1_activation_does_not_confirm(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    # boot 1's backlog: normal, then active again before the power cut
    b.at(T + 2000).send(
        1, 4, fire(codes.NORMAL), fire(codes.ACTIVE, 100), flags=codes.BF_REPLAYED, t0=T + 100
    )
    alarms = b.alarms()
    assert [(a.status, a.cleared_by) for a in alarms] == [("cleared", "device"), ("active", None)]
    # the re-opened alarm is history of a boot that has ended: it awaits boot 2 too
    assert (alarms[1].late, alarms[1].active_boot, alarms[1].confirm_boot) == (True, 1, 2)
    assert alarms[1].confirm_by_ms == T + 2000 + W
    b.at(T + 2000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 1
    a = b.alarms()[1]
    assert (a.status, a.condition_active, a.note) == ("active", False, REASON)


def test_late_boot_1_activation_on_an_awaiting_alarm(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    b.at(T + 2000).send(1, 4, fire(codes.ACTIVE), flags=codes.BF_REPLAYED, t0=T + 500)
    a = b.alarm()
    assert (a.active_boot, a.confirm_boot, a.confirm_by_ms) == (1, 2, T + 1000 + W)
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    assert b.sweep() == 1
    assert b.alarm().cleared_by == "cloud"


def test_late_boot_1_normal_after_boot_2_re_raised_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    b = Bench(sessions)
    b.open_then_restart(acked=True)
    b.at(T + 1500).send(2, 2, fire(codes.ACTIVE))
    b.at(T + 2000).send(1, 4, fire(codes.NORMAL), flags=codes.BF_REPLAYED, t0=T + 100)
    a = b.alarm()
    assert (a.status, a.condition_active, a.active_boot) == ("acknowledged", True, 2)


def test_two_sweepers_settle_an_alarm_once(sessions: sessionmaker[Session]) -> None:
    b = Bench(sessions)
    for i in range(8):
        b.at(T).send(1, 10 + i, messages.Event(codes.FAULT, 0, SRC + i, state=codes.ACTIVE))
    b.at(T + 1000).send(2, 1, birth())
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    counts: list[int] = []
    gate = threading.Barrier(2)

    def sweeper() -> None:
        gate.wait()
        counts.append(b.sweep())

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 8
    assert len(b.comments()) == 8
    assert all(a.note == REASON and not a.condition_active for a in b.alarms())


def test_api_shows_the_reason_and_the_cloud_comment(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    """Gateway 10 of the world fixture, fed by the ingestor; read back through the API."""
    b = Bench.__new__(Bench)
    b.sessions, b.gw, b.clock = sessions, 10, Clock(T)
    b.ing = Ingestor(sessions, policy=POLICY, clock=b.clock)
    b.open_then_restart(acked=True)
    h = world.auth("operator")
    aid = b.alarm().id
    r = client.get(f"/api/v1/alarms/{aid}", headers=h).json()
    assert (r["confirm_boot"], r["confirm_by_ms"], r["active_boot"]) == (2, T + 1000 + W, 1)
    b.at(T + 1000 + W).send(2, 2, heartbeat())
    b.sweep()
    r = client.get(f"/api/v1/alarms/{aid}", headers=h).json()
    assert (r["status"], r["cleared_by"], r["note"], r["needs_reset"]) == (
        "cleared",
        "cloud",
        REASON,
        False,
    )
    comments = client.get(f"/api/v1/alarms/{aid}/comments", headers=h).json()
    assert [(c["author"], c["text"]) for c in comments] == [("cloud", REASON)]
