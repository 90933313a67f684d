"""Deterministic CBOR (RFC 8949) for the EmberLink wire: one codec for CPython and MicroPython.

Theory of operation
-------------------
The wire uses a fixed subset of CBOR: unsigned and negative integers up to 64 bits, byte and
text strings, arrays, maps, tags, ``false``/``true``/``null``. Floats are refused on the wire
(values are scaled integers, see ``messages``), so every message has exactly one encoding.

Encoding follows the Core Deterministic Encoding Requirements (RFC 8949 §4.2.1):

* preferred serialisation: every argument in its shortest form;
* definite lengths only;
* map keys sorted bytewise by their encoded form.

EmberLink messages only use integer keys in -24..23, which encode to one byte each, so the
§4.2.1 order and the older length-first order of §4.2.3 (what ``cbor2.dumps(canonical=True)``
produces) coincide: our bytes equal cbor2's for every message the schema allows.

Decoding is strict in the same way: a non-shortest argument, an indefinite length, an unsorted
or repeated map key, a float, a reserved value or trailing bytes are errors. A strict decoder
means decode followed by encode gives back the same bytes, and a message has one identity.

Every declared length is checked against the bytes that remain before anything is allocated
(each item needs at least one byte), and depth and lengths have named limits, so hostile input
cannot make the decoder allocate without bound.

This module must run unchanged on MicroPython: no dataclasses, no typing at run time, no enum.
"""

from .errors import ProtocolError

# Reasons carried by CBORError.reason: stable short strings, for logs and tests.
TRUNCATED = "truncated"
TRAILING = "trailing bytes"
INDEFINITE = "indefinite length"
TOO_DEEP = "nesting too deep"
TOO_LONG = "length over limit"
NOT_SHORTEST = "argument not in shortest form"
KEY_ORDER = "map keys not in canonical order"
DUPLICATE_KEY = "duplicate map key"
FLOAT = "floats are not allowed"
RESERVED = "reserved additional information"
SIMPLE = "unsupported simple value"
BAD_UTF8 = "invalid UTF-8 in text string"
UNSUPPORTED = "unsupported type"
INT_RANGE = "integer out of 64-bit range"

# Limits. A batch is a few kilobytes; these leave room without letting input dictate memory.
MAX_DEPTH = 16  # nesting of arrays, maps and tags
MAX_ITEMS = 65536  # elements in one array or pairs in one map
MAX_STRING = 65536  # bytes in one byte or text string

_UINT64_MAX = 0xFFFFFFFFFFFFFFFF


class CBORError(ProtocolError):
    """Malformed, non-deterministic or unsupported CBOR.

    ``reason`` is one of the module's reason strings; ``offset`` is the byte where the
    problem was found, or -1 when it is not about a position (encoding).
    """

    def __init__(self, reason, offset=-1, detail=""):
        where = "at byte " + str(offset) if offset >= 0 else ""
        if detail:
            where = where + ", " + detail if where else detail
        super().__init__(reason, where)
        self.offset = offset


class Tag:
    """A CBOR tag: ``Tag(17, [...])`` is COSE_Mac0."""

    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        if not isinstance(tag, int) or tag < 0 or tag > _UINT64_MAX:
            raise CBORError(UNSUPPORTED, -1, "tag number must be an unsigned 64-bit int")
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(" + str(self.tag) + ", " + repr(self.value) + ")"


# ---------------------------------------------------------------------------------------------
# Encoder


def _head(buf, major, n):
    # Preferred serialisation: the shortest argument that holds n (RFC 8949 §4.2.1).
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(n.to_bytes(4, "big"))
    elif n <= _UINT64_MAX:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError(INT_RANGE, -1, str(n))


