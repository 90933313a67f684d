"""Commands and cloud-ack mode on the board (micropython, simulator over a socat pty, a real
Mosquitto): reset and test mode answered and acted on exactly as the Pi gateway does on the
same scenario; rebirth and resend; records held until the cloud's Ack, sent again without it,
kept across kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from emberlink.edge import config as gwconfig
from emberlink.firmware.board import outbox as obx
from emberlink.protocol import cbor, codes, messages, wire
from emberlink.tools import simulator

from .conftest import HERE, Subscriber, mp_popen
from .test_app import ASJ, PANEL, PANEL_SRC, RC_SRC, board_cfg, events, make_site, wait

pytestmark = [pytest.mark.micropython, pytest.mark.broker, pytest.mark.modbus]

WAIT_S = 20  # any one expected message
OPS = (codes.TEST_MODE, codes.RESET)  # the operator kinds compared beside the alarm kinds


def command(port: int, gw: int, cid: int, op: int, args: dict[int, int] | None = None) -> None:
    import paho.mqtt.publish as paho_publish

    cmd = messages.encode(messages.Command(gw, cid, op, args))
    paho_publish.single(f"el/v1/{gw}/cmd", cmd, qos=1, hostname="127.0.0.1", port=port)


def answers(msgs) -> dict[int, tuple[int, str | None]]:  # type: ignore[no-untyped-def]
    """Command id -> (result, note) of the gateway's answers on ``res``."""
    out = {}
    for t, p, _ in msgs:
        if t.endswith("/res"):
            r = messages.result_from_map(cbor.loads(p))
            out[r.id] = (r.result, r.note)
    return out


def marked(msgs) -> list[tuple[int, int, int | None, int | None, int]]:  # type: ignore[no-untyped-def]
    """(kind, src, code, state, test bit) of the alarm-class and operator events, in order."""
    out = []
    for _, _, e in events(msgs):
        if e.kind in codes.PRIORITY_KINDS or e.kind in OPS:
            f = e.fields()
            out.append((e.kind, e.src, f.get("code"), f.get("state"),
                        (f.get("eflags") or 0) & codes.EF_TEST))  # fmt: skip
    return out


def seen(msgs, kind: int, src: int, state: int, test: int | None = None) -> bool:  # type: ignore[no-untyped-def]
    return any(k == kind and s == src and st == state and (test is None or t == test)
               for k, s, _, st, t in marked(msgs))  # fmt: skip


async def operator_session(port: int, gw: int, sim: simulator.Site, sub: Subscriber) -> None:
    """Test mode on, alarms raised (a detector's and a panel's), test mode off, values normal
    again, the latched alarm reset; then bad arguments and an unknown op."""
    asj, panel = sim.device(f"acrel_asj-{ASJ}"), sim.device(f"fire_panel-{PANEL}")
    await wait(lambda: any(t.endswith("/state") for t, _, _ in sub.messages), WAIT_S)
    await asyncio.sleep(1.2)  # the status words have been read once
    command(port, gw, 1, messages.OP_TEST_MODE, {0: 1})
    await wait(lambda: 1 in answers(sub.messages), WAIT_S)
    asj.set("residual_current", 500)
    panel.set_bit("system_status", 1, True)
    panel.set_bit("system_status", 0, True)  # the panel's own test bit: a TEST_MODE event
    await wait(lambda: seen(sub.messages, codes.FIRE_ALARM, RC_SRC, 1)
               and seen(sub.messages, codes.FIRE_ALARM, PANEL_SRC, 1), WAIT_S)  # fmt: skip
    command(port, gw, 2, messages.OP_TEST_MODE, {0: 0})
    await wait(lambda: 2 in answers(sub.messages), WAIT_S)
    asj.set("residual_current", 20)
    panel.set_bit("system_status", 1, False)
    panel.set_bit("system_status", 0, False)
    await wait(lambda: seen(sub.messages, codes.FIRE_ALARM, PANEL_SRC, 0), WAIT_S)
    await asyncio.sleep(1.5)  # normal again for three polls: the detector's alarm stays latched
    assert not seen(sub.messages, codes.FIRE_ALARM, RC_SRC, 0)
    command(port, gw, 3, messages.OP_RESET)
    await wait(lambda: seen(sub.messages, codes.FIRE_ALARM, RC_SRC, 0), WAIT_S)
    command(port, gw, 4, messages.OP_TEST_MODE, {1: 60})  # no state
    command(port, gw, 5, 99)
    command(port, gw, 6, messages.OP_RESEND, {1: 1})  # no seq
    command(port, gw, 7, messages.OP_RESET, {0: RC_SRC})  # one point, nothing latched
    await wait(lambda: len(answers(sub.messages)) >= 7, WAIT_S)
    await asyncio.sleep(0.5)


