"""Maintenance reads and writes: keyword-only functions that never commit (like crud.py).

Refusals are ``Refused(status, detail)`` so the routes turn them into HTTP answers with the
reason and the CLI prints the same words. Every write appends to the audit trail in the same
transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from emberlink.protocol import codes
from sqlalchemy import and_, case, func, select, text
from sqlalchemy.orm import Session

from .. import models, schemas
from . import catalogue, evidence, schedule
from .evidence import LOCAL_TZ

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS + DAY_MS // 4
# Retention (standards.md §3.3): maintenance, test and repair records >= 5 years; patrol 1 year.
RETENTION_YEARS = {"monthly_check": 5, "annual_test": 5, "repair": 5, "patrol": 1}
# A critical defect is due within 24 h (§3.2 "faults found: within 24 h").
DEFECT_DUE_MS = {"critical": DAY_MS, "major": 7 * DAY_MS, "minor": 30 * DAY_MS}
# How far before a visit opens (or after it closes) a test-mode period may reach.
TEST_MODE_REACH_MS = 4 * 3_600_000
SIGNED = "Visit is signed; corrections are new revisions"
GENESIS = "0" * 64
AUDIT_LOCK = 0x454C4D41  # "ELMA": the advisory lock key of the audit trail
CATALOGUES = dict(catalogue.CATALOGUES)
EVIDENCE_KINDS = (
    codes.FIRE_ALARM,
    codes.PRE_ALARM,
    codes.FAULT,
    codes.SUPERVISORY,
    codes.MANUAL_ALARM,
    codes.TEST_MODE,
)


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def local_date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(LOCAL_TZ).date()


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=LOCAL_TZ).timestamp() * 1000)


def requirements(version: str) -> dict[str, catalogue.Requirement]:
    return {r.code: r for r in CATALOGUES[version]}


# ---- audit ------------------------------------------------------------------------------------


def _digest(prev: str, entry: dict[str, Any]) -> str:
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def audit(
    *, session: Session, actor: str, action: str, entity: str, entity_id: int, detail: dict
) -> models.MaintAudit:
    """Append one entry; its hash covers the previous entry's hash (a chain that cannot fork:
    ``prev_hash`` is unique)."""
    A = models.MaintAudit
    if session.get_bind().dialect.name == "postgresql":
        # One appender at a time (SQLite writers are serialised by BEGIN IMMEDIATE already);
        # without it two transactions would read the same last hash and one would fail.
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
    last = session.scalars(select(A).order_by(A.id.desc()).limit(1)).first()
    prev = last.hash if last is not None else GENESIS
    at = models_now()
    entry = {
        "at_ms": at,
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "detail": detail,
    }
    row = A(**entry, prev_hash=prev, hash=_digest(prev, entry))
    session.add(row)
    session.flush()
    return row


def verify_chain(rows: Sequence[models.MaintAudit]) -> bool:
    """True when every entry's hash matches its content and links to the one before."""
    prev = GENESIS
    for r in rows:
        entry = {
            "at_ms": r.at_ms,
            "actor": r.actor,
            "action": r.action,
            "entity": r.entity,
            "entity_id": r.entity_id,
            "detail": r.detail,
        }
        if r.prev_hash != prev or r.hash != _digest(prev, entry):
            return False
        prev = r.hash
    return True


def models_now() -> int:
    from ..crud import now_ms

    return now_ms()


# ---- firms, technicians, contracts ------------------------------------------------------------


def firm_refusal(firm: models.MaintFirm, at_ms: int) -> str | None:
    """Why ``firm`` may not sign off at ``at_ms``, or None."""
    if not firm.qualified:
        return f"Firm '{firm.name}' is not qualified"
    if firm.cert_expires_ms <= at_ms:
        day = local_date(firm.cert_expires_ms)
        return f"Firm '{firm.name}' qualification certificate {firm.cert_no} expired on {day}"
    return None


def technician_refusal(tech: models.MaintTechnician, at_ms: int) -> str | None:
    if tech.cert_expires_ms <= at_ms:
        day = local_date(tech.cert_expires_ms)
        return f"Technician '{tech.name}' certificate {tech.cert_no} expired on {day}"
    return None


def create_firm(*, session: Session, firm_in: schemas.FirmCreate, actor: str) -> models.MaintFirm:
    firm = models.MaintFirm(**firm_in.model_dump(), created_ms=models_now())
    session.add(firm)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="create",
        entity="firm",
        entity_id=firm.id,
        detail=firm_in.model_dump(),
    )
    return firm


