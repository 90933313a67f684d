"""Integrity and retention on both databases: changes made in the database behind the API's
back (even with its triggers out of the way) are caught by the verification; a record is kept
for its retention period and only purged after it; a revised catalogue leaves history alone."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from emberlink.cloud import models, schemas
from emberlink.cloud.ingest.pipeline import now_ms
from emberlink.cloud.maintenance import catalogue, service
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import World
from ..utils import FIRE_SRC
from .test_maint_api import DAY, Maint, P, _item, _open, _setup, _sign, _test_alarm

YEAR = 365 * DAY + DAY // 4
V, I = models.MaintVisit, models.MaintVisitItem  # noqa: E741


def _signed_visit(client: TestClient, world: World, m: Maint, **kw: Any) -> int:
    h = world.auth("contractor")
    vid = int(_open(client, world, m, **kw)["id"])
    for body in (
        {"code": "FA-M-DET", "gateway_id": 10, "src": FIRE_SRC, "result": "pass"},
        {"code": "FA-M-BAT", "result": "pass"},
        {"code": "EF-M-RCD", "result": "fail", "measured": 35.0},
    ):
        assert _item(client, world, vid, **body).status_code == 201
    defect = {"item_code": "EF-M-RCD", "severity": "critical", "description": "slow"}
    assert client.post(P + f"/visits/{vid}/defects", headers=h, json=defect).status_code == 201
    assert client.post(P + f"/visits/{vid}/close", headers=h).status_code == 200
    assert _sign(client, world, vid, m.lead).status_code == 200
    return vid


TRIGGERS = (
    "maint_items_signed_update",
    "maint_visits_signed",
    "maint_audit_append_only",
    # migration 0010: deletes
    "maint_visits_retained",
    "maint_visit_items_retained",
    "maint_attachments_retained",
    "maint_defects_retained",
    "maint_audit_no_delete",
)


def _bypass_triggers(s: Session) -> None:
    """What someone with database rights could do: disable the immutability triggers for this
    transaction (rolled back with it)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL session_replication_role = replica"))
    else:
        for name in TRIGGERS:
            s.execute(text(f"DROP TRIGGER {name}"))


def backdate(sessions: sessionmaker[Session], visit_ids: list[int], by_ms: int) -> None:
    """Test setup for "the retention period has passed": move the retention dates of signed
    visits ``by_ms`` into the past, committed, with the triggers back in place afterwards."""
    trigger = "maint_visits_signed"
    with sessions() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            _bypass_triggers(s)  # SET LOCAL: this transaction only
            saved = None
        else:
            q = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :n"
            saved = s.execute(text(q), {"n": trigger}).scalar_one()
            s.execute(text(f"DROP TRIGGER {trigger}"))
        s.execute(
            update(V)
            .where(V.id.in_(visit_ids))
            .values(retention_until_ms=V.retention_until_ms - by_ms)
        )
        if saved is not None:
            s.execute(text(saved))


def _tampered(s: Session) -> dict[int, str]:
    return {t["visit_id"]: t["reason"] for t in service.verify_records(session=s)["tampered"]}


