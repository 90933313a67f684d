"""Validate wire bytes against protocol/schema.cddl with pycddl (cddl-rs).

cddl-rs 0.6 has defects that reject valid data: a type choice between maps inside an array
only tries its first member, a `.cbor` control inside an array checks the wrong element, a
type choice inside an array checks only one branch, and `{ * uint .le 23 => v }` refuses a
second key once it has seen 23. So the checker validates the same normative rules at the top
level, where choices work: the batch with each event as "any map", then every event against
`event`, and a COSE_Mac0 with its byte strings opaque, then its protected header, payload and
tag against their own rules. The one rule it loosens is the `uint .le 23` map key (checked as
`uint`); the codec enforces that bound itself (test_messages.py).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pycddl
from emberlink.protocol import cbor, mac

SCHEMA = Path(__file__).resolve().parent.parent / "schema.cddl"
_OPAQUE = "\nany-map = { * any => any }\n"


@cache
def _schema(root: str, flatten: bool = False) -> pycddl.Schema:
    text = SCHEMA.read_text().replace("uint .le 23", "uint")
    if flatten:
        text = text.replace("[1*1024 event]", "[1*1024 any-map]")
        text = re.sub(r"bstr \.cbor [\w-]+", "bstr", text)
        text = text.replace("bstr .size 8 / bstr .size 32", "bstr")
        text += _OPAQUE
    return pycddl.Schema("root = " + root + "\n" + text)


def validate(data: bytes) -> None:
    """Raise pycddl.ValidationError (or CBORError) unless ``data`` matches the schema."""
    if mac.is_mac0(data):
        _schema("ember-mac0", True).validate_cbor(data)
        env = cbor.loads(data).value
        _schema("mac-protected").validate_cbor(env[0])
        _schema("mac-unprotected").validate_cbor(cbor.dumps(env[1]))
        _schema("bstr .size 8 / bstr .size 32").validate_cbor(cbor.dumps(env[3]))
        data = env[2]
        _schema("ember-batch", True).validate_cbor(data)
    else:
        _schema("ember-message", True).validate_cbor(data)
    item = cbor.loads(data)
    if isinstance(item, dict) and 5 in item:
        for ev in item[5]:
            _schema("event").validate_cbor(cbor.dumps(ev))
