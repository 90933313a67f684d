"""The whole gateway as a process: `emberlink gateway run` against the simulator (ptys + TCP)
and a real Mosquitto; SIGTERM flushes and publishes the death; bad configs exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from emberlink.edge import cli, config
from emberlink.protocol import codes, release
from emberlink.protocol.messages import Event
from emberlink.tools.simulator import Site

from .conftest import Broker, site_toml, wait_for
from .test_uplink import GW, collector, collector_for

pytestmark = [pytest.mark.broker, pytest.mark.modbus, pytest.mark.slow]


def kinds(c, kind: int, code: int | None = None):  # type: ignore[no-untyped-def]
    return [
        (s, e) for _, s, e, _ in c.events() if e.kind == kind and (code is None or e.code == code)
    ]


async def test_gateway_process_end_to_end(tmp_path: Path, broker: Broker) -> None:
    cfg_path = site_toml(
        tmp_path, broker.port, gw=GW,
        rtu=[(1, "fire_panel"), (2, "acrel_asj"), (3, "smoke_loop")],
        tcp=[(1, "efm_multi")],
        series_s=2,
    )  # fmt: skip
    cfg = config.load(cfg_path)
    # systemd's notify socket, as systemd would pass it (Type=notify, WatchdogSec=1)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000")
    states: list[str] = []

    async def read_notify() -> None:
        while True:
            with contextlib.suppress(BlockingIOError):
                while True:
                    states.append(notify.recv(256).decode())
            await asyncio.sleep(0.05)

    reader = asyncio.create_task(read_notify())
    log_file = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - a pipe nobody reads would block
    async with Site(cfg) as site, collector(broker.port) as c:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emberlink.tools.cli", "gateway", "run", "--config",
            str(cfg_path), stderr=log_file, env=env,
        )  # fmt: skip
        try:
            await wait_for(lambda: kinds(c, codes.BIRTH), 40)
            # 1. a panel's fire bit passes through as FIRE_ALARM (panel_status)
            site.device("rtu-1").set_bit("system_status", 1, True)
            await wait_for(lambda: kinds(c, codes.FIRE_ALARM, 10), 20)
            ((_, ev),) = kinds(c, codes.FIRE_ALARM, 10)
            assert ev.state == codes.ACTIVE and ev.src == (1 << 24) | (1 << 16) | 1
            # 2. residual current above the profile's 300 mA setting: the core's detector alarms
            site.device("tcp-1").set("residual_current", 450)
            await wait_for(lambda: kinds(c, codes.FIRE_ALARM, 4), 60)  # two 5 s telemetry polls
            # 3. a temperature probe breaks: a fault, never a zero reading
            site.device("tcp-1").set_raw("temperature_2", 32767)
            await wait_for(lambda: kinds(c, codes.FAULT, 53), 30)
            # 4. a silent device: COMMS lost, then restored
            site.device("rtu-2").mode = "silent"
            await wait_for(lambda: [e for _, e in kinds(c, codes.COMMS) if e.state], 30)
            site.device("rtu-2").mode = "ok"
            await wait_for(lambda: [e for _, e in kinds(c, codes.COMMS) if not e.state], 40)
            # 5. telemetry flows as series
            await wait_for(lambda: kinds(c, codes.MEASUREMENT), 20)
            # 6. SIGTERM: flush, publish the death (clean_shutdown), exit 0
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 20)
            assert rc == 0
            await wait_for(lambda: any(b.events[0].kind == codes.DEATH
                                       for b in c.batches("state")), 5)  # fmt: skip
            death = [b for b in c.batches("state") if b.events[0].kind == codes.DEATH][-1]
            assert death.events[0].code == 101
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log_file.close()
        await asyncio.sleep(0.2)
        reader.cancel()
        notify.close()
        assert states[0] == "READY=1" and "WATCHDOG=1" in states and states[-1] == "STOPPING=1"
        # no hole in what was published: every seq from 1 to the last arrived (or is stored)
        seqs = sorted({s for b, s, _, _ in c.events() if b == 1})
        from emberlink.edge.outbox import Outbox

        ob = Outbox(cfg.outbox.path, new_boot=False)
        stored = {s for b, s in ob.stored_keys() if b == 1}
        assert set(range(1, ob.last_seq(1) + 1)) <= set(seqs) | stored
        ob.close()
    health = (cfg.outbox.path.parent / "health.json").read_text()
    assert '"boot": 1' in health


def test_bad_config_exits_2_with_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\nid = 1\n[[bus]]\nid = 1\ntype = "rtu"\ndevice = "/dev/x"\nbaud = 7\n')
    assert cli.main(["run", "--config", str(p)]) == 2
    assert "bus[0].baud: 7 not in 300..1000000" in capsys.readouterr().err
    p.write_text('[gateway]\nid = 1\n[[device]]\nbus = 9\nunit = 1\nprofile = "acrel_asj"\n')
    assert cli.main(["check", "--config", str(p)]) == 2
    assert "device[0].bus: no bus with id 9" in capsys.readouterr().err
    p.write_text("[gateway\n")
    assert cli.main(["check", "--config", str(p)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_check_prints_the_plan_and_budget_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devs = "".join(
        f'[[device]]\nbus = 1\nunit = {u}\nprofile = "efm_multi"\n' for u in range(1, 32)
    )
    p = tmp_path / "gw.toml"
    p.write_text(f'[gateway]\nid = 1\n[[bus]]\nid = 1\ntype = "rtu"\ndevice = "/dev/x"\n'
                 f'baud = 1200\n{devs}')  # fmt: skip
    assert cli.main(["check", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "31 devices" in out and "WARNING" in out


async def test_store_failure_holds_events_in_memory_and_keeps_order(tmp_path: Path) -> None:
    from emberlink.edge.outbox import Outbox
    from emberlink.edge.service import Gateway
    from emberlink.protocol.messages import Event

    gw = Gateway(config.load(site_toml(tmp_path, 1)))
    path = gw.outbox.path
    gw.outbox.db.close()  # the store fails (as on a full or dead SD card)
    a1 = Event(codes.FIRE_ALARM, 0, 1, state=codes.ACTIVE, code=10)
    gw.emit(a1, 1_700_000_000_000)  # logged, held: never raised into the poller
    assert len(gw._spill) == 1
    gw.outbox = Outbox(path, new_boot=False)  # the store works again
    a2 = Event(codes.FIRE_ALARM, 0, 2, state=codes.ACTIVE, code=10)
    gw.emit(a2, 1_700_000_000_100)
    assert gw._spill == []
    rows = gw.outbox.db.execute("SELECT seq, t_ms FROM events ORDER BY seq").fetchall()
    assert [t for _, t in rows] == [1_700_000_000_000, 1_700_000_000_100]
    gw.outbox.close()


async def test_kill_9_gateway_then_restart_delivers_every_seq(
    tmp_path: Path, broker: Broker
) -> None:
    """Power cut mid-stream: after a restart every seq of the killed boot reaches the broker."""
    cfg_path = site_toml(tmp_path, broker.port, gw=GW + 1, tcp=[(1, "fire_panel")], series_s=1)
    cfg = config.load(cfg_path)
    argv = [
        sys.executable,
        "-m",
        "emberlink.tools.cli",
        "gateway",
        "run",
        "--config",
        str(cfg_path),
    ]
    got: set[tuple[int, int]] = set()
    async with Site(cfg, wire_time=False) as site, collector_for(broker.port, GW + 1) as c:
        proc = await asyncio.create_subprocess_exec(*argv, stderr=subprocess.DEVNULL)
        m = site.device("tcp-1")
        for i in range(12):  # alarms and series flowing while the power goes
            m.set_bit("system_status", 1, bool(i % 2))
            await asyncio.sleep(0.25)
        proc.kill()  # SIGKILL: no flush, no death; the broker sends the will
        await proc.wait()
        await wait_for(lambda: any(b.events[0].code == 102 for b in c.batches("state")), 30)
        from emberlink.edge.outbox import Outbox

        ob = Outbox(cfg.outbox.path, new_boot=False)
        last1 = ob.last_seq(1)
        left = {s for b, s in ob.stored_keys() if b == 1}  # not yet PUBACKed at the kill
        ob.close()
        proc = await asyncio.create_subprocess_exec(*argv, stderr=subprocess.DEVNULL)
        try:
            await wait_for(lambda: any(b.boot == 2 for b in c.batches("state")), 40)

            def complete() -> bool:
                got.update((b, s) for b, s, _, _ in c.events())
                return {s for b, s in got if b == 1} >= set(range(1, last1 + 1))

            await wait_for(complete, 40)
            assert last1 >= 3  # birth, health and at least one alarm were stored in boot 1
            # what was left in the store went out again after the restart, marked replayed
            replayed = {s for b, s, _, f in c.events() if b == 1 and f & codes.BF_REPLAYED}
            assert left <= replayed
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)


def _rows(gw: Any) -> list[Event]:
    from emberlink.protocol import cbor
    from emberlink.protocol.messages import event_from_map

    out = []
    for (body,) in gw.outbox.db.execute("SELECT body FROM events ORDER BY seq"):
        m = cbor.loads(body)
        m[1] = 0
        out.append(event_from_map(m))
    return out


async def test_reset_and_test_mode_commands(tmp_path: Path) -> None:
    from emberlink.edge.service import Gateway
    from emberlink.protocol import messages
    from emberlink.protocol import profile as schema

    gw = Gateway(config.load(site_toml(tmp_path, 1, tcp=[(1, "acrel_asj"), (2, "fire_panel")])))
    asj, panel = gw.links[0].devices
    rc = next(b for b in schema.plan_reads(asj.cfg.profile["points"]) if b["address"] == 0)
    t = 1_700_000_000_000
    for i in range(3):  # 450 mA: the core latches a residual-current alarm
        gw.points.on_block(asj, rc, [450] + [0] * (rc["count"] - 1), t + 5000 * i)
    gw.points.on_block(asj, rc, [0] * rc["count"], t + 20_000)  # cause gone, alarm latched
    src = schema.src_of(2, 1, 1)
    assert [e for e in _rows(gw) if e.kind == codes.FIRE_ALARM and e.src == src][-1].state == 1
    res = gw.handle_command(messages.OP_RESET, {0: asj.src})
    assert res[0] == messages.RES_OK
    evs = [e for e in _rows(gw) if e.src == src]
    assert any(e.kind == codes.RESET for e in evs)
    assert [e for e in evs if e.kind == codes.FIRE_ALARM][-1].state == codes.NORMAL
    # test mode for the panel only: its fire bit now raises a FIRE_ALARM flagged as a test
    assert gw.handle_command(messages.OP_TEST_MODE, {0: 1, 2: panel.src})[0] == messages.RES_OK
    blk = schema.plan_reads([p for p in panel.cfg.profile["points"] if p["class"] == "status"])[0]
    gw.points.on_block(panel, blk, [0b10, 0], t + 30_000)
    fire = [e for e in _rows(gw) if e.kind == codes.FIRE_ALARM and e.src >> 16 == panel.src >> 16]
    assert fire[-1].eflags & codes.EF_TEST
    modes = [e for e in _rows(gw) if e.kind == codes.TEST_MODE]
    assert modes[-1].src == panel.src and modes[-1].state == codes.ACTIVE
    assert gw.handle_command(messages.OP_TEST_MODE, {0: 7})[0] == messages.RES_BAD_ARGS
    assert gw.handle_command(99, {})[0] == messages.RES_UNKNOWN_OP
    gw.outbox.close()


async def test_watchdog_fed_while_every_device_is_down(tmp_path: Path, monkeypatch: Any) -> None:
    """Dead devices and no broker are not a wedged process: systemd must not restart it."""
    from emberlink.edge.service import Gateway

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    # nothing listens on the device's port, and the broker port is closed too
    gw = Gateway(config.load(site_toml(tmp_path, 1, tcp=[(1, "fire_panel")])))
    task = asyncio.create_task(gw.run())
    await asyncio.sleep(4)
    gw.stop()
    await asyncio.wait_for(task, 20)
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(64).decode())
    sock.close()
    assert gw.links[0].devices[0].polls_ok == 0
    assert got.count("WATCHDOG=1") >= 5


def test_two_buses_on_one_link_refused(tmp_path: Path) -> None:
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\nid = 1\n[[bus]]\nid = 1\ntype = "tcp"\nhost = "10.0.0.5"\n'
                 '[[bus]]\nid = 2\ntype = "tcp"\nhost = "10.0.0.5"\nport = 502\n')  # fmt: skip
    with pytest.raises(config.ConfigError, match="also another bus's link") as ei:
        config.load(p)
    assert ei.value.field == "bus[0]"


def test_low_disk_raises_and_clears_a_fault(tmp_path: Path, monkeypatch: Any) -> None:
    from emberlink.edge import health, service

    gw = service.Gateway(config.load(site_toml(tmp_path, 1)))
    monkeypatch.setattr(health, "disk_free_kb", lambda path: 1024)
    gw.heartbeat()
    gw.heartbeat()  # once, not on every heartbeat
    monkeypatch.setattr(health, "disk_free_kb", lambda path: 10**7)
    gw.heartbeat()
    faults = [e for e in _rows(gw) if e.kind == codes.FAULT and e.code == 105]
    assert [e.state for e in faults] == [codes.ACTIVE, codes.NORMAL]
    gw.outbox.close()


async def test_heartbeat_puback_deadline_detects_a_broker_that_stops_answering(
    tmp_path: Path,
) -> None:
    """A broker frozen by SIGSTOP: TCP stays up (the kernel still ACKs), nothing answers.

    Only the gateway's own heartbeat is flowing (no devices, no alarms); its PUBACK deadline,
    not the 60 s keepalive, tears the session down, and after SIGCONT the gateway reconnects
    and delivers what it stored meanwhile.
    """
    from emberlink.edge.service import Gateway
    from emberlink.edge.uplink import LinkState

    b = Broker(tmp_path).start()
    assert b.proc is not None
    p = site_toml(tmp_path, b.port, extra_mqtt="keepalive_s = 60")
    p.write_text(p.read_text().replace("heartbeat_s = 30", "heartbeat_s = 1")
                 .replace("puback_timeout_s = 5", "puback_timeout_s = 1"))  # fmt: skip
    gw = Gateway(config.load(p))
    task = asyncio.create_task(gw.run())
    loop = asyncio.get_running_loop()
    try:
        await wait_for(lambda: gw.uplink.state is LinkState.CONNECTED and gw.uplink.published, 10)
        os.kill(b.proc.pid, signal.SIGSTOP)
        frozen_at = loop.time()
        await wait_for(lambda: gw.uplink.state is not LinkState.CONNECTED, 15)
        # heartbeat (1 s) + PUBACK deadline (1 s) + scheduling slack, far below the keepalive
        assert loop.time() - frozen_at < 8
        assert gw.uplink.connects == 1
        await asyncio.sleep(1.5)  # heartbeats go on being stored while the link is down
        waiting = set(gw.outbox.stored_keys())
        assert waiting
        os.kill(b.proc.pid, signal.SIGCONT)
        await wait_for(lambda: gw.uplink.connects >= 2, 30)
        await wait_for(lambda: not waiting & set(gw.outbox.stored_keys()), 15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(b.proc.pid, signal.SIGCONT)
        gw.stop()
        await asyncio.wait_for(task, 20)
        b.stop()


async def test_heartbeat_carries_the_health_fields(tmp_path: Path) -> None:
    """One heartbeat after real polls: one device answers, one is silent (down after 1)."""
    import json

    from emberlink.edge import health
    from emberlink.edge.service import Gateway

    cfg = config.load(site_toml(tmp_path, 1, tcp=[(1, "fire_panel"), (2, "fire_panel")],
                                extra_bus="down_after = 1"))  # fmt: skip
    async with Site(cfg, wire_time=False) as site:
        site.device("tcp-2").mode = "silent"
        gw = Gateway(cfg)
        alive, silent = gw.links[0].devices
        now = gw.clock.now_ms()
        gw.outbox.append(Event(codes.FIRE_ALARM, 0, alive.src, state=1, code=10), now - 5000)
        gw.outbox.append(Event(codes.MEASUREMENT, 0, 3, period=1000, samples=[1]), now - 9000)
        task = asyncio.create_task(gw.links[0].run())
        try:
            await wait_for(lambda: alive.polls_ok >= 2 and silent.polls_failed >= 1, 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    st = gw.outbox.stats(gw.clock.now_ms())  # what the first heartbeat must report
    gw.heartbeat()
    gw.clock.sync(gw.clock.now_ms())  # the cloud's time sync
    gw.heartbeat()
    beats = [e for e in _rows(gw) if e.kind == codes.HEALTH]
    mine = [health.named(e.health) for e in beats if e.src == 0]
    assert len(mine) == 2
    h = mine[0]
    assert h["uptime_s"] >= 0 and h["heartbeat_s"] == 30 and h["disk_free_kb"] > 0
    # depth and oldest age per class (the seeded alarm and sample are the oldest of each)
    assert h["outbox_priority_depth"] == st["priority"][0] >= 1
    assert h["outbox_telemetry_depth"] == st["telemetry"][0] >= 1
    assert h["outbox_depth"] == sum(n for n, _ in st.values())
    assert 5 <= h["outbox_priority_oldest_s"] <= 7 and 9 <= h["outbox_telemetry_oldest_s"] <= 11
    assert h["devices_ok"] == 1 and h["devices_down"] == 1
    assert h["polls_ok"] == alive.polls_ok and h["polls_failed"] == silent.polls_failed
    assert h["clock_synced"] == int(os.path.exists(gw.clock.SYNC_MARKER))
    assert mine[1]["clock_synced"] == 1
    assert ("cpu_temp_dC" in h) == (health.cpu_temp_dC() is not None)  # where the board has it
    # poll success and failure per device
    per_dev = {e.src: e.health for e in beats[:3] if e.src != 0}
    assert per_dev[alive.src] == {2: alive.polls_ok, 3: 0, 7: 0}
    assert per_dev[silent.src][3] >= 1 and per_dev[silent.src][7] == 1
    # the software version: in every heartbeat (as a number), in every birth and in health.json
    assert h["sw_version"] == release.version_code(gw.version) > 0
    assert release.version_text(h["sw_version"]) == gw.version.split("+")[0]
    assert gw.birth_info()[0] == gw.version
    status = json.loads((cfg.outbox.path.parent / "health.json").read_text())
    assert status["version"] == gw.version and status["devices"]["tcp-2"]["health"] == "down"
    gw.outbox.close()


def test_cpu_temperature_from_the_thermal_zone(tmp_path: Path) -> None:
    from emberlink.edge import health

    zone = tmp_path / "temp"
    zone.write_text("48312\n")  # m°C, as /sys/class/thermal/thermal_zone0/temp
    assert health.cpu_temp_dC(zone) == 483
    assert health.cpu_temp_dC(tmp_path / "absent") is None
