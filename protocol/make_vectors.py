"""Write the golden vectors in protocol/vectors/ (run: python -m emberlink.protocol.make_vectors).

Each vector is ``<name>.json`` (a description, the readable JSON form of the message and, for
MAC vectors, the key) beside ``<name>.cbor`` (its exact bytes). The bytes are cross-checked
against ``cbor2.dumps(..., canonical=True)`` when written. Both interpreters must reproduce
every vector byte for byte (protocol/tests/test_vectors.py). ``invalid.json`` lists malformed
payloads with the reason each must be rejected with. Regenerating must not change committed
bytes unless the contract changed (a new protocol version).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import codes as c
from . import jsonform, mac
from .messages import Ack, Batch, Command, Event, Result, encode

HERE = Path(__file__).resolve().parent / "vectors"
T0 = 1_764_421_200_000  # 2025-11-29T13:00:00Z
KEY = bytes(range(32))


def src(bus: int, unit: int, point: int) -> int:
    return (bus << 24) | (unit << 16) | point


def rc_series() -> list[int]:
    # 60 residual-current samples in mA around a 162 mA natural leakage, slowly rising.
    out, v = [], 162
    for i in range(60):
        v += (i * 7919) % 5 - 2 + (1 if i % 10 == 0 else 0)
        out.append(v)
    return out


EVENTS: dict[str, Event] = {
    "fire_alarm": Event(
        c.FIRE_ALARM,
        0,
        src(0, 3, 12),
        state=c.ACTIVE,
        code=1,
        val=412,
        exp=-2,
        unit=8,
        sys=1,
        part=42,
        verify=[12000, 60000],
        eflags=c.EF_VERIFIED,
    ),
    "pre_alarm": Event(
        c.PRE_ALARM, 5, src(0, 3, 12), state=c.ACTIVE, code=1, val=210, exp=-2, unit=8
    ),
    "fault": Event(c.FAULT, 17, src(0, 4, 2), state=c.ACTIVE, code=53, sys=100, part=18),
    "supervisory": Event(c.SUPERVISORY, 40, src(0, 1, 7), state=c.ACTIVE, code=10, sys=12, part=97),
    "shield": Event(c.SHIELD, 41, src(0, 1, 8), state=c.ACTIVE, code=10, sys=1, part=42),
    "reset": Event(c.RESET, 90, src(0, 1, 0), actor=17, sys=1),
    "silence": Event(c.SILENCE, 91, src(0, 1, 0), actor=17),
    "manual_alarm": Event(c.MANUAL_ALARM, 120, src(0, 1, 33), state=c.ACTIVE, code=10, part=23),
    "test_mode": Event(c.TEST_MODE, 130, 0, state=c.ACTIVE, actor=501),
    "comms_lost": Event(c.COMMS, 150, src(1, 9, 0), state=c.ACTIVE, code=55),
    "measurement": Event(
        c.MEASUREMENT,
        0,
        src(0, 2, 1),
        period=1000,
        exp=-3,
        unit=1,
        part=17,
        samples=rc_series(),
    ),
    "health": Event(
        c.HEALTH,
        200,
        0,
        health={0: 86400, 2: 172800, 3: 12, 4: 3, 6: 31, 7: 1, 9: 4, 10: 30},
    ),
    "birth": Event(
        c.BIRTH,
        0,
        0,
        info={
            0: "0.1.0",
            1: 1,
            2: 1 | 2 | 4 | 16 | 32,
            3: 30,
            4: "EL-PI-000123",
            5: bytes.fromhex("9f86d081884c7d65"),
        },
    ),
    "death": Event(c.DEATH, 300, 0, code=101),
    "maintenance": Event(
        c.MAINTENANCE,
        310,
        src(0, 3, 12),
        code=2,
        result=0,
        note="探测器 3-12 功能试验 ok",
        actor=501,
        sys=1,
        part=42,
    ),
    "dropped": Event(c.DROPPED, 320, 0, range=[1001, 4600], code=100),
}


def vectors() -> dict[str, tuple[str, Any, bytes | None]]:
    out: dict[str, tuple[str, Any, bytes | None]] = {}
    for i, (name, ev) in enumerate(EVENTS.items()):
        out["event_" + name] = (
            f"one {name} event in its own batch",
            Batch(1234, 7, 1 + i, T0, [ev]),
            None,
        )
    all_kinds = Batch(1234, 7, 101, T0, list(EVENTS.values()), ackd=100)
    out["batch_all_kinds"] = ("one event of every kind, ackd set", all_kinds, None)
    out["batch_replayed_unsynced"] = (
        "a replayed batch stamped by an unsynced clock",
        Batch(
            77,
            0,
            4_294_967_295,
            946_684_800_000,
            [EVENTS["fault"]],
            flags=c.BF_REPLAYED | c.BF_CLOCK_UNSYNCED,
        ),
        None,
    )
    out["batch_extremes"] = (
        "limits: largest gw, boot and t0; negative and large values",
        Batch(
            0xFFFFFFFF,
            0xFFFFFFFF,
            1,
            0xFFFFFFFFFFFFFFFF,
            [
                Event(
                    c.MEASUREMENT,
                    0xFFFFFFFF,
                    0xFFFFFFFF,
                    period=1,
                    exp=-24,
                    unit=4,
                    samples=[
                        -0x80000000,
                        0x7FFFFFFF,
                        0,
                        -1,
                        23,
                        24,
                        -24,
                        -25,
                        255,
                        256,
                        65535,
                        65536,
                    ],
                    summary=[-0x80000000, 0x7FFFFFFF, -9223372036854775808, 12],
                ),
                Event(c.FIRE_ALARM, 1, 1, state=c.ACTIVE, val=9223372036854775807, exp=23),
            ],
        ),
        None,
    )
    batch = Batch(1234, 8, 1, T0, [EVENTS["fire_alarm"]])
    out["mac_hmac256_256"] = (
        "fire alarm batch in COSE_Mac0, HMAC 256/256, kid",
        batch,
        b"\x04\xd2",
    )
    out["mac_hmac256_64"] = ("fire alarm batch in COSE_Mac0, HMAC 256/64, no kid", batch, None)
    out["ack"] = ("the cloud's high-water-mark ack", Ack(1234, 7, 4711), None)
    out["command_test_mode"] = (
        "switch the whole gateway to test mode for 30 min",
        Command(1234, 42, 2, {0: 1, 1: 1800, 2: 0}),
        None,
    )
    out["command_rebirth"] = ("ask for birth and health now", Command(1234, 43, 1), None)
    out["result_ok"] = ("the gateway's answer", Result(1234, 42, 0, "test mode on"), None)
    return out


def invalid() -> list[dict[str, Any]]:
    """Malformed payloads and the reason each must be refused with."""
    from . import cbor
    from .cbor import Tag, dumps

    good = encode(Batch(1234, 7, 1, T0, [EVENTS["fault"]]))
    ev = EVENTS["fault"].to_map()

    def batch_with(**changes: object) -> str:
        m = Batch(1234, 7, 1, T0, [EVENTS["fault"]]).to_map()
        e = dict(ev)
        m[5] = [e]
        for k, v in changes.items():
            target = m if k[0] == "b" else e
            if v is None:
                del target[int(k[1:])]
            else:
                target[int(k[1:])] = v
        return dumps(m).hex()

    def batch_null(in_event: bool, key: int) -> str:
        # an optional key present as null: absent and null would be two encodings of one batch
        m = Batch(1234, 7, 1, T0, [EVENTS["fault"]]).to_map()
        (m[5][0] if in_event else m)[key] = None
        return dumps(m).hex()

    mac_ok = mac.wrap(good, KEY, mac.ALG_HMAC256_256)
    bad_tag = bytearray(mac_ok)
    bad_tag[-1] ^= 1
    rows = [
        ("empty", "", cbor.TRUNCATED),
        ("truncated batch", good[:-3].hex(), cbor.TRUNCATED),
        ("trailing byte", good.hex() + "00", cbor.TRAILING),
        ("indefinite array", "9f01ff", cbor.INDEFINITE),
        ("indefinite map", "bf0001ff", cbor.INDEFINITE),
        ("indefinite text", "7f6161ff", cbor.INDEFINITE),
        ("stray break", "ff", cbor.INDEFINITE),
        ("non-shortest uint8", "1801", cbor.NOT_SHORTEST),
        ("non-shortest uint16", "190017", cbor.NOT_SHORTEST),
        ("non-shortest uint64", "1b00000000ffffffff", cbor.NOT_SHORTEST),
        ("non-shortest length", "5800", cbor.NOT_SHORTEST),
        ("keys out of order", "a201000000", cbor.KEY_ORDER),
        ("duplicate key", "a200000000", cbor.DUPLICATE_KEY),
        ("float16", "f93e00", cbor.FLOAT),
        ("float64", "fb3ff8000000000000", cbor.FLOAT),
        ("reserved additional info", "1c", cbor.RESERVED),
        ("undefined", "f7", cbor.SIMPLE),
        ("simple value 16", "f0", cbor.SIMPLE),
        ("too deep", "81" * 17 + "00", cbor.TOO_DEEP),
        ("array claims 2**64-1 items", "9bffffffffffffffff00", cbor.TOO_LONG),
        ("array claims more items than bytes", "98ff00", cbor.TRUNCATED),
        ("byte string claims 4 GB", "5affffffff00", cbor.TOO_LONG),
        ("invalid UTF-8", "62c328", cbor.BAD_UTF8),
        ("not a map", "820102", "not an EmberLink message"),
        ("unknown kind", batch_with(k0=99), "unknown kind"),
        ("dt as text", batch_with(k1="0"), "wrong type for a key"),
        ("state out of range", batch_with(k4=9), "value out of range"),
        ("missing state", batch_with(k4=None), "missing key"),
        ("unknown event key", batch_with(k23=1), "unknown key"),
        ("field not allowed for kind", batch_with(k8=1000), "unknown key"),
        ("version 2", batch_with(b0=2), "unsupported protocol version"),
        ("empty events", batch_with(b5=[]), "value out of range"),
        ("gw as text", batch_with(b1="1234"), "wrong type for a key"),
        ("flags zero present", batch_with(b7=0), "value out of range"),
        ("seq overflow", batch_with(b3=0x100000000), "value out of range"),
        ("optional event key null", batch_null(True, 16), "wrong type for a key"),
        ("optional batch key null", batch_null(False, 6), "wrong type for a key"),
        ("mac tag mismatch", bytes(bad_tag).hex(), "MAC does not verify"),
        (
            "mac unknown alg",
            dumps(Tag(17, [dumps({1: 6}), {}, good, bytes(32)])).hex(),
            "unsupported MAC algorithm",
        ),
        (
            "mac alg not an int",
            dumps(Tag(17, [dumps({1: [5]}), {}, good, bytes(32)])).hex(),
            "unsupported MAC algorithm",
        ),
        ("bare batch where a MAC is required", good.hex(), "MAC required"),
    ]
    # Cases about MACs are opened with the gateway's key; the rest as bare batches.
    return [
        {"name": n, "hex": h, "reason": r, "with_key": n.startswith("mac") or "MAC" in n}
        for n, h, r in rows
    ]


def main() -> int:
    import cbor2

    inv: dict[str, object] = {
        "description": (
            "malformed payloads: wire.open_batch(bytes, key if with_key) must raise"
            " ProtocolError with this reason"
        ),
        "key": KEY.hex(),
        "cases": invalid(),
    }
    HERE.mkdir(exist_ok=True)
    (HERE / "invalid.json").write_text(json.dumps(inv, indent=1) + "\n")
    for name, (desc, msg, kid) in vectors().items():
        raw = encode(msg)
        assert raw == cbor2.dumps(msg.to_map(), canonical=True), name
        doc: dict[str, object] = {"description": desc}
        if name.startswith("mac_"):
            alg = mac.ALG_HMAC256_64 if name.endswith("_64") else mac.ALG_HMAC256_256
            raw = mac.wrap(raw, KEY, alg, kid)
            doc["key"] = KEY.hex()
        doc["message"] = jsonform.decode_to_json(raw)
        (HERE / (name + ".json")).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        (HERE / (name + ".cbor")).write_bytes(raw)
        print(f"{name:28} {len(raw):5} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
