"""Done-when of issue 7: a fresh gateway, from the box to claimed and publishing.

Roles, each a real component: the gateway (``emberlink gateway provision``, a process with an
empty state directory but its factory identity), the simulated site (pymodbus over a socat pty
and TCP), Mosquitto (two listeners: the gateways' with the password and ACL files the cloud
renders, and an internal one for the ingest worker), the cloud API and the ingest worker
(processes, PostgreSQL), and the installer (the ``emberlink discover | commission | claim``
commands). Checkpoints, in order:

    discovered   mDNS lists the gateway as unclaimed (zeroconf over loopback)
    configured   the site is pushed with the pairing code
    scanned      units 1-3 on the RTU bus found and identified by signature, unit 4 absent
    commissioned every point read, report written, exit 0
    claimed      token -> gateway -> cloud -> credentials; re-announced as claimed with the
                 fingerprint of the key the cloud issued
    publishing   the cloud stores the gateway's events (MAC-sealed) including a panel fire alarm
    isolated     another claimed gateway's login cannot publish on this gateway's topics: the
                 broker drops it, nothing reaches the cloud (no event, no quarantine row), while
                 the same login still publishes on its own topic
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from emberlink.cloud import crud, schemas
from emberlink.cloud.core.db import make_engine, make_sessionmaker, upgrade
from emberlink.cloud.provision import mqtt_check
from emberlink.edge import config as gwconfig
from emberlink.edge.provision.store import ProvisionStore, to_toml
from emberlink.protocol import codes, messages, wire
from emberlink.tools import claim, commission, discover
from emberlink.tools.simulator import Site
from sqlalchemy import text

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.modbus]

PG_ADMIN = os.environ.get("EMBERLINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_S = 20.0  # a process (API, worker, gateway) is up and answering
DISCOVER_S = 2.0  # mDNS browse window
CONVERGE_S = 30.0  # an event from the gateway is in the cloud's database
QUIET_S = 2.0  # how long we watch for a forged publish that must never arrive
GW, OTHER = 501, 502


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(pred: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(step)


@pytest.fixture
def database() -> Iterator[str]:
    name = f"emberlink_prov_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as f:
        p = subprocess.Popen(
            args, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        yield p
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def emberlink(*args: str) -> list[str]:
    return [sys.executable, "-m", "emberlink.tools.cli", *args]


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    eng = make_engine(url)
    try:
        with eng.connect() as c:
            return list(c.execute(text(sql), params).all())
    finally:
        eng.dispose()


@contextlib.asynccontextmanager
async def cli(
    fn: Any, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[tuple[int, str]]:
    """Run an installer command off the event loop (the simulator runs on it)."""
    capsys.readouterr()
    rc = await asyncio.to_thread(fn, argv)
    out = capsys.readouterr()
    yield rc, out.out if rc == 0 else out.err


async def test_fresh_gateway_to_claimed_and_isolated(
    tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --- the registry: an organisation, a unit, a site and an installer with an API token -----
    sessions = make_sessionmaker(make_engine(database))
    with sessions() as s, s.begin():
        org = crud.create_organisation(session=s, org_in=schemas.OrganisationCreate(name="Org"))
        unit = crud.create_unit(
            session=s,
            unit_in=schemas.UnitCreate(
                organisation_id=org.id, name="Example School", kind="key_unit", category="school"
            ),
        )  # type: ignore[arg-type]
        site_id = crud.create_site(
            session=s, site_in=schemas.SiteCreate(unit_id=unit.id, name="Main")
        ).id
        installer = crud.create_user(
            session=s, user_in=schemas.UserCreate(name="ana", role="installer")
        )
        api_token = crud.create_token(session=s, user=installer)[1]

    # --- the broker: gateways' listener with cloud-rendered files; internal listener ----------
    gw_port, internal_port = free_port(), free_port()
    passwd, acl, pid = tmp_path / "passwd", tmp_path / "acl", tmp_path / "mosquitto.pid"
    passwd.write_text("")
    acl.write_text("")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings true\npersistence false\nuser root\n"
        f"listener {gw_port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}\n"
        f"listener {internal_port} 127.0.0.1\nallow_anonymous true\n"
    )
    env = {
        "EMBERLINK_DATABASE_URL": database,
        "EMBERLINK_MQTT_PORT": str(internal_port),
        "EMBERLINK_BROKER_PASSWORD_FILE": str(passwd),
        "EMBERLINK_BROKER_ACL_FILE": str(acl),
        "EMBERLINK_BROKER_PID_FILE": str(pid),
        "EMBERLINK_BROKER_PUBLIC_PORT": str(gw_port),
        "EMBERLINK_MIN_DWELL_S": "0",
    }
    api_port, prov_port = free_port(), free_port()
    cloud_url = f"http://127.0.0.1:{api_port}"

    # --- the site (pushed by the installer; the simulator plays the same devices) -------------
    bus1 = tmp_path / "bus1"
    site = {
        "gateway": {"heartbeat_s": 30, "series_s": 5},
        "bus": [
            {"id": 1, "type": "rtu", "device": str(bus1), "baud": 19200, "turnaround_ms": 50},
            {"id": 2, "type": "tcp", "host": "127.0.0.1", "port": free_port()},
        ],
        "device": [
            {"bus": 1, "unit": 1, "profile": "fire_panel", "name": "panel-1"},
            {"bus": 1, "unit": 2, "profile": "acrel_asj", "name": "asj-2"},
            {"bus": 1, "unit": 3, "profile": "smoke_loop", "name": "smoke-3"},
            {"bus": 2, "unit": 1, "profile": "efm_multi", "name": "efm-1"},
        ],
    }
    site_file = tmp_path / "site.toml"
    site_file.write_text(to_toml(site))
    sim_cfg = gwconfig.parse({**site, "gateway": {"id": 0, "data_dir": str(tmp_path / "simvar")}})

    # --- the gateway's factory identity (serial and pairing code, as on its label) ------------
    serial = "EL-" + secrets.token_hex(4).upper()
    state_dir = tmp_path / "gateway"
    code = ProvisionStore(state_dir, serial=serial).pairing_code
    assert not (state_dir / "site.json").exists() and not (state_dir / "credentials.json").exists()

    with (
        process([MOSQUITTO, "-c", str(conf)], tmp_path / "mosquitto.log") as mosq,
        process(emberlink("cloud", "serve", "--port", str(api_port)), tmp_path / "api.log", env),
        process(emberlink("cloud", "ingest"), tmp_path / "ingest.log", env),
        process(
            emberlink(
                "gateway",
                "provision",
                "--state-dir",
                str(state_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(prov_port),
                "--advertise",
                "127.0.0.1",
                "--mdns-interface",
                "127.0.0.1",
            ),
            tmp_path / "gateway.log",
        ),
    ):
        pid.write_text(str(mosq.pid))  # what the service manager's pid file would hold
        async with Site(sim_cfg, wire_time=False) as sim:
            # discovered
            async def browse() -> dict[str, Any] | None:
                found = await discover.discover(DISCOVER_S, ["127.0.0.1"])
                return next((r for r in found if r["serial"] == serial), None)

            deadline = time.monotonic() + START_S
            row = await browse()
            while row is None and time.monotonic() < deadline:
                row = await browse()
            assert row is not None, "gateway not discovered over mDNS"
            assert (row["state"], row["fingerprint"], row["port"]) == ("unclaimed", "-", prov_port)
            gw_addr = f"{row['address']}:{row['port']}"

            # configured
            async with cli(
                commission.main,
                [
                    "configure",
                    "--gateway",
                    gw_addr,
                    "--code",
                    code,
                    "--unit",
                    "Example School",
                    "--site",
                    str(site_file),
                ],
                capsys,
            ) as (rc, out):
                assert rc == 0, out
            async with cli(
                commission.main,
                [
                    "configure",
                    "--gateway",
                    gw_addr,
                    "--code",
                    "00000000",
                    "--unit",
                    "x",
                    "--site",
                    str(site_file),
                ],
                capsys,
            ) as (rc, out):
                assert rc == 1 and "Wrong pairing code" in out

            # scanned
            async with cli(
                commission.main,
                [
                    "scan",
                    "--gateway",
                    gw_addr,
                    "--code",
                    code,
                    "--bus",
                    "1",
                    "--units",
                    "1-4",
                    "--json",
                ],
                capsys,
            ) as (rc, out):
                assert rc == 0, out
                assert [(f["unit"], f["profile"]) for f in json.loads(out)] == [
                    (1, "fire_panel"),
                    (2, "acrel_asj"),
                    (3, "smoke_loop"),
                ]

            # commissioned
            report = tmp_path / "commissioning.json"
            async with cli(
                commission.main,
                [
                    "read",
                    "--gateway",
                    gw_addr,
                    "--code",
                    code,
                    "--report",
                    str(report),
                    "--signed-by",
                    "ana",
                ],
                capsys,
            ) as (rc, out):
                assert rc == 0, out
            rep = json.loads(report.read_text())
            assert rep["passed"] and rep["signed_off_by"] == "ana" and rep["serial"] == serial

            # claimed (the cloud API must be up)
            await wait_until(lambda: _http_ok(cloud_url), START_S, "cloud API")
            # a token issued for another serial: the gateway passes the cloud's refusal on
            async with cli(
                claim.main,
                [
                    "token",
                    "--cloud",
                    cloud_url,
                    "--api-token",
                    api_token,
                    "--site",
                    str(site_id),
                    "--gateway-id",
                    str(GW),
                    "--serial",
                    "EL-SOMEONE-ELSE",
                    "--ttl",
                    "60",
                    "--json",
                ],
                capsys,
            ) as (rc, out):
                assert rc == 0, out
                foreign = json.loads(out)["token"]
            with pytest.raises(commission.Refused, match="issued for another gateway"):
                await asyncio.to_thread(
                    commission.request,
                    "POST",
                    f"http://{gw_addr}/claim",
                    code,
                    json={"token": foreign, "cloud_url": cloud_url},
                )
            async with cli(
                claim.main,
                [
                    "gateway",
                    "--cloud",
                    cloud_url,
                    "--api-token",
                    api_token,
                    "--site",
                    str(site_id),
                    "--gateway-id",
                    str(GW),
                    "--gateway",
                    gw_addr,
                    "--code",
                    code,
                    "--json",
                ],
                capsys,
            ) as (rc, out):
                assert rc == 0, out
                claimed = json.loads(out)
            key = rows(database, "SELECT mac_key FROM gateways WHERE id = :g", g=GW)[0][0]
            assert claimed["fingerprint"] == hashlib.sha256(bytes(key)).hexdigest()[:16]
            row = await browse()
            assert row is not None and row["state"] == "claimed"
            assert row["fingerprint"] == claimed["fingerprint"]

            # publishing: birth/heartbeat and a panel fire alarm reach the cloud's database
            await wait_until(
                lambda: rows(database, "SELECT 1 FROM events WHERE gateway_id = :g", g=GW),
                CONVERGE_S,
                "the claimed gateway's first events in the cloud",
            )
            sim.device("panel-1").set_bit("system_status", 1, True)
            await wait_until(
                lambda: rows(
                    database,
                    "SELECT 1 FROM events WHERE gateway_id = :g AND kind = :k",
                    g=GW,
                    k=codes.FIRE_ALARM,
                ),
                CONVERGE_S,
                "the panel's FIRE_ALARM in the cloud",
            )
            assert rows(database, "SELECT count(*) FROM quarantine")[0][0] == 0

            # isolated: another gateway, claimed the same way, tries to publish as this one
            other = await asyncio.to_thread(_claim_other, cloud_url, api_token, site_id)
            await asyncio.sleep(0.5)  # the broker re-reads its files on SIGHUP
            forged = messages.Batch(
                GW,
                999,
                1,
                int(time.time() * 1000),
                [messages.Event(codes.FIRE_ALARM, 0, 1, state=codes.ACTIVE)],
            )
            own = messages.Batch(
                OTHER,
                1,
                1,
                int(time.time() * 1000),
                [messages.Event(codes.FIRE_ALARM, 0, 1, state=codes.ACTIVE)],
            )
            key_other = bytes.fromhex(other["mac_key_hex"])
            forgeries = [
                (f"el/v1/{GW}/ev", wire.seal(forged, key_other)),
                (f"el/v1/{GW}/ev", wire.seal(forged)),
                (f"el/v1/{GW}/state", wire.seal(forged)),
            ]
            # a listener on the internal side sees everything the broker lets through
            spy = mqtt_check.connect("127.0.0.1", internal_port, "spy", "")
            assert not isinstance(spy, str)
            seen = mqtt_check.Listener(spy, f"el/v1/{GW}/#")
            await asyncio.to_thread(
                _publish_as,
                gw_port,
                other,
                [*forgeries, (f"el/v1/{OTHER}/ev", wire.seal(own, key_other))],
            )
            await wait_until(
                lambda: rows(database, "SELECT 1 FROM events WHERE gateway_id = :g", g=OTHER),
                CONVERGE_S,
                "the other gateway's own batch in the cloud",
            )
            await asyncio.sleep(QUIET_S)
            spy.loop_stop()
            spy.disconnect()
            assert not {p for _, p in forgeries} & {p for _, p in seen.got}
            assert (
                rows(
                    database,
                    "SELECT count(*) FROM events WHERE gateway_id = :g AND boot = 999",
                    g=GW,
                )[0][0]
                == 0
            )
            assert rows(database, "SELECT count(*) FROM quarantine")[0][0] == 0
            audit = [r[0] for r in rows(database, "SELECT action FROM provision_audit ORDER BY id")]
            assert audit == ["issue_token", "claim", "issue_token", "claim", "issue_token", "claim"]
            outcomes = rows(database, "SELECT outcome, reason FROM provision_audit ORDER BY id")
            assert outcomes[1] == ("refused", "Claim token was issued for another gateway")


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/api/v1/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _claim_other(cloud_url: str, api_token: str, site_id: int) -> dict[str, Any]:
    import httpx

    h = {"Authorization": f"Bearer {api_token}"}
    tok = httpx.post(
        cloud_url + "/api/v1/claims",
        headers=h,
        timeout=10,
        json={"site_id": site_id, "gateway_id": OTHER, "serial": "EL-OTHER"},
    ).json()
    r = httpx.post(
        cloud_url + "/api/v1/claims/redeem",
        timeout=10,
        json={"token": tok["token"], "serial": "EL-OTHER"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _publish_as(port: int, creds: dict[str, Any], msgs: list[tuple[str, bytes]]) -> None:
    c = mqtt_check.connect("127.0.0.1", port, creds["mqtt_username"], creds["mqtt_password"])
    assert not isinstance(c, str), f"the other gateway cannot log in: {c}"
    try:
        for topic, payload in msgs:
            mqtt_check.publish(c, topic, payload)
    finally:
        c.loop_stop()
        c.disconnect()