def create_technician(
    *, session: Session, firm: models.MaintFirm, tech_in: schemas.TechnicianCreate, actor: str
) -> models.MaintTechnician:
    tech = models.MaintTechnician(firm_id=firm.id, **tech_in.model_dump())
    session.add(tech)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="create",
        entity="technician",
        entity_id=tech.id,
        detail={"firm_id": firm.id, **tech_in.model_dump()},
    )
    return tech


def user_firm_id(*, session: Session, user_id: int) -> int | None:
    row = session.get(models.MaintFirmUser, user_id)
    return row.firm_id if row is not None else None


def create_contract(
    *, session: Session, contract_in: schemas.ContractCreate, actor: str
) -> models.MaintContract:
    version = contract_in.catalogue_version or catalogue.CATALOGUE_VERSION
    if version not in CATALOGUES:
        raise Refused(422, f"Unknown catalogue version '{version}'")
    if contract_in.ends_ms <= contract_in.starts_ms:
        raise Refused(422, "Contract ends before it starts")
    if session.get(models.MaintFirm, contract_in.firm_id) is None:
        raise Refused(422, "Firm does not exist")
    if session.get(models.Unit, contract_in.unit_id) is None:
        raise Refused(422, "Unit does not exist")
    data = contract_in.model_dump(exclude={"catalogue_version"})
    c = models.MaintContract(**data, catalogue_version=version, created_ms=models_now())
    session.add(c)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="create",
        entity="contract",
        entity_id=c.id,
        detail={**data, "catalogue_version": version},
    )
    return c


def contracts_for_units(
    *, session: Session, unit_ids: Sequence[int] | None
) -> list[models.MaintContract]:
    C = models.MaintContract
    q = select(C).order_by(C.id)
    if unit_ids is not None:
        q = q.where(C.unit_id.in_(unit_ids))
    return list(session.scalars(q))


# ---- visits -----------------------------------------------------------------------------------


def open_visit(
    *,
    session: Session,
    contract: models.MaintContract,
    visit_in: schemas.VisitCreate,
    actor: str,
) -> models.MaintVisit:
    """Open a check window: from now (or ``started_ms``) until the visit is closed."""
    now = models_now()
    started = visit_in.started_ms if visit_in.started_ms is not None else now
    if not contract.starts_ms <= started < contract.ends_ms:
        raise Refused(409, "Contract is not in force at the visit's start")
    firm = session.get(models.MaintFirm, contract.firm_id)
    assert firm is not None
    crew = []
    for m in visit_in.crew:
        tech = session.get(models.MaintTechnician, m.technician_id)
        if tech is None or tech.firm_id != firm.id:
            raise Refused(422, f"Technician {m.technician_id} does not work for '{firm.name}'")
        reason = technician_refusal(tech, started)
        if reason is not None:
            raise Refused(409, reason)
        crew.append(
            {"technician_id": tech.id, "name": tech.name, "cert_no": tech.cert_no, "role": m.role}
        )
    if not any(m["role"] == "lead" for m in crew):
        raise Refused(422, "The crew needs a lead")
    v = models.MaintVisit(
        revision=1,
        unit_id=contract.unit_id,
        contract_id=contract.id,
        kind=visit_in.kind,
        status="open",
        started_ms=started,
        crew=crew,
        created_by=actor,
        created_ms=now,
    )
    session.add(v)
    session.flush()
    v.root_id = v.id
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="open",
        entity="visit",
        entity_id=v.id,
        detail={"contract_id": contract.id, "kind": v.kind, "started_ms": started, "crew": crew},
    )
    return v


def _editable(v: models.MaintVisit) -> None:
    if v.status == "signed":
        raise Refused(409, SIGNED)


