"""The provisioning API over TLS with the gateway's own certificate, pinned from mDNS.

The real provisioning runner (uvicorn with the certificate it made at first start, the zeroconf
advertisement on loopback) and the installer's commands: the TXT record's ``cert`` is the
SHA-256 of the certificate the API presents, ``emberlink discover`` reports it pinned, and
``emberlink commission`` talks to it with nothing but the address (an ``http://`` one is
upgraded). An impostor that advertises the gateway's fingerprint but presents its own
certificate is reported by ``discover`` and refused by ``commission`` before the pairing code
is sent; the API does not answer plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from emberlink.edge.provision import runner
from emberlink.edge.provision.mdns import Advertiser
from emberlink.edge.provision.store import ProvisionStore
from emberlink.edge.provision.tls import ensure_cert
from emberlink.tools import commission, discover
from fastapi import FastAPI, Request

from .test_discover import _port

DISCOVER = ["--timeout", "1.5", "--interface", "127.0.0.1", "--json"]


def openssl_fingerprint(cert: Path) -> str:
    """The certificate's SHA-256 as openssl prints it (colons removed, lower case)."""
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().split("=", 1)[1].replace(":", "").lower()


@contextlib.asynccontextmanager
async def gateway(tmp: Path) -> AsyncIterator[tuple[ProvisionStore, int]]:
    """The real provisioning runner on loopback (unclaimed: it serves until cancelled)."""
    serial = "EL-" + secrets.token_hex(3).upper()
    store = ProvisionStore(tmp, serial=serial)
    port = _port()
    task = asyncio.create_task(
        runner.run(
            tmp,
            host="127.0.0.1",
            port=port,
            advertise_addresses=["127.0.0.1"],
            mdns_interfaces=["127.0.0.1"],
        )
    )
    try:
        for _ in range(100):  # the API is up
            with contextlib.suppress(OSError):
                await asyncio.open_connection("127.0.0.1", port)
                break
            await asyncio.sleep(0.05)
        yield store, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = await asyncio.to_thread(commission.main, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


async def test_api_is_tls_with_the_advertised_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with gateway(tmp_path / "gw") as (store, port):
        cert, key = tmp_path / "gw" / "tls.crt", tmp_path / "gw" / "tls.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        fp = openssl_fingerprint(cert)
        # discover: the TXT record carries the fingerprint and the API presents that cert
        capsys.readouterr()
        assert await discover.main_async(DISCOVER) == 0
        rows = [r for r in json.loads(capsys.readouterr().out) if r["serial"] == store.serial]
        assert len(rows) == 1 and (rows[0]["cert"], rows[0]["tls"]) == (fp, "pinned")
        # commission with the address only (pinned from mDNS), an http:// one upgraded
        for addr in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
            rc, out, err = await _cli(
                ["status", "--gateway", addr, "--code", store.pairing_code, "--json"], capsys
            )
            assert rc == 0, err
            assert json.loads(out)["cert"] == fp and json.loads(out)["serial"] == store.serial
        # an explicit pin, with openssl's colons and case
        colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
        rc, out, err = await _cli(
            [
                "status",
                "--gateway",
                f"127.0.0.1:{port}",
                "--code",
                store.pairing_code,
                "--fingerprint",
                colons,
            ],
            capsys,
        )
        assert rc == 0, err
        # a wrong pin: refused with the reason before the pairing code is sent
        rc, out, err = await _cli(
            [
                "status",
                "--gateway",
                f"127.0.0.1:{port}",
                "--code",
                store.pairing_code,
                "--fingerprint",
                "0" * 64,
            ],
            capsys,
        )
        assert rc == 1 and "refusing to send the pairing code" in err and fp[:16] in err
        # plain HTTP gets no answer from the API
        with pytest.raises(httpx.HTTPError):
            await asyncio.to_thread(
                httpx.get, f"http://127.0.0.1:{port}/status",
                headers={"X-Pairing-Code": store.pairing_code}, timeout=3,
            )  # fmt: skip
    # the certificate is made once: a restart keeps it
    async with gateway(tmp_path / "gw"):
        assert openssl_fingerprint(cert) == fp


async def test_an_impostor_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine advertising the gateway's fingerprint but presenting another certificate:
    discover says MISMATCH, commission refuses, and the impostor never sees the pairing code."""
    for d in ("real", "fake"):
        (tmp_path / d).mkdir()
    real_cert, _ = ensure_cert(tmp_path / "real", "EL-REAL")
    fake_cert, fake_key = ensure_cert(tmp_path / "fake", "EL-REAL")
    real_fp = openssl_fingerprint(real_cert)
    assert openssl_fingerprint(fake_cert) != real_fp
    seen: list[str | None] = []
    impostor = FastAPI()

    @impostor.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
    def anything(path: str, request: Request) -> dict[str, str]:
        seen.append(request.headers.get("x-pairing-code"))
        return {"serial": "EL-REAL"}

    site = tmp_path / "site.toml"
    site.write_text("")
    port = _port()
    server = uvicorn.Server(
        uvicorn.Config(
            impostor,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=fake_cert,
            ssl_keyfile=fake_key,
        )
    )
    serving = asyncio.create_task(server._serve())
    props = {"serial": "EL-REAL", "state": "unclaimed", "fp": "-", "cert": real_fp}
    try:
        async with Advertiser("EL-REAL", port, props, addresses=["127.0.0.1"],
                              interfaces=["127.0.0.1"]):  # fmt: skip
            while not server.started:
                await asyncio.sleep(0.05)
            capsys.readouterr()
            assert await discover.main_async(DISCOVER) == 0
            out = capsys.readouterr()
            row = next(r for r in json.loads(out.out) if r["port"] == port)
            assert row["tls"] == "MISMATCH" and "do not commission it" in out.err
            rc, _, err = await _cli(
                ["configure", "--gateway", f"127.0.0.1:{port}", "--code", "12345678",
                 "--unit", "x", "--site", str(site)],
                capsys,
            )  # fmt: skip
            assert rc == 1 and "refusing to send the pairing code" in err
    finally:
        server.should_exit = True
        await serving
    assert seen == []


async def test_the_factory_label_carries_the_certificate_the_gateway_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`emberlink gateway label` makes the identity and certificate before the first start; the
    gateway then serves that certificate, and the label's fingerprint pins it with no mDNS."""
    from emberlink.edge import cli as gateway_cli

    state = tmp_path / "gw"
    capsys.readouterr()
    assert (
        gateway_cli.main(["label", "--state-dir", str(state), "--serial", "EL-LBL1", "--json"]) == 0
    )
    label = json.loads(capsys.readouterr().out)
    assert label["serial"] == "EL-LBL1" and len(label["pairing_code"]) == 8
    assert label["cert"] == openssl_fingerprint(state / "tls.crt")
    # printing it again changes nothing; a different serial for this gateway is refused
    assert gateway_cli.main(["label", "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == label
    assert gateway_cli.main(["label", "--state-dir", str(state), "--serial", "EL-OTHER"]) == 2
    assert "belongs to serial EL-LBL1" in capsys.readouterr().err
    async with gateway(state) as (store, port):
        assert (store.serial, store.pairing_code) == ("EL-LBL1", label["pairing_code"])
        addr = f"127.0.0.1:{port}"
        rc, out, err = await _cli(["status", "--gateway", addr, "--code", label["pairing_code"],
                                   "--fingerprint", label["cert"], "--json"], capsys)  # fmt: skip
        assert rc == 0, err
        assert json.loads(out)["cert"] == label["cert"]
