"""COSE_Mac0 over batches: HMAC equals the standard library's, tags verify, tampering fails."""

from __future__ import annotations

import hashlib
import hmac

import cbor2
import pytest
from emberlink.protocol import codes, mac, messages, wire
from emberlink.protocol.errors import MacError
from emberlink.protocol.messages import Batch, Event
from hypothesis import given
from hypothesis import strategies as st

KEY = bytes(range(32))
BATCH = Batch(12, 3, 1, 1_764_421_200_000, [Event(codes.FIRE_ALARM, 0, 0x30000C, state=1)])


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_stdlib(key: bytes, msg: bytes) -> None:
    assert mac.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@pytest.mark.parametrize("alg", [mac.ALG_HMAC256_64, mac.ALG_HMAC256_256])
def test_wrap_is_cose_mac0_and_verifies(alg: int) -> None:
    payload = messages.encode_batch(BATCH)
    raw = mac.wrap(payload, KEY, alg, kid=b"\x00\x0c")
    tagged = cbor2.loads(raw)
    assert tagged.tag == 17
    protected, unprotected, body, tag = tagged.value
    assert cbor2.loads(protected) == {1: alg}
    assert unprotected == {4: b"\x00\x0c"}
    assert body == payload
    # MAC_structure per RFC 9052 §6.3, computed independently with cbor2 and stdlib hmac.
    mac_structure = cbor2.dumps(["MAC0", protected, b"", payload])
    expect = hmac.new(KEY, mac_structure, hashlib.sha256).digest()[: mac.TAG_LENGTHS[alg]]
    assert tag == expect
    assert wire.open_batch(raw, KEY, require_mac=True) == BATCH


def test_sizes_of_the_envelope() -> None:
    bare = len(messages.encode_batch(BATCH))
    assert 24 <= bare < 256  # the payload's byte-string head is 2 bytes
    # tag 17 (1) + array (1) + protected h'a10104' (4) + {} (1) + payload head (2) + tag
    assert len(wire.seal(BATCH, KEY, mac.ALG_HMAC256_64)) - bare == 9 + 1 + 8
    assert len(wire.seal(BATCH, KEY, mac.ALG_HMAC256_256)) - bare == 9 + 2 + 32


def test_wrong_key_and_tampering_fail() -> None:
    raw = wire.seal(BATCH, KEY)
    with pytest.raises(MacError) as e:
        wire.open_batch(raw, b"other key")
    assert e.value.reason == "MAC does not verify"
    # Flip a bit in the payload: still valid CBOR, but the tag no longer matches.
    i = raw.index(messages.encode_batch(BATCH)) + 10
    bad = raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]
    with pytest.raises(MacError):
        wire.open_batch(bad, KEY)


def test_policy_bare_or_unverifiable() -> None:
    bare = wire.seal(BATCH)
    with pytest.raises(MacError) as e:
        wire.open_batch(bare, KEY)
    assert e.value.reason == "MAC required"
    with pytest.raises(MacError) as e:
        wire.open_batch(wire.seal(BATCH, KEY), None, require_mac=True)
    assert e.value.reason == "MAC required"
    # Without a key and without the requirement, a MAC'd batch is read but not trusted.
    assert wire.open_batch(wire.seal(BATCH, KEY)) == BATCH


@pytest.mark.parametrize(
    "env",
    [
        [b"\xa1\x01\x05", {}, b"\xa0"],
        [b"\xa1\x01\x05", {5: b"x"}, b"\xa0", bytes(32)],
        [b"\xa1\x01\x05", {4: b""}, b"\xa0", bytes(32)],
        [b"\xa1\x01\x05", {}, b"\xa0", bytes(8)],
        [b"\xa2\x01\x05\x02\x00", {}, b"\xa0", bytes(32)],
        ["x", {}, b"\xa0", bytes(32)],
    ],
)
def test_malformed_envelopes(env: list[object]) -> None:
    raw = cbor2.dumps(cbor2.CBORTag(17, env))
    with pytest.raises(MacError) as e:
        mac.unwrap(raw)
    assert e.value.reason in ("malformed COSE_Mac0",)


def test_kid_limits() -> None:
    mac.wrap(b"\xa0", KEY, kid=b"12345678")
    with pytest.raises(MacError):
        mac.wrap(b"\xa0", KEY, kid=b"123456789")
    with pytest.raises(MacError):
        mac.wrap(b"\xa0", KEY, alg=6)


@pytest.mark.parametrize("alg", [[5], {}, b"\x05", "5", True, -1])
def test_alg_of_any_other_type_refused_with_reason(alg: object) -> None:
    raw = cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps({1: alg}), {}, b"\xa0", bytes(32)]))
    with pytest.raises(MacError) as e:
        mac.unwrap(raw)
    assert e.value.reason == "unsupported MAC algorithm"


_ANY = st.recursive(
    st.one_of(st.none(), st.integers(-10, 40), st.binary(max_size=40), st.text(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.integers(0, 6), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.one_of(_ANY, _ANY.map(lambda v: cbor2.dumps({1: v}))),
    st.one_of(_ANY, st.just({4: b"\x01"})),
    st.one_of(_ANY, st.just(messages.encode_batch(BATCH))),
    st.one_of(_ANY, st.binary(min_size=8, max_size=8), st.binary(min_size=32, max_size=32)),
)
def test_fuzz_envelopes_refused_with_a_protocol_error(
    protected: object, unprotected: object, payload: object, tag: object
) -> None:
    """Any tag-17 array of four: a ProtocolError (MAC or CBOR reason), never another error."""
    from emberlink.protocol.errors import ProtocolError

    raw = cbor2.dumps(cbor2.CBORTag(17, [protected, unprotected, payload, tag]), canonical=True)
    for key in (None, KEY):
        try:
            wire.open_batch(raw, key)
        except ProtocolError as e:
            assert e.reason
