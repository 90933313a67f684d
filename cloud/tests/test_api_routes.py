"""One test per status path of each route: the code, the fields and the exact detail."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from emberlink.cloud import models
from emberlink.cloud.api.routes.alarms import STILL_ACTIVE
from emberlink.cloud.ingest.pipeline import Ingestor
from emberlink.protocol import codes, messages, topics, wire
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from .conftest import World
from .utils import FIRE_SRC, KEY, batch, fire, heartbeat, make_gateway, populate

P = "/api/v1"


def _alarm_id(sessions: sessionmaker[Session], gw: int = 10) -> int:
    with sessions() as s:
        return s.scalars(select(models.Alarm.id).where(models.Alarm.gateway_id == gw)).one()


# ---- registry -----------------------------------------------------------------------------------


def test_create_gateway(client: TestClient, world: World) -> None:
    body = {"id": 77, "site_id": world.site_a, "name": "gw77", "mac_key_hex": KEY.hex()}
    r = client.post(P + "/gateways", headers=world.auth("installer"), json=body)
    assert r.status_code == 201
    got = r.json()
    assert (got["id"], got["unit_id"], got["has_mac_key"]) == (77, world.unit_a, True)
    assert got["health"]["status"] == "unknown"
    assert got["health"]["reason"] == "never heard from"
    assert "mac_key" not in got and "mac_key_hex" not in got


def test_create_gateway_twice_is_409(client: TestClient, world: World) -> None:
    body = {"id": 10, "site_id": world.site_a, "name": "again"}
    r = client.post(P + "/gateways", headers=world.auth("admin"), json=body)
    assert (r.status_code, r.json()) == (409, {"detail": "Gateway already exists"})


def test_create_gateway_on_missing_site_is_422(client: TestClient, world: World) -> None:
    body = {"id": 78, "site_id": 999_999, "name": "x"}
    r = client.post(P + "/gateways", headers=world.auth("admin"), json=body)
    assert (r.status_code, r.json()) == (422, {"detail": "Site does not exist"})


@pytest.mark.parametrize(
    "body",
    [
        {"id": -1, "site_id": 1, "name": "x"},
        {"id": 2**32, "site_id": 1, "name": "x"},
        {"id": 5, "site_id": 1, "name": ""},
        {"id": 5, "site_id": 1, "name": "x", "mac_key_hex": "zz"},
        {"id": 5, "site_id": 1, "name": "x", "surprise": 1},
        {"id": "five", "site_id": 1, "name": "x"},
    ],
)
def test_create_gateway_invalid_body_is_422(client: TestClient, world: World, body: dict) -> None:
    r = client.post(P + "/gateways", headers=world.auth("admin"), json=body)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][0] == "body"


def test_create_unit_and_site(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s:
        org = s.scalars(select(models.Organisation.id)).one()
    h = world.auth("installer")
    r = client.post(
        P + "/units",
        headers=h,
        json={
            "organisation_id": org,
            "name": "Station 3",
            "kind": "micro_station",
            "category": "community",
            "address": "3 Hill St",
        },
    )
    assert r.status_code == 201
    unit = r.json()
    assert (unit["kind"], unit["category"], unit["address"]) == (
        "micro_station",
        "community",
        "3 Hill St",
    )
    r = client.post(
        P + "/sites", headers=h, json={"unit_id": unit["id"], "name": "B1", "kind": "building"}
    )
    assert (r.status_code, r.json()["kind"]) == (201, "building")
    r = client.post(
        P + "/units", headers=h, json={"organisation_id": 999_999, "name": "x", "kind": "key_unit"}
    )
    assert (r.status_code, r.json()) == (422, {"detail": "Organisation does not exist"})
    r = client.post(P + "/sites", headers=h, json={"unit_id": 999_999, "name": "x"})
    assert (r.status_code, r.json()) == (422, {"detail": "Unit does not exist"})
    r = client.post(P + "/organisations", headers=h, json={"name": "Example Holdings"})
    assert (r.status_code, r.json()) == (409, {"detail": "Organisation already exists"})


def test_devices_and_points(client: TestClient, world: World) -> None:
    h = world.auth("installer")
    r = client.post(
        P + "/devices",
        headers=h,
        json={"gateway_id": 10, "bus": 1, "unit_addr": 5, "name": "panel", "part": 200},
    )
    assert r.status_code == 201
    dev = r.json()
    assert (dev["name"], dev["health"], dev["effective_status"]) == ("panel", None, "unknown")
    r = client.post(P + "/devices", headers=h, json={"gateway_id": 10, "bus": 1, "unit_addr": 5})
    assert (r.status_code, r.json()) == (409, {"detail": "Device already exists"})
    r = client.post(P + "/devices", headers=h, json={"gateway_id": 4242, "bus": 1, "unit_addr": 5})
    assert (r.status_code, r.json()) == (422, {"detail": "Gateway does not exist"})
    r = client.post(
        P + "/points",
        headers=h,
        json={"device_id": dev["id"], "point": 3, "name": "smoke 3", "part": 42},
    )
    assert (r.status_code, r.json()["name"]) == (201, "smoke 3")
    r = client.post(P + "/points", headers=h, json={"device_id": dev["id"], "point": 3})
    assert (r.status_code, r.json()) == (409, {"detail": "Point already exists"})
    r = client.post(P + "/points", headers=h, json={"device_id": 999_999, "point": 3})
    assert (r.status_code, r.json()) == (422, {"detail": "Device does not exist"})
    r = client.get(P + "/devices/999999", headers=h)
    assert (r.status_code, r.json()) == (404, {"detail": "Device not found"})


# ---- gateways, fleet, health --------------------------------------------------------------------


def test_gateway_detail_shows_health_and_devices(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    r = client.get(P + "/gateways/10", headers=world.auth("auditor"))
    assert r.status_code == 200
    g = r.json()
    assert g["health"]["status"] == "online"
    assert g["health"]["reason"] == "heartbeats on time"
    assert g["health"]["heartbeat_s"] == 30
    assert [(d["bus"], d["unit_addr"], d["effective_status"]) for d in g["devices"]] == [
        (1, 3, "online")
    ]
    assert g["devices"][0]["health"]["reason"] == "events received"


def test_gateway_not_found(client: TestClient, world: World) -> None:
    r = client.get(P + "/gateways/4242", headers=world.auth("admin"))
    assert (r.status_code, r.json()) == (404, {"detail": "Gateway not found"})


@pytest.mark.parametrize("path", ["/gateways/4294967296", "/gateways/-1", "/gateways/x"])
def test_gateway_path_out_of_range_is_422(client: TestClient, world: World, path: str) -> None:
    assert client.get(P + path, headers=world.auth("admin")).status_code == 422


def test_gateways_list_filters_by_status(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    h = world.auth("operator")
    r = client.get(P + "/gateways", headers=h, params={"status": "online"})
    assert (r.json()["count"], [g["id"] for g in r.json()["data"]]) == (1, [10])
    r = client.get(P + "/gateways", headers=h, params={"status": "unknown"})
    assert [g["id"] for g in r.json()["data"]] == [20]
    assert client.get(P + "/gateways", headers=h, params={"status": "sad"}).status_code == 422


def test_fleet_overview(client: TestClient, world: World, sessions: sessionmaker[Session]) -> None:
    populate(sessions, 10)
    ing = Ingestor(sessions)
    lost = messages.Event(codes.COMMS, 0, FIRE_SRC, state=codes.ACTIVE, code=55)
    b = batch(20, 1, events=[heartbeat(outbox_depth=4321, devices_down=1), lost])
    ing.accept(topics.topic(20, "ev"), wire.seal(b))
    ing.flush()
    r = client.get(P + "/fleet", headers=world.auth("auditor"))
    assert r.status_code == 200
    assert r.json() == {
        "gateways": 2,
        "online": 1,
        "degraded": 1,
        "offline": 0,
        "unknown": 0,
        "devices_offline": 1,
        "alarms_open": 2,
        "largest_backlog_gateway_id": 20,
        "largest_backlog": 4321,
    }


def test_device_health_does_not_hide_the_gateways_own(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    """A heartbeat carries the gateway's health (src 0) and then one per device (src = the
    device, its poll counters) at the same instant; the gateway's figures are the src 0 ones."""
    populate(sessions, 10)
    device = messages.Event(codes.HEALTH, 0, 1 << 24 | 3 << 16, health={2: 17, 3: 0, 7: 0})
    b = batch(20, 1, events=[heartbeat(outbox_depth=4321, devices_down=2), device])
    ing = Ingestor(sessions)
    ing.accept(topics.topic(20, "ev"), wire.seal(b))
    ing.flush()
    r = client.get(P + "/gateways/20", headers=world.auth("operator"))
    assert r.status_code == 200
    assert (r.json()["health"]["outbox_depth"], r.json()["health"]["devices_down"]) == (4321, 2)


