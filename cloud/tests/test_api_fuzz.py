"""Whatever a client sends, the API answers with a status below 500 (Hypothesis).

The registry's routes (not maintenance: maintenance/test_maint_fuzz.py; not provisioning:
test_claim.py) are all here: ``test_every_registry_route_is_fuzzed`` checks that against the
OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from emberlink.cloud import models
from emberlink.protocol import wire
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from .conftest import World
from .utils import KEY, batch, make_gateway

P = "/api/v1"
GETS = [
    "/events",
    "/events/export.csv",
    "/alarms",
    "/gateways",
    "/quarantine",
    "/gateways/{x}",
    "/gateways/{x}/health/history",
    "/devices/{x}",
    "/alarms/{x}",
    "/alarms/{x}/comments",
    "/gateways/{x}/commands",
    "/fleet",
    "/units",
    "/users",
    "/users/me",
]
PARAMS = [
    "gateway_id",
    "boot",
    "kind",
    "src",
    "since_ms",
    "until_ms",
    "late",
    "cursor",
    "limit",
    "offset",
    "status",
    "open_only",
    "reason",
]
POSTS = [
    "/gateways",
    "/devices",
    "/points",
    "/units",
    "/sites",
    "/organisations",
    "/users",
    "/alarms/{x}/ack",
    "/alarms/{x}/clear",
    "/alarms/{x}/comments",
    "/users/{x}/tokens",
]
# Fuzzed in a test of their own: the ingest body below; a command's body in test_api_commands.py
# (BAD: 16 refusals, each a 422 with its reason; a valid one would be published).
ELSEWHERE = ["POST /ingest/{x}", "POST /gateways/{x}/commands"]
NOT_REGISTRY = re.compile(
    r"^/(maint/|claims|provision/|gateways/\{[^}]+\}/(credentials|decommission))"
)

text = st.text(max_size=30)
number = st.integers(min_value=-(2**70), max_value=2**70)
scalar = st.one_of(
    text, number, st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False)
)
json_value = st.recursive(
    scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=8
)
segment = st.one_of(
    number.map(str),
    text.filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s and s not in ("", ".", "..")
    ),
)
fuzz = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@fuzz
@given(
    path=st.sampled_from(GETS),
    seg=segment,
    params=st.dictionaries(st.sampled_from(PARAMS), st.one_of(text, number.map(str)), max_size=4),
)
def test_get_never_500(
    app: FastAPI, world: World, path: str, seg: str, params: dict[str, str]
) -> None:
    for c in _client(app):
        r = c.get(
            P + path.replace("{x}", quote(seg, safe="")), params=params, headers=world.auth("admin")
        )
        assert r.status_code < 500, (path, seg, params, r.text)


@fuzz
@given(path=st.sampled_from(POSTS), seg=segment, body=json_value)
def test_post_never_500(app: FastAPI, world: World, path: str, seg: str, body: Any) -> None:
    for c in _client(app):
        r = c.post(
            P + path.replace("{x}", quote(seg, safe="")), json=body, headers=world.auth("admin")
        )
        assert r.status_code < 500, (path, seg, body, r.text)


@fuzz
@given(
    ref=st.sampled_from(
        [
            ("/gateways", {"id": 5, "name": "x"}, "site_id"),
            ("/devices", {"bus": 1, "unit_addr": 1}, "gateway_id"),
            ("/points", {"point": 1}, "device_id"),
            ("/units", {"name": "x", "kind": "key_unit"}, "organisation_id"),
            ("/sites", {"name": "x"}, "unit_id"),
            ("/users", {"name": "x", "role": "contractor"}, "unit_ids"),
        ]
    ),
    value=number,
)
def test_references_out_of_range_never_500(
    app: FastAPI, world: World, ref: tuple[str, dict[str, Any], str], value: int
) -> None:
    path, body, key = ref
    body = body | {key: [value] if key == "unit_ids" else value}
    for c in _client(app):
        r = c.post(P + path, json=body, headers=world.auth("admin"))
        assert r.status_code < 500, (path, body, r.text)


PARAM = re.compile(r"\{[^}]+\}")


def test_every_registry_route_is_fuzzed(app: FastAPI) -> None:
    covered = {f"GET {p}" for p in GETS} | {f"POST {p}" for p in POSTS} | set(ELSEWHERE)
    ops = [
        m.upper() + " " + PARAM.sub("{x}", path.removeprefix(P))
        for path, item in app.openapi()["paths"].items()
        if not NOT_REGISTRY.match(path.removeprefix(P))
        for m in item
    ]
    assert len(ops) > 20
    assert sorted(set(ops) - covered) == []
    assert sorted(covered - set(ops)) == []


VALID = wire.seal(batch(10, 1, 3))


@fuzz
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda i, x: VALID[:i] + bytes([x]) + VALID[i + 1 :],
            st.integers(0, len(VALID) - 1),
            st.integers(0, 255),
        ),
    ),
    keyed=st.booleans(),
)
def test_ingest_never_500(
    app: FastAPI, world: World, sessions: sessionmaker[Session], body: bytes, keyed: bool
) -> None:
    """Any body, from an admin for a gateway without a key or unauthenticated for one with a
    key: stored, refused or quarantined with a reason, never a 500."""
    with sessions() as s, s.begin():
        if s.get(models.Gateway, 11) is None:
            make_gateway(s, 11, key=KEY)
    for c in _client(app):
        if keyed:
            r = c.post(P + "/ingest/11", content=body)
        else:
            r = c.post(P + "/ingest/10", content=body, headers=world.auth("admin"))
        assert r.status_code < 500, (body.hex(), r.text)
        assert r.status_code in (200, 422), (body.hex(), r.text)
