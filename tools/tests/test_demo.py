"""``emberlink demo`` on a machine without Mosquitto: the embedded pure-Python broker (amqtt).

The demo runs as a real process with its real children (broker, cloud on SQLite, simulated site,
gateway); nothing is mocked. "No Mosquitto" is made by giving the demo a PATH without it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from emberlink.protocol import codes
from emberlink.tools import demo

pytestmark = pytest.mark.modbus  # the simulated site: pymodbus over a socat pty and TCP

EMBERLINK = [sys.executable, "-m", "emberlink.tools.cli"]

# The panel's fire bit one second after the simulator starts: the alarm arrives within seconds.
PANEL_FIRE = """
[[step]]
at_s = 1
device = "panel-1"
action = "bit"
point = "system_status"
bit = 1
on = true
"""


def no_mosquitto_path(tmp: Path) -> str:
    """A PATH with no mosquitto on it nor in an sbin folder beside it."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    assert demo.find_mosquitto(str(bin_dir)) is None
    return str(bin_dir)


def fire_alarms(db: Path) -> list[tuple[int, int, int]]:
    """(gateway, seq, src) of every stored fire-alarm event; [] before the schema exists."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
        try:
            rows = c.execute(
                "SELECT gateway_id, seq, src FROM events WHERE kind = ?", (codes.FIRE_ALARM,)
            ).fetchall()
        except sqlite3.OperationalError:  # not migrated yet, or locked for a moment
            return []
    return [tuple(r) for r in rows]


def stop(p: subprocess.Popen[str], timeout_s: float = 30) -> None:
    """Ctrl-C, as a person would give it."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
        pytest.fail(f"the demo did not stop within {timeout_s} s on SIGINT")


def test_find_mosquitto_looks_on_path_and_in_sbin_beside_it(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "sbin").mkdir()
    exe = tmp_path / "sbin" / "mosquitto"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert demo.find_mosquitto(str(tmp_path / "bin")) == str(exe)
    assert demo.find_mosquitto(str(tmp_path / "sbin")) == str(exe)
    assert demo.find_mosquitto(str(tmp_path / "elsewhere")) is None


def test_broker_mosquitto_requested_but_missing_fails_with_a_reason(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=no_mosquitto_path(tmp_path))
    r = subprocess.run(
        [*EMBERLINK, "demo", "--broker", "mosquitto", "--dir", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "no MQTT broker (mosquitto not found)" in r.stderr


def test_auto_picks_the_embedded_broker_when_mosquitto_is_not_on_path(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=no_mosquitto_path(tmp_path))
    work = tmp_path / "work"
    r = subprocess.run(
        [*EMBERLINK, "demo", "--duration", "1", "--dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    banner = [line for line in r.stdout.splitlines() if line.startswith("broker: ")]
    assert len(banner) == 1, r.stdout
    assert banner[0].startswith("broker: embedded amqtt on 127.0.0.1:")
    assert banner[0].endswith("(mosquitto not found)")
    assert "amqtt broker listening" in (work / "broker.log").read_text()
    assert not (work / "mosquitto.conf").exists()
    # this PATH has no socat either: bus 1's devices are served over Modbus TCP, and said so
    assert "instead of the RTU pty (socat not found" in r.stdout, r.stdout
    assert 'type = "tcp"' in (work / "site.toml").read_text().split("id = 1", 2)[2]


@pytest.mark.parametrize("bus1", ["rtu", "tcp"])
def test_fire_alarm_reaches_the_cloud_database_through_the_embedded_broker(
    tmp_path: Path, bus1: str
) -> None:
    work = tmp_path / "work"
    scenario = tmp_path / "panel-fire.toml"
    scenario.write_text(PANEL_FIRE)
    view = tmp_path / "demo.out"  # a file, not a pipe: read while the demo runs
    with view.open("w") as sink:
        p = subprocess.Popen(
            [
                *EMBERLINK,
                "demo",
                "--broker",
                "embedded",
                "--scenario",
                str(scenario),
                "--dir",
                str(work),
                *(["--no-rtu"] if bus1 == "tcp" else []),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    shown = "fire_alarm panel-1#1 active panel_status"  # the live view's line for it
    try:
        deadline = time.monotonic() + 45
        alarms: list[tuple[int, int, int]] = []
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.5)
            alarms = fire_alarms(work / "cloud.db")
            if alarms and shown in view.read_text():
                break
    finally:
        stop(p)
    out = view.read_text()
    assert alarms, f"no fire alarm in the cloud database:\n{out}"
    assert p.returncode == 0, out
    # bus 1, unit 1 (panel-1), point 1 (system_status), from the demo's gateway
    assert alarms[0][0] == demo.GATEWAY_ID
    assert alarms[0][2] == (1 << 24) | (1 << 16) | 1
    assert "broker: embedded amqtt on 127.0.0.1:" in out
    assert "(--broker embedded)" in out
    assert ("bus 1: Modbus TCP on 127.0.0.1:" in out) == (bus1 == "tcp"), out
    assert shown in out
    # the only broker was amqtt, and ingest used the plain filter (amqtt has no $share/)
    assert not (work / "mosquitto.conf").exists()
    ingest = (work / "cloud-ingest.log").read_text()
    assert "subscribed to el/v1/+/ev" in ingest and "$share" not in ingest, ingest
    # Ctrl-C ended every child, the broker last
    assert "amqtt broker stopped" in (work / "broker.log").read_text()
    assert "gateway stopped" in (work / "gateway.log").read_text()
