"""Reports: a unit's month, the annual test report (CSV and PDF), overdue per firm, compliance.

PDFs are written in a CJK-capable TrueType/OpenType font (``EMBERLINK_PDF_FONT``, else the
first common system CJK font found: fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk,
fonts-arphic), subset-embedded by fpdf2, so Chinese names, findings and notes are in the PDF as
text. Without any such font they fall back to fpdf2's core Helvetica (Latin-1) with text outside
Latin-1 written as ``\\uXXXX`` escapes, and one WARNING says which setting to use.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTCollection
from fpdf import FPDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import models
from ..core.config import PDF_FONT_SUFFIXES, get_settings
from . import service
from .service import CATALOGUES, local_date

log = logging.getLogger(__name__)

# Where Debian/Ubuntu (and Fedora) packages put common CJK fonts, under FONT_ROOTS, in order of
# preference: fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk, fonts-arphic-uming/ukai.
FONT_ROOTS = (Path("/usr/share/fonts"),)
CJK_FONTS = (
    "truetype/wqy/wqy-microhei.ttc",
    "wqy-microhei/wqy-microhei.ttc",
    "truetype/wqy/wqy-zenhei.ttc",
    "wqy-zenhei/wqy-zenhei.ttc",
    "opentype/noto/NotoSansCJK-Regular.ttc",
    "truetype/noto/NotoSansCJK-Regular.ttc",
    "google-noto-cjk/NotoSansCJK-Regular.ttc",
    "opentype/noto/NotoSerifCJK-Regular.ttc",
    "truetype/arphic/uming.ttc",
    "truetype/arphic/ukai.ttc",
)
# In a collection, the face for simplified Chinese when it has one (Noto CJK: "... SC").
PREFERRED_FACES = ("SC", "CN", "GB")


class PdfFontError(ValueError):
    """The configured PDF font cannot be used."""


@dataclass(frozen=True)
class PdfFont:
    """The font of the PDF reports: ``path`` None is core Helvetica with escapes."""

    path: Path | None = None
    face: int = 0  # face index in a .ttc/.otc collection
    bold: Path | None = None  # a bold file of the same family, else bold is the regular face
    bold_face: int = 0


def _face(path: Path) -> int:
    """The face of a collection to use: the simplified-Chinese one if named so, else 0."""
    if path.suffix.lower() not in (".ttc", ".otc"):
        return 0
    try:
        faces = TTCollection(str(path), lazy=True).fonts
        names = [str(f["name"].getDebugName(1) or "") for f in faces]
    except Exception as e:  # fontTools raises many kinds on a bad file
        raise PdfFontError(f"cannot read font collection {path}: {e}") from e
    for i, name in enumerate(names):
        if name.rsplit(" ", 1)[-1] in PREFERRED_FACES:
            return i
    return 0


def _font(path: Path) -> PdfFont:
    face = _face(path)
    bold = path.with_name(path.name.replace("-Regular.", "-Bold."))
    if bold != path and bold.is_file():
        return PdfFont(path, face, bold, _face(bold))
    return PdfFont(path, face)


@lru_cache(maxsize=8)
def resolve_font(configured: str | None, roots: tuple[Path, ...] = FONT_ROOTS) -> PdfFont:
    """The report font: the configured file, else the first of ``CJK_FONTS`` under ``roots``,
    else core Helvetica (logged once at WARNING). A configured file that is missing or of the
    wrong kind raises ``PdfFontError`` (the settings refuse it at start already)."""
    if configured is not None:
        path = Path(configured).expanduser()
        if path.suffix.lower() not in PDF_FONT_SUFFIXES:
            raise PdfFontError(f"EMBERLINK_PDF_FONT is not a font file ({path.suffix}): {path}")
        if not path.is_file():
            raise PdfFontError(f"EMBERLINK_PDF_FONT: no such font file: {path}")
        return _font(path)
    for root in roots:
        for rel in CJK_FONTS:
            if (root / rel).is_file():
                return _font(root / rel)
    log.warning(
        "no CJK font found under %s: PDF reports write Chinese text as \\uXXXX escapes; "
        "install fonts-wqy-microhei or set EMBERLINK_PDF_FONT to a .ttf/.ttc/.otf file",
        ", ".join(str(r) for r in roots),
    )
    return PdfFont()


def default_font() -> PdfFont:
    return resolve_font(get_settings().pdf_font)


ITEM_COLUMNS = [
    "visit_id",
    "revision",
    "date",
    "kind",
    "firm",
    "code",
    "title",
    "result",
    "measured",
    "limit",
    "within_limits",
    "evidence",
    "flag",
]


def _limit(req: Any) -> str:
    if req is None or (req.limit_min is None and req.limit_max is None):
        return ""
    lo = "" if req.limit_min is None else f">= {req.limit_min:g}"
    hi = "" if req.limit_max is None else f"<= {req.limit_max:g}"
    return " ".join(p for p in (lo, hi) if p) + f" {req.limit_unit}".rstrip()


def _visits(
    session: Session, unit_id: int, first: date, last: date, kinds: Sequence[str] | None = None
) -> list[models.MaintVisit]:
    return [
        v
        for v in service.current_signed(session, [unit_id])
        if first <= local_date(v.started_ms) <= last and (kinds is None or v.kind in kinds)
    ]


def item_rows(session: Session, visits: Sequence[models.MaintVisit]) -> list[dict[str, Any]]:
    rows = []
    for v in visits:
        content = service.visit_content(session=session, visit=v)
        contract = session.get(models.MaintContract, v.contract_id)
        assert contract is not None
        firm = session.get(models.MaintFirm, contract.firm_id)
        reqs = service.requirements(contract.catalogue_version)
        for i in content["items"]:
            req = reqs.get(i["code"])
            rows.append(
                {
                    "visit_id": v.id,
                    "revision": v.revision,
                    "date": local_date(v.started_ms).isoformat(),
                    "kind": v.kind,
                    "firm": firm.name if firm else "",
                    "code": i["code"],
                    "title": req.title if req else "",
                    "result": i["result"],
                    "measured": "" if i["measured"] is None else f"{i['measured']:g}",
                    "limit": _limit(req),
                    "within_limits": {None: "", True: "yes", False: "NO"}[i["within_limits"]],
                    "note": i["note"],
                    "evidence": "; ".join(e["text"] for e in i["evidence"]),
                    "flag": i["flag"] or "",
                }
            )
    return rows


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def latin1(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("latin-1")


class _Pdf(FPDF):
    def __init__(self, title: str, font: PdfFont) -> None:
        super().__init__(orientation="L", format="A4")
        self.bold_style = "B"
        if font.path is None:
            self.body_font = "Helvetica"
            self.enc: Callable[[str], str] = latin1
        else:
            self.body_font, self.enc = "EmberLinkCJK", str
            self.add_font(self.body_font, "", font.path, collection_font_number=font.face)
            if font.bold:
                self.add_font(self.body_font, "B", font.bold, collection_font_number=font.bold_face)
            else:
                # fpdf2 cannot embolden a TrueType face: without a bold file, bold is the regular
                # face (headings still stand out by their size), loaded once (parsing a CJK
                # font is most of a report's time).
                self.bold_style = ""
        self.title_text = self.enc(title)
        self.set_title(self.title_text)
        self.set_creator("EmberLink")
        self.set_auto_page_break(auto=True, margin=12)

    def header(self) -> None:
        self.set_font(self.body_font, self.bold_style, 12)
        self.cell(0, 8, self.title_text, new_x="LMARGIN", new_y="NEXT")
        self.ln(1)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(self.body_font, "", 7)
        self.cell(0, 5, f"EmberLink maintenance record - page {self.page_no()}", align="R")

    def line_text(self, text: str, size: int = 8, bold: bool = False) -> None:
        self.set_font(self.body_font, self.bold_style if bold else "", size)
        self.multi_cell(0, 4.5, self.enc(text), new_x="LMARGIN", new_y="NEXT")


def render_pdf(
    title: str,
    unit: models.Unit,
    session: Session,
    visits: Sequence[models.MaintVisit],
    extra: Sequence[str] = (),
    font: PdfFont | None = None,
) -> bytes:
    pdf = _Pdf(title, font or default_font())
    pdf.add_page()
    pdf.line_text(f"Unit: {unit.name} ({unit.kind}), {unit.address}")
    S = models.Site
    sites = session.scalars(select(S.name).where(S.unit_id == unit.id).order_by(S.id)).all()
    if sites:
        pdf.line_text("Sites: " + ", ".join(sites))
    for line in extra:
        pdf.line_text(line, bold=True)
    if not visits:
        pdf.line_text("No signed visits in this period.")
    for v in visits:
        content = service.visit_content(session=session, visit=v)
        pdf.ln(2)
        pdf.line_text(
            f"Visit {v.id} rev {v.revision}: {v.kind} on {local_date(v.started_ms)}"
            + (f" (correction: {v.correction_reason})" if v.correction_reason else ""),
            size=10,
            bold=True,
        )
        crew = ", ".join(f"{m['name']} ({m['role']}, {m['cert_no']})" for m in v.crew)
        pdf.line_text(f"Crew: {crew}")
        sig = v.signatures or {}
        lead = sig.get("contractor_lead", {})
        mgr = sig.get("unit_safety_manager", {})
        pdf.line_text(
            f"Signed by {lead.get('name')} for {lead.get('firm')} (cert {lead.get('firm_cert_no')})"
            f" and {mgr.get('name')} ({mgr.get('method')}); content hash {v.content_hash}"
        )
        for r in item_rows(session, [v]):
            pdf.line_text(
                f"  {r['code']}  {r['result'].upper():<6} {r['measured']} {r['limit']}"
                f" {r['title']}"
                + (f"  | {r['note']}" if r["note"] else "")
                + (f"  | {r['evidence']}" if r["evidence"] else "")
                + (f"  | REVIEW: {r['flag']}" if r["flag"] else "")
            )
        for d in content["defects"]:
            pdf.line_text(f"  Defect ({d['severity']}): {d['description']}")
        for issue in content["evidence"]["device_issues"]:
            pdf.line_text(f"  Since last visit: {issue['text']}")
    return bytes(pdf.output())


def month_bounds(month: str) -> tuple[date, date]:
    year, m = (int(p) for p in month.split("-"))
    first = date(year, m, 1)
    nxt = date(year + (m == 12), m % 12 + 1, 1)
    return first, date.fromordinal(nxt.toordinal() - 1)


def monthly(
    session: Session, unit: models.Unit, month: str, fmt: str, font: PdfFont | None = None
) -> tuple[bytes, str]:
    first, last = month_bounds(month)
    visits = _visits(session, unit.id, first, last)
    if fmt == "csv":
        return to_csv(item_rows(session, visits), ITEM_COLUMNS).encode(), "text/csv"
    title = f"Maintenance record {month} - {unit.name}"
    return render_pdf(title, unit, session, visits, font=font), "application/pdf"


def annual_coverage(session: Session, unit: models.Unit, year: int) -> list[dict[str, Any]]:
    """Each annual-test requirement of the unit's contracts and when it was done that year."""
    done = service.completions(session, unit.id)
    C = models.MaintContract
    rows, seen = [], set()
    for c in session.scalars(select(C).where(C.unit_id == unit.id).order_by(C.id)):
        for req in CATALOGUES[c.catalogue_version]:
            if not req.annual_test or req.system not in c.systems or req.code in seen:
                continue
            seen.add(req.code)
            days = [d for d in done.get(req.code, []) if d.year == year]
            rows.append(
                {
                    "code": req.code,
                    "title": req.title,
                    "done": min(days).isoformat() if days else "NOT DONE",
                    "source": req.source,
                }
            )
    return rows


