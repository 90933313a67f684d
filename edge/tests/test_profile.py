"""Device profiles: the schema refuses bad fields by name; the codec matches struct; planning."""

from __future__ import annotations

import copy
import struct
import tomllib

import pytest
from emberlink.edge import profiles
from emberlink.edge.errors import ConfigError
from emberlink.protocol import codes
from emberlink.protocol import profile as schema
from hypothesis import given
from hypothesis import strategies as st

SHIPPED = ("fire_panel", "acrel_asj", "efm_multi", "smoke_loop")


def minimal(**point: object) -> dict[str, object]:
    p = {"id": 1, "name": "x", "address": 0, "type": "u16"}
    p.update(point)
    return {"name": "t", "points": [p]}


def test_shipped_profiles_validate() -> None:
    allp = profiles.load_all()
    for name in SHIPPED:
        assert name in allp
        assert allp[name]["points"]


def test_asj_map_matches_the_manual() -> None:
    """Acrel ASJ §8.3: residual current at 0x0000 in mA; alarm status bits at 0x001B."""
    asj = profiles.load_all()["acrel_asj"]
    pts = {p["name"]: p for p in asj["points"]}
    assert pts["residual_current"]["address"] == 0x0000
    assert pts["residual_current"]["exp"] == -3 and pts["residual_current"]["unit"] == 1  # A
    status = pts["alarm_status"]
    assert status["address"] == 0x001B
    bits = {b["bit"]: (b["kind"], b["code"]) for b in status["bits"]}
    assert bits == {0: (codes.PRE_ALARM, 4), 1: (codes.FIRE_ALARM, 4), 2: (codes.FAULT, 53)}


def test_panel_status_bits_follow_gbt_26875_3() -> None:
    panel = profiles.load_all()["fire_panel"]
    word = next(p for p in panel["points"] if p["name"] == "system_status")
    bits = {b["bit"]: b["kind"] for b in word["bits"]}
    assert bits[1] == codes.FIRE_ALARM and bits[2] == codes.FAULT
    assert bits[3] == codes.SHIELD and bits[4] == codes.SUPERVISORY and bits[0] == codes.TEST_MODE


@pytest.mark.parametrize(
    ("raw", "field", "why"),
    [
        ({"points": []}, "name", "required"),
        (minimal(type="u17"), "points[0].type", "not one of"),
        (minimal(address=70000), "points[0].address", "not in 0..65535"),
        (minimal(address=65535, type="u32"), "points[0].address", "past register 65535"),
        (minimal(byte_order="middle"), "points[0].byte_order", "not one of"),
        (minimal(unit="furlong"), "points[0].unit", "unknown name"),
        (minimal(scale=0), "points[0].scale", "must not be 0"),
        (minimal(type="bits"), "points[0].bits", "at least one bit"),
        (minimal(type="bits", bits=[{"bit": 16, "event": "fault"}]), "points[0].bits[0].bit",
         "not in 0..15"),
        (minimal(type="bits", bits=[{"bit": 1, "event": "explosion"}]),
         "points[0].bits[0].event", "not one of"),
        (minimal(colour="red"), "points[0].colour", "unknown field"),
        (minimal(detector="crystal_ball"), "points[0].detector", "not one of"),
        ({"name": "t", "poll": {"status_ms": 5000}, "points": minimal()["points"]},
         "poll.status_ms", "not in 100..2000"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(raw: dict[str, object], field: str, why: str) -> None:
    with pytest.raises(schema.ProfileError) as ei:
        schema.validate(raw)
    assert ei.value.field == field
    assert why in str(ei.value)


def test_duplicate_point_ids_refused() -> None:
    raw = minimal()
    raw["points"] = [raw["points"][0], dict(raw["points"][0], name="y")]  # type: ignore[index]
    with pytest.raises(schema.ProfileError, match="used twice"):
        schema.validate(raw)


def test_bad_profile_file_names_file_and_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "broken.toml").write_text('name = "broken"\n[[points]]\nid = 1\nname = "x"\n'
                                          'address = 0\ntype = "q16"\n')  # fmt: skip
    with pytest.raises(ConfigError) as ei:
        profiles.load_all([tmp_path])
    assert ei.value.field == "broken.toml: points[0].type"


ORDERS = st.sampled_from(["big", "little"])


@given(st.integers(0, 2**32 - 1), ORDERS, ORDERS, st.sampled_from(["u32", "i32"]))
def test_32bit_orders_match_struct(v: int, bo: str, wo: str, t: str) -> None:
    p = schema.validate(minimal(type=t, byte_order=bo, word_order=wo))["points"][0]
    be = struct.pack(">I", v)  # ABCD
    words = [be[0:2], be[2:4]]
    if wo == "little":
        words.reverse()  # CDAB
    if bo == "little":
        words = [w[::-1] for w in words]  # BADC / DCBA
    regs = [int.from_bytes(w, "big") for w in words]
    want = struct.unpack(">i" if t == "i32" else ">I", be)[0]
    assert schema.decode(p, regs) == want
    assert schema.encode(p, want) == regs


@given(st.floats(-1e6, 1e6, allow_nan=False), ORDERS)
def test_f32_round_trip(x: float, wo: str) -> None:
    p = schema.validate(minimal(type="f32", word_order=wo, exp=-2))["points"][0]
    val = round(x * 100)
    regs = schema.encode(p, val)
    assert abs(schema.decode(p, regs) - val) <= max(1, abs(val) * 1e-6)


def test_packed_bytes_and_signed() -> None:
    hi = schema.validate(minimal(type="u8_hi"))["points"][0]
    lo = schema.validate(minimal(type="u8_lo"))["points"][0]
    assert schema.decode(hi, [0x1A05]) == 0x1A and schema.decode(lo, [0x1A05]) == 0x05
    i16 = schema.validate(minimal(type="i16", scale=10))["points"][0]
    assert schema.decode(i16, [0xFFFF]) == -10


points_st = st.lists(
    st.tuples(st.integers(0, 600), st.sampled_from(["u16", "u32", "f32"])),
    min_size=1,
    max_size=60,
)


@given(points_st, st.integers(0, 20))
def test_plan_reads_covers_every_point_within_limits(pts: list[tuple[int, str]], gap: int) -> None:
    raw = {"name": "t", "points": [
        {"id": i + 1, "name": f"p{i}", "address": a, "type": t} for i, (a, t) in enumerate(pts)
    ]}  # fmt: skip
    prof = schema.validate(raw)
    blocks = schema.plan_reads(prof["points"], 125, gap)
    seen = []
    for b in blocks:
        assert 1 <= b["count"] <= 125
        for p in b["points"]:
            assert b["address"] <= p["address"]
            assert p["address"] + p["words"] <= b["address"] + b["count"]
            seen.append(p["id"])
        ends = sorted((p["address"], p["address"] + p["words"]) for p in b["points"])
        reach = ends[0][1]
        for start, end in ends[1:]:
            assert start - reach <= gap  # no hole wider than the allowed gap
            reach = max(reach, end)
    assert sorted(seen) == sorted(p["id"] for p in prof["points"])


def test_validated_profile_is_plain_data() -> None:
    """The firmware compiles the same structure: only dicts, lists, ints, strings, None."""

    def check(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                assert isinstance(k, str)
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)
        else:
            assert v is None or isinstance(v, (int, str))

    for p in profiles.load_all().values():
        check(p)
        assert copy.deepcopy(p) == p


def test_shipped_files_are_toml_with_matching_names() -> None:
    for name in SHIPPED:
        with open(profiles.SHIPPED_DIR / f"{name}.toml", "rb") as f:
            assert tomllib.load(f)["name"] == name
