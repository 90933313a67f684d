"""POST/GET /gateways/{id}/commands: validation, roles and scope, the exact CBOR on the
gateway's cmd topic of a private Mosquitto, a dead broker (503, recorded as send_failed),
and results in the list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from emberlink.cloud import commands, models
from emberlink.cloud.ingest.pipeline import now_ms
from emberlink.cloud.provision import mqtt_check
from emberlink.protocol import messages, topics
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import ROLES, World, free_port

pytestmark = pytest.mark.broker
P = "/api/v1"
SRC = (1 << 24) | (3 << 16) | 7


@pytest.fixture
def broker_app(app: FastAPI, mosquitto: int) -> FastAPI:
    app.state.settings = app.state.settings.model_copy(
        update={"mqtt_port": mosquitto, "command_publish_timeout_s": 2.0}
    )
    return app


@pytest.fixture
def listener(mosquitto: int) -> Iterator[mqtt_check.Listener]:
    c = mqtt_check.connect("127.0.0.1", mosquitto, "", "")
    assert not isinstance(c, str), c
    yield mqtt_check.Listener(c, topics.subscription(topics.COMMAND))
    c.disconnect()
    c.loop_stop()


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(models.Command)) or 0


# (body, the wire args the gateway must get)
SENT: list[tuple[dict[str, Any], dict[int, int] | None]] = [
    ({"op": "rebirth"}, None),
    ({"op": "test_mode", "args": {"state": "on", "duration_s": 600}}, {0: 1, 1: 600}),
    ({"op": "test_mode", "args": {"state": "off", "src": SRC}}, {0: 0, 2: SRC}),
    ({"op": "time_sync", "args": {"utc_ms": 1_764_000_000_000}}, {0: 1_764_000_000_000}),
    ({"op": "reset", "args": {"src": SRC}}, {0: SRC}),
    ({"op": "reset"}, None),
    ({"op": "resend", "args": {"seq": 5, "boot": 2}}, {0: 5, 1: 2}),
    ({"op": "resend", "args": {"seq": 1}}, {0: 1}),
]


def test_commands_reach_the_gateway_topic_as_exact_cbor(
    broker_app: FastAPI, client: TestClient, world: World, listener: mqtt_check.Listener
) -> None:
    h = world.auth("operator")
    expected = []
    for body, args in SENT:
        r = client.post(P + "/gateways/10/commands", headers=h, json=body)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["op"] == body["op"] and out["who"] == "operator"
        assert out["status"] == "sent" and out["sent_ms"] >= out["created_ms"]
        assert out["result"] is None
        op = commands.OPS[body["op"]][0]
        expected.append(
            (topics.topic(10, "cmd"), messages.encode(messages.Command(10, out["id"], op, args)))
        )
    # time_sync without args: the cloud's clock at the time it is sent
    before = now_ms()
    r = client.post(P + "/gateways/10/commands", headers=h, json={"op": "time_sync"})
    assert r.status_code == 201, r.text
    utc = r.json()["args"]["utc_ms"]
    assert before <= utc <= now_ms()
    expected.append(
        (
            topics.topic(10, "cmd"),
            messages.encode(messages.Command(10, r.json()["id"], 3, {0: utc})),
        )
    )
    assert listener.wait_for(len(expected), 10)
    assert listener.got == expected


BAD: list[tuple[dict[str, Any] | str, str]] = [
    ({"op": "reboot"}, "does not match any of the expected tags"),
    ({"args": {}}, "Unable to extract tag using discriminator 'op'"),
    ({"op": "test_mode"}, "Field required"),
    ({"op": "test_mode", "args": {}}, "Field required"),
    ({"op": "test_mode", "args": {"state": "maybe"}}, "Input should be 'on' or 'off'"),
    ({"op": "test_mode", "args": {"state": "on", "duration_s": 0}}, "greater than or equal to 1"),
    ({"op": "test_mode", "args": {"state": "on", "src": 2**32}}, "less than or equal to"),
    ({"op": "resend", "args": {}}, "Field required"),
    ({"op": "resend", "args": {"seq": 0}}, "greater than or equal to 1"),
    ({"op": "resend", "args": {"seq": "five"}}, "valid integer"),
    ({"op": "resend", "args": {"seq": 1, "from": 2}}, "Extra inputs are not permitted"),
    ({"op": "rebirth", "args": {"now": 1}}, "Extra inputs are not permitted"),
    ({"op": "time_sync", "args": {"utc_ms": -5}}, "greater than or equal to 1"),
    ({"op": "reset", "args": {"src": True}}, "valid integer"),
    ({"op": "reset", "extra": 1}, "Extra inputs are not permitted"),
    ("not json", "Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("body", "reason"), BAD, ids=[str(b)[:50] for b, _ in BAD])
def test_bad_commands_are_422_with_the_reason_and_not_recorded(
    broker_app: FastAPI,
    client: TestClient,
    world: World,
    sessions: sessionmaker[Session],
    body: dict[str, Any] | str,
    reason: str,
) -> None:
    kw: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    r = client.post(P + "/gateways/10/commands", headers=world.auth("admin"), **kw)
    assert r.status_code == 422, r.text
    assert reason in r.text
    assert _count(sessions) == 0


def test_roles_and_scope(
    broker_app: FastAPI, client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    body = {"op": "rebirth"}
    for role in ROLES:
        r = client.post(P + "/gateways/10/commands", headers=world.auth(role), json=body)
        if role in ("admin", "operator", "contractor"):
            assert r.status_code == 201, (role, r.text)
            assert r.json()["who"] == role
        else:
            assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
    # a contractor's view ends at its units: gateway 20 is as if it did not exist
    for method in ("POST", "GET"):
        r = client.request(
            method, P + "/gateways/20/commands", headers=world.auth("contractor"), json=body
        )
        assert (r.status_code, r.json()) == (404, {"detail": "Gateway not found"})
    r = client.post(P + "/gateways/999/commands", headers=world.auth("admin"), json=body)
    assert (r.status_code, r.json()) == (404, {"detail": "Gateway not found"})
    r = client.post(P + "/gateways/10/commands", json=body)
    assert (r.status_code, r.json()) == (401, {"detail": "Not authenticated"})
    r = client.post(P + "/gateways/10/commands", json={"op": "nope"})
    assert r.status_code == 401  # authentication comes before validation
    assert _count(sessions) == 3


def test_dead_broker_is_503_and_the_command_is_recorded_as_failed(
    app: FastAPI, client: TestClient, world: World
) -> None:
    app.state.settings = app.state.settings.model_copy(
        update={"mqtt_port": free_port(), "command_publish_timeout_s": 2.0}
    )
    h = world.auth("admin")
    r = client.post(P + "/gateways/10/commands", headers=h, json={"op": "rebirth"})
    assert r.status_code == 503
    assert "Broker unreachable" in r.json()["detail"]
    (row,) = client.get(P + "/gateways/10/commands", headers=h).json()["data"]
    assert row["status"] == "send_failed" and row["sent_ms"] is None
    assert row["error"].startswith("broker unreachable")


def test_list_shows_results_newest_first_with_a_cursor(
    broker_app: FastAPI, client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    h = world.auth("admin")
    ids = [
        client.post(P + "/gateways/10/commands", headers=h, json={"op": "reset"}).json()["id"]
        for _ in range(3)
    ]
    with sessions() as s, s.begin():
        why = commands.store_result(
            session=s,
            result=messages.Result(10, ids[1], messages.RES_OK, "2 points reset"),
            now_ms=5,
        )
        assert why is None
    r = client.get(P + "/gateways/10/commands?limit=2", headers=world.auth("auditor"))
    assert r.status_code == 200
    page = r.json()
    assert [c["id"] for c in page["data"]] == [ids[2], ids[1]]
    got = page["data"][1]
    assert (got["status"], got["result"], got["note"], got["result_ms"]) == (
        "answered",
        "ok",
        "2 points reset",
        5,
    )
    r = client.get(P + f"/gateways/10/commands?cursor={page['next_cursor']}", headers=h)
    assert [c["id"] for c in r.json()["data"]] == [ids[0]]
    assert r.json()["next_cursor"] is None
    assert client.get(P + "/gateways/20/commands", headers=h).json()["data"] == []
