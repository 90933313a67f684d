"""The board's register decoding equals the protocol's (profile.decode_raw): types, orders."""

from __future__ import annotations

from array import array

from emberlink.firmware.board.points import Pt
from emberlink.protocol import profile as schema
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=400, deadline=None)
@given(
    t=st.sampled_from(["u16", "i16", "u32", "i32", "u8_hi", "u8_lo", "bits", "enum"]),
    bo=st.sampled_from(["big", "little"]),
    wo=st.sampled_from(["big", "little"]),
    regs=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    off=st.integers(0, 3),
)
def test_raw_values_match_the_protocol_decoder(t, bo, wo, regs, off) -> None:  # type: ignore[no-untyped-def]
    raw = {"id": 1, "name": "x", "address": 10 + off, "type": t, "byte_order": bo,
           "word_order": wo}  # fmt: skip
    if t == "bits":
        raw["bits"] = [{"bit": 1, "event": "fire_alarm"}]
    if t == "enum":
        raw["values"] = [{"value": 1, "name": "one"}]
    prof = schema.validate({"name": "p", "points": [raw]})
    p = prof["points"][0]
    pt = Pt(p, prof, 1, 2, 1000, 60000, [])
    pt.off = off
    buf = array("H", [0] * off + regs + [0] * 4)
    assert pt.raw(buf, 0) == schema.decode_raw(p, regs[: p["words"]])