async def pi_session(tmp: Path, port: int, gw: int) -> list:  # type: ignore[type-arg]
    from emberlink.edge.service import Gateway

    site = make_site(tmp, port, gw)
    sub = Subscriber(port, f"el/v1/{gw}/#")
    try:
        async with simulator.Site(gwconfig.load(site)) as sim:
            sim.device(f"acrel_asj-{ASJ}").set("residual_current", 20)
            g = Gateway(gwconfig.load(site), client_id=f"pi-{gw}")
            task = asyncio.create_task(g.run())
            try:
                await operator_session(port, gw, sim, sub)
            finally:
                g.stop()
                await asyncio.wait_for(task, 20)
    finally:
        sub.close()
    return sub.messages


async def board_session(tmp: Path, port: int, gw: int) -> list:  # type: ignore[type-arg]
    site = make_site(tmp, port, gw)
    cfg = board_cfg(site, tmp, port)
    sub = Subscriber(port, f"el/v1/{gw}/#")
    try:
        async with simulator.Site(gwconfig.load(site)) as sim:
            sim.device(f"acrel_asj-{ASJ}").set("residual_current", 20)
            proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
            try:
                await operator_session(port, gw, sim, sub)
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            finally:
                proc.kill()
                out, _ = proc.communicate(timeout=5)
    finally:
        sub.close()
    assert b"loop fault" not in out, out.decode()[-2000:]
    return sub.messages


