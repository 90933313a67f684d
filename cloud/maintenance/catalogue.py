"""The requirement catalogue: facility system -> check item -> interval, with its source.

Seeded from ``shared/research/standards.md`` §3 (GB 25201-2010 and the sources quoted there).
A catalogue is versioned: a revised standard is a new version with its own rows, and visits and
contracts keep the version they were made under, so history is never rewritten.

Intervals drive the schedule engine (schedule.py):

* ``calendar``: one occurrence per period counted from the contract start (monthly check: every
  month; annual test: every 12 months).
* ``completion``: the next one falls ``interval_months`` after the last completion; the first
  ``first_after_months`` after the equipment went into service (detector cleaning: first after
  2 years in service, then every 3 years; battery replacement at 5 years; detectors at 12).
"""

from __future__ import annotations

from dataclasses import dataclass

CATALOGUE_VERSION = "gb25201-2010.2"  # the current one; CATALOGUES (below) keeps the older

SYSTEMS = {
    "fire_alarm": "Fire alarm and linkage",
    "electrical_fire": "Electrical fire monitoring",
    "sprinkler": "Automatic sprinkler",
    "hydrant": "Fire hydrant",
    "gas_extinguishing": "Gas / dry-powder extinguishing",
    "smoke_control": "Smoke control",
    "fire_doors": "Fire doors and shutters",
    "emergency_lighting": "Emergency lighting and exit signs",
    "extinguishers": "Portable extinguishers",
}
METHODS = ("visual", "functional", "measure", "sample")
ANCHORS = ("calendar", "completion")

# Event kinds (protocol codes) that prove a functional test at the panel.
FIRE = 1
PRE_ALARM = 2
FAULT = 3
SUPERVISORY = 4
MANUAL = 8
TEST_MODE = 9

GB = "GB 25201-2010"
MONTHLY_SRC = "standards.md §3.2 monthly check (unit templates; Fujian 维保技术规程 Art. 6); §3.4"


@dataclass(frozen=True)
class Requirement:
    code: str
    system: str
    title: str
    method: str  # visual | functional | measure | sample
    interval_months: int
    anchor: str = "calendar"  # calendar | completion
    first_after_months: int | None = None  # completion-anchored: first due after service start
    grace_days: int = 7
    escalate_days: int = 14  # overdue for this long -> escalated
    lead_days: int = 14  # completion-anchored: the window opens this long before the due date
    limit_min: float | None = None
    limit_max: float | None = None
    limit_unit: str = ""
    event_kinds: tuple[int, ...] = ()  # functional: which panel events prove it
    annual_test: bool = False  # part of the annual test (filing reminder for key units)
    source: str = ""


def _m(code: str, system: str, title: str, method: str, **kw: object) -> Requirement:
    kw.setdefault("source", MONTHLY_SRC)
    kw.setdefault("lead_days", 7)
    return Requirement(code, system, title, method, 1, **kw)  # type: ignore[arg-type]


ALARM = (FIRE, PRE_ALARM, MANUAL, TEST_MODE)