def test_changes_behind_the_apis_back_are_caught(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    h = world.auth("contractor")
    _test_alarm(sessions)
    vid = _signed_visit(client, world, m)
    r = client.post(P + f"/visits/{vid}/corrections", headers=h, json={"reason": "typo"})
    rev2 = r.json()["id"]
    assert _sign(client, world, rev2, m.lead).status_code == 200
    open_vid = _open(client, world, m)["id"]  # unsigned: nothing to verify against
    # Closing the defect later is not a change of the signed record.
    sha = client.post(P + "/blobs", headers=h, content=b"repaired").json()["sha256"]
    [d] = client.get(P + "/defects", headers=h).json()
    close = {"rectification": "replaced", "evidence_sha256": sha}
    assert client.post(P + f"/defects/{d['id']}/close", headers=h, json=close).status_code == 200
    r = client.get(P + "/verify", headers=world.auth("auditor"))
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "chain_ok": True,
        "visits_checked": 3,
        "tampered": [],
        "missing": [],
    }
    assert open_vid not in (vid, rev2)

    # The service layer itself refuses every write to a signed visit.
    with sessions() as s:
        v = s.get(V, vid)
        assert v is not None
        item = s.scalars(select(I).where(I.visit_id == vid)).first()
        assert item is not None
        sign = schemas.VisitSign(
            lead_technician_id=m.lead, manager=schemas.ManagerSignature(name="X", method="pin")
        )
        writes: list[tuple[Any, dict[str, Any]]] = [
            (service.add_item, {"item_in": schemas.ItemCreate(code="FA-M-BAT", result="fail")}),
            (service.remove_item, {"item": item}),
            (
                service.add_defect,
                {"defect_in": schemas.DefectCreate(severity="minor", description="d")},
            ),
            (service.add_attachment, {"name": "x", "media_type": "text/plain", "data": b"x"}),
            (service.close_visit, {}),
            (service.sign_visit, {"sign_in": sign}),
        ]
        for fn, kw in writes:
            with pytest.raises(service.Refused, match=r"^Visit is signed; corrections are new"):
                fn(session=s, visit=v, actor="admin", **kw)
        s.rollback()
    # Deleting an item of a signed visit: the database refuses (migration 0010); with its
    # triggers out of the way, the verification catches it.
    with sessions() as s, pytest.raises(IntegrityError, match="item of a signed visit within"):
        s.execute(delete(I).where(I.visit_id == vid, I.code == "EF-M-RCD"))
    with sessions() as s:
        _bypass_triggers(s)
        s.execute(delete(I).where(I.visit_id == vid, I.code == "EF-M-RCD"))
        assert _tampered(s) == {vid: "content no longer matches its signed hash"}
        s.rollback()
    # Updates with the triggers disabled: an item's result, the visit's kind, its retention,
    # its signatures, an audit entry.
    cases: list[tuple[Any, str]] = [
        (
            update(I).where(I.visit_id == vid, I.code == "EF-M-RCD").values(result="pass"),
            "content no longer matches its signed hash",
        ),
        (update(V).where(V.id == vid).values(kind="repair"), "content no longer matches"),
        (
            update(V).where(V.id == vid).values(retention_until_ms=V.ended_ms + DAY),
            "retention date earlier than the retention rule",
        ),
        (
            update(V).where(V.id == vid).values(signatures={"contractor_lead": {}}),
            "signatures differ from the ones signed",
        ),
        (update(V).where(V.id == vid).values(status="closed"), "unsigned in the record"),
    ]
    for stmt, reason in cases:
        with sessions() as s:
            _bypass_triggers(s)
            s.execute(stmt)
            got = _tampered(s)
            assert list(got) == [vid] and reason in got[vid], (stmt, got)
            s.rollback()
    with sessions() as s:
        _bypass_triggers(s)
        s.execute(text("UPDATE maint_audit SET actor = 'someone else' WHERE action = 'open'"))
        assert service.verify_records(session=s)["chain_ok"] is False
        s.rollback()
    # A signed revision deleted outright (items first) is missing.
    with sessions() as s:
        _bypass_triggers(s)
        s.execute(delete(I).where(I.visit_id == rev2))
        s.execute(delete(models.MaintAttachment).where(models.MaintAttachment.visit_id == rev2))
        s.execute(delete(V).where(V.id == rev2))
        result = service.verify_records(session=s)
        assert (result["ok"], result["missing"], result["tampered"]) == (False, [rev2], [])
        s.rollback()
    # The rollbacks left the triggers in place.
    with sessions() as s, pytest.raises(Exception, match="immutable"):
        s.execute(update(V).where(V.id == vid).values(kind="patrol"))

    # A committed change (the delete guard switched off around it) shows through the API.
    with sessions() as s, s.begin():
        s.execute(update(models.MaintGuard).values(enforce=0))
        s.execute(delete(I).where(I.visit_id == vid, I.code == "FA-M-BAT"))
        s.execute(update(models.MaintGuard).values(enforce=1))
    r = client.get(P + "/verify", headers=world.auth("operator")).json()
    assert r["ok"] is False and r["chain_ok"] is True
    assert r["tampered"] == [
        {"visit_id": vid, "reason": "content no longer matches its signed hash"}
    ]