def untested_points(session: Session, unit: models.Unit, year: int) -> list[dict[str, Any]]:
    """Registered points of the unit that no signed visit of the year proved with an event
    (all devices must be covered within the year, standards.md §3.4)."""
    visits = _visits(session, unit.id, date(year, 1, 1), date(year, 12, 31))
    tested: set[tuple[int, int]] = set()
    for v in visits:
        for item in service.visit_content(session=session, visit=v)["items"]:
            tested.update((e["gateway_id"], e["src"]) for e in item["evidence"])
    gws = service.unit_gateways(session, unit.id)
    if not gws:
        return []
    D, Pt = models.Device, models.Point
    rows = session.execute(
        select(D.gateway_id, D.bus, D.unit_addr, Pt.point, Pt.name)
        .join(Pt, Pt.device_id == D.id)
        .where(D.gateway_id.in_(gws))
        .order_by(D.gateway_id, D.bus, D.unit_addr, Pt.point)
    )
    out = []
    for gw, bus, addr, point, name in rows:
        src = (bus << 24) | (addr << 16) | point
        if (gw, src) not in tested:
            out.append({"gateway_id": gw, "point": f"{bus}-{addr}-{point}", "name": name})
    return out


def annual(
    session: Session, unit: models.Unit, year: int, fmt: str, font: PdfFont | None = None
) -> tuple[bytes, str]:
    visits = _visits(session, unit.id, date(year, 1, 1), date(year, 12, 31), ["annual_test"])
    coverage = annual_coverage(session, unit, year)
    untested = untested_points(session, unit, year)
    if fmt == "csv":
        rows = item_rows(session, visits)
        body = (
            to_csv(rows, ITEM_COLUMNS)
            + "\n"
            + to_csv(coverage, ["code", "title", "done"])
            + "\n"
            + to_csv(untested, ["gateway_id", "point", "name"])
        )
        return body.encode(), "text/csv"
    extra = [f"{r['code']}: {r['done']} - {r['title']}" for r in coverage]
    if untested:
        listed = ", ".join(f"{u['gateway_id']}/{u['point']} {u['name']}".strip() for u in untested)
        extra.append(f"Points with no test event this year ({len(untested)}): {listed}")
    if unit.kind == "key_unit":
        extra.append(f"Key unit: file this record with the fire authority by {year}-12-31.")
    title = f"Annual test report {year} - {unit.name}"
    return render_pdf(title, unit, session, visits, extra, font), "application/pdf"


