"""Maintenance API on both databases: a check window, evidence from ingest, signatures,
immutability, corrections, audit trail, reports, refusals and the role matrix."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.cloud.ingest.pipeline import Ingestor, now_ms
from emberlink.cloud.maintenance.evidence import NO_EVIDENCE
from emberlink.protocol import codes, messages, topics, wire
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import ROLES, World
from ..utils import FIRE_SRC, batch

P = "/api/v1/maint"
DAY = 86_400_000
OTHER_SRC = (1 << 24) | (4 << 16) | 2  # a point that reports nothing


@dataclass
class Maint:
    firm: int
    lead: int
    tech: int
    contract: int


def _setup(client: TestClient, world: World, *, cert_expires_ms: int | None = None) -> Maint:
    op = world.auth("operator")
    now = now_ms()
    r = client.post(
        P + "/firms",
        headers=op,
        json={
            "name": "Anquan Fire Services",
            "cert_no": "FS-2024-0042",
            "cert_expires_ms": cert_expires_ms or now + 365 * DAY,
        },
    )
    assert r.status_code == 201, r.text
    firm = r.json()["id"]
    techs = []
    for name in ("Li Wei", "Zhang 张"):
        r = client.post(
            P + f"/firms/{firm}/technicians",
            headers=op,
            json={"name": name, "cert_no": f"OP-{name[:2]}", "cert_expires_ms": now + 99 * DAY},
        )
        assert r.status_code == 201, r.text
        techs.append(r.json()["id"])
    me = client.get("/api/v1/users/me", headers=world.auth("contractor")).json()
    r = client.post(P + f"/firms/{firm}/users", headers=op, json={"user_id": me["id"]})
    assert r.status_code == 201, r.text
    r = client.post(
        P + "/contracts",
        headers=op,
        json={
            "firm_id": firm,
            "unit_id": world.unit_a,
            "starts_ms": now - 10 * DAY,
            "ends_ms": now + 355 * DAY,
            "systems": ["fire_alarm", "electrical_fire"],
            "in_service_ms": now - 400 * DAY,
        },
    )
    assert r.status_code == 201, r.text
    return Maint(firm, techs[0], techs[1], r.json()["id"])


def _open(client: TestClient, world: World, m: Maint, **kw: Any) -> dict[str, Any]:
    body = {
        "contract_id": m.contract,
        "kind": "monthly_check",
        "crew": [
            {"technician_id": m.lead, "role": "lead"},
            {"technician_id": m.tech, "role": "tech"},
        ],
        "started_ms": now_ms() - 60_000,
        **kw,
    }
    r = client.post(P + "/visits", headers=world.auth("contractor"), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _test_alarm(sessions: sessionmaker[Session], seq0: int = 1) -> None:
    """A detector test in test mode, through the real ingest pipeline."""
    ing = Ingestor(sessions)
    ev = messages.Event(
        codes.FIRE_ALARM, 0, FIRE_SRC, state=codes.ACTIVE, code=1, eflags=codes.EF_TEST
    )
    b = batch(10, seq0, boot=1, t0=now_ms() - 1400, events=[ev])
    assert ing.accept(topics.topic(10, "ev"), wire.seal(b)) is None
    ing.flush()


def _item(client: TestClient, world: World, vid: int, **body: Any) -> Any:
    return client.post(P + f"/visits/{vid}/items", headers=world.auth("contractor"), json=body)


def _sign(client: TestClient, world: World, vid: int, lead: int) -> Any:
    return client.post(
        P + f"/visits/{vid}/sign",
        headers=world.auth("contractor"),
        json={"lead_technician_id": lead, "manager": {"name": "Wang Fang", "method": "on_screen"}},
    )


def test_check_window_evidence_signature_immutability_and_correction(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    h = world.auth("contractor")
    v = _open(client, world, m)
    vid = v["id"]
    assert (v["status"], v["revision"], v["root_id"], v["firm_id"]) == ("open", 1, vid, m.firm)
    _test_alarm(sessions)
    r = _item(client, world, vid, code="FA-M-DET", gateway_id=10, src=FIRE_SRC, result="pass")
    assert r.status_code == 201, r.text
    assert (
        _item(
            client, world, vid, code="EF-M-BTN", gateway_id=10, src=OTHER_SRC, result="pass"
        ).status_code
        == 201
    )
    assert _item(client, world, vid, code="FA-M-BAT", result="pass").status_code == 201
    r = _item(client, world, vid, code="EF-M-RCD", result="pass")
    assert (r.status_code, r.json()) == (
        422,
        {"detail": "Requirement 'EF-M-RCD' needs a measured value"},
    )
    r = _item(client, world, vid, code="EF-M-RCD", result="fail", measured=35.0)
    assert r.status_code == 201
    r = _item(client, world, vid, code="SP-M-PUMP", result="pass")
    assert (r.status_code, r.json()) == (
        422,
        {"detail": "Requirement 'SP-M-PUMP' is outside the contract's systems"},
    )
    r = _item(client, world, vid, code="FA-M-DET", gateway_id=20, result="pass")
    assert (r.status_code, r.json()) == (422, {"detail": "Gateway 20 is not at this unit"})

    v = client.get(P + f"/visits/{vid}", headers=h).json()
    items = {i["code"]: i for i in v["items"]}
    det = items["FA-M-DET"]
    assert det["flag"] is None and len(det["evidence"]) == 1
    e = det["evidence"][0]
    assert e["test"] is True and e["kind"] == codes.FIRE_ALARM and e["src"] == FIRE_SRC
    assert e["latency_ms"] == e["received_ms"] - e["t_ms"] and e["latency_ms"] >= 1400
    assert e["text"].startswith("point 1-3-7: test fire alarm ")
    assert "s later" in e["text"]
    assert items["EF-M-BTN"]["flag"] == NO_EVIDENCE and items["EF-M-BTN"]["evidence"] == []
    assert items["FA-M-BAT"]["flag"] is None  # visual: no evidence needed
    assert items["EF-M-RCD"]["within_limits"] is False
    assert v["flagged"] == 1

    r = client.post(
        P + f"/visits/{vid}/defects",
        headers=h,
        json={"item_code": "EF-M-RCD", "severity": "critical", "description": "no alarm in 30 s"},
    )
    assert r.status_code == 201
    defect = r.json()
    assert defect["due_ms"] - defect["found_ms"] == DAY
    r = client.post(
        P + f"/visits/{vid}/attachments?name=panel.jpg",
        headers={**h, "content-type": "image/jpeg"},
        content=b"\xff\xd8 photo",
    )
    assert r.status_code == 201 and len(r.json()["sha256"]) == 64

    r = _sign(client, world, vid, m.lead)
    assert (r.status_code, r.json()) == (409, {"detail": "Close the check window before signing"})
    assert client.post(P + f"/visits/{vid}/close", headers=h).status_code == 200
    r = _sign(client, world, vid, m.tech)
    assert (r.status_code, r.json()) == (422, {"detail": "The signer is not the visit's lead"})
    r = _sign(client, world, vid, m.lead)
    assert r.status_code == 200, r.text
    signed = r.json()
    assert signed["status"] == "signed" and len(signed["content_hash"]) == 64
    sig = signed["signatures"]
    assert sig["contractor_lead"]["name"] == "Li Wei"
    assert sig["unit_safety_manager"]["name"] == "Wang Fang"
    assert sig["contractor_lead"]["content_hash"] == signed["content_hash"]
    assert signed["retention_until_ms"] >= signed["ended_ms"] + 5 * 365 * DAY
    assert signed["flagged"] == 1  # the frozen evidence keeps the flag

    # Signed: every change is refused with the reason ...
    refused = {"detail": "Visit is signed; corrections are new revisions"}
    r = _item(client, world, vid, code="FA-M-CTRL", result="pass")
    assert (r.status_code, r.json()) == (409, refused)
    r = client.post(P + f"/visits/{vid}/close", headers=h)
    assert (r.status_code, r.json()) == (409, refused)
    r = client.delete(P + f"/visits/{vid}/items/{det['id']}", headers=h)
    assert (r.status_code, r.json()) == (409, refused)
    r = client.post(P + f"/visits/{vid}/attachments?name=x.txt", headers=h, content=b"late")
    assert (r.status_code, r.json()) == (409, refused)
    r = _sign(client, world, vid, m.lead)
    assert (r.status_code, r.json()) == (409, refused)
    # ... and the database itself refuses updates behind the API's back.
    with sessions() as s, pytest.raises(IntegrityError, match="immutable"):
        s.execute(
            update(models.MaintVisit).where(models.MaintVisit.id == vid).values(kind="patrol")
        )
    with sessions() as s, pytest.raises(IntegrityError, match="immutable"):
        s.execute(
            update(models.MaintVisitItem)
            .where(models.MaintVisitItem.visit_id == vid)
            .values(result="fail")
        )
    with sessions() as s, pytest.raises(IntegrityError, match="immutable"):
        s.execute(text("UPDATE maint_audit SET actor = 'someone else'"))
    # A later test alarm does not change the signed record.
    _test_alarm(sessions, seq0=2)
    again = client.get(P + f"/visits/{vid}", headers=h).json()
    assert again["items"] == signed["items"]

    # A correction is a new revision; the signed one stays as it was.
    r = client.post(P + f"/visits/{vid}/corrections", headers=h, json={"reason": "wrong point"})
    assert r.status_code == 201, r.text
    rev2 = r.json()
    assert (rev2["revision"], rev2["root_id"], rev2["supersedes_id"]) == (2, vid, vid)
    assert rev2["status"] == "closed" and len(rev2["items"]) == 4
    btn = next(i for i in rev2["items"] if i["code"] == "EF-M-BTN")
    r = client.delete(P + f"/visits/{rev2['id']}/items/{btn['id']}", headers=h)
    assert r.status_code == 200 and r.json()["flagged"] == 0
    r = client.post(P + f"/visits/{vid}/corrections", headers=h, json={"reason": "again"})
    assert (r.status_code, r.json()) == (409, {"detail": "Visit has a newer revision (2)"})
    assert _sign(client, world, rev2["id"], m.lead).status_code == 200
    assert (
        client.get(P + f"/visits/{vid}", headers=h).json()["content_hash"] == signed["content_hash"]
    )

    # The audit trail: every step, hash-chained, verifiable.
    r = client.get(P + "/audit", headers=world.auth("auditor"))
    assert r.status_code == 200 and r.json()["chain_ok"] is True
    actions = [(a["entity"], a["action"]) for a in r.json()["data"]]
    assert actions[-3:] == [("visit", "correct"), ("visit", "remove_item"), ("visit", "sign")]
    assert ("visit", "open") in actions and actions.count(("visit", "sign")) == 2

    # The schedule counts the signed visit; the month report shows the evidence.
    r = client.get(P + f"/units/{world.unit_a}/schedule", headers=h)
    rows = {row["code"]: row for row in r.json()["rows"]}
    assert rows["FA-M-DET"]["state"] == "done" and rows["FA-M-DET"]["last_done"] is not None
    assert rows["FA-M-CTRL"]["state"] in ("upcoming", "due", "grace", "overdue")
    assert "SP-M-PUMP" not in rows
    assert len(rows["FA-M-DET"]["ahead"]) == 3  # a 90-day horizon of monthly occurrences
    assert len(rows["FA-Y-ALL"]["ahead"]) == 1 and rows["FA-L-CLEAN"]["ahead"] == []
    month = r.json()["on"][:7]
    r = client.get(P + f"/reports/monthly?unit_id={world.unit_a}&month={month}", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("visit_id,revision,date,kind,firm,code")
    det_line = next(line for line in lines if ",FA-M-DET," in line)
    assert "test fire alarm" in det_line and f"{rev2['id']},2," in det_line
    r = client.get(
        P + f"/reports/monthly?unit_id={world.unit_a}&month={month}&format=pdf", headers=h
    )
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    pdf_text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    assert "Maintenance record" in pdf_text and "FA-M-DET" in pdf_text
    assert "Zhang 张" in pdf_text  # with the CJK font (test_reports_cjk.py: the fallback)
    r = client.get(
        P + f"/reports/annual?unit_id={world.unit_a}&year={month[:4]}&format=pdf", headers=h
    )
    assert r.status_code == 200
    pdf_text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    assert "Annual test report" in pdf_text and "FA-Y-ALL: NOT DONE" in pdf_text


def test_sign_off_by_an_expired_firm_is_refused(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world, cert_expires_ms=now_ms() + 120_000)
    v = _open(client, world, m)
    client.post(P + f"/visits/{v['id']}/close", headers=world.auth("contractor"))
    with sessions() as s, s.begin():
        s.execute(update(models.MaintFirm).values(cert_expires_ms=1_577_836_800_000))  # 2020-01-01
    r = _sign(client, world, v["id"], m.lead)
    assert (r.status_code, r.json()) == (
        409,
        {
            "detail": "Firm 'Anquan Fire Services' qualification certificate FS-2024-0042 expired "
            "on 2020-01-01"
        },
    )
    op = world.auth("operator")
    r = client.patch(
        P + f"/firms/{m.firm}",
        headers=op,
        json={"qualified": False, "cert_expires_ms": now_ms() + DAY},
    )
    assert r.status_code == 200 and r.json()["qualified"] is False
    r = client.patch(P + f"/firms/{m.firm}", headers=op, json={})
    assert (r.status_code, r.json()) == (422, {"detail": "Nothing to change"})
    r = client.patch(P + f"/firms/{m.firm}", headers=world.auth("contractor"), json={})
    assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
    r = _sign(client, world, v["id"], m.lead)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Firm 'Anquan Fire Services' is not qualified"},
    )
    assert client.patch(P + f"/firms/{m.firm}", headers=op, json={"qualified": True}).is_success
    with sessions() as s, s.begin():
        s.execute(update(models.MaintTechnician).values(cert_expires_ms=1_577_836_800_000))
    r = _sign(client, world, v["id"], m.lead)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Technician 'Li Wei' certificate OP-Li expired on 2020-01-01"},
    )
    with sessions() as s, s.begin():
        s.execute(update(models.MaintTechnician).values(cert_expires_ms=now_ms() + DAY))
    assert _sign(client, world, v["id"], m.lead).status_code == 200
    audit = client.get(P + "/audit?entity=firm", headers=op).json()["data"]
    assert [a["action"] for a in audit] == ["create", "member", "update", "update"]


def test_contractor_writes_only_its_firms_contracts_at_its_units(
    client: TestClient, world: World
) -> None:
    m = _setup(client, world)
    op, h = world.auth("operator"), world.auth("contractor")
    now = now_ms()
    other = client.post(
        P + "/firms",
        headers=op,
        json={"name": "Other Co", "cert_no": "X", "cert_expires_ms": now + DAY},
    ).json()["id"]
    body = {
        "starts_ms": now - DAY,
        "ends_ms": now + DAY,
        "systems": ["fire_alarm"],
        "in_service_ms": now - DAY,
    }
    c_other = client.post(
        P + "/contracts", headers=op, json={"firm_id": other, "unit_id": world.unit_a, **body}
    ).json()["id"]
    c_b = client.post(
        P + "/contracts", headers=op, json={"firm_id": m.firm, "unit_id": world.unit_b, **body}
    ).json()["id"]
    crew = [{"technician_id": m.lead, "role": "lead"}]
    for cid in (c_other, c_b, 999):
        r = client.post(
            P + "/visits", headers=h, json={"contract_id": cid, "kind": "patrol", "crew": crew}
        )
        assert (r.status_code, r.json()) == (404, {"detail": "Contract not found"})
    r = client.post(
        P + "/visits",
        headers=world.auth("admin"),
        json={"contract_id": c_other, "kind": "patrol", "crew": crew},
    )
    assert (r.status_code, r.json()) == (
        422,
        {"detail": f"Technician {m.lead} does not work for 'Other Co'"},
    )
    r = client.post(
        P + "/visits",
        headers=h,
        json={
            "contract_id": m.contract,
            "kind": "patrol",
            "crew": [{"technician_id": m.tech, "role": "tech"}],
        },
    )
    assert (r.status_code, r.json()) == (422, {"detail": "The crew needs a lead"})
    r = client.post(
        P + "/visits",
        headers=h,
        json={"contract_id": m.contract, "kind": "patrol", "crew": crew, "started_ms": 0},
    )
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Contract is not in force at the visit's start"},
    )
    r = client.post(
        P + "/visits",
        headers=h,
        json={
            "contract_id": m.contract,
            "kind": "patrol",
            "crew": crew,
            "started_ms": now + 120 * DAY,
        },
    )
    from emberlink.cloud.maintenance.service import local_date

    techs = client.get(P + f"/firms/{m.firm}/technicians", headers=h).json()
    expiry = local_date(techs[0]["cert_expires_ms"])
    assert (r.status_code, r.json()) == (
        409,
        {"detail": f"Technician 'Li Wei' certificate OP-Li expired on {expiry}"},
    )
    r = client.post(
        P + "/visits",
        headers=h,
        json={"contract_id": m.contract, "kind": "patrol", "crew": crew, "started_ms": 0},
    )
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Contract is not in force at the visit's start"},
    )
    assert [c["unit_id"] for c in client.get(P + "/contracts", headers=h).json()] == [
        world.unit_a,
        world.unit_a,
    ]
    r = client.get(P + f"/units/{world.unit_b}/schedule", headers=h)
    assert (r.status_code, r.json()) == (404, {"detail": "Unit not found"})
    overdue = client.get(P + "/reports/overdue", headers=h).json()
    assert {f["firm_id"] for f in overdue} <= {m.firm}


def test_defect_closure_needs_uploaded_evidence(client: TestClient, world: World) -> None:
    m = _setup(client, world)
    h = world.auth("contractor")
    v = _open(client, world, m)
    d = client.post(
        P + f"/visits/{v['id']}/defects",
        headers=h,
        json={"severity": "minor", "description": "sign faded"},
    ).json()
    assert d["due_ms"] - d["found_ms"] == 30 * DAY
    close = {"rectification": "replaced", "evidence_sha256": "a" * 64}
    r = client.post(P + f"/defects/{d['id']}/close", headers=h, json=close)
    assert (r.status_code, r.json()) == (422, {"detail": "Evidence attachment not uploaded"})
    sha = client.post(P + "/blobs", headers=h, content=b"after photo").json()["sha256"]
    r = client.post(
        P + f"/defects/{d['id']}/close", headers=h, json={**close, "evidence_sha256": sha}
    )
    assert r.status_code == 200 and r.json()["closed_by"] == "contractor"
    r = client.post(
        P + f"/defects/{d['id']}/close", headers=h, json={**close, "evidence_sha256": sha}
    )
    assert (r.status_code, r.json()) == (409, {"detail": "Defect already closed"})
    assert client.get(P + "/defects", headers=h).json() == []
    r = client.post(P + "/defects/999/close", headers=h, json=close)
    assert (r.status_code, r.json()) == (404, {"detail": "Defect not found"})


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/visits/999", "Visit not found"),
        ("/units/999/schedule", "Unit not found"),
        ("/catalogue?version=nope", "Catalogue version not found"),
        ("/firms/999/technicians", "Firm not found"),
    ],
)
def test_not_found(client: TestClient, world: World, path: str, detail: str) -> None:
    r = client.get(P + path, headers=world.auth("admin"))
    assert (r.status_code, r.json()) == (404, {"detail": detail})


@pytest.mark.parametrize(
    ("method", "path", "body", "detail"),
    [
        ("GET", "/units/1/schedule?on=2026-13-01", None, "Invalid date (YYYY-MM-DD)"),
        (
            "POST",
            "/contracts",
            {
                "firm_id": 1,
                "unit_id": 1,
                "starts_ms": 5,
                "ends_ms": 1,
                "systems": ["fire_alarm"],
                "in_service_ms": 0,
            },
            "Contract ends before it starts",
        ),
        (
            "POST",
            "/contracts",
            {
                "firm_id": 999,
                "unit_id": 1,
                "starts_ms": 1,
                "ends_ms": 5,
                "systems": ["fire_alarm"],
                "in_service_ms": 0,
            },
            "Firm does not exist",
        ),
        (
            "POST",
            "/contracts",
            {
                "firm_id": 1,
                "unit_id": 1,
                "starts_ms": 1,
                "ends_ms": 5,
                "systems": ["fire_alarm"],
                "in_service_ms": 0,
                "catalogue_version": "gb-1999",
            },
            "Unknown catalogue version 'gb-1999'",
        ),
    ],
)
def test_bad_input_is_422_with_the_reason(
    client: TestClient, world: World, method: str, path: str, body: Any, detail: str
) -> None:
    _setup(client, world)
    r = client.request(
        method,
        P + path.replace("/units/1", f"/units/{world.unit_a}"),
        headers=world.auth("admin"),
        json=body,
    )
    assert (r.status_code, r.json()) == (422, {"detail": detail})


def test_firm_twice_is_409(client: TestClient, world: World) -> None:
    _setup(client, world)
    r = client.post(
        P + "/firms",
        headers=world.auth("admin"),
        json={"name": "Anquan Fire Services", "cert_no": "Y", "cert_expires_ms": 1},
    )
    assert (r.status_code, r.json()) == (409, {"detail": "Firm already exists"})


def test_compliance_overview(client: TestClient, world: World) -> None:
    _setup(client, world)
    r = client.get(P + "/reports/compliance", headers=world.auth("operator"))
    assert r.status_code == 200
    [row] = r.json()
    assert row["unit_id"] == world.unit_a and row["last_signed_visit"] is None
    assert sum(row["states"].values()) == 15  # 12 fire alarm + 3 electrical fire requirements
    assert row["open_defects"] == 0


ALL = ROLES
MANAGE = ("admin", "operator")
WRITE = ("admin", "contractor")
OVERSEE = ("admin", "operator", "auditor")
ROUTES: list[tuple[str, str, Any, tuple[str, ...], int]] = [
    ("GET", "/catalogue", None, ALL, 200),
    ("GET", "/firms", None, ALL, 200),
    ("POST", "/firms", {"name": "New", "cert_no": "N", "cert_expires_ms": 1}, MANAGE, 201),
    (
        "POST",
        "/firms/{firm}/technicians",
        {"name": "T", "cert_no": "T", "cert_expires_ms": 1},
        MANAGE,
        201,
    ),
    ("GET", "/firms/{firm}/technicians", None, ALL, 200),
    ("PATCH", "/firms/{firm}", {"qualified": True}, MANAGE, 200),
    ("GET", "/contracts", None, ALL, 200),
    ("GET", "/units/{unit_a}/schedule", None, ALL, 200),
    ("POST", "/visits", "visit", WRITE, 201),
    ("GET", "/visits", None, ALL, 200),
    ("GET", "/visits/{visit}", None, ALL, 200),
    ("POST", "/visits/{visit}/items", {"code": "FA-M-BAT", "result": "pass"}, WRITE, 201),
    ("POST", "/visits/{visit}/defects", {"severity": "minor", "description": "d"}, WRITE, 201),
    ("POST", "/visits/{visit}/close", None, WRITE, 200),
    ("GET", "/defects", None, ALL, 200),
    ("GET", "/audit", None, OVERSEE, 200),
    ("GET", "/verify", None, OVERSEE, 200),
    ("DELETE", "/visits/{visit}", None, ("admin",), 409),  # unsigned: nothing expires
    ("GET", "/expired?before=2026-01-01", None, ("admin",), 200),
    ("GET", "/reports/monthly?unit_id={unit_a}&month=2026-01", None, ALL, 200),
    ("GET", "/reports/annual?unit_id={unit_a}&year=2026", None, ALL, 200),
    ("GET", "/reports/overdue", None, ("admin", "operator", "contractor", "auditor"), 200),
    ("GET", "/reports/compliance", None, OVERSEE, 200),
    # Routes that need a record in a given state first (prepared per role in the test below):
    ("POST", "/firms/{firm}/users", "member", MANAGE, 201),
    ("POST", "/contracts", "contract", MANAGE, 201),
    ("DELETE", "/visits/{visit}/items/{item}", None, WRITE, 200),
    ("POST", "/defects/{defect}/close", "close_defect", WRITE, 200),
    ("POST", "/visits/{visit}/attachments?name=a.txt", b"scan", WRITE, 201),
    ("POST", "/blobs", b"evidence", WRITE, 201),
    ("POST", "/visits/{visit}/sign", "sign", WRITE, 200),
    ("POST", "/visits/{visit}/corrections", "correct", WRITE, 201),
]


def _prepare(
    client: TestClient, world: World, m: Maint, role: str, path: str, body: Any, visit: int
) -> tuple[dict[str, int], Any]:
    """The ids a route's path needs and its body, made for this role's attempt: a fresh item,
    defect, contractor user, closed or signed visit (made as the contractor or admin)."""
    h, admin = world.auth("contractor"), world.auth("admin")
    ids = {"firm": m.firm, "unit_a": world.unit_a, "visit": visit}
    if "{item}" in path:
        items = _item(client, world, visit, code="FA-M-BAT", result="pass").json()["items"]
        ids["item"] = items[-1]["id"]
    if "{defect}" in path:
        d = {"severity": "minor", "description": "d"}
        ids["defect"] = client.post(P + f"/visits/{visit}/defects", headers=h, json=d).json()["id"]
    if body == "visit":
        body = {
            "contract_id": m.contract,
            "kind": "patrol",
            "crew": [{"technician_id": m.lead, "role": "lead"}],
        }
    elif isinstance(body, dict) and "cert_no" in body:
        body = {**body, "name": f"{body['name']} {role}"}
    elif body == "member":
        user = {"name": f"member {role}", "role": "contractor", "unit_ids": [world.unit_a]}
        r = client.post("/api/v1/users", headers=admin, json=user)
        assert r.status_code == 201, r.text
        body = {"user_id": r.json()["id"]}
    elif body == "contract":
        now = now_ms()
        body = {
            "firm_id": m.firm,
            "unit_id": world.unit_b,
            "starts_ms": now,
            "ends_ms": now + 300 * DAY,
            "systems": ["fire_alarm"],
            "in_service_ms": now - DAY,
        }
    elif body == "close_defect":
        sha = client.post(P + "/blobs", headers=h, content=f"fixed {role}".encode()).json()
        body = {"rectification": "replaced", "evidence_sha256": sha["sha256"]}
    elif body in ("sign", "correct"):
        assert client.post(P + f"/visits/{visit}/close", headers=h).status_code == 200
        sign = {"lead_technician_id": m.lead, "manager": {"name": "M", "method": "pin"}}
        if body == "correct":
            assert _sign(client, world, visit, m.lead).status_code == 200
        body = sign if body == "sign" else {"reason": "typo"}
    return ids, body


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "ok"), ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES]
)
def test_every_role_against_route(
    client: TestClient,
    world: World,
    method: str,
    path: str,
    body: Any,
    allowed: tuple[str, ...],
    ok: int,
) -> None:
    m = _setup(client, world)
    for role in ROLES:
        visit = _open(client, world, m)["id"]  # a fresh one: closing twice would be a 409
        ids, b = _prepare(client, world, m, role, path, body, visit)
        url = P + path.format(**ids)
        kw: dict[str, Any] = {"content": b} if isinstance(b, bytes) else {"json": b}
        r = client.request(method, url, headers=world.auth(role), **kw)
        if role in allowed:
            assert r.status_code == ok, (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert r.json() == {"detail": "Not enough permissions"}


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, *_ in ROUTES])
def test_route_without_token_is_401(client: TestClient, method: str, path: str) -> None:
    url = P + path.format(firm=1, unit_a=1, visit=1, item=1, defect=1)
    r = client.request(method, url)
    assert (r.status_code, r.json()) == (401, {"detail": "Not authenticated"})


def test_test_mode_before_the_visit_widens_the_window_and_faults_are_listed(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    """The contractor switched the gateway to test mode and tested a detector before opening
    the visit; the test alarm still attaches to the visit. A fault since the last visit is
    listed on it."""
    m = _setup(client, world)
    now = now_ms()
    ing = Ingestor(sessions)
    events = [
        messages.Event(codes.FAULT, 0, OTHER_SRC, state=codes.ACTIVE, code=2),
        messages.Event(codes.TEST_MODE, 3_000_000, 0, state=codes.ACTIVE),  # 50 min later
        messages.Event(
            codes.FIRE_ALARM, 3_300_000, FIRE_SRC, state=codes.ACTIVE, code=1, eflags=codes.EF_TEST
        ),
    ]
    b = batch(10, 1, boot=1, t0=now - 3_600_000, events=events)  # an hour ago
    assert ing.accept(topics.topic(10, "ev"), wire.seal(b)) is None
    ing.flush()
    v = _open(client, world, m, started_ms=now - 60_000)
    vid = v["id"]
    r = _item(client, world, vid, code="FA-M-DET", gateway_id=10, src=FIRE_SRC, result="pass")
    det = next(i for i in r.json()["items"] if i["code"] == "FA-M-DET")
    assert det["flag"] is None and det["evidence"][0]["t_ms"] == now - 300_000
    assert r.json()["evidence_window"][0] == now - 600_000  # test mode on
    [issue] = r.json()["device_issues"]
    assert issue["what"] == "fault" and issue["text"] == "fault at point 1-4-2 of gateway 10"
    # Test mode switched off: the period is closed, the window still reaches back to it.
    ing2 = Ingestor(sessions)
    off = messages.Event(codes.TEST_MODE, 0, 0, state=codes.NORMAL)
    b = batch(10, 4, boot=1, t0=now - 1_000, events=[off])
    assert ing2.accept(topics.topic(10, "ev"), wire.seal(b)) is None
    ing2.flush()
    r = client.get(P + f"/visits/{vid}", headers=world.auth("contractor"))
    assert r.json()["evidence_window"][0] == now - 600_000


def test_concurrent_audit_appends_chain_in_order(
    db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Two transactions appending at once: the second waits for the first and links to it."""
    import threading

    from emberlink.cloud.maintenance import service

    first = sessions()
    a = service.audit(session=first, actor="a", action="x", entity="e", entity_id=1, detail={})
    done: list[str] = []

    def second() -> None:
        with sessions() as s2, s2.begin():
            b = service.audit(session=s2, actor="b", action="x", entity="e", entity_id=2, detail={})
            done.append(b.prev_hash)

    t = threading.Thread(target=second)
    t.start()
    t.join(0.5)  # SQLite: BEGIN IMMEDIATE waits; PostgreSQL: the advisory lock waits
    assert done == []
    first.commit()
    first.close()
    t.join(30)
    assert done == [a.hash]
    with sessions() as s:
        rows = list(s.scalars(select(models.MaintAudit).order_by(models.MaintAudit.id)))
    assert service.verify_chain(rows) and len(rows) == 2


