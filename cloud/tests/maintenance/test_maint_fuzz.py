"""Whatever a client sends to the maintenance routes, the answer is below 500 (Hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import World

P = "/api/v1/maint"
fuzz = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
number = st.integers(min_value=-(2**66), max_value=2**66)
text = st.text(max_size=20)
anything = st.one_of(
    number, text, st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False)
)
day = st.one_of(
    text, st.dates().map(lambda d: d.isoformat()), st.sampled_from(["9999-12-31", "0001-01-01"])
)


def _ask(app: FastAPI, world: World, method: str, path: str, **kw: Any) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.request(method, P + path, headers=world.auth("admin"), **kw)
        assert r.status_code < 500, (method, path, kw, r.text)


@fuzz
@given(
    path=st.sampled_from(["/units/{u}/schedule", "/reports/overdue", "/reports/compliance"]),
    on=day,
)
def test_days_never_500(app: FastAPI, world: World, path: str, on: str) -> None:
    _ask(app, world, "GET", path.format(u=world.unit_a), params={"on": on})


@fuzz
@given(before=day)
def test_expired_never_500(app: FastAPI, world: World, before: str) -> None:
    _ask(app, world, "GET", "/expired", params={"before": before})


@fuzz
@given(
    month=st.one_of(text, st.sampled_from(["9999-12", "2199-12", "1970-01"])),
    year=st.one_of(number, st.sampled_from([1970, 2199, 9999])),
    fmt=st.sampled_from(["csv", "pdf", "xml"]),
)
def test_reports_never_500(app: FastAPI, world: World, month: str, year: int, fmt: str) -> None:
    u = world.unit_a
    _ask(
        app, world, "GET", "/reports/monthly", params={"unit_id": u, "month": month, "format": fmt}
    )
    _ask(app, world, "GET", "/reports/annual", params={"unit_id": u, "year": year, "format": fmt})


@fuzz
@given(
    starts=number,
    ends=number,
    in_service=number,
    systems=st.lists(st.one_of(text, st.sampled_from(["fire_alarm", "sprinkler"])), max_size=3),
    firm=number,
    version=st.one_of(st.none(), text),
)
def test_contracts_never_500(
    app: FastAPI,
    world: World,
    starts: int,
    ends: int,
    in_service: int,
    systems: list[str],
    firm: int,
    version: str | None,
) -> None:
    body = {
        "firm_id": firm,
        "unit_id": world.unit_a,
        "starts_ms": starts,
        "ends_ms": ends,
        "in_service_ms": in_service,
        "systems": systems,
        "catalogue_version": version,
    }
    _ask(app, world, "POST", "/contracts", json=body)
    _ask(app, world, "POST", "/firms", json={"name": "f", "cert_no": "c", "cert_expires_ms": ends})


@fuzz
@given(
    path=st.sampled_from(
        [
            "/visits",
            "/visits/{x}/items",
            "/visits/{x}/defects",
            "/visits/{x}/sign",
            "/visits/{x}/corrections",
            "/visits/{x}/close",
            "/defects/{x}/close",
            "/firms/{x}/technicians",
            "/firms/{x}/users",
        ]
    ),
    x=number,
    body=st.dictionaries(
        st.sampled_from(
            [
                "contract_id",
                "kind",
                "crew",
                "code",
                "result",
                "measured",
                "src",
                "gateway_id",
                "severity",
                "description",
                "lead_technician_id",
                "manager",
                "reason",
                "started_ms",
                "user_id",
                "name",
                "cert_no",
            ]
        ),
        anything,
        max_size=6,
    ),
)
def test_writes_never_500(app: FastAPI, world: World, path: str, x: int, body: dict) -> None:
    _ask(app, world, "POST", path.replace("{x}", str(x)), json=body)


@pytest.fixture
def open_visit(app: FastAPI, world: World) -> int:
    from .test_maint_api import _open, _setup

    with TestClient(app) as c:
        return int(_open(c, world, _setup(c, world))["id"])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    code=st.one_of(text, st.sampled_from(["FA-M-DET", "EF-M-RCD", "FA-L-CLEAN"])),
    result=st.one_of(text, st.sampled_from(["pass", "fail", "na"])),
    measured=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), number),
    gateway=st.one_of(st.none(), number, st.sampled_from([10, 20])),
    src=st.one_of(st.none(), number),
)
def test_items_on_a_real_visit_never_500(
    app: FastAPI,
    world: World,
    open_visit: int,
    code: str,
    result: str,
    measured: Any,
    gateway: Any,
    src: Any,
) -> None:
    body = {"code": code, "result": result, "measured": measured, "gateway_id": gateway, "src": src}
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post(P + f"/visits/{open_visit}/items", headers=world.auth("contractor"), json=body)
        assert r.status_code < 500, (body, r.text)
        assert c.get(P + f"/visits/{open_visit}", headers=world.auth("admin")).status_code == 200
