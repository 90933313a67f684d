"""The deterministic CBOR codec: equality with cbor2, strictness, limits, streaming, fuzz."""

from __future__ import annotations

import os

import cbor2
import pytest
from emberlink.protocol import cbor
from emberlink.protocol.cbor import CBORError, Decoder, Tag, dumps, loads
from hypothesis import given, settings
from hypothesis import strategies as st

# Values whose deterministic encoding cbor2 (length-first canonical) agrees with: int keys in
# -24..23 encode in one byte, so bytewise and length-first order coincide.
_leaf = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.integers(-24, 23), inner, max_size=6),
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(_values)
def test_encoding_equals_cbor2_canonical(value: object) -> None:
    assert dumps(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=500)
@given(_values)
def test_roundtrip(value: object) -> None:
    assert loads(dumps(value)) == value


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63), max_size=8))
def test_text_keys_sort_bytewise(value: dict[str, int]) -> None:
    """RFC 8949 §4.2.1: keys sort by their encoded bytes (not length-first)."""
    raw = dumps(value)
    assert loads(raw) == value
    keys = [dumps(k) for k in value]
    assert list(cbor2.loads(raw)) == [cbor2.loads(k) for k in sorted(keys)]


def test_bytewise_order_differs_from_length_first() -> None:
    # 100 encodes as 18 64, -1 as 20: bytewise puts 100 first, cbor2 canonical puts -1 first.
    assert dumps({-1: 0, 100: 0}) == bytes.fromhex("a218640020 00".replace(" ", ""))
    assert cbor2.dumps({-1: 0, 100: 0}, canonical=True) == bytes.fromhex(
        "a220001864 00".replace(" ", "")
    )


def test_shortest_integer_boundaries() -> None:
    for n, h in [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-(2**64), "3bffffffffffffffff"),
    ]:
        assert dumps(n).hex() == h
        assert loads(bytes.fromhex(h)) == n


@pytest.mark.parametrize("value", [1.5, 0.0, float("nan")])
def test_floats_refused_on_encode(value: float) -> None:
    with pytest.raises(CBORError) as e:
        dumps(value)
    assert e.value.reason == cbor.FLOAT


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1])
def test_integers_beyond_64_bits_refused(value: int) -> None:
    with pytest.raises(CBORError) as e:
        dumps(value)
    assert e.value.reason == cbor.INT_RANGE


def test_unsupported_types_refused() -> None:
    for value in ({1, 2}, object(), 1j):
        with pytest.raises(CBORError) as e:
            dumps(value)
        assert e.value.reason == cbor.UNSUPPORTED


def test_tag_as_map_key_refused() -> None:
    with pytest.raises(CBORError) as e:
        loads(bytes.fromhex("a1c10000"))
    assert e.value.reason == cbor.UNSUPPORTED


def test_tag_roundtrip() -> None:
    raw = dumps(Tag(17, [b"\xa1\x01\x05", {}, b"", b"x"]))
    assert raw[0] == 0xD1
    assert loads(raw) == Tag(17, [b"\xa1\x01\x05", {}, b"", b"x"])
    assert cbor2.loads(raw).tag == 17


# --- limits: one test exactly at each limit, one just over it ---------------------------------


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def test_depth_at_limit_accepted_and_over_rejected() -> None:
    assert loads(_nested(cbor.MAX_DEPTH)) is not None
    with pytest.raises(CBORError) as e:
        loads(_nested(cbor.MAX_DEPTH + 1))
    assert e.value.reason == cbor.TOO_DEEP


def test_encode_depth_limit() -> None:
    v: object = 0
    for _ in range(cbor.MAX_DEPTH + 1):
        v = [v]
    with pytest.raises(CBORError) as e:
        dumps(v)
    assert e.value.reason == cbor.TOO_DEEP


def test_string_length_at_limit_and_over() -> None:
    ok = dumps(b"x" * cbor.MAX_STRING)
    assert loads(ok) == b"x" * cbor.MAX_STRING
    with pytest.raises(CBORError) as e:
        loads(dumps(b"x" * (cbor.MAX_STRING + 1)))
    assert e.value.reason == cbor.TOO_LONG


def test_item_count_at_limit_and_over() -> None:
    assert len(loads(dumps([0] * cbor.MAX_ITEMS))) == cbor.MAX_ITEMS
    with pytest.raises(CBORError) as e:
        loads(dumps([0] * (cbor.MAX_ITEMS + 1)))
    assert e.value.reason == cbor.TOO_LONG


