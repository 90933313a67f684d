"""One error family for the gateway: library exceptions are translated here at the edge."""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every gateway error."""


class ConfigError(EdgeError):
    """A configuration or profile that cannot be used; ``field`` names the bad entry."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class OutboxError(EdgeError):
    """The durable outbox could not store or read (disk full, corrupt file)."""


class ModbusRequestError(EdgeError):
    """A Modbus request that did not give registers; carries the unit and address."""

    def __init__(self, unit: int, address: int, detail: str) -> None:
        super().__init__(f"unit {unit} @ {address}: {detail}")
        self.unit = unit
        self.address = address


class NoResponseError(ModbusRequestError, TimeoutError):
    """No (valid) answer before the request's deadline: a silent or absent unit, or a bad frame.

    ``code`` is the condition: 55 no_response, 56 bad_frame (bytes came back, no valid frame).
    """

    def __init__(self, unit: int, address: int, detail: str, code: int = 55) -> None:
        super().__init__(unit, address, detail)
        self.code = code


class ExceptionResponseError(ModbusRequestError):
    """The unit answered with a Modbus exception code."""

    def __init__(self, unit: int, address: int, code: int) -> None:
        super().__init__(unit, address, f"Modbus exception {code}")
        self.code = code


class UplinkError(EdgeError):
    """The MQTT link failed (connect refused, PUBACK deadline missed, link lost)."""
