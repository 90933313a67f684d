"""A one-off Modbus client for one bus: the scan and the commissioning run use it while the
gateway is not polling (provisioning mode), so it owns the bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from ..config import BusConfig
from ..errors import EdgeError

CONNECT_TIMEOUT_S = 3.0
DEFAULT_ANSWER_S = 0.3  # a present unit answers within its turnaround (<= 200 ms, standards §6.1)

NO_ANSWER = "no_answer"


class BusOpenError(EdgeError):
    """The bus could not be opened (serial device or TCP endpoint)."""


class Answer:
    """One read's outcome: registers, or an exception code, or no answer."""

    __slots__ = ("exception", "regs")

    def __init__(self, regs: list[int] | None = None, exception: int | None = None) -> None:
        self.regs = regs
        self.exception = exception

    @property
    def answered(self) -> bool:
        return self.regs is not None or self.exception is not None


class BusClient:
    def __init__(self, bus: BusConfig, answer_s: float = DEFAULT_ANSWER_S) -> None:
        self.bus = bus
        self.answer_s = answer_s
        self._client: Any = None

    def _make(self) -> Any:
        b = self.bus
        if b.type == "rtu":
            return AsyncModbusSerialClient(
                b.device, framer=FramerType.RTU, baudrate=b.baud, parity=b.parity,
                stopbits=b.stopbits, timeout=self.answer_s, retries=0, reconnect_delay=0,
            )  # fmt: skip
        return AsyncModbusTcpClient(
            b.host, port=b.port, timeout=self.answer_s, retries=0, reconnect_delay=0
        )

    async def _ensure(self) -> Any:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        self._client = self._make()
        try:
            ok = await asyncio.wait_for(self._client.connect(), CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            where = (
                self.bus.device if self.bus.type == "rtu" else f"{self.bus.host}:{self.bus.port}"
            )
            raise BusOpenError(f"bus {self.bus.id}: cannot open {where}")
        return self._client

    async def read(self, unit: int, table: str, address: int, count: int) -> Answer:
        client = await self._ensure()
        fn = client.read_input_registers if table == "input" else client.read_holding_registers
        try:
            rr = await asyncio.wait_for(
                fn(address, count=count, device_id=unit), self.answer_s + 0.5
            )
        except (TimeoutError, ModbusException, OSError):
            return Answer()
        if rr.isError():
            return Answer(exception=int(getattr(rr, "exception_code", 0) or 0))
        return Answer(regs=list(rr.registers))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@contextlib.asynccontextmanager
async def open_bus(bus: BusConfig, answer_s: float = DEFAULT_ANSWER_S) -> AsyncIterator[BusClient]:
    c = BusClient(bus, answer_s)
    try:
        yield c
    finally:
        c.close()
