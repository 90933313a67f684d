"""``emberlink cloud``: serve | ingest | migrate | create-admin.

Settings come from the environment (``EMBERLINK_*``) or ``EMBERLINK_ENV_FILE``;
``--database-url`` overrides the database for one run. Exit codes: 0 ok, 1 failed, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import signal
import sys
from typing import Any

from pydantic import ValidationError

from .core.config import Settings, load_settings

log = logging.getLogger("emberlink.cloud")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emberlink cloud", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    p.add_argument("--database-url", help="override EMBERLINK_DATABASE_URL")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--migrate", action="store_true", help="upgrade the database first")
    i = sub.add_parser("ingest", help="run MQTT ingest workers on a shared subscription")
    i.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    i.add_argument("--no-sweep", action="store_true", help="do not run the health sweep")
    sub.add_parser("migrate", help="upgrade the database to the newest schema")
    a = sub.add_parser("create-admin", help="create an admin user and print its API token once")
    a.add_argument("--name", default="admin")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    try:
        settings = load_settings(**overrides)
    except ValidationError as e:
        print(f"emberlink cloud: bad settings: {e.errors()[0]['msg']}", file=sys.stderr)
        return 2
    if args.cmd == "migrate":
        from .core.db import upgrade

        upgrade(settings.database_url)
        print("database is at the newest schema")
        return 0
    if args.cmd == "create-admin":
        return _create_admin(settings, args.name)
    if args.cmd == "serve":
        return _serve(settings, args.host, args.port, args.migrate)
    if args.cmd == "ingest":
        if args.workers < 1:
            print("emberlink cloud: --workers must be at least 1", file=sys.stderr)
            return 2
        if args.workers > 1 and not settings.mqtt_shared_subscription:
            print(
                "emberlink cloud: --workers > 1 needs EMBERLINK_MQTT_SHARED_SUBSCRIPTION=true "
                "(without a shared subscription every worker gets every batch)",
                file=sys.stderr,
            )
            return 2
        return _ingest(settings, args.workers, not args.no_sweep)
    return 2


def _create_admin(settings: Settings, name: str) -> int:
    from . import crud, schemas
    from .core.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session, session.begin():
        if crud.get_user_by_name(session=session, name=name) is not None:
            print(f"emberlink cloud: user {name!r} already exists", file=sys.stderr)
            return 1
        user = crud.create_user(
            session=session, user_in=schemas.UserCreate(name=name, role="admin")
        )
        _, token = crud.create_token(session=session, user=user, name="create-admin")
    engine.dispose()
    print(token)  # shown once; only its SHA-256 is stored
    return 0


def _serve(settings: Settings, host: str, port: int, migrate: bool) -> int:
    import uvicorn

    from .main import create_app

    if migrate:
        from .core.db import upgrade

        upgrade(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0


def run_worker(settings: Settings, index: int, sweep: bool) -> None:
    """One ingest worker process until SIGINT/SIGTERM."""
    from .core.db import make_engine, make_sessionmaker
    from .ingest.worker import IngestWorker

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine = make_engine(settings.database_url)
        worker = IngestWorker(
            settings,
            make_sessionmaker(engine),
            client_id=f"{settings.mqtt_client_prefix}-{index}-{multiprocessing.current_process().pid}",
            sweep=sweep,
        )
        await worker.run(stop)
        s = worker.stats
        log.info(
            "worker %d stopped: %d messages, %d stored, %d duplicates, %d quarantined",
            index,
            s.messages,
            s.stored,
            s.duplicates,
            s.quarantined,
        )
        engine.dispose()

    asyncio.run(go())


def _ingest(settings: Settings, workers: int, sweep: bool) -> int:
    if workers == 1:
        run_worker(settings, 0, sweep)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run_worker, args=(settings, i, sweep), name=f"ingest-{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
