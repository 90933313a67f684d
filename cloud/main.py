"""The FastAPI application of the cloud registry.

``create_app(settings)`` builds it (``uvicorn --factory emberlink.cloud.main:create_app``);
nothing is created at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError

from . import crud, schemas
from .api.main import api_router
from .core.config import Settings, get_settings
from .core.db import make_engine, make_sessionmaker
from .health import HealthPolicy

log = logging.getLogger(__name__)


def bootstrap_admin(app: FastAPI) -> None:
    """Create the first admin from EMBERLINK_BOOTSTRAP_ADMIN_TOKEN when there are no users."""
    token = app.state.settings.bootstrap_admin_token
    if token is None:
        return
    with app.state.write_sessions() as session, session.begin():
        if crud.count_users(session=session) > 0:
            return
        user = crud.create_user(
            session=session, user_in=schemas.UserCreate(name="admin", role="admin")
        )
        crud.create_token(session=session, user=user, name="bootstrap", token=token)
        log.warning("created the first admin from EMBERLINK_BOOTSTRAP_ADMIN_TOKEN")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap_admin(app)
        yield
        app.state.write_engine.dispose()
        app.state.read_engine.dispose()

    app = FastAPI(
        title="EmberLink cloud registry",
        version="0.1.0",
        openapi_url=f"{settings.api_prefix}/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.policy = HealthPolicy.from_settings(settings)
    app.state.write_engine = make_engine(settings.database_url)
    app.state.read_engine = (
        make_engine(settings.database_url, write_lock=False)
        if settings.database_url.startswith("sqlite")
        else app.state.write_engine
    )
    app.state.write_sessions = make_sessionmaker(app.state.write_engine)
    app.state.read_sessions = make_sessionmaker(app.state.read_engine)
    app.include_router(api_router, prefix=settings.api_prefix)

    @app.exception_handler(IntegrityError)
    async def _conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return JSONResponse(status_code=409, content={"detail": "Conflicts with stored data"})

    @app.exception_handler(DataError)
    async def _bad_value(_: Request, exc: DataError) -> JSONResponse:
        log.info("data error: %s", exc.orig)
        return JSONResponse(status_code=422, content={"detail": "Value out of range"})

    return app