def test_annual_report_lists_points_no_visit_proved(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    admin = world.auth("admin")
    dev = client.post(
        P[:-6] + "/devices", headers=admin, json={"gateway_id": 10, "bus": 1, "unit_addr": 3}
    ).json()["id"]
    for point, name in ((7, "detector lobby"), (8, "detector stair")):
        r = client.post(
            P[:-6] + "/points", headers=admin, json={"device_id": dev, "point": point, "name": name}
        )
        assert r.status_code == 201
    v = _open(client, world, m, kind="annual_test")
    _test_alarm(sessions)
    r = _item(client, world, v["id"], code="FA-Y-ALL", result="pass")
    assert r.json()["items"][0]["evidence"][0]["text"].startswith("detector lobby: test fire")
    client.post(P + f"/visits/{v['id']}/close", headers=world.auth("contractor"))
    assert _sign(client, world, v["id"], m.lead).status_code == 200
    year = client.get(P + f"/units/{world.unit_a}/schedule", headers=admin).json()["on"][:4]
    r = client.get(P + f"/reports/annual?unit_id={world.unit_a}&year={year}", headers=admin)
    sections = r.text.split("\n\n")
    assert 'FA-Y-ALL,"Annual test of every detector' in sections[1]
    assert sections[2].splitlines() == ["gateway_id,point,name", "10,1-3-8,detector stair"]
    r = client.get(
        P + f"/reports/annual?unit_id={world.unit_a}&year={year}&format=pdf", headers=admin
    )
    pdf_text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    assert "Points with no test event this year (1): 10/1-3-8 detector stair" in pdf_text


def test_a_gateway_offline_since_the_last_visit_is_listed_on_the_visit(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    """Gateway 10 goes silent twice (the health sweep marks it offline): 6 days ago, before
    the previous visit, and yesterday. Only yesterday's is listed on today's visit."""
    from emberlink.cloud.health import HealthPolicy
    from emberlink.cloud.ingest.store import run_sweep

    from ..utils import heartbeat

    m = _setup(client, world)
    h = world.auth("contractor")
    now = now_ms()
    policy = HealthPolicy(min_dwell_ms=0)
    offline_at = []
    for seq, t in ((1, now - 6 * DAY), (2, now - DAY)):
        ing = Ingestor(sessions, policy=policy, clock=lambda t=t: t)  # type: ignore[misc]
        b = batch(10, seq, t0=t, events=[heartbeat()])
        assert ing.accept(topics.topic(10, "ev"), wire.seal(b)) is None
        ing.flush()
        with sessions() as s, s.begin():
            assert run_sweep(session=s, now_ms=t + 3_600_000, policy=policy) >= 1
        offline_at.append(t + 3_600_000)
    first = _open(client, world, m, started_ms=now - 5 * DAY)["id"]
    client.post(P + f"/visits/{first}/close", headers=h)
    assert _sign(client, world, first, m.lead).status_code == 200
    v = _open(client, world, m)
    offline = [i for i in v["device_issues"] if i["what"] == "offline"]
    assert [(i["gateway_id"], i["at_ms"]) for i in offline] == [(10, offline_at[1])]
    assert offline[0]["text"].startswith("gateway of gateway 10 offline: no message for")
    client.post(P + f"/visits/{v['id']}/close", headers=h)
    signed = _sign(client, world, v["id"], m.lead).json()
    assert signed["device_issues"] == v["device_issues"]  # frozen into the signed record
