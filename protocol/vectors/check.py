"""Check every golden vector on the running interpreter (CPython or MicroPython).

``check(folder)`` returns (passed, failures). For each ``<name>.json``/``<name>.cbor`` pair:
the JSON form encodes to exactly the bytes, the bytes decode to exactly the JSON form, and a
MAC vector verifies under its key. Each case of ``invalid.json`` must be refused by
``wire.open_batch`` with its reason. Run directly on micropython:
``micropython protocol/vectors/check.py protocol/vectors`` prints "N passed, M failed".
"""

import binascii
import json
import os
import sys


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def check(folder):
    from emberlink.protocol import jsonform, wire
    from emberlink.protocol.errors import ProtocolError

    passed = 0
    failures = []
    names = sorted(
        n[:-5] for n in os.listdir(folder) if n.endswith(".json") and n != "invalid.json"
    )
    for name in names:
        doc = json.loads(_read(folder + "/" + name + ".json"))
        raw = _read(folder + "/" + name + ".cbor", "rb")
        key = binascii.unhexlify(doc["key"]) if "key" in doc else None
        try:
            enc = jsonform.encode_from_json(doc["message"])
            if enc != raw:
                failures.append(name + ": encode differs")
                continue
            if key is not None and jsonform.encode_from_json(doc["message"], key) != raw:
                failures.append(name + ": MAC recomputed with the key differs")
                continue
            dec = jsonform.decode_to_json(raw)
            if dec != doc["message"]:
                failures.append(name + ": decode differs")
                continue
            if key is not None:
                wire.open_batch(raw, key, True)
            passed += 1
        except ProtocolError as e:
            failures.append(name + ": " + repr(e))
    inv = json.loads(_read(folder + "/invalid.json"))
    key = binascii.unhexlify(inv["key"])
    for case in inv["cases"]:
        data = binascii.unhexlify(case["hex"])
        try:
            wire.open_batch(data, key if case["with_key"] else None)
            failures.append("invalid " + case["name"] + ": accepted")
        except ProtocolError as e:
            if e.reason == case["reason"]:
                passed += 1
            else:
                failures.append("invalid " + case["name"] + ": reason " + repr(e.reason))
    return passed, failures


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "protocol/vectors"
    ok, bad = check(folder)
    for f in bad:
        print("FAIL", f)
    print(str(ok) + " passed, " + str(len(bad)) + " failed")
    sys.exit(1 if bad else 0)