async def test_reset_and_test_mode_as_the_pi_gateway(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pi").mkdir()
    (tmp_path / "board").mkdir()
    pi, board = await asyncio.gather(
        pi_session(tmp_path / "pi", broker.port, 101),
        board_session(tmp_path / "board", broker.port, 102),
    )
    # the answers, notes included
    ok, bad = messages.RES_OK, messages.RES_BAD_ARGS
    assert answers(board) == answers(pi)
    got = answers(board)
    assert got[1] == got[2] == (ok, None)
    assert got[3] == (ok, "1 points reset")  # the residual-current point: the one detector
    assert got[4] == (bad, "args {0: 1 on | 0 off, ?1: s, ?2: src}")
    assert got[5] == (messages.RES_UNKNOWN_OP, "op 99 not supported by this gateway")
    assert got[6] == (bad, "args {0: seq, ?1: boot} required")
    assert got[7] == (ok, "1 points reset")
    # test mode: the gateway's TEST_MODE event, on and off; alarms raised meanwhile say test
    # (the detector's from the core, the panel's status bit from the board), later ones not
    b = marked(board)
    assert (codes.TEST_MODE, 0, None, codes.ACTIVE, 0) in b
    assert (codes.TEST_MODE, 0, None, codes.NORMAL, 0) in b
    assert (codes.TEST_MODE, PANEL_SRC, None, codes.ACTIVE, 0) in b  # the panel's test bit
    rc_code = codes.code_of(codes.CONDITION_NAMES, "residual_current", "code")
    assert (codes.FIRE_ALARM, RC_SRC, rc_code, codes.ACTIVE, codes.EF_TEST) in b
    panel_fire = [x for x in b if x[:2] == (codes.FIRE_ALARM, PANEL_SRC)]
    assert [x[3:] for x in panel_fire] == [(codes.ACTIVE, codes.EF_TEST), (codes.NORMAL, 0)]
    # reset: the RESET event and the latched alarm back to normal, after test mode ended
    assert (codes.RESET, RC_SRC, None, None, 0) in b
    assert (codes.FIRE_ALARM, RC_SRC, rc_code, codes.NORMAL, 0) in b
    # the same events as the Pi gateway, flags included
    assert set(b) == set(marked(pi))


def cloud_ack_site(tmp: Path, port: int, gw: int, timeout_s: int) -> Path:
    """The board configuration from a site file with ``[mqtt] cloud_ack``, as build.py makes it."""
    site = make_site(tmp, port, gw)
    site.write_text(site.read_text().replace(
        "[mqtt]\n", f"[mqtt]\ncloud_ack = true\ncloud_ack_timeout_s = {timeout_s}\n"))  # fmt: skip
    cfg = board_cfg(site, tmp, port)
    m = json.loads(cfg.read_text())["mqtt"]
    assert m["cloud_ack"] is True and m["cloud_ack_timeout_ms"] == timeout_s * 1000
    return cfg


class Cloud:
    """Stands in for the cloud's ingest: acks each boot's contiguous high-water mark."""

    def __init__(self, port: int, gw: int) -> None:
        import paho.mqtt.client as paho
        from emberlink.tools.testbroker import free_port

        self.gw = gw
        self.seqs: dict[int, set[int]] = {}
        self.hwm: dict[int, int] = {}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"cloud-{free_port()}")
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        self.c.subscribe(f"el/v1/{gw}/ev", qos=1)

    def _on_message(self, c, u, m) -> None:  # type: ignore[no-untyped-def]
        b = wire.open_batch(bytes(m.payload))
        got = self.seqs.setdefault(b.boot, set())
        got.update(range(b.seq0, b.seq0 + len(b.events)))
        hwm = self.hwm.get(b.boot, 0)
        while hwm + 1 in got:
            hwm += 1
        if hwm:
            self.hwm[b.boot] = hwm
            ack = messages.encode_ack(messages.Ack(self.gw, b.boot, hwm))
            c.publish(f"el/v1/{self.gw}/ack", ack, qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def batches(msgs) -> list:  # type: ignore[no-untyped-def]
    return [wire.open_batch(p) for t, p, _ in msgs if t.endswith("/ev")]


def stored(tmp: Path) -> list[tuple[int, int]]:
    """(boot, seq) of the records in the board's outbox (read once the board is dead)."""
    box = obx.Outbox(str(tmp / "board" / "outbox"), new_boot=False)
    return [(b, s) for b, s, _, _ in box.stored()]


async def test_rebirth_resend_and_records_held_for_the_cloud_ack(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    gw = 103
    cfg = cloud_ack_site(tmp_path, broker.port, gw, 60)
    sub = Subscriber(broker.port, f"el/v1/{gw}/#")
    site = tmp_path / "site.toml"
    async with simulator.Site(gwconfig.load(site)):
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        try:
            await wait(lambda: len({s for b, s, _ in events(sub.messages)}) >= 4, WAIT_S)
            # rebirth: a birth published again; resend: stored records from seq 2 again; test
            # mode for one device for a second
            command(broker.port, gw, 1, messages.OP_REBIRTH)
            command(broker.port, gw, 2, messages.OP_RESEND, {0: 2})
            command(broker.port, gw, 3, messages.OP_TEST_MODE, {0: 1, 1: 1, 2: PANEL_SRC})
            await wait(lambda: len(answers(sub.messages)) >= 3, WAIT_S)
            assert answers(sub.messages) == {1: (0, None), 2: (0, None), 3: (0, None)}
            await wait(lambda: seen(sub.messages, codes.TEST_MODE, PANEL_SRC, codes.NORMAL),
                       WAIT_S)  # fmt: skip
            assert seen(sub.messages, codes.TEST_MODE, PANEL_SRC, codes.ACTIVE)
            await wait(lambda: sum(t.endswith("/state") for t, _, _ in sub.messages) >= 2, WAIT_S)
            await wait(lambda: any(b.flags & codes.BF_REPLAYED and b.seq0 <= 2
                                   for b in batches(sub.messages)), WAIT_S)  # fmt: skip
            first = [b for b in batches(sub.messages) if b.seq0 <= 2 < b.seq0 + len(b.events)]
            assert not first[0].flags & codes.BF_REPLAYED
            await asyncio.sleep(0.5)  # PUBACKs in
        finally:
            proc.send_signal(signal.SIGKILL)  # before any cloud ack
            proc.wait(5)
        births = [wire.open_batch(p) for t, p, _ in sub.messages if t.endswith("/state")]
        assert [b.events[0].kind for b in births[:2]] == [codes.BIRTH, codes.BIRTH]
        # PUBACKed, not acked by the cloud: every record published is still on flash
        sent = {(b, s) for b, s, _ in events(sub.messages)}
        kept = stored(tmp_path)
        assert sent <= set(kept) and [s for _, s in kept] == list(range(1, len(kept) + 1))
        # boot 2 with the cloud acking: boot 1 is replayed, acked and deleted
        cloud = Cloud(broker.port, gw)
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        try:
            await wait(lambda: cloud.hwm.get(1, 0) >= len(kept) and cloud.hwm.get(2, 0) >= 3,
                       WAIT_S)  # fmt: skip
            await asyncio.sleep(0.5)  # the acks in
            acked = dict(cloud.hwm)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            cloud.close()
            sub.close()
    left = stored(tmp_path)
    assert not [s for b, s in left if b == 1]
    assert not [s for b, s in left if b == 2 and s <= acked[2]]


async def test_unacked_batches_are_sent_again_after_the_timeout(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    gw = 104
    cfg = cloud_ack_site(tmp_path, broker.port, gw, 1)
    sub = Subscriber(broker.port, f"el/v1/{gw}/#")
    async with simulator.Site(gwconfig.load(tmp_path / "site.toml")):
        proc = mp_popen(HERE / "mp_app.py", [str(cfg), "0"])
        cloud = None
        try:

            def again() -> list[int]:
                return [b.seq0 for b in batches(sub.messages) if b.flags & codes.BF_REPLAYED]

            await wait(lambda: 1 in again(), WAIT_S)  # seq 1 once more, replayed
            assert batches(sub.messages)[0].seq0 == 1
            assert not batches(sub.messages)[0].flags & codes.BF_REPLAYED
            cloud = Cloud(broker.port, gw)  # from now on acked: the resending stops
            await wait(lambda: cloud.hwm.get(1, 0) >= 4, WAIT_S)
            await asyncio.sleep(2.5)  # over two timeouts
            n = len(again())
            await asyncio.sleep(2.5)
            assert len(again()) == n
        finally:
            proc.kill()
            proc.wait(5)
            if cloud is not None:
                cloud.close()
            sub.close()