# The first version: monthly checks, the annual test, the 6-monthly extinguisher check and the
# long cycles. Contracts made under it keep it (and so do their visits and reports).
SEED_2010_1: tuple[Requirement, ...] = (
    # -- monthly checks by the contracted firm (§3.2, §3.4) --
    _m(
        "FA-M-CTRL",
        "fire_alarm",
        "Controller self-test, silence, reset, fault indication, main/backup power switchover",
        "functional",
        event_kinds=(FAULT, TEST_MODE),
    ),
    _m(
        "FA-M-DET",
        "fire_alarm",
        "Detectors, call points, sounders: simulated-fire test on a "
        "rotating sample (all devices within the year)",
        "sample",
        event_kinds=ALARM,
    ),
    _m(
        "FA-M-LINK",
        "fire_alarm",
        "Linkage outputs, manual and automatic",
        "functional",
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
    ),
    _m(
        "FA-M-BAT", "fire_alarm", "Backup battery charge state and main/backup switchover", "visual"
    ),
    _m(
        "FA-M-TEL",
        "fire_alarm",
        "Fire telephone talk test, emergency broadcast zone test",
        "functional",
    ),
    _m(
        "EF-M-BTN",
        "electrical_fire",
        "Test button on each detector or monitoring unit",
        "functional",
        event_kinds=(FIRE, PRE_ALARM, TEST_MODE),
    ),
    _m(
        "EF-M-RCD",
        "electrical_fire",
        "Residual-current injection at the set value: alarm within 30 s",
        "measure",
        limit_max=30.0,
        limit_unit="s",
        event_kinds=(FIRE, PRE_ALARM, TEST_MODE),
    ),
    _m(
        "EF-M-TEMP",
        "electrical_fire",
        "Temperature detector heating: alarm within 40 s",
        "measure",
        limit_max=40.0,
        limit_unit="s",
        event_kinds=(FIRE, PRE_ALARM, TEST_MODE),
    ),
    _m(
        "SP-M-VALVE",
        "sprinkler",
        "Alarm-valve drain test: water-motor gong and pressure switch",
        "functional",
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
    ),
    _m(
        "SP-M-END",
        "sprinkler",
        "End-of-line test valve: flow alarm, automatic pump start, signal display",
        "functional",
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
    ),
    _m(
        "SP-M-PUMP",
        "sprinkler",
        "Pump run (manual start), duty/standby switchover",
        "functional",
        source="standards.md §3.2 fire pumps: run >= 1 per month",
    ),
    _m("HY-M-CAB", "hydrant", "Cabinet contents: hose, nozzle, reel", "visual"),
    _m(
        "HY-M-PRES",
        "hydrant",
        "Most-remote outlet static pressure",
        "measure",
        limit_min=0.10,
        limit_unit="MPa",
    ),
    _m(
        "GE-M-PRES",
        "gas_extinguishing",
        "Agent and pilot-cylinder pressure against the fill pressure (percent of fill)",
        "measure",
        limit_min=90.0,
        limit_unit="%",
    ),
    _m(
        "GE-M-MODE",
        "gas_extinguishing",
        "Manual/automatic mode indication",
        "functional",
        event_kinds=(SUPERVISORY, TEST_MODE),
    ),
    _m(
        "SC-M-FAN",
        "smoke_control",
        "Fans and dampers: manual/automatic start and feedback",
        "functional",
        event_kinds=(SUPERVISORY, TEST_MODE),
    ),
    _m(
        "FD-M-FEED",
        "fire_doors",
        "Door-monitor feedback",
        "functional",
        event_kinds=(SUPERVISORY, TEST_MODE),
    ),
    _m("EL-M-BAT", "emergency_lighting", "Switchover to battery", "functional"),
    _m(
        "EL-M-LUX",
        "emergency_lighting",
        "Floor illuminance on evacuation routes",
        "measure",
        limit_min=5.0,
        limit_unit="lx",
    ),
    _m(
        "EX-M-VIS",
        "extinguishers",
        "Location, gauge in the green zone, seal, expiry",
        "visual",
        source="standards.md §3.4 extinguishers; monthly visual in local rules",
    ),
    # -- annual test: all equipment and components (GB 25201 §7.1.1) --
    Requirement(
        "FA-Y-ALL",
        "fire_alarm",
        "Annual test of every detector, call point and sounder",
        "functional",
        12,
        grace_days=30,
        escalate_days=30,
        lead_days=30,
        event_kinds=ALARM,
        annual_test=True,
        source=f"{GB} §7.1.1",
    ),
    Requirement(
        "FA-Y-LINK",
        "fire_alarm",
        "Linkage / comprehensive check",
        "functional",
        12,
        grace_days=30,
        escalate_days=30,
        lead_days=30,
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
        annual_test=True,
        source="standards.md §3.2 linkage check >= 1 per year",
    ),
    Requirement(
        "FA-Y-BATT",
        "fire_alarm",
        "Backup battery duration test",
        "measure",
        12,
        grace_days=30,
        escalate_days=30,
        lead_days=30,
        limit_min=3.0,
        limit_unit="h",
        annual_test=True,
        source="standards.md §3.2 backup batteries, §D.3.3",
    ),
    Requirement(
        "SP-Y-LINK",
        "sprinkler",
        "Simulated-fire linkage test of the water system",
        "functional",
        12,
        grace_days=30,
        escalate_days=30,
        lead_days=30,
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
        annual_test=True,
        source="standards.md §3.2 fire pumps: yearly linkage test",
    ),
    Requirement(
        "GE-Y-SVC",
        "gas_extinguishing",
        "Annual service of the gas system",
        "functional",
        12,
        grace_days=30,
        escalate_days=30,
        lead_days=30,
        annual_test=True,
        source="standards.md §3.2 gas extinguishing >= 1 per year",
    ),
    Requirement(
        "EX-S-SVC",
        "extinguishers",
        "Extinguisher check (6-monthly)",
        "visual",
        6,
        grace_days=14,
        escalate_days=30,
        source="standards.md §3.2 extinguishers",
    ),
    # -- long cycles, counted from the last completion --
    Requirement(
        "FA-L-CLEAN",
        "fire_alarm",
        "Point detectors cleaned by a specialist, then response-threshold tested",
        "functional",
        36,
        anchor="completion",
        first_after_months=24,
        grace_days=30,
        escalate_days=60,
        lead_days=60,
        source="standards.md §3.2: every 3 years once 2 years in service (Annex D.6)",
    ),
    Requirement(
        "FA-L-BATREP",
        "fire_alarm",
        "Backup battery replacement",
        "visual",
        60,
        anchor="completion",
        first_after_months=60,
        grace_days=30,
        escalate_days=60,
        lead_days=60,
        source="standards.md §3.2: forced replacement after 5 years",
    ),
    Requirement(
        "FA-L-DETREP",
        "fire_alarm",
        "Detector replacement at end of service life",
        "visual",
        144,
        anchor="completion",
        first_after_months=144,
        grace_days=30,
        escalate_days=60,
        lead_days=90,
        source="standards.md §3.2: detector service life <= 12 years",
    ),
)

