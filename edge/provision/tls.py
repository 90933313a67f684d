"""The gateway's own TLS certificate for the provisioning API, and its fingerprint.

At first start the gateway makes a self-signed certificate (P-256 key, CN = its serial) in its
state directory (``tls.key`` 0600, ``tls.crt``), as it makes its pairing code. The API is served
over TLS with it, and the mDNS TXT record carries ``cert``: the SHA-256 of the certificate (DER,
hex, what ``openssl x509 -fingerprint -sha256`` prints without the colons). The installer's
commands pin that fingerprint: they trust exactly this certificate, so the pairing code never
crosses the LAN in clear and a machine answering in the gateway's place is refused.

The certificate is made with the ``openssl`` command (present on every Raspberry Pi OS image)
rather than a Python crypto library, which the gateway does not otherwise need.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
VALID_DAYS = 36500  # the pin, not the validity period, is what the installer checks
OPENSSL_TIMEOUT_S = 30.0


class TlsError(Exception):
    """The certificate could not be made or read; ``str()`` says why."""


def fingerprint_pem(pem: str) -> str:
    """Hex SHA-256 of a PEM certificate's DER bytes."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def ensure_cert(state_dir: Path, serial: str) -> tuple[Path, Path]:
    """``(cert, key)`` in ``state_dir``, made once (atomically) when absent."""
    cert, key = state_dir / CERT_FILE, state_dir / KEY_FILE
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("the openssl command is needed to make the gateway's TLS certificate")
    tmp_cert, tmp_key = cert.with_name(CERT_FILE + ".tmp"), key.with_name(KEY_FILE + ".tmp")
    for p in (tmp_cert, tmp_key):
        p.unlink(missing_ok=True)
    # the key file is created 0600 before openssl writes into it
    os.close(os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    cn = "".join(ch for ch in serial if ch.isalnum() or ch in "-_.")[:64] or "emberlink"
    cmd = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-sha256", "-days", str(VALID_DAYS), "-subj", f"/CN={cn}",
        "-keyout", str(tmp_key), "-out", str(tmp_cert),
    ]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TlsError(f"openssl failed: {e}") from e
    if r.returncode != 0:
        raise TlsError(f"openssl failed: {r.stderr.decode(errors='replace').strip()[:300]}")
    os.chmod(tmp_key, 0o600)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key


def cert_fingerprint(state_dir: Path) -> str | None:
    """The fingerprint of the gateway's certificate, None before it exists."""
    cert = state_dir / CERT_FILE
    if not cert.exists():
        return None
    try:
        return fingerprint_pem(cert.read_text())
    except (OSError, ValueError) as e:
        raise TlsError(f"unreadable certificate {cert}: {e}") from e
