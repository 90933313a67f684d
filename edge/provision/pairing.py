"""The pairing code on the gateway's label: every provisioning request must carry it.

The comparison is constant-time (``hmac.compare_digest``) and failures are rate limited per
client address: after ``MAX_FAILURES`` wrong codes the client is locked out for
``LOCKOUT_S``, doubled at each further lockout up to ``LOCKOUT_MAX_S``. An 8-digit code has
10**8 values; at 5 guesses per lockout the LAN attacker needs years.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

CODE_DIGITS = 8
MAX_FAILURES = 5
LOCKOUT_S = 30.0
LOCKOUT_MAX_S = 3600.0


def new_code() -> str:
    """A fresh pairing code, as printed on the label (digits: easy to type on site)."""
    return "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))


@dataclass
class _Client:
    failures: int = 0
    lockouts: int = 0
    until: float = 0.0


class PairingGuard:
    def __init__(self, code: str, clock: object = time.monotonic) -> None:
        self._code = code.encode()
        self._clock = clock
        self._clients: dict[str, _Client] = {}

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def locked_for(self, client: str) -> float:
        """Seconds left in ``client``'s lockout (0: may try)."""
        c = self._clients.get(client)
        return max(0.0, c.until - self._now()) if c else 0.0

    def check(self, client: str, code: str | None) -> bool:
        """True when ``code`` is right and ``client`` is not locked out; counts failures."""
        if self.locked_for(client) > 0:
            return False
        ok = hmac.compare_digest(self._code, (code or "").encode())
        c = self._clients.setdefault(client, _Client())
        if ok:
            c.failures = 0
            return True
        c.failures += 1
        if c.failures >= MAX_FAILURES:
            c.failures = 0
            c.lockouts += 1
            c.until = self._now() + min(LOCKOUT_S * 2 ** (c.lockouts - 1), LOCKOUT_MAX_S)
        return False
