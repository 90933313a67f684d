"""Golden vectors: the same bytes on CPython and on the micropython interpreter, and in the CDDL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emberlink.protocol import make_vectors
from emberlink.tools import micropython

from .cddl_check import validate

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CHECK = VECTORS / "check.py"


def _load_check():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("vector_check", CHECK)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vectors_pass_on_cpython() -> None:
    passed, failures = _load_check().check(str(VECTORS))
    assert failures == []
    assert passed == len(list(VECTORS.glob("*.cbor"))) + len(
        json.loads((VECTORS / "invalid.json").read_text())["cases"]
    )


@pytest.mark.micropython
def test_vectors_pass_on_micropython() -> None:
    out = micropython.run(script=CHECK, args=[str(VECTORS)]).stdout.decode()
    n = len(list(VECTORS.glob("*.cbor"))) + len(
        json.loads((VECTORS / "invalid.json").read_text())["cases"]
    )
    assert out.strip().splitlines()[-1] == f"{n} passed, 0 failed"


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.cbor")), ids=lambda p: p.stem)
def test_every_vector_matches_the_cddl(path: Path) -> None:
    validate(path.read_bytes())


def test_schema_rejects_what_the_codec_rejects() -> None:
    import pycddl
    from emberlink.protocol import cbor

    bad = [
        {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: [{0: 99, 1: 0, 2: 0}]},  # unknown kind
        {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: [{0: 1, 1: 0, 2: 0}]},  # fire alarm without state
        {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: [{0: 1, 1: 0, 2: 0, 4: 1, 8: 5}]},  # foreign key
        {0: 2, 1: 1, 2: 1, 3: 1, 4: 1, 5: [{0: 6, 1: 0, 2: 0}]},  # version 2
        {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: [{0: 1, 1: 0, 2: 0, 4: 1, 6: 24}]},  # exponent
        {0: 1, 1: 2**32, 2: 1, 3: 1, 4: 1, 5: [{0: 6, 1: 0, 2: 0}]},  # gw beyond u32
    ]
    for m in bad:
        with pytest.raises(pycddl.ValidationError):
            validate(cbor.dumps(m))


def test_vectors_are_what_the_generator_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed files are the generator's output: nobody edited bytes by hand."""
    monkeypatch.setattr(make_vectors, "HERE", tmp_path)
    make_vectors.main()
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (VECTORS / path.name).read_bytes(), path.name