def add_item(
    *, session: Session, visit: models.MaintVisit, item_in: schemas.ItemCreate, actor: str
) -> models.MaintVisitItem:
    _editable(visit)
    contract = session.get(models.MaintContract, visit.contract_id)
    assert contract is not None
    req = requirements(contract.catalogue_version).get(item_in.code)
    if req is None:
        raise Refused(422, f"Unknown requirement '{item_in.code}'")
    if req.system not in contract.systems:
        raise Refused(422, f"Requirement '{req.code}' is outside the contract's systems")
    if req.method == "measure" and item_in.result in ("pass", "fail") and item_in.measured is None:
        raise Refused(422, f"Requirement '{req.code}' needs a measured value")
    if item_in.gateway_id is not None:
        unit_id = _gateway_unit(session, item_in.gateway_id)
        if unit_id != visit.unit_id:
            raise Refused(422, f"Gateway {item_in.gateway_id} is not at this unit")
    item = models.MaintVisitItem(
        visit_id=visit.id, **item_in.model_dump(), recorded_ms=models_now()
    )
    session.add(item)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="item",
        entity="visit",
        entity_id=visit.id,
        detail=item_in.model_dump(),
    )
    return item


def add_defect(
    *, session: Session, visit: models.MaintVisit, defect_in: schemas.DefectCreate, actor: str
) -> models.MaintDefect:
    _editable(visit)
    now = models_now()
    d = models.MaintDefect(
        visit_id=visit.id,
        unit_id=visit.unit_id,
        **defect_in.model_dump(),
        found_ms=now,
        due_ms=now + DEFECT_DUE_MS[defect_in.severity],
    )
    session.add(d)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="defect",
        entity="visit",
        entity_id=visit.id,
        detail={"defect_id": d.id, **defect_in.model_dump()},
    )
    return d


def close_defect(
    *, session: Session, defect: models.MaintDefect, close_in: schemas.DefectClose, actor: str
) -> models.MaintDefect:
    if defect.closed_ms is not None:
        raise Refused(409, "Defect already closed")
    if session.get(models.MaintBlob, close_in.evidence_sha256) is None:
        raise Refused(422, "Evidence attachment not uploaded")
    defect.rectification = close_in.rectification
    defect.closure_sha256 = close_in.evidence_sha256
    defect.closed_ms, defect.closed_by = models_now(), actor
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="close",
        entity="defect",
        entity_id=defect.id,
        detail=close_in.model_dump(),
    )
    return defect


def add_attachment(
    *,
    session: Session,
    visit: models.MaintVisit,
    name: str,
    media_type: str,
    data: bytes,
    actor: str,
) -> models.MaintBlob:
    """Store the bytes once by SHA-256 and attach them to an unsigned visit."""
    _editable(visit)
    digest = hashlib.sha256(data).hexdigest()
    blob = session.get(models.MaintBlob, digest)
    if blob is None:
        blob = models.MaintBlob(sha256=digest, media_type=media_type, size=len(data), data=data)
        session.add(blob)
    A = models.MaintAttachment
    if session.scalars(select(A).where(A.visit_id == visit.id, A.sha256 == digest)).first():
        raise Refused(409, "Attachment already on this visit")
    session.add(A(visit_id=visit.id, sha256=digest, name=name))
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="attach",
        entity="visit",
        entity_id=visit.id,
        detail={"sha256": digest, "name": name, "size": len(data)},
    )
    return blob


def upload_blob(*, session: Session, media_type: str, data: bytes) -> models.MaintBlob:
    digest = hashlib.sha256(data).hexdigest()
    blob = session.get(models.MaintBlob, digest)
    if blob is None:
        blob = models.MaintBlob(sha256=digest, media_type=media_type, size=len(data), data=data)
        session.add(blob)
        session.flush()
    return blob


def close_visit(*, session: Session, visit: models.MaintVisit, actor: str) -> models.MaintVisit:
    """Close the check window."""
    _editable(visit)
    if visit.status == "closed":
        raise Refused(409, "Check window already closed")
    visit.status, visit.ended_ms = "closed", max(models_now(), visit.started_ms)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="close",
        entity="visit",
        entity_id=visit.id,
        detail={"ended_ms": visit.ended_ms},
    )
    return visit


