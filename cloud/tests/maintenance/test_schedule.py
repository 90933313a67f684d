"""The schedule engine, day by day: a year of simulated visits against an independent oracle."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from emberlink.cloud.maintenance import catalogue, schedule
from emberlink.cloud.maintenance.schedule import add_months, filing_reminder, status_on
from hypothesis import given, settings
from hypothesis import strategies as st

MONTHLY = catalogue.BY_CODE["FA-M-DET"]  # lead 7, grace 7, escalate 14
ANNUAL = catalogue.BY_CODE["FA-Y-ALL"]  # lead 30, grace 30, escalate 30
HALF = catalogue.BY_CODE["EX-S-SVC"]  # 6 months, lead 14, grace 14, escalate 30
CLEAN = catalogue.BY_CODE["FA-L-CLEAN"]  # first after 24 months, then every 36
YEAR = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]


def oracle(interval: int, anchor: date, completions: list[date], days: list[date], req) -> list:
    """Walk the days one by one, keeping the periods and their fate (written apart from the
    engine: month arithmetic on (year, month) pairs, anchors on the 1st of a month)."""
    assert anchor.day == 1
    periods: list[dict] = []
    y, m = anchor.year, anchor.month
    while date(y, m, 1) <= days[-1] + timedelta(days=400):
        ny, nm = (y + (m - 1 + interval) // 12, (m - 1 + interval) % 12 + 1)
        periods.append({"start": date(y, m, 1), "due": date(ny, nm, 1) - timedelta(days=1)})
        y, m = ny, nm
    fate: dict[int, tuple[str, date]] = {}
    done_days = set(completions)
    states = []
    for d in days:
        if d in done_days:
            for i, p in enumerate(periods):
                if p["start"] > d:
                    break
                if i not in fate and d <= p["due"] + timedelta(days=req.grace_days):
                    fate[i] = ("met", d)
                    for j in range(i):
                        late = periods[j]["due"] + timedelta(days=req.grace_days) < d
                        if j not in fate and late:
                            fate[j] = ("missed", d)
                    break
        worst, any_started = -1, False
        for i, p in enumerate(periods):
            if p["start"] > d:
                break
            any_started = True
            if i in fate:
                continue
            age = (d - p["due"]).days
            if d < p["due"] - timedelta(days=req.lead_days):
                s = 0  # upcoming
            elif age <= 0:
                s = 1
            elif age <= req.grace_days:
                s = 2
            elif age <= req.grace_days + req.escalate_days:
                s = 3
            else:
                s = 4
            worst = max(worst, s)
        if worst >= 0:
            states.append(schedule.OPEN_STATES[worst])
        else:
            states.append("done" if any_started else "upcoming")
    return states


# Firms: A visits on the 10th of every month; B skips March, is 3 days late for May (June 3,
# within grace), and stops after August. Unit C changes from B to A on July 1 (new contract,
# new anchor). Annual tests: A in October, B never.
def _monthly(day: int, months: list[int]) -> list[date]:
    return [date(2026, m, day) for m in months]


SCRIPT = {
    "unit-1 (firm A)": (date(2026, 1, 1), _monthly(10, list(range(1, 13))), [date(2026, 10, 20)]),
    "unit-2 (firm B)": (
        date(2026, 1, 1),
        [*_monthly(25, [1, 2, 4]), date(2026, 6, 3), date(2026, 6, 28), *_monthly(5, [7, 8])],
        [],
    ),
    "unit-3 (firm A from July)": (date(2026, 7, 1), _monthly(12, list(range(7, 13))), []),
}


def test_a_year_of_visits_matches_the_oracle_every_day() -> None:
    checked = 0
    for _unit, (anchor, monthly, annual) in SCRIPT.items():
        for req, done in ((MONTHLY, monthly), (ANNUAL, annual), (HALF, monthly[::6])):
            days = [d for d in YEAR if d >= anchor]
            expected = oracle(req.interval_months, anchor, done, days, req)
            for d, want in zip(days, expected, strict=True):
                got = status_on(req, anchor, done, d).state
                assert got == want, (_unit, req.code, d, got, want)
                checked += 1
    assert checked > 2500


def test_hand_checked_key_dates_for_the_lapsing_firm() -> None:
    anchor, done, _ = SCRIPT["unit-2 (firm B)"]

    def s(m: int, d: int) -> str:
        return status_on(MONTHLY, anchor, done, date(2026, m, d)).state

    assert s(1, 1) == "upcoming"  # January's window is open, not yet due
    assert s(1, 24) == "due"  # due from Jan 24 (7 days before Jan 31)
    assert s(1, 25) == "done"
    assert s(3, 1) == "upcoming"  # February done on the 25th; March starts
    assert s(3, 25) == "due"
    assert s(4, 1) == "grace"  # March unmet, 1..7 days late
    assert s(4, 7) == "grace"
    assert s(4, 8) == "overdue"
    assert s(4, 21) == "overdue"
    assert s(4, 22) == "escalated"  # 7 grace + 14 overdue days after Mar 31
    assert s(4, 25) == "done"  # the April visit closes March as missed and meets April
    assert status_on(MONTHLY, anchor, done, date(2026, 4, 25)).missed == 1
    assert s(6, 2) == "grace"  # May unmet
    assert s(6, 3) == "upcoming"  # the June 3 visit counts for May (in grace) ...
    assert s(6, 24) == "due"  # ... so June is still to do
    assert s(6, 28) == "done"
    assert s(9, 30) == "due"
    assert s(10, 8) == "overdue"
    assert s(12, 31) == "escalated"
    st_ = status_on(MONTHLY, anchor, done, date(2026, 12, 31))
    assert st_.next_due == date(2026, 9, 30)  # the oldest open occurrence
    # The annual test was never done: due from Dec 1, in grace into 2027.
    assert status_on(ANNUAL, anchor, [], date(2026, 11, 30)).state == "upcoming"
    assert status_on(ANNUAL, anchor, [], date(2026, 12, 1)).state == "due"
    assert status_on(ANNUAL, anchor, [], date(2027, 1, 30)).state == "grace"
    assert status_on(ANNUAL, anchor, [], date(2027, 1, 31)).state == "overdue"
    assert status_on(ANNUAL, anchor, [], date(2027, 3, 2)).state == "escalated"


def test_long_cycles_count_from_service_start_then_from_completion() -> None:
    in_service = date(2024, 3, 15)
    # Detector cleaning: first after 2 years in service (2026-03-15), lead 60 days.
    assert status_on(CLEAN, in_service, [], date(2026, 1, 13)).state == "upcoming"
    assert status_on(CLEAN, in_service, [], date(2026, 1, 14)).state == "due"
    assert status_on(CLEAN, in_service, [], date(2026, 4, 14)).state == "grace"
    assert status_on(CLEAN, in_service, [], date(2026, 4, 15)).state == "overdue"
    assert status_on(CLEAN, in_service, [], date(2026, 6, 14)).state == "escalated"
    # Cleaned late on 2026-07-01: the next falls 3 years later.
    st_ = status_on(CLEAN, in_service, [date(2026, 7, 1)], date(2026, 7, 2))
    assert st_.state == "upcoming" and st_.next_due == date(2029, 7, 1)
    battery = catalogue.BY_CODE["FA-L-BATREP"]
    assert status_on(battery, in_service, [], date(2029, 3, 15)).state == "due"
    assert status_on(battery, in_service, [], date(2029, 3, 15)).next_due == date(2029, 3, 15)
    detectors = catalogue.BY_CODE["FA-L-DETREP"]
    assert status_on(detectors, in_service, [], date(2036, 3, 15)).next_due == date(2036, 3, 15)


def test_occurrences_are_generated_a_bounded_horizon_ahead() -> None:
    occs = schedule.occurrences(MONTHLY, date(2026, 1, 1), [], date(2026, 1, 1))
    assert occs[-1].window_open <= date(2026, 4, 1)  # 90 days
    assert len(occs) == 4
    years = schedule.occurrences(ANNUAL, date(2020, 1, 1), [], date(2026, 6, 1))
    assert years[-1].window_open == date(2027, 1, 1)
    ended = schedule.occurrences(
        MONTHLY, date(2026, 1, 1), [], date(2026, 6, 1), until=date(2026, 3, 31)
    )
    assert [o.window_open.month for o in ended] == [1, 2, 3]


def test_add_months_clamps_the_day() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert add_months(date(2026, 5, 31), -3) == date(2026, 2, 28)


def test_year_end_filing_reminder_for_key_units() -> None:
    done = [date(2026, 10, 20)]
    assert filing_reminder(key_unit=True, annual_done=done, today=date(2026, 11, 30)) is None
    assert filing_reminder(key_unit=True, annual_done=done, today=date(2026, 12, 1)) == (
        "file the 2026 annual test record with the fire authority by 2026-12-31"
    )
    assert filing_reminder(key_unit=True, annual_done=[], today=date(2026, 12, 31)) == (
        "annual test for 2026 not done yet; it must be filed by 2026-12-31"
    )
    assert filing_reminder(key_unit=False, annual_done=[], today=date(2026, 12, 31)) is None


def test_every_seeded_requirement_names_its_source() -> None:
    for r in catalogue.SEED:
        assert r.source, r.code
        assert r.anchor == "calendar" or r.first_after_months
    assert {r.system for r in catalogue.SEED} == set(catalogue.SYSTEMS)


day_offsets = st.lists(st.integers(0, 500), max_size=12, unique=True)
anchors = st.dates(date(2024, 1, 1), date(2027, 12, 31))
reqs = st.sampled_from(catalogue.SEED)


@settings(max_examples=60, deadline=None)
@given(req=reqs, anchor=anchors, offs=day_offsets, probe=st.integers(0, 600))
def test_a_completion_never_makes_a_later_day_worse(req, anchor, offs, probe) -> None:
    done = [anchor + timedelta(days=o) for o in offs]
    day = anchor + timedelta(days=probe)
    extra = anchor + timedelta(days=probe // 2)
    before = status_on(req, anchor, done, day)
    after = status_on(req, anchor, [*done, extra], day)
    sev = schedule.SEVERITY
    # On a calendar an extra completion can only meet or close occurrences (a
    # completion-anchored one restarts its count instead, which can bring the next one closer).
    if req.anchor == "calendar":
        assert sev[after.state] <= sev[before.state]


@settings(max_examples=60, deadline=None)
@given(req=reqs, anchor=anchors, offs=day_offsets)
def test_without_completions_in_between_the_state_only_gets_worse(req, anchor, offs) -> None:
    done = sorted(anchor + timedelta(days=o) for o in offs)
    start = done[-1] if done else anchor
    prev = 0
    for i in range(0, 400, 3):
        d = start + timedelta(days=i)
        cur = schedule.SEVERITY[status_on(req, anchor, done, d).state]
        # A new period turns "done" into "upcoming"; without a completion nothing gets better.
        assert cur >= prev, (req.code, d)
        prev = cur


@settings(max_examples=60, deadline=None)
@given(req=reqs, anchor=anchors, offs=day_offsets, probe=st.integers(0, 600))
def test_future_completions_do_not_change_today(req, anchor, offs, probe) -> None:
    done = [anchor + timedelta(days=o) for o in offs]
    day = anchor + timedelta(days=probe)
    past = [c for c in done if c <= day]
    assert status_on(req, anchor, done, day) == status_on(req, anchor, past, day)


def test_monthly_visits_on_time_never_go_past_due() -> None:
    anchor = date(2026, 1, 1)
    done = [date(2026, m, calendar.monthrange(2026, m)[1] - 2) for m in range(1, 13)]
    seen = {status_on(MONTHLY, anchor, done, d).state for d in YEAR}
    assert seen == {"upcoming", "due", "done"}


def test_test_mode_spans_widen_the_window() -> None:
    from emberlink.cloud.maintenance.evidence import PanelEvent, test_mode_spans, widen

    def tm(i: int, t: int, state: int, gw: int = 1) -> PanelEvent:
        return PanelEvent(i, gw, 0, 9, state, t, t, False, "gw")

    evs = [tm(1, 100, 1), tm(2, 200, 0), tm(3, 500, 1), tm(4, 900, 1, gw=2), tm(5, 950, 0, gw=2)]
    spans = test_mode_spans(evs, horizon_ms=1000)
    assert spans == [(100, 200), (500, 1000), (900, 950)]
    assert widen((150, 160), spans) == (100, 200)
    assert widen((300, 400), spans) == (300, 400)  # no overlap
    assert widen((450, 520), spans) == (450, 1000)
