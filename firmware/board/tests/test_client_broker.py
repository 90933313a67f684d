"""The board's MQTT client on micropython against a real Mosquitto, checked from CPython."""

from __future__ import annotations

import pytest
from emberlink.protocol import codes, wire

from .conftest import HERE, Lines, Subscriber, mp_popen

pytestmark = [pytest.mark.micropython, pytest.mark.broker]


def test_publish_puback_redelivery_keepalive_and_commands(broker) -> None:  # type: ignore[no-untyped-def]
    gw = 71
    sub = Subscriber(broker.port, f"el/v1/{gw}/#")
    proc = mp_popen(HERE / "mp_mqtt.py", [str(broker.port), str(gw), "session"])
    try:
        lines = Lines(proc)
        lines.until("waiting", 40)
        out = lines.lines
        assert "puback True 0" in out
        red = next(x for x in out if x.startswith("redelivered")).split()
        assert red[1] == "True" and int(red[2]) >= 1  # the DUP retransmission happened
        assert "alive True 2" in out  # idle 5 s with a 2 s keepalive: still the second session
        msgs = sub.wait(lambda m: len([x for x in m if x[0].endswith("/ev")]) >= 2)
        batches = [wire.open_batch(p) for t, p, _ in msgs if t.endswith("/ev")]
        assert [b.seq0 for b in batches[:2]] == [1, 2]
        assert batches[0].events[0].kind == codes.FIRE_ALARM
        import paho.mqtt.publish as paho_publish

        paho_publish.single(f"el/v1/{gw}/cmd", b"\xa1\x00\x01", qos=1, hostname="127.0.0.1",
                            port=broker.port)  # fmt: skip
        assert lines.until("command", 20) == f"command el/v1/{gw}/cmd a10001"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        sub.close()


def test_a_board_that_stops_polling_gets_its_will_published(broker) -> None:  # type: ignore[no-untyped-def]
    gw = 72
    sub = Subscriber(broker.port, f"el/v1/{gw}/state")
    proc = mp_popen(HERE / "mp_mqtt.py", [str(broker.port), str(gw), "hang"])
    try:
        Lines(proc).until("connected")
        msgs = sub.wait(lambda m: len(m) >= 1, 15)
        death = wire.open_batch(msgs[0][1])
        assert death.seq0 == 0 and death.events[0].kind == codes.DEATH
        assert death.events[0].fields().get("code", 102) == 102
    finally:
        proc.kill()
        sub.close()