def sign_visit(
    *, session: Session, visit: models.MaintVisit, sign_in: schemas.VisitSign, actor: str
) -> models.MaintVisit:
    """Two signatures (the firm's lead, the unit's fire-safety manager) over the content hash;
    the evidence is frozen into the record; from here on the record is immutable."""
    _editable(visit)
    if visit.status != "closed":
        raise Refused(409, "Close the check window before signing")
    now = models_now()
    contract = session.get(models.MaintContract, visit.contract_id)
    assert contract is not None
    firm = session.get(models.MaintFirm, contract.firm_id)
    assert firm is not None
    reason = firm_refusal(firm, now)
    if reason is not None:
        raise Refused(409, reason)
    lead = session.get(models.MaintTechnician, sign_in.lead_technician_id)
    leads = {m["technician_id"] for m in visit.crew if m["role"] == "lead"}
    if lead is None or lead.id not in leads:
        raise Refused(422, "The signer is not the visit's lead")
    reason = technician_refusal(lead, now)
    if reason is not None:
        raise Refused(409, reason)
    for h in (sign_in.lead_image_sha256, sign_in.manager.image_sha256):
        if h is not None and session.get(models.MaintBlob, h) is None:
            raise Refused(422, "Signature image not uploaded")
    content = visit_content(session=session, visit=visit)
    content.pop("_defects_full")
    digest = _content_digest(content)
    visit.signatures = {
        "contractor_lead": {
            "technician_id": lead.id,
            "name": lead.name,
            "cert_no": lead.cert_no,
            "firm": firm.name,
            "firm_cert_no": firm.cert_no,
            "image_sha256": sign_in.lead_image_sha256,
            "signed_ms": now,
            "by": actor,
            "content_hash": digest,
        },
        "unit_safety_manager": {
            **sign_in.manager.model_dump(),
            "signed_ms": now,
            "content_hash": digest,
        },
    }
    visit.evidence = content["evidence"]
    visit.content_hash = digest
    end = visit.ended_ms or now
    visit.retention_until_ms = end + RETENTION_YEARS[visit.kind] * YEAR_MS
    visit.status, visit.signed_ms = "signed", now
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="sign",
        entity="visit",
        entity_id=visit.id,
        detail={"content_hash": digest, "signatures": visit.signatures},
    )
    return visit


def _content_digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def correct_visit(
    *, session: Session, visit: models.MaintVisit, reason: str, actor: str
) -> models.MaintVisit:
    """A new open revision of a signed visit, with its items, defects and attachments copied;
    the signed revision stays as it was."""
    if visit.status != "signed":
        raise Refused(409, "Only a signed visit is corrected by a new revision; edit it instead")
    V = models.MaintVisit
    latest = session.scalar(select(func.max(V.revision)).where(V.root_id == visit.root_id))
    if latest != visit.revision:
        raise Refused(409, f"Visit has a newer revision ({latest})")
    new = V(
        root_id=visit.root_id,
        revision=visit.revision + 1,
        supersedes_id=visit.id,
        correction_reason=reason,
        unit_id=visit.unit_id,
        contract_id=visit.contract_id,
        kind=visit.kind,
        status="closed",
        started_ms=visit.started_ms,
        ended_ms=visit.ended_ms,
        crew=visit.crew,
        created_by=actor,
        created_ms=models_now(),
    )
    session.add(new)
    session.flush()
    for it in _items(session, visit.id):
        session.add(
            models.MaintVisitItem(
                visit_id=new.id,
                code=it.code,
                gateway_id=it.gateway_id,
                src=it.src,
                result=it.result,
                measured=it.measured,
                note=it.note,
                recorded_ms=it.recorded_ms,
            )
        )
    for a in _attachments(session, visit.id):
        session.add(models.MaintAttachment(visit_id=new.id, sha256=a.sha256, name=a.name))
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="correct",
        entity="visit",
        entity_id=new.id,
        detail={"supersedes_id": visit.id, "revision": new.revision, "reason": reason},
    )
    return new


def remove_item(
    *, session: Session, visit: models.MaintVisit, item: models.MaintVisitItem, actor: str
) -> None:
    _editable(visit)
    session.delete(item)
    session.flush()
    audit(
        session=session,
        actor=actor,
        action="remove_item",
        entity="visit",
        entity_id=visit.id,
        detail={"item_id": item.id, "code": item.code, "result": item.result},
    )


def _items(session: Session, visit_id: int) -> list[models.MaintVisitItem]:
    I = models.MaintVisitItem  # noqa: E741
    return list(session.scalars(select(I).where(I.visit_id == visit_id).order_by(I.id)))


def _defects(session: Session, visit_id: int) -> list[models.MaintDefect]:
    D = models.MaintDefect
    return list(session.scalars(select(D).where(D.visit_id == visit_id).order_by(D.id)))


def _attachments(session: Session, visit_id: int) -> list[models.MaintAttachment]:
    A = models.MaintAttachment
    return list(session.scalars(select(A).where(A.visit_id == visit_id).order_by(A.id)))


