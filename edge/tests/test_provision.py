"""Provisioning on the gateway: pairing code, store, bus scan and commissioning read against the
pymodbus simulator (over a socat pty and TCP), and the local API's status paths."""

from __future__ import annotations

import dataclasses
import json
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
from emberlink.edge import config
from emberlink.edge.profiles import load_all
from emberlink.edge.provision import api, commission, pairing, scan
from emberlink.edge.provision.api import make_app
from emberlink.edge.provision.store import ProvisionStore
from emberlink.tools.simulator import Site
from fastapi.testclient import TestClient

from .conftest import free_port


def site_body(tmp: Path, tcp_port: int) -> dict[str, Any]:
    """A pushed site: panel, ASJ relay, smoke loop on RTU; an EFM detector on TCP."""
    return {
        "unit": "Example School",
        "config": {
            "gateway": {"heartbeat_s": 30, "series_s": 5},
            "bus": [
                {
                    "id": 1,
                    "type": "rtu",
                    "device": str(tmp / "bus1"),
                    "baud": 19200,
                    "turnaround_ms": 50,
                },
                {"id": 2, "type": "tcp", "host": "127.0.0.1", "port": tcp_port},
            ],
            "device": [
                {"bus": 1, "unit": 1, "profile": "fire_panel", "name": "panel-1"},
                {"bus": 1, "unit": 2, "profile": "acrel_asj", "name": "asj-2"},
                {"bus": 1, "unit": 3, "profile": "smoke_loop", "name": "smoke-3"},
                {"bus": 2, "unit": 1, "profile": "efm_multi", "name": "efm-1"},
            ],
        },
    }


def test_pairing_guard_locks_out_after_repeated_failures() -> None:
    """Five wrong codes lock a client out (even the right code is refused), others are not;
    the lockout ends and doubles the next time."""
    now = [0.0]
    g = pairing.PairingGuard("12345678", clock=lambda: now[0])
    assert g.check("a", "12345678")
    for _ in range(pairing.MAX_FAILURES):
        assert not g.check("a", "00000000")
    assert not g.check("a", "12345678")
    assert g.locked_for("a") == pairing.LOCKOUT_S
    assert g.check("b", "12345678")
    now[0] += pairing.LOCKOUT_S
    assert g.check("a", "12345678")
    for _ in range(pairing.MAX_FAILURES):
        g.check("a", None)
    assert g.locked_for("a") == 2 * pairing.LOCKOUT_S


def test_store_keeps_secrets_private(tmp_path: Path) -> None:
    """Identity and credentials are 0600; gateway.toml carries the login and loads."""
    st = ProvisionStore(tmp_path / "state", serial="EL-TEST")
    assert len(st.pairing_code) == pairing.CODE_DIGITS and st.state() == "unclaimed"
    st.save_site(site_body(tmp_path, 15020))
    path = st.save_credentials(
        {
            "gateway_id": 77,
            "mqtt_username": "gw-77",
            "mqtt_password": 'pw "quoted"',
            "mac_key_hex": "ab" * 32,
            "mqtt_host": "127.0.0.1",
            "mqtt_port": 1883,
        }
    )
    for name in ("identity.json", "credentials.json", "gateway.toml"):
        assert stat.S_IMODE((st.dir / name).stat().st_mode) == 0o600, name
    cfg = config.load(path)
    assert (cfg.id, cfg.mqtt.username, cfg.mqtt.password) == (77, "gw-77", 'pw "quoted"')
    assert cfg.mqtt.mac_key == bytes.fromhex("ab" * 32) and len(cfg.devices) == 4
    assert st.state() == "claimed" and len(st.fingerprint()) == 16
    assert ProvisionStore(tmp_path / "state", serial="OTHER").serial == "EL-TEST"
    assert tomllib.loads(path.read_text())["gateway"]["serial"] == "EL-TEST"


