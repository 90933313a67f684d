"""The readable JSON form on bad input: every mistake is a ValueError with a reason (a
ProtocolError is one), which `emberlink encode` turns into exit 2 and one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from emberlink.protocol import jsonform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
DOCS = [
    json.loads(p.read_text())["message"]
    for p in sorted(VECTORS.glob("*.json"))
    if p.name != "invalid.json"
]
_NAMES = ["gw", "ack", "command", "result", "args", "events", "kind", "src", "info", "health"]
_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=4),
        st.sampled_from(["active", "fire_alarm", "gateway", "rebirth", "verified", "00", "²"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(_NAMES), st.text(max_size=3)), inner, max_size=3),
    ),
    max_leaves=10,
)


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k in doc:
            out += _paths(doc[k], (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*path, i))
    return out


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DOCS), st.data())
def test_mutated_documents_fail_only_with_value_errors(doc: Any, data: st.DataObject) -> None:
    """Replace one to three parts of a golden vector's JSON with anything JSON can hold."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        new = data.draw(_JSON)
        if not path:
            doc = new
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = new
    try:
        raw = jsonform.encode_from_json(doc)
    except ValueError as e:
        assert str(e)
        return
    # accepted: then it is a message, and its JSON form encodes back to the same bytes
    assert jsonform.encode_from_json(jsonform.decode_to_json(raw)) == raw
