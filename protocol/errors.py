"""One error family for the wire contract.

``ProtocolError`` is the root; every error carries ``reason``, a short stable string from the
module that raised it, so logs, quarantine tables and tests can group failures without parsing
messages. MicroPython-compatible.
"""


class ProtocolError(ValueError):
    """Root of every wire-contract error; ``reason`` says what kind of problem it is."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


class MessageError(ProtocolError):
    """Well-formed CBOR that is not a valid EmberLink message (wrong type, unknown kind...)."""


class MacError(ProtocolError):
    """A COSE_Mac0 envelope that is malformed, uses an unknown algorithm or does not verify."""


# MessageError reasons
WRONG_TYPE = "wrong type for a key"
UNKNOWN_KIND = "unknown kind"
MISSING_KEY = "missing key"
UNKNOWN_KEY = "unknown key"
OUT_OF_RANGE = "value out of range"
NOT_A_MESSAGE = "not an EmberLink message"
BAD_VERSION = "unsupported protocol version"
TOO_MANY = "too many items"

# MacError reasons
MAC_MALFORMED = "malformed COSE_Mac0"
MAC_ALG = "unsupported MAC algorithm"
MAC_MISMATCH = "MAC does not verify"
MAC_REQUIRED = "MAC required"
