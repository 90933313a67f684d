"""The gateway's one configuration file (TOML), validated at start with a reason per bad field.

Layout::

    [gateway]  id, data_dir, heartbeat_s, series_s, profile_dirs, serial
    [mqtt]     host, port, username, password, tls, ca_file, cert_file, key_file, keepalive_s,
               puback_timeout_s, cloud_ack, cloud_ack_timeout_s, cloud_ack_alarm_timeout_s,
               mac_key_hex, backoff_min_s, backoff_max_s
    [outbox]   path, max_telemetry, synchronous, batch_max_events, inflight_batches
    [[bus]]    id, type = "rtu" | "tcp"; rtu: device, baud, parity, stopbits; tcp: host, port;
               turnaround_ms, timeout_ms, retries, gap_ms, down_after, backoff_max_s
    [[device]] bus, unit, profile, name, zone, status_ms, telemetry_ms

A device is an instance of a profile (protocol/profiles/*.toml) on one bus.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import profiles
from .errors import ConfigError

DEFAULT_HEARTBEAT_S = 30
DEFAULT_TURNAROUND_MS = 100  # slave latency budget: datasheets give 13..200 ms (standards §6.1)
DEFAULT_TCP_TIMEOUT_MS = 300  # LAN round trip (< 10 ms) with room; the turnaround is added
DEFAULT_DOWN_AFTER = 3  # consecutive failures before a device is declared down
DEFAULT_BACKOFF_MAX_S = 60.0  # a down device is probed at least once a minute


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    puback_timeout_s: float = 10.0
    cloud_ack: bool = False
    cloud_ack_timeout_s: float = 60.0
    # Alarm-lane batches (fire alarm, fault, ...) without the cloud's ack are sent again sooner:
    # a batch the broker dropped (no ingest worker subscribed at that moment) must still reach
    # the cloud well inside the national 10 s bound once a worker is back. Only that lane is
    # sent again, so a slow cloud costs a few duplicate alarm batches, not a telemetry replay;
    # after 3 resends without progress the wait doubles (uplink.ALARM_QUICK_RESENDS).
    cloud_ack_alarm_timeout_s: float = 2.0
    mac_key: bytes | None = None
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class OutboxConfig:
    path: Path
    max_telemetry: int = 200_000
    synchronous: str = "full"
    batch_max_events: int = 256
    inflight_batches: int = 4


@dataclass(frozen=True)
class BusConfig:
    id: int
    type: str
    device: str = ""
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    host: str = ""
    port: int = 502
    turnaround_ms: int = DEFAULT_TURNAROUND_MS
    timeout_ms: int | None = None
    retries: int = 0
    gap_ms: int = 0
    down_after: int = DEFAULT_DOWN_AFTER
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    @property
    def char_bits(self) -> int:
        """Bits per RTU character: start, 8 data, parity or not, stop bits."""
        return 1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits


@dataclass(frozen=True)
class DeviceConfig:
    bus: int
    unit: int
    profile: dict[str, Any]
    name: str
    zone: str = ""
    status_ms: int | None = None
    telemetry_ms: int | None = None


@dataclass(frozen=True)
class GatewayConfig:
    id: int
    data_dir: Path
    mqtt: MqttConfig
    outbox: OutboxConfig
    buses: list[BusConfig]
    devices: list[DeviceConfig]
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    series_s: int = 60
    serial: str = ""
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Table:
    """Reads typed fields from one TOML table and refuses unknown ones."""

    def __init__(self, data: Any, where: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table")
        for k in data:
            if k not in allowed:
                raise ConfigError(f"{where}.{k}", "unknown field")
        self.d = data
        self.where = where

    def _get(self, key: str, default: Any) -> Any:
        v = self.d.get(key, default)
        if v is _REQUIRED:
            raise ConfigError(f"{self.where}.{key}", "required")
        return v

    def integer(self, key: str, default: Any = None, lo: int = 0, hi: int = 2**31) -> Any:
        v = self._get(key, default)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"{self.where}.{key}", f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(f"{self.where}.{key}", f"{v} not in {lo}..{hi}")
        return v

    def num(self, key: str, default: Any, lo: float, hi: float) -> float:
        v = self._get(key, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConfigError(f"{self.where}.{key}", f"must be a number, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(f"{self.where}.{key}", f"{v} not in {lo}..{hi}")
        return float(v)

    def text(self, key: str, default: Any = None, choices: tuple[str, ...] = ()) -> Any:
        v = self._get(key, default)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ConfigError(f"{self.where}.{key}", f"must be a string, got {v!r}")
        if choices and v not in choices:
            raise ConfigError(f"{self.where}.{key}", f"{v!r} is not one of {', '.join(choices)}")
        return v

    def flag(self, key: str, default: bool) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.where}.{key}", f"must be true or false, got {v!r}")
        return v


_REQUIRED = object()


def _mqtt(t: _Table) -> MqttConfig:
    key_hex = t.text("mac_key_hex")
    key = None
    if key_hex is not None:
        try:
            key = bytes.fromhex(key_hex)
        except ValueError as e:
            raise ConfigError("mqtt.mac_key_hex", "not hexadecimal") from e
        if len(key) < 16:
            raise ConfigError("mqtt.mac_key_hex", "a MAC key needs at least 16 bytes")
    password = t.text("password")
    pw_file = t.text("password_file")
    if pw_file is not None:
        try:
            password = Path(pw_file).read_text().strip()
        except OSError as e:
            raise ConfigError("mqtt.password_file", f"cannot read: {e}") from e
    tls = t.flag("tls", False)
    cfg = MqttConfig(
        host=t.text("host", "127.0.0.1"),
        port=t.integer("port", 8883 if tls else 1883, 1, 65535),
        username=t.text("username"),
        password=password,
        tls=tls,
        ca_file=t.text("ca_file"),
        cert_file=t.text("cert_file"),
        key_file=t.text("key_file"),
        keepalive_s=t.integer("keepalive_s", 30, 5, 3600),
        puback_timeout_s=t.num("puback_timeout_s", 10.0, 0.1, 300),
        cloud_ack=t.flag("cloud_ack", False),
        cloud_ack_timeout_s=t.num("cloud_ack_timeout_s", 60.0, 1, 3600),
        cloud_ack_alarm_timeout_s=t.num("cloud_ack_alarm_timeout_s", 2.0, 0.5, 3600),
        mac_key=key,
        backoff_min_s=t.num("backoff_min_s", 0.5, 0.01, 60),
        backoff_max_s=t.num("backoff_max_s", 60.0, 0.1, 3600),
    )
    if password is not None and cfg.username is None:
        raise ConfigError("mqtt.password", "a password needs a username")
    for f in ("ca_file", "cert_file", "key_file"):
        p = getattr(cfg, f)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"mqtt.{f}", f"no such file {p}")
    return cfg


def _bus(t: _Table, i: int) -> BusConfig:
    kind = t.text("type", _REQUIRED, ("rtu", "tcp"))
    retries = t.integer("retries", 0, 0, 1)  # 0–1: a retry on a shared line costs every neighbour
    common: dict[str, Any] = dict(
        id=t.integer("id", _REQUIRED, 0, 255),
        type=kind,
        turnaround_ms=t.integer("turnaround_ms", DEFAULT_TURNAROUND_MS, 0, 5000),
        timeout_ms=t.integer("timeout_ms", None, 10, 30000),
        retries=retries,
        gap_ms=t.integer("gap_ms", 0, 0, 1000),
        down_after=t.integer("down_after", DEFAULT_DOWN_AFTER, 1, 100),
        backoff_max_s=t.num("backoff_max_s", DEFAULT_BACKOFF_MAX_S, 1, 3600),
    )
    if kind == "rtu":
        for k in ("host", "port"):
            if k in t.d:
                raise ConfigError(f"bus[{i}].{k}", "an rtu bus has a device path, not a host")
        return BusConfig(
            device=t.text("device", _REQUIRED),
            baud=t.integer("baud", 9600, 300, 1_000_000),
            parity=t.text("parity", "N", ("N", "E", "O")),
            stopbits=t.integer("stopbits", 1, 1, 2),
            **common,
        )
    if "device" in t.d:
        raise ConfigError(f"bus[{i}].device", "a tcp bus has a host and port, not a device path")
    return BusConfig(
        host=t.text("host", _REQUIRED), port=t.integer("port", 502, 1, 65535), **common
    )


def parse(raw: dict[str, Any], source: Path | None = None) -> GatewayConfig:
    """A validated configuration from the parsed TOML; raises ConfigError with the field."""
    top = _Table(raw, "config", ("gateway", "mqtt", "outbox", "bus", "device"))
    g = _Table(
        raw.get("gateway", _REQUIRED) if "gateway" in raw else {},
        "gateway",
        ("id", "data_dir", "heartbeat_s", "series_s", "profile_dirs", "serial"),
    )
    if "gateway" not in top.d:
        raise ConfigError("gateway", "required")
    base = source.parent if source else Path.cwd()
    data_dir = base / g.text("data_dir", "var")
    dirs = g._get("profile_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError("gateway.profile_dirs", "must be a list of directory paths")
    profs = profiles.load_all([base / d for d in dirs])
    mqtt = _mqtt(
        _Table(
            raw.get("mqtt", {}),
            "mqtt",
            (
                "host", "port", "username", "password", "password_file", "tls", "ca_file",
                "cert_file", "key_file", "keepalive_s", "puback_timeout_s", "cloud_ack",
                "cloud_ack_timeout_s", "cloud_ack_alarm_timeout_s", "mac_key_hex",
                "backoff_min_s", "backoff_max_s",
            ),
        )
    )  # fmt: skip
    o = _Table(
        raw.get("outbox", {}),
        "outbox",
        ("path", "max_telemetry", "synchronous", "batch_max_events", "inflight_batches"),
    )
    outbox = OutboxConfig(
        path=data_dir / o.text("path", "outbox.sqlite"),
        max_telemetry=o.integer("max_telemetry", 200_000, 10, 10**9),
        synchronous=o.text("synchronous", "full", ("full", "normal")),
        batch_max_events=o.integer("batch_max_events", 256, 1, 1024),
        inflight_batches=o.integer("inflight_batches", 4, 1, 64),
    )
    buses_raw = raw.get("bus", [])
    if not isinstance(buses_raw, list):
        raise ConfigError("bus", "must be an array of tables ([[bus]])")
    bus_keys = (
        "id", "type", "device", "baud", "parity", "stopbits", "host", "port", "turnaround_ms",
        "timeout_ms", "retries", "gap_ms", "down_after", "backoff_max_s",
    )  # fmt: skip
    buses = [_bus(_Table(b, f"bus[{i}]", bus_keys), i) for i, b in enumerate(buses_raw)]
    ids = [b.id for b in buses]
    links = [b.device if b.type == "rtu" else f"{b.host}:{b.port}" for b in buses]
    for i, b in enumerate(buses):
        if ids.count(b.id) > 1:
            raise ConfigError(f"bus[{i}].id", f"bus id {b.id} used twice")
        if links.count(links[i]) > 1:
            # two schedulers on one link would put two requests in flight on one line
            raise ConfigError(f"bus[{i}]", f"{links[i]} is also another bus's link")
    devs_raw = raw.get("device", [])
    if not isinstance(devs_raw, list):
        raise ConfigError("device", "must be an array of tables ([[device]])")
    devices = []
    seen: set[tuple[int, int]] = set()
    names: set[str] = set()
    for i, d in enumerate(devs_raw):
        t = _Table(
            d,
            f"device[{i}]",
            ("bus", "unit", "profile", "name", "zone", "status_ms", "telemetry_ms"),
        )
        bus = t.integer("bus", _REQUIRED, 0, 255)
        if bus not in ids:
            raise ConfigError(f"device[{i}].bus", f"no bus with id {bus}")
        unit = t.integer("unit", _REQUIRED, 1, 247)  # 0 is broadcast, 248..255 reserved
        if (bus, unit) in seen:
            raise ConfigError(f"device[{i}].unit", f"unit {unit} used twice on bus {bus}")
        seen.add((bus, unit))
        pname = t.text("profile", _REQUIRED)
        if pname not in profs:
            raise ConfigError(
                f"device[{i}].profile", f"unknown profile {pname!r} (have {', '.join(profs)})"
            )
        name = t.text("name", f"bus{bus}-unit{unit}")
        if name in names:
            raise ConfigError(f"device[{i}].name", f"name {name!r} used twice")
        names.add(name)
        devices.append(
            DeviceConfig(
                bus=bus,
                unit=unit,
                profile=profs[pname],
                name=name,
                zone=t.text("zone", ""),
                status_ms=t.integer("status_ms", None, 100, 2000),
                telemetry_ms=t.integer("telemetry_ms", None, 100, 3_600_000),
            )
        )
    return GatewayConfig(
        id=g.integer("id", _REQUIRED, 0, 0xFFFFFFFF),
        data_dir=data_dir,
        mqtt=mqtt,
        outbox=outbox,
        buses=buses,
        devices=devices,
        heartbeat_s=g.integer("heartbeat_s", DEFAULT_HEARTBEAT_S, 1, 3600),
        series_s=g.integer("series_s", 60, 1, 3600),
        serial=g.text("serial", ""),
        source=source,
    )


def load(path: Path | str) -> GatewayConfig:
    """Read and validate the configuration file at ``path``."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(str(p), f"cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), f"not valid TOML: {e}") from e
    return parse(raw, p)
