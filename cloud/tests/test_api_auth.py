"""Every role against every route: who may do what, and a contractor's scope.

Systematic: ``test_every_route_has_a_role_rule`` enumerates every operation of the app (its
OpenAPI document; no route is excluded from it), so a route added without a row in a role table
(``ROUTES`` here, ``ROUTES`` of ``maintenance/test_maint_api.py``, with exact statuses) or in
``PUBLIC`` fails. Every row of ``ROUTES`` is tried with each role, without a token and, where a
contractor may use it on a gateway, alarm or device, on the other unit's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.cloud.provision import broker
from emberlink.protocol import wire
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import ROLES, World
from .maintenance.test_maint_api import ROUTES as MAINT_ROUTES
from .utils import batch, populate

P = "/api/v1"
ALL = ROLES
EDIT = ("admin", "installer")
ACT = ("admin", "operator", "contractor")
OVERSEE = ("admin", "operator", "auditor")
# Status when allowed; ANY_BUT_DENIED: the role passes (not 401/403, not 5xx), the exact answer is
# another test's business (the provisioning routes: test_claim.py).
ANY_BUT_DENIED = 0

# (method, path, json body, roles allowed, status when allowed). {gw}: gateway 10 of unit A
# ({gw} is gateway 20 of unit B in the contractor's scope test), {alarm} and {device}: gateway
# 10's (unit B's there).
ROUTES: list[tuple[str, str, Any, tuple[str, ...], int]] = [
    ("GET", "/fleet", None, ALL, 200),
    ("GET", "/units", None, ALL, 200),
    ("POST", "/organisations", {"name": "New Org"}, EDIT, 201),
    ("POST", "/units", {"organisation_id": "{org}", "name": "C", "kind": "key_unit"}, EDIT, 201),
    ("POST", "/sites", {"unit_id": "{unit_a}", "name": "annex", "kind": "building"}, EDIT, 201),
    ("POST", "/gateways", {"id": 99, "site_id": "{site_a}", "name": "gw99"}, EDIT, 201),
    ("GET", "/gateways", None, ALL, 200),
    ("GET", "/gateways/{gw}", None, ALL, 200),
    ("GET", "/gateways/{gw}/health/history", None, ALL, 200),
    ("GET", "/gateways/{gw}/commands", None, ALL, 200),
    ("POST", "/gateways/{gw}/commands", {"op": "rebirth"}, ACT, 201),
    ("POST", "/devices", {"gateway_id": 10, "bus": 2, "unit_addr": 9}, EDIT, 201),
    ("GET", "/devices/{device}", None, ALL, 200),
    ("POST", "/points", {"device_id": "{device}", "point": 1, "name": "loop 1"}, EDIT, 201),
    ("GET", "/events", None, ALL, 200),
    ("GET", "/events/export.csv", None, ALL, 200),
    ("GET", "/alarms", None, ALL, 200),
    ("GET", "/alarms/{alarm}", None, ALL, 200),
    ("POST", "/alarms/{alarm}/ack", {}, ACT, 200),
    ("POST", "/alarms/{alarm}/clear", {"force": True, "comment": "role test"}, ACT, 200),
    ("POST", "/alarms/{alarm}/comments", {"text": "on site"}, ACT, 201),
    ("GET", "/alarms/{alarm}/comments", None, ALL, 200),
    ("GET", "/users/me", None, ALL, 200),
    ("GET", "/users", None, ("admin",), 200),
    ("POST", "/users", {"name": "newbie", "role": "operator"}, ("admin",), 201),
    ("POST", "/users/{user}/tokens", {"name": "ci"}, ("admin",), 201),
    ("GET", "/quarantine", None, OVERSEE, 200),
    ("POST", "/ingest/{gw}", b"cbor", ("admin",), 200),
    (
        "POST",
        "/claims",
        {"site_id": "{site_a}", "gateway_id": 77, "serial": "S77"},
        EDIT,
        ANY_BUT_DENIED,
    ),
    ("POST", "/gateways/{gw}/credentials/rotate", None, EDIT, ANY_BUT_DENIED),
    ("POST", "/gateways/{gw}/credentials/revoke", None, EDIT, ANY_BUT_DENIED),
    ("POST", "/gateways/{gw}/decommission", None, ("admin",), ANY_BUT_DENIED),
    ("GET", "/provision/audit", None, OVERSEE, ANY_BUT_DENIED),
]

# Routes without a user role, authenticated by what a gateway holds: (method, path, why).
# The last element: a request with a made-up credential, which must be refused with 401.
PUBLIC: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "POST",
        "/claims/redeem",
        "the claim token is the credential (test_claim.py)",
        {"json": {"token": "elc_" + "x" * 43, "serial": "S1"}},
    ),
    (
        "POST",
        "/claims/confirm",
        "the gateway's rotated broker login, HTTP Basic (test_claim.py)",
        {"auth": ("gw-10", "not-the-password")},
    ),
]


class _AnyId(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "1"


def _concrete(prefix: str, path: str) -> str:
    return P + prefix + path.split("?")[0].format_map(_AnyId())


def _operations(app: FastAPI) -> list[tuple[str, re.Pattern[str], str]]:
    """Every (method, path regex, path) of the API, from its OpenAPI document (which lists
    every route: none is excluded from the schema)."""
    out = []
    for path, item in app.openapi()["paths"].items():
        regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        out += [(m.upper(), regex, path) for m in item]
    return out


def test_every_route_has_a_role_rule(app: FastAPI) -> None:
    """A route nobody wrote a role rule for fails here, and so does a rule without a route."""
    rules = [(m, _concrete("", p)) for m, p, *_ in ROUTES]
    rules += [(m, _concrete("/maint", p)) for m, p, *_ in MAINT_ROUTES]
    rules += [(m, _concrete("", p)) for m, p, *_ in PUBLIC]
    ops = _operations(app)
    assert len(ops) > 50
    missing = [
        f"{m} {path}"
        for m, regex, path in ops
        if not any(rm == m and regex.match(rp) for rm, rp in rules)
    ]
    assert not missing, "routes without a role rule (add them to a table):\n" + "\n".join(missing)
    stale = [
        f"{rm} {rp}" for rm, rp in rules if not any(m == rm and x.match(rp) for m, x, _ in ops)
    ]
    assert not stale, "role rules for routes that do not exist:\n" + "\n".join(stale)


def _ids(sessions: sessionmaker[Session], world: World, unit: str = "a") -> dict[str, int]:
    """Row ids for the path and body placeholders; ``unit`` "b": unit B's gateway, alarm and
    device (what a contractor of unit A must not reach)."""
    populate(sessions, 10)
    populate(sessions, 20)
    gw = 10 if unit == "a" else 20
    with sessions() as s:
        return {
            "org": s.scalars(select(models.Organisation.id)).one(),
            "unit_a": world.unit_a,
            "site_a": world.site_a,
            "gw": gw,
            "device": s.scalars(
                select(models.Device.id).where(models.Device.gateway_id == gw)
            ).one(),
            "alarm": s.scalars(select(models.Alarm.id).where(models.Alarm.gateway_id == gw)).one(),
            "user": s.scalars(select(models.User.id).where(models.User.name == "auditor")).one(),
        }


def _fill(v: Any, ids: dict[str, int]) -> Any:
    if isinstance(v, str) and v.startswith("{") and v.endswith("}"):
        return ids[v[1:-1]]
    if isinstance(v, dict):
        return {k: _fill(x, ids) for k, x in v.items()}
    return v


def _request(
    client: TestClient,
    method: str,
    path: str,
    body: Any,
    ids: dict[str, int],
    headers: dict[str, str],
) -> Any:
    kw: dict[str, Any] = {}
    if isinstance(body, bytes):
        kw["content"] = wire.seal(batch(ids["gw"], 50, 2))
    elif body is not None:
        kw["json"] = _fill(body, ids)
    return client.request(method, P + path.format(**ids), headers=headers, **kw)


@pytest.fixture
def api(request: pytest.FixtureRequest, app: FastAPI, client: TestClient, path: str) -> TestClient:
    """The client, with the broker the route needs: a private Mosquitto for commands, and no
    broker files for the provisioning routes (they are test_claim.py's)."""
    if path.endswith("/commands"):
        port = request.getfixturevalue("mosquitto")
        app.state.settings = app.state.settings.model_copy(update={"mqtt_port": port})
    app.state.broker_settings = broker.BrokerSettings(password_file=None, acl_file=None)
    return client


ROUTE_IDS = [f"{m} {p}" for m, p, *_ in ROUTES]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "body", "allowed", "ok"), ROUTES, ids=ROUTE_IDS)
def test_role_against_route(
    api: TestClient,
    sessions: sessionmaker[Session],
    world: World,
    role: str,
    method: str,
    path: str,
    body: Any,
    allowed: tuple[str, ...],
    ok: int,
) -> None:
    r = _request(api, method, path, body, _ids(sessions, world), world.auth(role))
    if role not in allowed:
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": "Not enough permissions"}
    elif ok == ANY_BUT_DENIED:
        assert r.status_code not in (401, 403) and r.status_code < 500, r.text
    else:
        assert r.status_code == ok, r.text


