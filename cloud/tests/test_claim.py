"""Claim tokens, gateway credentials and the broker's files, against a real Mosquitto.

Each path through the claim routes has its test (issued, refused as unknown, reused, expired,
foreign, over-long validity, wrong role), and the rendered password and ACL files are loaded by
a Mosquitto started here: a claimed gateway publishes on its own topics, another gateway's
login cannot publish on them; a rotation adds a pending login beside the one in force until
the gateway confirms it with its new password, then the old password stops working; a revoked
one stops working after the reload.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from emberlink.cloud import models
from emberlink.cloud.provision import broker, mqtt_check
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from .conftest import MOSQUITTO, World, free_port

SERVICE_PW = secrets.token_urlsafe(16)
WAIT_S = 5.0


@dataclass
class Broker:
    port: int
    settings: broker.BrokerSettings


@pytest.fixture
def secured_broker(tmp_path: Path, app: FastAPI) -> Iterator[Broker]:
    """Mosquitto with password_file + acl_file that the cloud renders (no anonymous access)."""
    port = free_port()
    st = broker.BrokerSettings(
        password_file=tmp_path / "passwd",
        acl_file=tmp_path / "acl",
        pid_file=tmp_path / "mosquitto.pid",
        service_users=[f"ingest:{broker.hash_password(SERVICE_PW)}"],
        public_port=port,
    )
    assert st.password_file and st.acl_file
    st.password_file.write_text(st.service_users[0] + "\n")
    st.acl_file.write_text("user ingest\ntopic readwrite el/v1/#\n")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
        f"password_file {st.password_file}\nacl_file {st.acl_file}\n"
        # the cloud writes the files 0600: the broker must run as the writer's user
        "user root\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert st.pid_file is not None
    st.pid_file.write_text(str(proc.pid))  # what a service manager's pid file holds
    deadline = time.monotonic() + 10
    while True:
        try:
            c = mqtt_check.connect("127.0.0.1", port, "ingest", SERVICE_PW)
        except OSError:
            c = "down"
        if not isinstance(c, str):
            c.loop_stop()
            c.disconnect()
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("mosquitto did not start")
        time.sleep(0.05)
    app.state.broker_settings = st
    yield Broker(port, st)
    proc.terminate()
    proc.wait(5)


def issue(client: TestClient, world: World, gw: int, serial: str, role: str = "installer",
          **extra: object) -> dict:  # fmt: skip
    r = client.post(
        "/api/v1/claims",
        json={"site_id": world.site_a, "gateway_id": gw, "serial": serial, **extra},
        headers=world.auth(role),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def redeem(client: TestClient, token: str, serial: str) -> tuple[int, dict]:
    r = client.post("/api/v1/claims/redeem", json={"token": token, "serial": serial})
    return r.status_code, dict(r.json())


def test_claim_issues_credentials_once_and_audits(
    client: TestClient, world: World, sessions: sessionmaker[Session]
) -> None:
    """A token redeems once into credentials; the gateway is registered at the token's site."""
    tok = issue(client, world, 101, "EL-0101")
    assert tok["token"].startswith("elc_")
    assert tok["expires_ms"] - int(time.time() * 1000) <= 600_000
    status, creds = redeem(client, tok["token"], "EL-0101")
    assert status == 200, creds
    assert creds["gateway_id"] == 101 and creds["mqtt_username"] == "gw-101"
    assert len(bytes.fromhex(creds["mac_key_hex"])) == 32
    with sessions() as s:
        gw = s.get(models.Gateway, 101)
        assert gw is not None and gw.site_id == world.site_a
        assert gw.mac_key == bytes.fromhex(creds["mac_key_hex"])
        stored = s.scalars(select(models.ClaimToken)).one()
        assert stored.token_hash != tok["token"] and tok["token"] not in stored.token_hash
        cred = s.scalars(select(models.GatewayCredential)).one()
        assert creds["mqtt_password"] not in cred.password_hash
    # reused: refused with the reason, and the refusal is audited
    status, body = redeem(client, tok["token"], "EL-0101")
    assert (status, body["detail"]) == (403, "Claim token was already used")
    r = client.get("/api/v1/provision/audit", headers=world.auth("auditor"))
    assert r.status_code == 200
    rows = r.json()["data"]
    assert [(a["action"], a["outcome"]) for a in rows] == [
        ("claim", "refused"),
        ("claim", "ok"),
        ("issue_token", "ok"),
    ]
    assert rows[0]["reason"] == "Claim token was already used"
    assert rows[1]["actor"] == "gateway:EL-0101" and rows[2]["actor"] == "installer"
    assert {a["claim_token_id"] for a in rows} == {tok["id"]}


