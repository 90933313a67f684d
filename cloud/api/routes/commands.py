"""Operator commands to a gateway: record, publish on ``el/v1/<gw>/cmd``, list with results.

The command is committed before it is published, so that a gateway's Result (stored by the
ingest workers) always finds its row. Like the claim routes, these use ``ReadSessionDep`` for
the caller and their own short write transactions: on SQLite a request-long write session
would hold the write lock while the broker is asked.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import select

from ... import commands, models, schemas
from ...ingest.pipeline import now_ms
from ..deps import (
    BearerDep,
    CurrentUser,
    Principal,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    check_gateway_scope,
    decode_cursor,
    encode_cursor,
    get_principal,
    write_session,
)

router = APIRouter(tags=["commands"])

GatewayId = Annotated[int, Path(ge=0, le=0xFFFFFFFF, description="the gateway number")]
# Who may command a gateway: those who act on its alarms (a contractor only at its units).
COMMANDERS = ("admin", "operator", "contractor")


def _commander(read: ReadSessionDep, creds: BearerDep) -> Principal:
    """The caller, checked before the body (401/403 come before 422), on the read session."""
    who = get_principal(read, creds)
    if who.role not in COMMANDERS:
        raise HTTPException(status_code=403, detail="Not enough permissions")
    return who


Commander = Annotated[Principal, Depends(_commander)]


def _record(request: Request, gateway_id: int, command_in: Any, who: str) -> models.Command:
    with write_session(request) as session:
        return commands.create_command(
            session=session,
            gateway_id=gateway_id,
            op=command_in.op,
            args=command_in.args.model_dump(),
            who=who,
            now_ms=now_ms(),
        )


def _mark(request: Request, command_id: int, error: str | None) -> models.Command:
    with write_session(request) as session:
        if error is None:
            commands.mark_sent(session=session, command_id=command_id, now_ms=now_ms())
        else:
            commands.mark_send_failed(session=session, command_id=command_id, error=error)
        row = session.get(models.Command, command_id, populate_existing=True)
        assert row is not None
        return row


@router.post(
    "/gateways/{gateway_id}/commands",
    status_code=201,
    response_model=schemas.CommandPublic,
    responses={503: {"description": "The broker did not take the command (recorded as failed)"}},
)
async def send_command(
    request: Request,
    read: ReadSessionDep,
    who: Commander,
    settings: SettingsDep,
    gateway_id: GatewayId,
    command_in: schemas.CommandCreate,
) -> schemas.CommandPublic:
    """Send a command (rebirth, test_mode, time_sync, reset, resend) to a gateway.

    It is recorded, then published at QoS 1; 201 once the broker acknowledged it (the
    gateway's result appears in the list later), 503 when the broker could not be reached
    within ``command_publish_timeout_s`` (the command stays recorded as ``send_failed``).
    """
    check_gateway_scope(read, who, gateway_id)
    read.rollback()  # end the read transaction: nothing below needs its snapshot
    row = await asyncio.to_thread(_record, request, gateway_id, command_in, who.name)
    try:
        await commands.publish(settings, [commands.message(row)])
    except commands.PublishError as e:
        await asyncio.to_thread(_mark, request, row.id, f"broker unreachable: {e}")
        raise HTTPException(
            status_code=503,
            detail=f"Broker unreachable ({e}); command {row.id} recorded as send_failed",
        ) from None
    row = await asyncio.to_thread(_mark, request, row.id, None)
    return commands.public(row)


@router.get("/gateways/{gateway_id}/commands", response_model=schemas.CommandsPublic)
def read_commands(
    session: SessionDep,
    user: CurrentUser,
    gateway_id: GatewayId,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.CommandsPublic:
    """Commands sent to a gateway (by operators and by the cloud itself), newest first, each
    with its status and the gateway's result once it answered."""
    check_gateway_scope(session, user, gateway_id)
    C = models.Command
    q = select(C).where(C.gateway_id == gateway_id).order_by(C.id.desc()).limit(limit + 1)
    before = decode_cursor(cursor)
    if before is not None:
        q = q.where(C.id < before)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.CommandsPublic(
        data=[commands.public(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )
