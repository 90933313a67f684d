"""End to end with the real Pi gateway process (``emberlink gateway run``): it boots with an
unsynchronised clock (no timesyncd marker on a test host), the ingest worker syncs it, the
gateway answers ok, its later batches are no longer flagged, and its health goes online; then
an operator's reset through the API reaches the gateway and its result shows in the list."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from emberlink.cloud import crud, models, schemas
from emberlink.cloud.core.config import Settings
from emberlink.cloud.ingest.worker import IngestWorker
from emberlink.protocol import codes, messages
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .utils import make_gateway

pytestmark = [pytest.mark.broker, pytest.mark.slow]
GW = 77
WAIT_S = 30


async def _until(pred: Callable[[], bool], what: str, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}; gateway log:\n{tail}")
        await asyncio.sleep(0.1)


async def test_unsynced_gateway_is_synced_and_goes_online(
    tmp_path: Path, mosquitto: int, sessions: sessionmaker[Session], app: FastAPI
) -> None:
    if Path("/run/systemd/timesync/synchronized").exists():
        pytest.skip("this host's clock is synchronised: the gateway would not boot unsynced")
    with sessions() as s, s.begin():
        make_gateway(s, GW)
        user = crud.create_user(
            session=s,
            user_in=schemas.UserCreate(name="duty", role="operator"),  # type: ignore[arg-type]
        )
        token = crud.create_token(session=s, user=user)[1]
    app.state.settings = app.state.settings.model_copy(update={"mqtt_port": mosquitto})
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\nid = {GW}\ndata_dir = "{tmp_path}/var"\nheartbeat_s = 1\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto}\npuback_timeout_s = 5\n'
        "backoff_min_s = 0.1\nbackoff_max_s = 1\n"
    )
    settings = Settings(
        mqtt_port=mosquitto, flush_ms=50, sweep_interval_s=0.2, min_dwell_s=0
    )  # the default 30 s time sync interval: one sync for the whole test
    worker = IngestWorker(settings, sessions, client_id="w-e2e")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.subscribed.wait(), WAIT_S)
    log = tmp_path / "gateway.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emberlink.tools.cli", "gateway", "run", "--config", str(cfg),
            stderr=err,
        )  # fmt: skip
    try:

        def syncs() -> list[models.Command]:
            with sessions() as s:
                C = models.Command
                return list(s.scalars(select(C).where(C.gateway_id == GW)))

        def flags() -> list[int]:
            with sessions() as s:
                E = models.Event
                q = select(E.batch_flags).where(E.gateway_id == GW).order_by(E.boot, E.seq)
                return list(s.scalars(q))

        def health() -> models.GatewayHealth | None:
            with sessions() as s:
                return s.get(models.GatewayHealth, GW)

        await _until(lambda: any(c.status == "answered" for c in syncs()), "the sync's result", log)
        (sync,) = syncs()
        assert (sync.op, sync.who, sync.result) == (messages.OP_TIME_SYNC, "cloud", "ok")
        # the first events were stamped unsynchronised, and later ones no longer are
        await _until(lambda: bool(flags()) and not flags()[-1] & codes.BF_CLOCK_UNSYNCED,
                     "an unflagged batch", log)  # fmt: skip
        assert flags()[0] & codes.BF_CLOCK_UNSYNCED
        await _until(lambda: (h := health()) is not None and h.status == "online", "online", log)
        h = health()
        assert h is not None and not h.clock_unsynced
        with sessions() as s:
            HT = models.HealthTransition
            q = select(HT).where(HT.gateway_id == GW, HT.device_id.is_(None)).order_by(HT.id)
            path = [(t.to_status, t.reason) for t in s.scalars(q)]
        assert ("degraded", "gateway clock not synchronised") in path
        assert path[-1][0] == "online"
        assert len(syncs()) == 1 and worker.stats.time_syncs == 1
        # an operator resets the gateway's latched alarms through the API
        url, h = f"/api/v1/gateways/{GW}/commands", {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            r = client.post(url, headers=h, json={"op": "reset"})
            assert r.status_code == 201, r.text
            await _until(lambda: len([c for c in syncs() if c.result]) == 2, "the reset's result",
                         log)  # fmt: skip
            reset = client.get(url, headers=h).json()["data"][0]
        assert (reset["op"], reset["who"], reset["status"]) == ("reset", "duty", "answered")
        assert (reset["result"], reset["note"]) == ("ok", "0 points reset")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