BAD_STATES = ("grace", "overdue", "escalated")


def overdue(session: Session, on: date, firm_id: int | None) -> list[dict[str, Any]]:
    """Requirements past due on ``on``, per firm (one firm if ``firm_id``)."""
    firms = {f.id: f for f in session.scalars(select(models.MaintFirm))}
    out: dict[int, dict[str, Any]] = {}
    units = {c.unit_id for c in session.scalars(select(models.MaintContract))}
    for unit_id in sorted(units):
        unit = session.get(models.Unit, unit_id)
        assert unit is not None
        for r in service.unit_schedule(session=session, unit=unit, on=on).rows:
            if r.state not in BAD_STATES or (firm_id is not None and r.firm_id != firm_id):
                continue
            entry = out.setdefault(
                r.firm_id, {"firm_id": r.firm_id, "firm": firms[r.firm_id].name, "items": []}
            )
            entry["items"].append(
                {"unit_id": unit.id, "unit": unit.name, **r.model_dump(exclude={"firm_id"})}
            )
    return [out[k] for k in sorted(out)]


def compliance(session: Session, on: date) -> list[dict[str, Any]]:
    """Per unit under contract: requirement states, open and late defects, last signed visit."""
    D = models.MaintDefect
    on_end = service.day_start_ms(on) + service.DAY_MS
    rows = []
    units = sorted({c.unit_id for c in session.scalars(select(models.MaintContract))})
    for unit_id in units:
        unit = session.get(models.Unit, unit_id)
        assert unit is not None
        sched = service.unit_schedule(session=session, unit=unit, on=on)
        counts: dict[str, int] = {}
        for r in sched.rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        defects = list(
            session.scalars(select(D).where(D.unit_id == unit_id, D.closed_ms.is_(None)))
        )
        signed = service.current_signed(session, [unit_id])
        rows.append(
            {
                "unit_id": unit_id,
                "unit": unit.name,
                "states": counts,
                "compliant": not any(counts.get(s) for s in ("overdue", "escalated")),
                "open_defects": len(defects),
                "late_defects": sum(1 for d in defects if d.due_ms < on_end),
                "last_signed_visit": (
                    local_date(signed[-1].started_ms).isoformat() if signed else None
                ),
                "reminders": sched.reminders,
            }
        )
    return rows
