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
from pathlib import Path

import psycopg
import pytest
from emberlink.cloud import models
from emberlink.cloud.core.db import make_engine, make_sessionmaker, upgrade
from sqlalchemy import Engine, text
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
    tables = list(reversed(models.Base.metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(t.delete())


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    _wipe(engine)
    yield make_sessionmaker(engine)
    _wipe(engine)


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
