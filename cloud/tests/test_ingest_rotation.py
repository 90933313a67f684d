"""A MAC key changed in the registry while the ingest holds the old one in its cache.

After a gateway confirms rotated credentials its next batches are sealed with the new key,
while a worker may still hold the old one (REGISTRY_TTL_S). Such a batch must be stored, not
quarantined: in PUBACK mode the gateway forgets it once the broker has it.
"""

from __future__ import annotations

from emberlink.cloud import models
from emberlink.cloud.ingest.pipeline import Ingestor
from emberlink.protocol import messages, topics, wire
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .utils import KEY, batch, make_gateway

GW = 5
EV = topics.topic(GW, "ev")
NEW_KEY = bytes(range(100, 132))
PENDING_KEY = bytes(range(200, 232))
WRONG_KEY = bytes(32)


def _stored(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return list(s.scalars(select(models.Event.seq).order_by(models.Event.seq)))


def _quarantine(sessions: sessionmaker[Session]) -> list[tuple[int | None, str, bytes]]:
    with sessions() as s:
        rows = s.scalars(select(models.Quarantine).order_by(models.Quarantine.id))
        return [(q.gateway_id, q.reason, q.payload) for q in rows]


def _warm(sessions: sessionmaker[Session]) -> Ingestor:
    """An ingestor whose cache holds the gateway's key KEY (a long TTL, as in service)."""
    with sessions() as s, s.begin():
        make_gateway(s, GW, key=KEY)
    ing = Ingestor(sessions, registry_ttl_s=3600)
    assert ing.accept(EV, wire.seal(batch(GW, 1, 1), key=KEY)) is None
    assert ing.flush().stored == 1
    return ing


def _credential(sessions: sessionmaker[Session], key: bytes, *, confirmed: bool) -> None:
    with sessions() as s, s.begin():
        s.add(
            models.GatewayCredential(
                gateway_id=GW,
                username=f"gw-{GW}-r{len(key)}",
                password_hash="$7$unused",
                issued_ms=1,
                mac_key=key,
                confirmed_ms=1 if confirmed else None,
            )
        )
        if confirmed:
            g = s.get(models.Gateway, GW)
            assert g is not None
            g.mac_key = key


def test_batch_sealed_with_a_key_changed_after_the_cache_was_filled_is_stored(
    sessions: sessionmaker[Session],
) -> None:
    ing = _warm(sessions)
    _credential(sessions, NEW_KEY, confirmed=True)  # the rotation is confirmed
    assert ing.accept(EV, wire.seal(batch(GW, 2, 2), key=NEW_KEY)) is None
    # the cache holds the new key now: the next batch needs no second read
    assert ing.gateways.get(GW) is not None and ing.gateways.get(GW).mac_key == NEW_KEY  # type: ignore[union-attr]
    assert ing.accept(EV, wire.seal(batch(GW, 4, 1), key=NEW_KEY)) is None
    wrong = wire.seal(batch(GW, 5, 1), key=WRONG_KEY)
    assert ing.accept(EV, wrong) == "MAC does not verify"
    # the old key no longer verifies once the cache was refreshed
    old = wire.seal(batch(GW, 6, 1), key=KEY)
    assert ing.accept(EV, old) == "MAC does not verify"
    res = ing.flush()
    assert (res.stored, res.quarantined) == (3, 2)
    assert res.acks == [messages.Ack(GW, 1, 4)]
    assert _stored(sessions) == [1, 2, 3, 4]
    assert _quarantine(sessions) == [
        (GW, "MAC does not verify", wrong),
        (GW, "MAC does not verify", old),
    ]


def test_batch_sealed_with_the_key_of_an_unconfirmed_rotation_is_stored(
    sessions: sessionmaker[Session],
) -> None:
    # The gateway redeemed a rotation token (its new key is pending) and seals with the new
    # key before the cloud recorded its confirmation: only that gateway holds the key.
    ing = _warm(sessions)
    _credential(sessions, PENDING_KEY, confirmed=False)
    assert ing.accept(EV, wire.seal(batch(GW, 2, 1), key=PENDING_KEY)) is None
    assert ing.accept(EV, wire.seal(batch(GW, 3, 1), key=KEY)) is None  # the key in force
    wrong = wire.seal(batch(GW, 4, 1), key=WRONG_KEY)
    assert ing.accept(EV, wrong) == "MAC does not verify"
    res = ing.flush()
    assert (res.stored, res.quarantined) == (2, 1)
    assert _stored(sessions) == [1, 2, 3]
    assert _quarantine(sessions) == [(GW, "MAC does not verify", wrong)]
    with sessions() as s:  # ingest does not confirm the rotation: the key in force is unchanged
        g = s.get(models.Gateway, GW)
        assert g is not None and g.mac_key == KEY


def test_a_revoked_key_does_not_verify(sessions: sessionmaker[Session]) -> None:
    ing = _warm(sessions)
    _credential(sessions, PENDING_KEY, confirmed=False)
    with sessions() as s, s.begin():
        for c in s.scalars(select(models.GatewayCredential)):
            c.revoked_ms = 2
    bad = wire.seal(batch(GW, 2, 1), key=PENDING_KEY)
    assert ing.accept(EV, bad) == "MAC does not verify"
    assert ing.accept(EV, wire.seal(batch(GW, 2, 1))) == "MAC required"
    res = ing.flush()
    assert (res.stored, res.quarantined) == (0, 2)
    assert [r[1] for r in _quarantine(sessions)] == ["MAC does not verify", "MAC required"]


def test_a_sealed_batch_is_checked_against_a_key_set_after_the_cache_was_filled(
    sessions: sessionmaker[Session],
) -> None:
    # The cache says the gateway has no key (a bare batch was fine), then it is given one: a
    # sealed batch is verified against the new key, never taken unchecked on the stale entry.
    with sessions() as s, s.begin():
        make_gateway(s, GW)
    ing = Ingestor(sessions, registry_ttl_s=3600)
    assert ing.accept(EV, wire.seal(batch(GW, 1, 1))) is None
    _credential(sessions, NEW_KEY, confirmed=True)
    forged = wire.seal(batch(GW, 2, 1), key=WRONG_KEY)
    assert ing.accept(EV, forged) == "MAC does not verify"
    assert ing.accept(EV, wire.seal(batch(GW, 2, 1), key=NEW_KEY)) is None
    assert ing.accept(EV, wire.seal(batch(GW, 3, 1))) == "MAC required"  # bare: no longer
    res = ing.flush()
    assert (res.stored, res.quarantined) == (2, 2)
    assert _stored(sessions) == [1, 2]
    bare = wire.seal(batch(GW, 3, 1))
    assert _quarantine(sessions) == [
        (GW, "MAC does not verify", forged),
        (GW, "MAC required", bare),
    ]
