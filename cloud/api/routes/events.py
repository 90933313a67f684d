"""Stored events: filtered, cursor-paginated (newest first), and as CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from emberlink.protocol import codes
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import Select, select

from ... import models, schemas
from ..deps import CurrentUser, Principal, SessionDep, decode_cursor, encode_cursor

router = APIRouter(tags=["events"])

MAX_EXPORT_ROWS = 100_000  # one CSV response; page with since_ms/until_ms for more
U32 = 0xFFFFFFFF
MAX_MS = 2**62

CSV_COLUMNS = (
    "id",
    "gateway_id",
    "boot",
    "seq",
    "kind",
    "kind_name",
    "src",
    "state",
    "code",
    "t_ms",
    "received_ms",
    "batch_flags",
    "late",
    "data",
)


def scoped_gateways(user: Principal) -> Any:
    """A subquery of the gateway ids in a contractor's units (None for everyone else)."""
    if user.unit_ids is None:
        return None
    return (
        select(models.Gateway.id)
        .join(models.Site, models.Site.id == models.Gateway.site_id)
        .where(models.Site.unit_id.in_(user.unit_ids))
    )


class EventFilter:
    """Query parameters shared by the list and the export."""

    def __init__(
        self,
        gateway_id: Annotated[int | None, Query(ge=0, le=U32)] = None,
        boot: Annotated[int | None, Query(ge=0, le=U32)] = None,
        kind: Annotated[
            str | None, Query(max_length=32, description="a kind name (fire_alarm) or code")
        ] = None,
        src: Annotated[int | None, Query(ge=0, le=U32)] = None,
        since_ms: Annotated[int | None, Query(ge=0, le=MAX_MS)] = None,
        until_ms: Annotated[int | None, Query(ge=0, le=MAX_MS)] = None,
        late: bool | None = None,
    ) -> None:
        self.gateway_id, self.boot, self.src, self.late = gateway_id, boot, src, late
        self.since_ms, self.until_ms = since_ms, until_ms
        self.kind: int | None = None
        if kind is not None:
            try:
                k = codes.code_of(codes.KIND_NAMES, kind, "kind")
            except ValueError:
                k = -1
            if k not in codes.KIND_NAMES:
                raise HTTPException(status_code=422, detail=f"Unknown event kind {kind!r}")
            self.kind = k

    def apply(self, q: Select[Any], user: Principal) -> Select[Any]:
        E = models.Event
        scope = scoped_gateways(user)
        if scope is not None:
            q = q.where(E.gateway_id.in_(scope))
        for col, v in (
            (E.gateway_id, self.gateway_id),
            (E.boot, self.boot),
            (E.kind, self.kind),
            (E.src, self.src),
            (E.late, self.late),
        ):
            if v is not None:
                q = q.where(col == v)
        if self.since_ms is not None:
            q = q.where(E.t_ms >= self.since_ms)
        if self.until_ms is not None:
            q = q.where(E.t_ms < self.until_ms)
        return q


def event_public(e: models.Event) -> schemas.EventPublic:
    return schemas.EventPublic(
        id=e.id,
        gateway_id=e.gateway_id,
        boot=e.boot,
        seq=e.seq,
        kind=e.kind,
        kind_name=codes.name_of(codes.KIND_NAMES, e.kind),
        src=e.src,
        state=e.state,
        code=e.code,
        t_ms=e.t_ms,
        received_ms=e.received_ms,
        batch_flags=e.batch_flags,
        late=e.late,
        data=e.data,
    )


@router.get("/events", response_model=schemas.EventsPublic)
def read_events(
    session: SessionDep,
    user: CurrentUser,
    f: Annotated[EventFilter, Depends()],
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.EventsPublic:
    """Events, newest stored first; pass ``next_cursor`` back for the next page."""
    before = decode_cursor(cursor)
    E = models.Event
    q = f.apply(select(E), user).order_by(E.id.desc()).limit(limit + 1)
    if before is not None:
        q = q.where(E.id < before)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.EventsPublic(
        data=[event_public(e) for e in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.get("/events/export.csv", response_class=Response)
def export_events(
    session: SessionDep,
    user: CurrentUser,
    f: Annotated[EventFilter, Depends()],
    limit: Annotated[int, Query(ge=1, le=MAX_EXPORT_ROWS)] = 10_000,
) -> Response:
    """Events as CSV (oldest first), at most ``limit`` rows."""
    E = models.Event
    q = f.apply(select(E), user).order_by(E.id).limit(limit)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for e in session.scalars(q):
        w.writerow(
            (
                e.id,
                e.gateway_id,
                e.boot,
                e.seq,
                e.kind,
                codes.name_of(codes.KIND_NAMES, e.kind),
                e.src,
                "" if e.state is None else e.state,
                "" if e.code is None else e.code,
                e.t_ms,
                e.received_ms,
                e.batch_flags,
                int(e.late),
                json.dumps(e.data, sort_keys=True, separators=(",", ":")),
            )
        )
    return Response(
        content=buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="events.csv"'},
    )
