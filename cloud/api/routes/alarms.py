"""Alarms: list, read, acknowledge, clear, comment."""

from __future__ import annotations

from typing import Annotated

from emberlink.protocol import codes
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import Field, model_validator
from sqlalchemy import select

from ... import crud, models, schemas
from ..deps import (
    AlarmActor,
    CurrentUser,
    Principal,
    SessionDep,
    decode_cursor,
    encode_cursor,
)
from .events import scoped_gateways

router = APIRouter(tags=["alarms"])

AlarmId = Annotated[int, Path(ge=1, le=2**31 - 1)]

STILL_ACTIVE = (
    "Alarm condition is still active at the device: it will not be reported again until it "
    "returns to normal, so a clear would hide it; to clear it anyway send force true with a "
    "comment saying why"
)
FORCED_PREFIX = "Cleared while the condition was still active: "


class AlarmClear(schemas.AlarmAction):
    """Body of ``POST /alarms/{id}/clear``."""

    force: bool = Field(
        default=False,
        description="clear although the device still reports the condition (needs a comment; "
        "recorded as a comment and in the alarm's note)",
    )

    @model_validator(mode="after")
    def _force_needs_a_comment(self) -> AlarmClear:
        if self.force and not self.comment:
            raise ValueError("force needs a comment saying why the alarm is cleared")
        return self


def alarm_public(a: models.Alarm) -> schemas.AlarmPublic:
    return schemas.AlarmPublic.model_validate(
        {
            **{c: getattr(a, c) for c in schemas.AlarmPublic.model_fields if c != "kind_name"},
            "kind_name": codes.name_of(codes.KIND_NAMES, a.kind),
        }
    )


def _get_alarm(session: SessionDep, user: Principal, alarm_id: int) -> models.Alarm:
    a = session.get(models.Alarm, alarm_id)
    if a is None or not user.sees_unit(
        crud.gateway_unit_id(session=session, gateway_id=a.gateway_id)
    ):
        raise HTTPException(status_code=404, detail="Alarm not found")
    return a


def _comment(session: SessionDep, alarm: models.Alarm, author: str, text: str, at: int) -> None:
    session.add(models.AlarmComment(alarm_id=alarm.id, author=author, at_ms=at, text=text))


@router.get("/alarms", response_model=schemas.AlarmsPublic)
def read_alarms(
    session: SessionDep,
    user: CurrentUser,
    status: Annotated[schemas.AlarmStatus | None, Query()] = None,
    open_only: Annotated[bool, Query(description="active or acknowledged")] = False,
    gateway_id: Annotated[int | None, Query(ge=0, le=0xFFFFFFFF)] = None,
    late: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.AlarmsPublic:
    """Alarms, newest first."""
    A = models.Alarm
    q = select(A).order_by(A.id.desc()).limit(limit + 1)
    scope = scoped_gateways(user)
    if scope is not None:
        q = q.where(A.gateway_id.in_(scope))
    if status is not None:
        q = q.where(A.status == status)
    if open_only:
        q = q.where(A.status != "cleared")
    if gateway_id is not None:
        q = q.where(A.gateway_id == gateway_id)
    if late is not None:
        q = q.where(A.late == late)
    before = decode_cursor(cursor)
    if before is not None:
        q = q.where(A.id < before)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.AlarmsPublic(
        data=[alarm_public(a) for a in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.get("/alarms/{alarm_id}", response_model=schemas.AlarmPublic)
def read_alarm(session: SessionDep, user: CurrentUser, alarm_id: AlarmId) -> schemas.AlarmPublic:
    """One alarm."""
    return alarm_public(_get_alarm(session, user, alarm_id))


@router.post("/alarms/{alarm_id}/ack", response_model=schemas.AlarmPublic)
def acknowledge_alarm(
    session: SessionDep, user: AlarmActor, alarm_id: AlarmId, body: schemas.AlarmAction
) -> schemas.AlarmPublic:
    """Acknowledge an active alarm (who and when are recorded)."""
    a = _get_alarm(session, user, alarm_id)
    if a.status == "acknowledged":
        raise HTTPException(status_code=409, detail="Alarm already acknowledged")
    if a.status == "cleared":
        raise HTTPException(status_code=409, detail="Alarm is cleared")
    now = crud.now_ms()
    a.status, a.acked_by, a.acked_ms = "acknowledged", user.name, now
    if body.comment:
        _comment(session, a, user.name, body.comment, now)
    session.flush()
    return alarm_public(a)


@router.post("/alarms/{alarm_id}/clear", response_model=schemas.AlarmPublic)
def clear_alarm(
    session: SessionDep, user: AlarmActor, alarm_id: AlarmId, body: AlarmClear
) -> schemas.AlarmPublic:
    """Clear an alarm; a later activation of the same condition opens a new one.

    The life cycle is active -> acknowledged -> cleared: clearing an alarm nobody acknowledged
    acknowledges it too, by the same user at the same time, so both steps say who and when.

    An alarm whose condition is still active at the device (``condition_active``) is refused
    with 409: the device reports a condition once, when it starts, so after a clear nothing
    would show it again until it had returned to normal and started anew. ``force`` (with a
    required comment) clears it anyway; the comment is stored prefixed with "Cleared while the
    condition was still active: " and the alarm's ``note`` says who forced the clear.
    """
    a = _get_alarm(session, user, alarm_id)
    if a.status == "cleared":
        raise HTTPException(status_code=409, detail="Alarm already cleared")
    forced = a.condition_active
    if forced and not body.force:
        raise HTTPException(status_code=409, detail=STILL_ACTIVE)
    now = crud.now_ms()
    if a.status == "active":
        a.acked_by, a.acked_ms = user.name, now
    a.status, a.cleared_by, a.cleared_ms = "cleared", user.name, now
    if forced:
        a.note = f"clear forced by {user.name} while the condition was still active"[:300]
        _comment(session, a, user.name, FORCED_PREFIX + (body.comment or ""), now)
    elif body.comment:
        _comment(session, a, user.name, body.comment, now)
    session.flush()
    return alarm_public(a)


@router.post("/alarms/{alarm_id}/comments", status_code=201, response_model=schemas.CommentPublic)
def create_comment(
    session: SessionDep, user: AlarmActor, alarm_id: AlarmId, comment_in: schemas.CommentCreate
) -> models.AlarmComment:
    """Comment on an alarm."""
    a = _get_alarm(session, user, alarm_id)
    c = models.AlarmComment(
        alarm_id=a.id, author=user.name, at_ms=crud.now_ms(), text=comment_in.text
    )
    session.add(c)
    session.flush()
    return c


@router.get("/alarms/{alarm_id}/comments", response_model=list[schemas.CommentPublic])
def read_comments(
    session: SessionDep, user: CurrentUser, alarm_id: AlarmId
) -> list[models.AlarmComment]:
    """Comments on an alarm, oldest first."""
    a = _get_alarm(session, user, alarm_id)
    q = select(models.AlarmComment).where(models.AlarmComment.alarm_id == a.id)
    return list(session.scalars(q.order_by(models.AlarmComment.id)))
