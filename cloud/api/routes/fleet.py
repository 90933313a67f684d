"""The fleet at a glance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from ... import models, schemas
from ..deps import CurrentUser, SessionDep
from .events import scoped_gateways

router = APIRouter(tags=["fleet"])


@router.get("/fleet", response_model=schemas.FleetOverview)
def read_fleet(session: SessionDep, user: CurrentUser) -> schemas.FleetOverview:
    """Gateway counts by health, devices offline, open alarms, the largest outbox backlog."""
    GH, D, DH, A = models.GatewayHealth, models.Device, models.DeviceHealth, models.Alarm
    scope = scoped_gateways(user)

    def scoped(q: Any, col: Any) -> Any:
        return q if scope is None else q.where(col.in_(scope))

    counts = dict(
        session.execute(
            scoped(select(GH.status, func.count()).group_by(GH.status), GH.gateway_id)
        ).all()
    )
    devices_offline = session.scalar(
        scoped(
            select(func.count())
            .select_from(DH)
            .join(D, D.id == DH.device_id)
            .where(DH.status == "offline"),
            D.gateway_id,
        )
    )
    alarms_open = session.scalar(
        scoped(select(func.count()).select_from(A).where(A.status != "cleared"), A.gateway_id)
    )
    top = session.execute(
        scoped(
            select(GH.gateway_id, GH.outbox_depth)
            .where(GH.outbox_depth.is_not(None))
            .order_by(GH.outbox_depth.desc(), GH.gateway_id)
            .limit(1),
            GH.gateway_id,
        )
    ).first()
    return schemas.FleetOverview(
        gateways=sum(counts.values()),
        online=counts.get("online", 0),
        degraded=counts.get("degraded", 0),
        offline=counts.get("offline", 0),
        unknown=counts.get("unknown", 0),
        devices_offline=devices_offline or 0,
        alarms_open=alarms_open or 0,
        largest_backlog_gateway_id=top[0] if top else None,
        largest_backlog=top[1] if top else None,
    )
