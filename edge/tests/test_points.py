"""Registers to events, without I/O: status pass-through, enums, sensor faults, series."""

from __future__ import annotations

from typing import Any

from emberlink.edge import profiles
from emberlink.edge.config import DeviceConfig
from emberlink.edge.detect import Detectors
from emberlink.edge.points import PointTranslator
from emberlink.edge.poller import Device
from emberlink.protocol import codes
from emberlink.protocol import profile as schema
from emberlink.protocol.messages import Event

PROFILES = profiles.load_all()


def device(profile: str, unit: int = 3, bus: int = 1) -> Device:
    return Device(DeviceConfig(bus, unit, PROFILES[profile], f"{profile}-{unit}"), bus)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Event, int]] = []

    def __call__(self, ev: Event, t: int) -> None:
        self.events.append((ev, t))

    def take(self) -> list[tuple[int, int, int, int]]:
        out = [(e.kind, e.state or 0, e.code or 0, e.src) for e, _ in self.events
               if e.kind != codes.MEASUREMENT]  # fmt: skip
        self.events.clear()
        return out


def block_of(dev: Device, name: str) -> dict[str, Any]:
    pts = [p for p in dev.cfg.profile["points"] if p["name"] == name]
    return schema.plan_reads(pts)[0]


def test_panel_bits_first_read_then_transitions_and_outage() -> None:
    sink = Sink()
    tr = PointTranslator(sink)
    panel = device("fire_panel")
    blk = block_of(panel, "system_status")
    src = schema.src_of(1, 3, 1)
    tr.on_block(panel, blk, [0b0000], 1000)
    assert sink.take() == []  # nothing active at start: nothing to say
    tr.on_block(panel, blk, [0b0010], 2000)  # bit 1: fire
    assert sink.take() == [(codes.FIRE_ALARM, codes.ACTIVE, 10, src)]
    tr.on_block(panel, blk, [0b0010], 3000)
    assert sink.take() == []  # no change, no event
    tr.on_block(panel, blk, [0b10110], 4000)  # + fault (bit 2) + supervisory (bit 4)
    assert sorted(sink.take()) == [(codes.FAULT, 1, 10, src), (codes.SUPERVISORY, 1, 10, src)]
    # the device goes silent, and the fire clears while nobody can see it
    tr.on_comms(panel, True, 55, 5000)
    assert sink.take() == [(codes.COMMS, codes.ACTIVE, 55, panel.src)]
    tr.on_comms(panel, False, 0, 9000)
    tr.on_block(panel, blk, [0b10100], 9001)
    assert sink.take() == [(codes.COMMS, codes.NORMAL, 0, panel.src),
                           (codes.FIRE_ALARM, codes.NORMAL, 10, src)]  # fmt: skip


def test_fresh_start_reports_active_bits_only() -> None:
    sink = Sink()
    tr = PointTranslator(sink)
    asj = device("acrel_asj")
    tr.on_block(asj, block_of(asj, "alarm_status"), [0b110], 1)
    src = schema.src_of(1, 3, 5)
    assert sorted(sink.take()) == [(codes.FIRE_ALARM, 1, 4, src), (codes.FAULT, 1, 53, src)]


def test_enum_raises_new_and_clears_old() -> None:
    sink = Sink()
    tr = PointTranslator(sink)
    efm = device("efm_multi")
    blk = block_of(efm, "device_mode")
    src = schema.src_of(1, 3, 10)
    tr.on_block(efm, blk, [1], 1)  # self test
    assert sink.take() == [(codes.TEST_MODE, 1, 0, src)]  # test_mode carries no code
    tr.on_block(efm, blk, [2], 2)  # disabled
    assert sink.take() == [(codes.TEST_MODE, 0, 0, src), (codes.SHIELD, 1, 10, src)]
    tr.on_block(efm, blk, [0], 3)
    assert sink.take() == [(codes.SHIELD, 0, 10, src)]
    tr.on_block(efm, blk, [77], 4)  # not in the enum: logged, nothing raised
    assert sink.take() == []


def test_sensor_break_is_a_fault_and_withholds_the_sample() -> None:
    sink = Sink()
    tr = PointTranslator(sink, series_s=1)
    efm = device("efm_multi")
    blk = block_of(efm, "temperature_2")
    src = schema.src_of(1, 3, 3)
    tr.on_block(efm, blk, [32767], 0)
    assert sink.take() == [(codes.FAULT, 1, 53, src)]
    tr.on_block(efm, blk, [255], 5000)  # 25.5 °C: the probe is back
    evs = sink.events[:]
    assert (evs[0][0].kind, evs[0][0].state, evs[0][0].code) == (codes.FAULT, 0, 53)
    series = [e for e, _ in evs if e.kind == codes.MEASUREMENT]
    assert series and series[0].samples == [255]  # the break never became a sample
    smoke = device("smoke_loop")
    tr.on_block(smoke, block_of(smoke, "obscuration_1"), [60001], 0)
    assert (codes.FAULT, 1, 52, schema.src_of(1, 3, 1)) in sink.take()  # short_circuit


def test_series_flushes_with_period_and_stale_series_flush() -> None:
    sink = Sink()
    tr = PointTranslator(sink, series_s=10)
    asj = device("acrel_asj")
    blk = block_of(asj, "residual_current")
    for i in range(3):
        tr.on_block(asj, blk, [10 + i], 1000 + 5000 * i)
    m = [e for e, _ in sink.events if e.kind == codes.MEASUREMENT]
    assert len(m) == 1 and m[0].samples == [10, 11] and m[0].period == 5000
    assert m[0].exp == -3 and m[0].unit == 1
    tr.flush_stale(11_000 + 10_000 + 4999)  # not yet: a sample may still come
    assert len([e for e, _ in sink.events if e.kind == codes.MEASUREMENT]) == 1
    tr.flush_stale(11_000 + 10_000 + 5000)
    m = [e for e, _ in sink.events if e.kind == codes.MEASUREMENT]
    assert len(m) == 2 and m[1].samples == [12]


def test_detectors_from_the_core_raise_through_the_translator() -> None:
    sink = Sink()
    asj = device("acrel_asj")
    det = Detectors.from_config([(1, asj.cfg)])
    tr = PointTranslator(sink, detectors=det)
    blk = block_of(asj, "residual_current")
    for i in range(4):
        tr.on_block(asj, blk, [450], 1_700_000_000_000 + 5000 * i)
    kinds = [k for k, *_ in sink.take()]
    assert codes.PRE_ALARM in kinds and codes.FIRE_ALARM in kinds
