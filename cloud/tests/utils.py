"""Factories for tests: a registered gateway, batches, tokens."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from emberlink.cloud import crud, models, schemas
from emberlink.protocol import codes, messages
from sqlalchemy.orm import Session

_n = itertools.count(1)
KEY = bytes(range(32))  # a gateway MAC key for tests


def make_site(session: Session, unit_kind: str = "key_unit") -> models.Site:
    i = next(_n)
    org = crud.create_organisation(
        session=session, org_in=schemas.OrganisationCreate(name=f"org-{i}")
    )
    unit = crud.create_unit(
        session=session,
        unit_in=schemas.UnitCreate(
            organisation_id=org.id,
            name=f"unit-{i}",
            kind=unit_kind,
            category="school",  # type: ignore[arg-type]
            address="1 Example Road",
        ),
    )
    return crud.create_site(
        session=session, site_in=schemas.SiteCreate(unit_id=unit.id, name=f"site-{i}")
    )


def make_gateway(
    session: Session,
    gw: int,
    *,
    key: bytes | None = None,
    site: models.Site | None = None,
    heartbeat_s: int | None = None,
) -> models.Gateway:
    site = site or make_site(session)
    g = crud.create_gateway(
        session=session,
        gateway_in=schemas.GatewayCreate(
            id=gw,
            site_id=site.id,
            name=f"gw-{gw}",
            mac_key_hex=key.hex() if key else None,
            heartbeat_s=heartbeat_s,
        ),
    )
    return g


def measurement(dt: int = 0, src: int = (1 << 24) | (3 << 16) | 1) -> messages.Event:
    return messages.Event(codes.MEASUREMENT, dt, src, period=1000, samples=[10, 11, 12])


def heartbeat(dt: int = 0, **health: int) -> messages.Event:
    h = {0: 100, 4: 0, 6: 1, 7: 0, 10: 30}
    names = {v: k for k, v in codes.HEALTH_NAMES.items()}
    for k, v in health.items():
        h[names[k]] = v
    return messages.Event(codes.HEALTH, dt, 0, health=h)


def batch(
    gw: int,
    seq0: int,
    n: int = 3,
    *,
    boot: int = 1,
    t0: int = 1_700_000_000_000,
    flags: int = 0,
    events: list[messages.Event] | None = None,
) -> messages.Batch:
    evs = events if events is not None else [measurement(i) for i in range(n)]
    return messages.Batch(gw, boot, seq0, t0, evs, flags=flags)


FIRE_SRC = (1 << 24) | (3 << 16) | 7  # bus 1, unit 3, point 7


def fire(state: int, dt: int = 0, src: int = FIRE_SRC, eflags: int | None = None) -> messages.Event:
    return messages.Event(codes.FIRE_ALARM, dt, src, state=state, code=1, part=42, eflags=eflags)


def populate(
    sessions: object, gw: int, *, seq0: int = 1, flags: int = 0, t0: int | None = None
) -> None:
    """Ingest a heartbeat, a measurement and an active fire alarm for ``gw``."""
    from emberlink.cloud.ingest.pipeline import Ingestor, now_ms
    from emberlink.protocol import topics, wire

    ing = Ingestor(sessions)  # type: ignore[arg-type]
    b = batch(
        gw,
        seq0,
        boot=1,
        t0=t0 if t0 is not None else now_ms(),
        flags=flags,
        events=[heartbeat(), measurement(1), fire(codes.ACTIVE, 2)],
    )
    assert ing.accept(topics.topic(gw, "ev"), wire.seal(b)) is None
    ing.flush()


async def until(pred: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Poll ``pred`` on the running loop until it holds; fail naming ``what`` after the bound."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
