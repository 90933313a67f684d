"""Modbus RTU: CRC and frames on both interpreters, strict answers, and the master on
micropython over a socat pty pair against the pymodbus site simulator (silent, garbage)."""

from __future__ import annotations

import asyncio
import os

import pytest
from emberlink.edge import config as gwconfig
from emberlink.firmware.board import modbus_rtu
from emberlink.tools import micropython, simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import HERE, mp_env, mp_run, site_toml


def test_crc_of_the_specification_example() -> None:
    # Modbus over Serial Line V1.02 / common example: read 10 registers from 0 at unit 1
    m = modbus_rtu.Master(None)
    assert bytes(m.build(1, 3, 0, 10)).hex() == "01030000000ac5cd"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_crc_equals_an_independent_bitwise_implementation(data: bytes) -> None:
    assert modbus_rtu.crc16(data) == simulator.crc16(data)


def _answer(unit: int, fc: int, regs: list[int]) -> bytearray:
    body = bytes([unit, fc, 2 * len(regs)]) + b"".join(r.to_bytes(2, "big") for r in regs)
    c = simulator.crc16(body)
    return bytearray(body + bytes([c & 0xFF, c >> 8]))


def test_parse_checks_everything_it_can() -> None:
    m = modbus_rtu.Master(None)
    good = _answer(5, 3, [1, 0xFFFF, 300])
    assert m.parse(good, len(good), 5, 3, 3) == modbus_rtu.OK
    assert list(m.regs[:3]) == [1, 0xFFFF, 300]
    bad = bytearray(good)
    bad[4] ^= 1
    assert m.parse(bad, len(bad), 5, 3, 3) == modbus_rtu.BAD_CRC
    assert m.parse(good, len(good), 6, 3, 3) == modbus_rtu.BAD_FRAME  # another unit
    assert m.parse(good, len(good) - 1, 5, 3, 3) == modbus_rtu.BAD_FRAME  # short
    assert m.parse(good, 0, 5, 3, 3) == modbus_rtu.NO_RESPONSE
    other = _answer(5, 4, [1, 2, 3])
    assert m.parse(other, len(other), 5, 3, 3) == modbus_rtu.BAD_FRAME  # another function
    exc = bytearray([5, 0x83, 2])
    c = simulator.crc16(exc)
    exc += bytes([c & 0xFF, c >> 8])
    assert m.parse(exc, 5, 5, 3, 3) == 2  # illegal data address


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(1, 20))
def test_any_bytes_give_a_code_never_an_exception(data: bytes, count: int) -> None:
    m = modbus_rtu.Master(None)
    buf = bytearray(256)
    buf[: len(data)] = data
    rc = m.parse(buf, len(data), data[0] if data else 1, 3, count)
    assert rc in (0, -1, -2, -3) or 1 <= rc <= 255


def test_timing_follows_the_baud_rate() -> None:
    assert modbus_rtu.t35_us(9600) == 4010  # 3.5 x 11 bits / 9600 baud
    assert modbus_rtu.t35_us(19200) == 2005
    assert modbus_rtu.t35_us(115200) == 1750  # fixed above 19200 (V1.02 p.13)
    assert modbus_rtu.frame_us(8, 9600) == 9166


@pytest.mark.micropython
def test_micropython_builds_the_same_frames(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reads = [(1, 3, 0, 10), (247, 4, 0xFFFF, 125), (17, 3, 0x1B, 1)]
    exprs = [f"modbus_rtu.Master(None).build({u}, {fc}, {a}, {n})" for u, fc, a, n in reads]
    exprs += [f"modbus_rtu.crc16({bytes(range(i, i + 40))!r})" for i in range(0, 200, 40)]
    f = tmp_path / "e.txt"
    f.write_text("\n".join(exprs) + "\n")
    got = mp_run(HERE / "mp_eval.py", [str(f)]).split("\n")
    want = []
    for e in exprs:
        v = eval(e, {"modbus_rtu": modbus_rtu})
        want.append(bytes(v).hex() if isinstance(v, bytearray) else repr(v))
    assert got[: len(exprs)] == want


@pytest.mark.micropython
@pytest.mark.modbus
async def test_master_on_micropython_against_the_simulator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = gwconfig.load(site_toml(tmp_path, 1883, [(3, "acrel_asj")], baud=19200))
    async with simulator.Site(cfg) as site:
        dev = site.device("acrel_asj-3")
        dev.set("residual_current", 123)
        proc = await asyncio.create_subprocess_exec(
            micropython.interpreter(), str(HERE / "mp_rtu.py"), str(tmp_path / "bus1"), "19200",
            "300", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=mp_env(),
        )  # fmt: skip
        assert proc.stdin and proc.stdout

        async def ask(line: str) -> list[int]:
            proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
            out = await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]
            return [int(x) for x in out.split()]

        try:
            assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
            got = await ask("3 3 0 1")
            assert got == [0, 123]
            got = await ask("3 3 0 28")  # the whole ASJ block
            assert got[0] == 0 and len(got) == 29 and got[1] == 123
            dev.mode = "silent"
            assert await ask("3 3 0 1") == [modbus_rtu.NO_RESPONSE]
            dev.mode = "garbage"
            assert await ask("3 3 0 2") == [modbus_rtu.BAD_CRC]
            dev.mode = "ok"
            assert await ask("9 3 0 1") == [modbus_rtu.NO_RESPONSE]  # an absent unit
            dev.set("residual_current", 456)
            assert await ask("3 3 0 1") == [0, 456]  # the line recovers after the faults
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert not os.path.exists(tmp_path / "bus1")
