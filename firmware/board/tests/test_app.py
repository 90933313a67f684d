"""The board application on micropython against the site simulator (socat ptys, pymodbus) and a
real Mosquitto: alarms delivered and decoded with the cloud's code, no event lost across
kill -9, and the same alarms as the Pi gateway on the same scenario."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from emberlink.edge import config as gwconfig
from emberlink.firmware.board import build
from emberlink.firmware.board import outbox as obx
from emberlink.protocol import cbor, codes, messages, wire
from emberlink.tools import simulator

from .conftest import HERE, Subscriber, mp_popen, site_toml

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.modbus]

ASJ = 3
PANEL = 5
RC_SRC = 1 << 24 | ASJ << 16 | 1  # acrel_asj point 1 (residual_current) on bus 1
PANEL_SRC = 1 << 24 | PANEL << 16 | 1  # fire_panel point 1 (system_status)
RC_CODE = codes.code_of(codes.CONDITION_NAMES, "residual_current", "code")


def make_site(tmp: Path, port: int, gw: int) -> Path:
    p = site_toml(tmp, port, [(ASJ, "acrel_asj"), (PANEL, "fire_panel")], gw=gw)
    text = p.read_text().replace(
        'profile = "acrel_asj"', 'profile = "acrel_asj"\ntelemetry_ms = 500'
    )
    p.write_text(text)
    return p


def board_cfg(site: Path, tmp: Path, port: int) -> Path:
    cfg = build.board_config(site, str(tmp / "board"), clock_synced=True)
    cfg["mqtt"]["port"] = port
    cfg["mqtt"]["backoff_max_ms"] = 1000
    cfg["heartbeat_s"] = 5
    cfg["series_s"] = 5
    (tmp / "board").mkdir(exist_ok=True)
    out = tmp / "board.json"
    out.write_text(json.dumps(cfg))
    return out


def events(msgs: list[tuple[str, bytes, bool]]) -> list:  # type: ignore[type-arg]
    """(boot, seq, Event) of every event published on the event topic, decoded as the cloud does."""
    out = []
    for t, payload, _ in msgs:
        if t.endswith("/ev"):
            b = wire.open_batch(payload)
            out += [(b.boot, b.seq0 + i, e) for i, e in enumerate(b.events)]
    return out


def results(msgs) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Command id -> result code of the gateway's answers on ``res``."""
    out = {}
    for t, p, _ in msgs:
        if t.endswith("/res"):
            r = messages.result_from_map(cbor.loads(p))
            out[r.id] = r.result
    return out


def alarms(evs: list) -> set[tuple[int, int, int, int]]:  # type: ignore[type-arg]
    """(kind, src, code, state) of the priority events (alarms, faults, comms)."""
    return {(e.kind, e.src, e.fields().get("code"), e.fields().get("state"))
            for _, _, e in evs if e.kind in codes.PRIORITY_KINDS}  # fmt: skip


def has_alarms(msgs) -> bool:  # type: ignore[no-untyped-def]
    a = alarms(events(msgs))
    return (codes.FIRE_ALARM, RC_SRC, RC_CODE, 1) in {(k, s, c, st) for k, s, c, st in a} and any(
        k == codes.FIRE_ALARM and s == PANEL_SRC for k, s, _, _ in a
    )


async def scenario(site: simulator.Site) -> None:
    """The residual current ramps past the 300 mA setpoint; then the panel's fire bit."""
    asj = site.device(f"acrel_asj-{ASJ}")
    asj.set("residual_current", 20)
    await asyncio.sleep(1.5)
    for ma in (100, 180, 260, 340, 420, 500):  # each held past a 500 ms poll on both gateways
        asj.set("residual_current", ma)
        await asyncio.sleep(0.7)
    site.device(f"fire_panel-{PANEL}").set_bit("system_status", 1, True)


