"""The same scenarios on the MicroPython gateway (firmware/board on the micropython unix port):
a panel fire and a residual-current ramp from the RTU bus to the cloud database on PostgreSQL,
nothing lost, nothing stored twice; then kill -9 and a new boot with every seq delivered.

The board polls RTU buses only, so its site is the RTU half of the Pi's. It acknowledges a
record on PUBACK (it has no cloud-ack mode), so these scenarios do not kill the ingest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from emberlink.firmware.board import build
from emberlink.protocol import codes
from emberlink.tools import micropython

from . import bench
from .bench import PANEL, RELAY, SMOKE, Result, await_alarm, src
from .harness import (
    CONVERGE_S,
    PROCESS_START_S,
    Broker,
    Cloud,
    Proc,
    SiteThread,
    free_port,
    wait_until,
)

pytestmark = [pytest.mark.hil, pytest.mark.micropython, pytest.mark.broker,
              pytest.mark.postgres, pytest.mark.modbus]  # fmt: skip

GW = 9401
MP_APP = Path(__file__).parents[1] / "firmware" / "board" / "tests" / "mp_app.py"
PANEL_REPEATS = 5


class Board:
    """The board application as a micropython process, with its own flash directory."""

    def __init__(self, site: Path, work: Path, broker_port: int) -> None:
        self.work = work
        self.flash = work / "board-flash"
        self.flash.mkdir()
        cfg = build.board_config(site, str(self.flash), clock_synced=True)
        cfg["mqtt"]["port"] = broker_port
        cfg["heartbeat_s"] = bench.HEARTBEAT_S
        self.cfg_path = work / "board.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.env = dict(os.environ)
        self.env["MICROPYPATH"] = str(micropython.stage()) + ":.frozen"
        self.proc: Proc | None = None
        self.boots = 0

    def start(self) -> Board:
        self.boots += 1
        self.proc = Proc(f"board-{self.boots}", [micropython.interpreter(), str(MP_APP),
                         str(self.cfg_path), "0"], self.work, self.env).start()  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def last_seqs(self, cloud: Cloud) -> dict[int, int]:
        """Each boot's last seq as the board's birth and stored events show it: the board's
        flash outbox has no boots table to read, so the cloud's view is checked for holes."""
        rows = cloud.sql(
            "SELECT boot, max(seq), count(*) FROM events WHERE gateway_id=%s GROUP BY boot", GW
        )
        return {b: int(m) for b, m, _ in rows}


@pytest.fixture(scope="module")
def board(
    tmp_path_factory: pytest.TempPathFactory, broker: Broker, cloud: Cloud
) -> Iterator[tuple[SiteThread, Board, Broker, Cloud]]:
    tmp = tmp_path_factory.mktemp("board")
    site = bench.site_toml(tmp, GW, broker.port, free_port(), tcp=False)  # a board has no TCP
    cloud.register(GW, bench.HEARTBEAT_S, [(b, u, n) for b, u, n in (PANEL, RELAY, SMOKE)])
    b = Board(site, tmp, broker.port)
    try:
        with SiteThread(site) as sim:
            b.start()
            wait_until("the board's birth in the cloud database",
                       lambda: cloud.sql("SELECT 1 FROM events WHERE gateway_id=%s AND kind=13",
                                         GW), PROCESS_START_S)  # fmt: skip
            yield sim, b, broker, cloud
            b.stop()
    finally:
        b.stop()


def no_holes(cloud: Cloud) -> tuple[int, int]:
    """Every seq 1..max of each boot is stored, once; (lost, duplicates)."""

    def look() -> list[tuple[int, int]]:
        held: dict[int, set[int]] = {}
        for boot, seq, kind, data in cloud.sql(
            "SELECT boot, seq, kind, data FROM events WHERE gateway_id=%s", GW
        ):
            held.setdefault(boot, set()).add(seq)
            if kind == codes.DROPPED and isinstance(data, dict) and data.get("range"):
                held[boot].update(range(data["range"][0], data["range"][1] + 1))
        holes = sum(len(set(range(1, max(s) + 1)) - s) for s in held.values())
        return [] if holes else [(0, 0)]

    wait_until("no hole in the board's seqs in the cloud database", look, CONVERGE_S)
    ((dups,),) = cloud.sql(
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE gateway_id=%s GROUP BY boot, seq "
        "HAVING count(*) > 1) d", GW)  # fmt: skip
    assert dups == 0
    return 0, int(dups)


def test_board_panel_fire(board: tuple[SiteThread, Board, Broker, Cloud]) -> None:
    sim, _, _, cloud = board
    bound = bench.STATUS_MS + bench.MARGIN_MS
    lats = []
    for i in range(PANEL_REPEATS):
        t = sim.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=True)
        _row, lat = await_alarm(cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), 10, t, bound,
                                f"the board's fire alarm #{i + 1}")  # fmt: skip
        lats.append(lat)
        t_off = sim.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=False)

        def ended(after: int = t_off) -> list[bench.Row]:
            return [
                r
                for r in bench.events(cloud, GW, after)
                if r.kind == codes.FIRE_ALARM and r.state == codes.NORMAL
            ]

        wait_until("the fire's end from the board in the cloud database", ended,
                   bench.ALARM_WAIT_S)  # fmt: skip
    r = Result("panel fire (status bit, RTU)", gateway="board (MicroPython)", latencies_ms=lats,
               bound_ms=bound)  # fmt: skip
    r.lost, r.duplicates = no_holes(cloud)
    r.save()


def test_board_residual_current_ramp(board: tuple[SiteThread, Board, Broker, Cloud]) -> None:
    sim, _, _, cloud = board
    t0 = sim.step(device=RELAY[2], action="ramp", point="residual_current",
                  **{"from": 40, "to": 480, "over_s": 4.4})  # fmt: skip
    crossed = t0 + 2600
    bound = bench.TELEMETRY_MS + 1000 + bench.MARGIN_MS
    _row, lat = await_alarm(cloud, GW, codes.FIRE_ALARM, src(RELAY, 1), 4, crossed, bound,
                            "the board's residual-current alarm")  # fmt: skip
    sim.step(device=RELAY[2], action="set", point="residual_current", value=30)
    r = Result("residual current ramp", gateway="board (MicroPython)", latencies_ms=[lat],
               bound_ms=bound)  # fmt: skip
    r.lost, r.duplicates = no_holes(cloud)
    r.save()


def test_board_kill_9_then_new_boot(board: tuple[SiteThread, Board, Broker, Cloud]) -> None:
    sim, b, _, cloud = board
    for i in range(6):  # alarms flowing when the power goes
        sim.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=i % 2 == 0)
        time.sleep(0.6)
    assert b.proc is not None
    b.proc.kill9()
    b.start()
    wait_until("the board's second boot in the cloud database",
               lambda: cloud.sql("SELECT 1 FROM events WHERE gateway_id=%s AND boot=2", GW),
               PROCESS_START_S)  # fmt: skip
    r = Result("kill -9 mid-burst", gateway="board (MicroPython)",
               note="every seq of boot 1 and boot 2 stored once")  # fmt: skip
    r.lost, r.duplicates = no_holes(cloud)
    r.save()