def _encode(buf, obj, depth):
    if depth > MAX_DEPTH:
        raise CBORError(TOO_DEEP, -1, "more than " + str(MAX_DEPTH) + " levels")
    # bool before int: bool is an int subclass on both interpreters.
    if obj is True:
        buf.append(0xF5)
    elif obj is False:
        buf.append(0xF4)
    elif obj is None:
        buf.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(buf, 0, obj)
        else:
            _head(buf, 1, -1 - obj)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(buf, 3, len(b))
        buf.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, (list, tuple)):
        _head(buf, 4, len(obj))
        for item in obj:
            _encode(buf, item, depth + 1)
    elif isinstance(obj, dict):
        _head(buf, 5, len(obj))
        keys = list(obj)
        if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            # Fast path (every EmberLink map): for ints, bytewise order of the encoded keys is
            # 0, 1, 2, ... then -1, -2, ...: the head byte grows with the argument's width and
            # the argument is big-endian. Python dict keys cannot repeat.
            keys.sort(key=_int_key_order)
            for k in keys:
                _encode(buf, k, depth + 1)
                _encode(buf, obj[k], depth + 1)
            return
        pairs = []
        for k in keys:
            kb = bytearray()
            _encode(kb, k, depth + 1)
            pairs.append((bytes(kb), obj[k]))
        pairs.sort(key=_first)
        for i in range(len(pairs)):
            key_bytes, v = pairs[i]
            if i and key_bytes == pairs[i - 1][0]:
                raise CBORError(DUPLICATE_KEY, -1, repr(key_bytes))
            buf.extend(key_bytes)
            _encode(buf, v, depth + 1)
    elif isinstance(obj, Tag):
        _head(buf, 6, obj.tag)
        _encode(buf, obj.value, depth + 1)
    elif isinstance(obj, float):
        raise CBORError(FLOAT, -1, "use a scaled integer with an exponent")
    else:
        raise CBORError(UNSUPPORTED, -1, type(obj).__name__)


def _first(pair):
    return pair[0]


def _int_key_order(k):
    # Non-negative ints first in ascending order, then negative ints by ascending -1 - k.
    return k if k >= 0 else (1 << 65) - 1 - k


def dumps(obj):
    """Encode ``obj`` as deterministic CBOR and return the bytes.

    Raises CBORError for floats, unsupported types, integers beyond 64 bits and
    nesting deeper than MAX_DEPTH.
    """
    buf = bytearray()
    _encode(buf, obj, 0)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# Decoder


