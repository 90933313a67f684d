"""A year of signed visits through the API at two units with two firms: the schedule the API
serves on each probed day is what the engine computes from those visits, and the firm that
lapses shows up overdue, then escalated, in the overdue list."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from emberlink.cloud.maintenance import catalogue
from emberlink.cloud.maintenance.schedule import status_on
from emberlink.cloud.maintenance.service import DAY_MS, day_start_ms, local_date
from fastapi.testclient import TestClient

from ..conftest import World

P = "/api/v1/maint"
DET = catalogue.BY_CODE["FA-M-DET"]


def _firm(client: TestClient, world: World, name: str, end: int) -> tuple[int, int]:
    op = world.auth("operator")
    firm = client.post(
        P + "/firms", headers=op, json={"name": name, "cert_no": name, "cert_expires_ms": end}
    ).json()["id"]
    tech = client.post(
        P + f"/firms/{firm}/technicians",
        headers=op,
        json={"name": f"lead of {name}", "cert_no": "T", "cert_expires_ms": end},
    ).json()["id"]
    return firm, tech


def _visit(client: TestClient, h: dict[str, str], contract: int, lead: int, day: date) -> None:
    body: dict[str, Any] = {
        "contract_id": contract,
        "kind": "monthly_check",
        "crew": [{"technician_id": lead, "role": "lead"}],
        "started_ms": day_start_ms(day) + 10 * 3_600_000,
    }
    vid = client.post(P + "/visits", headers=h, json=body).json()["id"]
    r = client.post(
        P + f"/visits/{vid}/items", headers=h, json={"code": "FA-M-BAT", "result": "pass"}
    )
    assert r.status_code == 201
    r = client.post(
        P + f"/visits/{vid}/items", headers=h, json={"code": "FA-M-DET", "result": "fail"}
    )
    assert r.status_code == 201
    assert client.post(P + f"/visits/{vid}/close", headers=h).status_code == 200
    sign = {"lead_technician_id": lead, "manager": {"name": "M", "method": "pin"}}
    assert client.post(P + f"/visits/{vid}/sign", headers=h, json=sign).status_code == 200


def test_a_year_of_visits_through_the_api(client: TestClient, world: World) -> None:
    admin = world.auth("admin")
    today = local_date(day_start_ms(date.today()) + DAY_MS // 2)
    start = date(today.year - 1, today.month, 1)
    end_ms = day_start_ms(today) + 400 * DAY_MS
    firm_a, lead_a = _firm(client, world, "Diligent", end_ms)
    firm_b, lead_b = _firm(client, world, "Lapsing", end_ms)
    contracts = {}
    for unit, firm in ((world.unit_a, firm_a), (world.unit_b, firm_b)):
        r = client.post(
            P + "/contracts",
            headers=admin,
            json={
                "firm_id": firm,
                "unit_id": unit,
                "starts_ms": day_start_ms(start),
                "ends_ms": end_ms,
                "systems": ["fire_alarm"],
                "in_service_ms": day_start_ms(start),
            },
        )
        contracts[unit] = r.json()["id"]
    # Firm A visits on the 10th of every month; firm B on the 28th for 5 months, then stops.
    months = [
        date(start.year + (start.month - 1 + k) // 12, (start.month - 1 + k) % 12 + 1, 1)
        for k in range(13)
    ]
    done_a = [m.replace(day=10) for m in months if m.replace(day=10) < today]
    done_b = [m.replace(day=28) for m in months[:5]]
    for d in done_a:
        _visit(client, admin, contracts[world.unit_a], lead_a, d)
    for d in done_b:
        _visit(client, admin, contracts[world.unit_b], lead_b, d)

    for unit, done in ((world.unit_a, done_a), (world.unit_b, done_b)):
        d = start
        while d < today:
            r = client.get(P + f"/units/{unit}/schedule?on={d.isoformat()}", headers=admin)
            rows = {row["code"]: row for row in r.json()["rows"]}
            for req in (DET, catalogue.BY_CODE["FA-M-BAT"]):
                want = status_on(req, start, [c for c in done if c <= d], d)
                assert rows[req.code]["state"] == want.state, (unit, req.code, d)
            d += timedelta(days=9)
    # Hand-checked: A is never late; B escalated months after its last visit.
    assert status_on(DET, start, done_a, today).state in ("upcoming", "due", "done")
    b_state = client.get(P + f"/units/{world.unit_b}/schedule", headers=admin).json()
    assert {r["code"]: r["state"] for r in b_state["rows"]}["FA-M-DET"] == "escalated"
    overdue = client.get(P + "/reports/overdue", headers=admin).json()
    late = {f["firm"]: {i["code"] for i in f["items"]} for f in overdue}
    assert late["Lapsing"] >= {"FA-M-DET", "FA-M-BAT"}
    # A never did the other checks (controller, linkage, ...) but never missed these two.
    assert "FA-M-CTRL" in late["Diligent"] and not late["Diligent"] & {"FA-M-DET", "FA-M-BAT"}
    compliance = {
        c["unit_id"]: c for c in client.get(P + "/reports/compliance", headers=admin).json()
    }
    assert compliance[world.unit_a]["last_signed_visit"] == done_a[-1].isoformat()
    assert compliance[world.unit_b]["compliant"] is False
