"""Fixtures: a real Mosquitto per test session, free ports, site configurations in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emberlink.tools.testbroker import Broker, free_port


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
