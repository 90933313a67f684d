"""``emberlink maint`` against a real uvicorn serving the cloud API on a free port (SQLite)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest
import uvicorn
from emberlink.cloud import crud, schemas
from emberlink.cloud.core.config import Settings
from emberlink.cloud.core.db import make_engine, make_sessionmaker, upgrade
from emberlink.cloud.ingest.pipeline import Ingestor, now_ms
from emberlink.cloud.main import create_app
from emberlink.protocol import codes, messages, topics, wire
from emberlink.tools import cli, maint
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

DAY = 86_400_000
SRC = (1 << 24) | (3 << 16) | 12  # detector 1-3-12


@dataclass
class Site:
    url: str
    admin: str
    contractor: str
    unit: int
    contract: int
    lead: int
    sessions: object


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    url = "sqlite:///" + str(tmp_path / "cloud.db")
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as s, s.begin():
        org = crud.create_organisation(session=s, org_in=schemas.OrganisationCreate(name="Org"))
        unit = crud.create_unit(
            session=s,
            unit_in=schemas.UnitCreate(organisation_id=org.id, name="Mall 商场", kind="key_unit"),
        )
        site_ = crud.create_site(session=s, site_in=schemas.SiteCreate(unit_id=unit.id, name="A"))
        crud.create_gateway(
            session=s, gateway_in=schemas.GatewayCreate(id=7, site_id=site_.id, name="gw7")
        )
        tokens = {}
        for role in ("admin", "contractor"):
            user = crud.create_user(
                session=s,
                user_in=schemas.UserCreate(
                    name=role,
                    role=role,  # type: ignore[arg-type]
                    unit_ids=[unit.id] if role == "contractor" else [],
                ),
            )
            tokens[role] = (crud.create_token(session=s, user=user)[1], user.id)
        unit_id = unit.id
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings(database_url=url)), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    h = {"Authorization": f"Bearer {tokens['admin'][0]}"}
    with httpx.Client(base_url=base + "/api/v1/maint", headers=h) as c:
        now = now_ms()
        firm = c.post(
            "/firms", json={"name": "Firm", "cert_no": "C1", "cert_expires_ms": now + 400 * DAY}
        ).json()["id"]
        lead = c.post(
            f"/firms/{firm}/technicians",
            json={"name": "Chen", "cert_no": "T1", "cert_expires_ms": now + 400 * DAY},
        ).json()["id"]
        c.post(f"/firms/{firm}/users", json={"user_id": tokens["contractor"][1]})
        contract = c.post(
            "/contracts",
            json={
                "firm_id": firm,
                "unit_id": unit_id,
                "starts_ms": now - 5 * DAY,
                "ends_ms": now + 360 * DAY,
                "systems": ["fire_alarm"],
                "in_service_ms": now - 100 * DAY,
            },
        ).json()["id"]
    yield Site(base, tokens["admin"][0], tokens["contractor"][0], unit_id, contract, lead, sessions)
    server.should_exit = True
    thread.join(10)
    engine.dispose()


def _run(site: Site, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = maint.main(["--url", site.url, "--token", site.contractor, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_visit_in_the_field(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, _ = _run(
        site,
        capsys,
        "--json",
        "open",
        "--contract",
        str(site.contract),
        "--kind",
        "monthly_check",
        "--lead",
        str(site.lead),
    )
    assert rc == 0
    visit = json.loads(out)["id"]
    # The detector goes into test alarm at the panel; the gateway reports it.
    ing = Ingestor(site.sessions)  # type: ignore[arg-type]
    ev = messages.Event(codes.FIRE_ALARM, 0, SRC, state=codes.ACTIVE, code=1, eflags=codes.EF_TEST)
    b = messages.Batch(7, 1, 1, now_ms(), [ev])
    assert ing.accept(topics.topic(7, "ev"), wire.seal(b)) is None
    ing.flush()
    rc, out, _ = _run(
        site,
        capsys,
        "item",
        str(visit),
        "FA-M-DET",
        "--result",
        "pass",
        "--gateway",
        "7",
        "--src",
        "1-3-12",
    )
    assert rc == 0
    assert "point 1-3-12: test fire alarm" in out and "in the cloud" in out
    rc, out, _ = _run(site, capsys, "item", str(visit), "FA-M-CTRL", "--result", "pass")
    assert "REVIEW: passed with no matching event" in out and "1 item(s) flagged" in out
    rc, out, err = _run(site, capsys, "item", str(visit), "FA-Y-BATT", "--result", "pass")
    assert (rc, err) == (
        2,
        "emberlink maint: 422: Requirement 'FA-Y-BATT' needs a measured value\n",
    )
    photo = tmp_path / "panel.jpg"
    photo.write_bytes(b"\xff\xd8jpeg")
    rc, out, _ = _run(site, capsys, "attach", str(visit), str(photo))
    assert rc == 0 and "panel.jpg (6 bytes)" in out
    rc, out, err = _run(
        site, capsys, "sign", str(visit), "--lead", str(site.lead), "--manager", "Wang"
    )
    assert (rc, err) == (1, "emberlink maint: 409: Close the check window before signing\n")
    assert _run(site, capsys, "close", str(visit))[0] == 0
    rc, out, _ = _run(
        site, capsys, "sign", str(visit), "--lead", str(site.lead), "--manager", "Wang"
    )
    assert rc == 0 and "signed" in out and "content hash" in out
    rc, _, err = _run(site, capsys, "item", str(visit), "FA-M-BAT", "--result", "pass")
    assert (rc, err) == (
        1,
        "emberlink maint: 409: Visit is signed; corrections are new revisions\n",
    )
    rc, out, _ = _run(site, capsys, "--json", "correct", str(visit), "--reason", "typo")
    assert rc == 0 and json.loads(out)["revision"] == 2
    rc, out, _ = _run(site, capsys, "schedule", str(site.unit))
    assert rc == 0 and "FA-M-DET" in out and "done" in out
    month = datetime_month()
    pdf = tmp_path / "m.pdf"
    rc, _, err = _run(
        site, capsys, "report", str(site.unit), "--month", month, "--format", "pdf", "-o", str(pdf)
    )
    assert rc == 0 and pdf.read_bytes().startswith(b"%PDF")
    rc, out, _ = _run(site, capsys, "report", str(site.unit), "--year", month[:4])
    assert rc == 0 and out.startswith("visit_id,")
    rc, out, _ = _run(site, capsys, "overdue")
    assert rc == 0


def datetime_month() -> str:
    from emberlink.cloud.maintenance.service import local_date

    return local_date(now_ms()).isoformat()[:7]


def test_usage_and_connection_errors(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMBERLINK_TOKEN", raising=False)
    assert maint.main(["schedule", "1"]) == 2
    assert "no token" in capsys.readouterr().err
    rc, _, err = _run(site, capsys, "item", "1", "X", "--result", "maybe")
    assert rc == 2 and "invalid choice" in err
    rc, _, err = _run(site, capsys, "show", "999")
    assert (rc, err) == (1, "emberlink maint: 404: Visit not found\n")
    rc = maint.main(["--url", "http://127.0.0.1:1", "--token", "x", "show", "1"])
    assert rc == 1 and "cannot reach" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "maint" in capsys.readouterr().out


def _signed_patrol(site: Site) -> int:
    h = {"Authorization": f"Bearer {site.contractor}"}
    with httpx.Client(base_url=site.url + "/api/v1/maint", headers=h) as c:
        body = {
            "contract_id": site.contract,
            "kind": "patrol",
            "crew": [{"technician_id": site.lead, "role": "lead"}],
        }
        visit = int(c.post("/visits", json=body).json()["id"])
        assert c.post(f"/visits/{visit}/items", json={"code": "FA-M-BAT", "result": "pass"})
        assert c.post(f"/visits/{visit}/close").status_code == 200
        sign = {"lead_technician_id": site.lead, "manager": {"name": "W", "method": "pin"}}
        assert c.post(f"/visits/{visit}/sign", json=sign).status_code == 200
    return visit


def test_purge_the_records_whose_retention_is_over(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    old, recent = _signed_patrol(site), _signed_patrol(site)
    # Two years pass for the first one: its retention date (a year for a patrol) moves into the
    # past. The immutability trigger is out of the way only inside this transaction.
    sessions = cast("sessionmaker[Session]", site.sessions)
    with sessions() as s, s.begin():
        q = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'maint_visits_signed'"
        trigger = s.execute(text(q)).scalar_one()
        s.execute(text("DROP TRIGGER maint_visits_signed"))
        s.execute(
            text(
                "UPDATE maint_visits SET retention_until_ms = retention_until_ms - :d WHERE id = :v"
            ),
            {"d": 730 * DAY, "v": old},
        )
        s.execute(text(trigger))
        until = s.execute(
            text("SELECT retention_until_ms FROM maint_visits WHERE id = :v"), {"v": old}
        ).scalar_one()
    admin = ["--url", site.url, "--token", site.admin]

    rc, _, err = _run(site, capsys, "purge", "--before", "2199-12-31")
    assert (rc, err) == (1, "emberlink maint: 403: Not enough permissions\n")
    assert maint.main([*admin, "purge", "--before", "2026-02-30"]) == 2
    assert "not a date (YYYY-MM-DD): '2026-02-30'" in capsys.readouterr().err
    assert maint.main([*admin, "purge"]) == 2
    assert "--before" in capsys.readouterr().err

    assert maint.main([*admin, "--json", "purge", "--before", "2199-12-31"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "purged": [
            {
                "visit_id": old,
                "revisions": 1,
                "kind": "patrol",
                "unit_id": site.unit,
                "retention_until_ms": until,
            }
        ],
        "refused": [],
    }
    assert maint.main([*admin, "purge", "--before", "2199-12-31"]) == 0
    assert capsys.readouterr().out == (
        "nothing to purge (no record's retention ended before 2199-12-31)\n"
    )
    # Gone through the API (audited), the recent one kept.
    rc, _, err = _run(site, capsys, "show", str(old))
    assert (rc, err) == (1, "emberlink maint: 404: Visit not found\n")
    assert _run(site, capsys, "show", str(recent))[0] == 0
    h = {"Authorization": f"Bearer {site.admin}"}
    audit = httpx.get(site.url + "/api/v1/maint/audit?entity=visit", headers=h).json()["data"]
    assert [a["entity_id"] for a in audit if a["action"] == "purge"] == [old]
