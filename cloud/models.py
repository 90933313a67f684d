"""Tables of the registry as SQLAlchemy 2 ``Mapped[]`` classes (the API schemas are in schemas.py).

Times are UTC milliseconds in BIGINT columns, as on the wire, so that SQLite and PostgreSQL
store and compare them identically. Health rows are derived: only ingest and the sweep write
them; no API route edits them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so that migrations (and SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An autoincrementing 64-bit key on PostgreSQL that is still SQLite's rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

UNIT_KINDS = ("key_unit", "micro_station")
SITE_KINDS = ("site", "building")
ROLES = ("admin", "operator", "installer", "contractor", "auditor")
HEALTH_STATUSES = ("unknown", "online", "degraded", "offline")
COMMAND_STATUSES = ("pending", "sent", "send_failed", "answered")
ALARM_STATUSES = ("active", "acknowledged", "cleared")


def _in(column: str, values: tuple[str, ...]) -> str:
    return column + " IN (" + ", ".join("'" + v + "'" for v in values) + ")"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Unit(Base):
    """A key unit (重点单位) or a micro fire station (微型消防站)."""

    __tablename__ = "units"
    __table_args__ = (CheckConstraint(_in("kind", UNIT_KINDS), name="kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(300), default="")


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (CheckConstraint(_in("kind", SITE_KINDS), name="kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="site")
    address: Mapped[str] = mapped_column(String(300), default="")


class Gateway(Base):
    """A gateway; its id is the registry gateway number that appears in topics and batches."""

    __tablename__ = "gateways"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    serial: Mapped[str | None] = mapped_column(String(100))
    mac_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Per-gateway overrides of the health settings (None: the gateway's report, then defaults).
    heartbeat_s: Mapped[int | None] = mapped_column(Integer)
    offline_after_misses: Mapped[int | None] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    # When the ingest last sent this gateway an automatic time sync: the workers claim the next
    # one with a conditional UPDATE on this column, so at most one is sent per interval.
    time_sync_ms: Mapped[int | None] = mapped_column(BigInteger)


class GatewayHealth(Base):
    """Derived liveness of one gateway; written only by ingest and the sweep."""

    __tablename__ = "gateway_health"
    __table_args__ = (CheckConstraint(_in("status", HEALTH_STATUSES), name="status"),)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), default="unknown")
    reason: Mapped[str] = mapped_column(String(300), default="never heard from")
    since_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_heartbeat_ms: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_s: Mapped[int | None] = mapped_column(Integer)  # as the gateway announced it
    boot: Mapped[int | None] = mapped_column(BigInteger)
    outbox_depth: Mapped[int | None] = mapped_column(BigInteger)
    devices_down: Mapped[int | None] = mapped_column(Integer)
    clock_unsynced: Mapped[bool] = mapped_column(Boolean, default=False)
    will_ms: Mapped[int | None] = mapped_column(BigInteger)  # broker will received (fast hint)
    sw: Mapped[str | None] = mapped_column(String(64))
    # When the derived status can next change by time alone; the sweep reads this index.
    next_check_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)


class Device(Base):
    """A field device behind a gateway: one Modbus unit on one bus."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("gateway_id", "bus", "unit_addr"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"))
    bus: Mapped[int] = mapped_column(Integer)
    unit_addr: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    part: Mapped[int | None] = mapped_column(Integer)  # GB/T 26875.3 part type


class DeviceHealth(Base):
    """Derived liveness of one device, from its gateway's reports."""

    __tablename__ = "device_health"
    __table_args__ = (CheckConstraint(_in("status", HEALTH_STATUSES), name="status"),)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), default="unknown")
    reason: Mapped[str] = mapped_column(String(300), default="no report yet")
    since_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    # A recovery reported before the offline status has lasted the dwell time waits here; the
    # sweep takes it at next_check_ms if no new loss arrived in between.
    pending_status: Mapped[str | None] = mapped_column(String(10))
    pending_reason: Mapped[str | None] = mapped_column(String(300))
    next_check_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)


