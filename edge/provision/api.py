"""The local provisioning API (HTTPS on the LAN, ``runner.py``), protected by the pairing code.

Every route requires the ``X-Pairing-Code`` header; a wrong or missing code is 401, and a
client with repeated failures is locked out (429 with ``Retry-After``).

    GET  /status       serial, software, state, key and certificate fingerprints, gateway number
    PUT  /config       the site: {"unit": name, "config": {"gateway", "bus", "device"}}; once
                       claimed only to repair a gateway in state ``fault`` (its stored site
                       no longer loads), else 409
    POST /scan         {"bus": id, "units": "1-247", "answer_s": 0.3}: NDJSON progress lines,
                       then {"found": [...]}
    POST /commission   read every configured point once: the report (also kept on disk)
    POST /claim        {"token", "cloud_url"}: the gateway redeems the token at the cloud
    POST /rotate       {"token", "cloud_url"}: a claimed gateway redeems a rotation token: its
                       service is paused, the token redeemed, the new login confirmed to the
                       cloud (``/claims/confirm``, HTTP Basic with it), the service resumed with
                       the new login and MAC key (or with the old ones, still in force, if the
                       cloud refused or could not be reached)

A claim is confirmed the same way (idempotent for a first claim). Redeemed credentials are kept
in ``pending.json`` until confirmed; a confirmation the cloud could not answer is tried again at
the next start (``settle_pending``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Protocol

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..profiles import load_all
from ..service import software_version
from . import commission, scan
from .modbus import BusOpenError
from .pairing import PairingGuard
from .store import FAULT, ProvisionStore

CLOUD_TIMEOUT_S = 15.0
CREDENTIAL_KEYS = ("gateway_id", "mqtt_username", "mqtt_password", "mac_key_hex", "mqtt_host",
                   "mqtt_port")  # fmt: skip
OnClaimed = Callable[[], Awaitable[None]]


class ServiceControl(Protocol):
    """The running gateway service, as a rotation needs it (``runner.Service``)."""

    async def pause(self) -> None:
        """Stop polling and publishing (the outbox keeps what is not yet sent)."""

    async def resume(self) -> None:
        """Start again from ``gateway.toml`` (re-announcing the state and fingerprint)."""


CONFIRM_TRIES = 3  # the confirmation is idempotent: a lost answer is asked again
CONFIRM_BACKOFF_S = 0.5


class Unconfirmed(Exception):
    """The cloud did not confirm; ``definite``: it refused (else it could not be reached)."""

    def __init__(self, reason: str, *, definite: bool) -> None:
        super().__init__(reason)
        self.definite = definite


def _why(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except (ValueError, AttributeError):
        return r.text[:200]


async def confirm(creds: dict[str, Any]) -> None:
    """Prove to the cloud that this gateway holds ``creds`` (HTTP Basic with its MQTT login),
    which brings a rotation's login and key into force; retried on a network error."""
    url = str(creds["cloud_url"]).rstrip("/") + "/api/v1/claims/confirm"
    auth = (str(creds["mqtt_username"]), str(creds["mqtt_password"]))
    err = ""
    for attempt in range(CONFIRM_TRIES):
        if attempt:
            await asyncio.sleep(CONFIRM_BACKOFF_S * 2 ** (attempt - 1))
        try:
            async with httpx.AsyncClient(timeout=CLOUD_TIMEOUT_S) as http:
                r = await http.post(url, auth=auth)
        except httpx.HTTPError as e:
            err = f"cloud unreachable: {e}"
            continue
        if r.status_code == 200:
            return
        if r.status_code < 500:
            raise Unconfirmed(_why(r), definite=True)
        err = f"cloud error {r.status_code}: {_why(r)}"
    raise Unconfirmed(err, definite=False)


async def settle_pending(store: ProvisionStore) -> str | None:
    """At start: a rotation or claim left unconfirmed (the cloud was away) is confirmed now,
    or dropped when the cloud refuses it. Returns what happened, None when nothing was left."""
    creds = store.pending()
    if creds is None:
        return None
    try:
        await confirm(creds)
    except Unconfirmed as e:
        if e.definite:
            store.drop_pending()
            return f"pending credentials refused by the cloud, dropped: {e}"
        return f"pending credentials still unconfirmed: {e}"
    store.promote_pending()
    return "pending credentials confirmed"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteIn(_In):
    unit: str = Field(min_length=1, max_length=200)
    config: dict[str, Any]


