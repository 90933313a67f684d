"""Provisioning mode, then the gateway service.

An unclaimed gateway serves the provisioning API and advertises itself (state ``unclaimed``)
until an installer has pushed its site and claimed it; it then writes ``gateway.toml`` with its
own MQTT login and MAC key, re-announces (state ``claimed``) and runs the gateway service
(``edge/service.py``), whose uplink logs in with those credentials and seals each batch with
``wire.seal(batch, key)``. A gateway already claimed at start goes straight to the service. The
API stays up for status; bus jobs are refused while the service polls. The API is served over
TLS with the gateway's self-signed certificate (``tls.py``), whose fingerprint the TXT record
carries as ``cert`` for the installer's commands to pin.

A rotation (``POST /rotate``) pauses the service (``Service.pause``: it stops polling and
publishing, its outbox keeps what is unsent), redeems the rotation token, and resumes it
(``Service.resume``) from the rewritten ``gateway.toml``, re-announcing the new fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import HTTPException

from ..config import load
from ..service import Gateway, software_version
from .api import make_app, settle_pending
from .mdns import Advertiser
from .store import CLAIMED, ProvisionStore
from .tls import TlsError, cert_fingerprint, ensure_cert

log = logging.getLogger("emberlink.provision")

DEFAULT_PORT = 8470


def txt(store: ProvisionStore, cert_fp: str | None = None) -> dict[str, str]:
    """The TXT record; ``cert`` (the API's certificate fingerprint) when served over TLS."""
    out = {
        "serial": store.serial,
        "sw": software_version(),
        "state": store.state(),
        "fp": store.fingerprint(),
        "api": "1",
    }
    if cert_fp is not None:
        out["cert"] = cert_fp
    return out


class Service:
    """The gateway service, started, paused and resumed from the state directory."""

    def __init__(
        self,
        store: ProvisionStore,
        app: Any,
        adv: Advertiser,
        on_signal: Callable[[], None],
        cert_fp: str | None = None,
    ) -> None:
        self.cert_fp = cert_fp
        self.store = store
        self.app = app
        self.adv = adv
        self.on_signal = on_signal
        self.gw: Gateway | None = None
        self.task: asyncio.Task[None] | None = None
        self.paused = False
        self.changed = asyncio.Event()  # set when a pause or resume replaces the task

    def start(self) -> None:
        cfg = load(self.store.dir / "gateway.toml")
        self.gw = Gateway(cfg)
        self.app.state.polling = True
        log.info("claimed as gateway %s: running the service", cfg.id)
        self.task = asyncio.create_task(self.gw.run())  # installs its own SIGTERM handler

    async def pause(self) -> None:
        self.paused = True
        self.changed.set()
        if self.gw is not None and self.task is not None:
            self.gw.stop()
            await asyncio.gather(self.task, return_exceptions=True)
        self.gw = None
        self.app.state.polling = False
        _on_signals(self.on_signal)  # the stopped service's handlers point at a dead gateway
        log.info("service paused")

    async def resume(self) -> None:
        try:
            self.start()
        finally:
            self.paused = False
            self.changed.set()
        await self.adv.update(txt(self.store, self.cert_fp))

    async def stop(self) -> None:
        if self.gw is not None and self.task is not None:
            self.gw.stop()
            await asyncio.gather(self.task, return_exceptions=True)
        self.gw = None


def _on_signals(handler: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done() and t not in aws:
                t.cancel()


async def run(
    state_dir: Path,
    *,
    serial: str | None = None,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    advertise_addresses: list[str] | None = None,
    mdns_interfaces: list[str] | None = None,
    tls: bool = True,
) -> int:
    """Serve provisioning (over TLS with the gateway's own certificate unless ``tls`` is
    False, for development only), then the service once claimed. Returns the exit code."""
    store = ProvisionStore(state_dir, serial)
    note = await settle_pending(store)  # a rotation the cloud could not confirm last time
    if note is not None:
        log.warning("%s", note)
    cert: Path | None = None
    key: Path | None = None
    cert_fp: str | None = None
    if tls:
        try:
            cert, key = ensure_cert(store.dir, store.serial)
            cert_fp = cert_fingerprint(store.dir)
        except TlsError as e:
            log.error("cannot serve the provisioning API over TLS: %s", e)
            return 1
    claimed = asyncio.Event()
    stop = asyncio.Event()

    async def on_claimed() -> None:
        claimed.set()

    class _Late:
        """The service exists once the advertiser does; the API asks for it per request."""

        svc: Service | None = None

        async def pause(self) -> None:
            if self.svc is None:
                raise HTTPException(status_code=409, detail="The service is not running")
            await self.svc.pause()

        async def resume(self) -> None:
            if self.svc is not None:
                await self.svc.resume()

    late = _Late()
    app = make_app(store, on_claimed, late, cert_fp=cert_fp)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", ssl_certfile=cert, ssl_keyfile=key
        )
    )
    _on_signals(stop.set)
    addresses = advertise_addresses or ["127.0.0.1" if host in ("0.0.0.0", "") else host]
    # _serve: serve() without uvicorn's own signal capture, which would re-raise SIGTERM after
    # the server stops and cut the gateway's clean shutdown short; the signals are ours.
    serving = asyncio.create_task(server._serve())
    svc: Service | None = None
    try:
        async with Advertiser(
            store.serial, port, txt(store, cert_fp), addresses=addresses,
            interfaces=mdns_interfaces,
        ) as adv:  # fmt: skip
            log.info("provisioning API on %s://%s:%s, serial %s, certificate %s",
                     "https" if tls else "http", host, port, store.serial, cert_fp)  # fmt: skip
            if store.state() != CLAIMED:
                await _first(claimed.wait(), stop.wait())
            if stop.is_set() or store.state() != CLAIMED:
                return 0
            await adv.update(txt(store, cert_fp))
            svc = late.svc = Service(store, app, adv, stop.set, cert_fp)
            svc.start()
            while not stop.is_set():
                svc.changed.clear()
                if svc.paused:
                    await _first(svc.changed.wait(), stop.wait())
                    continue
                assert svc.task is not None
                task = svc.task
                await _first(task, svc.changed.wait(), stop.wait())
                if task.done() and not svc.paused and svc.task is task:
                    # the service ended by itself (its SIGTERM handler, or a failure): so do we
                    if not task.cancelled() and task.exception() is not None:
                        log.error("the gateway service failed: %r", task.exception())
                        return 1
                    break
            return 0
    finally:
        late.svc = None
        if svc is not None:
            await svc.stop()
        server.should_exit = True
        await serving