NO_TOKEN = [r for r in ROUTES if not isinstance(r[2], bytes)]  # ingest: a MAC also authenticates


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "ok"),
    NO_TOKEN,
    ids=[f"{m} {p}" for m, p, *_ in NO_TOKEN],
)
def test_route_without_token_is_401(
    client: TestClient, method: str, path: str, body: Any, allowed: tuple[str, ...], ok: int
) -> None:
    ids = dict.fromkeys(("org", "unit_a", "site_a", "gw", "device", "alarm", "user"), 1)
    r = _request(client, method, path, body, ids, {})
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}


SCOPED = [
    r
    for r in ROUTES
    if "contractor" in r[3] and any(k in r[1] for k in ("{gw}", "{alarm}", "{device}"))
]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "ok"), SCOPED, ids=[f"{m} {p}" for m, p, *_ in SCOPED]
)
def test_contractor_gets_404_for_the_other_unit(
    api: TestClient,
    sessions: sessionmaker[Session],
    world: World,
    method: str,
    path: str,
    body: Any,
    allowed: tuple[str, ...],
    ok: int,
) -> None:
    """Every route a contractor may use, on unit B's gateway, alarm or device: as if it did
    not exist (the operator, unscoped, gets the allowed answer on the same ids)."""
    ids = _ids(sessions, world, unit="b")
    r = _request(api, method, path, body, ids, world.auth("contractor"))
    what = "Alarm" if "{alarm}" in path else "Device" if "{device}" in path else "Gateway"
    assert (r.status_code, r.json()) == (404, {"detail": f"{what} not found"})
    if "operator" in allowed:
        assert _request(api, method, path, body, ids, world.auth("operator")).status_code == ok


@pytest.mark.parametrize(("method", "path", "why", "kw"), PUBLIC, ids=[p for _, p, *_ in PUBLIC])
def test_routes_without_a_role_refuse_a_made_up_credential(
    client: TestClient, world: World, method: str, path: str, why: str, kw: dict[str, Any]
) -> None:
    r = client.request(method, P + path, **kw)
    assert r.status_code == 401, r.text


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
