"""A tiny run of the ingest benchmark: its counting and checks work end to end."""

from __future__ import annotations

import pytest
from emberlink.cloud import bench_ingest

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_ingest.main(["--smoke", "--sweep-s", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "lost 0  duplicates 0  gateways short 0" in out
    assert "RESULT: zero loss, zero duplicates" in out
    assert "RESULT: within the timeout + 5 s" in out
