"""Gateways, the devices and points behind them, and their health history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from sqlalchemy import select

from ... import crud, models, schemas
from ..deps import (
    CurrentUser,
    RegistryEditor,
    SessionDep,
    check_gateway_scope,
    decode_cursor,
    encode_cursor,
)

router = APIRouter(tags=["gateways"])

GatewayId = Annotated[int, Path(ge=0, le=0xFFFFFFFF, description="the gateway number")]
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/gateways", status_code=201, response_model=schemas.GatewayPublic)
def create_gateway(
    session: SessionDep, _: RegistryEditor, gateway_in: schemas.GatewayCreate
) -> schemas.GatewayPublic:
    """Register a gateway under a site (its health starts as unknown)."""
    site = session.get(models.Site, gateway_in.site_id)
    if site is None:
        raise HTTPException(status_code=422, detail="Site does not exist")
    if session.get(models.Gateway, gateway_in.id) is not None:
        raise HTTPException(status_code=409, detail="Gateway already exists")
    gw = crud.create_gateway(session=session, gateway_in=gateway_in)
    return crud.gateway_public(gw, site.unit_id, session.get(models.GatewayHealth, gw.id))


@router.get("/gateways", response_model=schemas.GatewaysPublic)
def read_gateways(
    session: SessionDep,
    user: CurrentUser,
    status: Annotated[schemas.HealthStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> schemas.GatewaysPublic:
    """Gateways the caller may see, with their derived health."""
    data, count = crud.list_gateways(
        session=session, unit_ids=user.unit_ids, status=status, limit=limit, offset=offset
    )
    return schemas.GatewaysPublic(data=data, count=count)


@router.get("/gateways/{gateway_id}", response_model=schemas.GatewayDetail)
def read_gateway(
    session: SessionDep, user: CurrentUser, gateway_id: GatewayId
) -> schemas.GatewayDetail:
    """One gateway: registry data, health, and each device's liveness."""
    check_gateway_scope(session, user, gateway_id)
    detail = crud.get_gateway_detail(session=session, gateway_id=gateway_id)
    if detail is None:
        raise HTTPException(status_code=404, detail="Gateway not found")
    return detail


@router.get("/gateways/{gateway_id}/health/history", response_model=schemas.HealthHistoryPublic)
def read_health_history(
    session: SessionDep,
    user: CurrentUser,
    gateway_id: GatewayId,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.HealthHistoryPublic:
    """Health transitions of a gateway and its devices, newest first."""
    check_gateway_scope(session, user, gateway_id)
    before = decode_cursor(cursor)
    HT = models.HealthTransition
    q = select(HT).where(HT.gateway_id == gateway_id).order_by(HT.id.desc()).limit(limit + 1)
    if before is not None:
        q = q.where(HT.id < before)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.HealthHistoryPublic(
        data=[schemas.HealthTransitionPublic.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.post("/devices", status_code=201, response_model=schemas.DevicePublic)
def create_device(
    session: SessionDep, user: RegistryEditor, device_in: schemas.DeviceCreate
) -> schemas.DevicePublic:
    """Register a field device behind a gateway."""
    if session.get(models.Gateway, device_in.gateway_id) is None:
        raise HTTPException(status_code=422, detail="Gateway does not exist")
    exists = session.scalars(
        select(models.Device).where(
            models.Device.gateway_id == device_in.gateway_id,
            models.Device.bus == device_in.bus,
            models.Device.unit_addr == device_in.unit_addr,
        )
    ).first()
    if exists is not None:
        raise HTTPException(status_code=409, detail="Device already exists")
    d = crud.create_device(session=session, device_in=device_in)
    return crud.device_public(session=session, device=d, gateway_status=None)


@router.get("/devices/{device_id}", response_model=schemas.DevicePublic)
def read_device(session: SessionDep, user: CurrentUser, device_id: RowId) -> schemas.DevicePublic:
    """One device with its liveness as its gateway reports it."""
    d = crud.get_device(session=session, device_id=device_id)
    if d is None:
        raise HTTPException(status_code=404, detail="Device not found")
    unit_id = crud.gateway_unit_id(session=session, gateway_id=d.gateway_id)
    if not user.sees_unit(unit_id):
        raise HTTPException(status_code=404, detail="Device not found")
    gh = session.get(models.GatewayHealth, d.gateway_id)
    return crud.device_public(session=session, device=d, gateway_status=gh.status if gh else None)


@router.post("/points", status_code=201, response_model=schemas.PointPublic)
def create_point(
    session: SessionDep, _: RegistryEditor, point_in: schemas.PointCreate
) -> models.Point:
    """Register a point of a device."""
    if session.get(models.Device, point_in.device_id) is None:
        raise HTTPException(status_code=422, detail="Device does not exist")
    exists = session.scalars(
        select(models.Point).where(
            models.Point.device_id == point_in.device_id, models.Point.point == point_in.point
        )
    ).first()
    if exists is not None:
        raise HTTPException(status_code=409, detail="Point already exists")
    return crud.create_point(session=session, point_in=point_in)
