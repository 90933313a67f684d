"""Settings of the cloud registry, from the environment (prefix ``EMBERLINK_``) or a file.

``EMBERLINK_ENV_FILE`` names an optional dotenv file; environment variables win over it. Secrets
that are still the template placeholder are refused at start, as in the FastAPI full-stack
template's ``_enforce_non_default_secrets``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = ("changethis", "changeme", "secret", "password")
PDF_FONT_SUFFIXES = (".ttf", ".ttc", ".otf", ".otc")
MIN_BOOTSTRAP_TOKEN = 32  # characters: an API token is a bearer secret, not a password


class Settings(BaseSettings):
    """Every tunable of the registry, with its default and the reason for it."""

    model_config = SettingsConfigDict(
        env_prefix="EMBERLINK_", env_ignore_empty=True, extra="ignore"
    )

    # SQLite in WAL mode is the embedded default; PostgreSQL by URL (postgresql://...).
    database_url: str = "sqlite:///./emberlink.db"
    api_prefix: str = "/api/v1"

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_client_prefix: str = "emberlink-ingest"
    # Ingest workers subscribe through ``$share/emberlink-ingest/...`` so that several of them
    # split the load (Mosquitto, and any MQTT 5 broker). False: the plain filter
    # ``el/v1/+/ev``, for a broker without shared subscriptions (the demo's embedded amqtt);
    # then only one worker may run, or every worker would get, store and ack every batch.
    mqtt_shared_subscription: bool = True
    # The cloud's own broker login (ingest workers, their acks and time syncs; every
    # aiomqtt.Client of the cloud takes ``mqtt_client_options``), for a Mosquitto without an
    # anonymous listener: one of the service
    # users the provisioning writes into the password and ACL files
    # (``provision.broker.BrokerSettings.service_users``). Unset: connect anonymously.
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    # A CA certificate file (PEM): connect with TLS and verify the broker against it.
    mqtt_tls_ca: str | None = None

    # Ingest batching: a flush happens at this many events or this age, whichever comes first.
    flush_events: int = Field(default=2000, ge=1, le=100_000)
    flush_ms: int = Field(default=200, ge=1, le=60_000)

    # Health. Offline after this many missed heartbeats (DESIGN: 3, the GB 26875.1 100 s budget
    # allows 3 x 30 s); a heartbeat the gateway does not announce defaults to this period.
    offline_after_misses: int = Field(default=3, ge=1, le=100)
    default_heartbeat_s: int = Field(default=60, ge=1, le=86_400)
    # A status change (other than to offline, which is never delayed) waits until the previous
    # status has lasted this long: hysteresis against flapping.
    min_dwell_s: int = Field(default=30, ge=0, le=86_400)
    # Outbox backlog hysteresis band: degraded at or above high, online again at or below low.
    backlog_high: int = Field(default=1000, ge=1)
    backlog_low: int = Field(default=100, ge=0)
    sweep_interval_s: float = Field(default=1.0, gt=0, le=60)
    # An event older than this when received is late even without the replayed flag.
    late_after_s: int = Field(default=120, ge=1)

    # Alarm reconciliation after a gateway restart (a new boot's BIRTH). The restarted gateway's
    # detectors start from normal, so a condition still present is raised again within its local
    # confirmation time; one that ended while the gateway was down is never reported normal. An
    # open alarm of an older boot therefore waits this long for the new boot to raise it again,
    # then the cloud takes it as returned to normal (reason stored; a latched one is marked
    # needs_reset instead). Longer than the slowest local confirmation (firmware/config.py):
    # smoke alarm verification up to ~120 s (UL 864: retard + reset + restart <= 60 s, then a
    # confirmation window >= 60 s), residual-current delay <= 10 s, cable temperature <= 40 s
    # (GB 50166-2019 §4.8.5).
    restart_confirm_s: int = Field(default=120, ge=1, le=86_400)

    # Commands to gateways. A batch flagged clock-unsynced (a gateway without NTP, e.g. a host
    # without timesyncd, or a board with no RTC) makes the ingest send that gateway a time
    # sync with the cloud's UTC ms, at most once per gateway per this interval across all
    # workers: a gateway still draining an older unsynced backlog is not synced per batch.
    # 0 turns the automatic time sync off (operators can still send one through the API).
    time_sync_interval_s: int = Field(default=30, ge=0, le=86_400)
    # The API's publish of an operator command (connect + PUBACK) gives up after this long and
    # answers 503, the command marked send_failed: a request never hangs on a dead broker.
    command_publish_timeout_s: float = Field(default=5.0, gt=0, le=60)

    # PDF reports (maintenance): a TrueType/OpenType font file with Chinese glyphs (.ttf, .otf,
    # or a .ttc/.otc collection, whose "SC"/"CN" face is taken if it has one, else the first),
    # embedded as a subset in each PDF. Unset: the first common system CJK font found
    # (fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk, fonts-arphic). No font at all: core
    # Helvetica with text outside Latin-1 written as \uXXXX escapes, and one WARNING. A
    # configured file that does not exist is a configuration error, refused at start.
    pdf_font: str | None = None

    # Creates the first admin when the user table is empty (the CLI create-admin is the other way).
    bootstrap_admin_token: str | None = None

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        tok = self.bootstrap_admin_token
        if tok is not None:
            if tok.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "EMBERLINK_BOOTSTRAP_ADMIN_TOKEN is a placeholder; set a random value"
                )
            if len(tok) < MIN_BOOTSTRAP_TOKEN:
                raise ValueError(
                    f"EMBERLINK_BOOTSTRAP_ADMIN_TOKEN must be at least {MIN_BOOTSTRAP_TOKEN} "
                    "characters"
                )
        if self.pdf_font is not None:
            font = Path(self.pdf_font).expanduser()
            if font.suffix.lower() not in PDF_FONT_SUFFIXES:
                raise ValueError(
                    f"EMBERLINK_PDF_FONT must be a {'/'.join(PDF_FONT_SUFFIXES)} file: {font}"
                )
            if not font.is_file():
                raise ValueError(f"EMBERLINK_PDF_FONT: no such font file: {font}")
        if self.mqtt_password is not None and self.mqtt_username is None:
            raise ValueError("EMBERLINK_MQTT_PASSWORD is set without EMBERLINK_MQTT_USERNAME")
        if self.mqtt_tls_ca is not None and not Path(self.mqtt_tls_ca).expanduser().is_file():
            raise ValueError(f"EMBERLINK_MQTT_TLS_CA: no such file: {self.mqtt_tls_ca}")
        if self.backlog_low >= self.backlog_high:
            raise ValueError("backlog_low must be below backlog_high")
        return self


def mqtt_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aiomqtt.Client``: the cloud's login and TLS, when configured."""
    import aiomqtt

    opts: dict[str, Any] = {}
    if settings.mqtt_username is not None:
        opts["username"] = settings.mqtt_username
        if settings.mqtt_password is not None:
            opts["password"] = settings.mqtt_password.get_secret_value()
    if settings.mqtt_tls_ca is not None:
        ca = str(Path(settings.mqtt_tls_ca).expanduser())
        opts["tls_params"] = aiomqtt.TLSParameters(ca_certs=ca)
    return opts


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, the optional EMBERLINK_ENV_FILE, then ``overrides``."""
    env_file = os.environ.get("EMBERLINK_ENV_FILE")
    return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
