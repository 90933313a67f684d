"""The ingest pipeline over HTTP (a CBOR batch per request), and the quarantine."""

from __future__ import annotations

from typing import Annotated

from emberlink.protocol import messages, topics
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select

from ... import crud, models, schemas
from ...ingest.pipeline import FlushResult, Ingestor
from ..deps import (
    BearerDep,
    QuarantineReader,
    SessionDep,
    SettingsDep,
    decode_cursor,
    encode_cursor,
)

router = APIRouter(tags=["ingest"])

MAX_BODY = messages.MAX_BATCH_BYTES + 64


@router.post(
    "/ingest/{gateway_id}",
    response_model=schemas.IngestResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/cbor": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def ingest_batch(
    request: Request,
    settings: SettingsDep,
    creds: BearerDep,
    gateway_id: Annotated[int, Path(ge=0, le=0xFFFFFFFF)],
) -> schemas.IngestResult:
    """Store one batch (bare CBOR or COSE_Mac0), exactly once, and return the ack.

    Authentication: a gateway that has a MAC key authenticates by the MAC; otherwise an admin
    token is needed. Refused batches are quarantined with the reason (422). A body over the
    protocol's batch size is refused (413) without being read to its end.
    """
    # The database work runs in the thread pool: on SQLite a flush may wait for an ingest
    # worker's write lock, and the event loop must go on serving every other request meanwhile.
    await run_in_threadpool(_authenticate, request, creds, gateway_id)
    body = await _read_body(request)
    ing = Ingestor(
        request.app.state.write_sessions,
        policy=request.app.state.policy,
        late_after_ms=settings.late_after_s * 1000,
    )
    reason, res = await run_in_threadpool(_ingest, ing, gateway_id, body)
    if reason is not None:
        raise HTTPException(status_code=422, detail=f"Quarantined: {reason}")
    return schemas.IngestResult(
        stored=res.stored,
        duplicates=res.duplicates,
        acks=[{"gw": a.gw, "boot": a.boot, "hwm": a.hwm} for a in res.acks],
    )


def _authenticate(
    request: Request, creds: HTTPAuthorizationCredentials | None, gateway_id: int
) -> None:
    with request.app.state.read_sessions() as session:
        if creds is not None:
            user = crud.user_by_token(session=session, token=creds.credentials)
            if user is None:
                raise HTTPException(status_code=401, detail="Invalid token")
            if user.role != "admin":
                raise HTTPException(status_code=403, detail="Not enough permissions")
            return
        gw = session.get(models.Gateway, gateway_id)
        if gw is None or gw.mac_key is None:
            raise HTTPException(
                status_code=401,
                detail="Not authenticated",
                headers={"WWW-Authenticate": "Bearer"},
            )


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise HTTPException(status_code=413, detail="Batch too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(status_code=413, detail="Batch too large")
    return bytes(body)


def _ingest(ing: Ingestor, gateway_id: int, body: bytes) -> tuple[str | None, FlushResult]:
    reason = ing.accept(topics.topic(gateway_id, "ev"), body, source="http")
    return reason, ing.flush()  # its own transaction: the pipeline is the same as for MQTT


@router.get("/quarantine", response_model=schemas.QuarantinesPublic)
def read_quarantine(
    session: SessionDep,
    _: QuarantineReader,
    reason: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.QuarantinesPublic:
    """Refused messages with their reasons, newest first."""
    Q = models.Quarantine
    q = select(Q).order_by(Q.id.desc()).limit(limit + 1)
    if reason is not None:
        q = q.where(Q.reason == reason)
    before = decode_cursor(cursor)
    if before is not None:
        q = q.where(Q.id < before)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.QuarantinesPublic(
        data=[
            schemas.QuarantinePublic(
                id=r.id,
                received_ms=r.received_ms,
                source=r.source,
                topic=r.topic,
                gateway_id=r.gateway_id,
                reason=r.reason,
                detail=r.detail,
                payload_hex=r.payload.hex(),
            )
            for r in rows
        ],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )
