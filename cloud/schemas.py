"""API schemas (Pydantic), kept apart from the tables in models.py.

Each resource has a small family: ``XCreate`` (what a client sends), ``XPublic`` (what the API
returns) and ``XsPublic`` (a list page). Times are UTC milliseconds, as on the wire.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# A reference to a row of an INTEGER-keyed table (32-bit on PostgreSQL).
RowRef = Annotated[int, Field(ge=1, le=2**31 - 1)]
# A gateway number (u32 on the wire).
GatewayNumber = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]

UnitKind = Literal["key_unit", "micro_station"]
SiteKind = Literal["site", "building"]
Role = Literal["admin", "operator", "installer", "contractor", "auditor"]
HealthStatus = Literal["unknown", "online", "degraded", "offline"]
AlarmStatus = Literal["active", "acknowledged", "cleared"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Organisation to create
class OrganisationCreate(_In):
    name: str = Field(min_length=1, max_length=200)


# Organisation as returned
class OrganisationPublic(_Out):
    id: int
    name: str


# Unit (key unit or micro station) to create
class UnitCreate(_In):
    organisation_id: RowRef
    name: str = Field(min_length=1, max_length=200)
    kind: UnitKind
    category: str = Field(default="", max_length=100)
    address: str = Field(default="", max_length=300)


# Unit as returned
class UnitPublic(_Out):
    id: int
    organisation_id: RowRef
    name: str
    kind: UnitKind
    category: str
    address: str


# A page of units
class UnitsPublic(BaseModel):
    data: list[UnitPublic]
    count: int


# Site or building to create
class SiteCreate(_In):
    unit_id: RowRef
    name: str = Field(min_length=1, max_length=200)
    kind: SiteKind = "site"
    address: str = Field(default="", max_length=300)


# Site as returned
class SitePublic(_Out):
    id: int
    unit_id: RowRef
    name: str
    kind: SiteKind
    address: str


# Gateway to register; id is the gateway number used in topics and batches
class GatewayCreate(_In):
    id: int = Field(ge=0, le=0xFFFFFFFF)
    site_id: RowRef
    name: str = Field(min_length=1, max_length=200)
    serial: str | None = Field(default=None, max_length=100)
    mac_key_hex: str | None = Field(
        default=None, pattern=r"^([0-9a-fA-F]{2}){16,64}$", description="16..64 bytes as hex"
    )
    heartbeat_s: int | None = Field(default=None, ge=1, le=86_400)
    offline_after_misses: int | None = Field(default=None, ge=1, le=100)


# Derived health of a gateway (read-only)
class GatewayHealthPublic(_Out):
    status: HealthStatus
    reason: str
    since_ms: int
    last_seen_ms: int | None
    last_heartbeat_ms: int | None
    heartbeat_s: int | None
    boot: int | None
    outbox_depth: int | None
    devices_down: int | None
    clock_unsynced: bool
    sw: str | None


# Gateway as returned in lists
class GatewayPublic(_Out):
    id: int
    site_id: RowRef
    unit_id: RowRef
    name: str
    serial: str | None
    has_mac_key: bool
    heartbeat_s: int | None
    offline_after_misses: int | None
    health: GatewayHealthPublic | None


# A page of gateways
class GatewaysPublic(BaseModel):
    data: list[GatewayPublic]
    count: int


# Field device to register (devices also appear when a gateway reports them)
class DeviceCreate(_In):
    gateway_id: GatewayNumber
    bus: int = Field(ge=0, le=255)
    unit_addr: int = Field(ge=0, le=255)
    name: str = Field(default="", max_length=200)
    part: int | None = Field(default=None, ge=0, le=255)


# Derived liveness of a device (read-only)
class DeviceHealthPublic(_Out):
    status: HealthStatus
    reason: str
    since_ms: int
    last_seen_ms: int | None


# Device as returned
class DevicePublic(_Out):
    id: int
    gateway_id: int
    bus: int
    unit_addr: int
    name: str
    part: int | None
    health: DeviceHealthPublic | None
    # The device's own status, or "unknown" while its gateway is offline.
    effective_status: HealthStatus


# Point to register
class PointCreate(_In):
    device_id: RowRef
    point: int = Field(ge=0, le=0xFFFF)
    name: str = Field(default="", max_length=200)
    sys: int | None = Field(default=None, ge=0, le=255)
    part: int | None = Field(default=None, ge=0, le=255)


# Point as returned
class PointPublic(_Out):
    id: int
    device_id: RowRef
    point: int
    name: str
    sys: int | None
    part: int | None


# Gateway detail: registry, health and the devices behind it
class GatewayDetail(GatewayPublic):
    devices: list[DevicePublic]


# One health transition
class HealthTransitionPublic(_Out):
    id: int
    gateway_id: int
    device_id: int | None
    from_status: str
    to_status: str
    reason: str
    at_ms: int


# A page of health transitions
class HealthHistoryPublic(BaseModel):
    data: list[HealthTransitionPublic]
    next_cursor: str | None


# ---- commands to gateways --------------------------------------------------------------------

U32 = 0xFFFFFFFF
CommandOp = Literal["rebirth", "test_mode", "time_sync", "reset", "resend"]
CommandStatus = Literal["pending", "sent", "send_failed", "answered"]
# A point or device source: (bus << 24) | (modbus unit << 16) | point; 0 = the whole gateway.
Src = Annotated[int, Field(ge=0, le=U32)]


class _Args(_In):
    # Strict: true is not 1 and "5" is not 5 in a command to a fire system.
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(_Args):
    pass


class TestModeArgs(_Args):
    state: Literal["on", "off"]
    # The gateway leaves test mode by itself after this long (absent: until "off").
    duration_s: int | None = Field(default=None, ge=1, le=86_400)
    src: Src | None = None  # absent or 0: the whole gateway; else a device's or point's src


class TimeSyncArgs(_Args):
    # UTC ms to set; absent: the cloud's clock when it sends the command.
    utc_ms: int | None = Field(default=None, ge=1, le=253_402_300_799_999)


class ResetArgs(_Args):
    src: Src | None = None  # absent or 0: every latched alarm of the gateway


class ResendArgs(_Args):
    seq: int = Field(ge=1, le=U32)  # queue the gateway's stored records from this seq again
    boot: int | None = Field(default=None, ge=0, le=U32)  # absent: the gateway's current boot


class RebirthCommand(_In):
    op: Literal["rebirth"]
    args: NoArgs = Field(default_factory=NoArgs)


class TestModeCommand(_In):
    op: Literal["test_mode"]
    args: TestModeArgs


class TimeSyncCommand(_In):
    op: Literal["time_sync"]
    args: TimeSyncArgs = Field(default_factory=TimeSyncArgs)


class ResetCommand(_In):
    op: Literal["reset"]
    args: ResetArgs = Field(default_factory=ResetArgs)


class ResendCommand(_In):
    op: Literal["resend"]
    args: ResendArgs


# A command to send, told apart by ``op``; its args are checked per op.
CommandCreate = Annotated[
    RebirthCommand | TestModeCommand | TimeSyncCommand | ResetCommand | ResendCommand,
    Field(discriminator="op"),
]


# A command as recorded, with the gateway's result once it answered
class CommandPublic(_Out):
    id: int
    gateway_id: int
    op: str
    args: dict[str, int | str]
    who: str
    created_ms: int
    status: CommandStatus
    sent_ms: int | None
    error: str | None
    result: str | None  # ok | unknown_op | bad_args | failed
    note: str | None
    result_ms: int | None


# A page of commands, newest first
class CommandsPublic(BaseModel):
    data: list[CommandPublic]
    next_cursor: str | None


# Fleet overview
class FleetOverview(BaseModel):
    gateways: int
    online: int
    degraded: int
    offline: int
    unknown: int
    devices_offline: int
    alarms_open: int
    largest_backlog_gateway_id: int | None
    largest_backlog: int | None


# One stored event
class EventPublic(_Out):
    id: int
    gateway_id: int
    boot: int
    seq: int
    kind: int
    kind_name: str
    src: int
    state: int | None
    code: int | None
    t_ms: int
    received_ms: int
    batch_flags: int
    late: bool
    data: dict[str, object]


# A page of events, newest first
class EventsPublic(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None


# Alarm as returned
class AlarmPublic(_Out):
    id: int
    gateway_id: int
    src: int
    kind: int
    kind_name: str
    code: int
    status: AlarmStatus
    condition_active: bool
    late: bool
    test: bool
    raised_ms: int
    received_ms: int
    normal_ms: int | None
    acked_by: str | None
    acked_ms: int | None
    cleared_by: str | None
    cleared_ms: int | None
    # Restart reconciliation: the newest boot that reported the condition active; the boot
    # whose re-raise is awaited and until when; a latched alarm not re-raised after a restart;
    # the cloud's reason for what it did (also an alarm comment by "cloud").
    active_boot: int | None
    latched: bool
    confirm_boot: int | None
    confirm_by_ms: int | None
    needs_reset: bool
    note: str | None


# A page of alarms
class AlarmsPublic(BaseModel):
    data: list[AlarmPublic]
    next_cursor: str | None


# Optional comment with an acknowledge or clear
class AlarmAction(_In):
    comment: str | None = Field(default=None, min_length=1, max_length=2000)


# Comment to add
class CommentCreate(_In):
    text: str = Field(min_length=1, max_length=2000)


# Comment as returned
class CommentPublic(_Out):
    id: int
    alarm_id: int
    author: str
    at_ms: int
    text: str


# User to create
class UserCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    unit_ids: list[RowRef] = Field(
        default_factory=list, max_length=1000, description="contractor scope"
    )


# User as returned
class UserPublic(_Out):
    id: int
    name: str
    role: Role
    active: bool
    unit_ids: list[int]


# Token to create
class TokenCreate(_In):
    name: str = Field(default="", max_length=100)


# A new token: the secret is shown this once
class TokenCreated(BaseModel):
    id: int
    user_id: int
    name: str
    token: str


# Quarantined message
class QuarantinePublic(_Out):
    id: int
    received_ms: int
    source: str
    topic: str
    gateway_id: int | None
    reason: str
    detail: str
    payload_hex: str


# A page of quarantined messages
class QuarantinesPublic(BaseModel):
    data: list[QuarantinePublic]
    next_cursor: str | None


# Result of an HTTP ingest call
class IngestResult(BaseModel):
    stored: int
    duplicates: int
    acks: list[dict[str, int]]


class Message(BaseModel):
    detail: str


# ---- maintenance ------------------------------------------------------------------------------

VisitKind = Literal["monthly_check", "annual_test", "repair", "patrol"]
ItemResult = Literal["pass", "fail", "na", "not_accessible"]
Severity = Literal["minor", "major", "critical"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# Maintenance times: 1970 up to 2200-01-01 UTC (dates, local time and schedules stay in range).
Millis = Annotated[int, Field(ge=0, le=7_258_118_400_000)]
MaintSystem = Literal[
    "fire_alarm",
    "electrical_fire",
    "sprinkler",
    "hydrant",
    "gas_extinguishing",
    "smoke_control",
    "fire_doors",
    "emergency_lighting",
    "extinguishers",
]


# One requirement of the catalogue (read-only; versions live in code)
class RequirementPublic(_Out):
    code: str
    system: str
    title: str
    method: str
    interval_months: int
    anchor: str
    first_after_months: int | None
    grace_days: int
    escalate_days: int
    lead_days: int
    limit_min: float | None
    limit_max: float | None
    limit_unit: str
    event_kinds: list[int]
    annual_test: bool
    source: str


# A catalogue version and its requirements
class CataloguePublic(BaseModel):
    version: str
    systems: dict[str, str]
    requirements: list[RequirementPublic]


# Service firm to register
class FirmCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    cert_no: str = Field(min_length=1, max_length=100)
    cert_expires_ms: Millis
    qualified: bool = True


# A firm's qualification changed: a renewed certificate, or withdrawn
class FirmUpdate(_In):
    cert_no: str | None = Field(default=None, min_length=1, max_length=100)
    cert_expires_ms: Millis | None = None
    qualified: bool | None = None


# Service firm as returned
class FirmPublic(_Out):
    id: int
    name: str
    cert_no: str
    cert_expires_ms: int
    qualified: bool


# Technician of a firm to register
class TechnicianCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    cert_no: str = Field(min_length=1, max_length=100)
    cert_expires_ms: Millis


# Technician as returned
class TechnicianPublic(_Out):
    id: int
    firm_id: int
    name: str
    cert_no: str
    cert_expires_ms: int


# Make a contractor user a member of a firm
class FirmUserCreate(_In):
    user_id: RowRef


# Contract to register: a firm maintains a unit's systems for a period
class ContractCreate(_In):
    firm_id: RowRef
    unit_id: RowRef
    starts_ms: Millis
    ends_ms: Millis
    systems: list[MaintSystem] = Field(min_length=1, max_length=20)
    in_service_ms: Millis
    catalogue_version: str | None = Field(default=None, max_length=40)


# Contract as returned
class ContractPublic(_Out):
    id: int
    firm_id: int
    unit_id: int
    starts_ms: int
    ends_ms: int
    systems: list[str]
    catalogue_version: str
    in_service_ms: int


# One member of a visit's crew
class CrewMember(_In):
    technician_id: RowRef
    role: Literal["lead", "tech"]


# Open a check window for a unit (a visit)
class VisitCreate(_In):
    contract_id: RowRef
    kind: VisitKind
    crew: list[CrewMember] = Field(min_length=1, max_length=20)
    started_ms: Millis | None = None  # default: now


# One item result to record
class ItemCreate(_In):
    code: str = Field(min_length=1, max_length=40)
    gateway_id: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    src: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    result: ItemResult
    measured: float | None = Field(default=None, allow_inf_nan=False)
    note: str = Field(default="", max_length=2000)


# An item as returned, with its evidence
class ItemPublic(_Out):
    id: int
    code: str
    gateway_id: int | None
    src: int | None
    result: str
    measured: float | None
    note: str
    within_limits: bool | None
    evidence: list[dict[str, object]]
    flag: str | None


# A defect to record on a visit
class DefectCreate(_In):
    item_code: str | None = Field(default=None, max_length=40)
    severity: Severity
    description: str = Field(min_length=1, max_length=2000)


# Close a defect: what was done and the evidence (an uploaded attachment's hash)
class DefectClose(_In):
    rectification: str = Field(min_length=1, max_length=2000)
    evidence_sha256: Sha256


# A defect as returned
class DefectPublic(_Out):
    id: int
    visit_id: int
    unit_id: int
    item_code: str | None
    severity: str
    description: str
    found_ms: int
    due_ms: int
    rectification: str | None
    closed_ms: int | None
    closed_by: str | None
    closure_sha256: str | None


# An attachment (content by hash)
class AttachmentPublic(_Out):
    sha256: str
    name: str
    media_type: str
    size: int


# The unit's fire-safety manager signs in person (name and how)
class ManagerSignature(_In):
    name: str = Field(min_length=1, max_length=200)
    method: Literal["on_screen", "paper_scan", "pin"]
    image_sha256: Sha256 | None = None


# Sign a closed visit: the contractor's lead technician and the unit's manager
class VisitSign(_In):
    lead_technician_id: RowRef
    lead_image_sha256: Sha256 | None = None
    manager: ManagerSignature


# A correction of a signed visit: a new revision, with the reason
class VisitCorrect(_In):
    reason: str = Field(min_length=1, max_length=2000)


# A visit as returned: the record, its items with evidence and what the gateways reported
class VisitPublic(_Out):
    id: int
    root_id: int | None
    revision: int
    supersedes_id: int | None
    correction_reason: str | None
    unit_id: int
    contract_id: int
    firm_id: int
    kind: str
    status: str
    started_ms: int
    ended_ms: int | None
    crew: list[dict[str, object]]
    created_by: str
    signed_ms: int | None
    signatures: dict[str, object] | None
    content_hash: str | None
    retention_until_ms: int | None
    items: list[ItemPublic]
    defects: list[DefectPublic]
    attachments: list[AttachmentPublic]
    flagged: int
    device_issues: list[dict[str, object]]
    evidence_window: list[int]  # the check window, widened by overlapping test-mode periods


# A page of visits (summaries: no items)
class VisitSummary(_Out):
    id: int
    root_id: int | None
    revision: int
    unit_id: int
    contract_id: int
    kind: str
    status: str
    started_ms: int
    ended_ms: int | None
    signed_ms: int | None


class VisitsPublic(BaseModel):
    data: list[VisitSummary]
    count: int


# One requirement's state for a unit on a day
class ScheduleRow(BaseModel):
    code: str
    system: str
    title: str
    interval_months: int
    contract_id: int
    firm_id: int
    state: str
    next_due: str | None
    last_done: str | None
    missed: int
    ahead: list[str]  # due dates generated ahead, within the horizon (monthly: 90 days)


# A unit's schedule on a day
class SchedulePublic(BaseModel):
    unit_id: int
    on: str
    rows: list[ScheduleRow]
    reminders: list[str]


# One audit entry (append-only, hash-chained)
class AuditPublic(_Out):
    id: int
    at_ms: int
    actor: str
    action: str
    entity: str
    entity_id: int
    detail: dict[str, object]
    prev_hash: str
    hash: str


class AuditsPublic(BaseModel):
    data: list[AuditPublic]
    chain_ok: bool


# --- Provisioning (issue 7) -------------------------------------------------------------------

# Printable serial as on the gateway's label (and its mDNS TXT record)
Serial = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


# A claim token to issue: the site and gateway number it binds, the serial it may claim
class ClaimTokenCreate(_In):
    site_id: RowRef
    gateway_id: GatewayNumber
    serial: Serial
    ttl_s: int = Field(default=600, ge=10, le=600, description="seconds, at most 10 minutes")


# The issued claim token (the token itself is shown only here, once)
class ClaimTokenPublic(_Out):
    id: int
    token: str
    site_id: int
    gateway_id: int
    serial: str
    expires_ms: int


# What a gateway sends to exchange its claim token
class ClaimRedeem(_In):
    token: str = Field(min_length=1, max_length=100)
    serial: Serial


# A gateway's own credentials, returned once (claim or rotation)
class GatewayCredentialsPublic(BaseModel):
    gateway_id: int
    mqtt_username: str
    mqtt_password: str
    mac_key_hex: str
    mqtt_host: str
    mqtt_port: int


# Result of a revoke or decommission
class RevokePublic(BaseModel):
    gateway_id: int
    revoked: int


# One provisioning audit row
class ProvisionAuditPublic(_Out):
    id: int
    at_ms: int
    actor: str
    action: str
    gateway_id: int | None
    site_id: int | None
    claim_token_id: int | None
    outcome: str
    reason: str


# The provisioning audit trail
class ProvisionAuditList(BaseModel):
    data: list[ProvisionAuditPublic]
    count: int
