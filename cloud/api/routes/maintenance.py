"""Maintenance: catalogue, firms, contracts, schedules, visits with evidence, reports, audit.

Contractors write only for units they are scoped to, and only on contracts of their own firm;
anything outside answers 404 as if it did not exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select

from ... import models, schemas
from ...maintenance import catalogue, reports, service
from ...maintenance.service import Refused
from ..deps import (
    BearerDep,
    CurrentUser,
    MaintManager,
    MaintOverseer,
    MaintWriter,
    Principal,
    SessionDep,
    get_principal,
    require,
    write_session,
)

router = APIRouter(prefix="/maint", tags=["maintenance"])

RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
MAX_ATTACHMENT = 5 * 1024 * 1024
T = TypeVar("T")


def _do(fn: Callable[..., T], **kw: Any) -> T:
    try:
        return fn(**kw)
    except Refused as e:
        raise HTTPException(status_code=e.status, detail=e.detail) from None


def _day(value: str | None) -> date:
    if value is None:
        return service.local_date(service.models_now())
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise HTTPException(status_code=422, detail="Invalid date (YYYY-MM-DD)") from None
    if not 1970 <= day.year < 2200:
        raise HTTPException(status_code=422, detail="Date out of range (1970..2199)")
    return day


DayQuery = Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD, default today")]


def _firm_of(session: SessionDep, user: Principal) -> int | None:
    return service.user_firm_id(session=session, user_id=user.user.id)


def _unit(session: SessionDep, user: Principal, unit_id: int) -> models.Unit:
    unit = session.get(models.Unit, unit_id)
    if unit is None or not user.sees_unit(unit_id):
        raise HTTPException(status_code=404, detail="Unit not found")
    return unit


def _visit(session: SessionDep, user: Principal, visit_id: int) -> models.MaintVisit:
    v = session.get(models.MaintVisit, visit_id)
    if v is None or not user.sees_unit(v.unit_id):
        raise HTTPException(status_code=404, detail="Visit not found")
    return v


def _writable_visit(session: SessionDep, user: Principal, visit_id: int) -> models.MaintVisit:
    """A visit the caller may write: a contractor's own firm's contract at its own unit."""
    v = _visit(session, user, visit_id)
    if user.role == "contractor":
        contract = session.get(models.MaintContract, v.contract_id)
        if contract is None or contract.firm_id != _firm_of(session, user):
            raise HTTPException(status_code=404, detail="Visit not found")
    return v


# ---- catalogue, firms, contracts -------------------------------------------------------------


@router.get("/catalogue", response_model=schemas.CataloguePublic)
def read_catalogue(
    _: CurrentUser, version: Annotated[str | None, Query(max_length=40)] = None
) -> schemas.CataloguePublic:
    """The requirement catalogue (default: the current version)."""
    version = version or catalogue.CATALOGUE_VERSION
    if version not in service.CATALOGUES:
        raise HTTPException(status_code=404, detail="Catalogue version not found")
    return schemas.CataloguePublic(
        version=version,
        systems=catalogue.SYSTEMS,
        requirements=[
            schemas.RequirementPublic.model_validate(
                {**r.__dict__, "event_kinds": list(r.event_kinds)}
            )
            for r in service.CATALOGUES[version]
        ],
    )


@router.post("/firms", status_code=201, response_model=schemas.FirmPublic)
def create_firm(
    session: SessionDep, user: MaintManager, firm_in: schemas.FirmCreate
) -> models.MaintFirm:
    """Register a service firm and its qualification certificate."""
    F = models.MaintFirm
    if session.scalars(select(F).where(F.name == firm_in.name)).first() is not None:
        raise HTTPException(status_code=409, detail="Firm already exists")
    return service.create_firm(session=session, firm_in=firm_in, actor=user.name)


@router.patch("/firms/{firm_id}", response_model=schemas.FirmPublic)
def update_firm(
    session: SessionDep, user: MaintManager, firm_id: RowId, firm_in: schemas.FirmUpdate
) -> models.MaintFirm:
    """Renew or withdraw a firm's qualification (audited; signed records keep what they say)."""
    firm = _firm(session, firm_id)
    changes = firm_in.model_dump(exclude_none=True)
    if not changes:
        raise HTTPException(status_code=422, detail="Nothing to change")
    for k, v in changes.items():
        setattr(firm, k, v)
    session.flush()
    service.audit(
        session=session,
        actor=user.name,
        action="update",
        entity="firm",
        entity_id=firm.id,
        detail=changes,
    )
    return firm


