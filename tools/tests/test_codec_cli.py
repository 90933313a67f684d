"""`emberlink decode` / `emberlink encode`: readable JSON out, identical bytes back, and bad
input answered with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
EMBERLINK = [sys.executable, "-m", "emberlink.tools.cli"]


def run(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*EMBERLINK, *args], input=data, capture_output=True, timeout=60)


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.cbor")), ids=lambda p: p.stem)
def test_decode_then_encode_gives_identical_bytes(path: Path, tmp_path: Path) -> None:
    dec = run("decode", str(path))
    assert dec.returncode == 0, dec.stderr
    doc = json.loads(dec.stdout)
    expected = json.loads((path.with_suffix(".json")).read_text())["message"]
    assert doc == expected
    enc = run("encode", "-", data=dec.stdout)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout == path.read_bytes()


def test_decode_names_codes() -> None:
    out = run("decode", str(VECTORS / "event_fire_alarm.cbor")).stdout.decode()
    for name in ("fire_alarm", "smoke_threshold", "photoelectric_smoke_detector", "%/m", "active"):
        assert name in out


def test_hex_in_and_out_and_mac_verification() -> None:
    raw = (VECTORS / "mac_hmac256_256.cbor").read_bytes()
    key = json.loads((VECTORS / "mac_hmac256_256.json").read_text())["key"]
    dec = run("decode", "--hex", "--key", key, "-", data=raw.hex().encode())
    assert dec.returncode == 0, dec.stderr
    assert json.loads(dec.stdout)["cose_mac0"]["verified"] is True
    enc = run("encode", "--hex", "--key", key, "-", data=dec.stdout)
    assert enc.stdout.decode().strip() == raw.hex()
    bad = run("decode", "--key", "00" * 32, str(VECTORS / "mac_hmac256_256.cbor"))
    assert bad.returncode == 2
    assert (
        bad.stderr.decode().strip()
        == "emberlink decode: MAC does not verify: tag does not match the gateway key"
    )


@pytest.mark.parametrize(
    ("args", "data", "message"),
    [
        (("decode", "-"), b"\xa6\x00\x01", "truncated"),
        (("decode", "-"), b"\x18\x01", "argument not in shortest form"),
        (("decode", "-"), b"\xf9\x3e\x00", "floats are not allowed"),
        (("decode", "-"), b"", "truncated"),
        (("decode", "/nonexistent/file"), b"", "No such file"),
        (("decode", "--bogus"), b"", "unrecognized arguments"),
        (("encode", "-"), b"{not json", "input is not JSON"),
        (
            ("encode", "-"),
            b'{"gw": 1, "boot": 1, "seq0": 1, "t0": 1, "events": [{"kind": "nope"}]}',
            "unknown kind",
        ),
        (
            ("encode", "-"),
            b'{"gw": 1, "boot": 1, "seq0": 1, "t0": 1, "events": []}',
            "at least one event",
        ),
        (
            ("encode", "-"),
            b'{"gw": 1, "boot": 1, "seq0": 1, "t0": 1, "events": [{"kind": "fire_alarm"}]}',
            "missing key",
        ),
        (("encode", "-"), b"[1, 2]", "not an EmberLink message"),
        (("encode", "-"), b"[" * 100_000, "nested too deep"),
        (("encode", "-"), b'{"ack": null}', "ack must be an object"),
        (
            ("encode", "-"),
            b'{"command": {"gw": 1, "id": 1, "op": "reset", "args": {"x": 1}}}',
            "args keys are numbers",
        ),
        (("decode", "--hex", "-"), b"zz", "neither CBOR nor hex"),
        (("decode", "-"), bytes.fromhex("a0"), "not an EmberLink message"),
        # a COSE_Mac0 whose alg is an array
        (
            ("decode", "-"),
            bytes.fromhex("d18444a1018105a041a05820") + bytes(32),
            "unsupported MAC algorithm",
        ),
    ],
)
def test_bad_input_exit_2_one_line(args: tuple[str, ...], data: bytes, message: str) -> None:
    p = run(*args, data=data)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert message in err


def test_unknown_command_and_help() -> None:
    assert run("frobnicate").returncode == 2
    h = run("--help")
    assert h.returncode == 0
    assert b"decode" in h.stdout and b"encode" in h.stdout
