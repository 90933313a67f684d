"""The seam to the portable detection core (firmware/): samples in, (Event, UTC ms) pairs out.

Each numeric point whose profile names a ``detector`` gets the detectors its ``detectors``
section configures. ``Detectors.from_config`` asks the firmware's config builder for them; when
the core is not importable (or its builder does not accept a section) the point runs with no
local detection, which is logged once per point: device-asserted alarms (status bits) still pass
through, so the gateway is never blind, only without its own second opinion.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from emberlink.protocol import profile as schema
from emberlink.protocol.messages import Event

from .config import DeviceConfig
from .errors import ConfigError

log = logging.getLogger("emberlink.detect")


class PointDetector(Protocol):
    def feed(self, val: int, t_ms: int) -> Iterable[tuple[Event, int]]: ...


class Detectors:
    """Detectors by ``src``; ``feed`` returns the events they raise for one sample."""

    def __init__(self, by_src: dict[int, list[PointDetector]]) -> None:
        self.by_src = by_src

    def feed(self, src: int, val: int, t_ms: int) -> list[tuple[Event, int]]:
        out: list[tuple[Event, int]] = []
        for d in self.by_src.get(src, ()):
            out.extend(d.feed(val, t_ms))
        return out

    @classmethod
    def from_config(cls, buses_devices: list[tuple[int, DeviceConfig]]) -> Detectors:
        build = _core_builder()
        by_src: dict[int, list[PointDetector]] = {}
        for bus, dev in buses_devices:
            for p in dev.profile["points"]:
                if not p["detector"]:
                    continue
                src = schema.src_of(bus, dev.unit, p["id"])
                if build is None:
                    continue
                try:
                    det = build(src, p, p["detectors"])
                except (ValueError, TypeError, KeyError) as e:
                    # a detector section the core refuses is a configuration error: refuse to start
                    raise ConfigError(f"profile {dev.profile['name']}", str(e)) from e
                for w in getattr(det, "warnings", ()):
                    log.warning("%s: %s", dev.name, w)
                if det is not None:
                    by_src.setdefault(src, []).append(det)
        if build is None:
            log.warning(
                "detection core not available: status bits pass through, no local detection"
            )
        return cls(by_src)


def _core_builder() -> Any:
    """The firmware's per-point builder, ``build(src, point, section) -> detector``, or None."""
    try:
        mod = importlib.import_module("emberlink.firmware.config")
    except ImportError:
        return None
    return getattr(mod, "build_point", None)
