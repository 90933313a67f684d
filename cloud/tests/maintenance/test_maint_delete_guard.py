"""The database itself refuses deleting signed maintenance records within their retention
period, and any audit row (migration 0010), on both databases; the sanctioned purge after the
retention period still works with the guard on; the guard can only be lifted inside a
transaction that says so (the tests' wipe)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from emberlink.cloud import models
from emberlink.cloud.maintenance import service
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import World
from .test_maint_api import P, _item, _open, _setup
from .test_maint_integrity import YEAR, _signed_visit, backdate

V, I = models.MaintVisit, models.MaintVisitItem  # noqa: E741
A, D, AU = models.MaintAttachment, models.MaintDefect, models.MaintAudit
RETAINED = "maintenance record is retained: "


def _count(s: Session, model: type[models.Base], visit: int) -> int:
    visit_id = model.__table__.c.visit_id  # type: ignore[attr-defined]
    return s.scalar(select(func.count()).select_from(model).where(visit_id == visit)) or 0


def test_the_database_refuses_deleting_retained_records(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    h = world.auth("contractor")
    vid = _signed_visit(client, world, m)
    with sessions() as s:
        assert _count(s, I, vid) == 3 and _count(s, D, vid) == 1
    r = client.post(P + f"/visits/{vid}/corrections", headers=h, json={"reason": "x"})
    rev2 = r.json()["id"]

    refused = [
        (f"DELETE FROM maint_visits WHERE id = {vid}", "signed visit within its retention"),
        (f"DELETE FROM maint_visit_items WHERE visit_id = {vid}", "item of a signed visit"),
        (f"DELETE FROM maint_defects WHERE visit_id = {vid}", "defect of a signed visit"),
        ("DELETE FROM maint_audit WHERE id = (SELECT MAX(id) FROM maint_audit)", "audit trail"),
        ("DELETE FROM maint_audit", "audit trail is append-only"),
    ]
    for sql, reason in refused:
        with sessions() as s, pytest.raises(IntegrityError, match=RETAINED + reason):
            s.execute(text(sql))
    with sessions() as s:
        assert _count(s, I, vid) == 3 and _count(s, D, vid) == 1 and s.get(V, vid) is not None
        pg = s.get_bind().dialect.name == "postgresql"
    # PostgreSQL's TRUNCATE skips row triggers: refused outright (SQLite has no TRUNCATE).
    for table in (
        (
            "maint_visits",
            "maint_visit_items",
            "maint_attachments",
            "maint_defects",
            "maint_audit",
            "maint_blobs",
        )
        if pg
        else ()
    ):
        with sessions() as s, pytest.raises(IntegrityError, match=RETAINED + "TRUNCATE of maint_"):
            s.execute(text(f"TRUNCATE {table} CASCADE"))

    # Not a blanket refusal: an unsigned revision's items may go (the API's own rule still
    # applies there).
    with sessions() as s:
        assert _count(s, I, rev2) == 3
        s.execute(delete(I).where(I.visit_id == rev2))
        assert _count(s, I, rev2) == 0
        s.rollback()
    # Lifting the guard is possible only inside a transaction that says so; a missing guard
    # row counts as on.
    with sessions() as s:
        s.execute(update(models.MaintGuard).values(enforce=0))
        s.execute(delete(I).where(I.visit_id == vid))
        assert _count(s, I, vid) == 0
        s.rollback()
    with sessions() as s:
        s.execute(delete(models.MaintGuard))
        with pytest.raises(IntegrityError, match=RETAINED + "item of a signed visit"):
            s.execute(delete(I).where(I.visit_id == vid))
        s.rollback()
    with sessions() as s:
        assert s.scalars(select(models.MaintGuard.enforce)).all() == [1]
        assert _count(s, I, vid) == 3


def test_attachment_rows_of_a_signed_visit_are_refused(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    h = world.auth("contractor")
    vid = _open(client, world, m, kind="patrol")["id"]
    assert _item(client, world, vid, code="FA-M-BAT", result="pass").status_code == 201
    r = client.post(P + f"/visits/{vid}/attachments?name=a.txt", headers=h, content=b"scan")
    assert r.status_code == 201
    assert client.post(P + f"/visits/{vid}/close", headers=h).status_code == 200
    sign = {"lead_technician_id": m.lead, "manager": {"name": "M", "method": "pin"}}
    assert client.post(P + f"/visits/{vid}/sign", headers=h, json=sign).status_code == 200
    with sessions() as s, pytest.raises(IntegrityError, match=RETAINED + "attachment of a"):
        s.execute(delete(A).where(A.visit_id == vid))
    # Once its retention date has passed the database lets the rows go.
    backdate(sessions, [vid], 2 * YEAR)
    with sessions() as s:
        s.execute(delete(A).where(A.visit_id == vid))
        s.execute(delete(I).where(I.visit_id == vid))
        s.execute(delete(V).where(V.id == vid))
        assert s.get(V, vid) is None
        s.rollback()


def test_the_purge_after_retention_passes_the_guard(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    admin = world.auth("admin")
    vid = _signed_visit(client, world, m)
    r = client.delete(P + f"/visits/{vid}", headers=admin)
    assert r.status_code == 409 and "retained until" in r.json()["detail"]
    backdate(sessions, [vid], 5 * YEAR + 2 * 86_400_000)
    r = client.delete(P + f"/visits/{vid}", headers=admin)
    assert (r.status_code, r.json()) == (200, {"detail": f"Purged 1 revision(s) of visit {vid}"})
    with sessions() as s:
        assert s.scalars(select(models.MaintGuard.enforce)).all() == [1]  # never switched off
        assert s.get(V, vid) is None and _count(s, I, vid) == 0 and _count(s, D, vid) == 0
        assert s.scalar(select(func.count()).select_from(AU).where(AU.action == "purge")) == 1


def test_expired_records_are_listed_for_purging(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    admin, h = world.auth("admin"), world.auth("contractor")
    monthly = _signed_visit(client, world, m)
    patrol = _open(client, world, m, kind="patrol")["id"]
    assert _item(client, world, patrol, code="FA-M-BAT", result="pass").status_code == 201
    assert client.post(P + f"/visits/{patrol}/close", headers=h).status_code == 200
    sign = {"lead_technician_id": m.lead, "manager": {"name": "M", "method": "pin"}}
    assert client.post(P + f"/visits/{patrol}/sign", headers=h, json=sign).status_code == 200
    _open(client, world, m)  # unsigned: never expires
    assert client.get(P + "/expired?before=2199-12-31", headers=admin).json() == []

    backdate(sessions, [patrol, monthly], 2 * YEAR)  # the patrol's year is over, not the check's
    with sessions() as s:
        until = s.get(V, patrol).retention_until_ms  # type: ignore[union-attr]
    day_after = service.local_date(until) + timedelta(days=1)
    r = client.get(P + f"/expired?before={day_after}", headers=admin)
    assert (r.status_code, r.json()) == (
        200,
        [
            {
                "visit_id": patrol,
                "revisions": 1,
                "kind": "patrol",
                "unit_id": world.unit_a,
                "retention_until_ms": until,
            }
        ],
    )
    r = client.get(P + f"/expired?before={service.local_date(until)}", headers=admin)
    assert r.json() == []  # retained until that very day: not before it
    r = client.get(P + "/expired?before=2026-13-01", headers=admin)
    assert (r.status_code, r.json()) == (422, {"detail": "Invalid date (YYYY-MM-DD)"})
    r = client.get(P + "/expired?before=2199-12-31", headers=world.auth("operator"))
    assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
    assert client.delete(P + f"/visits/{patrol}", headers=admin).status_code == 200
    assert client.get(P + "/expired?before=2199-12-31", headers=admin).json() == []