def test_health_history_pages(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    h = world.auth("operator")
    r = client.get(P + "/gateways/10/health/history", headers=h, params={"limit": 1})
    assert r.status_code == 200
    first = r.json()
    assert len(first["data"]) == 1 and first["next_cursor"] is not None
    r = client.get(
        P + "/gateways/10/health/history",
        headers=h,
        params={"limit": 1, "cursor": first["next_cursor"]},
    )
    second = r.json()
    got = {
        (t["device_id"] is None, t["from_status"], t["to_status"])
        for t in first["data"] + second["data"]
    }
    assert got == {(True, "unknown", "online"), (False, "unknown", "online")}
    assert second["next_cursor"] is None


# ---- events ---------------------------------------------------------------------------------


def test_events_filter_and_cursor_pagination(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    populate(sessions, 10, seq0=4)
    h = world.auth("auditor")
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 2, "gateway_id": 10}
        if cursor:
            params["cursor"] = cursor
        r = client.get(P + "/events", headers=h, params=params)
        assert r.status_code == 200
        seen += [e["seq"] for e in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1]
    r = client.get(P + "/events", headers=h, params={"kind": "fire_alarm"})
    assert [(e["seq"], e["kind_name"], e["state"]) for e in r.json()["data"]] == [
        (6, "fire_alarm", 1),
        (3, "fire_alarm", 1),
    ]
    r = client.get(P + "/events", headers=h, params={"kind": str(codes.HEALTH)})
    assert {e["kind_name"] for e in r.json()["data"]} == {"health"}


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"cursor": "!!!"}, "Invalid cursor"),
        ({"cursor": "LTE"}, "Invalid cursor"),  # "-1"
        ({"kind": "nope"}, "Unknown event kind 'nope'"),
        ({"kind": "99"}, "Unknown event kind '99'"),
    ],
)
def test_events_bad_query_is_422(
    client: TestClient, world: World, params: dict[str, str], detail: str
) -> None:
    r = client.get(P + "/events", headers=world.auth("admin"), params=params)
    assert (r.status_code, r.json()) == (422, {"detail": detail})


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"gateway_id": 2**40}, {"since_ms": -1}, {"late": "maybe"}],
)
def test_events_out_of_range_params_are_422(
    client: TestClient, world: World, params: dict[str, object]
) -> None:
    r = client.get(P + "/events", headers=world.auth("admin"), params=params)
    assert r.status_code == 422


