"""Open and seal what travels on the event topic: a batch, bare or inside a COSE_Mac0.

``seal(batch, key=None)`` gives the payload to publish; ``open_batch(data, key=None,
require_mac=False)`` gives back the Batch, verifying the MAC when a key is known.
MicroPython-compatible.
"""

from . import mac, messages
from .errors import MAC_REQUIRED, MacError


def seal(batch, key=None, alg=mac.ALG_HMAC256_256, kid=None):
    """Payload bytes for ``batch``: bare CBOR, or COSE_Mac0 when ``key`` is given."""
    payload = messages.encode_batch(batch)
    if key is None:
        return payload
    return mac.wrap(payload, key, alg, kid)


def open_batch(data, key=None, require_mac=False):
    """Decode an event-topic payload into a Batch.

    With ``key``, a COSE_Mac0 envelope must verify; with ``require_mac``, a bare batch is
    refused. Raises ProtocolError subclasses with a reason.
    """
    if len(data) > messages.MAX_BATCH_BYTES + 64:
        raise messages.MessageError(messages.TOO_MANY, "payload over the batch limit")
    if mac.is_mac0(data):
        env = mac.unwrap(data)
        if key is not None:
            env.verify(key)
        elif require_mac:
            raise MacError(MAC_REQUIRED, "no key to verify the MAC with")
        return messages.decode_batch(env.payload)
    if require_mac or key is not None:
        raise MacError(MAC_REQUIRED, "bare batch from a gateway that has a MAC key")
    return messages.decode_batch(data)
