"""Bad configuration is refused with the field and the reason, on both interpreters, and the
board reports it instead of crashing."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
from emberlink.firmware.board import build, conf
from emberlink.tools import micropython

from .conftest import HERE, mp_env, site_toml


@pytest.fixture
def good(tmp_path) -> dict:  # type: ignore[no-untyped-def,type-arg]
    site = site_toml(tmp_path, 1883, [(3, "acrel_asj"), (5, "fire_panel")])
    return build.board_config(site, str(tmp_path / "data"))


def test_the_built_configuration_passes(good) -> None:  # type: ignore[no-untyped-def]
    c = conf.check(json.loads(json.dumps(good)))
    assert c["gw"] == 7 and len(c["devices"]) == 2 and c["buses"][0]["char_bits"] == 10
    assert c["mqtt"]["cloud_ack"] is False and c["mqtt"]["cloud_ack_timeout_ms"] == 60000


@pytest.mark.parametrize(
    ("change", "path", "why"),
    [
        (lambda c: c.pop("gw"), "gw", "required"),
        (lambda c: c["buses"][0].update(baud=5), "buses[0].baud", "outside"),
        (lambda c: c["buses"][0].pop("device"), "buses[0].device", "device path"),
        (lambda c: c["devices"][0].update(bus=9), "devices[0].bus", "no bus 9"),
        (lambda c: c["devices"][0].update(unit=0), "devices[0].unit", "outside 1..247"),
        (lambda c: c["devices"][1].update(profile="nope"), "devices[1].profile", "no compiled"),
        (lambda c: c["mqtt"].update(port="x"), "mqtt.port", "expected an integer"),
        (lambda c: c["mqtt"].update(mac_key_hex="zz"), "mqtt.mac_key_hex", "not hexadecimal"),
        (lambda c: c["mqtt"].update(cloud_ack="yes"), "mqtt.cloud_ack", "true or false"),
        (lambda c: c["mqtt"].update(cloud_ack_timeout_ms=10), "mqtt.cloud_ack_timeout_ms",
         "outside 1000..3600000"),
        (lambda c: c["profiles"]["acrel_asj"].pop("reads"), "profiles.acrel_asj.reads",
         "build.py"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(good, change, path, why) -> None:  # type: ignore[no-untyped-def]
    c = copy.deepcopy(good)
    change(c)
    with pytest.raises(conf.ConfigError) as ei:
        conf.check(c)
    assert ei.value.path == path and why in str(ei.value)


@pytest.mark.micropython
def test_the_board_reports_a_bad_configuration_and_exits(tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    good["buses"][0]["baud"] = 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))
    broken = tmp_path / "broken.json"
    broken.write_text('{"gw": 7,')
    for f, said in ((bad, "buses[0].baud: 5 outside 300..1000000"), (broken, "not JSON")):
        p = subprocess.run([micropython.interpreter(), str(HERE / "mp_app.py"), str(f), "1000"],
                           capture_output=True, env=mp_env(), timeout=30)  # fmt: skip
        assert p.returncode == 2
        assert b"configuration refused" in p.stdout and said.encode() in p.stdout
