"""Modbus polling: one scheduler per physical link, one request in flight per link.

Each device's points are coalesced into block reads (protocol.profile.plan_reads: <= 125
registers, bounded gaps), separately for status points (panel status, alarm words: polled at
<= 2 s) and telemetry. The scheduler always runs the most urgent due read: status before
telemetry, then the longest overdue. Every request has a deadline computed from the bus's baud
rate and the frame sizes, and 0–1 retries, so a dead unit costs at most one deadline per probe.

Device health (per unit, from answers, never from the transport): ``ok``; ``suspect`` after a
failure; ``down`` after ``down_after`` consecutive failures, when the device is only probed, at
a backoff that doubles up to ``backoff_max_s`` (never delaying its neighbours' reads).
Modbus exception codes are handled by what they mean:

* 1 illegal function, 2 illegal address, 3 illegal value: the profile does not match the
  device. A fault is raised once and the read is re-tried only every CONFIG_RECHECK_S.
* 4 device failure: the device is alive but broken: a fault, the read keeps its period.
* 5 acknowledge, 6 busy: one retry after BUSY_RETRY_S, not counted as a failure.
* 10, 11 gateway path unavailable / target failed to respond: counted as no response.

Results go to a ``PollSink`` (edge/points.py turns them into events).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from emberlink.protocol import codes
from emberlink.protocol import profile as schema
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from .config import DEFAULT_TCP_TIMEOUT_MS, BusConfig, DeviceConfig
from .errors import ExceptionResponseError, NoResponseError

log = logging.getLogger("emberlink.poller")

STATUS, TELEMETRY = 0, 1  # read priorities: lower runs first
CONFIG_RECHECK_S = 600.0  # a read the device refuses (exception 1..3) is tried again after this
BUSY_RETRY_S = 0.05  # one retry for exceptions 5/6: the device asked us to come back shortly
USB_MARGIN_S = 0.02  # USB-RS485 adapters add up to ~16 ms of latency (FTDI latency timer)
BACKOFF_BASE_S = 1.0  # first re-probe of a down device; doubles up to bus.backoff_max_s
CONNECT_RETRY_S = 2.0  # the serial port or TCP socket could not be opened


class Health(enum.Enum):
    OK = "ok"
    SUSPECT = "suspect"
    DOWN = "down"


def rtu_txn_s(bus: BusConfig, count: int) -> float:
    """Wire time of one FC03/04 read of ``count`` registers, both frames and both gaps."""
    t_char = bus.char_bits / bus.baud
    t35 = 3.5 * t_char if bus.baud <= 19200 else 0.00175
    return (8 + 5 + 2 * count) * t_char + 2 * t35


def request_deadline_s(bus: BusConfig, count: int) -> float:
    """How long to wait for one answer: wire time + slave turnaround + adapter margin."""
    if bus.timeout_ms is not None:
        return bus.timeout_ms / 1000
    if bus.type == "tcp":
        return (DEFAULT_TCP_TIMEOUT_MS + bus.turnaround_ms) / 1000
    return rtu_txn_s(bus, count) + bus.turnaround_ms / 1000 + USB_MARGIN_S


@dataclass
class Device:
    cfg: DeviceConfig
    bus: int
    health: Health = Health.OK
    fails: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    next_probe: float = 0.0
    backoff_s: float = BACKOFF_BASE_S
    last_code: int = 0
    faults: set[int] = field(default_factory=set)  # exception codes currently raised

    @property
    def unit(self) -> int:
        return self.cfg.unit

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def src(self) -> int:
        return int(schema.src_of(self.bus, self.cfg.unit, 0))


@dataclass
class Read:
    device: Device
    block: dict[str, Any]
    prio: int
    period_s: float
    deadline_s: float
    due: float = 0.0
    busy_retried: bool = False
    exc: int = 0  # the Modbus exception this read last raised as a fault (0: none)

    @property
    def count(self) -> int:
        return int(self.block["count"])


class PollSink(Protocol):
    def on_block(self, dev: Device, block: dict[str, Any], regs: list[int], t_ms: int) -> None:
        """Registers of one block read, stamped with the gateway's UTC ms."""

    def on_comms(self, dev: Device, lost: bool, code: int, t_ms: int) -> None:
        """The device stopped (lost) or started again answering; code: why it was lost."""

    def on_device_fault(self, dev: Device, exc_code: int, active: bool, t_ms: int) -> None:
        """The device answered with a Modbus exception that means a fault (or it cleared)."""


class Clock(Protocol):
    def now_ms(self) -> int: ...


