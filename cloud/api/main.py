"""The API router: one include per resource."""

from fastapi import APIRouter

from .routes import (
    alarms,
    claims,
    commands,
    events,
    fleet,
    gateways,
    ingest,
    maintenance,
    registry,
    users,
)

api_router = APIRouter()
for r in (
    fleet.router,
    registry.router,
    gateways.router,
    events.router,
    alarms.router,
    users.router,
    ingest.router,
    maintenance.router,
    claims.router,
    commands.router,
):
    api_router.include_router(r)
