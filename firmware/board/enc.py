"""Batch bytes on the board without building a ``messages.Batch``: the stored records spliced.

The outbox keeps each event as the CBOR map the wire carries minus ``dt`` (key 1), which only
exists relative to a batch's ``t0``. A batch is then::

    {0: ver, 1: gw, 2: boot, 3: seq0, 4: t0, 5: [event, ...], ?7: flags}

and each event is its stored map with ``1: dt`` put back between key 0 (kind) and key 2 (src):
keys are small ints in canonical order, so that is where key 1 sorts. Nothing is decoded and no
Event is rebuilt, so a 32-event batch costs its own bytes and no more (decoding it into Events
to encode it again took ~20 KB of garbage on the 64-bit unix port). The bytes are exactly
``messages.encode_batch`` of the same batch: tests/test_enc.py checks it on both interpreters.
"""

from ...protocol.cbor import _head

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


_VERSION = const(1)  # codes.PROTOCOL_VERSION

# the CBOR head of a major type and argument, shortest form: the protocol encoder's own (the
# outbox imports protocol.cbor anyway, so this costs the board nothing)
head = _head


def _uint_len(b, at):
    """Bytes of the unsigned int item starting at ``b[at]``."""
    ai = b[at] & 0x1F
    return 1 if ai < 24 else 1 + (1 << (ai - 24))


def event(buf, body, dt, start=0):
    """Append one event: its stored map (``body[start:]``, no key 1) with ``1: dt`` added."""
    n = body[start] & 0x1F  # an event map has at most 21 keys: one head byte
    buf.append(0xA0 | (n + 1))
    k = start + 2 + _uint_len(body, start + 2)  # past the map head, key 0 and the kind
    buf.extend(memoryview(body)[start + 1 : k])
    buf.append(0x01)
    head(buf, 0, dt)
    buf.extend(memoryview(body)[k:])


def batch(gw, boot, seq0, t0, n, flags=0):
    """A bytearray with the batch envelope up to its events array (``n`` events follow)."""
    buf = bytearray()
    buf.append(0xA7 if flags else 0xA6)
    buf.append(0x00)
    buf.append(_VERSION)
    buf.append(0x01)
    head(buf, 0, gw)
    buf.append(0x02)
    head(buf, 0, boot)
    buf.append(0x03)
    head(buf, 0, seq0)
    buf.append(0x04)
    head(buf, 0, t0)
    buf.append(0x05)
    head(buf, 4, n)
    return buf


def end(buf, flags=0):
    """Close a batch begun with ``batch``; returns the bytes."""
    if flags:
        buf.append(0x07)
        head(buf, 0, flags)
    return bytes(buf)


def one(gw, boot, seq0, t0, body, flags=0):
    """A whole batch of one stored event at ``t0`` (birth, death)."""
    buf = batch(gw, boot, seq0, t0, 1, flags)
    event(buf, body, 0)
    return end(buf, flags)
