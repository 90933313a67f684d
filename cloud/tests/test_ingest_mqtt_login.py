"""The ingest worker logs in to a Mosquitto without an anonymous listener.

The broker is configured as the provisioning configures it: a password file, an ACL giving the
ingest service user ``el/v1/#``, ``allow_anonymous false``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from emberlink.cloud import commands, models
from emberlink.cloud.core.config import Settings
from emberlink.cloud.ingest.worker import IngestWorker
from emberlink.protocol import cbor, messages, topics, wire
from emberlink.tools.testbroker import Broker
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .utils import batch, make_gateway, until

pytestmark = pytest.mark.broker
WAIT_S = 20
GW = 4
SERVICE = ("ingest", "ingest-secret-1")
GATEWAY = ("gw-4", "gateway-secret-4")


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Broker]:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), *SERVICE], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), *GATEWAY], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        "user ingest\ntopic readwrite el/v1/#\n\n"
        f"user gw-{GW}\ntopic write el/v1/{GW}/ev\ntopic read el/v1/{GW}/ack\n"
        f"topic read el/v1/{GW}/cmd\n"
    )
    b = Broker(tmp_path, f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n").start()
    yield b
    b.stop()


def _settings(port: int, **login: str) -> Settings:
    return Settings(mqtt_port=port, flush_events=100, flush_ms=50, **login)  # type: ignore[arg-type]


def _events(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(models.Event)) or 0


async def test_worker_with_the_service_login_ingests_and_acks(
    locked_broker: Broker, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s, s.begin():
        make_gateway(s, GW)
    settings = _settings(locked_broker.port, mqtt_username=SERVICE[0], mqtt_password=SERVICE[1])
    w = IngestWorker(settings, sessions, client_id="login-ok", sweep=False)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        await asyncio.wait_for(w.subscribed.wait(), WAIT_S)
        acks: list[messages.Ack] = []
        user, password = GATEWAY
        async with aiomqtt.Client(
            "127.0.0.1", locked_broker.port, username=user, password=password, identifier="gw"
        ) as gw:
            await gw.subscribe(topics.topic(GW, "ack"), qos=1)

            async def read() -> None:
                async for m in gw.messages:
                    acks.append(messages.decode_ack(m.payload))

            reader = asyncio.create_task(read())
            await gw.publish(topics.topic(GW, "ev"), wire.seal(batch(GW, 1, 3)), qos=1)
            await until(lambda: messages.Ack(GW, 1, 3) in acks, "the ack", WAIT_S)
            reader.cancel()
        assert _events(sessions) == 3
        assert (w.stats.login_refused, w.stats.last_error) == (0, "")
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


@pytest.mark.parametrize(
    "login",
    [{"mqtt_username": SERVICE[0], "mqtt_password": "wrong"}, {}],
    ids=["wrong-password", "anonymous"],
)
async def test_a_refused_login_is_logged_with_the_reason_and_retried(
    locked_broker: Broker,
    sessions: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
    login: dict[str, str],
) -> None:
    w = IngestWorker(_settings(locked_broker.port, **login), sessions, client_id="bad", sweep=False)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    with caplog.at_level(logging.ERROR, logger="emberlink.cloud.ingest.worker"):
        await until(lambda: w.stats.login_refused >= 2, "two refused attempts", WAIT_S)
    assert not task.done()  # the worker keeps running and trying, it does not exit
    assert not w.subscribed.is_set()
    assert "authori" in w.stats.last_error.lower(), w.stats.last_error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, caplog.text
    who = "user 'ingest'" if login else "an anonymous client"
    assert f"refused the login of {who}" in errors[0], errors[0]
    assert "EMBERLINK_MQTT_PASSWORD" in errors[0]
    stop.set()
    await asyncio.wait_for(task, WAIT_S)  # and stops promptly while waiting to retry


async def test_operator_commands_are_published_with_the_service_login(
    locked_broker: Broker,
) -> None:
    """The API's short-lived command connection logs in as the cloud does (commands.publish)."""
    port = locked_broker.port
    cmd = messages.Command(GW, 7, messages.OP_REBIRTH)
    user, password = GATEWAY
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password) as gw:
        await gw.subscribe(topics.topic(GW, topics.COMMAND), qos=1)
        await commands.publish(_settings(port, mqtt_username=SERVICE[0], mqtt_password=SERVICE[1]),
                               [cmd])  # fmt: skip
        async with asyncio.timeout(WAIT_S):
            msg = await anext(aiter(gw.messages))
        assert messages.command_from_map(cbor.loads(bytes(msg.payload))).id == 7  # type: ignore[arg-type]
    with pytest.raises(commands.PublishError, match=r"(?i)not authori[sz]ed|bad user"):
        await commands.publish(_settings(port), [cmd])  # anonymous: refused with the reason


def test_login_settings_are_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="without EMBERLINK_MQTT_USERNAME"):
        Settings(mqtt_password="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="EMBERLINK_MQTT_TLS_CA: no such file"):
        Settings(mqtt_tls_ca=str(tmp_path / "missing.pem"))
    s = Settings(mqtt_username="ingest", mqtt_password="s3cr3t-pw-xyz")  # type: ignore[arg-type]
    assert "s3cr3t-pw-xyz" not in repr(s)  # the password is never logged with the settings


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_worker_connects_with_tls_verifying_the_broker_against_the_ca(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    cert, key = _self_signed(tmp_path, "broker")
    other, _ = _self_signed(tmp_path, "other")
    b = Broker(
        tmp_path, f"allow_anonymous true\ncafile {cert}\ncertfile {cert}\nkeyfile {key}\n"
    ).start()
    stop = asyncio.Event()
    ok = IngestWorker(
        _settings(b.port, mqtt_tls_ca=str(cert)), sessions, client_id="tls", sweep=False
    )
    bad = IngestWorker(
        _settings(b.port, mqtt_tls_ca=str(other)), sessions, client_id="x", sweep=False
    )
    tasks = [asyncio.create_task(w.run(stop)) for w in (ok, bad)]
    try:
        await asyncio.wait_for(ok.subscribed.wait(), WAIT_S)
        # a broker whose certificate the configured CA did not sign is not trusted
        await until(lambda: bad.stats.last_error != "", "the untrusted broker refused", WAIT_S)
        assert not bad.subscribed.is_set()
        assert "certificate verify failed" in bad.stats.last_error, bad.stats.last_error
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        b.stop()