def _gateway_unit(session: Session, gateway_id: int) -> int | None:
    return session.scalar(
        select(models.Site.unit_id)
        .join(models.Gateway, models.Gateway.site_id == models.Site.id)
        .where(models.Gateway.id == gateway_id)
    )


def unit_gateways(session: Session, unit_id: int) -> list[int]:
    return list(
        session.scalars(
            select(models.Gateway.id)
            .join(models.Site, models.Gateway.site_id == models.Site.id)
            .where(models.Site.unit_id == unit_id)
        )
    )


def _point_labels(session: Session, gateways: list[int]) -> dict[tuple[int, int], str]:
    """(gateway, src) -> the registered point name."""
    if not gateways:
        return {}
    D, P = models.Device, models.Point
    rows = session.execute(
        select(D.gateway_id, D.bus, D.unit_addr, P.point, P.name)
        .join(P, P.device_id == D.id)
        .where(D.gateway_id.in_(gateways))
    )
    return {(gw, (bus << 24) | (addr << 16) | pt): name for gw, bus, addr, pt, name in rows if name}


def window_events(
    *, session: Session, unit_id: int, start_ms: int, end_ms: int
) -> list[evidence.PanelEvent]:
    """The alarm, fault and test-mode events the unit's gateways reported in the window."""
    gws = unit_gateways(session, unit_id)
    if not gws:
        return []
    E = models.Event
    rows = session.scalars(
        select(E)
        .where(
            E.gateway_id.in_(gws),
            E.t_ms >= start_ms,
            E.t_ms <= end_ms,
            E.kind.in_(EVIDENCE_KINDS),
        )
        .order_by(E.t_ms, E.id)
        .limit(10_000)
    )
    labels = _point_labels(session, gws)
    return [
        evidence.PanelEvent(
            id=e.id,
            gateway_id=e.gateway_id,
            src=e.src,
            kind=e.kind,
            state=e.state,
            t_ms=e.t_ms,
            received_ms=e.received_ms,
            test=bool((e.data or {}).get("eflags", 0) & codes.EF_TEST),
            label=labels.get((e.gateway_id, e.src), "point " + evidence.src_label(e.src)),
        )
        for e in rows
    ]


def device_issues(*, session: Session, visit: models.MaintVisit) -> list[dict[str, object]]:
    """Devices that went offline or reported a fault since the unit's previous visit."""
    V = models.MaintVisit
    prev_start = session.scalar(
        select(func.max(V.started_ms)).where(
            V.unit_id == visit.unit_id, V.started_ms < visit.started_ms, V.root_id != visit.root_id
        )
    )
    since = prev_start if prev_start is not None else visit.started_ms - 31 * DAY_MS
    until = visit.ended_ms or models_now()
    gws = unit_gateways(session, visit.unit_id)
    if not gws:
        return []
    out: list[dict[str, object]] = []
    H = models.HealthTransition
    for h in session.scalars(
        select(H)
        .where(
            H.gateway_id.in_(gws),
            H.to_status == "offline",
            H.at_ms >= since,
            H.at_ms <= until,
        )
        .order_by(H.at_ms)
        .limit(500)
    ):
        what = "gateway" if h.device_id is None else f"device {h.device_id}"
        out.append(
            {
                "what": "offline",
                "gateway_id": h.gateway_id,
                "device_id": h.device_id,
                "at_ms": h.at_ms,
                "text": f"{what} of gateway {h.gateway_id} offline: {h.reason}",
            }
        )
    E = models.Event
    for e in session.scalars(
        select(E)
        .where(
            E.gateway_id.in_(gws),
            E.kind == codes.FAULT,
            E.state == codes.ACTIVE,
            E.t_ms >= since,
            E.t_ms <= until,
        )
        .order_by(E.t_ms)
        .limit(500)
    ):
        out.append(
            {
                "what": "fault",
                "gateway_id": e.gateway_id,
                "src": e.src,
                "at_ms": e.t_ms,
                "text": f"fault at point {evidence.src_label(e.src)} of gateway {e.gateway_id}",
            }
        )
    return out


def within_limits(req: catalogue.Requirement | None, measured: float | None) -> bool | None:
    if req is None or measured is None or (req.limit_min is None and req.limit_max is None):
        return None
    lo_ok = req.limit_min is None or measured >= req.limit_min
    hi_ok = req.limit_max is None or measured <= req.limit_max
    return lo_ok and hi_ok


