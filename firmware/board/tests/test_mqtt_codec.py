"""MQTT 3.1.1 packets: exact bytes from the specification, the same bytes on micropython,
strict parsing with reasons, and hypothesis round trips (whole and one byte at a time)."""

from __future__ import annotations

import random

import pytest
from emberlink.firmware.board import mqtt
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import HERE, mp_run

# (expression, expected hex): written out from the specification's figures, not from our code
VECTORS = [
    ('mqtt.connect("c1", 30)', "100e00044d5154540402001e00026331"),
    # will: flags 0x2e (clean session, will, will QoS 1, will retain)
    ('mqtt.connect("c1", 30, True, "w", b"x", 1, True)',
     "101400044d515454042e001e00026331000177000178"),
    ('mqtt.connect("c1", 60, False, None, b"", 1, True, "u", "p")',
     "101400044d51545404c0003c00026331000175000170"),
    ('mqtt.publish("a/b", b"hi", 1, False, 10)', "32090003612f62000a6869"),
    ('mqtt.publish("a/b", b"hi", 1, False, 10, True)', "3a090003612f62000a6869"),
    ('mqtt.publish("t", b"", 0, True)', "3103000174"),
    ('mqtt.publish("t", bytes(200))', "30cb01000174" + "00" * 200),
    ("mqtt.puback(10)", "4002000a"),
    ('mqtt.subscribe(1, "el/v1/7/cmd", 1)', "82100001000b656c2f76312f372f636d6401"),
    ("mqtt.pingreq()", "c000"),
    ("mqtt.disconnect()", "e000"),
    ('mqtt.publish("a/+", b"")', "ERR value"),
    ("mqtt.puback(0)", "ERR value"),
    ('mqtt.publish("a", b"", 0, False, 0, True)', "ERR value"),
]  # fmt: skip


def _cpython(expr: str) -> str:
    try:
        v = eval(expr, {"mqtt": mqtt})
    except mqtt.MQTTError as e:
        return "ERR " + e.reason
    except ValueError:
        return "ERR value"
    return bytes(v).hex()


@pytest.mark.parametrize(("expr", "want"), VECTORS)
def test_packets_are_the_specification_bytes(expr: str, want: str) -> None:
    assert _cpython(expr) == want


def _random_publishes(n: int) -> list[str]:
    rnd = random.Random(8)
    out = []
    for _ in range(n):
        topic = f"el/v1/{rnd.randrange(1 << 32)}/{rnd.choice(['ev', 'state', 'res'])}"
        payload = bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 127, 128, 300])))
        qos = rnd.choice([0, 1])
        pid = rnd.randrange(1, 65536) if qos else 0
        dup = bool(qos and rnd.random() < 0.5)
        out.append(
            f"mqtt.publish({topic!r}, {payload!r}, {qos}, {rnd.random() < 0.5}, {pid}, {dup})"
        )
    return out


@pytest.mark.micropython
def test_micropython_builds_the_same_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exprs = [e for e, _ in VECTORS] + _random_publishes(40)
    f = tmp_path / "exprs.txt"
    f.write_text("\n".join(exprs) + "\n")
    got = mp_run(HERE / "mp_eval.py", [str(f)]).split("\n")
    assert got[: len(exprs)] == [_cpython(e) for e in exprs]


# --- parsing ----------------------------------------------------------------------------------
def _parse_all(data: bytes, step: int | None = None) -> list[tuple]:  # type: ignore[type-arg]
    p = mqtt.Parser()
    out = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for c in chunks:
        p.feed(c)
        while (pkt := p.next()) is not None:
            out.append(pkt)
    assert p.buf == b""
    return out


def test_a_stream_of_server_packets_whole_and_byte_by_byte() -> None:
    topic = b"el/v1/7/cmd"
    pub = bytes([0x32, 2 + len(topic) + 2 + 3, 0, len(topic)]) + topic + b"\x00\x05abc"
    data = bytes.fromhex("2002000090030001014002000ad000") + pub
    want = [
        (mqtt.CONNACK, 0, 0, None, b"\x00"),
        (mqtt.SUBACK, 0, 1, None, b"\x01"),
        (mqtt.PUBACK, 0, 10, None, None),
        (mqtt.PINGRESP, 0, 0, None, None),
        (mqtt.PUBLISH, 2, 5, "el/v1/7/cmd", b"abc"),
    ]
    assert _parse_all(data) == want
    assert _parse_all(data, 1) == want


def test_a_refused_connection_names_the_reason() -> None:
    pkt = _parse_all(bytes.fromhex("20020005"))[0]
    err = mqtt.connack_error(pkt)
    assert err is not None and err.reason == mqtt.REFUSED and "not authorised" in str(err)
    assert mqtt.connack_error(_parse_all(bytes.fromhex("20020100"))[0]) is None


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("21020000", mqtt.BAD_FLAGS),  # CONNACK with flags
        ("30ffffffff7f", mqtt.MALFORMED),  # five length bytes
        ("40820000", mqtt.MALFORMED),  # non-shortest remaining length
        ("40020000", mqtt.MALFORMED),  # PUBACK for packet id 0
        ("400300010a", mqtt.MALFORMED),  # PUBACK of length 3
        ("100200ff", mqtt.UNEXPECTED),  # CONNECT from a server
        ("3603000174", mqtt.BAD_FLAGS),  # PUBLISH QoS 3
        ("3803000174", mqtt.BAD_FLAGS),  # DUP on QoS 0
        ("3003000574", mqtt.MALFORMED),  # topic longer than the packet
        ("3004000274ff", mqtt.MALFORMED),  # topic bytes that are not UTF-8
        ("9003000103", mqtt.MALFORMED),  # SUBACK return code 3
        ("d00100", mqtt.MALFORMED),  # PINGRESP with a body
        ("30ffff03", mqtt.TOO_LARGE),  # 65535 + 4 bytes
    ],
)
def test_bad_packets_raise_with_a_reason(hexdata: str, reason: str) -> None:
    p = mqtt.Parser()
    p.feed(bytes.fromhex(hexdata))
    with pytest.raises(mqtt.MQTTError) as ei:
        p.next()
    assert ei.value.reason == reason


topics_st = st.text(
    alphabet=st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    topic=topics_st,
    payload=st.binary(max_size=600),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    pid=st.integers(1, 65535),
    dup=st.booleans(),
    step=st.integers(1, 50),
)
def test_publish_round_trip(topic: str, payload: bytes, qos: int, retain: bool, pid: int,
                            dup: bool, step: int) -> None:  # fmt: skip
    dup = dup and qos == 1
    data = mqtt.publish(topic, payload, qos, retain, pid if qos else 0, dup)
    for pkts in (_parse_all(data), _parse_all(data, step)):
        assert len(pkts) == 1
        t, flags, got_pid, got_topic, got_payload = pkts[0]
        assert t == mqtt.PUBLISH
        assert (flags >> 1) & 3 == qos and bool(flags & 1) == retain and bool(flags & 8) == dup
        assert got_pid == (pid if qos else 0)
        assert got_topic == topic and got_payload == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_packets_none_or_an_mqtt_error(data: bytes) -> None:
    p = mqtt.Parser(max_packet=256)
    p.feed(data)
    try:
        while p.next() is not None:
            pass
    except mqtt.MQTTError as e:
        assert e.reason in (mqtt.MALFORMED, mqtt.TOO_LARGE, mqtt.BAD_FLAGS, mqtt.UNEXPECTED)
