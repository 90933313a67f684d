"""The site simulator: real pymodbus servers over TCP and over socat pty pairs."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from emberlink.edge import config
from emberlink.tools import simulator
from emberlink.tools.simulator import Site, rtu_wire_s
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

pytestmark = pytest.mark.modbus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site(tmp: Path, baud: int = 9600) -> config.GatewayConfig:
    p = tmp / "site.toml"
    p.write_text(f"""
[gateway]
id = 1
[[bus]]
id = 1
type = "rtu"
device = "{tmp}/bus1"
baud = {baud}
[[bus]]
id = 2
type = "tcp"
host = "127.0.0.1"
port = {free_port()}
[[device]]
bus = 1
unit = 3
profile = "acrel_asj"
name = "asj"
[[device]]
bus = 1
unit = 4
profile = "fire_panel"
name = "panel"
[[device]]
bus = 2
unit = 1
profile = "efm_multi"
name = "efm"
[[device]]
bus = 2
unit = 2
profile = "smoke_loop"
name = "smoke"
zone = "L3"
[[device]]
bus = 2
unit = 3
profile = "smoke_loop"
name = "smoke-b"
zone = "L3"
[[device]]
bus = 2
unit = 4
profile = "smoke_loop"
name = "smoke-elsewhere"
zone = "L4"
""")
    return config.load(p)


async def test_tcp_values_follow_the_profile(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    async with Site(cfg) as s:
        s.device("efm").set("phase_a_current", 12345)  # 123.45 A, f32 CDAB
        s.device("efm").set("temperature_1", -123)  # -12.3 °C, i16
        s.device("smoke").set("obscuration_2", 321)
        c = AsyncModbusTcpClient("127.0.0.1", port=cfg.buses[1].port, timeout=2, retries=0)
        await c.connect()
        try:
            rr = await c.read_holding_registers(0, count=12, device_id=1)
            prof = s.device("efm").profile
            pts = {p["name"]: p for p in prof["points"]}
            from emberlink.protocol import profile as schema

            assert schema.decode(pts["phase_a_current"], rr.registers[6:8]) == 12345
            assert schema.decode(pts["temperature_1"], rr.registers[1:2]) == -123
            ir = await c.read_input_registers(0, count=4, device_id=2)
            assert ir.registers[1] == 321
        finally:
            c.close()


async def test_pty_silent_garbage_exception_and_wire_time(tmp_path: Path) -> None:
    cfg = site(tmp_path, baud=9600)
    async with Site(cfg) as s:
        s.device("asj").set("residual_current", 77)
        c = AsyncModbusSerialClient(f"{tmp_path}/bus1", baudrate=9600, timeout=0.4, retries=0)
        await c.connect()
        try:
            t = time.monotonic()
            rr = await c.read_holding_registers(0, count=17, device_id=3)
            took = time.monotonic() - t
            assert rr.registers[0] == 77
            # 8-byte request + 39-byte answer at 9600 baud 11-bit: the answer is held for it
            assert took >= rtu_wire_s(8, 9600) + rtu_wire_s(39, 9600)
            s.device("panel").mode = "silent"
            with pytest.raises(ModbusIOException):
                await c.read_holding_registers(0, count=2, device_id=4)
            s.device("panel").mode = "garbage"
            with pytest.raises(ModbusIOException):
                await c.read_holding_registers(0, count=2, device_id=4)
            s.device("panel").mode = "exception"
            s.device("panel").exception_code = 2
            rr = await c.read_holding_registers(0, count=2, device_id=4)
            assert rr.isError() and rr.exception_code == 2
            s.device("panel").mode = "ok"
            rr = await c.read_holding_registers(0, count=2, device_id=4)
            assert not rr.isError()
            # an absent unit stays silent, as on a real RS-485 line
            with pytest.raises(ModbusIOException):
                await c.read_holding_registers(100, count=20, device_id=99)
        finally:
            c.close()


async def test_builtin_scenarios_apply(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    async with Site(cfg, wire_time=False) as s:
        for name in simulator.BUILTINS:
            steps = simulator.builtin(name, s)
            for st in steps:
                st = dict(st, over_s=0.05) if st["action"] == "ramp" else st
                await simulator.apply_step(s, st)
        assert s.device("asj").get("residual_current") == 500
        assert s.device("smoke").get("obscuration_1") == 600
        assert s.device("smoke-b").get("obscuration_1") == 600  # the whole zone L3
        assert s.device("smoke-elsewhere").get("obscuration_1") == 0
        assert s.device("efm").get("phase_a_current") == 3 * 6300
        assert s.device("efm").regs[2] == 32767  # temperature_2 sensor break
        assert s.device("panel").regs[0] & 2


async def test_scenario_file_runs_in_time_order(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    f = tmp_path / "steps.toml"
    f.write_text("""
[[step]]
at_s = 0.2
device = "asj"
action = "set"
point = "residual_current"
value = 250
[[step]]
at_s = 0
device = "asj"
action = "set"
point = "residual_current"
value = 100
""")
    async with Site(cfg, wire_time=False) as s:
        await asyncio.wait_for(simulator.run_steps(s, simulator.load_steps(f)), 5)
        assert s.device("asj").get("residual_current") == 250


def test_cli_rejects_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nid = -1\n")
    assert simulator.main(["run", "--config", str(bad)]) == 2
    assert "gateway.id" in capsys.readouterr().err


def test_cli_serves_a_site_until_its_duration(tmp_path: Path) -> None:
    """`emberlink sim run` as a process: a client reads the scenario's value over TCP."""
    import subprocess
    import sys

    cfg = site(tmp_path)
    port = cfg.buses[1].port
    p = subprocess.Popen(
        [sys.executable, "-m", "emberlink.tools.cli", "sim", "run", "--config",
         str(cfg.source), "--builtin", "overcurrent", "--duration", "30"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        lines = [p.stdout.readline() for _ in range(2)]
        assert "bus 1 rtu" in lines[0] and "bus 2 tcp" in lines[1]

        async def read() -> list[int]:
            c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            await c.connect()
            try:
                for _ in range(50):
                    rr = await c.read_holding_registers(6, count=2, device_id=1)
                    if rr.registers != [0, 0]:
                        return list(rr.registers)
                    await asyncio.sleep(0.1)
                return []
            finally:
                c.close()

        regs = asyncio.run(read())
        from emberlink.protocol import profile as schema

        pt = next(q for q in cfg.devices[2].profile["points"] if q["name"] == "phase_a_current")
        assert schema.decode(pt, regs) == 3 * 6300  # 3 x pickup, f32 in CDAB word order
    finally:
        p.terminate()
        p.wait(10)
    assert p.returncode == 0  # SIGTERM stops it cleanly ...
    assert not (tmp_path / "bus1").exists()  # ... and its socat pair is gone


def test_socat_dies_with_a_killed_simulator(tmp_path: Path) -> None:
    """kill -9 of the simulator leaves no socat behind (PR_SET_PDEATHSIG)."""
    import signal
    import subprocess
    import sys

    cfg = site(tmp_path)
    p = subprocess.Popen(
        [sys.executable, "-m", "emberlink.tools.cli", "sim", "run", "--config", str(cfg.source)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    p.stdout.readline()

    def socats() -> list[str]:
        out = subprocess.run(["pgrep", "-f", f"link={tmp_path}/bus1"], capture_output=True)
        return out.stdout.decode().split()

    assert socats()
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    for _ in range(100):
        if not socats():
            break
        time.sleep(0.05)
    assert socats() == []