class Point(Base):
    """One addressable point of a device (a detector loop address, a channel)."""

    __tablename__ = "points"
    __table_args__ = (UniqueConstraint("device_id", "point"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    point: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    sys: Mapped[int | None] = mapped_column(Integer)
    part: Mapped[int | None] = mapped_column(Integer)


class Event(Base):
    """One stored event; (gateway_id, boot, seq) is its identity and is stored once."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("gateway_id", "boot", "seq"),
        Index("ix_events_gateway_t", "gateway_id", "t_ms"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"))
    boot: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[int] = mapped_column(Integer, index=True)
    src: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[int | None] = mapped_column(Integer)
    code: Mapped[int | None] = mapped_column(Integer)
    t_ms: Mapped[int] = mapped_column(BigInteger)  # event time: batch t0 + dt
    received_ms: Mapped[int] = mapped_column(BigInteger)
    batch_flags: Mapped[int] = mapped_column(Integer, default=0)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # the remaining fields, by name


class Stream(Base):
    """Per (gateway, boot): the contiguous high-water mark of stored sequence numbers."""

    __tablename__ = "streams"
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), primary_key=True)
    boot: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hwm: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Alarm(Base):
    """One alarm per (point, condition) while open: active -> acknowledged -> cleared."""

    __tablename__ = "alarms"
    __table_args__ = (
        CheckConstraint(_in("status", ALARM_STATUSES), name="status"),
        # At most one open alarm per (gateway, point, kind, condition).
        Index(
            "uq_alarms_open",
            "gateway_id",
            "src",
            "kind",
            "code",
            unique=True,
            sqlite_where=text("status != 'cleared'"),
            postgresql_where=text("status != 'cleared'"),
        ),
        Index("ix_alarms_status", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), index=True)
    src: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[int] = mapped_column(Integer)
    code: Mapped[int] = mapped_column(Integer)  # condition code, 0 when none was given
    status: Mapped[str] = mapped_column(String(16), default="active")
    condition_active: Mapped[bool] = mapped_column(Boolean, default=True)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    raised_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    boot: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    normal_ms: Mapped[int | None] = mapped_column(BigInteger)  # the device reported normal
    acked_by: Mapped[str | None] = mapped_column(String(200))
    acked_ms: Mapped[int | None] = mapped_column(BigInteger)
    cleared_by: Mapped[str | None] = mapped_column(String(200))
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Restart reconciliation (store.confirm_after_birth / reconcile_alarms). ``active_boot``: the
    # newest boot that reported the condition active; ``latched``: an activation carried
    # EF_LATCHED; ``confirm_boot``/``confirm_by_ms``: awaiting a re-raise by that boot until then;
    # ``needs_reset``: a latched alarm the restarted gateway did not re-raise; ``note``: the
    # cloud's reason for what it did.
    active_boot: Mapped[int | None] = mapped_column(BigInteger)
    latched: Mapped[bool] = mapped_column(Boolean, default=False)
    confirm_boot: Mapped[int | None] = mapped_column(BigInteger)
    confirm_by_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)
    needs_reset: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(String(300))


class AlarmComment(Base):
    __tablename__ = "alarm_comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    author: Mapped[str] = mapped_column(String(200))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)


class HealthTransition(Base):
    """History of health changes of a gateway (device_id None) or of one of its devices."""

    __tablename__ = "health_transitions"
    __table_args__ = (Index("ix_health_transitions_gateway_at", "gateway_id", "at_ms"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    from_status: Mapped[str] = mapped_column(String(10))
    to_status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(300))
    at_ms: Mapped[int] = mapped_column(BigInteger)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class UserUnit(Base):
    """The units a contractor may see."""

    __tablename__ = "user_units"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Quarantine(Base):
    """A message ingest refused, kept with the reason so that nothing disappears silently."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(String(10))  # mqtt | http
    topic: Mapped[str] = mapped_column(String(200))
    gateway_id: Mapped[int | None] = mapped_column(BigInteger)  # from the topic, if it parsed
    reason: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


# ---- maintenance (cloud/maintenance) ------------------------------------------------------------

VISIT_KINDS = ("monthly_check", "annual_test", "repair", "patrol")
VISIT_STATUSES = ("open", "closed", "signed")
ITEM_RESULTS = ("pass", "fail", "na", "not_accessible")
DEFECT_SEVERITIES = ("minor", "major", "critical")


class MaintFirm(Base):
    """A fire-facility service firm and its qualification certificate."""

    __tablename__ = "maint_firms"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    cert_no: Mapped[str] = mapped_column(String(100))
    cert_expires_ms: Mapped[int] = mapped_column(BigInteger)
    qualified: Mapped[bool] = mapped_column(Boolean, default=True)  # withdrawn: False
    created_ms: Mapped[int] = mapped_column(BigInteger)


class MaintTechnician(Base):
    """A technician of a firm (消防设施操作员 certificate)."""

    __tablename__ = "maint_technicians"
    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("maint_firms.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    cert_no: Mapped[str] = mapped_column(String(100))
    cert_expires_ms: Mapped[int] = mapped_column(BigInteger)


class MaintFirmUser(Base):
    """The firm a contractor user works for."""

    __tablename__ = "maint_firm_users"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("maint_firms.id"), index=True)


class MaintContract(Base):
    """A firm maintains a unit's facility systems for a period, under one catalogue version."""

    __tablename__ = "maint_contracts"
    __table_args__ = (CheckConstraint("ends_ms > starts_ms", name="period"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("maint_firms.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    starts_ms: Mapped[int] = mapped_column(BigInteger)
    ends_ms: Mapped[int] = mapped_column(BigInteger)
    systems: Mapped[list[str]] = mapped_column(JSON)
    catalogue_version: Mapped[str] = mapped_column(String(40))
    # When the unit's detectors and batteries went into service: anchor of the long cycles.
    in_service_ms: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class MaintVisit(Base):
    """One revision of a visit record. Signed revisions are immutable (a database trigger
    refuses updates); a correction is a new revision with the same root."""

    __tablename__ = "maint_visits"
    __table_args__ = (
        CheckConstraint(_in("kind", VISIT_KINDS), name="kind"),
        CheckConstraint(_in("status", VISIT_STATUSES), name="status"),
        UniqueConstraint("root_id", "revision"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    root_id: Mapped[int | None] = mapped_column(Integer, index=True)  # first revision's id
    revision: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("maint_visits.id"))
    correction_reason: Mapped[str | None] = mapped_column(Text)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("maint_contracts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), default="open")
    started_ms: Mapped[int] = mapped_column(BigInteger)  # the check window
    ended_ms: Mapped[int | None] = mapped_column(BigInteger)
    crew: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    signed_ms: Mapped[int | None] = mapped_column(BigInteger)
    signatures: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # frozen at signing
    retention_until_ms: Mapped[int | None] = mapped_column(BigInteger)


class MaintVisitItem(Base):
    """One check item of a visit: the requirement, the device, the result, a measured value."""

    __tablename__ = "maint_visit_items"
    __table_args__ = (CheckConstraint(_in("result", ITEM_RESULTS), name="result"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("maint_visits.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    gateway_id: Mapped[int | None] = mapped_column(BigInteger)
    src: Mapped[int | None] = mapped_column(BigInteger)
    result: Mapped[str] = mapped_column(String(16))
    measured: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_ms: Mapped[int] = mapped_column(BigInteger)


class MaintDefect(Base):
    """A defect found on a visit: severity, due time, rectification and closure with evidence."""

    __tablename__ = "maint_defects"
    __table_args__ = (CheckConstraint(_in("severity", DEFECT_SEVERITIES), name="severity"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("maint_visits.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    item_code: Mapped[str | None] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(Text)
    found_ms: Mapped[int] = mapped_column(BigInteger)
    due_ms: Mapped[int] = mapped_column(BigInteger)
    rectification: Mapped[str | None] = mapped_column(Text)
    closed_ms: Mapped[int | None] = mapped_column(BigInteger)
    closed_by: Mapped[str | None] = mapped_column(String(200))
    closure_sha256: Mapped[str | None] = mapped_column(String(64))


class MaintBlob(Base):
    """An attachment's bytes, by content hash (a photo, a scan)."""

    __tablename__ = "maint_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MaintAttachment(Base):
    __tablename__ = "maint_attachments"
    __table_args__ = (UniqueConstraint("visit_id", "sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("maint_visits.id"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("maint_blobs.sha256"))
    name: Mapped[str] = mapped_column(String(200))


class MaintAudit(Base):
    """Append-only audit trail, hash-chained (a trigger refuses updates; prev_hash is unique so
    the chain cannot fork)."""

    __tablename__ = "maint_audit"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[int] = mapped_column(BigInteger, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))


class MaintGuard(Base):
    """One row: while ``enforce`` is 1, triggers (migration 0010) refuse deleting a signed visit,
    its items, attachments or defects before its retention date, and any audit row. A wipe that
    must delete everything (the tests' fixture) sets 0 and back to 1 in its own transaction."""

    __tablename__ = "maint_guard"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("enforce IN (0, 1)", name="enforce"),
    )
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    enforce: Mapped[int] = mapped_column(Integer)


# --- Provisioning (issue 7): claim tokens, gateway broker credentials, their audit trail ------


class ClaimToken(Base):
    """A one-time claim token: only its SHA-256 is stored; bound to a site, an installer and the
    serial of the gateway it may claim; valid until ``expires_ms`` (<= 10 minutes)."""

    __tablename__ = "claim_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    installer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    gateway_id: Mapped[int] = mapped_column(BigInteger)  # the registry number it will take
    serial: Mapped[str] = mapped_column(String(100))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    used_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)


class GatewayCredential(Base):
    """A gateway's broker login: the username and the password's Mosquitto PBKDF2 hash
    (``$7$``); the MAC key lives on the gateway row. Revoked or decommissioned rows stay."""

    __tablename__ = "gateway_credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), index=True)
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(300))
    claim_token_id: Mapped[int | None] = mapped_column(ForeignKey("claim_tokens.id"))
    issued_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    # A rotation's login is pending (confirmed_ms None) until the gateway proves it holds it;
    # its MAC key becomes the gateway's then. Both logins are valid meanwhile.
    mac_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    confirmed_ms: Mapped[int | None] = mapped_column(BigInteger)


class ProvisionAudit(Base):
    """Who did what to a gateway's provisioning, when, with which token (append-only)."""

    __tablename__ = "provision_audit"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))  # a user name, or "gateway:<serial>"
    action: Mapped[str] = mapped_column(String(40))
    gateway_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    site_id: Mapped[int | None] = mapped_column(Integer)
    claim_token_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # ok | refused
    reason: Mapped[str] = mapped_column(String(300), default="")


class Command(Base):
    """A command to a gateway (``el/v1/<gw>/cmd``) and, once it answers on ``.../res``, its
    result. The row id is the command id on the wire (unique per gateway, as the contract
    asks). ``args`` keeps the API's names (``{"seq": 5}``); the wire keys follow from the op."""

    __tablename__ = "commands"
    __table_args__ = (CheckConstraint(_in("status", COMMAND_STATUSES), name="status"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), index=True)
    op: Mapped[int] = mapped_column(Integer)  # messages.OP_*
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    who: Mapped[str] = mapped_column(String(200))  # a user name, or "cloud" (automatic)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    sent_ms: Mapped[int | None] = mapped_column(BigInteger)  # the broker acknowledged it
    error: Mapped[str | None] = mapped_column(String(300))  # why it could not be sent
    result: Mapped[str | None] = mapped_column(String(20))  # messages.RESULT_NAMES
    note: Mapped[str | None] = mapped_column(String(100))
    result_ms: Mapped[int | None] = mapped_column(BigInteger)  # when the result arrived