def visit_content(*, session: Session, visit: models.MaintVisit) -> dict[str, Any]:
    """The visit's record as plain data: items with evidence, defects, attachments, issues.

    A signed visit answers from what was frozen when it was signed.
    """
    contract = session.get(models.MaintContract, visit.contract_id)
    assert contract is not None
    reqs = requirements(contract.catalogue_version)
    items = _items(session, visit.id)
    if visit.evidence is not None:
        frozen = visit.evidence
        ev = {int(k): v for k, v in frozen["items"].items()}
        issues = frozen["device_issues"]
        window = tuple(frozen["window"])
    else:
        end = visit.ended_ms or models_now()
        # Test-mode periods that overlap the visit widen its window (up to TEST_MODE_REACH_MS).
        events = window_events(
            session=session,
            unit_id=visit.unit_id,
            start_ms=visit.started_ms - TEST_MODE_REACH_MS,
            end_ms=end + TEST_MODE_REACH_MS,
        )
        spans = evidence.test_mode_spans(events, end + TEST_MODE_REACH_MS)
        lo, hi = evidence.widen((visit.started_ms, end), spans)
        window = (max(lo, visit.started_ms - TEST_MODE_REACH_MS), min(hi, end + TEST_MODE_REACH_MS))
        refs = [evidence.ItemRef(i.id, i.code, i.gateway_id, i.src, i.result) for i in items]
        ev = evidence.match_items(refs, reqs, events, window)
        issues = device_issues(session=session, visit=visit)
    item_rows = []
    for i in items:
        e = ev.get(i.id, {"events": [], "flag": None})
        item_rows.append(
            {
                "id": i.id,
                "code": i.code,
                "gateway_id": i.gateway_id,
                "src": i.src,
                "result": i.result,
                "measured": i.measured,
                "note": i.note,
                "within_limits": within_limits(reqs.get(i.code), i.measured),
                "evidence": e["events"],
                "flag": e["flag"],
            }
        )
    defects = [
        schemas.DefectPublic.model_validate(d).model_dump() for d in _defects(session, visit.id)
    ]
    attachments = []
    for a in _attachments(session, visit.id):
        blob = session.get(models.MaintBlob, a.sha256)
        assert blob is not None
        attachments.append(
            {"sha256": a.sha256, "name": a.name, "media_type": blob.media_type, "size": blob.size}
        )
    return {
        "id": visit.id,
        "root_id": visit.root_id,
        "revision": visit.revision,
        "unit_id": visit.unit_id,
        "contract_id": visit.contract_id,
        "firm_id": contract.firm_id,
        "kind": visit.kind,
        "started_ms": visit.started_ms,
        "ended_ms": visit.ended_ms,
        "crew": visit.crew,
        "items": item_rows,
        "defects": [
            {k: d[k] for k in ("id", "item_code", "severity", "description", "found_ms", "due_ms")}
            for d in defects
        ],
        "attachments": attachments,
        "evidence": {
            "items": {str(k): v for k, v in ev.items()},
            "device_issues": issues,
            "window": list(window),
        },
        "_defects_full": defects,
    }


def visit_public(*, session: Session, visit: models.MaintVisit) -> schemas.VisitPublic:
    c = visit_content(session=session, visit=visit)
    return schemas.VisitPublic(
        id=visit.id,
        root_id=visit.root_id,
        revision=visit.revision,
        supersedes_id=visit.supersedes_id,
        correction_reason=visit.correction_reason,
        unit_id=visit.unit_id,
        contract_id=visit.contract_id,
        firm_id=c["firm_id"],
        kind=visit.kind,
        status=visit.status,
        started_ms=visit.started_ms,
        ended_ms=visit.ended_ms,
        crew=visit.crew,
        created_by=visit.created_by,
        signed_ms=visit.signed_ms,
        signatures=visit.signatures,
        content_hash=visit.content_hash,
        retention_until_ms=visit.retention_until_ms,
        items=[schemas.ItemPublic(**i) for i in c["items"]],
        defects=[schemas.DefectPublic(**d) for d in c["_defects_full"]],
        attachments=[schemas.AttachmentPublic(**a) for a in c["attachments"]],
        flagged=sum(1 for i in c["items"] if i["flag"]),
        device_issues=c["evidence"]["device_issues"],
        evidence_window=c["evidence"]["window"],
    )


