from __future__ import annotations

import pytest
from emberlink.protocol import topics


def test_topic_layout_and_parse() -> None:
    assert topics.topic(12, "ev") == "el/v1/12/ev"
    for leaf in topics.LEAVES:
        assert topics.parse(topics.topic(4294967295, leaf)) == (4294967295, leaf)
    assert topics.subscription("ev") == "el/v1/+/ev"
    assert topics.subscription("ev", shared=True) == "$share/emberlink-ingest/el/v1/+/ev"


@pytest.mark.parametrize(
    "name",
    [
        "el/v2/1/ev",
        "el/v1/x/ev",
        "el/v1/01/ev",
        "el/v1/1/evx",
        "el/v1/1/ev/x",
        "el/v1/4294967296/ev",
        "el/v1//ev",
    ],
)
def test_parse_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        topics.parse(name)


@pytest.mark.parametrize(("gw", "leaf"), [(-1, "ev"), (2**32, "ev"), (True, "ev"), (1, "events")])
def test_topic_refuses(gw: int, leaf: str) -> None:
    with pytest.raises(ValueError):
        topics.topic(gw, leaf)
