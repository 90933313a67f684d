"""Chinese in the PDF reports: embedded as text with a CJK font (auto-detected: CI installs
fonts-wqy-microhei), refused at start when the configured font is missing, and the ``\\uXXXX``
fallback when no font is found."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from emberlink.cloud import models
from emberlink.cloud.core.config import Settings
from emberlink.cloud.maintenance import reports
from fastapi.testclient import TestClient
from pydantic import ValidationError
from pypdf import PdfReader
from sqlalchemy.orm import Session, sessionmaker

from ..conftest import World
from ..utils import FIRE_SRC
from .test_maint_api import P, _item, _open, _setup, _sign, _test_alarm

UNIT, SITE, POINT, NOTE, DEFECT = (
    "朝阳区消防微型站",
    "消防控制室",
    "火灾报警控制器",
    "检查合格",
    "备用电源欠压",
)


def _text(pdf: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


def test_monthly_pdf_carries_the_chinese_text(
    client: TestClient, sessions: sessionmaker[Session], world: World
) -> None:
    font = reports.default_font()
    assert font.path is not None, "no CJK font: apt-get install fonts-wqy-microhei (see .ci/run)"
    with sessions.begin() as s:
        unit = s.get(models.Unit, world.unit_a)
        site = s.get(models.Site, world.site_a)
        assert unit is not None and site is not None
        unit.name, unit.address, site.name = UNIT, "北京市朝阳区工体北路 8 号", SITE
    admin = world.auth("admin")
    dev = client.post(
        P[:-6] + "/devices", headers=admin, json={"gateway_id": 10, "bus": 1, "unit_addr": 3}
    ).json()["id"]
    r = client.post(
        P[:-6] + "/points", headers=admin, json={"device_id": dev, "point": 7, "name": POINT}
    )
    assert r.status_code == 201, r.text
    m = _setup(client, world)
    v = _open(client, world, m)
    _test_alarm(sessions)
    r = _item(
        client,
        world,
        v["id"],
        code="FA-M-DET",
        gateway_id=10,
        src=FIRE_SRC,
        result="pass",
        note=NOTE,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        P + f"/visits/{v['id']}/defects",
        headers=world.auth("contractor"),
        json={"severity": "minor", "description": DEFECT},
    )
    assert r.status_code == 201, r.text
    client.post(P + f"/visits/{v['id']}/close", headers=world.auth("contractor"))
    assert _sign(client, world, v["id"], m.lead).status_code == 200
    month = client.get(P + f"/units/{world.unit_a}/schedule", headers=admin).json()["on"][:7]

    r = client.get(
        P + f"/reports/monthly?unit_id={world.unit_a}&month={month}&format=pdf", headers=admin
    )
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert b"/FontFile2" in r.content  # the font travels with the PDF (a subset)
    text = _text(r.content)
    title = f"Maintenance record {month} - {UNIT}"
    for want in (title, SITE, POINT, NOTE, DEFECT, "Zhang 张"):
        assert want in text, want
    assert "\\u" not in text
    meta = PdfReader(io.BytesIO(r.content)).metadata
    assert meta is not None and meta.title == title


def test_a_configured_font_that_is_missing_is_refused_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ttc"
    with pytest.raises(ValidationError, match="EMBERLINK_PDF_FONT: no such font file"):
        Settings(pdf_font=str(missing))
    with pytest.raises(ValidationError, match=r"must be a \.ttf/\.ttc/\.otf/\.otc file"):
        Settings(pdf_font=str(tmp_path / "font.pkl"))
    # Removed after start: the report says why rather than falling back silently.
    with pytest.raises(reports.PdfFontError, match="no such font file"):
        reports.resolve_font(str(missing))


def test_no_cjk_font_falls_back_to_escapes(
    session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=reports.__name__):
        font = reports.resolve_font(None, (tmp_path,))
        assert reports.resolve_font(None, (tmp_path,)) is font  # decided once
    assert font == reports.PdfFont()
    assert [r.getMessage().count("EMBERLINK_PDF_FONT") for r in caplog.records] == [1]
    unit = models.Unit(name=UNIT, kind="micro_station", address="")
    pdf = reports.render_pdf(f"Report - {UNIT}", unit, session, [], [POINT], font=font)
    text = _text(pdf)
    assert "Report - \\u671d\\u9633" in text and "\\u706b\\u707e" in text
    assert "No signed visits in this period." in text and b"/FontFile2" not in pdf