def current_signed(session: Session, unit_ids: Sequence[int]) -> list[models.MaintVisit]:
    """Per visit, its latest signed revision (what counts for the schedule and the reports)."""
    V = models.MaintVisit
    latest = (
        select(V.root_id, func.max(V.revision).label("rev"))
        .where(V.status == "signed", V.unit_id.in_(unit_ids))
        .group_by(V.root_id)
        .subquery()
    )
    q = (
        select(V)
        .join(latest, and_(V.root_id == latest.c.root_id, V.revision == latest.c.rev))
        .order_by(V.started_ms, V.id)
    )
    return list(session.scalars(q))


# ---- schedule ---------------------------------------------------------------------------------


def completions(session: Session, unit_id: int) -> dict[str, list[date]]:
    """Requirement code -> local dates of the signed visits that performed it."""
    V, I = models.MaintVisit, models.MaintVisitItem  # noqa: E741
    latest = (
        select(V.root_id, func.max(V.revision).label("rev"))
        .where(V.status == "signed", V.unit_id == unit_id)
        .group_by(V.root_id)
        .subquery()
    )
    rows = session.execute(
        select(I.code, V.started_ms)
        .join(V, I.visit_id == V.id)
        .join(latest, and_(V.root_id == latest.c.root_id, V.revision == latest.c.rev))
        .where(I.result != "not_accessible")
        .order_by(V.started_ms, V.id, I.id)
    )
    out: dict[str, list[date]] = {}
    for code, started_ms in rows:
        out.setdefault(code, []).append(local_date(started_ms))
    return out


def unit_schedule(*, session: Session, unit: models.Unit, on: date) -> schemas.SchedulePublic:
    """Every requirement of the contracts in force for ``unit`` on ``on``, with its state."""
    C = models.MaintContract
    on_ms = day_start_ms(on)
    contracts = list(
        session.scalars(
            select(C)
            .where(C.unit_id == unit.id, C.starts_ms <= on_ms + DAY_MS - 1, C.ends_ms > on_ms)
            .order_by(C.id)
        )
    )
    done = completions(session, unit.id)
    rows: list[schemas.ScheduleRow] = []
    seen: set[str] = set()
    for c in contracts:
        for req in CATALOGUES[c.catalogue_version]:
            if req.system not in c.systems or req.code in seen:
                continue
            seen.add(req.code)
            anchor = local_date(c.in_service_ms if req.anchor == "completion" else c.starts_ms)
            dates = done.get(req.code, [])
            st = schedule.status_on(req, anchor, dates, on, until=local_date(c.ends_ms - 1))
            past = [d for d in dates if d <= on]
            rows.append(
                schemas.ScheduleRow(
                    code=req.code,
                    system=req.system,
                    title=req.title,
                    interval_months=req.interval_months,
                    contract_id=c.id,
                    firm_id=c.firm_id,
                    state=st.state,
                    next_due=st.next_due.isoformat() if st.next_due else None,
                    last_done=max(past).isoformat() if past else None,
                    missed=st.missed,
                    ahead=[o.due.isoformat() for o in st.occurrences if o.window_open > on],
                )
            )
    annual = [d for code, ds in done.items() for d in ds if _is_annual(code)]
    reminder = schedule.filing_reminder(
        key_unit=unit.kind == "key_unit", annual_done=annual, today=on
    )
    return schemas.SchedulePublic(
        unit_id=unit.id, on=on.isoformat(), rows=rows, reminders=[reminder] if reminder else []
    )


def _is_annual(code: str) -> bool:
    return any(code in requirements(v) and requirements(v)[code].annual_test for v in CATALOGUES)


# ---- integrity and retention ------------------------------------------------------------------


