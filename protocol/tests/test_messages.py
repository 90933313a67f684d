"""Messages: every schema-allowed message encodes like cbor2, round-trips, matches the CDDL,
and invalid input is refused with a specific reason."""

from __future__ import annotations

import cbor2
import pytest
from emberlink.protocol import cbor, codes, jsonform, mac, messages, wire
from emberlink.protocol.errors import ProtocolError
from emberlink.protocol.messages import Ack, Batch, Command, Event, MessageError, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .cddl_check import validate
from .strategies import VALUES, acks, batches, commands, events, results

T0 = 1_764_421_200_000


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batch_bytes_equal_cbor2_canonical_and_roundtrip(batch: Batch) -> None:
    raw = messages.encode_batch(batch)
    assert raw == cbor2.dumps(batch.to_map(), canonical=True)
    assert messages.decode_batch(raw) == batch
    assert messages.encode_batch(messages.decode_batch(raw)) == raw


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_events=4))
def test_every_produced_batch_matches_the_cddl(batch: Batch) -> None:
    validate(messages.encode_batch(batch))
    for alg, kid in ((mac.ALG_HMAC256_256, None), (mac.ALG_HMAC256_64, b"\x00\x2a")):
        sealed = wire.seal(batch, b"k" * 32, alg, kid)
        validate(sealed)
        # the COSE_Mac0 envelope too is cbor2's canonical encoding of itself
        assert cbor2.dumps(cbor2.loads(sealed), canonical=True) == sealed


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_json_form_is_lossless(batch: Batch) -> None:
    raw = messages.encode_batch(batch)
    assert jsonform.encode_from_json(jsonform.decode_to_json(raw)) == raw


@pytest.mark.parametrize("kind", sorted(messages.KINDS))
def test_each_kind_at_least_2_5x_smaller_than_compact_json(kind: int) -> None:
    """The size goal, per kind, on a realistic event (protocol/README.md has the table)."""
    from emberlink.tools.bench_protocol import compact_json, sample_events

    ev = sample_events()[kind]
    batch = Batch(1234, 7, 1, T0, [ev])
    assert len(compact_json(batch)) >= 2.5 * len(messages.encode_batch(batch))


def test_sixty_sample_residual_current_series_under_100_bytes() -> None:
    from emberlink.tools.bench_protocol import residual_current_trace

    ev = Event(
        codes.MEASUREMENT,
        0,
        (2 << 16) | 1,
        period=1000,
        exp=-3,
        unit=1,
        samples=residual_current_trace(60),
    )
    assert len(cbor.dumps(ev.to_map())) < 100


def test_samples_are_delta_encoded_on_the_wire() -> None:
    ev = Event(codes.MEASUREMENT, 0, 1, period=1000, samples=[1000, 1001, 999, 999])
    assert ev.to_map()[9] == [1000, 1, -2, 0]
    assert messages.event_from_map(ev.to_map()).samples == [1000, 1001, 999, 999]