class ScanIn(_In):
    bus: int = Field(ge=0, le=255)
    units: str = Field(default="1-247", max_length=200)
    answer_s: float = Field(default=0.3, gt=0, le=5)


class ClaimIn(_In):
    token: str = Field(min_length=1, max_length=100)
    cloud_url: str = Field(pattern=r"^https?://[^\s]+$", max_length=300)


def make_app(
    store: ProvisionStore,
    on_claimed: OnClaimed | None = None,
    service: ServiceControl | None = None,
    *,
    cert_fp: str | None = None,
) -> FastAPI:
    app = FastAPI(title="EmberLink gateway provisioning", docs_url=None, redoc_url=None)
    guard = PairingGuard(store.pairing_code)
    app.state.store = store
    app.state.polling = False  # the gateway service owns the buses once it runs
    lock = asyncio.Lock()  # one bus job at a time
    rekey = asyncio.Lock()  # one claim or rotation at a time

    def paired(request: Request, x_pairing_code: Annotated[str | None, Header()] = None) -> None:
        client = request.client.host if request.client else "?"
        wait = guard.locked_for(client)
        if wait > 0:
            raise HTTPException(
                status_code=429,
                detail="Too many wrong pairing codes; try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        if x_pairing_code is None:
            raise HTTPException(status_code=401, detail="Pairing code required")
        if not guard.check(client, x_pairing_code):
            raise HTTPException(status_code=401, detail="Wrong pairing code")

    Paired = Depends(paired)

    def _site_cfg() -> Any:
        try:
            cfg = store.site_config()
        except ConfigError as e:
            raise HTTPException(status_code=409, detail=f"Stored configuration invalid: {e}") from e
        if cfg is None:
            raise HTTPException(status_code=409, detail="No site configuration yet (PUT /config)")
        return cfg

    def _bus_free() -> None:
        if app.state.polling:
            raise HTTPException(status_code=409, detail="The gateway is polling its buses")
        if lock.locked():
            raise HTTPException(status_code=409, detail="A bus job is already running")

    @app.get("/status", dependencies=[Paired])
    def status() -> dict[str, Any]:
        creds = store.credentials()
        site = store.site()
        return {
            "serial": store.serial,
            "sw": software_version(),
            "state": store.state(),
            "fingerprint": store.fingerprint(),
            "cert": cert_fp,
            "unit": site.get("unit") if site else None,
            "gateway_id": creds["gateway_id"] if creds else None,
            "polling": app.state.polling,
        }

    @app.put("/config", dependencies=[Paired])
    async def put_config(site: SiteIn) -> dict[str, Any]:
        creds = store.credentials()
        repair = creds is not None and store.state() == FAULT
        if creds is not None and not repair:
            raise HTTPException(status_code=409, detail="Claimed: decommission to reconfigure")
        try:
            cfg = store.save_site(site.model_dump())
        except ConfigError as e:
            raise HTTPException(status_code=422, detail=f"Bad configuration: {e}") from e
        if repair and creds is not None:
            # a claimed gateway whose stored site no longer loads (state fault) is repaired
            # in place: gateway.toml rewritten with its credentials, the service started
            store.save_credentials(creds)
            if on_claimed is not None:
                await on_claimed()
        return {"buses": len(cfg.buses), "devices": len(cfg.devices), "state": store.state()}

    @app.post("/scan", dependencies=[Paired])
    async def post_scan(req: ScanIn) -> StreamingResponse:
        cfg = _site_cfg()
        bus = next((b for b in cfg.buses if b.id == req.bus), None)
        if bus is None:
            raise HTTPException(status_code=404, detail=f"No bus {req.bus} in the configuration")
        try:
            units = scan.parse_units(req.units)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        _bus_free()
        profiles = load_all()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def job() -> None:
            async with lock:
                try:
                    found = await scan.scan_bus(
                        bus, profiles, units, answer_s=req.answer_s,
                        progress=lambda d, t: queue.put_nowait({"done": d, "total": t}),
                    )  # fmt: skip
                    queue.put_nowait({"found": [f.as_dict() for f in found]})
                except BusOpenError as e:
                    queue.put_nowait({"error": str(e)})

        task = asyncio.create_task(job())

        async def lines() -> AsyncIterator[bytes]:
            try:
                while True:
                    item = await queue.get()
                    yield (json.dumps(item) + "\n").encode()
                    if "found" in item or "error" in item:
                        return
            finally:
                if not task.done():
                    task.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/commission", dependencies=[Paired])
    async def post_commission() -> dict[str, Any]:
        cfg = _site_cfg()
        _bus_free()
        async with lock:
            try:
                readings = await commission.run(cfg)
            except BusOpenError as e:
                raise HTTPException(status_code=409, detail=str(e)) from e
        rep = commission.report(cfg, readings, store.serial)
        reports = store.dir / "reports"
        reports.mkdir(exist_ok=True)
        commission.write_report(reports / f"commission-{rep['at_ms']}.json", rep)
        return rep

    async def redeem(req: ClaimIn) -> dict[str, Any]:
        """The token exchanged at the cloud for credentials; HTTPException with the reason."""
        url = req.cloud_url.rstrip("/") + "/api/v1/claims/redeem"
        try:
            async with httpx.AsyncClient(timeout=CLOUD_TIMEOUT_S) as http:
                r = await http.post(url, json={"token": req.token, "serial": store.serial})
        except httpx.HTTPError as e:
            raise HTTPException(status_code=502, detail=f"Cloud unreachable: {e}") from e
        if r.status_code != 200:
            raise HTTPException(status_code=403, detail=f"Cloud refused the claim: {_why(r)}")
        try:
            creds = {k: r.json()[k] for k in CREDENTIAL_KEYS}
        except (ValueError, KeyError, TypeError) as e:
            raise HTTPException(status_code=502, detail=f"Cloud answer unusable: {e}") from e
        return creds | {"claimed_ms": time.time_ns() // 1_000_000, "cloud_url": req.cloud_url}

    async def settle(creds: dict[str, Any]) -> None:
        """Redeemed credentials kept as pending, confirmed at the cloud, then the gateway's;
        HTTPException (pending kept for the next start when the cloud was unreachable)."""
        store.save_pending(creds)
        try:
            await confirm(creds)
        except Unconfirmed as e:
            if e.definite:
                store.drop_pending()
            raise HTTPException(
                status_code=502 if not e.definite else 403,
                detail=f"The cloud did not confirm the new credentials: {e}",
            ) from e
        store.promote_pending()

    @app.post("/claim", dependencies=[Paired])
    async def post_claim(req: ClaimIn) -> dict[str, Any]:
        if rekey.locked():
            raise HTTPException(status_code=409, detail="A claim or rotation is running")
        async with rekey:
            if store.credentials() is not None:
                raise HTTPException(status_code=409, detail="Already claimed")
            _site_cfg()  # a gateway is claimed with its site configuration in place
            creds = await redeem(req)
            await settle(creds)
        if on_claimed is not None:
            await on_claimed()
        return {"state": store.state(), "gateway_id": creds["gateway_id"],
                "fingerprint": store.fingerprint()}  # fmt: skip

    @app.post("/rotate", dependencies=[Paired])
    async def post_rotate(req: ClaimIn) -> dict[str, Any]:
        if rekey.locked():
            raise HTTPException(status_code=409, detail="A claim or rotation is running")
        async with rekey:
            old = store.credentials()
            if old is None:
                raise HTTPException(status_code=409, detail="Not claimed yet: claim first")
            before = store.fingerprint()
            if service is not None:
                await service.pause()  # nothing sealed with the old key once the new is in force
            try:
                creds = await redeem(req)
                if creds["gateway_id"] != old["gateway_id"]:
                    raise HTTPException(
                        status_code=409,
                        detail=f"The token is for gateway {creds['gateway_id']}, "
                        f"this gateway is {old['gateway_id']}",
                    )
                await settle(creds | {"rotated_from": before})
            finally:
                if service is not None:
                    await service.resume()
        return {"state": store.state(), "gateway_id": creds["gateway_id"],
                "fingerprint": store.fingerprint(), "previous_fingerprint": before}  # fmt: skip

    return app
