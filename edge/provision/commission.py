"""Commissioning run: read every configured point once, show it with its unit, flag what is
wrong, and write the report the installer signs off.

A point is ``ok``, ``out_of_range`` (outside the plausible range for its unit, below),
``sensor_fault`` (the profile's break / open / short sentinel), ``exception`` (the device
refused the register) or ``no_answer`` (the device is silent).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emberlink.protocol import codes
from emberlink.protocol import profile as schema

from ..config import GatewayConfig
from .modbus import open_bus

# Plausible engineering values by unit, for commissioning only (a wiring or scaling mistake
# shows up as a value far outside these; alarms are the detectors' business, not these).
PLAUSIBLE = {
    "A": (0.0, 6300.0),  # largest moulded-case breaker frame on a distribution board
    "Cel": (-40.0, 150.0),  # cable temperature sensors' rated range (GB 14287.3 detectors)
    "%/m": (0.0, 30.0),  # obscuration: beyond 30 %/m a point detector is saturated
}


@dataclass
class Reading:
    device: str
    bus: int
    unit: int
    point: str
    value: float | int | None
    unit_name: str
    status: str
    detail: str = ""


def _check(p: dict[str, Any], regs: list[int]) -> tuple[float | int, str, str]:
    raw = regs[0]
    if p.get("break_value") is not None and raw == p["break_value"]:
        return raw, "sensor_fault", "sensor break sentinel"
    if p.get("open_below") is not None and raw < p["open_below"]:
        return raw, "sensor_fault", "open circuit"
    if p.get("short_above") is not None and raw > p["short_above"]:
        return raw, "sensor_fault", "short circuit"
    val = schema.decode(p, regs)
    eng = val * 10 ** p["exp"] if p["exp"] else val
    unit = codes.UNIT_NAMES.get(p["unit"], "") if p["unit"] is not None else ""
    lo_hi = PLAUSIBLE.get(unit)
    if lo_hi is not None and not (lo_hi[0] <= eng <= lo_hi[1]):
        return eng, "out_of_range", f"outside {lo_hi[0]:g}..{lo_hi[1]:g} {unit}"
    return eng, "ok", ""


async def run(cfg: GatewayConfig, *, answer_s: float = 0.3) -> list[Reading]:
    """One reading per configured point, in configuration order."""
    out: list[Reading] = []
    for bus in cfg.buses:
        async with open_bus(bus, answer_s) as client:
            for d in (d for d in cfg.devices if d.bus == bus.id):
                silent = False
                for p in d.profile["points"]:
                    unit = codes.UNIT_NAMES.get(p["unit"], "") if p["unit"] is not None else ""
                    r = Reading(d.name, bus.id, d.unit, p["name"], None, unit, "no_answer")
                    if not silent:
                        a = await client.read(d.unit, p["table"], p["address"], p["words"])
                        if a.regs is not None:
                            r.value, r.status, r.detail = _check(p, a.regs)
                        elif a.exception is not None:
                            r.status, r.detail = "exception", f"Modbus exception {a.exception}"
                        else:
                            silent = True  # one timeout per silent device, not one per point
                    out.append(r)
    return out


def report(cfg: GatewayConfig, readings: list[Reading], serial: str) -> dict[str, Any]:
    bad = [r for r in readings if r.status != "ok"]
    return {
        "gateway": cfg.id,
        "serial": serial,
        "at_ms": time.time_ns() // 1_000_000,
        "points": len(readings),
        "ok": len(readings) - len(bad),
        "flagged": len(bad),
        "passed": not bad,
        "readings": [asdict(r) for r in readings],
        "signed_off_by": None,
    }


def write_report(path: Path, rep: dict[str, Any]) -> None:
    path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