def test_records_are_kept_for_their_retention_period(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world, cert_expires_ms=now_ms() + 10 * YEAR)
    admin, h = world.auth("admin"), world.auth("contractor")
    monthly = _signed_visit(client, world, m)
    patrol = _open(client, world, m, kind="patrol")["id"]
    assert _item(client, world, patrol, code="FA-M-BAT", result="pass").status_code == 201
    client.post(P + f"/visits/{patrol}/close", headers=h)
    assert _sign(client, world, patrol, m.lead).status_code == 200
    draft = _open(client, world, m)["id"]
    kept = client.get(P + f"/visits/{monthly}", headers=admin).json()["retention_until_ms"]

    r = client.delete(P + f"/visits/{monthly}", headers=admin)
    until = service.local_date(kept)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": f"Record is retained until {until} (5 years after the visit)"},
    )
    assert until.year - service.local_date(now_ms()).year == 5
    for role in ("operator", "contractor", "auditor", "installer"):
        r = client.delete(P + f"/visits/{monthly}", headers=world.auth(role))
        assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
    r = client.delete(P + f"/visits/{draft}", headers=admin)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Revision 1 is not signed; only signed records expire"},
    )

    # Time passes: the records' retention dates move into the past (the database triggers
    # judge by the database's clock, so the API's clock is not faked).
    backdate(sessions, [monthly, patrol], 2 * YEAR)
    r = client.delete(P + f"/visits/{patrol}", headers=admin)  # a patrol: 1 year
    assert (r.status_code, r.json()) == (200, {"detail": f"Purged 1 revision(s) of visit {patrol}"})
    assert client.delete(P + f"/visits/{monthly}", headers=admin).status_code == 409
    # A correction started on the record holds it until it is signed.
    rev2 = client.post(P + f"/visits/{monthly}/corrections", headers=h, json={"reason": "x"})
    rev2_id = rev2.json()["id"]
    backdate(sessions, [monthly], 3 * YEAR + 2 * DAY)
    r = client.delete(P + f"/visits/{monthly}", headers=admin)
    assert (r.status_code, r.json()) == (
        409,
        {"detail": "Revision 2 is not signed; only signed records expire"},
    )
    assert _sign(client, world, rev2_id, m.lead).status_code == 200
    backdate(sessions, [rev2_id], 5 * YEAR - DAY)
    assert client.delete(P + f"/visits/{rev2_id}", headers=admin).status_code == 409
    backdate(sessions, [rev2_id], 2 * DAY)
    r = client.delete(P + f"/visits/{rev2_id}", headers=admin)
    assert (r.status_code, r.json()) == (
        200,
        {"detail": f"Purged 2 revision(s) of visit {monthly}"},
    )
    for gone in (monthly, rev2_id, patrol):
        assert client.get(P + f"/visits/{gone}", headers=admin).status_code == 404
    with sessions() as s:
        assert s.scalars(select(I).where(I.visit_id.in_([monthly, rev2_id, patrol]))).all() == []
    # Purged after retention is not "missing"; the audit trail keeps what was deleted.
    v = client.get(P + "/verify", headers=admin).json()
    assert (v["ok"], v["missing"], v["visits_checked"]) == (True, [], 1)
    audit = client.get(P + "/audit?entity=visit", headers=admin).json()["data"]
    purges = [a for a in audit if a["action"] == "purge"]
    assert [a["entity_id"] for a in purges] == [patrol, rev2_id, monthly]
    assert all(len(a["detail"]["content_hash"]) == 64 for a in purges)


