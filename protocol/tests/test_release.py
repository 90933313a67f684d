"""The heartbeat's software release number (health key 19) on both interpreters."""

from __future__ import annotations

import json

import pytest
from emberlink.protocol import release
from emberlink.tools import micropython
from hypothesis import given
from hypothesis import strategies as st

part = st.integers(0, 999)


@given(part, part, part, st.sampled_from(["", "+local.7", ".dev3", "rc1"]))
def test_version_code_round_trips_and_orders(a: int, b: int, c: int, tail: str) -> None:
    text = f"{a}.{b}.{c}"
    code = release.version_code(text + tail)
    assert release.version_text(code) == text
    assert code == a * 10**6 + b * 10**3 + c
    # a later release always has a larger number
    later = f"{a}.{b}.{c + 1}" if c < 999 else f"{a}.{b + 1}.0" if b < 999 else f"{a + 1}.0.0"
    if a < 999:  # parts clamp at 999
        assert release.version_code(later) > code


@pytest.mark.parametrize(
    ("text", "code"),
    [("0.1.0", 1000), ("2", 2_000_000), ("1.x", 1_000_000), ("0+unknown", 0), ("beta", 0)],
)
def test_version_code_of_odd_texts(text: str, code: int) -> None:
    assert release.version_code(text) == code
    assert 0 <= code < 2**31  # fits the i64 health value with room, and a u32 on a board


@pytest.mark.micropython
def test_version_code_identical_on_micropython() -> None:
    texts = ["0.1.0", "1.4.2", "2", "2rc1", "1.2.3.4", "0+unknown", "x", "1.x", "1000.2.3"]
    code = (
        "import json, sys\n"
        "from emberlink.protocol import release\n"
        "print(json.dumps([release.version_code(t) for t in json.loads(sys.stdin.read())]))\n"
    )
    out = micropython.run(code=code, stdin=json.dumps(texts).encode()).stdout.decode()
    assert json.loads(out) == [release.version_code(t) for t in texts]
