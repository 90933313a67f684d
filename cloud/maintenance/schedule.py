"""The schedule engine: pure functions of (requirement, anchor, completions, today).

Nothing here reads a clock or a database, so a year can be replayed day by day in a test.

An *occurrence* is one time the requirement must be met. On a day ``d`` an occurrence that is
not yet met is, in order:

* ``upcoming`` before ``due_from`` (``lead_days`` before the due date; work may already be done),
* ``due`` until the due date, ``grace`` for ``grace_days`` after it,
* ``overdue`` for ``escalate_days`` after the grace period, then ``escalated``.

Calendar-anchored requirements have one occurrence per period counted from the anchor (the
contract start): period k runs from anchor + k x interval to the day before anchor + (k+1) x
interval, and that last day is the due date. A completion meets the oldest unmet occurrence
whose window has opened and whose grace period has not ended (so a check done on the 3rd of
the next month, within grace, counts for the month that was late); an older unmet occurrence
whose grace period has ended stays open (overdue, escalated) until a later completion closes it
as *missed*: the lapse stays in the history but the schedule moves on.

Completion-anchored requirements (detector cleaning, battery and detector replacement) have one
open occurrence at a time: the first due ``first_after_months`` after the anchor (the date the
equipment went into service), the next ``interval_months`` after the last completion. Any
completion, early or late, meets it and restarts the count.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from .catalogue import Requirement

# Worst last; the requirement's state on a day is its worst open occurrence.
OPEN_STATES = ("upcoming", "due", "grace", "overdue", "escalated")
STATES = ("done", *OPEN_STATES)
SEVERITY = {s: i for i, s in enumerate(STATES)}

# How far ahead occurrences are generated, by interval (a calendar that does not flood).
HORIZON_DAYS = {1: 90, 2: 120, 3: 150, 6: 200, 12: 400}


def add_months(d: date, months: int) -> date:
    """``d`` moved by whole months, the day clamped to the month's length (Jan 31 + 1: Feb 28)."""
    y, m0 = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m0 + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Occurrence:
    window_open: date  # from when a completion counts for it
    due: date
    lead_days: int
    grace_days: int
    escalate_days: int
    done_on: date | None = None
    missed_on: date | None = None  # closed unmet by a later completion

    @property
    def due_from(self) -> date:
        return max(self.window_open, self.due - timedelta(days=self.lead_days))

    @property
    def grace_end(self) -> date:
        return self.due + timedelta(days=self.grace_days)

    @property
    def escalate_from(self) -> date:
        return self.grace_end + timedelta(days=self.escalate_days + 1)

    def state_on(self, d: date) -> str:
        """The state of this occurrence on day ``d`` (``done`` once met)."""
        if self.done_on is not None and self.done_on <= d:
            return "done"
        if d < self.due_from:
            return "upcoming"
        if d <= self.due:
            return "due"
        if d <= self.grace_end:
            return "grace"
        if d < self.escalate_from:
            return "overdue"
        return "escalated"

    def is_open_on(self, d: date) -> bool:
        if self.done_on is not None and self.done_on <= d:
            return False
        return not (self.missed_on is not None and self.missed_on <= d)


@dataclass(frozen=True)
class Status:
    """A requirement's state on a day and the occurrences behind it."""

    state: str
    next_due: date | None
    occurrences: tuple[Occurrence, ...] = field(default=())
    missed: int = 0  # occurrences closed unmet so far


def _occ(req: Requirement, window_open: date, due: date) -> Occurrence:
    return Occurrence(window_open, due, req.lead_days, req.grace_days, req.escalate_days)


def occurrences(
    req: Requirement,
    anchor: date,
    completions: Iterable[date],
    today: date,
    *,
    horizon_days: int | None = None,
    until: date | None = None,
) -> list[Occurrence]:
    """Every occurrence from ``anchor`` to ``today`` + the horizon, with completions applied.

    Only completions on or before ``today`` count; ``until`` (a contract's end) stops the
    generation of calendar periods that start after it.
    """
    done = sorted(c for c in completions if anchor <= c <= today)
    if req.anchor == "completion":
        return _completion_occurrences(req, anchor, done)
    horizon = horizon_days if horizon_days is not None else HORIZON_DAYS.get(req.interval_months)
    last_open = today + timedelta(days=horizon if horizon is not None else 400)
    occs: list[Occurrence] = []
    k = 0
    pending = list(done)
    while True:
        start = add_months(anchor, k * req.interval_months)
        if start > last_open or (until is not None and start > until):
            break
        end = add_months(anchor, (k + 1) * req.interval_months) - timedelta(days=1)
        occs.append(_occ(req, start, end))
        k += 1
    for c in pending:
        _apply_completion(occs, c)
    return occs


def _apply_completion(occs: list[Occurrence], c: date) -> None:
    """Meet the oldest eligible occurrence with completion ``c``; close lapsed ones as missed."""
    target = None
    for i, o in enumerate(occs):
        if o.window_open > c:
            break
        if o.is_open_on(c) and c <= o.grace_end:
            target = i
            break
    if target is None:
        return  # nothing open to meet (an extra visit)
    occs[target] = replace(occs[target], done_on=c)
    for i in range(target):
        o = occs[i]
        if o.is_open_on(c) and o.grace_end < c:
            occs[i] = replace(o, missed_on=c)


def _completion_occurrences(req: Requirement, anchor: date, done: list[date]) -> list[Occurrence]:
    due = add_months(anchor, req.first_after_months or req.interval_months)
    occs: list[Occurrence] = []
    window_open = anchor
    for c in done:
        occs.append(replace(_occ(req, window_open, due), done_on=c))
        window_open = c + timedelta(days=1)
        due = add_months(c, req.interval_months)
    occs.append(_occ(req, window_open, due))
    return occs


def status_on(
    req: Requirement,
    anchor: date,
    completions: Iterable[date],
    today: date,
    *,
    until: date | None = None,
) -> Status:
    """The requirement's state on ``today``: its worst open occurrence, else ``done``.

    ``upcoming`` when the only open occurrences are not due yet; ``done`` when the latest
    occurrence that has started is met and the next has not started.
    """
    occs = occurrences(req, anchor, completions, today, until=until)
    started = [o for o in occs if o.window_open <= today]
    open_now = [o for o in started if o.is_open_on(today)]
    future = [o for o in occs if o.window_open > today]
    missed = sum(1 for o in occs if o.missed_on is not None and o.missed_on <= today)
    next_due: date | None
    if open_now:
        state = max((o.state_on(today) for o in open_now), key=SEVERITY.__getitem__)
        next_due = min(o.due for o in open_now)
    elif started:
        state = "done"
        next_due = future[0].due if future else None
    else:
        state = "upcoming"
        next_due = future[0].due if future else None
    return Status(state, next_due, tuple(occs), missed)


def filing_reminder(
    *, key_unit: bool, annual_done: Iterable[date], today: date, lead_days: int = 31
) -> str | None:
    """Year-end reminder: key units file the annual test record before each year-end.

    GB 25201-2010 §7.1.1 / 消防法 Art. 16(3) (standards.md §3.1).
    """
    if not key_unit:
        return None
    year_end = date(today.year, 12, 31)
    if (year_end - today).days >= lead_days:
        return None
    if any(d.year == today.year and d <= today for d in annual_done):
        return f"file the {today.year} annual test record with the fire authority by {year_end}"
    return f"annual test for {today.year} not done yet; it must be filed by {year_end}"
