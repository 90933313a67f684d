"""The provisioning state on disk, in the gateway's state directory.

    identity.json     serial and pairing code (made at first start, as at the factory)  0600
    site.json         the site configuration the installer pushed (validated on push)
    credentials.json  what the claim returned: gateway number, MQTT login, MAC key     0600
    pending.json      a rotation's new credentials until the cloud confirms them       0600
    gateway.toml      the gateway service's configuration, written after the claim      0600
    reports/          commissioning reports

Every file is written atomically (temporary file, fsync, rename) with its mode set at create.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..config import GatewayConfig, parse
from .pairing import new_code

UNCLAIMED = "unclaimed"
CLAIMED = "claimed"
FAULT = "fault"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(cfg: dict[str, Any]) -> str:
    """The configuration dict as TOML (tables of scalars, arrays of tables)."""
    lines: list[str] = []
    for name, val in cfg.items():
        if isinstance(val, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in val.items()]
            lines.append("")
        elif isinstance(val, list):
            for item in val:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
                lines.append("")
    return "\n".join(lines)


class ProvisionStore:
    def __init__(self, state_dir: Path, serial: str | None = None) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = self.dir / "identity.json"
        if not ident.exists():
            write_private(
                ident,
                json.dumps(
                    {
                        "serial": serial or "EL-" + secrets.token_hex(4).upper(),
                        "pairing_code": new_code(),
                    }
                ),
            )
        data = json.loads(ident.read_text())
        self.serial: str = data["serial"]
        self.pairing_code: str = data["pairing_code"]

    # --- site configuration -------------------------------------------------------------------
    def site(self) -> dict[str, Any] | None:
        p = self.dir / "site.json"
        return json.loads(p.read_text()) if p.exists() else None

    def build(self, site: dict[str, Any], creds: dict[str, Any] | None = None) -> dict[str, Any]:
        """The gateway configuration from the pushed site plus, once claimed, the credentials."""
        raw = {k: v for k, v in site.get("config", {}).items() if k in ("gateway", "bus", "device")}
        g = {k: v for k, v in raw.get("gateway", {}).items() if k in ("heartbeat_s", "series_s")}
        g["id"] = creds["gateway_id"] if creds else 0
        g["data_dir"] = str(self.dir / "var")
        g["serial"] = self.serial
        raw["gateway"] = g
        if creds:
            raw["mqtt"] = {
                "host": creds["mqtt_host"],
                "port": creds["mqtt_port"],
                "username": creds["mqtt_username"],
                "password": creds["mqtt_password"],
                "mac_key_hex": creds["mac_key_hex"],
            }
        return raw

    def validate_site(self, site: dict[str, Any]) -> GatewayConfig:
        """The site as a gateway configuration; ConfigError names the bad field."""
        return parse(self.build(site))

    def save_site(self, site: dict[str, Any]) -> GatewayConfig:
        cfg = self.validate_site(site)
        write_private(self.dir / "site.json", json.dumps(site, indent=2), 0o600)
        return cfg

    def site_config(self) -> GatewayConfig | None:
        s = self.site()
        return None if s is None else parse(self.build(s, self.credentials()))

    # --- credentials ---------------------------------------------------------------------------
    def credentials(self) -> dict[str, Any] | None:
        p = self.dir / "credentials.json"
        return json.loads(p.read_text()) if p.exists() else None

    def save_credentials(self, creds: dict[str, Any]) -> Path:
        """Store the claim's credentials and write gateway.toml (both 0600); returns its path."""
        write_private(self.dir / "credentials.json", json.dumps(creds))
        site = self.site() or {}
        path = self.dir / "gateway.toml"
        write_private(path, to_toml(self.build(site, creds)))
        return path

    def pending(self) -> dict[str, Any] | None:
        """A rotation's credentials, redeemed but not yet confirmed by the cloud."""
        p = self.dir / "pending.json"
        return json.loads(p.read_text()) if p.exists() else None

    def save_pending(self, creds: dict[str, Any]) -> None:
        write_private(self.dir / "pending.json", json.dumps(creds))

    def drop_pending(self) -> None:
        (self.dir / "pending.json").unlink(missing_ok=True)

    def promote_pending(self) -> dict[str, Any]:
        """The confirmed rotation's credentials become the gateway's (gateway.toml rewritten)."""
        creds = self.pending()
        if creds is None:
            raise ValueError("no pending credentials")
        self.save_credentials(creds)
        self.drop_pending()
        return creds

    def state(self) -> str:
        if self.credentials() is None:
            return UNCLAIMED
        try:
            self.site_config()
        except Exception:
            return FAULT
        return CLAIMED

    def fingerprint(self) -> str:
        """SHA-256 prefix of the claimed MAC key ('-' before the claim): the installer compares
        it with the claim's answer to see that this gateway holds the key the cloud issued."""
        c = self.credentials()
        if c is None:
            return "-"
        return hashlib.sha256(bytes.fromhex(c["mac_key_hex"])).hexdigest()[:16]
