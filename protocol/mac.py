"""COSE_Mac0 (RFC 9052 §6.2) with HMAC-SHA-256 over a batch, keyed per gateway.

The MAC protects a batch end to end: through the broker, bridges and the gateway's own store
(TLS only protects each hop). Because the MAC covers gw, boot and seq, a replayed batch is
caught by the cloud's (gw, boot, seq) deduplication.

    COSE_Mac0_Tagged = #6.17([protected: bstr .cbor {1: alg}, unprotected: {?4: kid},
                              payload: bstr, tag: bstr])
    MAC input = cbor(["MAC0", protected, external_aad = h'', payload])

Algorithms (RFC 9053 §3.1): 5 = HMAC 256/256 (32-byte tag, the default), 4 = HMAC 256/64
(8-byte tag, for tight links). HMAC (RFC 2104) is computed over ``hashlib.sha256``, which
both interpreters have; MicroPython's unix port has no ``hmac`` module.
"""

import hashlib

from . import cbor
from .errors import MAC_ALG, MAC_MALFORMED, MAC_MISMATCH, MacError

COSE_MAC0_TAG = 17
ALG_HMAC256_64 = 4
ALG_HMAC256_256 = 5
TAG_LENGTHS = {ALG_HMAC256_64: 8, ALG_HMAC256_256: 32}
ALG_NAMES = {ALG_HMAC256_64: "HMAC256/64", ALG_HMAC256_256: "HMAC256/256"}
MAX_KID = 8  # bytes; the registry's key id
_BLOCK = 64  # SHA-256 block size


def hmac_sha256(key, msg):
    """HMAC-SHA-256 (RFC 2104) of ``msg`` under ``key``."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def equal_digest(a, b):
    """Compare two tags in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _protected(alg):
    return cbor.dumps({1: alg})


def _mac_input(protected, payload):
    return cbor.dumps(["MAC0", protected, b"", payload])


def compute_tag(key, alg, protected, payload):
    if alg not in TAG_LENGTHS:
        raise MacError(MAC_ALG, str(alg))
    return hmac_sha256(key, _mac_input(protected, payload))[: TAG_LENGTHS[alg]]


def wrap(payload, key, alg=ALG_HMAC256_256, kid=None):
    """COSE_Mac0_Tagged bytes carrying ``payload`` (the CBOR bytes of a batch)."""
    if alg not in TAG_LENGTHS:
        raise MacError(MAC_ALG, str(alg))
    unprotected = {}
    if kid is not None:
        if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID:
            raise MacError(MAC_MALFORMED, "kid must be 1.." + str(MAX_KID) + " bytes")
        unprotected[4] = kid
    protected = _protected(alg)
    tag = compute_tag(key, alg, protected, payload)
    return cbor.dumps(cbor.Tag(COSE_MAC0_TAG, [protected, unprotected, bytes(payload), tag]))


def with_tag(payload, alg, kid, tag):
    """Rebuild the exact COSE_Mac0 bytes from their parts (no key needed)."""
    if alg not in TAG_LENGTHS or len(tag) != TAG_LENGTHS[alg]:
        raise MacError(MAC_ALG, "tag length does not match the algorithm")
    unprotected = {4: kid} if kid is not None else {}
    return cbor.dumps(cbor.Tag(COSE_MAC0_TAG, [_protected(alg), unprotected, payload, tag]))


def is_mac0(data):
    """True when ``data`` starts as a tag-17 item (0xd1)."""
    return len(data) > 0 and data[0] == 0xD1


class Mac0:
    """A parsed COSE_Mac0 envelope: alg, kid (bytes or None), payload, tag."""

    __slots__ = ("_protected", "alg", "kid", "payload", "tag")

    def __init__(self, alg, kid, payload, tag, protected):
        self.alg = alg
        self.kid = kid
        self.payload = payload
        self.tag = tag
        self._protected = protected

    def verify(self, key):
        """Raise MacError unless the tag verifies under ``key``."""
        expect = compute_tag(key, self.alg, self._protected, self.payload)
        if not equal_digest(expect, self.tag):
            raise MacError(MAC_MISMATCH, "tag does not match the gateway key")


def unwrap(data):
    """Parse COSE_Mac0_Tagged bytes; raises MacError or CBORError with the reason."""
    item = cbor.loads(data)
    if not isinstance(item, cbor.Tag) or item.tag != COSE_MAC0_TAG:
        raise MacError(MAC_MALFORMED, "not a COSE_Mac0 (tag 17)")
    v = item.value
    if not isinstance(v, list) or len(v) != 4:
        raise MacError(MAC_MALFORMED, "COSE_Mac0 is an array of 4")
    protected, unprotected, payload, tag = v
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise MacError(MAC_MALFORMED, "protected header and payload must be byte strings")
    if not isinstance(tag, bytes) or not isinstance(unprotected, dict):
        raise MacError(MAC_MALFORMED, "tag must be bytes, unprotected header a map")
    try:
        hdr = cbor.loads(protected, 2, 8, 64)
    except cbor.CBORError as e:
        raise MacError(MAC_MALFORMED, "protected header: " + str(e)) from None
    if not isinstance(hdr, dict) or list(hdr.keys()) != [1]:
        raise MacError(MAC_MALFORMED, "protected header must be {1: alg}")
    alg = hdr[1]
    # the type first: a list or map here is unhashable and would fail the table lookup
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in TAG_LENGTHS:
        raise MacError(MAC_ALG, repr(alg))
    if len(tag) != TAG_LENGTHS[alg]:
        raise MacError(MAC_MALFORMED, "tag length " + str(len(tag)) + " for alg " + str(alg))
    kid = None
    for k in unprotected:
        if k != 4:
            raise MacError(MAC_MALFORMED, "unprotected header key " + repr(k))
        kid = unprotected[4]
        if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID:
            raise MacError(MAC_MALFORMED, "kid must be 1.." + str(MAX_KID) + " bytes")
    return Mac0(alg, kid, payload, tag, protected)
