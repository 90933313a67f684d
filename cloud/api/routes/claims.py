"""Provisioning: claim tokens, the gateway's claim, credential rotation, revocation, audit.

These routes write through their own transaction (``write_sessions``) rather than
``SessionDep``: a refused claim must still leave its audit row, and the broker's files are
rendered from what was committed, then Mosquitto is signalled to reload them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...provision import broker, claims
from ..deps import BearerDep, Principal, ReadSessionDep, write_session

router = APIRouter(tags=["provisioning"])

GatewayId = Annotated[int, Path(ge=0, le=0xFFFFFFFF, description="the gateway number")]
PROVISIONERS = ("admin", "installer")
basic = HTTPBasic(auto_error=True, description="a gateway's MQTT login")
AUDIT_READERS = ("admin", "operator", "auditor")


def broker_settings(request: Request) -> broker.BrokerSettings:
    """The app's broker settings (tests set ``app.state.broker_settings``), else from env."""
    s = getattr(request.app.state, "broker_settings", None)
    if s is None:
        s = broker.BrokerSettings()
        request.app.state.broker_settings = s
    return s


def _principal(session: Session, creds: BearerDep, roles: tuple[str, ...]) -> Principal:
    if creds is None:
        raise HTTPException(
            status_code=401, detail="Not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    user = crud.user_by_token(session=session, token=creds.credentials)
    if user is None:
        raise HTTPException(
            status_code=401, detail="Invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    if user.role not in roles:
        raise HTTPException(status_code=403, detail="Not enough permissions")
    return Principal(user=user, role=user.role, unit_ids=None)


def _reload(request: Request) -> None:
    with request.app.state.read_sessions() as session:
        broker.write_and_reload(session, broker_settings(request))


def _issued(request: Request, i: claims.Issued) -> schemas.GatewayCredentialsPublic:
    s = broker_settings(request)
    return schemas.GatewayCredentialsPublic(
        gateway_id=i.gateway_id,
        mqtt_username=i.username,
        mqtt_password=i.password,
        mac_key_hex=i.mac_key.hex(),
        mqtt_host=s.public_host,
        mqtt_port=s.public_port,
    )


def _token_out(row: models.ClaimToken, token: str) -> schemas.ClaimTokenPublic:
    return schemas.ClaimTokenPublic(
        id=row.id, token=token, site_id=row.site_id, gateway_id=row.gateway_id,
        serial=row.serial, expires_ms=row.expires_ms,
    )  # fmt: skip


@router.post("/claims", status_code=201, response_model=schemas.ClaimTokenPublic)
def issue_claim_token(
    request: Request, read: ReadSessionDep, creds: BearerDep, claim_in: schemas.ClaimTokenCreate
) -> schemas.ClaimTokenPublic:
    """A one-time claim token for a gateway at a site (shown once, valid <= 10 minutes)."""
    who = _principal(read, creds, PROVISIONERS)
    try:
        with write_session(request) as session:
            user = session.get(models.User, who.user.id)
            assert user is not None
            row, token = claims.issue_token(session=session, installer=user, claim_in=claim_in)
            out = _token_out(row, token)
    except claims.ClaimRefused as e:
        raise HTTPException(status_code=e.status, detail=e.reason) from None
    return out


@router.post("/claims/redeem", response_model=schemas.GatewayCredentialsPublic)
def redeem_claim_token(
    request: Request, redeem_in: schemas.ClaimRedeem
) -> schemas.GatewayCredentialsPublic:
    """The gateway exchanges its claim token for its own credentials (no other auth)."""
    try:
        with write_session(request) as session:
            issued = claims.redeem(session=session, token=redeem_in.token, serial=redeem_in.serial)
    except claims.ClaimRefused as e:
        with write_session(request) as session:
            claims.audit(
                session=session,
                actor=f"gateway:{redeem_in.serial}",
                action="claim",
                outcome="refused",
                reason=e.reason,
                claim_token_id=e.token_id,
            )
        raise HTTPException(status_code=e.status, detail=e.reason) from None
    _reload(request)
    return _issued(request, issued)


def _printable(text: str, limit: int = 80) -> str:
    """A caller-supplied name as an audit row may hold it (no NUL or control characters)."""
    return "".join(ch for ch in text if ch.isprintable())[:limit]


class ConfirmPublic(BaseModel):
    """A confirmed login: the gateway's number and whether this call brought it into force."""

    gateway_id: int
    mqtt_username: str
    changed: bool


@router.post("/claims/confirm", response_model=ConfirmPublic)
def confirm_credentials(
    request: Request, login: Annotated[HTTPBasicCredentials, Depends(basic)]
) -> ConfirmPublic:
    """The gateway proves it holds the login a rotation issued (HTTP Basic with that login):
    it comes into force, its MAC key becomes the gateway's, the old login is superseded.
    Idempotent: confirming a login already in force changes nothing."""
    try:
        with write_session(request) as session:
            gw, changed = claims.confirm(
                session=session, username=login.username, password=login.password
            )
            gw_id = gw.id
    except claims.ClaimRefused as e:
        with write_session(request) as session:
            claims.audit(
                session=session, actor=f"login:{_printable(login.username)}",
                action="rotate_confirm",
                outcome="refused", reason=e.reason,
            )  # fmt: skip
        raise HTTPException(
            status_code=e.status, detail=e.reason, headers={"WWW-Authenticate": "Basic"}
        ) from None
    if changed:
        _reload(request)
    return ConfirmPublic(gateway_id=gw_id, mqtt_username=login.username, changed=changed)


def _gateway(session: Session, gateway_id: int) -> models.Gateway:
    gw = session.get(models.Gateway, gateway_id)
    if gw is None:
        raise HTTPException(status_code=404, detail="Gateway not found")
    return gw


@router.post("/gateways/{gateway_id}/credentials/rotate", status_code=201,
             response_model=schemas.ClaimTokenPublic)  # fmt: skip
def rotate_credentials(
    request: Request,
    read: ReadSessionDep,
    creds: BearerDep,
    gateway_id: GatewayId,
    ttl_s: Annotated[int, Query(ge=10, le=claims.MAX_TOKEN_TTL_S)] = claims.MAX_TOKEN_TTL_S,
) -> schemas.ClaimTokenPublic:
    """A one-time rotation token for a claimed gateway (shown once, valid <= 10 minutes).

    The gateway's current login and MAC key stay in force until the gateway has redeemed the
    token at ``/claims/redeem`` (a new login and key, pending) and confirmed them at
    ``/claims/confirm``; the installer hands the token over with ``emberlink claim rotate
    --gateway``. To cut a gateway off at once, revoke.
    """
    who = _principal(read, creds, PROVISIONERS)
    try:
        with write_session(request) as session:
            user = session.get(models.User, who.user.id)
            assert user is not None
            row, token = claims.rotate(
                session=session, installer=user, gateway=_gateway(session, gateway_id),
                ttl_s=ttl_s,
            )  # fmt: skip
            out = _token_out(row, token)
    except claims.ClaimRefused as e:
        raise HTTPException(status_code=e.status, detail=e.reason) from None
    return out


@router.post("/gateways/{gateway_id}/credentials/revoke", response_model=schemas.RevokePublic)
def revoke_credentials(
    request: Request, read: ReadSessionDep, creds: BearerDep, gateway_id: GatewayId
) -> schemas.RevokePublic:
    """Revoke a gateway's broker login (it can be claimed again with a new token)."""
    who = _principal(read, creds, PROVISIONERS)
    with write_session(request) as session:
        n = claims.revoke(
            session=session, actor=who.name, gateway=_gateway(session, gateway_id), action="revoke"
        )
    _reload(request)
    return schemas.RevokePublic(gateway_id=gateway_id, revoked=n)


@router.post("/gateways/{gateway_id}/decommission", response_model=schemas.RevokePublic)
def decommission_gateway(
    request: Request, read: ReadSessionDep, creds: BearerDep, gateway_id: GatewayId
) -> schemas.RevokePublic:
    """Take a gateway out of service: its logins and pending claim tokens are revoked."""
    who = _principal(read, creds, ("admin",))
    with write_session(request) as session:
        n = claims.revoke(
            session=session,
            actor=who.name,
            gateway=_gateway(session, gateway_id),
            action="decommission",
        )
    _reload(request)
    return schemas.RevokePublic(gateway_id=gateway_id, revoked=n)


@router.get("/provision/audit", response_model=schemas.ProvisionAuditList)
def read_provision_audit(
    read: ReadSessionDep,
    creds: BearerDep,
    gateway_id: Annotated[int | None, Query(ge=0, le=0xFFFFFFFF)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.ProvisionAuditList:
    """The provisioning audit trail, newest first (who, when, which token, outcome)."""
    _principal(read, creds, AUDIT_READERS)
    q = select(models.ProvisionAudit).order_by(models.ProvisionAudit.id.desc()).limit(limit)
    if gateway_id is not None:
        q = q.where(models.ProvisionAudit.gateway_id == gateway_id)
    rows = read.scalars(q).all()
    return schemas.ProvisionAuditList(
        data=[schemas.ProvisionAuditPublic.model_validate(r) for r in rows], count=len(rows)
    )
