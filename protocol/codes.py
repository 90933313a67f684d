"""Codes of the EmberLink wire contract, v1, and their names.

Integers travel on the wire; names are for people (``emberlink decode``) and for code that reads
better with them. System and component (part) types reuse GB/T 26875.3-2011 §8 tables so that an
export bridge to a remote-monitoring centre maps them one to one
(``shared/research/standards.md`` §1.4). Adding a code is backwards compatible; changing or
reusing one is a new protocol version.

MicroPython-compatible: plain ints and dicts, no enum.
"""

PROTOCOL_VERSION = 1

# --- Event kinds (event key 0) -----------------------------------------------------------------
FIRE_ALARM = 1
PRE_ALARM = 2
FAULT = 3
SUPERVISORY = 4
SHIELD = 5  # shield / disable (GB/T 26875.3 屏蔽)
RESET = 6
SILENCE = 7
MANUAL_ALARM = 8
TEST_MODE = 9
COMMS = 10  # device communication lost (state active) / restored (state normal)
MEASUREMENT = 11  # a delta-encoded sample series
HEALTH = 12  # heartbeat and health counters
BIRTH = 13
DEATH = 14
MAINTENANCE = 15  # maintenance marker: a check or test step logged at the gateway
DROPPED = 16  # telemetry evicted from the outbox by policy: the seq range it held

KIND_NAMES = {
    FIRE_ALARM: "fire_alarm",
    PRE_ALARM: "pre_alarm",
    FAULT: "fault",
    SUPERVISORY: "supervisory",
    SHIELD: "shield",
    RESET: "reset",
    SILENCE: "silence",
    MANUAL_ALARM: "manual_alarm",
    TEST_MODE: "test_mode",
    COMMS: "comms",
    MEASUREMENT: "measurement",
    HEALTH: "health",
    BIRTH: "birth",
    DEATH: "death",
    MAINTENANCE: "maintenance",
    DROPPED: "dropped",
}

# Kinds that are never evicted from an outbox and that jump the queue.
PRIORITY_KINDS = (FIRE_ALARM, MANUAL_ALARM, PRE_ALARM, FAULT, SUPERVISORY, SHIELD, COMMS)
# Kinds the outbox may evict (oldest first) under disk pressure, announcing a DROPPED range.
EVICTABLE_KINDS = (MEASUREMENT, HEALTH)

# --- Condition states (event key 4) ------------------------------------------------------------
NORMAL = 0  # cleared / restored / off
ACTIVE = 1  # raised / lost / on / shielded
ACKNOWLEDGED = 2
DISABLED = 3

STATE_NAMES = {
    NORMAL: "normal",
    ACTIVE: "active",
    ACKNOWLEDGED: "acknowledged",
    DISABLED: "disabled",
}

# --- Event flags (event key 16), bit values ----------------------------------------------------
EF_TEST = 1  # raised while the point or gateway was in test mode: a test, not a fire
EF_LATCHED = 2  # the condition latches until reset
EF_VERIFIED = 4  # passed alarm verification (retard-reset-restart or confirmation window)

EVENT_FLAG_NAMES = {EF_TEST: "test", EF_LATCHED: "latched", EF_VERIFIED: "verified"}

# --- Batch flags (batch key 7), bit values -----------------------------------------------------
BF_REPLAYED = 1  # sent again from the store after a reconnect (may duplicate)
BF_CLOCK_UNSYNCED = 2  # the gateway clock was not synchronised when these events were stamped

BATCH_FLAG_NAMES = {BF_REPLAYED: "replayed", BF_CLOCK_UNSYNCED: "clock_unsynced"}

# --- Units (event key 7); names follow SenML (RFC 8428 §12.1) where one exists -----------------
UNIT_NAMES = {
    1: "A",
    2: "V",
    3: "W",
    4: "Cel",
    5: "%RH",
    6: "Pa",
    7: "dB/m",
    8: "%/m",  # obscuration per metre
    9: "s",
    10: "Hz",
    11: "%LEL",
    12: "count",
    13: "Wh",
    14: "%",
    15: "Cel/min",
    16: "W/m2",
}

# --- GB/T 26875.3 system types (event key 18) --------------------------------------------------
SYSTEM_NAMES = {
    1: "fire_alarm_system",
    10: "linkage_controller",
    11: "hydrant",
    12: "sprinkler",
    13: "gas_extinguishing",
    14: "water_spray_pump",
    15: "water_spray_vessel",
    16: "foam",
    17: "dry_powder",
    18: "smoke_control",
    19: "fire_doors_shutters",
    20: "fire_elevator",
    21: "emergency_broadcast",
    22: "emergency_lighting",
    23: "fire_power_supply",
    24: "fire_telephone",
    # EmberLink extension: GB/T 26875.3 files electrical-fire monitoring under part types only.
    100: "electrical_fire_monitoring",
}

