"""Whatever a client sends, the API answers with a status below 500 (Hypothesis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import World

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
