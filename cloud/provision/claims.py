"""Claim tokens and gateway credentials: issue, redeem, rotate, revoke, decommission.

A rotation is a claim token for a gateway that already holds credentials: redeeming it issues
a new login and MAC key that stay pending (the old ones in force, both logins accepted by the
broker) until the gateway confirms them with the new password; then the new key is the
gateway's and the old login is superseded (audited ``rotate`` by the installer,
``rotate_redeem`` and ``rotate_confirm`` by the gateway, each with the token). A rotation
therefore never cuts a gateway off before it has proved it holds its new credentials.

Functions are keyword-only and never commit (the request's ``SessionDep`` does), so a step and
its audit row share a transaction. A refused redeem is audited in a transaction of its own by
the route, because the refusal itself must be recorded even though nothing else is written.

A claim token is ``elc_`` + 256 random bits, shown once; only its SHA-256 is stored. It is bound
to a site, to the installer who asked for it and to the serial of the gateway it may claim, it
lives at most ``MAX_TOKEN_TTL_S`` and can be used once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import crud, models, schemas
from ..core.security import hash_token
from . import broker

TOKEN_PREFIX = "elc_"
MAX_TOKEN_TTL_S = 600  # issue 7: "valid at most 10 minutes" (an installer's session on site)
MAC_KEY_BYTES = 32  # HMAC-SHA256-256 key, as protocol/mac.py expects
# the logins broker.username_of and a rotation make; nothing else is looked up
USERNAME_RE = re.compile(r"gw-[0-9]{1,10}(-r[0-9]{1,10})?")


class ClaimRefused(Exception):
    """A redeem (or a management step) refused; ``reason`` is what the caller is told."""

    def __init__(self, reason: str, *, status: int = 403, token_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.token_id = token_id


@dataclass(frozen=True)
class Issued:
    """What a gateway receives once, on a successful claim or rotation."""

    gateway_id: int
    username: str
    password: str
    mac_key: bytes


def audit(
    *,
    session: Session,
    actor: str,
    action: str,
    outcome: str = "ok",
    reason: str = "",
    gateway_id: int | None = None,
    site_id: int | None = None,
    claim_token_id: int | None = None,
) -> None:
    session.add(
        models.ProvisionAudit(
            at_ms=crud.now_ms(),
            actor=actor[:200],
            action=action,
            outcome=outcome,
            reason=reason[:300],
            gateway_id=gateway_id,
            site_id=site_id,
            claim_token_id=claim_token_id,
        )
    )


def issue_token(
    *, session: Session, installer: models.User, claim_in: schemas.ClaimTokenCreate
) -> tuple[models.ClaimToken, str]:
    """A new claim token for ``claim_in`` (the clear token is returned once)."""
    if session.get(models.Site, claim_in.site_id) is None:
        raise ClaimRefused("Site not found", status=404)
    existing = session.get(models.Gateway, claim_in.gateway_id)
    if existing is not None and existing.site_id != claim_in.site_id:
        raise ClaimRefused("Gateway number is registered at another site", status=409)
    row, token = _mint(
        session,
        site_id=claim_in.site_id,
        installer=installer,
        gateway_id=claim_in.gateway_id,
        serial=claim_in.serial,
        ttl_s=claim_in.ttl_s,
    )
    audit(
        session=session,
        actor=installer.name,
        action="issue_token",
        gateway_id=claim_in.gateway_id,
        site_id=claim_in.site_id,
        claim_token_id=row.id,
    )
    return row, token


def _mint(
    session: Session,
    *,
    site_id: int,
    installer: models.User,
    gateway_id: int,
    serial: str,
    ttl_s: int,
) -> tuple[models.ClaimToken, str]:
    """A stored one-time token (its hash) and the clear token, returned once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = crud.now_ms()
    row = models.ClaimToken(
        token_hash=hash_token(token),
        site_id=site_id,
        installer_id=installer.id,
        gateway_id=gateway_id,
        serial=serial,
        created_ms=now,
        expires_ms=now + ttl_s * 1000,
    )
    session.add(row)
    session.flush()
    return row, token


