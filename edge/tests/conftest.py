"""Fixtures: a real Mosquitto per test session, free ports, site configurations in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKER_START_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto process on 127.0.0.1:<free port> with the given extra config lines."""

    def __init__(self, tmp: Path, extra: str = "allow_anonymous true\n") -> None:
        self.port = free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        # as root, mosquitto drops to user "mosquitto", which cannot read files in tmp_path
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{user}{extra}persistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + BROKER_START_S
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}")
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


def site_toml(
    tmp: Path,
    broker_port: int,
    *,
    rtu: list[tuple[int, str]] = (),  # type: ignore[assignment]
    tcp: list[tuple[int, str]] = (),  # type: ignore[assignment]
    gw: int = 7,
    extra_gateway: str = "",
    extra_mqtt: str = "",
    extra_bus: str = "",
    extra_outbox: str = "",
    baud: int = 19200,
    series_s: int = 5,
) -> Path:
    """A gateway configuration: one RTU bus (pty path in tmp) and/or one TCP bus."""
    lines = [
        "[gateway]",
        f"id = {gw}",
        'data_dir = "var"',
        "heartbeat_s = 30",
        f"series_s = {series_s}",
        extra_gateway,
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        "puback_timeout_s = 5",
        "backoff_min_s = 0.1",
        "backoff_max_s = 1",
        extra_mqtt,
        "[outbox]",
        extra_outbox,
    ]
    if rtu:
        lines += ["[[bus]]", "id = 1", 'type = "rtu"', f'device = "{tmp}/bus1"', f"baud = {baud}",
                  "turnaround_ms = 50", extra_bus]  # fmt: skip
    if tcp:
        lines += ["[[bus]]", "id = 2", 'type = "tcp"', 'host = "127.0.0.1"',
                  f"port = {free_port()}", "turnaround_ms = 50", extra_bus]  # fmt: skip
    for unit, prof in rtu:
        lines += ["[[device]]", "bus = 1", f"unit = {unit}", f'profile = "{prof}"',
                  f'name = "rtu-{unit}"', 'zone = "L1"']  # fmt: skip
    for unit, prof in tcp:
        lines += ["[[device]]", "bus = 2", f"unit = {unit}", f'profile = "{prof}"',
                  f'name = "tcp-{unit}"']  # fmt: skip
    p = tmp / "gateway.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


async def wait_for(pred: Any, timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait until ``pred()`` is true; fail the test with a clear message after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