class Link:
    """One physical link (an RS-485 bus or a TCP endpoint) and its scheduler."""

    def __init__(
        self,
        bus: BusConfig,
        devices: list[DeviceConfig],
        sink: PollSink,
        clock: Clock,
        max_gap: int | None = None,
    ) -> None:
        self.bus = bus
        self.sink = sink
        self.clock = clock
        self.devices = [Device(d, bus.id) for d in devices]
        self.reads: list[Read] = []
        self.requests = 0
        self.busy_s = 0.0  # time with a request in flight, for the duty-cycle figure
        self.last_turn = 0.0  # loop time of the scheduler's last turn (watchdog)
        self._rx = 0
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        for d in self.devices:
            prof = d.cfg.profile
            gap = prof["max_gap"] if max_gap is None else max_gap
            periods = {
                STATUS: (d.cfg.status_ms or prof["poll"]["status_ms"]) / 1000,
                TELEMETRY: (d.cfg.telemetry_ms or prof["poll"]["telemetry_ms"]) / 1000,
            }
            for prio, cls in ((STATUS, "status"), (TELEMETRY, "telemetry")):
                pts = [p for p in prof["points"] if p["class"] == cls]
                for block in schema.plan_reads(pts, schema.MAX_READ_REGS, gap):
                    dl = request_deadline_s(bus, block["count"])
                    self.reads.append(Read(d, block, prio, periods[prio], dl))

    def stall_limit_s(self) -> float:
        """Longest time the scheduler may not turn while healthy: the longest request, + slack."""
        longest = max((r.deadline_s for r in self.reads), default=0.0)
        return longest * (1 + self.bus.retries) + 0.5 + 1.0 + 5.0

    # --- cycle budget --------------------------------------------------------------------------
    def load(self) -> float:
        """Fraction of the link's time the configured schedule needs (1.0 = no slack at all)."""
        total = 0.0
        for r in self.reads:
            txn = (
                rtu_txn_s(self.bus, r.count) + self.bus.turnaround_ms / 1000
                if self.bus.type == "rtu"
                else self.bus.turnaround_ms / 1000 + 0.002
            )
            total += (txn + self.bus.gap_ms / 1000) / r.period_s
        return total

    def check_budget(self) -> str | None:
        """A warning when the schedule cannot fit the bus's cycle budget, else None."""
        load = self.load()
        if load <= 1.0:
            return None
        return (
            f"bus {self.bus.id}: the poll schedule needs {load:.0%} of the bus "
            f"({len(self.reads)} reads, {self.bus.baud if self.bus.type == 'rtu' else 'tcp'} "
            f"baud, turnaround {self.bus.turnaround_ms} ms): periods will stretch; "
            "lengthen telemetry periods or split the bus"
        )

    # --- client ---------------------------------------------------------------------------------
    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx += len(data)
        return data

    def _make_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        b = self.bus
        if b.type == "rtu":
            return AsyncModbusSerialClient(
                b.device,
                framer=FramerType.RTU,
                baudrate=b.baud,
                parity=b.parity,
                stopbits=b.stopbits,
                timeout=1.0,
                retries=b.retries,
                reconnect_delay=0,  # we own reconnects
                trace_packet=self._trace,
            )
        return AsyncModbusTcpClient(
            b.host,
            port=b.port,
            timeout=1.0,
            retries=b.retries,
            reconnect_delay=0,
            trace_packet=self._trace,
        )

    async def _ensure_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        self._client = self._make_client()
        try:
            ok = await asyncio.wait_for(self._client.connect(), 3.0)
        except (TimeoutError, OSError) as e:
            ok = False
            log.debug("bus %s connect: %s", self.bus.id, e)
        if not ok:
            raise NoResponseError(0, 0, f"cannot open {self.bus.device or self.bus.host}")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- scheduling -----------------------------------------------------------------------------
    def _eligible(self, r: Read, now: float) -> bool:
        d = r.device
        if d.health is Health.DOWN:
            # a down device is only probed, with its most urgent read, when its backoff ends
            return now >= d.next_probe and r is self._probe_read(d)
        return r.due <= now

    def _probe_read(self, d: Device) -> Read:
        return min((r for r in self.reads if r.device is d), key=lambda r: (r.prio, r.due))

    def next_read(self, now: float) -> tuple[Read | None, float]:
        """The read to run now (or None) and when the next one falls due."""
        best: Read | None = None
        wake = now + 1.0
        for r in self.reads:
            if self._eligible(r, now):
                if best is None or (r.prio, r.due) < (best.prio, best.due):
                    best = r
            else:
                at = r.device.next_probe if r.device.health is Health.DOWN else r.due
                wake = min(wake, at)
        return best, max(wake, now)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        n = max(1, len(self.devices))
        for i, d in enumerate(self.devices):
            for r in self.reads:
                if r.device is d:
                    # stagger telemetry over its period so devices do not burst together
                    r.due = now + (r.period_s * i / n if r.prio == TELEMETRY else 0.0)
        warn = self.check_budget()
        if warn:
            log.warning(warn)
        try:
            while True:
                now = self.last_turn = loop.time()
                nxt, wake = self.next_read(now)
                if nxt is None:
                    await asyncio.sleep(wake - now)
                    continue
                await self.execute(nxt)
                if self.bus.gap_ms:
                    await asyncio.sleep(self.bus.gap_ms / 1000)
        finally:
            self.close()

    # --- one request ----------------------------------------------------------------------------
    async def execute(self, r: Read) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        d = r.device
        nxt = r.due + r.period_s
        r.due = nxt if nxt > start else start + r.period_s  # late: skip, never burst to catch up
        try:
            regs = await self._request(r)
        except NoResponseError as f:
            self.busy_s += loop.time() - start
            self._failed(d, f.code, str(f), loop.time())
            return
        except ExceptionResponseError as e:
            self.busy_s += loop.time() - start
            self._exception(r, e.code, loop.time())
            return
        self.busy_s += loop.time() - start
        r.busy_retried = False
        self._answered(d)
        if r.exc:
            old, r.exc = r.exc, 0
            if not any(o.exc == old for o in self.reads if o.device is d):
                d.faults.discard(old)
                self.sink.on_device_fault(d, old, False, self.clock.now_ms())
        self.sink.on_block(d, r.block, regs, self.clock.now_ms())

    async def _request(self, r: Read) -> list[int]:
        client = await self._ensure_client()
        unit, addr = r.device.unit, r.block["address"]
        client.ctx.comm_params.timeout_connect = r.deadline_s
        self._rx = 0
        self.requests += 1
        fn = (
            client.read_holding_registers
            if r.block["table"] == "holding"
            else client.read_input_registers
        )
        outer = r.deadline_s * (1 + self.bus.retries) + 0.5
        try:
            async with asyncio.timeout(outer):
                rr = await fn(r.block["address"], count=r.count, device_id=r.device.unit)
        except TimeoutError:
            # pymodbus did not return within its own deadline: start the link afresh
            self.close()
            raise NoResponseError(unit, addr, "no answer (outer deadline)") from None
        except ConnectionException as e:
            self.close()
            raise NoResponseError(unit, addr, f"link: {e}") from None
        except ModbusException as e:
            code = 56 if self._rx else 55  # bytes came back but no valid frame: bad frame
            raise NoResponseError(unit, addr, str(e), code) from None
        if rr.isError():
            exc = int(getattr(rr, "exception_code", 0) or 0)
            if exc in (10, 11):
                raise NoResponseError(unit, addr, f"gateway exception {exc}")
            raise ExceptionResponseError(unit, addr, exc)
        regs = list(rr.registers)
        if len(regs) < r.count:
            raise NoResponseError(unit, addr, f"short answer: {len(regs)} of {r.count}", 56)
        return regs[: r.count]

    def _answered(self, d: Device) -> None:
        d.polls_ok += 1
        d.fails = 0
        if d.health is Health.DOWN:
            log.info("bus %s unit %s (%s) answers again", self.bus.id, d.unit, d.name)
            d.health = Health.OK
            d.backoff_s = BACKOFF_BASE_S
            now = asyncio.get_running_loop().time()
            for r in self.reads:
                if r.device is d:
                    r.due = now  # read everything now: the state may have changed meanwhile
            self.sink.on_comms(d, False, 0, self.clock.now_ms())
        d.health = Health.OK

    def _failed(self, d: Device, code: int, detail: str, now: float) -> None:
        d.polls_failed += 1
        d.fails += 1
        d.last_code = code
        if d.health is Health.DOWN:
            d.backoff_s = min(d.backoff_s * 2, self.bus.backoff_max_s)
            d.next_probe = now + d.backoff_s * (1 + 0.1 * random.random())
            return
        if d.fails >= self.bus.down_after:
            log.warning(
                "bus %s unit %s (%s) is down after %d failures: %s",
                self.bus.id, d.unit, d.name, d.fails, detail,
            )  # fmt: skip
            d.health = Health.DOWN
            d.backoff_s = BACKOFF_BASE_S
            d.next_probe = now + d.backoff_s
            self.sink.on_comms(d, True, code, self.clock.now_ms())
        else:
            d.health = Health.SUSPECT
            log.debug("bus %s unit %s suspect: %s", self.bus.id, d.unit, detail)

    def _exception(self, r: Read, exc: int, now: float) -> None:
        d = r.device
        self._answered(d)  # an exception is an answer: the device is alive
        if exc in (5, 6):
            if not r.busy_retried:
                r.busy_retried = True
                r.due = now + BUSY_RETRY_S
            else:
                r.busy_retried = False
            return
        log.warning(
            "bus %s unit %s (%s): exception %d reading %d+%d",
            self.bus.id, d.unit, d.name, exc, r.block["address"], r.count,
        )  # fmt: skip
        if exc in (1, 2, 3):
            r.due = now + CONFIG_RECHECK_S  # the profile does not match this device
        r.exc = exc
        if exc not in d.faults:
            d.faults.add(exc)
            self.sink.on_device_fault(d, exc, True, self.clock.now_ms())


class WallClock:
    """UTC ms from the system clock plus an offset set by the cloud's time-sync command."""

    SYNC_MARKER = "/run/systemd/timesync/synchronized"

    def __init__(self) -> None:
        self.offset_ms = 0
        self.synced_by_command = False

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    @property
    def synced(self) -> bool:
        if self.synced_by_command:
            return True
        return os.path.exists(self.SYNC_MARKER)

    def sync(self, utc_ms: int) -> None:
        self.offset_ms = utc_ms - int(time.time() * 1000)
        self.synced_by_command = True


COMMS_CODES = {55: codes.CONDITION_NAMES[55], 56: codes.CONDITION_NAMES[56]}
