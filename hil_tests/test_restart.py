"""A gateway restart and the alarms it left open: the cloud reconciles them.

Roles: site, gateway, and a broker and cloud of this module's own (PostgreSQL, with a 10 s
re-raise window: ``EMBERLINK_RESTART_CONFIRM_S``). The gateway's detectors start from normal
after a restart, so a fire that ended while the gateway was down is never reported NORMAL.
Checkpoints: a fire the operator acknowledged, the gateway ``kill -9``, the fire bit off while
it is down, the restart: the cloud clears the alarm ("cloud", with the reason) within the
window plus our margin after the new boot's birth; and a fire still on at the restart is raised
again by the new boot within the window and its alarm stays open, the same alarm object.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from emberlink.protocol import codes

from . import bench
from .bench import PANEL, Result, await_alarm, src
from .conftest import Bench, own_stack
from .harness import PROCESS_START_S, wait_until

pytestmark = [pytest.mark.hil, pytest.mark.broker, pytest.mark.postgres, pytest.mark.modbus]

GW = 9501
WINDOW_S = 10  # the cloud's re-raise window in this module (120 s by default)
FIRE_CODE = 10
REASON = "not reported active after gateway restart (boot {})"
# After the window: the sweep (every 0.5 s) settles an alarm once the gateway has been heard
# from since the deadline (a heartbeat every bench.HEARTBEAT_S at the latest), plus our margin.
SETTLE_BOUND_MS = WINDOW_S * 1000 + bench.HEARTBEAT_S * 1000 + bench.MARGIN_MS


@pytest.fixture(scope="module")
def rb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    yield from own_stack(tmp_path_factory, "restart", GW, restart_confirm_s=str(WINDOW_S))


def fire(b: Bench, on: bool) -> int:
    return b.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=on)


def fire_alarm(b: Bench, t: int, what: str) -> tuple[int, ...]:
    """Wait for the fire's ACTIVE event after ``t``; the open alarm's row."""
    await_alarm(b.cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), FIRE_CODE, t,
                bench.STATUS_MS + bench.MARGIN_MS, what)  # fmt: skip
    (row,) = b.cloud.sql(
        "SELECT id, status, active_boot FROM alarms WHERE gateway_id=%s AND src=%s AND kind=1 "
        "AND code=%s AND status != 'cleared'", GW, src(PANEL, 1), FIRE_CODE)  # fmt: skip
    return tuple(row)


def restart(b: Bench, boot: int) -> int:
    """kill -9, start, wait for the birth of ``boot``; the birth's received_ms (cloud clock)."""
    b.gateway.kill9()
    b.gateway.start()
    b.birth(boot)
    ((rcv,),) = b.cloud.sql(
        "SELECT min(received_ms) FROM events WHERE gateway_id=%s AND boot=%s AND kind=13", GW, boot
    )
    return int(rcv)


def test_fire_ended_while_down_is_cleared_by_the_cloud(rb: Bench) -> None:
    aid, status, _ = fire_alarm(rb, fire(rb, True), "the fire before the restart")
    assert status == "active"
    assert rb.cloud.http is not None
    r = rb.cloud.http.post(f"/alarms/{aid}/ack", json={"comment": "crew on the way"})
    assert r.status_code == 200, r.text
    rb.gateway.kill9()
    fire(rb, False)  # the fire ends while the gateway is down: boot 1 never reports NORMAL
    rb.gateway.start()
    rb.birth(2)
    ((birth_ms,),) = rb.cloud.sql(
        "SELECT min(received_ms) FROM events WHERE gateway_id=%s AND boot=2 AND kind=13", GW
    )
    wait_until(
        "the cloud clearing the alarm after the restart",
        lambda: rb.cloud.sql("SELECT 1 FROM alarms WHERE id=%s AND status='cleared'", aid),
        SETTLE_BOUND_MS / 1000 + 10,
    )
    a = rb.cloud.http.get(f"/alarms/{aid}").json()
    assert (a["status"], a["cleared_by"], a["condition_active"]) == ("cleared", "cloud", False)
    assert a["note"] == REASON.format(2)
    comments = rb.cloud.http.get(f"/alarms/{aid}/comments").json()
    assert [(c["author"], c["text"]) for c in comments][-1] == ("cloud", REASON.format(2))
    lat = a["cleared_ms"] - birth_ms
    assert WINDOW_S * 1000 <= lat <= SETTLE_BOUND_MS, f"cleared {lat} ms after the birth"
    reraised = [
        r
        for r in bench.events(rb.cloud, GW, birth_ms)
        if r.boot == 2 and r.kind == codes.FIRE_ALARM and r.state == codes.ACTIVE
    ]
    assert reraised == []
    r2 = Result(
        "restart: fire ended while down, cleared by the cloud",
        latencies_ms=[lat],
        bound_ms=SETTLE_BOUND_MS,
        note=f"birth of boot 2 -> cleared; window {WINDOW_S} s",
    )
    r2.lost, r2.duplicates = rb.check_nothing_lost()
    r2.save()


def test_fire_still_on_at_restart_stays_one_open_alarm(rb: Bench) -> None:
    t = fire(rb, True)
    aid, _, boot = fire_alarm(rb, t, "the fire before the second restart")
    birth_ms = restart(rb, boot + 1)  # the fire bit stays on
    rows = wait_until(
        "the new boot raising the fire again",
        lambda: [r for r in bench.events(rb.cloud, GW, birth_ms - 60_000)
                 if r.boot == boot + 1 and r.kind == codes.FIRE_ALARM
                 and r.state == codes.ACTIVE],
        PROCESS_START_S,
    )  # fmt: skip
    lat = rows[0].received_ms - birth_ms  # may be < 0: the first poll before the birth
    assert lat <= WINDOW_S * 1000, f"re-raised {lat} ms after the birth: outside the window"
    # Past the window and our margin (the gateway is heard from every second, the sweep runs
    # every 0.5 s): still the same open alarm, confirmed by the new boot, nothing awaited.
    time.sleep(max(0.0, (birth_ms + WINDOW_S * 1000 + bench.MARGIN_MS) / 1000 - time.time()))
    open_rows = rb.cloud.sql(
        "SELECT id, status, condition_active, active_boot, confirm_boot, cleared_by FROM alarms "
        "WHERE gateway_id=%s AND src=%s AND kind=1 AND code=%s AND status != 'cleared'",
        GW, src(PANEL, 1), FIRE_CODE)  # fmt: skip
    assert open_rows == [(aid, "active", True, boot + 1, None, None)]
    r = Result(
        "restart: fire still on, the alarm stays open",
        latencies_ms=[max(lat, 0)],
        bound_ms=WINDOW_S * 1000,
        note=f"re-raised by boot {boot + 1} after its birth; one alarm object",
    )
    r.lost, r.duplicates = rb.check_nothing_lost()
    r.save()