def test_api_requires_the_pairing_code(tmp_path: Path) -> None:
    """No code, a wrong code: 401; five wrong codes: 429; bad site: 422 with the field."""
    st = ProvisionStore(tmp_path / "s", serial="EL-1")
    with TestClient(make_app(st)) as c:
        assert c.get("/status").json() == {"detail": "Pairing code required"}
        r = c.get("/status", headers={"X-Pairing-Code": "0"})
        assert (r.status_code, r.json()["detail"]) == (401, "Wrong pairing code")
        ok = {"X-Pairing-Code": st.pairing_code}
        r = c.get("/status", headers=ok)
        assert r.status_code == 200
        assert r.json()["state"] == "unclaimed" and r.json()["serial"] == "EL-1"
        r = c.post("/commission", headers=ok)
        assert (r.status_code, r.json()["detail"]) == (
            409, "No site configuration yet (PUT /config)")  # fmt: skip
        bad = site_body(tmp_path, 15020)
        bad["config"]["device"][0]["profile"] = "no_such_profile"
        r = c.put("/config", json=bad, headers=ok)
        assert r.status_code == 422 and "device[0].profile" in r.json()["detail"]
        r = c.post("/claim", json={"token": "x", "cloud_url": "ftp://x"}, headers=ok)
        assert r.status_code == 422
        for _ in range(pairing.MAX_FAILURES):  # a success reset the count
            c.get("/status", headers={"X-Pairing-Code": "1"})
        r = c.get("/status", headers=ok)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


@pytest.mark.modbus
async def test_scan_identifies_by_signature_and_lists_unknown(tmp_path: Path) -> None:
    """Units 1-3 answer on the RTU bus and are identified; a device whose profile has no
    signature is listed as unknown; absent units are not listed; progress reaches the total."""
    st = ProvisionStore(tmp_path / "s")
    cfg = st.save_site(site_body(tmp_path, free_port()))
    mystery = dataclasses.replace(cfg.devices[1], unit=5, name="mystery")
    mystery = dataclasses.replace(
        mystery, profile={**mystery.profile, "signature": [], "name": "mystery"}
    )
    sim_cfg = dataclasses.replace(cfg, devices=[*cfg.devices, mystery])
    seen: list[tuple[int, int]] = []
    async with Site(sim_cfg, wire_time=False):
        found = await scan.scan_bus(
            cfg.buses[0], load_all(), range(1, 7), answer_s=0.2,
            progress=lambda d, t: seen.append((d, t)),
        )  # fmt: skip
        tcp = await scan.scan_bus(cfg.buses[1], load_all(), range(1, 3), answer_s=0.2)
    assert [(f.unit, f.profile, f.candidates) for f in found] == [
        (1, "fire_panel", []), (2, "acrel_asj", []), (3, "smoke_loop", []), (5, None, []),
    ]  # fmt: skip
    assert seen[-1] == (6, 6)
    assert [(f.unit, f.profile) for f in tcp] == [(1, "efm_multi")]


def test_parse_units() -> None:
    assert scan.parse_units("1-3,7") == [1, 2, 3, 7]
    for bad in ("0-3", "1-248", "x", "5-2"):
        with pytest.raises(ValueError, match=r"unit range|bad unit"):
            scan.parse_units(bad)


@pytest.mark.modbus
async def test_commissioning_flags_faults_and_silence(tmp_path: Path) -> None:
    """Every configured point is read: a broken probe is a sensor fault, a scaled value outside
    its plausible range is flagged, a silent device is no_answer; the report says it failed."""
    st = ProvisionStore(tmp_path / "s", serial="EL-C")
    cfg = st.save_site(site_body(tmp_path, free_port()))
    async with Site(cfg, wire_time=False) as site:
        efm = site.device("efm-1")
        efm.set("temperature_1", 245)  # 24.5 °C
        efm.set_raw("temperature_2", 32767)  # the break sentinel
        efm.set("temperature_3", 2500)  # 250.0 °C: a scaling or wiring mistake
        site.device("smoke-3").mode = "silent"
        readings = await commission.run(cfg, answer_s=0.2)
    by = {(r.device, r.point): r for r in readings}
    n_points = sum(len(d.profile["points"]) for d in cfg.devices)
    assert len(readings) == n_points
    assert by[("efm-1", "temperature_1")].status == "ok"
    assert by[("efm-1", "temperature_1")].value == pytest.approx(24.5)
    assert by[("efm-1", "temperature_1")].unit_name == "Cel"
    assert by[("efm-1", "temperature_2")].status == "sensor_fault"
    assert by[("efm-1", "temperature_3")].status == "out_of_range"
    assert {r.status for r in readings if r.device == "smoke-3"} == {"no_answer"}
    assert {r.status for r in readings if r.device == "panel-1"} == {"ok"}
    rep = commission.report(cfg, readings, st.serial)
    assert rep["passed"] is False and rep["points"] == n_points
    commission.write_report(tmp_path / "r.json", rep)
    assert json.loads((tmp_path / "r.json").read_text())["flagged"] == rep["flagged"]