def _void_pending_tokens(session: Session, gateway_id: int, now: int) -> int:
    """Revoke ``gateway_id``'s unused claim tokens; how many."""
    n = 0
    for t in session.scalars(
        select(models.ClaimToken).where(
            models.ClaimToken.gateway_id == gateway_id,
            models.ClaimToken.used_ms.is_(None),
            models.ClaimToken.revoked_ms.is_(None),
        )
    ):
        t.revoked_ms = now
        n += 1
    return n


def _active(session: Session, gateway_id: int) -> list[models.GatewayCredential]:
    return list(
        session.scalars(
            select(models.GatewayCredential)
            .where(
                models.GatewayCredential.gateway_id == gateway_id,
                models.GatewayCredential.revoked_ms.is_(None),
            )
            .order_by(models.GatewayCredential.id)
        )
    )


def _new_credentials(
    session: Session, gateway: models.Gateway, token_id: int | None, *, pending: bool
) -> Issued:
    """A new login and MAC key for ``gateway``. Not ``pending`` (a claim): in force at once,
    every other login superseded. ``pending`` (a rotation): the confirmed login and the
    gateway's key stay in force until ``confirm``; an earlier pending login is superseded."""
    now = crud.now_ms()
    active = _active(session, gateway.id)
    for old in active:
        if not pending or old.confirmed_ms is None:
            old.revoked_ms = now
            old.revoked_reason = "superseded"
    password = secrets.token_urlsafe(32)
    key = secrets.token_bytes(MAC_KEY_BYTES)
    username = broker.username_of(gateway.id)
    if pending:  # a second login beside the one in force: another name in the password file
        n = session.scalar(
            select(func.count()).where(models.GatewayCredential.gateway_id == gateway.id)
        )
        username = f"{username}-r{n}"
    session.add(
        models.GatewayCredential(
            gateway_id=gateway.id,
            username=username,
            password_hash=broker.hash_password(password),
            claim_token_id=token_id,
            issued_ms=now,
            mac_key=key,
            confirmed_ms=None if pending else now,
        )
    )
    if not pending:
        gateway.mac_key = key
    session.flush()
    return Issued(gateway.id, username, password, key)


