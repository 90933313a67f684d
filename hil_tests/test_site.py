"""Scenarios on a healthy network: each condition travels from a Modbus register to the cloud
database within its bound, with nothing lost and nothing stored twice.

Roles: site (simulated devices, the test changes registers), gateway (the real process),
broker, cloud (ingest + API on PostgreSQL). Checkpoints: the gateway's birth in the database,
then one condition per scenario.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from emberlink.protocol import codes

from . import bench
from .bench import EFM, PANEL, RELAY, SMOKE, Result, await_alarm, src
from .conftest import Bench, make_bench
from .harness import Broker, Cloud, wait_until

pytestmark = [pytest.mark.hil, pytest.mark.broker, pytest.mark.postgres, pytest.mark.modbus]

GW = 9101
SETTLE_S = 2.5  # two telemetry polls: the gateway has seen the value the test just set
DEVICE_DOWN_S = 20.0  # down_after 3 failures at one status poll a second, then the report


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, broker: Broker, cloud: Cloud) -> Iterator[Bench]:
    yield from make_bench(tmp_path_factory.mktemp("site"), broker, cloud, GW)


def finish(b: Bench, r: Result) -> None:
    r.lost, r.duplicates = b.check_nothing_lost()
    r.save()


PANEL_REPEATS = 10  # fire alarms per run: enough for a p50 and a rough p99
OVERHEAT_REPEATS = 5


def wait_normal(b: Bench, kind: int, src_: int, after_ms: int, what: str) -> None:
    wait_until(
        f"{what}: back to normal in the cloud database",
        lambda: [r for r in bench.events(b.cloud, GW, after_ms)
                 if r.kind == kind and r.src == src_ and r.state == codes.NORMAL],
        bench.ALARM_WAIT_S,
    )  # fmt: skip


def test_panel_fire_in_a_zone(site: Bench) -> None:
    bound = bench.STATUS_MS + bench.MARGIN_MS
    lats = []
    for i in range(PANEL_REPEATS):
        t = site.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=True)
        _row, lat = await_alarm(site.cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), 10, t, bound,
                                f"the panel's fire alarm #{i + 1}")  # fmt: skip
        lats.append(lat)
        # one open alarm object for the point, however often the fire comes and goes
        assert site.cloud.sql(
            "SELECT count(*) FROM alarms WHERE gateway_id=%s AND src=%s AND kind=1 "
            "AND status != 'cleared'", GW, src(PANEL, 1)) == [(1,)]  # fmt: skip
        t = site.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=False)
        wait_normal(site, codes.FIRE_ALARM, src(PANEL, 1), t, "the panel's fire")
    finish(site, Result("panel fire (status bit, RTU)", latencies_ms=lats, bound_ms=bound))


def test_residual_current_ramp_past_the_setpoint(site: Bench) -> None:
    # 40 -> 480 mA over 4.4 s: 300 mA (the ASJ profile's alarm setting) is crossed 2.6 s in
    t0 = site.site.step(
        device=RELAY[2],
        action="ramp",
        point="residual_current",
        **{"from": 40, "to": 480, "over_s": 4.4},
    )
    crossed = t0 + 2600
    bound = bench.TELEMETRY_MS + 1000 + bench.MARGIN_MS  # poll + the profile's hold_ms
    row, lat = await_alarm(
        site.cloud,
        GW,
        codes.FIRE_ALARM,
        src(RELAY, 1),
        4,
        crossed,
        bound,
        "the residual-current alarm",
    )
    assert row.data["val"] >= 300
    # the pre-alarm (240 mA) came first
    pre = bench.alarm_rows(site.cloud, GW, codes.PRE_ALARM, src(RELAY, 1), 4, t0)
    assert pre and pre[0].seq < row.seq
    site.site.step(device=RELAY[2], action="set", point="residual_current", value=30)
    finish(site, Result("residual current ramp", latencies_ms=[lat], bound_ms=bound))


def test_smoke_rising_with_alarm_verification(site: Bench) -> None:
    d = SMOKE[2]
    s1 = src(SMOKE, 1)
    # a puff: over the alarm level for one poll, then clean air: verification starts, no alarm
    t_puff = site.site.step(device=d, action="set", point="obscuration_1", value=500)
    wait_until("the puff to be polled", lambda: site.site.device(d).requests > 0, 5)
    time.sleep(1.5)
    site.site.step(device=d, action="set", point="obscuration_1", value=50)
    time.sleep(2.5)
    assert not bench.alarm_rows(site.cloud, GW, codes.FIRE_ALARM, s1, 1, t_puff), (
        "a one-poll puff raised a fire alarm: verification did not hold it back"
    )
    # smoke rising for real within the confirmation window: the re-alarm is verified at once
    t0 = site.site.step(
        device=d, action="ramp", point="obscuration_1", **{"from": 50, "to": 600, "over_s": 2.2}
    )
    crossed = t0 + 1400  # 4.00 %/m of 0.50 -> 6.00 over 2.2 s
    bound = bench.TELEMETRY_MS + bench.MARGIN_MS
    row, lat = await_alarm(
        site.cloud, GW, codes.FIRE_ALARM, s1, 1, crossed, bound, "the verified smoke alarm"
    )
    assert row.data.get("eflags", 0) & codes.EF_VERIFIED, row.data
    site.site.step(device=d, action="set", point="obscuration_1", value=50)
    finish(
        site,
        Result(
            "smoke with alarm verification",
            latencies_ms=[lat],
            bound_ms=bound,
            note="a 1.5 s puff raised nothing; the re-alarm came verified",
        ),
    )


# IEC standard inverse, TMS 0.1 (efm_multi phase A): t = 0.014 / ((I/Is)^0.02 - 1)
TRIP_MS = {2: 1003, 10: 297}


@pytest.mark.parametrize("k", [2, 10])
def test_overcurrent_at_k_times_pickup(site: Bench, k: int) -> None:
    s6 = src(EFM, 6)
    t = site.site.step(
        device=EFM[2], action="overcurrent", point="phase_a_current", k=k, pickup=6300
    )
    bound = bench.TELEMETRY_MS + TRIP_MS[k] + bench.MARGIN_MS
    rows = wait_until(
        f"an overcurrent alarm at {k} x pickup in the cloud database",
        lambda: [
            r
            for r in bench.events(site.cloud, GW, t - 1000)
            if r.src == s6 and r.state == codes.ACTIVE and r.code in (6, 7, 8)
        ],
        bench.ALARM_WAIT_S,
    )
    lat = rows[0].received_ms - t
    # the core reports an overcurrent trip as a latched supervisory alarm (inverse curve: 6)
    assert (rows[0].kind, rows[0].code) == (codes.SUPERVISORY, 6), rows[0]
    assert rows[0].data["eflags"] & codes.EF_LATCHED and lat <= bound, (rows[0], lat, bound)
    site.site.step(device=EFM[2], action="set", point="phase_a_current", value=2000)
    time.sleep(SETTLE_S)  # the normal current is polled before the reset
    # latched: the operator's reset (through the cloud API) re-arms it for the next trip
    site.cloud.command(GW, "reset", src=s6)
    wait_until(
        "the overcurrent alarm reset",
        lambda: [
            r
            for r in bench.events(site.cloud, GW, t)
            if r.src == s6 and r.kind == codes.SUPERVISORY and r.state == codes.NORMAL
        ],
        bench.ALARM_WAIT_S,
    )
    finish(
        site,
        Result(
            f"overcurrent {k} x pickup",
            latencies_ms=[lat],
            bound_ms=bound,
            note=f"IEC SI curve trips after {TRIP_MS[k]} ms",
        ),
    )


def test_cable_overheat(site: Bench) -> None:
    bound = bench.TELEMETRY_MS + bench.MARGIN_MS
    lats = []
    for i in range(OVERHEAT_REPEATS):
        t = site.site.step(device=EFM[2], action="set", point="temperature_1", value=950)
        _row, lat = await_alarm(site.cloud, GW, codes.FIRE_ALARM, src(EFM, 2), 5, t, bound,
                                f"cable-temperature alarm #{i + 1} (95.0 Cel > 80.0)")  # fmt: skip
        lats.append(lat)
        t = site.site.step(device=EFM[2], action="set", point="temperature_1", value=300)
        time.sleep(SETTLE_S)  # the normal temperature is polled before the reset
        site.cloud.command(GW, "reset", src=src(EFM, 2))  # the alarm latches
        wait_normal(site, codes.FIRE_ALARM, src(EFM, 2), t, "the cable temperature")
    finish(site, Result("cable overheat (TCP)", latencies_ms=lats, bound_ms=bound))


def test_detector_break_line(site: Bench) -> None:
    t = site.site.step(device=EFM[2], action="break", point="temperature_2")
    bound = bench.TELEMETRY_MS + bench.MARGIN_MS
    _row, lat = await_alarm(
        site.cloud, GW, codes.FAULT, src(EFM, 3), 53, t, bound, "the break-line fault"
    )
    # a broken probe is a fault, never a reading: no temperature alarm from it
    assert not bench.alarm_rows(site.cloud, GW, codes.FIRE_ALARM, src(EFM, 3), 5, t)
    site.site.step(device=EFM[2], action="set", point="temperature_2", value=300)
    finish(site, Result("detector break line", latencies_ms=[lat], bound_ms=bound))


def device_transitions(b: Bench, unit: tuple[int, int, str], since_ms: int) -> list[str]:
    rows = b.cloud.sql(
        "SELECT h.to_status FROM health_transitions h JOIN devices d ON d.id = h.device_id "
        "WHERE d.gateway_id = %s AND d.bus = %s AND d.unit_addr = %s AND h.at_ms >= %s "
        "ORDER BY h.id",
        GW,
        unit[0],
        unit[1],
        since_ms,
    )
    return [r[0] for r in rows]


def comms_lost_and_restored(
    b: Bench, dev: tuple[int, int, str], mode: str, code: int, what: str
) -> Result:
    t = b.site.step(device=dev[2], action=mode)
    # down after down_after (3) failed status polls, one a second
    bound = 3 * bench.STATUS_MS + bench.MARGIN_MS
    _row, lat = await_alarm(b.cloud, GW, codes.COMMS, src(dev), code, t, bound, what)
    # its neighbours on the same RS-485 line kept answering meanwhile
    other = RELAY if dev != RELAY else PANEL
    before = b.site.device(other[2]).requests
    wait_until(
        f"{other[2]} to keep being polled",
        lambda: b.site.device(other[2]).requests >= before + 3,
        10,
    )
    t_ok = b.site.step(device=dev[2], action="ok")
    wait_until(
        f"{what}: restored in the cloud database",
        lambda: [
            r
            for r in bench.events(b.cloud, GW, t_ok - 1000)
            if r.kind == codes.COMMS and r.src == src(dev) and r.state == codes.NORMAL
        ],
        bench.ALARM_WAIT_S,
    )
    wait_until(
        f"{what}: device health offline then online in the cloud",
        lambda: device_transitions(b, dev, t - 1000)[-2:] == ["offline", "online"],
        DEVICE_DOWN_S,
    )
    return Result(what, latencies_ms=[lat], bound_ms=bound)


def test_device_silent_then_back(site: Bench) -> None:
    r = comms_lost_and_restored(site, RELAY, "silent", 55, "device silent")
    finish(site, r)


def test_garbage_on_the_bus(site: Bench) -> None:
    r = comms_lost_and_restored(site, PANEL, "garbage", 56, "garbage on the bus (bad CRC)")
    finish(site, r)


BROKER_DOWN_S = 4.0  # the broker is away this long
RECONNECT_MS = 2000  # the gateway's backoff_max_s: its longest wait before reconnecting


def test_broker_restart(site: Bench) -> None:
    """The broker dies (kill -9, no persistence) while a fire starts, and comes back: the
    gateway and the ingest worker reconnect and the alarm arrives; nothing lost or doubled."""
    site.broker.proc.kill9()
    t = site.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=True)
    time.sleep(BROKER_DOWN_S)
    site.broker.start()
    up = bench.now_ms()
    bound = int(BROKER_DOWN_S * 1000) + RECONNECT_MS + bench.STATUS_MS + bench.MARGIN_MS
    _row, lat = await_alarm(
        site.cloud,
        GW,
        codes.FIRE_ALARM,
        src(PANEL, 1),
        10,
        t,
        bound,
        "the fire raised while the broker was down",
        national=False,
    )
    site.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=False)
    finish(
        site,
        Result(
            "broker restart (4 s down)",
            latencies_ms=[lat],
            bound_ms=bound,
            note=f"{t + lat - up} ms after the broker was back",
        ),
    )
