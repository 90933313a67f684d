"""Every role against every route: who may do what, and a contractor's scope."""

from __future__ import annotations

from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.protocol import wire
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import ROLES, World
from .utils import batch, populate

P = "/api/v1"
ALL = ROLES
EDIT = ("admin", "installer")
ACT = ("admin", "operator", "contractor")

# (method, path, json body, roles allowed, status when allowed)
ROUTES: list[tuple[str, str, Any, tuple[str, ...], int]] = [
    ("GET", "/fleet", None, ALL, 200),
    ("GET", "/units", None, ALL, 200),
    ("POST", "/organisations", {"name": "New Org"}, EDIT, 201),
    ("POST", "/units", {"organisation_id": "{org}", "name": "C", "kind": "key_unit"}, EDIT, 201),
    ("POST", "/sites", {"unit_id": "{unit_a}", "name": "annex", "kind": "building"}, EDIT, 201),
    ("POST", "/gateways", {"id": 99, "site_id": "{site_a}", "name": "gw99"}, EDIT, 201),
    ("GET", "/gateways", None, ALL, 200),
    ("GET", "/gateways/10", None, ALL, 200),
    ("GET", "/gateways/10/health/history", None, ALL, 200),
    ("GET", "/gateways/10/commands", None, ALL, 200),
    ("POST", "/devices", {"gateway_id": 10, "bus": 2, "unit_addr": 9}, EDIT, 201),
    ("GET", "/devices/{device}", None, ALL, 200),
    ("POST", "/points", {"device_id": "{device}", "point": 1, "name": "loop 1"}, EDIT, 201),
    ("GET", "/events", None, ALL, 200),
    ("GET", "/events/export.csv", None, ALL, 200),
    ("GET", "/alarms", None, ALL, 200),
    ("GET", "/alarms/{alarm}", None, ALL, 200),
    ("POST", "/alarms/{alarm}/ack", {}, ACT, 200),
    ("POST", "/alarms/{alarm}/clear", {}, ACT, 200),
    ("POST", "/alarms/{alarm}/comments", {"text": "on site"}, ACT, 201),
    ("GET", "/alarms/{alarm}/comments", None, ALL, 200),
    ("GET", "/users/me", None, ALL, 200),
    ("GET", "/users", None, ("admin",), 200),
    ("POST", "/users", {"name": "newbie", "role": "operator"}, ("admin",), 201),
    ("POST", "/users/{user}/tokens", {"name": "ci"}, ("admin",), 201),
    ("GET", "/quarantine", None, ("admin", "operator", "auditor"), 200),
    ("POST", "/ingest/10", b"cbor", ("admin",), 200),
]


def _ids(sessions: sessionmaker[Session], world: World) -> dict[str, int]:
    populate(sessions, 10)
    populate(sessions, 20)
    with sessions() as s:
        return {
            "org": s.scalars(select(models.Organisation.id)).one(),
            "unit_a": world.unit_a,
            "site_a": world.site_a,
            "device": s.scalars(
                select(models.Device.id).where(models.Device.gateway_id == 10)
            ).one(),
            "alarm": s.scalars(select(models.Alarm.id).where(models.Alarm.gateway_id == 10)).one(),
            "user": s.scalars(select(models.User.id).where(models.User.name == "auditor")).one(),
        }


def _fill(v: Any, ids: dict[str, int]) -> Any:
    if isinstance(v, str) and v.startswith("{") and v.endswith("}"):
        return ids[v[1:-1]]
    if isinstance(v, dict):
        return {k: _fill(x, ids) for k, x in v.items()}
    return v


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "ok"), ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES]
)
def test_role_against_route(
    client: TestClient,
    sessions: sessionmaker[Session],
    world: World,
    role: str,
    method: str,
    path: str,
    body: Any,
    allowed: tuple[str, ...],
    ok: int,
) -> None:
    ids = _ids(sessions, world)
    url = P + path.format(**ids)
    kw: dict[str, Any] = {}
    if isinstance(body, bytes):
        kw["content"] = wire.seal(batch(10, 50, 2))
    elif body is not None:
        kw["json"] = _fill(body, ids)
    r = client.request(method, url, headers=world.auth(role), **kw)
    if role in allowed:
        assert r.status_code == ok, r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": "Not enough permissions"}


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "ok"),
    [r for r in ROUTES if r[1] != "/ingest/10"],
    ids=[f"{m} {p}" for m, p, *_ in ROUTES if p != "/ingest/10"],
)
def test_route_without_token_is_401(
    client: TestClient, method: str, path: str, body: Any, allowed: tuple[str, ...], ok: int
) -> None:
    url = P + path.format(org=1, unit_a=1, site_a=1, device=1, alarm=1, user=1)
    r = client.request(method, url, json=body if isinstance(body, dict) else None)
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}


def test_unknown_token_is_401(client: TestClient, world: World) -> None:
    r = client.get(P + "/fleet", headers={"Authorization": "Bearer elk_nope"})
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid token"}


def test_contractor_sees_only_its_units(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    ids = _ids(sessions, world)
    h = world.auth("contractor")
    assert [g["id"] for g in client.get(P + "/gateways", headers=h).json()["data"]] == [10]
    assert [u["id"] for u in client.get(P + "/units", headers=h).json()["data"]] == [world.unit_a]
    assert {e["gateway_id"] for e in client.get(P + "/events", headers=h).json()["data"]} == {10}
    assert {a["gateway_id"] for a in client.get(P + "/alarms", headers=h).json()["data"]} == {10}
    assert client.get(P + "/fleet", headers=h).json()["gateways"] == 1
    csv_rows = client.get(P + "/events/export.csv", headers=h).text.strip().splitlines()[1:]
    assert {row.split(",")[1] for row in csv_rows} == {"10"}
    r = client.get(P + "/gateways/20", headers=h)
    assert (r.status_code, r.json()) == (404, {"detail": "Gateway not found"})
    with sessions() as s:
        alarm_b = s.scalars(select(models.Alarm.id).where(models.Alarm.gateway_id == 20)).one()
        dev_b = s.scalars(select(models.Device.id).where(models.Device.gateway_id == 20)).one()
    r = client.post(P + f"/alarms/{alarm_b}/ack", headers=h, json={})
    assert (r.status_code, r.json()) == (404, {"detail": "Alarm not found"})
    r = client.get(P + f"/devices/{dev_b}", headers=h)
    assert (r.status_code, r.json()) == (404, {"detail": "Device not found"})
    r = client.get(P + "/gateways/20/health/history", headers=h)
    assert (r.status_code, r.json()) == (404, {"detail": "Gateway not found"})
    # The operator sees both units.
    assert client.get(P + "/fleet", headers=world.auth("operator")).json()["gateways"] == 2
    assert ids["alarm"] != alarm_b
