"""Dependencies, each declared once as an ``Annotated`` alias and used by every route.

``SessionDep`` is the only place a request's transaction commits: after the route returns and
before the response is sent (``scope="function"``), or it rolls back when the route raised.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .. import crud, models
from ..core.config import Settings

READ_METHODS = ("GET", "HEAD", "OPTIONS")


@contextmanager
def _transaction(sessions: Callable[[], Session]) -> Iterator[Session]:
    """A session of ``sessions``: committed when the block ends, rolled back on any error."""
    with sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_db(request: Request) -> Iterator[Session]:
    state = request.app.state
    sessions = state.read_sessions if request.method in READ_METHODS else state.write_sessions
    with _transaction(sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def write_session(request: Request) -> AbstractContextManager[Session]:
    """A write transaction of its own, for a route that works in the thread pool or between
    awaits rather than through ``SessionDep``."""
    return _transaction(request.app.state.write_sessions)


def get_read_db(request: Request) -> Iterator[Session]:
    with request.app.state.read_sessions() as session:
        yield session


# A session that never holds the SQLite write lock, for routes that write through the ingest
# pipeline's own transaction.
ReadSessionDep = Annotated[Session, Depends(get_read_db, scope="function")]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]

bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer elk_...")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, its role and, for a contractor, the units it may see."""

    user: models.User
    role: str
    unit_ids: tuple[int, ...] | None  # None: every unit

    @property
    def name(self) -> str:
        return self.user.name

    def sees_unit(self, unit_id: int | None) -> bool:
        return self.unit_ids is None or (unit_id is not None and unit_id in self.unit_ids)


def get_principal(session: SessionDep, creds: BearerDep) -> Principal:
    if creds is None:
        raise HTTPException(
            status_code=401, detail="Not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    user = crud.user_by_token(session=session, token=creds.credentials)
    if user is None:
        raise HTTPException(
            status_code=401, detail="Invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    units = None
    if user.role == "contractor":
        units = tuple(crud.user_unit_ids(session=session, user_id=user.id))
    return Principal(user=user, role=user.role, unit_ids=units)


def require(*roles: str) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=403, detail="Not enough permissions")
        return principal

    check.__name__ = "require_" + "_".join(roles)
    return check


ALL_ROLES = ("admin", "operator", "installer", "contractor", "auditor")
# Anyone signed in may read (a contractor only within its units).
CurrentUser = Annotated[Principal, Depends(require(*ALL_ROLES))]
# Acknowledge, clear and comment on alarms.
AlarmActor = Annotated[Principal, Depends(require("admin", "operator", "contractor"))]
# Register organisations, units, sites, gateways, devices, points.
RegistryEditor = Annotated[Principal, Depends(require("admin", "installer"))]
# Read quarantined messages (raw payloads).
QuarantineReader = Annotated[Principal, Depends(require("admin", "operator", "auditor"))]
# Users and tokens.
AdminUser = Annotated[Principal, Depends(require("admin"))]


def check_gateway_scope(session: Session, principal: Principal, gateway_id: int) -> int:
    """The gateway's unit, or 404 when it does not exist or lies outside the caller's scope."""
    unit_id = crud.gateway_unit_id(session=session, gateway_id=gateway_id)
    if unit_id is None or not principal.sees_unit(unit_id):
        raise HTTPException(status_code=404, detail="Gateway not found")
    return unit_id


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        value = int(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(status_code=422, detail="Invalid cursor") from None
    if value < 0 or value > 2**63 - 1:
        raise HTTPException(status_code=422, detail="Invalid cursor")
    return value


# Maintenance: firms, technicians and contracts are registered by operators.
MaintManager = Annotated[Principal, Depends(require("admin", "operator"))]
# Maintenance: visit records are written by contractors (their contracted units) and admins.
MaintWriter = Annotated[Principal, Depends(require("admin", "contractor"))]
# Maintenance: the audit trail and the compliance overview.
MaintOverseer = Annotated[Principal, Depends(require("admin", "operator", "auditor"))]