def test_seqs_follow_seq0() -> None:
    b = Batch(1, 2, 41, T0, [Event(codes.RESET, 0, 0), Event(codes.SILENCE, 1, 0)])
    assert [s for s, _ in b.seqs()] == [41, 42]


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: Event(99), messages.UNKNOWN_KIND),
        (lambda: Event(codes.FIRE_ALARM, 0, 0), messages.MISSING_KEY),
        (lambda: Event(codes.FIRE_ALARM, 0, 0, state=4), messages.OUT_OF_RANGE),
        (lambda: Event(codes.FIRE_ALARM, 0, 0, state=1, period=5), messages.UNKNOWN_KEY),
        (lambda: Event(codes.FIRE_ALARM, 0, 0, state=1, val=1.5), messages.WRONG_TYPE),
        (lambda: Event(codes.FIRE_ALARM, 0, 0, state=True), messages.WRONG_TYPE),
        (lambda: Event(codes.FIRE_ALARM, -1, 0, state=1), messages.OUT_OF_RANGE),
        (lambda: Event(codes.FIRE_ALARM, 0, 2**32, state=1), messages.OUT_OF_RANGE),
        (lambda: Event(codes.FIRE_ALARM, 0, 0, state=1, exp=24), messages.OUT_OF_RANGE),
        (lambda: Event(codes.MEASUREMENT, 0, 0, period=1, samples=[]), messages.OUT_OF_RANGE),
        (lambda: Event(codes.MEASUREMENT, 0, 0, period=1, samples=[2**31]), messages.OUT_OF_RANGE),
        (lambda: Event(codes.MEASUREMENT, 0, 0, period=1, samples=[0] * 4097), messages.TOO_MANY),
        (
            lambda: Event(codes.MAINTENANCE, 0, 0, code=1, result=0, note="x" * 65),
            messages.OUT_OF_RANGE,
        ),
        (lambda: Event(codes.HEALTH, 0, 0, health={24: 1}), messages.OUT_OF_RANGE),
        (lambda: Event(codes.BIRTH, 0, 0, info={9: 1}), messages.UNKNOWN_KEY),
        (lambda: Batch(1, 1, 1, T0, []), messages.OUT_OF_RANGE),
        (lambda: Batch(1, 1, 2**32 - 1, T0, [Event(6), Event(6)]), messages.OUT_OF_RANGE),
        (lambda: Batch(1, 1, 1, T0, [Event(6)] * 1025), messages.TOO_MANY),
        (lambda: Batch("1", 1, 1, T0, [Event(6)]), messages.WRONG_TYPE),
        (lambda: Ack(1, 1, -1), messages.OUT_OF_RANGE),
        (lambda: Command(1, 1, 2, {30: 1}), messages.OUT_OF_RANGE),
        (lambda: Result(1, 1, 0, 5), messages.WRONG_TYPE),
    ],
)
def test_invalid_construction_refused_with_reason(build, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MessageError) as e:
        build()
    assert e.value.reason == reason


def test_largest_batch_and_series_match_the_cddl() -> None:
    """The limits the strategies do not reach: 1,024 events, 4,096 samples."""
    series = Event(
        codes.MEASUREMENT, 0, 1, period=1000, samples=[messages.I32_MIN, messages.I32_MAX] * 2048
    )
    validate(messages.encode_batch(Batch(1, 1, 1, T0, [series])))
    validate(messages.encode_batch(Batch(1, 1, 1, T0, [Event(codes.RESET, 0, 0)] * 1024)))


def test_events_the_detection_core_raises_match_the_cddl() -> None:
    """Every event the firmware core produces over its golden traces (the same core runs in
    the Pi gateway and on the board), sent as the gateway sends it, is valid under the CDDL."""
    import json
    from pathlib import Path

    from emberlink.firmware.golden import run_vector

    folder = Path(__file__).resolve().parents[2] / "firmware" / "vectors"
    kinds = set()
    for path in sorted(folder.glob("*.json")):
        vec = json.loads(path.read_text())
        for block in (False, True):
            out = run_vector(vec, block)
            evs = []
            for t, f in out:
                f = dict(f)
                evs.append(
                    Event(
                        f.pop("kind"),
                        t - out[0][0],
                        f.pop("src"),
                        **{k: v for k, v in f.items() if k != "dt"},
                    )
                )
                kinds.add(evs[-1].kind)
            if evs:
                batch = Batch(1234, 7, 1, T0, evs)
                validate(messages.encode_batch(batch))
                validate(wire.seal(batch, b"k" * 32))
    assert {codes.FIRE_ALARM, codes.PRE_ALARM, codes.FAULT} <= kinds


def test_max_events_at_limit_accepted() -> None:
    b = Batch(1, 1, 1, T0, [Event(codes.RESET, 0, 0)] * messages.MAX_EVENTS)
    assert len(messages.decode_batch(messages.encode_batch(b)).events) == messages.MAX_EVENTS


def test_oversized_payload_refused_before_parsing() -> None:
    with pytest.raises(MessageError) as e:
        messages.decode_batch(b"\xa0" * (messages.MAX_BATCH_BYTES + 1))
    assert e.value.reason == messages.TOO_MANY


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_events=3), st.data())
def test_fuzz_mutated_batches(batch: Batch, data: st.DataObject) -> None:
    """Flip bytes of a valid batch: the decoder refuses with a ProtocolError or returns a
    valid batch whose encoding is exactly the mutated bytes (no second encoding exists)."""
    raw = bytearray(messages.encode_batch(batch))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        got = messages.decode_batch(bytes(raw))
    except ProtocolError as e:
        assert e.reason
        return
    assert messages.encode_batch(got) == bytes(raw)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_random_payloads_on_every_decoder(data: bytes) -> None:
    for decode in (messages.decode_batch, messages.decode_ack, wire.open_batch):
        try:
            decode(data)
        except ProtocolError:
            pass


