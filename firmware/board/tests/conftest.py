"""Fixtures: the micropython interpreter with the staged tree, a real Mosquitto, free ports."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from emberlink.tools import micropython
from emberlink.tools.testbroker import Broker, free_port

HERE = Path(__file__).resolve().parent


def mp_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = str(micropython.stage()) + os.pathsep + ".frozen"
    return env


def mp_popen(script: Path, args: list[str], heapsize: str | None = None,
             **kw: object) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start micropython on ``script`` in the background (stdout and stderr piped)."""
    cmd = [micropython.interpreter()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    cmd += [str(script), *args]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=mp_env(),
        **kw,  # type: ignore[arg-type]
    )


def mp_run(script: Path, args: list[str], heapsize: str | None = None,
           timeout: float = 60) -> str:  # fmt: skip
    proc = micropython.run(script=script, args=args, heapsize=heapsize, timeout=timeout)
    return proc.stdout.decode()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


class Subscriber:
    """A paho client on CPython that records (topic, payload, retain) of what it receives."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{free_port()}")
        self.c.on_message = lambda c, u, m: self.messages.append(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        r = self.c.subscribe(topic, qos=1)
        assert r[0] == 0
        time.sleep(0.3)

    def wait(self, pred, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.messages):
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"timed out; got {len(self.messages)} messages")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Lines:
    """Collects a process's stdout lines in a thread; ``until(prefix)`` waits for one."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        import threading

        self.proc = proc
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def until(self, prefix: str, timeout: float = 30.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None and not self.t.is_alive():
                break
            time.sleep(0.02)
        err = b""
        if self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read()
        raise AssertionError(f"no line {prefix!r}: {self.lines[-20:]} {err.decode()[-2000:]}")


def site_toml(tmp: Path, broker_port: int, devices: list[tuple[int, str]], *, gw: int = 7,
              baud: int = 19200, extra_bus: str = "") -> Path:  # fmt: skip
    """A site in the Pi gateway's configuration format: one RTU bus over a pty in ``tmp``."""
    lines = [
        "[gateway]", f"id = {gw}", f'data_dir = "{tmp}/var"', "heartbeat_s = 30", "series_s = 5",
        "[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}", "keepalive_s = 10",
        "[outbox]",
        "[[bus]]", "id = 1", 'type = "rtu"', f'device = "{tmp}/bus1"', f"baud = {baud}",
        "turnaround_ms = 50", extra_bus,
    ]  # fmt: skip
    for unit, prof in devices:
        lines += ["[[device]]", "bus = 1", f"unit = {unit}", f'profile = "{prof}"',
                  f'name = "{prof}-{unit}"']  # fmt: skip
    p = tmp / "site.toml"
    p.write_text("\n".join(lines) + "\n")
    return p
