"""API tokens: random, shown once, stored as a SHA-256 hash.

A token has 256 bits of entropy, so a plain (unsalted) SHA-256 is enough to make a stolen
table useless; a password hash (bcrypt, argon2) would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "elk_"  # lets secret scanners and people recognise an EmberLink token
TOKEN_BYTES = 32


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
