"""Derived health: online, degraded or offline, with the reason, from what gateways report.

Pure functions; the ingest flush and the sweep feed them facts and the current time and write
what they return. Rules:

* offline: no message for ``misses`` heartbeat periods (default 3), or the broker delivered the
  gateway's will after its last message (the fast hint). Going offline is never delayed.
* degraded: a heartbeat is overdue (silent longer than 1.5 periods), devices behind the gateway
  are down, the outbox backlog is at or above ``backlog_high`` (and stays degraded until it is at
  or below ``backlog_low``: a band, not a line), or the gateway clock is unsynchronised.
* online otherwise.

Hysteresis: any change other than to offline waits until the current status has lasted
``min_dwell_ms``; the pending change is then taken by the sweep if it still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .core.config import Settings

ONLINE = "online"
DEGRADED = "degraded"
OFFLINE = "offline"
UNKNOWN = "unknown"

LATE_FACTOR_NUM, LATE_FACTOR_DEN = 3, 2  # a heartbeat is overdue after 1.5 periods
NEVER = 2**62  # next_check_ms for "only a new message can change this"


@dataclass(frozen=True)
class HealthPolicy:
    misses: int = 3
    default_heartbeat_s: int = 60
    min_dwell_ms: int = 30_000
    backlog_high: int = 1000
    backlog_low: int = 100
    restart_confirm_ms: int = 120_000  # Settings.restart_confirm_s: alarm re-raise window

    @classmethod
    def from_settings(cls, s: Settings) -> HealthPolicy:
        return cls(
            misses=s.offline_after_misses,
            default_heartbeat_s=s.default_heartbeat_s,
            min_dwell_ms=s.min_dwell_s * 1000,
            backlog_high=s.backlog_high,
            backlog_low=s.backlog_low,
            restart_confirm_ms=s.restart_confirm_s * 1000,
        )


@dataclass(frozen=True)
class GatewayFacts:
    """What the registry knows about a gateway at one moment."""

    status: str
    last_seen_ms: int | None
    heartbeat_s: int  # the effective period: registry override, then reported, then default
    misses: int
    will_ms: int | None = None
    outbox_depth: int | None = None
    devices_down: int | None = None
    clock_unsynced: bool = False


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str
    next_check_ms: int  # when time alone could change the verdict


def effective_heartbeat_s(override: int | None, reported: int | None, policy: HealthPolicy) -> int:
    for v in (override, reported):
        if v is not None and v > 0:
            return v
    return policy.default_heartbeat_s


def derive_gateway(f: GatewayFacts, now_ms: int, policy: HealthPolicy) -> Verdict:
    """The status the facts call for at ``now_ms`` (before hysteresis)."""
    if f.last_seen_ms is None:
        return Verdict(UNKNOWN, "never heard from", NEVER)
    hb_ms = f.heartbeat_s * 1000
    timeout_ms = f.misses * hb_ms
    silent_ms = now_ms - f.last_seen_ms
    if f.will_ms is not None and f.will_ms >= f.last_seen_ms:
        return Verdict(OFFLINE, "broker delivered the will: connection lost", NEVER)
    if silent_ms > timeout_ms:
        return Verdict(
            OFFLINE,
            f"no message for {silent_ms // 1000} s (timeout {timeout_ms // 1000} s = "
            f"{f.misses} x {f.heartbeat_s} s heartbeat)",
            NEVER,
        )
    offline_at = f.last_seen_ms + timeout_ms + 1
    overdue_at = f.last_seen_ms + hb_ms * LATE_FACTOR_NUM // LATE_FACTOR_DEN + 1
    reasons = []
    if now_ms >= overdue_at:
        reasons.append(f"heartbeat overdue: silent for {silent_ms // 1000} s")
    if f.devices_down:
        reasons.append(f"{f.devices_down} device(s) not answering")
    depth = f.outbox_depth or 0
    if depth >= policy.backlog_high or (f.status == DEGRADED and depth > policy.backlog_low):
        reasons.append(f"outbox backlog {depth} events")
    if f.clock_unsynced:
        reasons.append("gateway clock not synchronised")
    next_check = offline_at if now_ms >= overdue_at else overdue_at
    if reasons:
        return Verdict(DEGRADED, "; ".join(reasons), next_check)
    return Verdict(ONLINE, "heartbeats on time", next_check)


def settle(
    status: str, since_ms: int, verdict: Verdict, now_ms: int, min_dwell_ms: int
) -> tuple[bool, int]:
    """Whether to take ``verdict`` now, and when to look again (hysteresis).

    A change to offline is immediate; any other change waits until ``status`` has lasted
    ``min_dwell_ms`` (leaving unknown is also immediate: there is nothing to flap from).
    """
    if verdict.status == status:
        return False, verdict.next_check_ms
    if verdict.status == OFFLINE or status == UNKNOWN:
        return True, verdict.next_check_ms
    dwell_end = since_ms + min_dwell_ms
    if now_ms >= dwell_end:
        return True, verdict.next_check_ms
    return False, min(dwell_end, verdict.next_check_ms)
