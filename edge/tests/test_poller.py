"""The poller against simulated devices over real socat ptys and TCP (never a mocked client)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from emberlink.edge import config
from emberlink.edge.poller import CONFIG_RECHECK_S, Health, Link, WallClock, request_deadline_s
from emberlink.tools.simulator import Site

from .conftest import free_port, wait_for

pytestmark = pytest.mark.modbus


class Recorder:
    def __init__(self) -> None:
        self.blocks: list[tuple[str, int, list[int]]] = []
        self.comms: list[tuple[str, bool, int]] = []
        self.faults: list[tuple[str, int, bool]] = []

    def on_block(self, dev: Any, block: dict[str, Any], regs: list[int], t_ms: int) -> None:
        self.blocks.append((dev.name, block["address"], regs))

    def on_comms(self, dev: Any, lost: bool, code: int, t_ms: int) -> None:
        self.comms.append((dev.name, lost, code))

    def on_device_fault(self, dev: Any, exc: int, active: bool, t_ms: int) -> None:
        self.faults.append((dev.name, exc, active))


def cfg_for(tmp: Path, kind: str, devices: list[tuple[int, str]], baud: int = 19200,
            extra: str = "") -> config.GatewayConfig:  # fmt: skip
    where = (
        f'type = "rtu"\ndevice = "{tmp}/bus"\nbaud = {baud}'
        if kind == "rtu"
        else f'type = "tcp"\nhost = "127.0.0.1"\nport = {free_port()}'
    )
    devs = "".join(
        f'[[device]]\nbus = 1\nunit = {u}\nprofile = "{p}"\nname = "d{u}"\n' for u, p in devices
    )
    f = tmp / "gw.toml"
    f.write_text(
        f"[gateway]\nid = 1\n[[bus]]\nid = 1\n{where}\nturnaround_ms = 30\n{extra}\n{devs}"
    )
    return config.load(f)


@contextlib.asynccontextmanager
async def running(link: Link):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(link.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("kind", ["rtu", "tcp"])
async def test_dead_device_goes_down_and_does_not_starve_neighbours(
    tmp_path: Path, kind: str
) -> None:
    cfg = cfg_for(tmp_path, kind, [(1, "fire_panel"), (2, "acrel_asj"), (3, "fire_panel")],
                  extra="down_after = 2\nbackoff_max_s = 2")  # fmt: skip
    rec = Recorder()
    async with Site(cfg) as site:
        link = Link(cfg.buses[0], cfg.devices, rec, WallClock())
        site.device("d2").mode = "silent"
        async with running(link):
            await wait_for(lambda: ("d2", True, 55) in rec.comms, 10)
            dead = link.devices[1]
            assert dead.health is Health.DOWN
            # the neighbours keep their status cadence while d2 is down
            before = {d.name: d.polls_ok for d in link.devices}
            await asyncio.sleep(2.5)
            for d in (link.devices[0], link.devices[2]):
                assert d.polls_ok - before[d.name] >= 2, d.name
                assert d.health is Health.OK
            # a down device is only probed: far fewer requests than its schedule would make
            assert dead.polls_failed <= 2 + 4
            site.device("d2").mode = "ok"
            site.device("d2").set("residual_current", 42)
            await wait_for(lambda: ("d2", False, 0) in rec.comms, 10)
            assert dead.health is Health.OK
            await wait_for(lambda: any(n == "d2" and r[0] == 42 for n, _, r in rec.blocks), 5)
    assert [c for c in rec.comms if c[0] != "d2"] == []


async def test_crc_garbage_is_a_bad_frame(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "rtu", [(5, "fire_panel")], extra="down_after = 2")
    rec = Recorder()
    async with Site(cfg) as site:
        site.device("d5").mode = "garbage"
        link = Link(cfg.buses[0], cfg.devices, rec, WallClock())
        async with running(link):
            await wait_for(lambda: rec.comms, 10)
    assert rec.comms[0] == ("d5", True, 56)  # bad_frame, not no_response


async def test_exceptions_by_meaning(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "tcp", [(u, "fire_panel") for u in (1, 2, 3, 4)],
                  extra="down_after = 2")  # fmt: skip
    rec = Recorder()
    async with Site(cfg) as site:
        link = Link(cfg.buses[0], cfg.devices, rec, WallClock())
        for name, code in (("d1", 2), ("d2", 6), ("d3", 4), ("d4", 11)):
            # 2 illegal address: the profile does not fit; 6 busy: come back shortly;
            # 4 device failure: alive but broken; 11 gateway target did not respond
            site.device(name).mode = "exception"
            site.device(name).exception_code = code
        async with running(link):
            await wait_for(lambda: ("d1", 2, True) in rec.faults, 5)
            await asyncio.sleep(1.5)
            n1, n3 = site.device("d1").requests, site.device("d3").requests
            await asyncio.sleep(1.5)
            d1, d2, d3, d4 = link.devices
            # the refused reads wait CONFIG_RECHECK_S; the device is alive, not lost
            assert site.device("d1").requests == n1
            assert all(r.due > asyncio.get_running_loop().time() + CONFIG_RECHECK_S / 2
                       for r in link.reads if r.device is d1)  # fmt: skip
            assert d1.health is Health.OK and d2.health is Health.OK
            assert rec.faults.count(("d1", 2, True)) == 1
            assert not any(f[0] == "d2" for f in rec.faults)  # busy is not a fault
            # a device failure is a fault raised once; the device keeps its poll period
            assert rec.faults.count(("d3", 4, True)) == 1 and d3.health is Health.OK
            assert site.device("d3").requests - n3 >= 2
            # a gateway's "target did not respond" is the unit behind it being silent
            assert d4.health is Health.DOWN and not any(f[0] == "d4" for f in rec.faults)
            assert rec.comms == [("d4", True, 55)]
            # the device is fixed (or the profile corrected): the next answer clears the fault
            site.device("d1").mode = "ok"
            for r in link.reads:
                if r.device is d1:
                    r.due = 0.0
            await wait_for(lambda: ("d1", 2, False) in rec.faults, 5)


def test_deadline_from_baud_and_frame() -> None:
    bus = config.BusConfig(id=1, type="rtu", device="x", baud=9600, parity="E", turnaround_ms=100)
    # 17 registers: 8 + 39 bytes of 11 bits at 9600 = 53.9 ms, + 2 x t3.5 + 100 ms + margin
    assert request_deadline_s(bus, 17) == pytest.approx(0.0539 + 0.008 + 0.1 + 0.02, abs=0.002)
    fast = config.BusConfig(id=1, type="rtu", device="x", baud=115200, turnaround_ms=100)
    assert request_deadline_s(fast, 17) < request_deadline_s(bus, 17)


def test_schedule_that_cannot_fit_warns(tmp_path: Path) -> None:
    devs = [(u, "efm_multi") for u in range(1, 32)]
    cfg = cfg_for(tmp_path, "rtu", devs, baud=1200)
    link = Link(cfg.buses[0], cfg.devices, Recorder(), WallClock())
    w = link.check_budget()
    assert w is not None and "needs" in w
    ok = cfg_for(tmp_path, "rtu", devs[:3], baud=19200)
    assert Link(ok.buses[0], ok.devices, Recorder(), WallClock()).check_budget() is None


def test_status_runs_before_telemetry(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "tcp", [(1, "fire_panel"), (2, "acrel_asj")])
    link = Link(cfg.buses[0], cfg.devices, Recorder(), WallClock())
    for r in link.reads:
        r.due = 0.0  # everything overdue at once
    r, _ = link.next_read(1.0)
    assert r is not None and r.prio == 0
    # coalesced: every block fits one request and points never straddle blocks
    assert all(r.count <= 125 for r in link.reads)
