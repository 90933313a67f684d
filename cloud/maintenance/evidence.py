"""Evidence from the field: match a visit's functional items to the events the gateways saw.

Pure functions over plain values; service.py loads the events of the unit's gateways in the
check window and hands them here.

An item names a requirement and, optionally, a device point (gateway, src). An event proves it
when it lies in the window, is of one of the requirement's ``event_kinds`` and raises (state
active, or no state), and, when the item names a point, comes from that point. An item marked
``pass`` that needs evidence and has none is flagged for review; so is a functional item whose
point reported nothing at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from .catalogue import Requirement

# Units keep local (China Standard) time; there is no daylight saving.
LOCAL_TZ = timezone(timedelta(hours=8), "CST")
ACTIVE = 1
TEST_MODE = 9
KIND_LABELS = {
    1: "fire alarm",
    2: "pre-alarm",
    3: "fault",
    4: "supervisory",
    8: "manual alarm",
    9: "test mode",
}
NO_EVIDENCE = "passed with no matching event from the gateways in the check window"
MAX_MATCHES = 5  # per item, the earliest


@dataclass(frozen=True)
class PanelEvent:
    id: int
    gateway_id: int
    src: int
    kind: int
    state: int | None
    t_ms: int
    received_ms: int
    test: bool
    label: str  # the point's registered name, else "bus/unit/point"


@dataclass(frozen=True)
class ItemRef:
    id: int
    code: str
    gateway_id: int | None
    src: int | None
    result: str


def src_label(src: int) -> str:
    return f"{(src >> 24) & 0xFF}-{(src >> 16) & 0xFF}-{src & 0xFFFF}"


def local_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(LOCAL_TZ).strftime("%H:%M:%S")


def describe(ev: PanelEvent) -> str:
    """ "detector 3-12: test fire alarm 10:42:07, in the cloud 1.4 s later"."""
    what = ("test " if ev.test else "") + KIND_LABELS.get(ev.kind, f"kind {ev.kind}")
    latency = (ev.received_ms - ev.t_ms) / 1000
    return f"{ev.label}: {what} {local_time(ev.t_ms)}, in the cloud {latency:.1f} s later"


def match_items(
    items: Sequence[ItemRef],
    requirements: dict[str, Requirement],
    events: Iterable[PanelEvent],
    window: tuple[int, int],
) -> dict[int, dict[str, object]]:
    """For each item id: the matched events (earliest first) and a review flag or None."""
    start, end = window
    raising = sorted(
        (e for e in events if start <= e.t_ms <= end and e.state in (None, ACTIVE)),
        key=lambda e: (e.t_ms, e.id),
    )
    out: dict[int, dict[str, object]] = {}
    for it in items:
        req = requirements.get(it.code)
        kinds = req.event_kinds if req is not None else ()
        found = [
            e
            for e in raising
            if e.kind in kinds
            and (it.gateway_id is None or e.gateway_id == it.gateway_id)
            and (it.src is None or e.src == it.src)
        ][:MAX_MATCHES]
        flag = None
        if kinds and it.result == "pass" and not found:
            flag = NO_EVIDENCE
        out[it.id] = {
            "needs_evidence": bool(kinds),
            "events": [
                {
                    "event_id": e.id,
                    "gateway_id": e.gateway_id,
                    "src": e.src,
                    "kind": e.kind,
                    "test": e.test,
                    "t_ms": e.t_ms,
                    "received_ms": e.received_ms,
                    "latency_ms": e.received_ms - e.t_ms,
                    "text": describe(e),
                }
                for e in found
            ],
            "flag": flag,
        }
    return out


def test_mode_spans(events: Iterable[PanelEvent], horizon_ms: int) -> list[tuple[int, int]]:
    """(start, end) of each period a gateway (or one of its points) spent in test mode; a period
    still open ends at ``horizon_ms``."""
    spans: list[tuple[int, int]] = []
    on: dict[tuple[int, int], int] = {}
    for e in sorted(events, key=lambda e: (e.t_ms, e.id)):
        if e.kind != TEST_MODE:
            continue
        key = (e.gateway_id, e.src)
        if e.state == ACTIVE:
            on.setdefault(key, e.t_ms)
        elif key in on:
            spans.append((on.pop(key), e.t_ms))
    spans.extend((t, max(t, horizon_ms)) for t in on.values())
    return sorted(spans)


def widen(window: tuple[int, int], spans: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The check window grown to cover every test-mode period that overlaps it: a contractor
    who switched the gateway to test mode before opening the visit (or left it on after closing
    it) still gets the events of that test attached to the visit."""
    start, end = window
    for s, e in spans:
        if s <= end and e >= start:
            start, end = min(start, s), max(end, e)
    return start, end
