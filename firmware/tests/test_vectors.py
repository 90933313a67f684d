"""Golden vectors: the same inputs give the same events on CPython and on micropython."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emberlink.firmware.golden import run_vector
from emberlink.tools import micropython

VECTORS = sorted((Path(__file__).resolve().parent.parent / "vectors").glob("*.json"))


def test_there_are_vectors_for_every_input_kind() -> None:
    inputs = {json.loads(p.read_text())["detectors"]["input"] for p in VECTORS}
    assert inputs == {
        "smoke",
        "heat",
        "residual_current",
        "cable_temperature",
        "current",
        "panel_status",
    }


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_on_cpython(path: Path) -> None:
    vec = json.loads(path.read_text())
    assert vec["expect"], "a vector must expect at least one event"
    assert run_vector(vec) == vec["expect"]
    assert run_vector(vec, block=True) == vec["expect"]  # the feed_block fast path


@pytest.mark.micropython
def test_vectors_on_micropython() -> None:
    script = Path(__file__).with_name("mp_vectors.py")
    proc = micropython.run(script=script, args=[str(p) for p in VECTORS], timeout=180)
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]
    assert [Path(x["name"]).name for x in lines] == [p.name for p in VECTORS]
    for x, p in zip(lines, VECTORS, strict=True):
        assert "error" not in x, (p.name, x.get("error"))
        expect = json.loads(p.read_text())["expect"]
        assert x["got"] == expect, p.name
        assert x["block"] == expect, p.name + " (feed_block)"


def test_a_changed_expectation_fails(tmp_path: Path) -> None:
    """The comparison can fail: a vector with one altered timestamp does not match."""
    vec = json.loads(VECTORS[0].read_text())
    vec["expect"][0][0] += 1
    assert run_vector(vec) != vec["expect"]


@pytest.mark.micropython
def test_the_viper_fast_path_is_what_the_block_vectors_exercise() -> None:
    """On micropython feed_block takes its blocks through fastpath.block (viper)."""
    code = (
        "import json\n"
        "from emberlink.firmware import fastpath, point\n"
        "from emberlink.firmware.golden import run_vector\n"
        "calls = [0]\n"
        "orig = fastpath.block\n"
        "def wrap(*a):\n"
        "    calls[0] += 1\n"
        "    return orig(*a)\n"
        "point.vblock = wrap\n"
        "vec = json.load(open({!r}))\n"
        "print(orig is not None, run_vector(vec, True) == vec['expect'], calls[0])\n"
    ).format(str(VECTORS[0].parent / "quiet_then_active.json"))
    viper, same, calls = micropython.run(code=code).stdout.decode().split()
    assert viper == "True" and same == "True" and int(calls) > 0