def test_events_csv_export(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    r = client.get(
        P + "/events/export.csv", headers=world.auth("auditor"), params={"gateway_id": 10}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == (
        "id,gateway_id,boot,seq,kind,kind_name,src,state,code,t_ms,received_ms,"
        "batch_flags,late,data"
    )
    assert [ln.split(",")[3] for ln in lines[1:]] == ["1", "2", "3"]
    assert lines[3].split(",")[5] == "fire_alarm"


# ---- alarms ---------------------------------------------------------------------------------


def test_alarm_lifecycle_ack_then_clear(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    aid = _alarm_id(sessions)
    h = world.auth("operator")
    a = client.get(P + f"/alarms/{aid}", headers=h).json()
    assert (a["status"], a["kind_name"], a["code"], a["late"], a["condition_active"]) == (
        "active",
        "fire_alarm",
        1,
        False,
        True,
    )
    r = client.post(P + f"/alarms/{aid}/ack", headers=h, json={"comment": "crew sent"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["acked_by"]) == ("acknowledged", "operator")
    r = client.post(P + f"/alarms/{aid}/ack", headers=h, json={})
    assert (r.status_code, r.json()) == (409, {"detail": "Alarm already acknowledged"})
    ing = Ingestor(sessions)  # the device reports normal: an acknowledged alarm clears itself
    ing.accept(topics.topic(10, "ev"), wire.seal(batch(10, 4, events=[fire(codes.NORMAL)])))
    ing.flush()
    r = client.post(P + f"/alarms/{aid}/clear", headers=world.auth("contractor"), json={})
    assert (r.status_code, r.json()) == (409, {"detail": "Alarm already cleared"})
    r = client.post(P + f"/alarms/{aid}/ack", headers=h, json={})
    assert (r.status_code, r.json()) == (409, {"detail": "Alarm is cleared"})
    a = client.get(P + f"/alarms/{aid}", headers=h).json()
    assert (a["status"], a["acked_by"], a["cleared_by"]) == ("cleared", "operator", "device")
    comments = client.get(P + f"/alarms/{aid}/comments", headers=h).json()
    assert [(c["author"], c["text"]) for c in comments] == [("operator", "crew sent")]


def test_clearing_an_alarm_whose_condition_is_active_needs_force_and_a_comment(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    aid = _alarm_id(sessions)
    h = world.auth("operator")
    assert client.post(P + f"/alarms/{aid}/ack", headers=h, json={}).status_code == 200
    url = P + f"/alarms/{aid}/clear"
    for body in ({}, {"comment": "crew on site"}, {"force": False, "comment": "x"}):
        r = client.post(url, headers=world.auth("contractor"), json=body)
        assert (r.status_code, r.json()) == (409, {"detail": STILL_ACTIVE}), body
    r = client.post(url, headers=h, json={"force": True})
    assert r.status_code == 422
    assert "force needs a comment" in r.text
    r = client.post(url, headers=h, json={"force": True, "comment": ""})
    assert r.status_code == 422
    a = client.get(P + f"/alarms/{aid}", headers=h).json()
    assert (a["status"], a["condition_active"], a["note"]) == ("acknowledged", True, None)
    r = client.post(
        url, headers=world.auth("contractor"), json={"force": True, "comment": "detector cut out"}
    )
    assert r.status_code == 200
    a = r.json()
    assert (a["status"], a["acked_by"], a["cleared_by"], a["condition_active"]) == (
        "cleared",
        "operator",
        "contractor",
        True,
    )
    assert a["note"] == "clear forced by contractor while the condition was still active"
    comments = client.get(P + f"/alarms/{aid}/comments", headers=h).json()
    assert [(c["author"], c["text"]) for c in comments] == [
        ("contractor", "Cleared while the condition was still active: detector cut out")
    ]
    r = client.get(P + "/alarms", headers=h, params={"open_only": True})
    assert r.json()["data"] == []
    r = client.post(url, headers=h, json={"force": True, "comment": "again"})
    assert (r.status_code, r.json()) == (409, {"detail": "Alarm already cleared"})


def test_clearing_an_unacknowledged_alarm_acknowledges_it_too(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    aid = _alarm_id(sessions)
    ing = Ingestor(sessions)  # normal again, but nobody acknowledged it: it stays open
    ing.accept(topics.topic(10, "ev"), wire.seal(batch(10, 4, events=[fire(codes.NORMAL)])))
    ing.flush()
    h = world.auth("operator")
    r = client.post(P + f"/alarms/{aid}/clear", headers=h, json={"comment": "seen"})
    a = r.json()
    assert (r.status_code, a["status"], a["acked_by"], a["cleared_by"]) == (
        200,
        "cleared",
        "operator",
        "operator",
    )
    assert a["acked_ms"] == a["cleared_ms"] is not None
    assert (a["condition_active"], a["note"]) == (False, None)  # no force needed, none recorded
    comments = client.get(P + f"/alarms/{aid}/comments", headers=h).json()
    assert [c["text"] for c in comments] == ["seen"]


def test_alarm_not_found(client: TestClient, world: World) -> None:
    h = world.auth("admin")
    for method, path in (
        ("GET", "/alarms/999999"),
        ("POST", "/alarms/999999/ack"),
        ("POST", "/alarms/999999/clear"),
    ):
        r = client.request(method, P + path, headers=h, json={} if method == "POST" else None)
        assert (r.status_code, r.json()) == (404, {"detail": "Alarm not found"})


def test_alarm_comment(client: TestClient, world: World, sessions: sessionmaker[Session]) -> None:
    populate(sessions, 10)
    aid = _alarm_id(sessions)
    r = client.post(
        P + f"/alarms/{aid}/comments",
        headers=world.auth("contractor"),
        json={"text": "detector replaced"},
    )
    assert r.status_code == 201
    assert (r.json()["author"], r.json()["text"]) == ("contractor", "detector replaced")
    r = client.post(
        P + f"/alarms/{aid}/comments", headers=world.auth("contractor"), json={"text": ""}
    )
    assert r.status_code == 422


def test_same_condition_is_one_alarm_until_cleared(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    populate(sessions, 10, seq0=4)  # raised again while open: still one alarm
    h = world.auth("operator")
    assert len(client.get(P + "/alarms", headers=h).json()["data"]) == 1
    aid = _alarm_id(sessions)
    r = client.post(P + f"/alarms/{aid}/clear", headers=h, json={"force": True, "comment": "c"})
    assert r.status_code == 200
    populate(sessions, 10, seq0=7)  # after the clear, a new alarm object
    r = client.get(P + "/alarms", headers=h, params={"gateway_id": 10, "open_only": True})
    assert len(r.json()["data"]) == 1 and r.json()["data"][0]["id"] != aid


def test_device_normal_after_ack_clears(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10)
    aid = _alarm_id(sessions)
    h = world.auth("operator")
    client.post(P + f"/alarms/{aid}/ack", headers=h, json={})
    ing = Ingestor(sessions)
    ing.accept(topics.topic(10, "ev"), wire.seal(batch(10, 4, events=[fire(codes.NORMAL)])))
    ing.flush()
    a = client.get(P + f"/alarms/{aid}", headers=h).json()
    assert (a["status"], a["cleared_by"], a["condition_active"]) == ("cleared", "device", False)


def test_replayed_alarm_still_raises_and_is_marked_late(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    populate(sessions, 10, flags=codes.BF_REPLAYED)
    populate(sessions, 20, t0=1_000_000)  # an event long ago, not flagged: late by its age
    r = client.get(P + "/alarms", headers=world.auth("auditor"), params={"late": True})
    assert sorted(a["gateway_id"] for a in r.json()["data"]) == [10, 20]
    assert all(a["status"] == "active" for a in r.json()["data"])


def test_test_mode_alarm_is_marked_test(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    ing = Ingestor(sessions)
    b = batch(10, 1, events=[fire(codes.ACTIVE, eflags=codes.EF_TEST)])
    ing.accept(topics.topic(10, "ev"), wire.seal(b))
    ing.flush()
    (a,) = client.get(P + "/alarms", headers=world.auth("auditor")).json()["data"]
    assert a["test"] is True


# ---- users and tokens -----------------------------------------------------------------------


def test_users(client: TestClient, world: World) -> None:
    h = world.auth("admin")
    r = client.post(
        P + "/users",
        headers=h,
        json={"name": "c2", "role": "contractor", "unit_ids": [world.unit_b]},
    )
    assert r.status_code == 201
    user = r.json()
    assert (user["role"], user["unit_ids"]) == ("contractor", [world.unit_b])
    r = client.post(P + f"/users/{user['id']}/tokens", headers=h, json={"name": "phone"})
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("elk_")
    me = client.get(P + "/users/me", headers={"Authorization": f"Bearer {token}"})
    assert (me.status_code, me.json()["name"]) == (200, "c2")
    gws = client.get(P + "/gateways", headers={"Authorization": f"Bearer {token}"}).json()
    assert [g["id"] for g in gws["data"]] == [20]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"name": "admin", "role": "admin"}, 409, "User already exists"),
        ({"name": "c3", "role": "contractor"}, 422, "A contractor needs at least one unit"),
        (
            {"name": "o3", "role": "operator", "unit_ids": [1]},
            422,
            "Only a contractor is scoped to units",
        ),
        (
            {"name": "c4", "role": "contractor", "unit_ids": [999999]},
            422,
            "Unit 999999 does not exist",
        ),
    ],
)
def test_create_user_refusals(
    client: TestClient, world: World, body: dict, status: int, detail: str
) -> None:
    r = client.post(P + "/users", headers=world.auth("admin"), json=body)
    assert (r.status_code, r.json()) == (status, {"detail": detail})


def test_create_user_bad_role_is_422(client: TestClient, world: World) -> None:
    r = client.post(P + "/users", headers=world.auth("admin"), json={"name": "x", "role": "god"})
    assert r.status_code == 422


def test_token_for_missing_user_is_404(client: TestClient, world: World) -> None:
    r = client.post(P + "/users/999999/tokens", headers=world.auth("admin"), json={})
    assert (r.status_code, r.json()) == (404, {"detail": "User not found"})


def test_tokens_are_stored_hashed(world: World, sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        hashes = set(s.scalars(select(models.ApiToken.token_hash)))
    assert not hashes & set(world.tokens.values())
    assert all(len(h) == 64 for h in hashes)


# ---- HTTP ingest and quarantine -------------------------------------------------------------


def test_http_ingest_with_admin_token(client: TestClient, world: World) -> None:
    h = world.auth("admin") | {"Content-Type": "application/cbor"}
    payload = wire.seal(batch(10, 1, 4))
    r = client.post(P + "/ingest/10", headers=h, content=payload)
    assert (r.status_code, r.json()) == (
        200,
        {"stored": 4, "duplicates": 0, "acks": [{"gw": 10, "boot": 1, "hwm": 4}]},
    )
    r = client.post(P + "/ingest/10", headers=h, content=payload)
    assert (r.status_code, r.json()) == (
        200,
        {"stored": 0, "duplicates": 4, "acks": [{"gw": 10, "boot": 1, "hwm": 4}]},
    )


def test_http_ingest_by_mac_without_token(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, 30, key=KEY)
    r = client.post(P + "/ingest/30", content=wire.seal(batch(30, 1, 2), key=KEY))
    assert (r.status_code, r.json()["stored"]) == (200, 2)
    r = client.post(P + "/ingest/30", content=wire.seal(batch(30, 3, 2), key=bytes(32)))
    assert (r.status_code, r.json()) == (422, {"detail": "Quarantined: MAC does not verify"})
    r = client.post(P + "/ingest/10", content=wire.seal(batch(10, 1, 2)))
    assert (r.status_code, r.json()) == (401, {"detail": "Not authenticated"})
    r = client.post(P + "/ingest/4242", content=wire.seal(batch(4242, 1, 2)))
    assert (r.status_code, r.json()) == (401, {"detail": "Not authenticated"})


def test_http_ingest_refusals(client: TestClient, world: World) -> None:
    h = world.auth("admin")
    r = client.post(P + "/ingest/10", headers=h, content=b"\x00garbage")
    assert (r.status_code, r.json()) == (422, {"detail": "Quarantined: trailing bytes"})
    r = client.post(P + "/ingest/10", headers=h, content=wire.seal(batch(20, 1, 1)))
    assert (r.status_code, r.json()) == (
        422,
        {"detail": "Quarantined: gateway does not match topic"},
    )
    r = client.post(P + "/ingest/10", headers=h, content=b"\xa0" * 70_000)
    assert (r.status_code, r.json()) == (413, {"detail": "Batch too large"})
    r = client.post(P + "/ingest/10", headers=world.auth("operator"), content=b"")
    assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
    r = client.post(P + "/ingest/10", headers={"Authorization": "Bearer elk_x"}, content=b"")
    assert (r.status_code, r.json()) == (401, {"detail": "Invalid token"})
    q = client.get(P + "/quarantine", headers=world.auth("auditor")).json()["data"]
    assert [(x["source"], x["reason"]) for x in q] == [
        ("http", "gateway does not match topic"),
        ("http", "trailing bytes"),
    ]


def test_http_ingest_refuses_an_oversize_body_without_a_length(
    client: TestClient, world: World
) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check first
        for _ in range(100):
            yield b"\xa0" * 1000

    r = client.post(P + "/ingest/10", headers=world.auth("admin"), content=chunks())
    assert (r.status_code, r.json()) == (413, {"detail": "Batch too large"})
    assert client.get(P + "/quarantine", headers=world.auth("admin")).json()["data"] == []


def test_http_ingest_waiting_for_the_database_does_not_stop_other_requests(
    app: FastAPI, client: TestClient, world: World, engine: Engine
) -> None:
    """A flush that waits for another writer (an ingest worker's SQLite write lock, a
    PostgreSQL table lock) must not hold the event loop: other requests are answered."""
    flushing = threading.Event()

    def on_statement(*_: Any) -> None:
        flushing.set()

    event.listen(app.state.write_engine, "before_cursor_execute", on_statement)
    got: dict[str, Any] = {}
    with engine.connect() as holder:
        tx = holder.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        if engine.dialect.name == "postgresql":
            holder.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))  # reads still go
        h = world.auth("admin")
        writer = threading.Thread(
            target=lambda: got.update(
                ingest=client.post(P + "/ingest/10", headers=h, content=wire.seal(batch(10, 1, 2)))
            )
        )
        writer.start()
        assert flushing.wait(10), "the request did not reach the database"
        time.sleep(0.3)  # on to the statement that waits for the holder
        reader = threading.Thread(
            target=lambda: got.update(fleet=client.get(P + "/fleet", headers=h))
        )
        reader.start()
        reader.join(10)
        answered_meanwhile = not reader.is_alive() and writer.is_alive()
        tx.commit()
    writer.join(30)
    reader.join(30)
    event.remove(app.state.write_engine, "before_cursor_execute", on_statement)
    assert answered_meanwhile
    assert got["fleet"].status_code == 200
    assert (got["ingest"].status_code, got["ingest"].json()["stored"]) == (200, 2)