def test_a_revised_catalogue_does_not_rewrite_history(
    client: TestClient, world: World, monkeypatch: Any
) -> None:
    """A revised standard is a new catalogue version: a tighter limit and a new requirement
    apply to contracts made under it, while visits under the old version keep their meaning."""
    old = catalogue.CATALOGUE_VERSION
    rcd = catalogue.BY_CODE["EF-M-RCD"]
    tighter = dataclasses.replace(rcd, limit_max=20.0, title="RCD injection: alarm within 20 s")
    added = catalogue.Requirement(
        "EF-M-NEW", "electrical_fire", "A check the revision added", "visual", 1
    )
    revised = (*(tighter if r is rcd else r for r in catalogue.SEED), added)
    m = _setup(client, world)
    admin = world.auth("admin")

    def rcd_visit(contract: int, measured: float) -> dict[str, Any]:
        body = {
            "contract_id": contract,
            "kind": "monthly_check",
            "crew": [{"technician_id": m.lead, "role": "lead"}],
            "started_ms": now_ms() - 60_000,
        }
        vid = client.post(P + "/visits", headers=admin, json=body).json()["id"]
        r = client.post(
            P + f"/visits/{vid}/items",
            headers=admin,
            json={"code": "EF-M-RCD", "result": "pass", "measured": measured},
        )
        assert r.status_code == 201, r.text
        client.post(P + f"/visits/{vid}/close", headers=admin)
        sign = {"lead_technician_id": m.lead, "manager": {"name": "M", "method": "pin"}}
        assert client.post(P + f"/visits/{vid}/sign", headers=admin, json=sign).is_success
        return client.get(P + f"/visits/{vid}", headers=admin).json()

    before = rcd_visit(m.contract, 25.0)
    assert before["items"][0]["within_limits"] is True
    monkeypatch.setitem(service.CATALOGUES, "gb25201-2026.1", revised)
    now = now_ms()
    r = client.post(
        P + "/contracts",
        headers=admin,
        json={
            "firm_id": m.firm,
            "unit_id": world.unit_b,
            "starts_ms": now - 10 * DAY,
            "ends_ms": now + 300 * DAY,
            "systems": ["electrical_fire"],
            "in_service_ms": now - DAY,
            "catalogue_version": "gb25201-2026.1",
        },
    )
    assert r.status_code == 201 and r.json()["catalogue_version"] == "gb25201-2026.1"
    after = rcd_visit(r.json()["id"], 25.0)
    # The first seeded version, still in force for a contract made under it: no 2-monthly
    # wiring inspection (added by gb25201-2010.2).
    r = client.post(
        P + "/contracts",
        headers=admin,
        json={
            "firm_id": m.firm,
            "unit_id": world.unit_b,
            "starts_ms": now - 10 * DAY,
            "ends_ms": now + 300 * DAY,
            "systems": ["fire_alarm"],
            "in_service_ms": now - DAY,
            "catalogue_version": "gb25201-2010.1",
        },
    )
    assert r.status_code == 201, r.text
    assert after["items"][0]["within_limits"] is False  # 25 s fails the revised 20 s limit
    # The old visit, its schedule and its catalogue version are as they were.
    again = client.get(P + f"/visits/{before['id']}", headers=admin).json()
    assert again == before
    cat_old = client.get(P + f"/catalogue?version={old}", headers=admin).json()
    old_rcd = next(q for q in cat_old["requirements"] if q["code"] == "EF-M-RCD")
    assert (old_rcd["limit_max"], old_rcd["title"]) == (rcd.limit_max, rcd.title)
    codes_a = {
        row["code"]
        for row in client.get(P + f"/units/{world.unit_a}/schedule", headers=admin).json()["rows"]
    }
    codes_b = {
        row["code"]
        for row in client.get(P + f"/units/{world.unit_b}/schedule", headers=admin).json()["rows"]
    }
    assert "EF-M-NEW" in codes_b and "EF-M-NEW" not in codes_a
    assert "FA-B-WIRE" in codes_a and "FA-B-WIRE" not in codes_b and "FA-M-DET" in codes_b
    v1 = client.get(P + "/catalogue?version=gb25201-2010.1", headers=admin).json()
    assert "FA-B-WIRE" not in {q["code"] for q in v1["requirements"]}
    assert client.get(P + "/catalogue", headers=admin).json()["version"] == old == "gb25201-2010.2"
    assert client.get(P + "/verify", headers=admin).json()["ok"] is True
