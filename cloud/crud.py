"""Registry reads and writes for the API: keyword-only functions that never commit.

The request-scoped session dependency (api/deps.py) commits once at the end of a request, so a
registration and the rows that go with it (a gateway and its health row, a user and its scope)
share one transaction. Scope: ``unit_ids=None`` means every unit; a contractor passes its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from . import models, schemas
from .core.security import hash_token, new_token
from .ingest.store import device_key


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- registry ---------------------------------------------------------------------------------


def create_organisation(
    *, session: Session, org_in: schemas.OrganisationCreate
) -> models.Organisation:
    org = models.Organisation(name=org_in.name)
    session.add(org)
    session.flush()
    return org


def get_organisation_by_name(*, session: Session, name: str) -> models.Organisation | None:
    return session.scalars(
        select(models.Organisation).where(models.Organisation.name == name)
    ).first()


def create_unit(*, session: Session, unit_in: schemas.UnitCreate) -> models.Unit:
    unit = models.Unit(**unit_in.model_dump())
    session.add(unit)
    session.flush()
    return unit


def list_units(*, session: Session, unit_ids: Sequence[int] | None) -> list[models.Unit]:
    q = select(models.Unit).order_by(models.Unit.id)
    if unit_ids is not None:
        q = q.where(models.Unit.id.in_(unit_ids))
    return list(session.scalars(q))


def create_site(*, session: Session, site_in: schemas.SiteCreate) -> models.Site:
    site = models.Site(**site_in.model_dump())
    session.add(site)
    session.flush()
    return site


def create_gateway(*, session: Session, gateway_in: schemas.GatewayCreate) -> models.Gateway:
    """Register a gateway and its (unknown) health row in the same transaction."""
    data = gateway_in.model_dump(exclude={"mac_key_hex"})
    key = bytes.fromhex(gateway_in.mac_key_hex) if gateway_in.mac_key_hex else None
    t = now_ms()
    gw = models.Gateway(**data, mac_key=key, created_ms=t)
    session.add(gw)
    session.add(
        models.GatewayHealth(
            gateway_id=gw.id,
            status="unknown",
            reason="never heard from",
            since_ms=t,
            clock_unsynced=False,
        )
    )
    session.flush()
    return gw


def gateway_unit_id(*, session: Session, gateway_id: int) -> int | None:
    q = (
        select(models.Site.unit_id)
        .join(models.Gateway, models.Gateway.site_id == models.Site.id)
        .where(models.Gateway.id == gateway_id)
    )
    return session.scalar(q)


def _gateways_query(unit_ids: Sequence[int] | None) -> Select[models.Gateway, int]:
    q = (
        select(models.Gateway, models.Site.unit_id)
        .join(models.Site, models.Site.id == models.Gateway.site_id)
        .order_by(models.Gateway.id)
    )
    if unit_ids is not None:
        q = q.where(models.Site.unit_id.in_(unit_ids))
    return q


def list_gateways(
    *,
    session: Session,
    unit_ids: Sequence[int] | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[schemas.GatewayPublic], int]:
    q = _gateways_query(unit_ids).outerjoin(
        models.GatewayHealth, models.GatewayHealth.gateway_id == models.Gateway.id
    )
    if status is not None:
        q = q.where(models.GatewayHealth.status == status)
    count = session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = session.execute(q.limit(limit).offset(offset)).all()
    health = _health_of(session, [g.id for g, _ in rows])
    return [gateway_public(g, unit_id, health.get(g.id)) for g, unit_id in rows], count


def _health_of(session: Session, ids: list[int]) -> dict[int, models.GatewayHealth]:
    if not ids:
        return {}
    q = select(models.GatewayHealth).where(models.GatewayHealth.gateway_id.in_(ids))
    return {h.gateway_id: h for h in session.scalars(q)}


def gateway_public(
    g: models.Gateway, unit_id: int, h: models.GatewayHealth | None
) -> schemas.GatewayPublic:
    return schemas.GatewayPublic(
        id=g.id,
        site_id=g.site_id,
        unit_id=unit_id,
        name=g.name,
        serial=g.serial,
        has_mac_key=g.mac_key is not None,
        heartbeat_s=g.heartbeat_s,
        offline_after_misses=g.offline_after_misses,
        health=schemas.GatewayHealthPublic.model_validate(h) if h is not None else None,
    )


def get_gateway_detail(*, session: Session, gateway_id: int) -> schemas.GatewayDetail | None:
    row = session.execute(_gateways_query(None).where(models.Gateway.id == gateway_id)).first()
    if row is None:
        return None
    g, unit_id = row
    h = session.get(models.GatewayHealth, g.id)
    devs = session.scalars(
        select(models.Device)
        .where(models.Device.gateway_id == g.id)
        .order_by(models.Device.bus, models.Device.unit_addr)
    ).all()
    base = gateway_public(g, unit_id, h)
    return schemas.GatewayDetail(
        **base.model_dump(),
        devices=[
            device_public(session=session, device=d, gateway_status=h.status if h else None)
            for d in devs
        ],
    )


def create_device(*, session: Session, device_in: schemas.DeviceCreate) -> models.Device:
    d = models.Device(**device_in.model_dump())
    session.add(d)
    session.flush()
    return d


def get_device(*, session: Session, device_id: int) -> models.Device | None:
    return session.get(models.Device, device_id)


def device_public(
    *, session: Session, device: models.Device, gateway_status: str | None
) -> schemas.DevicePublic:
    h = session.get(models.DeviceHealth, device.id)
    own = h.status if h is not None else "unknown"
    effective = "unknown" if gateway_status == "offline" else own
    return schemas.DevicePublic(
        id=device.id,
        gateway_id=device.gateway_id,
        bus=device.bus,
        unit_addr=device.unit_addr,
        name=device.name,
        part=device.part,
        health=schemas.DeviceHealthPublic.model_validate(h) if h is not None else None,
        effective_status=effective,  # type: ignore[arg-type]
    )


def create_point(*, session: Session, point_in: schemas.PointCreate) -> models.Point:
    p = models.Point(**point_in.model_dump())
    session.add(p)
    session.flush()
    return p


def device_of_src(*, session: Session, gateway_id: int, src: int) -> models.Device | None:
    bus, unit = device_key(src)
    q = select(models.Device).where(
        models.Device.gateway_id == gateway_id,
        models.Device.bus == bus,
        models.Device.unit_addr == unit,
    )
    return session.scalars(q).first()


# ---- users and tokens -------------------------------------------------------------------------


def create_user(*, session: Session, user_in: schemas.UserCreate) -> models.User:
    user = models.User(name=user_in.name, role=user_in.role, active=True, created_ms=now_ms())
    session.add(user)
    session.flush()
    for uid in sorted(set(user_in.unit_ids)):
        session.add(models.UserUnit(user_id=user.id, unit_id=uid))
    session.flush()
    return user


def get_user_by_name(*, session: Session, name: str) -> models.User | None:
    return session.scalars(select(models.User).where(models.User.name == name)).first()


def user_unit_ids(*, session: Session, user_id: int) -> list[int]:
    q = select(models.UserUnit.unit_id).where(models.UserUnit.user_id == user_id)
    return sorted(session.scalars(q))


def user_public(*, session: Session, user: models.User) -> schemas.UserPublic:
    return schemas.UserPublic(
        id=user.id,
        name=user.name,
        role=user.role,  # type: ignore[arg-type]
        active=user.active,
        unit_ids=user_unit_ids(session=session, user_id=user.id),
    )


def create_token(
    *, session: Session, user: models.User, name: str = "", token: str | None = None
) -> tuple[models.ApiToken, str]:
    """A new API token for ``user``; the plain token is returned once and stored hashed."""
    plain = token or new_token()
    row = models.ApiToken(
        user_id=user.id,
        token_hash=hash_token(plain),
        name=name,
        created_ms=now_ms(),
        revoked=False,
    )
    session.add(row)
    session.flush()
    return row, plain


def user_by_token(*, session: Session, token: str) -> models.User | None:
    q = (
        select(models.User)
        .join(models.ApiToken, models.ApiToken.user_id == models.User.id)
        .where(
            models.ApiToken.token_hash == hash_token(token),
            models.ApiToken.revoked.is_(False),
            models.User.active.is_(True),
        )
    )
    return session.scalars(q).first()


def count_users(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(models.User)) or 0
