"""Load device profiles from TOML files and validate them (protocol/profile.py holds the schema).

The shipped profiles live in ``protocol/profiles/*.toml``; a site may add directories of its own.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from emberlink.protocol import profile as schema

from .errors import ConfigError

SHIPPED_DIR = Path(schema.__file__).resolve().parent / "profiles"


def load_file(path: Path) -> dict[str, Any]:
    """One validated profile from a TOML file; ConfigError names the file and the bad field."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), f"cannot read profile: {e}") from e
    try:
        result: dict[str, Any] = schema.validate(raw)
    except schema.ProfileError as e:
        raise ConfigError(f"{path.name}: {e.field}", str(e).split(": ", 2)[-1]) from e
    if result["name"] != path.stem:
        raise ConfigError(f"{path.name}: name", f"{result['name']!r} differs from the file name")
    return result


def load_all(extra_dirs: list[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every profile by name: the shipped ones, then each extra directory (which may override)."""
    out: dict[str, dict[str, Any]] = {}
    for d in [SHIPPED_DIR, *(extra_dirs or [])]:
        if not d.is_dir():
            raise ConfigError(str(d), "profile directory does not exist")
        for p in sorted(d.glob("*.toml")):
            prof = load_file(p)
            out[prof["name"]] = prof
    return out
