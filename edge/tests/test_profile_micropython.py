"""The profile schema and codec are portable: micropython gives what CPython gives."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from emberlink.edge import profiles
from emberlink.protocol import profile as schema
from emberlink.tools import micropython

SCRIPT = """
import sys, json
from emberlink.protocol import profile
raws = json.loads(sys.stdin.read())
out = {}
for name in sorted(raws):
    p = profile.validate(raws[name])
    blocks = profile.plan_reads(p["points"])
    vals = []
    for pt in p["points"]:
        regs = [0x4148, 0x1234][: pt["words"]]
        vals.append(profile.decode(pt, regs))
    out[name] = [[[b["address"], b["count"]] for b in blocks], vals]
try:
    profile.validate({"name": "x", "points": [{"id": 1, "name": "a", "address": 0, "type": "u17"}]})
except profile.ProfileError as e:
    out["error"] = e.field
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_shipped_profiles_validate_and_decode_identically_on_micropython() -> None:
    raws = {}
    for p in sorted(profiles.SHIPPED_DIR.glob("*.toml")):
        with open(p, "rb") as f:
            raws[p.stem] = tomllib.load(f)
    want: dict[str, Any] = {}
    for name in sorted(raws):
        prof = schema.validate(raws[name])
        blocks = [[b["address"], b["count"]] for b in schema.plan_reads(prof["points"])]
        vals = [schema.decode(pt, [0x4148, 0x1234][: pt["words"]]) for pt in prof["points"]]
        want[name] = [blocks, vals]
    want["error"] = "points[0].type"
    out = micropython.run(code=SCRIPT, stdin=json.dumps(raws).encode()).stdout.decode()
    assert json.loads(out) == want