def redeem(*, session: Session, token: str, serial: str) -> Issued:
    """Exchange a claim token for the gateway's own credentials; ClaimRefused says why not.

    For a gateway that holds a confirmed login (a rotation, or a claim token for a gateway
    already claimed) the new login is pending until the gateway confirms it (``confirm``)."""
    row = session.scalars(
        select(models.ClaimToken).where(models.ClaimToken.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        raise ClaimRefused("Unknown claim token", status=401)
    if row.revoked_ms is not None:
        raise ClaimRefused("Claim token was revoked", token_id=row.id)
    if row.used_ms is not None:
        raise ClaimRefused("Claim token was already used", token_id=row.id)
    now = crud.now_ms()
    if now >= row.expires_ms:
        raise ClaimRefused("Claim token has expired", token_id=row.id)
    if not secrets.compare_digest(row.serial, serial):
        raise ClaimRefused("Claim token was issued for another gateway", token_id=row.id)
    gw = session.get(models.Gateway, row.gateway_id)
    if gw is not None and gw.site_id != row.site_id:
        raise ClaimRefused("Gateway number is registered at another site", token_id=row.id)
    if gw is None:
        gw = crud.create_gateway(
            session=session,
            gateway_in=schemas.GatewayCreate(
                id=row.gateway_id, site_id=row.site_id, name=f"gw-{serial}", serial=serial
            ),
        )
    else:
        gw.serial = serial
    row.used_ms = now
    rotating = any(c.confirmed_ms is not None for c in _active(session, gw.id))
    issued = _new_credentials(session, gw, row.id, pending=rotating)
    audit(
        session=session,
        actor=f"gateway:{serial}",
        action="rotate_redeem" if rotating else "claim",
        gateway_id=gw.id,
        site_id=row.site_id,
        claim_token_id=row.id,
        reason="pending until the gateway confirms it" if rotating else "",
    )
    return issued


def confirm(*, session: Session, username: str, password: str) -> tuple[models.Gateway, bool]:
    """The gateway proves it holds a login (its password): a pending one comes into force, its
    MAC key becomes the gateway's and every other login is superseded. Idempotent: a login
    already in force is confirmed again. Returns the gateway and whether anything changed."""
    if not USERNAME_RE.fullmatch(username):  # never a query with NULs or kilobytes in it
        raise ClaimRefused("Unknown login or wrong password", status=401)
    row = session.scalars(
        select(models.GatewayCredential).where(
            models.GatewayCredential.username == username,
            models.GatewayCredential.revoked_ms.is_(None),
        )
    ).first()
    if row is None or not broker.verify_password(password, row.password_hash):
        raise ClaimRefused("Unknown login or wrong password", status=401)
    gw = session.get(models.Gateway, row.gateway_id)
    assert gw is not None  # a credential's gateway row is never deleted
    if row.confirmed_ms is not None:
        return gw, False
    now = crud.now_ms()
    row.confirmed_ms = now
    gw.mac_key = row.mac_key
    for other in _active(session, gw.id):
        if other.id != row.id:
            other.revoked_ms = now
            other.revoked_reason = "superseded"
    audit(
        session=session, actor=f"gateway:{gw.serial}", action="rotate_confirm",
        gateway_id=gw.id, site_id=gw.site_id, claim_token_id=row.claim_token_id,
    )  # fmt: skip
    session.flush()
    return gw, True


def rotate(
    *, session: Session, installer: models.User, gateway: models.Gateway, ttl_s: int
) -> tuple[models.ClaimToken, str]:
    """A one-time rotation token for a claimed gateway (the clear token is returned once).

    Nothing is revoked here: the gateway keeps its current login and MAC key until it redeems
    the token (``redeem``: a new login and key, pending) and confirms them (``confirm``: in
    force, the old superseded). A new rotation token revokes the gateway's earlier unused ones.
    The installer hands the token to the gateway over its provisioning API; the gateway pauses
    its service, redeems, confirms and resumes with the new credentials, or with the old ones,
    still valid, when a step is refused or the cloud cannot be reached."""
    if not gateway.serial:
        raise ClaimRefused("Gateway has no serial on record: claim it first", status=409)
    if not _active(session, gateway.id):
        raise ClaimRefused("Gateway has no active credentials to rotate: claim it", status=409)
    # one outstanding rotation per gateway: the newest
    voided = _void_pending_tokens(session, gateway.id, crud.now_ms())
    row, token = _mint(
        session,
        site_id=gateway.site_id,
        installer=installer,
        gateway_id=gateway.id,
        serial=gateway.serial,
        ttl_s=min(ttl_s, MAX_TOKEN_TTL_S),
    )
    audit(
        session=session, actor=installer.name, action="rotate", gateway_id=gateway.id,
        site_id=gateway.site_id, claim_token_id=row.id,
        reason="current credentials stay valid until the gateway redeems the token"
        + (f"; {voided} earlier pending token(s) revoked" if voided else ""),
    )  # fmt: skip
    return row, token


def revoke(*, session: Session, actor: str, gateway: models.Gateway, action: str) -> int:
    """Revoke every active login of ``gateway`` (``action``: revoke | decommission)."""
    now = crud.now_ms()
    creds = _active(session, gateway.id)
    for c in creds:
        c.revoked_ms = now
        c.revoked_reason = action
    n = len(creds)
    if action == "decommission":
        _void_pending_tokens(session, gateway.id, now)  # pending tokens die with the gateway
    audit(
        session=session, actor=actor, action=action, gateway_id=gateway.id,
        site_id=gateway.site_id, reason=f"{n} credentials revoked",
    )  # fmt: skip
    return n