def test_claim_refusals(client: TestClient, world: World, sessions: sessionmaker[Session]) -> None:
    """Unknown, expired and foreign tokens are refused with their reason; nothing is issued."""
    assert redeem(client, "elc_nope", "EL-1") == (401, {"detail": "Unknown claim token"})
    tok = issue(client, world, 102, "EL-0102")
    assert redeem(client, tok["token"], "EL-9999") == (
        403, {"detail": "Claim token was issued for another gateway"}
    )  # fmt: skip
    with sessions() as s, s.begin():
        s.execute(update(models.ClaimToken).values(expires_ms=int(time.time() * 1000) - 1))
    assert redeem(client, tok["token"], "EL-0102") == (403, {"detail": "Claim token has expired"})
    with sessions() as s:
        assert s.scalars(select(models.GatewayCredential)).all() == []
        assert s.get(models.Gateway, 102) is None


def test_issue_token_checks(client: TestClient, world: World) -> None:
    """Longer than 10 minutes is refused; operators cannot issue; a number at another site is
    refused."""
    body = {"site_id": world.site_a, "gateway_id": 103, "serial": "EL-3", "ttl_s": 601}
    r = client.post("/api/v1/claims", json=body, headers=world.auth("installer"))
    assert r.status_code == 422
    body["ttl_s"] = 600
    r = client.post("/api/v1/claims", json=body, headers=world.auth("operator"))
    assert (r.status_code, r.json()["detail"]) == (403, "Not enough permissions")
    r = client.post("/api/v1/claims", json=body)
    assert r.status_code == 401
    body["gateway_id"] = 20  # registered at site B
    r = client.post("/api/v1/claims", json=body, headers=world.auth("installer"))
    assert (r.status_code, r.json()["detail"]) == (
        409,
        "Gateway number is registered at another site",
    )
    body["site_id"] = 999_999
    r = client.post("/api/v1/claims", json=body, headers=world.auth("installer"))
    assert (r.status_code, r.json()["detail"]) == (404, "Site not found")


