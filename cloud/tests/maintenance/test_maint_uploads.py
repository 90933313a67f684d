"""Uploads (POST /maint/visits/{id}/attachments, POST /maint/blobs) on both databases: the body
is refused (413) while it streams once it is over the limit; a write waiting for the database
does not hold the event loop; on SQLite a slow upload does not hold the write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from emberlink.cloud import models
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import World
from .test_maint_api import P, _open, _setup

MiB = 1024 * 1024


def _chunks(total: int) -> Iterator[bytes]:  # chunked transfer: no Content-Length to check first
    for _ in range(total // 65536):
        yield b"\x00" * 65536


def test_an_oversize_upload_is_refused_with_the_reason(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    m = _setup(client, world)
    vid = _open(client, world, m)["id"]
    h = world.auth("contractor")
    too_large = (413, {"detail": "Attachment larger than 5 MiB"})
    for path in ("/blobs", f"/visits/{vid}/attachments?name=big.bin"):
        r = client.post(P + path, headers=h, content=_chunks(6 * MiB))
        assert (r.status_code, r.json()) == too_large
        r = client.post(P + path, headers=h, content=b"\x00" * (5 * MiB + 1))
        assert (r.status_code, r.json()) == too_large
        r = client.post(P + path, headers=h, content=b"")
        assert (r.status_code, r.json()) == (422, {"detail": "Empty attachment"})
    # Exactly the limit, streamed, is stored.
    r = client.post(
        P + f"/visits/{vid}/attachments?name=ok.bin", headers=h, content=_chunks(5 * MiB)
    )
    assert r.status_code == 201 and r.json()["size"] == 5 * MiB
    with sessions() as s:
        assert s.scalars(select(models.MaintBlob.size)).all() == [5 * MiB]
        assert len(s.scalars(select(models.MaintAttachment)).all()) == 1


@pytest.mark.parametrize("route", ["blob", "attachment"])
def test_an_upload_waiting_for_the_database_does_not_stop_other_requests(
    app: FastAPI, client: TestClient, world: World, engine: Engine, route: str
) -> None:
    """A write that waits for another writer (another process's SQLite write lock, a PostgreSQL
    table lock) must not hold the event loop: other requests are answered meanwhile."""
    m = _setup(client, world)
    path = "/blobs" if route == "blob" else f"/visits/{_open(client, world, m)['id']}/attachments"
    writing = threading.Event()

    def on_statement(*_: Any) -> None:
        writing.set()

    got: dict[str, Any] = {}
    h = world.auth("contractor")
    with engine.connect() as holder:
        tx = holder.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        if engine.dialect.name == "postgresql":
            holder.execute(text("LOCK TABLE maint_blobs IN EXCLUSIVE MODE"))  # reads still go
        event.listen(app.state.write_engine, "before_cursor_execute", on_statement)
        writer = threading.Thread(
            target=lambda: got.update(
                upload=client.post(P + path + "?name=a.txt", headers=h, content=b"evidence")
            )
        )
        writer.start()
        assert writing.wait(10), "the upload did not reach the database"
        time.sleep(0.3)  # on to the statement that waits for the holder
        reader = threading.Thread(
            target=lambda: got.update(firms=client.get(P + "/firms", headers=h))
        )
        reader.start()
        reader.join(10)
        answered_meanwhile = not reader.is_alive() and writer.is_alive()
        tx.commit()
    writer.join(40)
    reader.join(40)
    event.remove(app.state.write_engine, "before_cursor_execute", on_statement)
    assert answered_meanwhile
    assert got["firms"].status_code == 200
    assert got["upload"].status_code == 201, got["upload"].text


def test_a_slow_upload_does_not_hold_the_sqlite_write_lock(
    app: FastAPI, client: TestClient, world: World, db_url: str
) -> None:
    """While an upload's body is still arriving, another process can write the SQLite file."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL has no database-wide write lock")
    path = db_url.removeprefix("sqlite:///")
    token = world.tokens["contractor"]

    async def upload() -> tuple[bool, list[MutableMapping[str, Any]]]:
        waiting_for_rest = asyncio.Event()
        rest = asyncio.Event()
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": b"first part ", "more_body": True}
            waiting_for_rest.set()
            await rest.wait()
            return {"type": "http.request", "body": b"last part", "more_body": False}

        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": P + "/blobs",
            "raw_path": (P + "/blobs").encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "state": {},
        }
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(waiting_for_rest.wait(), 10)  # authenticated, body half read

        def other_process_writes() -> bool:
            conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError:
                return False
            finally:
                conn.close()

        could_write = await asyncio.to_thread(other_process_writes)
        rest.set()
        await asyncio.wait_for(task, 30)
        return could_write, sent

    could_write, sent = asyncio.run(upload())
    assert could_write, "the upload held the write lock while its body was arriving"
    assert sent[0]["status"] == 201