class _Recorder:
    """The gateway service as the rotation sees it: pause and resume, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def pause(self) -> None:
        self.calls.append("pause")

    async def resume(self) -> None:
        self.calls.append("resume")


def test_rotate_needs_a_claim_and_resumes_when_the_cloud_is_away(tmp_path: Path) -> None:
    """Unclaimed: 409. Claimed but the cloud unreachable: 502 with the reason, the service is
    paused and resumed, the credentials are untouched."""
    st = ProvisionStore(tmp_path / "s", serial="EL-R")
    svc = _Recorder()
    body = {"token": "elc_x", "cloud_url": f"http://127.0.0.1:{free_port()}"}
    with TestClient(make_app(st, service=svc)) as c:
        ok = {"X-Pairing-Code": st.pairing_code}
        r = c.post("/rotate", json=body, headers=ok)
        assert (r.status_code, r.json()["detail"]) == (409, "Not claimed yet: claim first")
        assert svc.calls == []
        st.save_site(site_body(tmp_path, 15020))
        creds = {"gateway_id": 7, "mqtt_username": "gw-7", "mqtt_password": "p",
                 "mac_key_hex": "cd" * 32, "mqtt_host": "127.0.0.1", "mqtt_port": 1883}  # fmt: skip
        st.save_credentials(creds)
        r = c.post("/rotate", json=body, headers=ok)
        assert r.status_code == 502 and r.json()["detail"].startswith("Cloud unreachable")
        assert svc.calls == ["pause", "resume"]
        assert st.credentials() == creds and st.state() == "claimed"
        assert c.post("/rotate", json=body).status_code == 401


async def test_unconfirmed_credentials_wait_for_the_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redeemed credentials the cloud could not confirm stay pending (0600) for the next
    start, and do not become the gateway's."""
    monkeypatch.setattr(api, "CONFIRM_TRIES", 1)
    st = ProvisionStore(tmp_path / "s", serial="EL-P")
    assert await api.settle_pending(st) is None
    creds = {"gateway_id": 7, "mqtt_username": "gw-7-r2", "mqtt_password": "p",
             "mac_key_hex": "ef" * 32, "mqtt_host": "127.0.0.1", "mqtt_port": 1883,
             "cloud_url": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    st.save_pending(creds)
    note = await api.settle_pending(st)
    assert note is not None and note.startswith("pending credentials still unconfirmed")
    assert st.pending() == creds and st.credentials() is None and st.state() == "unclaimed"
    assert stat.S_IMODE((st.dir / "pending.json").stat().st_mode) == 0o600


async def test_a_faulty_claimed_gateway_is_repaired_in_place(tmp_path: Path) -> None:
    """A claimed gateway whose stored site no longer loads is in state fault: a valid site may
    be pushed (gateway.toml rewritten with its credentials, the runner woken); a healthy
    claimed gateway still refuses a new site."""
    st = ProvisionStore(tmp_path / "s", serial="EL-F")
    body = site_body(tmp_path, 15020)
    st.save_site(body)
    creds = {"gateway_id": 9, "mqtt_username": "gw-9", "mqtt_password": "p",
             "mac_key_hex": "aa" * 32, "mqtt_host": "127.0.0.1", "mqtt_port": 1883}  # fmt: skip
    st.save_credentials(creds)
    woken: list[bool] = []

    async def on_claimed() -> None:
        woken.append(True)

    with TestClient(make_app(st, on_claimed)) as c:
        ok = {"X-Pairing-Code": st.pairing_code}
        r = c.put("/config", json=body, headers=ok)
        assert (r.status_code, r.json()["detail"]) == (
            409, "Claimed: decommission to reconfigure")  # fmt: skip
        broken = json.loads((st.dir / "site.json").read_text())
        broken["config"]["device"][0]["profile"] = "gone_in_an_update"
        (st.dir / "site.json").write_text(json.dumps(broken))
        assert c.get("/status", headers=ok).json()["state"] == "fault"
        r = c.put("/config", json=body, headers=ok)
        assert r.status_code == 200 and r.json()["state"] == "claimed", r.text
        assert woken == [True]
    cfg = config.load(st.dir / "gateway.toml")
    assert (cfg.id, cfg.mqtt.username, cfg.devices[0].profile["name"]) == (9, "gw-9", "fire_panel")
