"""Provisioning mode, then the gateway service.

An unclaimed gateway serves the provisioning API and advertises itself (state ``unclaimed``)
until an installer has pushed its site and claimed it; it then writes ``gateway.toml`` with its
own MQTT login and MAC key, re-announces (state ``claimed``) and runs the gateway service
(``edge/service.py``), whose uplink logs in with those credentials and seals each batch with
``wire.seal(batch, key)``. A gateway already claimed at start goes straight to the service. The
API stays up for status; bus jobs are refused while the service polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvicorn

from ..config import load
from ..service import Gateway, software_version
from .api import make_app
from .mdns import Advertiser
from .store import CLAIMED, ProvisionStore

log = logging.getLogger("emberlink.provision")

DEFAULT_PORT = 8470


def txt(store: ProvisionStore) -> dict[str, str]:
    return {
        "serial": store.serial,
        "sw": software_version(),
        "state": store.state(),
        "fp": store.fingerprint(),
        "api": "1",
    }


async def run(
    state_dir: Path,
    *,
    serial: str | None = None,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    advertise_addresses: list[str] | None = None,
    mdns_interfaces: list[str] | None = None,
) -> int:
    store = ProvisionStore(state_dir, serial)
    claimed = asyncio.Event()
    stop = asyncio.Event()

    async def on_claimed() -> None:
        claimed.set()

    app = make_app(store, on_claimed)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    addresses = advertise_addresses or ["127.0.0.1" if host in ("0.0.0.0", "") else host]
    # _serve: serve() without uvicorn's own signal capture, which would re-raise SIGTERM after
    # the server stops and cut the gateway's clean shutdown short; the signals are ours.
    serving = asyncio.create_task(server._serve())
    try:
        async with Advertiser(
            store.serial, port, txt(store), addresses=addresses, interfaces=mdns_interfaces
        ) as adv:
            log.info("provisioning API on %s:%s, serial %s", host, port, store.serial)
            if store.state() != CLAIMED:
                waits = [asyncio.create_task(claimed.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
            if stop.is_set() or store.state() != CLAIMED:
                return 0
            await adv.update(txt(store))
            cfg = load(store.dir / "gateway.toml")
            gw = Gateway(cfg)
            app.state.polling = True
            log.info("claimed as gateway %s: running the service", cfg.id)
            service = asyncio.create_task(gw.run())  # installs its own SIGTERM handler
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([service, stopper], return_when=asyncio.FIRST_COMPLETED)
            if not service.done():
                gw.stop()
                await service
            stopper.cancel()
            return 0
    finally:
        server.should_exit = True
        await serving