def verify_records(*, session: Session) -> dict[str, Any]:
    """Check the records against what was signed, catching changes made behind the API's back
    (in the database itself, e.g. with its triggers disabled):

    * the audit trail's hash chain (``chain_ok``);
    * every signed visit: its content (items, defects, attachments, frozen evidence) hashes to
      the signed ``content_hash``, which is the one its ``sign`` audit entry recorded, with the
      same signatures and a retention date no earlier than the rule gives (``tampered``);
    * every visit the audit trail says was signed still exists unless it was purged after its
      retention period (``missing``).
    """
    A, V = models.MaintAudit, models.MaintVisit
    rows = list(session.scalars(select(A).order_by(A.id)))
    signed: dict[int, dict[str, Any]] = {}
    purged: set[int] = set()
    for r in rows:
        if r.entity == "visit" and r.action == "sign":
            signed[r.entity_id] = r.detail
        elif r.entity == "visit" and r.action == "purge":
            purged.add(r.entity_id)
    tampered: list[dict[str, Any]] = []
    present: set[int] = set()
    for v in session.scalars(select(V).order_by(V.id)):
        present.add(v.id)
        problem = _visit_problem(session, v, signed.get(v.id))
        if problem is not None:
            tampered.append({"visit_id": v.id, "reason": problem})
    missing = sorted(i for i in signed if i not in present and i not in purged)
    chain_ok = verify_chain(rows)
    return {
        "ok": chain_ok and not tampered and not missing,
        "chain_ok": chain_ok,
        "visits_checked": len(present),
        "tampered": tampered,
        "missing": missing,
    }


def _visit_problem(
    session: Session, v: models.MaintVisit, signed: dict[str, Any] | None
) -> str | None:
    if v.status != "signed":
        return "signed in the audit trail, unsigned in the record" if signed else None
    if signed is None:
        return "signed without a sign entry in the audit trail"
    if v.content_hash != signed.get("content_hash"):
        return "content hash differs from the one signed"
    if v.signatures != signed.get("signatures"):
        return "signatures differ from the ones signed"
    content = visit_content(session=session, visit=v)
    content.pop("_defects_full")
    if _content_digest(content) != v.content_hash:
        return "content no longer matches its signed hash"
    end = v.ended_ms if v.ended_ms is not None else v.signed_ms
    if end is None or v.retention_until_ms is None:
        return "signed record without its signing time or retention date"
    if v.retention_until_ms < end + RETENTION_YEARS[v.kind] * YEAR_MS:
        return "retention date earlier than the retention rule"
    return None


def expired_records(*, session: Session, before_ms: int) -> list[dict[str, Any]]:
    """Records whose retention period is over: every revision signed and the latest retention
    date of them before ``before_ms`` and before now (what ``purge_visit`` would accept), oldest
    retention first. One entry per record (its root visit)."""
    V = models.MaintVisit
    cutoff = min(before_ms, models_now())
    unsigned = func.sum(case((V.signed_ms.is_(None), 1), else_=0))
    keep = func.max(V.retention_until_ms)
    q = (
        select(
            V.root_id,
            func.count(V.id),
            func.max(V.kind),
            func.min(V.unit_id),
            keep,
        )
        .group_by(V.root_id)
        .having(unsigned == 0, keep < cutoff)
        .order_by(keep, V.root_id)
    )
    return [
        {
            "visit_id": root,
            "revisions": n,
            "kind": kind,
            "unit_id": unit,
            "retention_until_ms": until,
        }
        for root, n, kind, unit, until in session.execute(q)
    ]


def purge_visit(*, session: Session, visit: models.MaintVisit, actor: str) -> int:
    """Delete a visit record, every revision of it, once its retention period is over
    (standards.md §3.3: maintenance, test and repair records >= 5 years, patrol 1 year).

    Refused with the reason before then, and for a record with an unsigned revision. The audit
    trail keeps a ``purge`` entry with the content hash of each deleted revision. Returns the
    number of revisions deleted.
    """
    V = models.MaintVisit
    revs = list(
        session.scalars(select(V).where(V.root_id == visit.root_id).order_by(V.revision.desc()))
    )
    now = models_now()
    for r in revs:
        if r.status != "signed" or r.retention_until_ms is None:
            raise Refused(409, f"Revision {r.revision} is not signed; only signed records expire")
    keep = max(r.retention_until_ms or 0 for r in revs)
    if now < keep:
        years = max(RETENTION_YEARS[r.kind] for r in revs)
        raise Refused(
            409, f"Record is retained until {local_date(keep)} ({years} years after the visit)"
        )
    for r in revs:  # newest first: a revision refers to the one it supersedes
        for model in (models.MaintVisitItem, models.MaintAttachment, models.MaintDefect):
            session.execute(model.__table__.delete().where(model.visit_id == r.id))  # type: ignore[attr-defined]
        detail = {"root_id": r.root_id, "revision": r.revision, "content_hash": r.content_hash}
        session.delete(r)
        session.flush()
        audit(
            session=session,
            actor=actor,
            action="purge",
            entity="visit",
            entity_id=r.id,
            detail=detail,
        )
    return len(revs)
