"""Settings, migrations, the bootstrap admin and the CLI."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from emberlink.cloud import cli, models
from emberlink.cloud.core.config import Settings, load_settings
from emberlink.cloud.core.db import alembic_config, make_engine, upgrade
from emberlink.cloud.core.security import hash_token
from emberlink.cloud.main import create_app
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from .conftest import PG_ADMIN

GOOD_TOKEN = "x" * 40


def test_migrations_match_the_models(engine: Engine) -> None:
    """The Alembic history builds exactly the schema models.py describes."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
    assert diff == []


@pytest.mark.parametrize("token", ["changethis", "CHANGEME", "short"])
def test_settings_refuse_placeholder_or_short_tokens(token: str) -> None:
    with pytest.raises(ValidationError, match="EMBERLINK_BOOTSTRAP_ADMIN_TOKEN"):
        Settings(bootstrap_admin_token=token)


def test_settings_refuse_an_inverted_backlog_band() -> None:
    with pytest.raises(ValidationError, match="backlog_low must be below backlog_high"):
        Settings(backlog_low=10, backlog_high=5)


def test_settings_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "cloud.env"
    env.write_text("EMBERLINK_OFFLINE_AFTER_MISSES=5\nEMBERLINK_MQTT_PORT=1999\n")
    monkeypatch.setenv("EMBERLINK_ENV_FILE", str(env))
    monkeypatch.setenv("EMBERLINK_MQTT_PORT", "2000")  # the environment wins over the file
    s = load_settings()
    assert (s.offline_after_misses, s.mqtt_port) == (5, 2000)


def test_bootstrap_admin_from_settings(db_url: str, sessions: sessionmaker[Session]) -> None:
    app = create_app(Settings(database_url=db_url, bootstrap_admin_token=GOOD_TOKEN))
    with TestClient(app) as c:
        r = c.get("/api/v1/users/me", headers={"Authorization": f"Bearer {GOOD_TOKEN}"})
        assert (r.status_code, r.json()["role"], r.json()["name"]) == (200, "admin", "admin")
    with TestClient(app):  # a second start creates nobody
        pass
    with sessions() as s:
        assert len(list(s.scalars(select(models.User)))) == 1
        assert s.scalars(select(models.ApiToken.token_hash)).one() == hash_token(GOOD_TOKEN)
    app.state.write_engine.dispose()
    app.state.read_engine.dispose()


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for p in (
        "/api/v1/fleet",
        "/api/v1/events",
        "/api/v1/events/export.csv",
        "/api/v1/alarms/{alarm_id}/ack",
        "/api/v1/ingest/{gateway_id}",
    ):
        assert p in paths


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each engine (the session's ones are migrated)."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "empty.db")
        return
    name = f"emberlink_mig_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_cli_migrate_and_create_admin(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_db_url
    assert cli.main(["--database-url", url, "migrate"]) == 0
    assert cli.main(["--database-url", url, "create-admin", "--name", "root"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("elk_")
    assert cli.main(["--database-url", url, "create-admin", "--name", "root"]) == 1
    assert "user 'root' already exists" in capsys.readouterr().err
    engine = make_engine(url)
    with sessionmaker(engine)() as s:
        assert s.scalars(select(models.ApiToken.token_hash)).one() == hash_token(token)
    engine.dispose()


def test_cli_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBERLINK_BOOTSTRAP_ADMIN_TOKEN", "changethis")
    assert cli.main(["migrate"]) == 2
    assert "placeholder" in capsys.readouterr().err


def test_cli_ingest_refuses_several_workers_without_shared_subscription(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A broker without $share/ (the demo's embedded amqtt) gives every worker every batch.
    monkeypatch.setenv("EMBERLINK_MQTT_SHARED_SUBSCRIPTION", "false")
    assert cli.main(["ingest", "--workers", "2"]) == 2
    assert "EMBERLINK_MQTT_SHARED_SUBSCRIPTION" in capsys.readouterr().err


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return rev


def test_upgrade_is_idempotent_and_downgrade_round_trips(empty_db_url: str) -> None:
    """The one history runs both ways on both databases (SQLite in batch mode)."""
    url = empty_db_url
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    upgrade(url)
    upgrade(url)
    assert _revision(url) == head
    command.downgrade(alembic_config(url), "base")
    assert _revision(url) is None
    engine = make_engine(url)
    with engine.connect() as conn:
        left = set(inspect(conn).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert left == set()
    upgrade(url)
    assert _revision(url) == head
