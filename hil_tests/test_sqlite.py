"""The same end-to-end path on the embedded database: the cloud's API and ingest worker share one
SQLite file (as in the demo and small single-host installs) while the real gateway polls the
simulated site through a real Mosquitto.

Roles: site, gateway, broker, cloud (SQLite). Checkpoints: the gateway's birth in the database;
fire alarms from the panel within the bound; a gateway ``kill -9`` mid-burst and its restart,
after which the whole history of both boots is in the database once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from emberlink.protocol import codes

from . import bench
from .bench import PANEL, Result, await_alarm, src
from .conftest import Bench, own_stack
from .harness import wait_until

pytestmark = [pytest.mark.hil, pytest.mark.broker, pytest.mark.modbus]

GW = 9401
FIRE_REPEATS = 5
HEALTH_S = 30.0


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    yield from own_stack(tmp_path_factory, "sqlite", GW, database="sqlite")


def fire(b: Bench, on: bool) -> int:
    return b.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=on)


def fire_ended(b: Bench, after_ms: int) -> None:
    wait_until(
        "the end of the fire in the SQLite database",
        lambda: [r for r in bench.events(b.cloud, GW, after_ms)
                 if r.kind == codes.FIRE_ALARM and r.src == src(PANEL, 1)
                 and r.state == codes.NORMAL],
        bench.ALARM_WAIT_S,
    )  # fmt: skip


def test_sqlite_database_is_what_the_cloud_uses(lite: Bench) -> None:
    assert lite.cloud.database == "sqlite" and lite.cloud.sqlite_path.exists()
    births = lite.cloud.sql("SELECT count(*) FROM events WHERE gateway_id=%s AND kind=13", GW)
    assert births[0][0] >= 1


def test_panel_fire_on_sqlite(lite: Bench) -> None:
    bound = bench.STATUS_MS + bench.MARGIN_MS
    lats = []
    for i in range(FIRE_REPEATS):
        t = fire(lite, True)
        _row, lat = await_alarm(lite.cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), 10, t, bound,
                                f"the panel's fire alarm #{i + 1} (SQLite)")  # fmt: skip
        lats.append(lat)
        assert lite.cloud.sql(
            "SELECT count(*) FROM alarms WHERE gateway_id=%s AND src=%s AND kind=1 "
            "AND status != 'cleared'", GW, src(PANEL, 1)) == [(1,)]  # fmt: skip
        fire_ended(lite, fire(lite, False))
    r = Result("panel fire, cloud on SQLite", latencies_ms=lats, bound_ms=bound)
    r.lost, r.duplicates = lite.check_nothing_lost()
    r.save()


def test_gateway_kill_9_on_sqlite(lite: Bench) -> None:
    for i in range(6):  # alarms and telemetry flowing when the power goes
        fire(lite, i % 2 == 0)
        time.sleep(0.6)
    lite.gateway.kill9()
    lite.gateway.start()
    lite.birth(2)
    t = fire(lite, True)
    bound = bench.STATUS_MS + bench.MARGIN_MS
    _row, lat = await_alarm(
        lite.cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), 10, t, bound, "a fire after restart"
    )
    fire_ended(lite, fire(lite, False))
    boots = lite.cloud.sql("SELECT DISTINCT boot FROM events WHERE gateway_id=%s", GW)
    assert {b for (b,) in boots} >= {1, 2}
    wait_until(
        "the restarted gateway online in the SQLite database",
        lambda: (
            lite.cloud.sql("SELECT status FROM gateway_health WHERE gateway_id=%s", GW)
            == [("online",)]
        ),
        HEALTH_S,
    )
    r = Result(
        "gateway kill -9, cloud on SQLite",
        latencies_ms=[lat],
        bound_ms=bound,
        note="boot 1 and boot 2 complete",
    )
    r.lost, r.duplicates = lite.check_nothing_lost()
    r.save()
