"""The heartbeat: what the gateway reports about itself every ``heartbeat_s`` (default 30 s).

One HEALTH event from the gateway (src 0) and one per device (src = the device, point 0) with
its poll counters. The map keys are codes.HEALTH_NAMES (0..18).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from emberlink.protocol import codes

HEALTH_KEYS = dict(codes.HEALTH_NAMES)
KEY = {name: k for k, name in HEALTH_KEYS.items()}

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # Raspberry Pi SoC, m°C


def cpu_temp_dC(path: Path = THERMAL_ZONE) -> int | None:
    """CPU temperature in 0.1 °C where the board exposes it, else None."""
    try:
        return int(path.read_text().strip()) // 100
    except (OSError, ValueError):
        return None


def disk_free_kb(path: Path) -> int:
    try:
        return int(shutil.disk_usage(path).free // 1024)
    except OSError:
        return 0


def gateway_map(values: dict[str, int | None]) -> dict[int, int]:
    """A health map from names (unknown names are a programming error: KeyError)."""
    return {KEY[k]: int(v) for k, v in values.items() if v is not None}


def named(health: dict[int, int]) -> dict[str, Any]:
    return {HEALTH_KEYS.get(k, str(k)): v for k, v in sorted(health.items())}


def rss_kb(pid: int | None = None) -> int:
    """Resident memory of a process in kB, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
