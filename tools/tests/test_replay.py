"""``emberlink replay``: the shipped trace, bad rows with line numbers, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emberlink.tools import cli
from emberlink.tools.replay import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "firmware" / "traces" / "site_demo.toml"
TRACE = ROOT / "firmware" / "traces" / "site_demo.csv"


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_the_shipped_trace_replays(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "--config", str(CONFIG), "--trace", str(TRACE)]) == 0
    evs = _events(capsys)
    got = {(e["point"], e["kind"], e.get("code"), e.get("state")) for e in evs}
    for expect in [
        ("rc_main", "fire_alarm", "residual_current", "active"),
        ("rc_main", "fire_alarm", "residual_current", "acknowledged"),
        ("rc_main", "reset", None, None),
        ("cable_t1", "fault", "break_line", "active"),
        ("cable_t1", "fault", "no_response", "active"),
        ("cable_t1", "fire_alarm", "cable_temperature", "active"),
        ("phase_a", "supervisory", "overcurrent_inverse", "active"),
        ("smoke_l1", "fire_alarm", "smoke_threshold", "active"),
        ("panel", "fire_alarm", "panel_status", "active"),
        ("panel", "manual_alarm", "panel_status", "active"),
    ]:
        assert expect in got, expect
    # the 6 s steam transient at 4:00 is rejected by alarm verification; the fire is verified
    smoke = [e for e in evs if e["point"] == "smoke_l1" and e["kind"] == "fire_alarm"]
    assert smoke[0]["state"] == "active" and smoke[0]["t_ms"] > 12 * 60_000
    assert "verified" in smoke[0]["flags"] and smoke[0]["verify_ms"][1] == 60000
    # the LTI overload (1.6 x 63 A, TMS 0.5: 100 s) trips 100 s after it starts at 15:00
    (trip,) = [e for e in evs if e.get("code") == "overcurrent_inverse"]
    assert 15 * 60_000 + 95_000 <= trip["t_ms"] <= 15 * 60_000 + 105_000
    assert [e["t_ms"] for e in evs] == sorted(e["t_ms"] for e in evs)


def test_json_config_and_actions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "points": [
                    {
                        "name": "rc",
                        "src": 7,
                        "detectors": {
                            "input": "residual_current",
                            "stuck": False,
                            "residual_current": {"level_mA": 300, "delay_ms": 0},
                        },
                    }
                ]
            }
        )
    )
    trace = tmp_path / "t.csv"
    trace.write_text("# a comment\n0,rc,100\n1000,7,400\n2000,rc,test_on\n3000,rc,reset\n")
    assert main(["--config", str(cfg), "--trace", str(trace)]) == 0
    evs = _events(capsys)
    assert [(e["t_ms"], e["kind"], e.get("state")) for e in evs] == [
        (1000, "fire_alarm", "active"),
        (1000, "pre_alarm", "active"),
        (2000, "test_mode", "active"),
        (3000, "reset", None),
        (3000, "fire_alarm", "normal"),
    ]
    assert evs[0] == {
        "t_ms": 1000,
        "point": "rc",
        "src": 7,
        "kind": "fire_alarm",
        "code": "residual_current",
        "state": "active",
        "val": 400,
        "exp": -3,
        "unit": "A",
        "flags": ["latched"],
    }
    assert evs[3]["flags"] == ["test"]


def test_bad_rows_are_reported_with_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(
        "time_ms,point,value\n0,rc_main,100\n5,rc_main,abc\n10,nope,1\n20,rc_main\n"
        "-5,rc_main,1\n30,rc_main,1\n25,rc_main,1\n"
    )
    assert main(["--config", str(CONFIG), "--trace", str(trace)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "Traceback" not in cap.err
    lines = cap.err.strip().splitlines()
    assert lines[0].endswith(
        f"{trace}:3: value 'abc' is not an integer or one of ack, reset, test_on, test_off"
    )
    assert (
        lines[1] == f"{trace}:4: unknown point 'nope' (configured: cable_t1, panel, phase_a,"
        " rc_main, smoke_l1)"
    )
    assert lines[2] == f"{trace}:5: expected 3 columns (time_ms, point, value), got 2"
    assert lines[3] == f"{trace}:6: time_ms '-5' is not a non-negative integer"
    assert lines[4] == f"{trace}:8: time_ms 25 goes backwards (previous row 30)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("points = 3", "points: required (a table of named points)"),
        (
            "[points.a]\nsrc = 1\n[points.a.detectors]\ninput = 'heat'\n[points.a.detectors.heat]\n"
            "class = 'Q'",
            "points.a.detectors.heat.class: unknown EN 54-5 class 'Q'",
        ),
        (
            "[points.a.detectors]\ninput = 'residual_current'\n"
            "[points.a.detectors.residual_current]\nlevel_mA = 5000",
            "points.a.detectors.residual_current.level_mA: 5000 outside 20..1000",
        ),
        ("[points.a\n", "not valid toml"),
    ],
)
def test_bad_configs_exit_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["--config", str(cfg), "--trace", str(TRACE)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_files_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "none.toml"), "--trace", str(TRACE)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--config", str(CONFIG), "--trace", str(tmp_path / "none.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([]) == 2
