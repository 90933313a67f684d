"""The board's configuration: one JSON file on flash, written by ``build.py`` from the same site
file (TOML) and device profiles the Pi gateway reads, checked again here with a reason per field.

Top level: ``gw``, ``serial``, ``heartbeat_s``, ``series_s``, ``data_dir``, ``clock_synced``,
``mqtt`` {host, port, keepalive_s, client_id, username, password, retry_ms, backoff_min_ms,
backoff_max_ms, mac_key_hex, cloud_ack, cloud_ack_timeout_ms}, ``outbox`` {max_telemetry,
seg_records, batch_max_events},
``buses`` [{id, device | uart, baud, char_bits, timeout_ms, down_after, tx, rx, de}],
``devices`` [{bus, unit, name, profile, status_ms, telemetry_ms}] and ``profiles`` {name:
{sys, part, points: [...], reads: [{class, fc, address, count, points: [index...]}]}} where each
point is a validated profile point (protocol/profile.py) and ``reads`` is the Pi's read plan.
"""

import json


class ConfigError(ValueError):
    """A configuration that cannot run; the message starts with the dotted field path."""

    def __init__(self, path, msg):
        super().__init__(path + ": " + msg)
        self.path = path


def _int(d, key, path, default=None, lo=None, hi=None):
    v = d.get(key, default)
    p = path + key
    if v is None:
        raise ConfigError(p, "required")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(p, "expected an integer, got " + repr(v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(p, str(v) + " outside " + str(lo) + ".." + str(hi))
    return v


def _str(d, key, path, default=None):
    v = d.get(key, default)
    if v is None:
        raise ConfigError(path + key, "required")
    if not isinstance(v, str):
        raise ConfigError(path + key, "expected a string, got " + repr(v))
    return v


def _table(d, key, path):
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(path + key, "expected an object")
    return v


def load(path):
    """The checked configuration dict from a JSON file; raises ConfigError."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError(path, "cannot read: " + str(e)) from None
    except ValueError as e:
        raise ConfigError(path, "not JSON: " + str(e)) from None
    return check(raw)


def check(raw):
    if not isinstance(raw, dict):
        raise ConfigError("", "expected an object")
    c = {
        "gw": _int(raw, "gw", "", None, 0, 0xFFFFFFFF),
        "serial": _str(raw, "serial", "", ""),
        "heartbeat_s": _int(raw, "heartbeat_s", "", 30, 5, 3600),
        "series_s": _int(raw, "series_s", "", 60, 1, 3600),
        "data_dir": _str(raw, "data_dir", "", "/data"),
        "clock_synced": bool(raw.get("clock_synced", False)),
    }
    m = _table(raw, "mqtt", "")
    key = m.get("mac_key_hex")
    mac = None
    if key is not None:
        try:
            mac = bytes.fromhex(key)
        except (ValueError, TypeError):
            raise ConfigError("mqtt.mac_key_hex", "not hexadecimal") from None
        if len(mac) < 16:
            raise ConfigError("mqtt.mac_key_hex", "a MAC key needs at least 16 bytes")
    c["mqtt"] = {
        "host": _str(m, "host", "mqtt.", "127.0.0.1"),
        "port": _int(m, "port", "mqtt.", 1883, 1, 65535),
        "keepalive_s": _int(m, "keepalive_s", "mqtt.", 30, 5, 3600),
        "client_id": _str(m, "client_id", "mqtt.", "emberlink-gw-" + str(c["gw"])),
        "username": m.get("username"),
        "password": m.get("password"),
        "retry_ms": _int(m, "retry_ms", "mqtt.", 10000, 100, 600000),
        "backoff_min_ms": _int(m, "backoff_min_ms", "mqtt.", 500, 10, 60000),
        "backoff_max_ms": _int(m, "backoff_max_ms", "mqtt.", 60000, 100, 3600000),
        "mac_key": mac,
        "cloud_ack": m.get("cloud_ack", False),
        "cloud_ack_timeout_ms": _int(m, "cloud_ack_timeout_ms", "mqtt.", 60000, 1000, 3600000),
    }
    if not isinstance(c["mqtt"]["cloud_ack"], bool):
        raise ConfigError("mqtt.cloud_ack", "expected true or false")
    o = _table(raw, "outbox", "")
    c["outbox"] = {
        "max_telemetry": _int(o, "max_telemetry", "outbox.", 512, 1, 1000000),
        "seg_records": _int(o, "seg_records", "outbox.", 64, 2, 4096),
        "batch_max_events": _int(o, "batch_max_events", "outbox.", 32, 1, 1024),
    }
    profiles = _table(raw, "profiles", "")
    buses = raw.get("buses", [])
    if not isinstance(buses, list) or not buses:
        raise ConfigError("buses", "expected a list of at least one bus")
    c["buses"] = []
    ids = {}
    for i in range(len(buses)):
        b = buses[i]
        p = "buses[" + str(i) + "]."
        if not isinstance(b, dict):
            raise ConfigError(p[:-1], "expected an object")
        bus = {
            "id": _int(b, "id", p, None, 0, 255),
            "baud": _int(b, "baud", p, 9600, 300, 1000000),
            "char_bits": _int(b, "char_bits", p, 11, 10, 12),
            "timeout_ms": _int(b, "timeout_ms", p, 300, 10, 30000),
            "down_after": _int(b, "down_after", p, 3, 1, 100),
            "device": b.get("device"),
            "uart": b.get("uart"),
            "tx": b.get("tx"),
            "rx": b.get("rx"),
            "de": b.get("de"),
        }
        if bus["device"] is None and bus["uart"] is None:
            raise ConfigError(p + "device", "a bus needs a device path (unix) or a uart id")
        if bus["id"] in ids:
            raise ConfigError(p + "id", "bus id used twice")
        ids[bus["id"]] = 1
        c["buses"].append(bus)
    devs = raw.get("devices", [])
    if not isinstance(devs, list):
        raise ConfigError("devices", "expected a list")
    c["devices"] = []
    for i in range(len(devs)):
        d = devs[i]
        p = "devices[" + str(i) + "]."
        if not isinstance(d, dict):
            raise ConfigError(p[:-1], "expected an object")
        dev = {
            "bus": _int(d, "bus", p, None, 0, 255),
            "unit": _int(d, "unit", p, None, 1, 247),
            "profile": _str(d, "profile", p),
            "status_ms": d.get("status_ms"),
            "telemetry_ms": d.get("telemetry_ms"),
        }
        dev["name"] = _str(d, "name", p, "bus" + str(dev["bus"]) + "-unit" + str(dev["unit"]))
        if dev["bus"] not in ids:
            raise ConfigError(p + "bus", "no bus " + str(dev["bus"]))
        prof = profiles.get(dev["profile"])
        if not isinstance(prof, dict) or not isinstance(prof.get("points"), list):
            raise ConfigError(p + "profile", "no compiled profile " + repr(dev["profile"]))
        if not isinstance(prof.get("reads"), list):
            raise ConfigError("profiles." + dev["profile"] + ".reads", "required (run build.py)")
        c["devices"].append(dev)
    c["profiles"] = profiles
    return c
