"""Credential rotation delivered to a running gateway, end to end with the real pieces.

The gateway is the real ``emberlink gateway provision`` process (empty state directory but its
factory identity), polling a simulated Modbus TCP device; the cloud API is served over HTTP by
uvicorn; the ingest worker runs on the database; Mosquitto has the gateways' listener with the
password and ACL files the cloud renders and an internal anonymous listener for the worker.
The installer's commands (``emberlink commission configure``, ``emberlink claim gateway``,
``emberlink claim rotate``) drive it. Checked:

* after the claim the cloud stores the gateway's events;
* a rotation token alone changes nothing: the gateway's login still works;
* ``emberlink claim rotate --gateway`` hands the token over; the gateway pauses, redeems it,
  confirms the new login to the cloud and resumes with it and the new MAC key (nothing left
  pending): the old password is refused by the broker, the new
  one is what the gateway holds, and the cloud stores its events again under the new key;
* a refused rotation (the first token, revoked by the second) says why and leaves the gateway
  running on its credentials; every step is in the audit trail with its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from emberlink.cloud import crud, models
from emberlink.cloud.core.config import Settings
from emberlink.cloud.ingest.pipeline import REGISTRY_TTL_S
from emberlink.cloud.ingest.worker import IngestWorker
from emberlink.cloud.provision import broker, mqtt_check
from emberlink.edge import config as gwconfig
from emberlink.edge.provision.store import ProvisionStore, to_toml
from emberlink.protocol import codes
from emberlink.protocol.errors import MAC_MISMATCH
from emberlink.tools import claim, commission
from emberlink.tools.simulator import Site
from emberlink.tools.testbroker import Broker
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import World, free_port
from .utils import until

pytestmark = [pytest.mark.broker, pytest.mark.modbus]
GW = 601
WAIT_S = 30.0  # a process is up, or an event from the gateway is stored


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The cloud API on a free port (uvicorn in a thread); yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, name="cloud-api", daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@contextlib.contextmanager
def gateway_process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", "emberlink.tools.cli", "gateway", "provision", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        yield p
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _count(sessions: sessionmaker[Session], q: Any) -> int:
    with sessions() as s:
        return int(s.scalar(q) or 0)


def _stored_since(sessions: sessionmaker[Session], t_ms: int) -> int:
    return _count(
        sessions,
        select(func.count())
        .select_from(models.Event)
        .where(models.Event.gateway_id == GW, models.Event.received_ms > t_ms),
    )


def _births(sessions: sessionmaker[Session]) -> int:
    return _count(
        sessions,
        select(func.count())
        .select_from(models.Event)
        .where(models.Event.gateway_id == GW, models.Event.kind == codes.BIRTH),
    )


async def _cli(fn: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """An installer command off the event loop (the simulator and the worker run on it)."""
    capsys.readouterr()
    rc = await asyncio.to_thread(fn, argv)
    out = capsys.readouterr()
    return rc, out.out if rc == 0 else out.err


async def test_rotation_reaches_the_running_gateway(
    tmp_path: Path,
    app: FastAPI,
    world: World,
    sessions: sessionmaker[Session],
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("processes and a broker: once, on PostgreSQL (the routes run on both)")
    # --- broker: the gateways' listener with the cloud's files; the workers' internal one ----
    passwd, acl, pid = tmp_path / "passwd", tmp_path / "acl", tmp_path / "mosquitto.pid"
    passwd.write_text("")
    acl.write_text("")
    internal = free_port()
    mq = Broker(
        tmp_path,
        extra=f"per_listener_settings true\nallow_anonymous false\npassword_file {passwd}\n"
        f"acl_file {acl}\nlistener {internal} 127.0.0.1\nallow_anonymous true\n",
    ).start()
    assert mq.proc is not None
    pid.write_text(str(mq.proc.pid))  # what a service manager's pid file holds
    app.state.broker_settings = broker.BrokerSettings(
        password_file=passwd, acl_file=acl, pid_file=pid, public_port=mq.port
    )
    # --- the site: one TCP device, simulated; the gateway's factory identity -----------------
    site = {
        "gateway": {"heartbeat_s": 30, "series_s": 5},
        "bus": [{"id": 1, "type": "tcp", "host": "127.0.0.1", "port": free_port()}],
        "device": [{"bus": 1, "unit": 1, "profile": "efm_multi", "name": "efm-1"}],
    }
    site_file = tmp_path / "site.toml"
    site_file.write_text(to_toml(site))
    sim_cfg = gwconfig.parse({**site, "gateway": {"id": 0, "data_dir": str(tmp_path / "sim")}})
    serial = "EL-" + secrets.token_hex(4).upper()
    state = tmp_path / "gateway"
    code = ProvisionStore(state, serial=serial).pairing_code
    prov = free_port()
    gw_addr = f"127.0.0.1:{prov}"
    token = world.tokens["installer"]

    stop = asyncio.Event()
    worker = IngestWorker(
        Settings(database_url=db_url, mqtt_port=internal, flush_ms=50, sweep_interval_s=0.2),
        sessions,
        client_id="w-rotate",
    )
    worker_task = asyncio.create_task(worker.run(stop))
    try:
        with (
            served(app) as cloud_url,
            gateway_process(
                [
                    "--state-dir",
                    str(state),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prov),
                    "--advertise",
                    "127.0.0.1",
                    "--mdns-interface",
                    "127.0.0.1",
                ],
                tmp_path / "gateway.log",
            ),  # fmt: skip
        ):
            async with Site(sim_cfg, wire_time=False):
                await asyncio.wait_for(worker.subscribed.wait(), WAIT_S)
                common = ["--gateway", gw_addr, "--code", code]

                for _ in range(int(WAIT_S / 0.2)):  # the gateway process is up
                    if await asyncio.to_thread(_answers, gw_addr, code):
                        break
                    await asyncio.sleep(0.2)
                rc, out = await _cli(
                    commission.main,
                    ["configure", *common, "--unit", "unit A", "--site", str(site_file)],
                    capsys,
                )
                assert rc == 0, out
                cloud_args = ["--cloud", cloud_url, "--api-token", token, "--gateway-id", str(GW)]
                rc, out = await _cli(
                    claim.main,
                    ["gateway", *cloud_args, "--site", str(world.site_a), *common, "--json"],
                    capsys,
                )
                assert rc == 0, out
                first = json.loads((state / "credentials.json").read_text())
                await until(lambda: _births(sessions) >= 1, "the claimed gateway's birth", WAIT_S)

                # a rotation token alone changes nothing: the current login still works
                rc, out = await _cli(claim.main, ["rotate", *cloud_args, "--json"], capsys)
                assert rc == 0, out
                pending = json.loads(out)
                assert pending["serial"] == serial and "mqtt_password" not in pending
                c = mqtt_check.connect(
                    "127.0.0.1", mq.port, first["mqtt_username"], first["mqtt_password"]
                )
                assert not isinstance(c, str), c
                c.loop_stop()
                c.disconnect()

                # the installer rotates through the gateway
                births = _births(sessions)
                rc, out = await _cli(claim.main, ["rotate", *cloud_args, *common, "--json"], capsys)
                assert rc == 0, out
                rotated = json.loads(out)
                second = json.loads((state / "credentials.json").read_text())
                assert not (state / "pending.json").exists()
                assert rotated["previous_fingerprint"] != rotated["fingerprint"]
                assert second["mac_key_hex"] != first["mac_key_hex"]
                assert second["mqtt_password"] != first["mqtt_password"]
                with sessions() as s:
                    g = s.get(models.Gateway, GW)
                    assert g is not None and g.mac_key == bytes.fromhex(second["mac_key_hex"])
                await asyncio.sleep(0.3)  # the broker re-reads its files on SIGHUP
                user = first["mqtt_username"]
                refused = mqtt_check.connect("127.0.0.1", mq.port, user, first["mqtt_password"])
                assert refused == "Not authorized"
                # the resumed service logs in with the new password and the cloud stores its
                # events again (see REGISTRY_TTL_S below for the first seconds)
                rotated_ms = crud.now_ms()
                await until(
                    lambda: _stored_since(sessions, rotated_ms) > 0,
                    "an event sealed with the new key stored",
                    WAIT_S,
                )
                # the first token was revoked by the second: refused with the reason, and the
                # gateway resumes on its (rotated) credentials
                births = _births(sessions)
                rc, out = await asyncio.to_thread(
                    _rotate_with, gw_addr, code, pending["token"], cloud_url
                )
                assert rc == 1 and "Claim token was revoked" in out, out
                assert json.loads((state / "credentials.json").read_text()) == second
                await until(lambda: _births(sessions) > births, "a birth after the refusal", WAIT_S)
                rc, out = await _cli(commission.main, ["status", *common, "--json"], capsys)
                assert rc == 0 and json.loads(out)["state"] == "claimed", out
    finally:
        stop.set()
        await asyncio.wait_for(worker_task, WAIT_S)
        mq.stop()
    # Known gap, in the ingest worker (cloud/ingest/pipeline.py, not provisioning): it caches a
    # gateway's MAC key for REGISTRY_TTL_S, so what the gateway seals with its new key in those
    # first seconds is quarantined (kept with the reason), never stored under a wrong key. Any
    # quarantine row here must be that, and no later.
    with sessions() as s:
        rows = s.scalars(select(models.Quarantine)).all()
    for q in rows:
        assert (q.gateway_id, q.reason) == (GW, MAC_MISMATCH), (q.topic, q.reason, q.detail)
        assert q.received_ms <= rotated_ms + (REGISTRY_TTL_S + 2) * 1000
    with sessions() as s:
        trail = s.scalars(select(models.ProvisionAudit).order_by(models.ProvisionAudit.id)).all()
    got = [(a.action, a.outcome, a.claim_token_id is not None) for a in trail]
    assert got[:7] == [
        ("issue_token", "ok", True),
        ("claim", "ok", True),
        ("rotate", "ok", True),  # the token only printed
        ("rotate", "ok", True),  # the token handed to the gateway
        ("rotate_redeem", "ok", True),
        ("rotate_confirm", "ok", True),  # the gateway proved it holds the new login
        ("claim", "refused", True),
    ]
    assert trail[3].claim_token_id == trail[4].claim_token_id == trail[5].claim_token_id
    assert trail[6].reason == "Claim token was revoked"
    assert trail[6].claim_token_id == trail[2].claim_token_id
    assert "1 earlier pending token(s) revoked" in trail[3].reason


def _answers(gw_addr: str, code: str) -> bool:
    try:
        commission.request("GET", commission.gateway_url(gw_addr) + "/status", code)
    except commission.Refused:
        return False
    return True


def _rotate_with(gw_addr: str, code: str, token: str, cloud_url: str) -> tuple[int, str]:
    try:
        commission.request(
            "POST",
            commission.gateway_url(gw_addr) + "/rotate",
            code,
            json={"token": token, "cloud_url": cloud_url},
        )
    except commission.Refused as e:
        return 1, str(e)
    return 0, ""