# --- GB/T 26875.3 part (component) types (event key 19) ----------------------------------------
PART_NAMES = {
    16: "electrical_fire_monitor",
    17: "residual_current_detector",
    18: "temperature_detector",
    23: "manual_call_point",
    30: "heat_detector",
    31: "heat_detector_a1",
    32: "heat_detector_a2",
    33: "heat_detector_b",
    34: "heat_detector_c",
    35: "heat_detector_d",
    36: "heat_detector_s",
    37: "heat_detector_r",
    40: "smoke_detector",
    41: "ionisation_smoke_detector",
    42: "photoelectric_smoke_detector",
    43: "beam_smoke_detector",
    44: "aspirating_smoke_detector",
    51: "smoke_heat_detector",
    83: "graphic_display_unit",
    91: "fire_pump",
    95: "sprinkler_pump",
    96: "water_flow_indicator",
    97: "signal_valve",
    98: "alarm_valve",
    99: "pressure_switch",
    111: "smoke_control_fan",
    117: "shutter_controller",
    121: "alarm_sounder",
    # EmberLink extensions beyond the GB/T 26875.3 table (>= 200).
    200: "fire_alarm_panel",
    201: "phase_current_sensor",
    202: "gateway",
}

# --- Condition codes (event key 3): why the event was raised -----------------------------------
# 1..49 detector conditions, 50..99 supervision faults, 100.. gateway conditions.
CONDITION_NAMES = {
    1: "smoke_threshold",
    2: "heat_fixed",
    3: "heat_rate_of_rise",
    4: "residual_current",
    5: "cable_temperature",
    6: "overcurrent_inverse",
    7: "overcurrent_definite",
    8: "overcurrent_instantaneous",
    9: "thermal_overload",
    10: "panel_status",
    11: "drift_compensation",
    12: "arc_fault",
    50: "out_of_range",
    51: "open_circuit",
    52: "short_circuit",
    53: "break_line",
    54: "stuck_sensor",
    55: "no_response",
    56: "bad_frame",
    57: "modbus_exception",
    58: "low_chamber",
    59: "maintenance_due",
    100: "outbox_eviction",
    101: "clean_shutdown",
    102: "connection_lost",
    103: "power_loss",
    104: "watchdog_reset",
    105: "disk_full",
}

# --- Health counters (event key 15 map keys) ---------------------------------------------------
HEALTH_NAMES = {
    0: "uptime_s",
    1: "free_heap",
    2: "polls_ok",
    3: "polls_failed",
    4: "outbox_depth",
    5: "rssi_dbm",
    6: "devices_ok",
    7: "devices_down",
    8: "cpu_temp_dC",  # 0.1 Cel
    9: "oldest_queued_s",
    10: "heartbeat_s",
    11: "disk_free_kb",
    # per-class outbox figures and gateway state (edge/health.py)
    12: "outbox_priority_depth",
    13: "outbox_priority_oldest_s",
    14: "outbox_telemetry_depth",
    15: "outbox_telemetry_oldest_s",
    16: "clock_synced",  # 1 synced, 0 not
    17: "devices_suspect",
    18: "outbox_dropped",  # telemetry records evicted since start
    19: "sw_version",  # the running software's release: release.version_code()
}


# --- Birth information (event key 20 map keys) -------------------------------------------------
INFO_NAMES = {
    0: "sw",  # text: software version
    1: "platform",  # PLATFORM_NAMES
    2: "caps",  # capability bits: CAP_NAMES
    3: "heartbeat_s",
    4: "serial",  # text: hardware serial number
    5: "config",  # bytes: hash of the active site configuration
}
INFO_TEXT_KEYS = (0, 4)
INFO_BYTES_KEYS = (5,)

PLATFORM_NAMES = {1: "cpython", 2: "micropython"}

CAP_NAMES = {
    1: "modbus_rtu",
    2: "modbus_tcp",
    4: "mac",
    8: "local_api",
    16: "mdns",
    32: "series",
    64: "thermal_memory",
}


def name_of(table, code):
    """The name for ``code`` in ``table``, or the code itself as a string when unknown."""
    n = table.get(code)
    return n if n is not None else str(code)


def code_of(table, name_or_code, what):
    """The code for a name (or a code given as int or numeric string) in ``table``.

    Raises ValueError naming ``what`` when the name is unknown.
    """
    if isinstance(name_or_code, bool):
        raise ValueError(what + ": expected a name or a code, got a boolean")
    if isinstance(name_or_code, int):
        return name_or_code
    if isinstance(name_or_code, str):
        for k in table:
            if table[k] == name_or_code:
                return k
        if name_or_code.isdigit():
            return int(name_or_code)
    raise ValueError(what + ": unknown name " + repr(name_or_code))


def flag_names(table, bits):
    """Names of the bits set in ``bits``; unknown bits appear as their numeric value."""
    out = []
    b = 1
    while b <= bits:
        if bits & b:
            out.append(name_of(table, b))
        b <<= 1
    return out


def flag_bits(table, names, what):
    bits = 0
    for n in names:
        bits |= code_of(table, n, what)
    return bits
