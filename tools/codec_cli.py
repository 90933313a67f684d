"""``emberlink decode [FILE|-]`` and ``emberlink encode [FILE|-]``.

decode: reads one wire payload (raw CBOR bytes, or hex text with --hex) and prints the readable
JSON form with names for codes. encode: reads that JSON and writes the identical bytes (raw to a
file or pipe, hex with --hex or on a terminal). Bad input: exit code 2 and a one-line reason on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from typing import Any

from emberlink.protocol import jsonform
from emberlink.protocol.errors import ProtocolError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit 2
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _read(path: str, binary: bool) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return binascii.unhexlify(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError("--key must be hex") from None


def _parser(cmd: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog="emberlink " + cmd,
        description=(
            "Print an EmberLink wire message as readable JSON."
            if cmd == "decode"
            else "Turn the readable JSON of an EmberLink message back into its exact bytes."
        ),
    )
    p.add_argument("file", nargs="?", default="-", help="input file, or - for standard input")
    p.add_argument(
        "--hex",
        action="store_true",
        help="input (decode) or output (encode) is hex text rather than raw bytes",
    )
    p.add_argument("--key", help="gateway MAC key in hex: verify (decode) or recompute (encode)")
    if cmd == "decode":
        p.add_argument("--compact", action="store_true", help="one line of JSON")
    return p


def decode(argv: list[str]) -> int:
    args = _parser("decode").parse_args(argv)
    raw = _read(args.file, True)
    if args.hex or (raw[:1].isalnum() and _looks_hex(raw)):
        try:
            raw = binascii.unhexlify(b"".join(raw.split()))
        except (binascii.Error, ValueError):
            raise ValueError("input is neither CBOR nor hex") from None
    doc = jsonform.decode_to_json(raw, _key(args.key))
    if args.compact:
        print(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    else:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    return 0


def _looks_hex(raw: bytes) -> bool:
    text = b"".join(raw.split())
    return len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text)


def encode(argv: list[str]) -> int:
    args = _parser("encode").parse_args(argv)
    text = _read(args.file, False)
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError("input is not JSON: " + str(e)) from None
    except RecursionError:
        # json.loads recurses once per level: thousands of [ or { exhaust the stack
        raise ValueError("input is not JSON that a message can be: nested too deep") from None
    data = jsonform.encode_from_json(doc, _key(args.key))
    if args.hex or sys.stdout.isatty():
        print(data.hex())
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def main(argv: list[str]) -> int:
    """argv[0] is the sub-command name: decode or encode."""
    cmd, rest = argv[0], argv[1:]
    try:
        return decode(rest) if cmd == "decode" else encode(rest)
    except _UsageError as e:
        print(f"emberlink {cmd}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ProtocolError, ValueError, TypeError, KeyError, OSError) as e:
        # One line, no traceback: what was wrong and, for protocol errors, its reason code.
        msg = str(e).replace("\n", " ")
        if isinstance(e, OSError):
            msg = f"{e.strerror}: {e.filename}"
        print(f"emberlink {cmd}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
