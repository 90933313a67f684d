"""``emberlink discover``, ``commission`` and ``claim``: sanitising, discovery over loopback
mDNS against the gateway's real advertisement, exit codes."""

from __future__ import annotations

import json
import secrets
import socket

import pytest
from emberlink.edge.provision.mdns import Advertiser
from emberlink.tools import claim, commission, discover


def test_sanitize_strips_control_characters_and_caps_length() -> None:
    assert discover.sanitize(b"EL-1\x1b[31m\x00\n") == "EL-1[31m"
    at_limit = "x" * discover.MAX_FIELD
    assert discover.sanitize(at_limit) == at_limit
    over = discover.sanitize("y" * (discover.MAX_FIELD + 1))
    assert len(over) == discover.MAX_FIELD and over.endswith("…")
    assert discover.sanitize(b"\xff") == "\ufffd"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_discover_finds_the_advertised_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway advertised on loopback is listed with its TXT fields; a hostile TXT value is
    cleaned before printing."""
    serial = "EL-" + secrets.token_hex(3).upper()
    port = _port()
    props = {"serial": serial, "sw": "0.1.0", "state": "unclaimed", "fp": "-\x07" + "z" * 100}
    async with Advertiser(serial, port, props, addresses=["127.0.0.1"], interfaces=["127.0.0.1"]):
        rc = await discover.main_async(["--timeout", "1.5", "--interface", "127.0.0.1", "--json"])
    assert rc == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["serial"] == serial]
    assert len(rows) == 1
    r = rows[0]
    assert (r["state"], r["sw"], r["address"], r["port"]) == (
        "unclaimed",
        "0.1.0",
        "127.0.0.1",
        port,
    )
    assert r["fingerprint"].startswith("-z") and len(r["fingerprint"]) == discover.MAX_FIELD


async def test_discover_table_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert await discover.main_async(["--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err
    serial = "EL-" + secrets.token_hex(3).upper()
    async with Advertiser(serial, _port(), {"serial": serial, "state": "claimed"},
                          addresses=["127.0.0.1"], interfaces=["127.0.0.1"]):  # fmt: skip
        assert await discover.main_async(["--timeout", "1.5", "--interface", "127.0.0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == discover.FORMAT.format(*discover.COLUMN_NAMES)
    assert any(serial in line and "claimed" in line for line in out[2:])


def test_commission_and_claim_exit_codes(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """No pairing code or API token, a malformed fingerprint: 2 with one line; an unreachable
    gateway, one not on mDNS (no certificate to pin): 1 with the reason."""
    monkeypatch.delenv("EMBERLINK_PAIRING_CODE", raising=False)
    monkeypatch.delenv("EMBERLINK_API_TOKEN", raising=False)
    monkeypatch.delenv(commission.FINGERPRINT_ENV, raising=False)
    monkeypatch.setattr(commission, "RESOLVE_S", 0.5)
    assert commission.main(["status", "--gateway", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    gw = f"127.0.0.1:{_port()}"
    rc = commission.main(["status", "--gateway", gw, "--code", "1", "--fingerprint", "ab" * 32])
    assert rc == 1 and "cannot reach the gateway's TLS API" in capsys.readouterr().err
    assert commission.main(["status", "--gateway", gw, "--code", "1", "--fingerprint", "ab"]) == 2
    assert "64 hex digits" in capsys.readouterr().err
    rc = commission.main(["status", "--gateway", gw, "--code", "1"])
    assert rc == 1 and "no gateway advertised" in capsys.readouterr().err
    assert claim.main(["revoke", "--cloud", "http://127.0.0.1:1", "--gateway-id", "1"]) == 2
    assert "API token" in capsys.readouterr().err
    assert commission.main(["bogus"]) == 2