@given(events())
def test_events_compare_by_wire_form(ev: Event) -> None:
    assert messages.event_from_map(cbor.loads(cbor.dumps(ev.to_map()))) == ev


def test_ack_command_result_roundtrip_and_discrimination() -> None:
    for msg in (
        Ack(7, 3, 99),
        Command(7, 1, messages.OP_TIME_SYNC, {0: T0}),
        Result(7, 1, 0, "ok"),
    ):
        raw = messages.encode(msg)
        assert raw == cbor2.dumps(msg.to_map(), canonical=True)
        assert messages.from_map(cbor.loads(raw)) == msg
        validate(raw)


def test_unknown_message_shape_refused() -> None:
    with pytest.raises(MessageError) as e:
        messages.from_map({0: 1, 1: 2})
    assert e.value.reason == messages.NOT_A_MESSAGE


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(acks(), commands(), results()))
def test_ack_command_result_equal_cbor2_match_the_cddl_and_roundtrip(
    msg: Ack | Command | Result,
) -> None:
    raw = messages.encode(msg)
    assert raw == cbor2.dumps(msg.to_map(), canonical=True)
    assert messages.from_map(cbor.loads(raw)) == msg
    assert jsonform.encode_from_json(jsonform.decode_to_json(raw)) == raw
    validate(raw)


# Message-shaped maps whose values are often valid and sometimes junk (null, empty maps, text,
# floats are not CBOR here): what the decoder accepts must be a message with exactly one
# encoding, and one the CDDL accepts too.
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.just({}),
    st.just([]),
    st.integers(-(2**64), 2**64 - 1),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.integers(0, 25), st.integers(-3, 3), max_size=3),
)


def _field(key: int) -> st.SearchStrategy[object]:
    return st.one_of(VALUES[key], _JUNK) if key in VALUES else _JUNK


_EVENT_MAPS = st.builds(
    lambda kind, rest: {0: kind, 1: 0, 2: 0, **rest},
    st.one_of(st.integers(1, 17), _JUNK),
    st.dictionaries(st.integers(1, 21), st.just(None), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: _field(k) for k in keys})
    ),
)
_U = st.one_of(st.integers(0, 30), _JUNK)
_SHAPED = st.one_of(
    st.fixed_dictionaries(
        {0: st.just(1), 1: _U, 2: _U, 3: _U, 4: _U, 5: st.lists(_EVENT_MAPS, max_size=3)},
        optional={6: _U, 7: _U},
    ),
    st.fixed_dictionaries({0: st.just(1), 1: _U, 2: _U, 8: _U}),
    st.fixed_dictionaries(
        {0: st.just(1), 1: _U, 9: _U, 10: _U},
        optional={11: st.one_of(VALUES[15], _JUNK)},
    ),
    st.fixed_dictionaries({0: st.just(1), 1: _U, 9: _U, 12: _U}, optional={13: _field(12)}),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_SHAPED)
def test_what_the_decoder_accepts_has_one_encoding_and_matches_the_cddl(m: dict) -> None:  # type: ignore[type-arg]
    raw = cbor.dumps(m)
    try:
        msg = messages.from_map(cbor.loads(raw))
    except ProtocolError as e:
        assert e.reason
        return
    assert messages.encode(msg) == raw
    validate(raw)


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        # null for an optional key: the constructors take None as absent, so it would
        # re-encode without the key: a second encoding of one message
        ({0: 1, 1: 1, 2: 1, 3: 1, 4: T0, 5: [{0: 6, 1: 0, 2: 0, 13: None}]}, messages.WRONG_TYPE),
        ({0: 1, 1: 1, 2: 1, 3: 1, 4: T0, 5: [{0: 6, 1: 0, 2: 0}], 6: None}, messages.WRONG_TYPE),
        ({0: 1, 1: 1, 9: 1, 10: 1, 11: None}, messages.WRONG_TYPE),
        ({0: 1, 1: 1, 9: 1, 12: 0, 13: None}, messages.WRONG_TYPE),
        # no args is written by leaving key 11 out
        ({0: 1, 1: 1, 9: 1, 10: 1, 11: {}}, messages.OUT_OF_RANGE),
    ],
)
def test_second_encodings_refused_with_reason(m: dict, reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(MessageError) as e:
        messages.from_map(cbor.loads(cbor.dumps(m)))
    assert e.value.reason == reason