@router.get("/firms", response_model=list[schemas.FirmPublic])
def read_firms(session: SessionDep, _: CurrentUser) -> list[models.MaintFirm]:
    """Service firms."""
    return list(session.scalars(select(models.MaintFirm).order_by(models.MaintFirm.id)))


def _firm(session: SessionDep, firm_id: int) -> models.MaintFirm:
    firm = session.get(models.MaintFirm, firm_id)
    if firm is None:
        raise HTTPException(status_code=404, detail="Firm not found")
    return firm


@router.post(
    "/firms/{firm_id}/technicians", status_code=201, response_model=schemas.TechnicianPublic
)
def create_technician(
    session: SessionDep, user: MaintManager, firm_id: RowId, tech_in: schemas.TechnicianCreate
) -> models.MaintTechnician:
    """Register a technician of a firm with the certificate."""
    firm = _firm(session, firm_id)
    return service.create_technician(session=session, firm=firm, tech_in=tech_in, actor=user.name)


@router.get("/firms/{firm_id}/technicians", response_model=list[schemas.TechnicianPublic])
def read_technicians(
    session: SessionDep, _: CurrentUser, firm_id: RowId
) -> list[models.MaintTechnician]:
    """Technicians of a firm."""
    firm = _firm(session, firm_id)
    T_ = models.MaintTechnician
    return list(session.scalars(select(T_).where(T_.firm_id == firm.id).order_by(T_.id)))


@router.post("/firms/{firm_id}/users", status_code=201, response_model=schemas.Message)
def add_firm_user(
    session: SessionDep, user: MaintManager, firm_id: RowId, body: schemas.FirmUserCreate
) -> schemas.Message:
    """Make a contractor user a member of the firm (it then writes that firm's visits)."""
    firm = _firm(session, firm_id)
    member = session.get(models.User, body.user_id)
    if member is None or member.role != "contractor":
        raise HTTPException(status_code=422, detail="User is not a contractor")
    if session.get(models.MaintFirmUser, member.id) is not None:
        raise HTTPException(status_code=409, detail="User already belongs to a firm")
    session.add(models.MaintFirmUser(user_id=member.id, firm_id=firm.id))
    service.audit(
        session=session,
        actor=user.name,
        action="member",
        entity="firm",
        entity_id=firm.id,
        detail={"user_id": member.id},
    )
    return schemas.Message(detail=f"{member.name} works for {firm.name}")


@router.post("/contracts", status_code=201, response_model=schemas.ContractPublic)
def create_contract(
    session: SessionDep, user: MaintManager, contract_in: schemas.ContractCreate
) -> models.MaintContract:
    """Assign a firm to a unit's systems for a period."""
    return _do(service.create_contract, session=session, contract_in=contract_in, actor=user.name)


@router.get("/contracts", response_model=list[schemas.ContractPublic])
def read_contracts(session: SessionDep, user: CurrentUser) -> list[models.MaintContract]:
    """Contracts of the units the caller may see."""
    return service.contracts_for_units(session=session, unit_ids=user.unit_ids)


# ---- schedule ---------------------------------------------------------------------------------


@router.get("/units/{unit_id}/schedule", response_model=schemas.SchedulePublic)
def read_schedule(
    session: SessionDep, user: CurrentUser, unit_id: RowId, on: DayQuery = None
) -> schemas.SchedulePublic:
    """Each requirement's state for the unit on a day, and the year-end filing reminder."""
    unit = _unit(session, user, unit_id)
    return service.unit_schedule(session=session, unit=unit, on=_day(on))


# ---- visits -----------------------------------------------------------------------------------


@router.post("/visits", status_code=201, response_model=schemas.VisitPublic)
def create_visit(
    session: SessionDep, user: MaintWriter, visit_in: schemas.VisitCreate
) -> schemas.VisitPublic:
    """Open a check window for a unit: a visit under a contract."""
    contract = session.get(models.MaintContract, visit_in.contract_id)
    if contract is None or not user.sees_unit(contract.unit_id):
        raise HTTPException(status_code=404, detail="Contract not found")
    if user.role == "contractor" and contract.firm_id != _firm_of(session, user):
        raise HTTPException(status_code=404, detail="Contract not found")
    v = _do(
        service.open_visit, session=session, contract=contract, visit_in=visit_in, actor=user.name
    )
    return service.visit_public(session=session, visit=v)