async def wait(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_board_polls_detects_and_delivers_alarms(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    gw = 81
    site = make_site(tmp_path, broker.port, gw)
    cfg = board_cfg(site, tmp_path, broker.port)
    sub = Subscriber(broker.port, f"el/v1/{gw}/#")
    async with simulator.Site(gwconfig.load(site)) as sim:
        sim.device(f"acrel_asj-{ASJ}").set("residual_current", 20)
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        try:
            await asyncio.sleep(1)
            await scenario(sim)
            await wait(lambda: has_alarms(sub.messages), 30)
            import paho.mqtt.publish as paho_publish

            for cid, op, args in (
                (1, messages.OP_TIME_SYNC, {0: 1_800_000_000_000}),
                (2, 99, None),
            ):
                cmd = messages.encode(messages.Command(gw, cid, op, args))
                paho_publish.single(f"el/v1/{gw}/cmd", cmd, qos=1, hostname="127.0.0.1",
                                    port=broker.port)  # fmt: skip
            await wait(lambda: len(results(sub.messages)) >= 2, 10)
            assert results(sub.messages) == {1: messages.RES_OK, 2: messages.RES_UNKNOWN_OP}
            sim.device(f"acrel_asj-{ASJ}").mode = "silent"  # a dead device: COMMS, not zero
            await wait(lambda: any(k == codes.COMMS and st == 1 for k, _, _, st in
                                   alarms(events(sub.messages))), 20)  # fmt: skip
        finally:
            proc.kill()
            proc.wait(5)
            sub.close()
    evs = events(sub.messages)
    a = alarms(evs)
    assert (codes.PRE_ALARM, RC_SRC, RC_CODE, 1) in a  # 240 mA pre-alarm before the alarm
    assert (codes.COMMS, 1 << 24 | ASJ << 16, 55, 1) in a  # no_response
    births = [wire.open_batch(p) for t, p, _ in sub.messages if t.endswith("/state")]
    info = births[0].events[0].fields()["info"]
    assert info[1] == 2 and info[2] & 1  # platform micropython, capability modbus_rtu
    series = [e for _, _, e in evs if e.kind == codes.MEASUREMENT and e.src == RC_SRC]
    assert series and max(max(e.fields()["samples"]) for e in series) >= 300
    zero_after_silence = [e for _, _, e in evs if e.kind == codes.MEASUREMENT
                          and e.src == RC_SRC and 0 in e.fields()["samples"]]  # fmt: skip
    assert not zero_after_silence
    seqs = sorted(s for b, s, _ in evs if b == evs[0][0])
    assert seqs == list(range(1, len(seqs) + 1)) or len(set(seqs)) < len(seqs)


async def test_kill_9_and_restart_loses_no_event(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    gw = 82
    site = make_site(tmp_path, broker.port, gw)
    cfg = board_cfg(site, tmp_path, broker.port)
    data = json.loads(cfg.read_text())
    data["mqtt"]["port"] = 1  # the uplink is down: everything stays in the outbox
    offline = tmp_path / "offline.json"
    offline.write_text(json.dumps(data))
    sub = Subscriber(broker.port, f"el/v1/{gw}/#")
    async with simulator.Site(gwconfig.load(site)) as sim:
        proc = mp_popen(HERE / "mp_app.py", [str(offline), "0"])
        await asyncio.sleep(1)
        await scenario(sim)
        await asyncio.sleep(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        stored = obx.Outbox(str(tmp_path / "board" / "outbox"), new_boot=False)
        boot1 = [(b, s) for b, s, _, _ in stored.stored() if b == 1]
        assert len(boot1) > 5
        assert [s for _, s in boot1] == list(range(1, len(boot1) + 1))
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        try:
            want = {(1, s) for s in range(1, len(boot1) + 1)}
            await wait(lambda: want <= {(b, s) for b, s, _ in events(sub.messages)}
                       and has_alarms(sub.messages), 40)  # fmt: skip
        finally:
            proc.kill()
            proc.wait(5)
            sub.close()
    evs = events(sub.messages)
    replayed = [wire.open_batch(p) for t, p, _ in sub.messages if t.endswith("/ev")]
    assert all(b.flags & codes.BF_REPLAYED for b in replayed if b.boot == 1)
    assert has_alarms(sub.messages)
    states = [wire.open_batch(p) for t, p, _ in sub.messages if t.endswith("/state")]
    assert {b.boot for b in states} == {2}  # the restart opened boot 2 and announced it
    assert all(b for b, _, _ in evs)


async def run_pi_gateway(tmp: Path, port: int, gw: int) -> list:  # type: ignore[type-arg]
    """The Pi gateway (edge/) on the same scenario: the events it published."""
    from emberlink.edge.service import Gateway

    site = make_site(tmp, port, gw)
    sub = Subscriber(port, f"el/v1/{gw}/#")
    try:
        async with simulator.Site(gwconfig.load(site)) as sim:
            sim.device(f"acrel_asj-{ASJ}").set("residual_current", 20)
            g = Gateway(gwconfig.load(site), client_id=f"pi-{gw}")
            task = asyncio.create_task(g.run())
            await asyncio.sleep(1)
            await scenario(sim)
            await wait(lambda: has_alarms(sub.messages), 30)
            await asyncio.sleep(2)
            g.stop()
            await asyncio.wait_for(task, 20)
    finally:
        sub.close()
    return events(sub.messages)


async def run_board(tmp: Path, port: int, gw: int) -> list:  # type: ignore[type-arg]
    site = make_site(tmp, port, gw)
    cfg = board_cfg(site, tmp, port)
    sub = Subscriber(port, f"el/v1/{gw}/#")
    try:
        async with simulator.Site(gwconfig.load(site)) as sim:
            sim.device(f"acrel_asj-{ASJ}").set("residual_current", 20)
            proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
            try:
                await asyncio.sleep(1)
                await scenario(sim)
                await wait(lambda: has_alarms(sub.messages), 30)
                await asyncio.sleep(2)
            finally:
                proc.kill()
                proc.wait(5)
    finally:
        sub.close()
    return events(sub.messages)


async def test_the_same_alarms_as_the_pi_gateway(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pi").mkdir()
    (tmp_path / "board").mkdir()
    pi = await run_pi_gateway(tmp_path / "pi", broker.port, 91)
    board = await run_board(tmp_path / "board", broker.port, 92)
    want = alarms(pi)
    assert (codes.FIRE_ALARM, RC_SRC, RC_CODE, 1) in want  # the scenario did its job on the Pi
    assert alarms(board) == want

    # the same detector evidence on both: flags (latched) and units of the alarm events
    def evidence(evs):  # type: ignore[no-untyped-def]
        prio = [e.fields() for _, _, e in evs if e.kind in codes.PRIORITY_KINDS]
        return {(f["kind"], f["src"], f.get("eflags"), f.get("unit"), f.get("exp")) for f in prio}

    assert evidence(board) == evidence(pi)


async def test_broker_restart_the_board_reconnects_and_delivers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .conftest import Broker

    b = Broker(tmp_path).start()
    gw = 84
    site = make_site(tmp_path, b.port, gw)
    cfg = board_cfg(site, tmp_path, b.port)
    async with simulator.Site(gwconfig.load(site)) as sim:
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        try:
            sub = Subscriber(b.port, f"el/v1/{gw}/#")
            await wait(lambda: any(t.endswith("/state") for t, _, _ in sub.messages), 15)
            sub.close()
            b.stop()  # the broker goes away; the fire bit rises while it is gone
            sim.device(f"fire_panel-{PANEL}").set_bit("system_status", 1, True)
            await asyncio.sleep(2)
            b.start()  # same port, no persistence: a fresh broker
            sub = Subscriber(b.port, f"el/v1/{gw}/#")
            await wait(lambda: any(k == codes.FIRE_ALARM and s == PANEL_SRC
                                   for k, s, _, _ in alarms(events(sub.messages))), 30)  # fmt: skip
            births = [wire.open_batch(p) for t, p, _ in sub.messages if t.endswith("/state")]
            assert births and births[-1].events[0].kind == codes.BIRTH  # a new session's birth
            sub.close()
        finally:
            proc.kill()
            proc.wait(5)
            b.stop()