def test_huge_declared_lengths_allocate_nothing() -> None:
    # A few bytes that claim gigabytes must fail at once, before any allocation.
    for h in ["5bffffffffffffffff", "9bffffffffffffffff", "bb7fffffffffffffff", "9a7fffffff00"]:
        with pytest.raises(CBORError) as e:
            loads(bytes.fromhex(h))
        assert e.value.reason in (cbor.TOO_LONG, cbor.TRUNCATED)


@pytest.mark.parametrize(
    "hexdata",
    [
        "59ffff00",  # a 65,535-byte string, within the string limit, one byte present
        "79ffff61",  # the same as text
        "99ffff00",  # an array of 65,535 items, within the item limit
        "b9ffff0000",  # a map of 65,535 pairs
        "8299ffff",  # the same, nested
        "a10099ffff00",  # as a map value
        "d199ffff00",  # under a tag
    ],
)
def test_declared_length_within_limits_but_short_input_allocates_nothing(hexdata: str) -> None:
    """A declared length is weighed against the bytes that remain before any list, dict or
    string is built: a few bytes claiming the largest allowed item cost no more than the error."""
    import tracemalloc

    data = bytes.fromhex(hexdata)
    tracemalloc.start()
    try:
        with pytest.raises(CBORError) as e:
            loads(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.reason == cbor.TRUNCATED
    # building the item would take 64 KiB (a string) to 512 KiB (a list of 65,535 pointers)
    assert peak < 8192, peak


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("1801", cbor.NOT_SHORTEST),
        ("3800", cbor.NOT_SHORTEST),
        ("7800", cbor.NOT_SHORTEST),
        ("9f00ff", cbor.INDEFINITE),
        ("5f40ff", cbor.INDEFINITE),
        ("a2020001 00", cbor.KEY_ORDER),
        ("a2616201616101", cbor.KEY_ORDER),
        ("a2010001 00", cbor.DUPLICATE_KEY),
        ("a1810000", cbor.UNSUPPORTED),
        ("fa3fc00000", cbor.FLOAT),
        ("f818", cbor.SIMPLE),
        ("1d", cbor.RESERVED),
        ("62c328", cbor.BAD_UTF8),
        ("0000", cbor.TRAILING),
        ("19", cbor.TRUNCATED),
    ],
)
def test_strict_decoding_reasons(hexdata: str, reason: str) -> None:
    with pytest.raises(CBORError) as e:
        loads(bytes.fromhex(hexdata.replace(" ", "")))
    assert e.value.reason == reason
    assert reason in str(e.value)


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    """Random input either decodes to a value that re-encodes to the same bytes, or raises
    CBORError: never another exception."""
    try:
        value = loads(data)
    except CBORError:
        return
    assert dumps(value) == data


@settings(max_examples=500)
@given(_values, st.data())
def test_fuzz_mutated_valid_encodings(value: object, data: st.DataObject) -> None:
    raw = bytearray(dumps(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        decoded = loads(bytes(raw))
    except CBORError:
        return
    assert dumps(decoded) == bytes(raw)


def test_random_bytes_soak() -> None:
    # A larger, non-shrinking soak: 20,000 random buffers.
    rnd = os.urandom(20000 * 24)
    for i in range(20000):
        chunk = rnd[i * 24 : (i + 1) * 24]
        try:
            loads(chunk)
        except CBORError:
            pass


@settings(max_examples=200)
@given(st.lists(_values, min_size=1, max_size=5))
def test_stream_decoder_whole_and_byte_at_a_time(values: list[object]) -> None:
    stream = b"".join(dumps(v) for v in values)
    # Whole buffer.
    d = Decoder()
    d.feed(stream)
    got = []
    while (m := d.next_message()) is not cbor.NEED_DATA or d.pending():
        if m is cbor.NEED_DATA:
            break
        got.append(m)
    # None is a legal CBOR value and also NEED_DATA; compare encodings instead.
    assert b"".join(dumps(v) for v in got) == stream or None in values
    # One byte at a time (h11 style).
    d = Decoder()
    got = []
    for i in range(len(stream)):
        d.feed(stream[i : i + 1])
        m = d.next_message()
        if m is not cbor.NEED_DATA:
            got.append(m)
    if None not in values:
        assert got == values
    assert d.pending() == 0 or None in values


def test_stream_decoder_buffer_limit() -> None:
    d = Decoder(max_buffer=16)
    d.feed(b"\x50")  # a 16-byte string, incomplete
    with pytest.raises(CBORError) as e:
        d.feed(b"x" * 16)
    assert e.value.reason == cbor.TOO_LONG
    assert d.pending() == 1


def test_stream_decoder_reports_malformed_input() -> None:
    d = Decoder()
    d.feed(b"\x18\x01")
    with pytest.raises(CBORError) as e:
        d.next_message()
    assert e.value.reason == cbor.NOT_SHORTEST
