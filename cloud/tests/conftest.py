"""Fixtures: every database test runs on SQLite (WAL, a file in tmp) and on PostgreSQL.

The schema comes from the Alembic history (never ``create_all``), so the migrations are what is
tested. PostgreSQL gets a uniquely named database per session, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from emberlink.cloud import crud, models, schemas
from emberlink.cloud.core.config import Settings
from emberlink.cloud.core.db import make_engine, make_sessionmaker, upgrade
from emberlink.cloud.main import create_app
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

PG_ADMIN = os.environ.get("EMBERLINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _pg_url(dbname: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"emberlink_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "emberlink.db")
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "pg_database" if request.param == "postgresql" else "sqlite_database"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _wipe(engine: Engine) -> None:
    # DELETE, not TRUNCATE: on tables this small it is many times faster on PostgreSQL.
    # The maintenance delete guard (migration 0010) is off only inside this transaction.
    guard = models.MaintGuard.__table__
    with engine.begin() as conn:
        conn.execute(guard.update().values(enforce=0))
        for t in reversed(models.Base.metadata.sorted_tables):
            if t is not guard:
                conn.execute(t.delete())
        conn.execute(guard.update().values(enforce=1))


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    _wipe(engine)
    return make_sessionmaker(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A private Mosquitto on a free port; yields the port."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("mosquitto did not start") from None
            time.sleep(0.05)
    yield port
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- API ----------------------------------------------------------------------------------------


ROLES = ("admin", "operator", "installer", "contractor", "auditor")


@dataclass
class World:
    """Two units (A with gateway 10, B with gateway 20) and a token per role."""

    tokens: dict[str, str]
    unit_a: int
    unit_b: int
    site_a: int
    site_b: int

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def app(db_url: str, sessions: sessionmaker[Session]) -> Iterator[FastAPI]:
    application = create_app(Settings(database_url=db_url, min_dwell_s=0))
    yield application
    application.state.write_engine.dispose()
    application.state.read_engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> World:
    from .utils import make_gateway

    with sessions() as s, s.begin():
        org = crud.create_organisation(
            session=s, org_in=schemas.OrganisationCreate(name="Example Holdings")
        )
        units, sites = [], []
        for name, kind in (("A", "key_unit"), ("B", "micro_station")):
            u = crud.create_unit(
                session=s,
                unit_in=schemas.UnitCreate(
                    organisation_id=org.id,
                    name=f"unit {name}",
                    kind=kind,
                    category="school",  # type: ignore[arg-type]
                ),
            )
            site = crud.create_site(
                session=s, site_in=schemas.SiteCreate(unit_id=u.id, name=f"site {name}")
            )
            units.append(u.id)
            sites.append(site.id)
        make_gateway(s, 10, site=s.get(models.Site, sites[0]))
        make_gateway(s, 20, site=s.get(models.Site, sites[1]))
        tokens = {}
        for role in ROLES:
            user = crud.create_user(
                session=s,
                user_in=schemas.UserCreate(
                    name=role,
                    role=role,  # type: ignore[arg-type]
                    unit_ids=[units[0]] if role == "contractor" else [],
                ),
            )
            tokens[role] = crud.create_token(session=s, user=user)[1]
    return World(tokens, units[0], units[1], sites[0], sites[1])