class _Reader:
    """Strict recursive-descent reader over one buffer."""

    __slots__ = ("data", "end", "max_depth", "max_items", "max_string", "pos")

    def __init__(self, data, pos, end, max_depth, max_items, max_string):
        self.data = data
        self.pos = pos
        self.end = end
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_string = max_string

    def _arg(self, ai, start):
        # Returns the argument of a head whose additional information is ai.
        data = self.data
        if ai < 24:
            return ai
        if ai > 27:
            if ai == 31:
                raise CBORError(INDEFINITE, start)
            raise CBORError(RESERVED, start, str(ai))
        size = 1 << (ai - 24)
        pos = self.pos
        if pos + size > self.end:
            raise CBORError(TRUNCATED, start)
        n = int.from_bytes(data[pos : pos + size], "big")
        self.pos = pos + size
        # Shortest form: each width must be needed (RFC 8949 §4.2.1).
        if (ai == 24 and n < 24) or (ai > 24 and n < (1 << (4 << (ai - 24)))):
            raise CBORError(NOT_SHORTEST, start)
        return n

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError(TOO_DEEP, self.pos)
        start = self.pos
        if start >= self.end:
            raise CBORError(TRUNCATED, start)
        ib = self.data[start]
        self.pos = start + 1
        major = ib >> 5
        ai = ib & 0x1F
        if major == 7:
            if ai == 20:
                return False
            if ai == 21:
                return True
            if ai == 22:
                return None
            if 25 <= ai <= 27:
                raise CBORError(FLOAT, start)
            if ai == 31:
                raise CBORError(INDEFINITE, start, "break outside an indefinite item")
            if 28 <= ai <= 30:
                raise CBORError(RESERVED, start, str(ai))
            raise CBORError(SIMPLE, start, str(ai))
        n = ai if ai < 24 else self._arg(ai, start)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2 or major == 3:
            if n > self.max_string:
                raise CBORError(TOO_LONG, start, str(n) + " bytes")
            pos = self.pos
            if pos + n > self.end:
                raise CBORError(TRUNCATED, start)
            raw = bytes(self.data[pos : pos + n])
            self.pos = pos + n
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeError:
                raise CBORError(BAD_UTF8, start) from None
        if major == 4:
            if n > self.max_items:
                raise CBORError(TOO_LONG, start, str(n) + " items")
            # Every element takes at least one byte: refuse before allocating.
            if n > self.end - self.pos:
                raise CBORError(TRUNCATED, start)
            arr = []
            for _ in range(n):
                arr.append(self.item(depth + 1))
            return arr
        if major == 5:
            if n > self.max_items:
                raise CBORError(TOO_LONG, start, str(n) + " pairs")
            if 2 * n > self.end - self.pos:
                raise CBORError(TRUNCATED, start)
            out = {}
            prev = None
            for _ in range(n):
                kstart = self.pos
                k = self.item(depth + 1)
                kb = bytes(self.data[kstart : self.pos])
                if prev is not None:
                    if kb == prev:
                        raise CBORError(DUPLICATE_KEY, kstart)
                    if kb < prev:
                        raise CBORError(KEY_ORDER, kstart)
                prev = kb
                if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                    # Keys must be hashable and simple: EmberLink uses small ints only.
                    raise CBORError(UNSUPPORTED, kstart, "map key must be an int or a string")
                out[k] = self.item(depth + 1)
            return out
        # major == 6: tag
        return Tag(n, self.item(depth + 1))


def loads(data, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_string=MAX_STRING):
    """Decode exactly one deterministic CBOR item from ``data``.

    Raises CBORError with a reason: truncated input, trailing bytes, indefinite lengths,
    non-shortest arguments, unsorted or duplicate map keys, floats, depth or length limits.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError(UNSUPPORTED, -1, "input must be bytes")
    r = _Reader(data, 0, len(data), max_depth, max_items, max_string)
    obj = r.item(0)
    if r.pos != r.end:
        raise CBORError(TRAILING, r.pos, str(r.end - r.pos) + " bytes after the item")
    return obj


# Returned by Decoder.next_message() when the buffer does not yet hold a whole item.
NEED_DATA = None


class Decoder:
    """Incremental decoder for a stream of concatenated CBOR items (h11 style).

    ``feed(data)`` appends bytes; ``next_message()`` returns the next whole item, or
    ``NEED_DATA`` when more bytes are needed. Malformed input raises CBORError; the
    buffer then stays as it was, so the caller decides whether to drop the stream.
    ``max_buffer`` bounds what an unfinished item may hold.
    """

    def __init__(self, max_buffer=MAX_STRING * 4, max_depth=MAX_DEPTH):
        self._buf = bytearray()
        self._max_buffer = max_buffer
        self._max_depth = max_depth

    def feed(self, data):
        if len(self._buf) + len(data) > self._max_buffer:
            raise CBORError(TOO_LONG, len(self._buf), "stream buffer over " + str(self._max_buffer))
        self._buf.extend(data)

    def pending(self):
        """Bytes received but not yet returned as an item."""
        return len(self._buf)

    def next_message(self):
        if not self._buf:
            return NEED_DATA
        r = _Reader(self._buf, 0, len(self._buf), self._max_depth, MAX_ITEMS, MAX_STRING)
        try:
            obj = r.item(0)
        except CBORError as e:
            if e.reason == TRUNCATED:
                return NEED_DATA
            raise
        self._buf = self._buf[r.pos :]
        return obj
