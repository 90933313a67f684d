"""A year of simulated visits in the database, on both databases: three units, three firms, a
change of firm in July and a firm whose qualification lapses in May. Every visit is opened,
recorded, closed and signed through the service layer at its own time (the clock is set to
it); the schedule the service computes from the signed records is then checked on EACH day of
the year, for every calendar-anchored requirement of the contracts in force, against the
independent day-by-day oracle of test_schedule.py. The overdue list per firm, the filing
reminder and the reports are checked on the same records."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

import pytest
from emberlink.cloud import crud, models, schemas
from emberlink.cloud.maintenance import reports, service
from emberlink.cloud.maintenance.catalogue import SEED
from pypdf import PdfReader
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import World
from .test_schedule import SCRIPT, YEAR, oracle

H = 3_600_000
SYSTEMS = ["fire_alarm", "extinguishers"]
CALENDAR = [r for r in SEED if r.anchor == "calendar" and r.system in SYSTEMS]
FAR = service.day_start_ms(date(2030, 1, 1))
EXPIRY = date(2026, 5, 1)  # firm "Expiring": its qualification lapses here


class Clock:
    def __init__(self) -> None:
        self.ms = service.day_start_ms(date(2025, 12, 1))

    def __call__(self) -> int:
        return self.ms


def _ms(d: date) -> int:
    return service.day_start_ms(d)


def _firm(s: Session, name: str, expires: int) -> tuple[models.MaintFirm, int]:
    firm = service.create_firm(
        session=s,
        firm_in=schemas.FirmCreate(name=name, cert_no=f"FS-{name}", cert_expires_ms=expires),
        actor="operator",
    )
    tech = service.create_technician(
        session=s,
        firm=firm,
        tech_in=schemas.TechnicianCreate(name=f"lead of {name}", cert_no="OP", cert_expires_ms=FAR),
        actor="operator",
    )
    return firm, tech.id


def _contract(s: Session, firm: models.MaintFirm, unit: int, start: date, end: date) -> Any:
    return service.create_contract(
        session=s,
        contract_in=schemas.ContractCreate(
            firm_id=firm.id,
            unit_id=unit,
            starts_ms=_ms(start),
            ends_ms=_ms(end),
            systems=SYSTEMS,  # type: ignore[arg-type]
            in_service_ms=_ms(date(2024, 3, 15)),
        ),
        actor="operator",
    )


def _visit(
    s: Session, clock: Clock, contract: Any, lead: int, day: date, kind: str, codes: list[str]
) -> str | None:
    """One visit at 10:00-11:00 local on ``day``, signed at 11:05; the refusal, if any."""
    clock.ms = _ms(day) + 10 * H
    v = service.open_visit(
        session=s,
        contract=contract,
        visit_in=schemas.VisitCreate(
            contract_id=contract.id,
            kind=kind,  # type: ignore[arg-type]
            crew=[schemas.CrewMember(technician_id=lead, role="lead")],
        ),
        actor="contractor",
    )
    for code in codes:
        service.add_item(
            session=s,
            visit=v,
            item_in=schemas.ItemCreate(code=code, result="pass"),
            actor="contractor",
        )
    clock.ms = _ms(day) + 11 * H
    service.close_visit(session=s, visit=v, actor="contractor")
    clock.ms += 300_000
    sign = schemas.VisitSign(
        lead_technician_id=lead,
        manager=schemas.ManagerSignature(name="Wang Fang", method="on_screen"),
    )
    try:
        service.sign_visit(session=s, visit=v, sign_in=sign, actor="contractor")
    except service.Refused as e:
        return e.detail
    return None


def _monthly_codes(day: date, half: list[date]) -> list[str]:
    return ["FA-M-DET", "FA-M-BAT", *(["EX-S-SVC"] if day in half else [])]


def test_a_year_of_visits_gives_the_right_state_on_each_day(
    sessions: sessionmaker[Session], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(service, "models_now", clock)
    with sessions() as s, s.begin():
        org = s.get(models.Unit, world.unit_a).organisation_id  # type: ignore[union-attr]
        unit_c = crud.create_unit(
            session=s,
            unit_in=schemas.UnitCreate(
                organisation_id=org, name="unit C", kind="key_unit", category="hotel"
            ),
        ).id
        diligent, lead_d = _firm(s, "Diligent", FAR)
        lapsing, lead_l = _firm(s, "Lapsing", FAR)
        expiring, lead_e = _firm(s, "Expiring", _ms(EXPIRY))
        jan, jul, next_jan = date(2026, 1, 1), date(2026, 7, 1), date(2027, 1, 1)
        c_a = _contract(s, diligent, world.unit_a, jan, next_jan)
        c_b = _contract(s, lapsing, world.unit_b, jan, next_jan)
        c_c1 = _contract(s, expiring, unit_c, jan, jul)
        c_c2 = _contract(s, diligent, unit_c, jul, next_jan)

        # The script of test_schedule.py: A every month on the 10th and its annual test in
        # October; B lapses; unit C goes to A in July. Unit C before July: "Expiring" visits
        # on the 12th, but its May and June sign-offs are refused.
        _, monthly_a, annual_a = SCRIPT["unit-1 (firm A)"]
        _, monthly_b, _ = SCRIPT["unit-2 (firm B)"]
        _, monthly_c2, _ = SCRIPT["unit-3 (firm A from July)"]
        monthly_c1 = [date(2026, m, 12) for m in range(1, 7)]
        plan = [
            (c_a, lead_d, monthly_a, monthly_a[::6]),
            (c_b, lead_l, monthly_b, monthly_b[::6]),
            (c_c1, lead_e, monthly_c1, monthly_c1[::6]),
            (c_c2, lead_d, monthly_c2, monthly_c2[::6]),
        ]
        refused: dict[date, str | None] = {}
        visits = sorted(
            [(d, c, lead, half) for c, lead, days, half in plan for d in days],
            key=lambda t: t[0],
        )
        for d, c, lead, half in visits:
            refused[d] = _visit(s, clock, c, lead, d, "monthly_check", _monthly_codes(d, half))
        for d in annual_a:
            assert _visit(s, clock, c_a, lead_d, d, "annual_test", ["FA-Y-ALL"]) is None
    why = "Firm 'Expiring' qualification certificate FS-Expiring expired on 2026-05-01"
    assert {d: r for d, r in refused.items() if r} == {
        date(2026, 5, 12): why,
        date(2026, 6, 12): why,
    }
    signed_c1 = [d for d in monthly_c1 if d < EXPIRY]

    # Expected states, independently: per unit, the contract segments with their completions.
    def done(days: list[date], half: list[date], annual: list[date]) -> dict[str, list[date]]:
        out = {"FA-M-DET": days, "FA-M-BAT": days, "EX-S-SVC": half, "FA-Y-ALL": annual}
        return out

    segments = {
        world.unit_a: [("Diligent", jan, next_jan, done(monthly_a, monthly_a[::6], annual_a))],
        world.unit_b: [("Lapsing", jan, next_jan, done(monthly_b, monthly_b[::6], []))],
        unit_c: [
            ("Expiring", jan, jul, done(signed_c1, signed_c1[::6], [])),
            ("Diligent", jul, next_jan, done(monthly_c2, monthly_c2[::6], [])),
        ],
    }
    expected: dict[tuple[int, date], dict[str, tuple[str, str]]] = {}
    for unit, segs in segments.items():
        for firm, start, end, completions in segs:
            days = [d for d in YEAR if start <= d < end]
            for req in CALENDAR:
                states = oracle(
                    req.interval_months, start, completions.get(req.code, []), days, req
                )
                for d, st in zip(days, states, strict=True):
                    expected.setdefault((unit, d), {})[req.code] = (st, firm)

    # The long cycles, by hand: detectors in service since 2024-03-15, so their first cleaning
    # falls on 2026-03-15 (2 years; 60 days' lead, 30 grace, 60 more to escalation) and is never
    # done; battery (2029) and detector (2036) replacement stay upcoming all year.
    def cleaning(d: date) -> str:
        if d < date(2026, 1, 14):
            return "upcoming"
        if d <= date(2026, 3, 15):
            return "due"
        if d <= date(2026, 4, 14):
            return "grace"
        return "overdue" if d < date(2026, 6, 14) else "escalated"

    for (_unit, d), codes in expected.items():
        firm = next(iter(codes.values()))[1]
        codes["FA-L-CLEAN"] = (cleaning(d), firm)
        codes["FA-L-BATREP"] = codes["FA-L-DETREP"] = ("upcoming", firm)

    checked = 0
    seen_states: set[str] = set()
    with sessions() as s:
        units = {u: s.get(models.Unit, u) for u in segments}
        for d in YEAR:
            for unit_id, unit in units.items():
                assert unit is not None
                sched = service.unit_schedule(session=s, unit=unit, on=d)
                got = {r.code: r.state for r in sched.rows if r.code in expected[(unit_id, d)]}
                want = {code: st for code, (st, _) in expected[(unit_id, d)].items()}
                assert got == want, (unit.name, d, {k: (got[k], want[k]) for k in got})
                checked += len(want)
                seen_states.update(want.values())
                # The year-end filing reminder, key units only, from December 1.
                if unit.kind == "key_unit" and d >= date(2026, 12, 1):
                    assert len(sched.reminders) == 1
                    assert sched.reminders[0] == (
                        "file the 2026 annual test record with the fire authority by 2026-12-31"
                        if unit_id == world.unit_a
                        else "annual test for 2026 not done yet; it must be filed by 2026-12-31"
                    )
                else:
                    assert sched.reminders == [], (unit.name, d)
        assert checked == 365 * 3 * (len(CALENDAR) + 3)
        assert seen_states == {"done", "upcoming", "due", "grace", "overdue", "escalated"}

        # The overdue list per firm, on the 1st and the 20th of each month.
        for d in (date(2026, m, day) for m in range(1, 13) for day in (1, 20)):
            late_want = {
                (firm, unit, code)
                for (unit, day), codes in expected.items()
                if day == d
                for code, (st, firm) in codes.items()
                if st in reports.BAD_STATES
            }
            listed = reports.overdue(s, d, None)
            late_got = {(f["firm"], i["unit_id"], i["code"]) for f in listed for i in f["items"]}
            assert late_got == late_want, d
            for f in listed:  # a contractor sees its own firm's part
                assert reports.overdue(s, d, f["firm_id"]) == [f]

        # The reports render from the same records: CSV parses, PDF text extracts.
        unit_a = units[world.unit_a]
        assert unit_a is not None
        for m in range(1, 13):
            body, media = reports.monthly(s, unit_a, f"2026-{m:02d}", "csv")
            rows = list(csv.DictReader(io.StringIO(body.decode())))
            assert media == "text/csv"
            det = [r for r in rows if r["code"] == "FA-M-DET"]
            assert [r["date"] for r in det] == [date(2026, m, 10).isoformat()]
            assert det[0]["firm"] == "Diligent" and det[0]["result"] == "pass"
        body, media = reports.monthly(s, unit_a, "2026-07", "pdf")
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages)
        assert media == "application/pdf" and "FA-M-DET" in text and "Diligent" in text
        body, _ = reports.annual(s, unit_a, 2026, "csv")
        items, coverage, _points = (
            list(csv.DictReader(io.StringIO(part))) for part in body.decode().split("\n\n")
        )
        assert [(r["code"], r["date"]) for r in items] == [("FA-Y-ALL", "2026-10-20")]
        assert {r["code"]: r["done"] for r in coverage}["FA-Y-ALL"] == "2026-10-20"
        unit_c_row = units[unit_c]
        assert unit_c_row is not None
        body, _ = reports.annual(s, unit_c_row, 2026, "pdf")
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages)
        assert "FA-Y-ALL: NOT DONE" in text and "file this record" in text
        assert service.verify_records(session=s)["ok"] is True