def test_broker_limits_each_gateway_to_its_topics(
    client: TestClient, world: World, secured_broker: Broker, sessions: sessionmaker[Session]
) -> None:
    """Real Mosquitto, files rendered by the cloud: A publishes on its topics; B's login cannot
    publish on A's; a rotated password, a revoked login and a wrong password cannot connect."""
    port = secured_broker.port
    a = redeem(client, issue(client, world, 201, "EL-A")["token"], "EL-A")[1]
    b = redeem(client, issue(client, world, 202, "EL-B")["token"], "EL-B")[1]
    acl = secured_broker.settings.acl_file
    assert acl is not None and "topic write el/v1/201/ev" in acl.read_text()
    time.sleep(0.3)  # SIGHUP is asynchronous; the broker re-reads the files
    svc = mqtt_check.connect("127.0.0.1", port, "ingest", SERVICE_PW)
    assert not isinstance(svc, str)
    lis = mqtt_check.Listener(svc, "el/v1/#")
    ca = mqtt_check.connect("127.0.0.1", port, a["mqtt_username"], a["mqtt_password"])
    cb = mqtt_check.connect("127.0.0.1", port, b["mqtt_username"], b["mqtt_password"])
    assert not isinstance(ca, str) and not isinstance(cb, str)
    mqtt_check.publish(cb, "el/v1/201/ev", b"forged by B")
    mqtt_check.publish(cb, "el/v1/201/state", b"forged by B")
    mqtt_check.publish(ca, "el/v1/202/ev", b"forged by A")
    mqtt_check.publish(ca, "el/v1/201/ev", b"from A")
    assert lis.wait_for(1, WAIT_S)
    time.sleep(0.3)
    assert lis.got == [("el/v1/201/ev", b"from A")]
    assert mqtt_check.connect("127.0.0.1", port, "gw-201", "wrong") == "Not authorized"
    for c in (ca, cb, svc):
        c.loop_stop()
        c.disconnect()
    # rotate A: a rotation token changes nothing; the redeem adds a pending login (both work,
    # the gateway's key is still the old); the confirmation with the new login brings it into
    # force (the old password is refused, the key is the new one)
    r = client.post("/api/v1/gateways/201/credentials/rotate", headers=world.auth("installer"))
    assert r.status_code == 201, r.text
    rot = r.json()
    assert (rot["gateway_id"], rot["serial"], rot["site_id"]) == (201, "EL-A", world.site_a)
    assert "mqtt_password" not in rot and rot["token"].startswith("elc_")
    assert redeem(client, rot["token"], "EL-B")[0] == 403  # bound to A's serial
    status, new = redeem(client, rot["token"], "EL-A")
    assert status == 200, new
    assert new["mac_key_hex"] != a["mac_key_hex"] and new["mqtt_username"] != "gw-201"
    assert redeem(client, rot["token"], "EL-A") == (
        403, {"detail": "Claim token was already used"})  # fmt: skip
    time.sleep(0.3)
    for user, pw in (("gw-201", a["mqtt_password"]), (new["mqtt_username"], new["mqtt_password"])):
        both = mqtt_check.connect("127.0.0.1", port, user, pw)
        assert not isinstance(both, str), (user, both)
        both.loop_stop()
        both.disconnect()
    assert f"user {new['mqtt_username']}\ntopic write el/v1/201/ev" in acl.read_text()
    with sessions() as s:
        assert s.get(models.Gateway, 201).mac_key == bytes.fromhex(a["mac_key_hex"])  # type: ignore[union-attr]
    r = client.post("/api/v1/claims/confirm", auth=(new["mqtt_username"], "wrong"))
    assert (r.status_code, r.json()["detail"]) == (401, "Unknown login or wrong password")
    r = client.post("/api/v1/claims/confirm", auth=("gw-202", b["mqtt_password"]))
    assert r.json() == {"gateway_id": 202, "mqtt_username": "gw-202", "changed": False}
    r = client.post("/api/v1/claims/confirm", auth=(new["mqtt_username"], new["mqtt_password"]))
    assert r.json() == {"gateway_id": 201, "mqtt_username": new["mqtt_username"], "changed": True}
    r = client.post("/api/v1/claims/confirm", auth=(new["mqtt_username"], new["mqtt_password"]))
    assert r.json()["changed"] is False  # idempotent: a lost answer may be asked again
    with sessions() as s:
        assert s.get(models.Gateway, 201).mac_key == bytes.fromhex(new["mac_key_hex"])  # type: ignore[union-attr]
    time.sleep(0.3)
    assert mqtt_check.connect("127.0.0.1", port, "gw-201", a["mqtt_password"]) == "Not authorized"
    ok = mqtt_check.connect("127.0.0.1", port, new["mqtt_username"], new["mqtt_password"])
    assert not isinstance(ok, str)
    ok.loop_stop()
    ok.disconnect()
    r = client.post("/api/v1/claims/confirm", auth=("gw-201", a["mqtt_password"]))
    assert r.status_code == 401  # superseded
    # revoke B, decommission A (admin only)
    r = client.post("/api/v1/gateways/202/credentials/revoke", headers=world.auth("installer"))
    assert r.json() == {"gateway_id": 202, "revoked": 1}
    r = client.post("/api/v1/gateways/201/decommission", headers=world.auth("installer"))
    assert r.status_code == 403
    r = client.post("/api/v1/gateways/201/decommission", headers=world.auth("admin"))
    assert r.json() == {"gateway_id": 201, "revoked": 1}
    time.sleep(0.3)
    assert mqtt_check.connect("127.0.0.1", port, "gw-202", b["mqtt_password"]) == "Not authorized"
    gone = mqtt_check.connect("127.0.0.1", port, new["mqtt_username"], new["mqtt_password"])
    assert gone == "Not authorized"
    r = client.get("/api/v1/provision/audit?gateway_id=201", headers=world.auth("admin"))
    trail = r.json()["data"]
    assert [x["action"] for x in trail][:4] == [
        "decommission", "rotate_confirm", "rotate_redeem", "rotate"]  # fmt: skip
    assert {x["claim_token_id"] for x in trail[1:4]} == {rot["id"]}
    assert [x["actor"] for x in trail[1:4]] == ["gateway:EL-A", "gateway:EL-A", "installer"]
    r = client.get("/api/v1/provision/audit", headers=world.auth("admin"))
    refused = [x for x in r.json()["data"] if x["outcome"] == "refused"]
    assert [(x["action"], x["reason"]) for x in refused][:2] == [
        ("rotate_confirm", "Unknown login or wrong password")] * 2  # fmt: skip
    r = client.post("/api/v1/gateways/999/credentials/rotate", headers=world.auth("admin"))
    assert (r.status_code, r.json()["detail"]) == (404, "Gateway not found")
    # decommissioned: nothing left to rotate; a gateway never claimed has no serial
    r = client.post("/api/v1/gateways/201/credentials/rotate", headers=world.auth("admin"))
    assert (r.status_code, r.json()["detail"]) == (
        409, "Gateway has no active credentials to rotate: claim it")  # fmt: skip
    r = client.post("/api/v1/gateways/10/credentials/rotate", headers=world.auth("admin"))
    assert r.status_code == 409 and "claim it" in r.json()["detail"]
    r = client.post("/api/v1/gateways/201/credentials/rotate", params={"ttl_s": 601},
                    headers=world.auth("admin"))  # fmt: skip
    assert r.status_code == 422


def test_confirm_refuses_odd_logins(client: TestClient) -> None:
    """No login, a NUL or an overlong name, an unknown one: 401, never a 500."""
    assert client.post("/api/v1/claims/confirm").status_code == 401
    for user in ("gw-1\x00", "x" * 5000, "gw-7", "gw-7-r1", "' OR 1=1 --"):
        r = client.post("/api/v1/claims/confirm", auth=(user, "pw\x00"))
        assert (r.status_code, r.json()["detail"]) == (401, "Unknown login or wrong password"), user