# Version 2 adds the intermediate intervals of standards.md §3.2/§3.4 that version 1 left out.
SEED: tuple[Requirement, ...] = (
    *SEED_2010_1,
    Requirement(
        "FA-B-WIRE",
        "fire_alarm",
        "Wiring inspection",
        "visual",
        2,
        lead_days=14,
        grace_days=14,
        escalate_days=30,
        source="standards.md §3.4 fire alarm: wiring inspection every 2 months",
    ),
    Requirement(
        "SP-B-FLOW",
        "sprinkler",
        "Water-flow indicator function test",
        "functional",
        2,
        lead_days=14,
        grace_days=14,
        escalate_days=30,
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
        source="standards.md §3.2 sprinkler water-flow indicator: every 2 months",
    ),
    Requirement(
        "SP-Q-VALVE",
        "sprinkler",
        "Alarm valve function test",
        "functional",
        3,
        lead_days=14,
        grace_days=14,
        escalate_days=30,
        event_kinds=(SUPERVISORY, FIRE, TEST_MODE),
        source="standards.md §3.2 sprinkler alarm valve: each quarter",
    ),
    Requirement(
        "GE-S-DET",
        "gas_extinguishing",
        "Detection part of the gas extinguishing system",
        "functional",
        6,
        grace_days=14,
        escalate_days=30,
        event_kinds=(FIRE, PRE_ALARM, TEST_MODE),
        source="standards.md §3.2 gas extinguishing: its detection part >= 2 per year",
    ),
)
# Version -> requirements. A revised standard is a new entry; an entry is never edited.
CATALOGUES: dict[str, tuple[Requirement, ...]] = {
    "gb25201-2010.1": SEED_2010_1,
    CATALOGUE_VERSION: SEED,
}

BY_CODE = {r.code: r for r in SEED}
assert len(BY_CODE) == len(SEED)
for _reqs in CATALOGUES.values():
    assert all(r.system in SYSTEMS and r.method in METHODS and r.anchor in ANCHORS for r in _reqs)
