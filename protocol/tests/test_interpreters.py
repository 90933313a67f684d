"""Random schema-valid messages: byte-identical on CPython and on the micropython interpreter."""

from __future__ import annotations

import json

import pytest
from emberlink.protocol import jsonform, messages, wire
from emberlink.tools import micropython
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .strategies import batches

SCRIPT = """
import json, binascii, sys
from emberlink.protocol import jsonform, messages, wire
cases = json.loads(sys.stdin.read())
ok = 0
for c in cases:
    raw = binascii.unhexlify(c["hex"])
    key = binascii.unhexlify(c["key"]) if c["key"] else None
    assert jsonform.encode_from_json(c["json"], key) == raw, "encode differs"
    assert jsonform.decode_to_json(raw) == c["json"], "decode differs"
    b = wire.open_batch(raw, key)
    assert wire.seal(b, key) == raw, "re-seal differs"
    ok += 1
print(ok)
"""


@pytest.mark.micropython
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(batches(), min_size=40, max_size=40), st.lists(st.booleans(), min_size=40, max_size=40)
)
def test_random_batches_identical_on_micropython(
    bs: list[messages.Batch], macs: list[bool]
) -> None:
    key = bytes(range(16))
    cases = []
    for b, use_mac in zip(bs, macs, strict=True):
        raw = wire.seal(b, key if use_mac else None)
        j = jsonform.decode_to_json(raw)
        if use_mac:
            # the MAC is recomputed on micropython from the key, not copied
            pass
        cases.append({"hex": raw.hex(), "key": key.hex() if use_mac else None, "json": j})
    # ensure_ascii=False: MicroPython's json does not join \\u surrogate pairs; raw UTF-8 is exact.
    data = json.dumps(cases, ensure_ascii=False).encode()
    out = micropython.run(code=SCRIPT, stdin=data).stdout.decode()
    assert out.strip() == str(len(cases))


@pytest.mark.micropython
def test_malformed_input_gives_reasons_on_micropython() -> None:
    code = """
from emberlink.protocol import wire
from emberlink.protocol.errors import ProtocolError
cases = (b'\\xa1\\x00', b'\\x9f\\x01\\xff', b'\\x18\\x01', b'\\xf9\\x3e\\x00')
for h in cases + (b'\\x81' * 20 + b'\\x00',):
    try:
        wire.open_batch(h)
        print('accepted')
    except ProtocolError as e:
        print(e.reason)
"""
    out = micropython.run(code=code).stdout.decode().splitlines()
    assert out == [
        "truncated",
        "indefinite length",
        "argument not in shortest form",
        "floats are not allowed",
        "nesting too deep",
    ]