@router.get("/visits", response_model=schemas.VisitsPublic)
def read_visits(
    session: SessionDep,
    user: CurrentUser,
    unit_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> schemas.VisitsPublic:
    """Visits (every revision), newest first."""
    V = models.MaintVisit
    q = select(V).order_by(V.id.desc()).limit(limit)
    if user.unit_ids is not None:
        q = q.where(V.unit_id.in_(user.unit_ids))
    if unit_id is not None:
        q = q.where(V.unit_id == unit_id)
    rows = list(session.scalars(q))
    return schemas.VisitsPublic(
        data=[schemas.VisitSummary.model_validate(v) for v in rows], count=len(rows)
    )


@router.get("/visits/{visit_id}", response_model=schemas.VisitPublic)
def read_visit(session: SessionDep, user: CurrentUser, visit_id: RowId) -> schemas.VisitPublic:
    """A visit with its items, the events that prove them, flags and device issues."""
    return service.visit_public(session=session, visit=_visit(session, user, visit_id))


@router.post("/visits/{visit_id}/items", status_code=201, response_model=schemas.VisitPublic)
def create_item(
    session: SessionDep, user: MaintWriter, visit_id: RowId, item_in: schemas.ItemCreate
) -> schemas.VisitPublic:
    """Record one item's result (and measured value) on an unsigned visit."""
    v = _writable_visit(session, user, visit_id)
    _do(service.add_item, session=session, visit=v, item_in=item_in, actor=user.name)
    return service.visit_public(session=session, visit=v)


@router.delete("/visits/{visit_id}/items/{item_id}", response_model=schemas.VisitPublic)
def delete_item(
    session: SessionDep, user: MaintWriter, visit_id: RowId, item_id: RowId
) -> schemas.VisitPublic:
    """Remove an item from an unsigned visit (the audit trail keeps it)."""
    v = _writable_visit(session, user, visit_id)
    item = session.get(models.MaintVisitItem, item_id)
    if item is None or item.visit_id != v.id:
        raise HTTPException(status_code=404, detail="Item not found")
    _do(service.remove_item, session=session, visit=v, item=item, actor=user.name)
    return service.visit_public(session=session, visit=v)


@router.post("/visits/{visit_id}/defects", status_code=201, response_model=schemas.DefectPublic)
def create_defect(
    session: SessionDep, user: MaintWriter, visit_id: RowId, defect_in: schemas.DefectCreate
) -> models.MaintDefect:
    """Record a defect (critical: due within 24 h)."""
    v = _writable_visit(session, user, visit_id)
    return _do(service.add_defect, session=session, visit=v, defect_in=defect_in, actor=user.name)


@router.post("/defects/{defect_id}/close", response_model=schemas.DefectPublic)
def close_defect(
    session: SessionDep, user: MaintWriter, defect_id: RowId, close_in: schemas.DefectClose
) -> models.MaintDefect:
    """Close a defect with the rectification and an uploaded evidence file's hash."""
    d = session.get(models.MaintDefect, defect_id)
    if d is None:
        raise HTTPException(status_code=404, detail="Defect not found")
    _writable_visit(session, user, d.visit_id)
    return _do(service.close_defect, session=session, defect=d, close_in=close_in, actor=user.name)


@router.get("/defects", response_model=list[schemas.DefectPublic])
def read_defects(
    session: SessionDep,
    user: CurrentUser,
    open_only: bool = True,
    unit_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[models.MaintDefect]:
    """Defects, oldest first."""
    D = models.MaintDefect
    q = select(D).order_by(D.id)
    if user.unit_ids is not None:
        q = q.where(D.unit_id.in_(user.unit_ids))
    if unit_id is not None:
        q = q.where(D.unit_id == unit_id)
    if open_only:
        q = q.where(D.closed_ms.is_(None))
    return list(session.scalars(q))


_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")


# Uploads are ``async`` only to stream their body; everything that touches the database runs
# in the thread pool (on SQLite a write may wait for another process's write lock, and the event
# loop must go on serving every other request meanwhile). The caller is authenticated on a read
# session, and the write transaction starts only once the whole body has arrived, so a slow
# upload never holds the SQLite write lock.


def _upload_writer(request: Request, creds: BearerDep) -> Principal:
    """``MaintWriter`` (admin, contractor), looked up on a read session."""
    with request.app.state.read_sessions() as session:
        principal = get_principal(session, creds)
    if principal.role not in ("admin", "contractor"):
        raise HTTPException(status_code=403, detail="Not enough permissions")
    return principal


UploadWriter = Annotated[Principal, Depends(_upload_writer)]
TOO_LARGE = f"Attachment larger than {MAX_ATTACHMENT // (1024 * 1024)} MiB"


async def _body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is over the limit, before reading it all."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_ATTACHMENT:
        raise HTTPException(status_code=413, detail=TOO_LARGE)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_ATTACHMENT:
            raise HTTPException(status_code=413, detail=TOO_LARGE)
    if not data:
        raise HTTPException(status_code=422, detail="Empty attachment")
    return bytes(data)


def _media(request: Request) -> str:
    return (request.headers.get("content-type") or "application/octet-stream")[:100]


@router.post(
    "/visits/{visit_id}/attachments",
    status_code=201,
    response_model=schemas.AttachmentPublic,
    openapi_extra={"requestBody": {"required": True, "content": {"*/*": {}}}},
)
async def create_attachment(
    request: Request,
    user: UploadWriter,
    visit_id: RowId,
    name: Annotated[str, Query(min_length=1, max_length=200)],
) -> schemas.AttachmentPublic:
    """Attach a file (the raw body) to an unsigned visit; it is stored by its SHA-256."""
    if not _NAME.match(name):
        raise HTTPException(status_code=422, detail="Invalid file name")
    data = await _body(request)
    return await run_in_threadpool(_store_attachment, request, user, visit_id, name, data)


def _store_attachment(
    request: Request, user: Principal, visit_id: int, name: str, data: bytes
) -> schemas.AttachmentPublic:
    with write_session(request) as session:
        v = _writable_visit(session, user, visit_id)
        blob = _do(
            service.add_attachment,
            session=session,
            visit=v,
            name=name,
            media_type=_media(request),
            data=data,
            actor=user.name,
        )
        out = schemas.AttachmentPublic(
            sha256=blob.sha256, name=name, media_type=blob.media_type, size=blob.size
        )
    return out


@router.post(
    "/blobs",
    status_code=201,
    response_model=schemas.AttachmentPublic,
    openapi_extra={"requestBody": {"required": True, "content": {"*/*": {}}}},
)
async def create_blob(request: Request, _: UploadWriter) -> schemas.AttachmentPublic:
    """Upload a file by content (defect closure evidence, a signature image)."""
    data = await _body(request)
    return await run_in_threadpool(_store_blob, request, data)


def _store_blob(request: Request, data: bytes) -> schemas.AttachmentPublic:
    with write_session(request) as session:
        blob = service.upload_blob(session=session, media_type=_media(request), data=data)
        out = schemas.AttachmentPublic(
            sha256=blob.sha256, name="", media_type=blob.media_type, size=blob.size
        )
    return out


@router.post("/visits/{visit_id}/close", response_model=schemas.VisitPublic)
def close_visit(session: SessionDep, user: MaintWriter, visit_id: RowId) -> schemas.VisitPublic:
    """Close the check window (events after it no longer count as evidence)."""
    v = _writable_visit(session, user, visit_id)
    _do(service.close_visit, session=session, visit=v, actor=user.name)
    return service.visit_public(session=session, visit=v)


@router.post("/visits/{visit_id}/sign", response_model=schemas.VisitPublic)
def sign_visit(
    session: SessionDep, user: MaintWriter, visit_id: RowId, sign_in: schemas.VisitSign
) -> schemas.VisitPublic:
    """Sign a closed visit (lead and fire-safety manager); it is immutable afterwards."""
    v = _writable_visit(session, user, visit_id)
    _do(service.sign_visit, session=session, visit=v, sign_in=sign_in, actor=user.name)
    return service.visit_public(session=session, visit=v)


@router.post("/visits/{visit_id}/corrections", status_code=201, response_model=schemas.VisitPublic)
def correct_visit(
    session: SessionDep, user: MaintWriter, visit_id: RowId, body: schemas.VisitCorrect
) -> schemas.VisitPublic:
    """Correct a signed visit: a new revision to edit and sign; the signed one stays."""
    v = _writable_visit(session, user, visit_id)
    new = _do(service.correct_visit, session=session, visit=v, reason=body.reason, actor=user.name)
    return service.visit_public(session=session, visit=new)


class ExpiredRecord(BaseModel):
    """A record whose retention period is over (``DELETE /maint/visits/{visit_id}`` purges it)."""

    visit_id: int  # the record's first revision
    revisions: int
    kind: str
    unit_id: int
    retention_until_ms: int


@router.get("/expired", response_model=list[ExpiredRecord])
def read_expired(
    session: SessionDep,
    _: Annotated[Principal, Depends(require("admin"))],
    before: Annotated[str, Query(max_length=10, description="YYYY-MM-DD")],
) -> list[dict[str, Any]]:
    """Records that may be purged: every revision signed and retained until before ``before``
    (local date) and before now. Oldest retention date first."""
    before_ms = service.day_start_ms(_day(before))
    return service.expired_records(session=session, before_ms=before_ms)


@router.delete("/visits/{visit_id}", response_model=schemas.Message)
def purge_visit(
    session: SessionDep,
    user: Annotated[Principal, Depends(require("admin"))],
    visit_id: RowId,
) -> schemas.Message:
    """Delete a visit record (every revision) once its retention period is over: 5 years for
    checks, tests and repairs, 1 year for patrols. Refused with the date before then."""
    v = _visit(session, user, visit_id)
    n = _do(service.purge_visit, session=session, visit=v, actor=user.name)
    return schemas.Message(detail=f"Purged {n} revision(s) of visit {v.root_id}")


# ---- audit and reports ------------------------------------------------------------------------


@router.get("/audit", response_model=schemas.AuditsPublic)
def read_audit(
    session: SessionDep,
    _: MaintOverseer,
    entity: Annotated[str | None, Query(max_length=40)] = None,
    entity_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> schemas.AuditsPublic:
    """The audit trail, oldest first, and whether the whole hash chain verifies."""
    A = models.MaintAudit
    rows = list(session.scalars(select(A).order_by(A.id)))
    data = [
        r
        for r in rows
        if (entity is None or r.entity == entity)
        and (entity_id is None or r.entity_id == entity_id)
    ]
    return schemas.AuditsPublic(
        data=[schemas.AuditPublic.model_validate(r) for r in data],
        chain_ok=service.verify_chain(rows),
    )


@router.get("/verify")
def read_verify(session: SessionDep, _: MaintOverseer) -> dict[str, Any]:
    """Whether the records are what was signed: the audit hash chain, each signed visit against
    its signed content hash, and no signed visit gone before its retention ended."""
    return service.verify_records(session=session)


Fmt = Annotated[Literal["csv", "pdf"], Query()]


@router.get("/reports/monthly")
def read_monthly_report(
    session: SessionDep,
    user: CurrentUser,
    unit_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    month: Annotated[str, Query(pattern=r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])$")],
    format: Fmt = "csv",
) -> Response:
    """A unit's signed visits of a month, item by item, with evidence (CSV or PDF)."""
    unit = _unit(session, user, unit_id)
    body, media = reports.monthly(session, unit, month, format)
    name = f"maintenance-{unit.id}-{month}.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/reports/annual")
def read_annual_report(
    session: SessionDep,
    user: CurrentUser,
    unit_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    year: Annotated[int, Query(ge=1970, le=2199)],
    format: Fmt = "csv",
) -> Response:
    """The annual test report of a unit (CSV or PDF)."""
    unit = _unit(session, user, unit_id)
    body, media = reports.annual(session, unit, year, format)
    name = f"annual-test-{unit.id}-{year}.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/reports/overdue")
def read_overdue(session: SessionDep, user: CurrentUser, on: DayQuery = None) -> list[dict]:
    """Requirements in grace, overdue or escalated, per firm (a contractor: its own firm)."""
    if user.role == "contractor":
        firm = _firm_of(session, user)
        if firm is None:
            return []
        return reports.overdue(session, _day(on), firm)
    if user.role == "installer":
        raise HTTPException(status_code=403, detail="Not enough permissions")
    return reports.overdue(session, _day(on), None)


@router.get("/reports/compliance")
def read_compliance(session: SessionDep, _: MaintOverseer, on: DayQuery = None) -> list[dict]:
    """Per unit: requirement states, open and late defects, the last signed visit."""
    return reports.compliance(session, _day(on))
