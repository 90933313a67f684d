"""Bus scan: which unit ids answer, and which profile each one is.

A unit answers when it returns registers or a Modbus exception (an exception is an answer: the
device is there but the register is not). An answering unit is identified by the profiles'
signature registers (``[[signature]]`` in protocol/profiles/*.toml): a profile matches when every
signature register reads back with its value. One match names the profile; none or several
leave the device ``unknown`` with the candidates listed, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from emberlink.protocol import profile as schema

from ..config import BusConfig
from .modbus import BusClient, open_bus

UNIT_MIN = 1
UNIT_MAX = 247  # Modbus: 0 is broadcast, 248..255 reserved

Progress = Callable[[int, int], None]  # (units done, units total)


@dataclass
class Found:
    unit: int
    profile: str | None  # None: unknown
    candidates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_units(text: str) -> list[int]:
    """``"1-10,15"`` -> [1..10, 15]; ValueError with the reason for anything else."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad unit range {part.strip()!r}") from None
        if not (UNIT_MIN <= a <= b <= UNIT_MAX):
            raise ValueError(f"unit range {part.strip()!r} not within {UNIT_MIN}..{UNIT_MAX}")
        out.extend(range(a, b + 1))
    return sorted(set(out))


async def _present(client: BusClient, unit: int) -> bool:
    return (await client.read(unit, "holding", 0, 1)).answered


async def identify(client: BusClient, unit: int, profiles: dict[str, dict[str, Any]]) -> Found:
    matches = []
    for name, prof in sorted(profiles.items()):
        sigs = prof.get("signature") or []
        if not sigs:
            continue
        for s in sigs:
            a = await client.read(unit, s["table"], s["address"], 1)
            if a.regs is None or not schema.signature_matches(s, a.regs[0]):
                break
        else:
            matches.append(name)
    if len(matches) == 1:
        return Found(unit, matches[0])
    return Found(unit, None, matches)


async def scan_bus(
    bus: BusConfig,
    profiles: dict[str, dict[str, Any]],
    units: Iterable[int] = range(UNIT_MIN, UNIT_MAX + 1),
    *,
    answer_s: float = 0.3,
    progress: Progress | None = None,
) -> list[Found]:
    """Every unit of ``units`` that answers on ``bus``, identified. Raises BusOpenError."""
    todo = list(units)
    found: list[Found] = []
    async with open_bus(bus, answer_s) as client:
        for i, unit in enumerate(todo, 1):
            if await _present(client, unit):
                found.append(await identify(client, unit, profiles))
            if progress is not None:
                progress(i, len(todo))
    return found
