"""MQTT 3.1.1 packets with no I/O: builders that return bytes, and a ``Parser`` fed with bytes.

Only what a gateway needs (OASIS MQTT 3.1.1, sections given): CONNECT with a will (§3.1),
CONNACK (§3.2), PUBLISH QoS 0/1 both ways (§3.3), PUBACK (§3.4), SUBSCRIBE/SUBACK (§3.8,
§3.9), PINGREQ/PINGRESP (§3.12, §3.13), DISCONNECT (§3.14). No QoS 2: EmberLink never uses it.

``Parser.feed(data)`` buffers what the socket gave; ``Parser.next()`` returns one packet as a
tuple ``(type, flags, pid, topic, payload)`` or None when more bytes are needed. A packet the
server must not send, a reserved flag, an oversized or malformed packet raise ``MQTTError``
with a ``reason``; the connection is then unusable (the client drops it and reconnects).

Runs unchanged on CPython and MicroPython (bytes, bytearray and ints only).
"""

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBSCRIBE = const(8)
SUBACK = const(9)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

MAX_REMAINING = const(268435455)  # §2.2.3: four length bytes
MAX_PACKET_DEFAULT = const(16384)  # what a board accepts from the server (commands, acks)

# Reasons carried by MQTTError.reason.
MALFORMED = "malformed packet"
TOO_LARGE = "packet over the size limit"
BAD_FLAGS = "reserved flags not as the specification requires"
UNEXPECTED = "packet type a server never sends"
REFUSED = "connection refused"

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MQTTError(Exception):
    """A protocol violation or a refusal; ``reason`` is one of the strings above."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _length(n):
    """The variable-length 'remaining length' (§2.2.3)."""
    if n < 0 or n > MAX_REMAINING:
        raise MQTTError(TOO_LARGE, str(n))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def _str(s):
    """A UTF-8 string with its 2-byte length (§1.5.3)."""
    if isinstance(s, str):
        s = s.encode()
    if len(s) > 0xFFFF:
        raise MQTTError(TOO_LARGE, "string over 65535 bytes")
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def _packet(first, body):
    return bytes((first,)) + bytes(_length(len(body))) + bytes(body)


def _check_pid(pid):
    if not 1 <= pid <= 0xFFFF:
        raise ValueError("packet identifier must be 1..65535, got " + str(pid))


def connect(
    client_id,
    keepalive_s,
    clean=True,
    will_topic=None,
    will_payload=b"",
    will_qos=1,
    will_retain=True,
    username=None,
    password=None,
):
    """CONNECT (§3.1), protocol level 4."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive must be 0..65535 s")
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will_topic is not None:
        if will_qos not in (0, 1):
            raise ValueError("will QoS must be 0 or 1")
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(will_topic) + _str(will_payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        if username is None:
            raise ValueError("a password needs a user name (§3.1.2.9)")
        flags |= 0x40
        payload += _str(password)
    var = _str("MQTT") + bytes((4, flags, keepalive_s >> 8, keepalive_s & 0xFF))
    return _packet(CONNECT << 4, var + payload)


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    """PUBLISH (§3.3). QoS 1 needs a packet identifier; ``dup`` marks a retransmission.

    Returns a bytearray built in one allocation (a batch is the largest thing the board
    sends); the client sets the DUP bit in place when it sends the packet again."""
    if qos not in (0, 1):
        raise ValueError("QoS must be 0 or 1")
    if isinstance(topic, str):
        topic = topic.encode()
    if not topic or b"+" in topic or b"#" in topic:
        raise ValueError("a publish topic is not empty and has no wildcard")
    if len(topic) > 0xFFFF:
        raise MQTTError(TOO_LARGE, "string over 65535 bytes")
    first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    if qos:
        _check_pid(pid)
        if dup:
            first |= 0x08
    elif dup:
        raise ValueError("DUP is only for QoS > 0 (§3.3.1.1)")
    n = 2 + len(topic) + (2 if qos else 0) + len(payload)
    rl = _length(n)
    out = bytearray(1 + len(rl) + n)
    out[0] = first
    at = 1 + len(rl)
    out[1:at] = rl
    out[at] = len(topic) >> 8
    out[at + 1] = len(topic) & 0xFF
    at += 2
    out[at : at + len(topic)] = topic
    at += len(topic)
    if qos:
        out[at] = pid >> 8
        out[at + 1] = pid & 0xFF
        at += 2
    out[at:] = payload
    return out


def puback(pid):
    _check_pid(pid)
    return bytes((PUBACK << 4, 2, pid >> 8, pid & 0xFF))


def subscribe(pid, topic, qos=1):
    """SUBSCRIBE with one filter (§3.8); fixed-header flags are 0b0010."""
    _check_pid(pid)
    if qos not in (0, 1):
        raise ValueError("QoS must be 0 or 1")
    return _packet(
        (SUBSCRIBE << 4) | 2, bytes((pid >> 8, pid & 0xFF)) + _str(topic) + bytes((qos,))
    )


def pingreq():
    return bytes((PINGREQ << 4, 0))


def disconnect():
    return bytes((DISCONNECT << 4, 0))


class Parser:
    """Bytes from the server in, packets out (see the module docstring)."""

    def __init__(self, max_packet=MAX_PACKET_DEFAULT):
        self.max_packet = max_packet
        self.buf = b""

    def feed(self, data):
        self.buf += bytes(data)

    def next(self):
        """One packet ``(type, flags, pid, topic, payload)``, or None until more bytes come."""
        buf = self.buf
        n = len(buf)
        if n < 2:
            return None
        length = 0
        shift = 0
        i = 1
        while True:
            if i >= n:
                return None
            if i > 4:
                raise MQTTError(MALFORMED, "remaining length over four bytes")
            b = buf[i]
            length |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        if i - 1 > 1 and b == 0:
            raise MQTTError(MALFORMED, "remaining length not in shortest form")
        if length + i > self.max_packet:
            raise MQTTError(TOO_LARGE, str(length + i) + " bytes")
        if n < i + length:
            return None
        first = buf[0]
        body = buf[i : i + length]
        self.buf = buf[i + length :]
        return _decode(first >> 4, first & 0x0F, body)


def _pid_of(body, at):
    pid = (body[at] << 8) | body[at + 1]
    if pid == 0:
        raise MQTTError(MALFORMED, "packet identifier 0")
    return pid


def _decode(ptype, flags, body):
    n = len(body)
    if ptype == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MQTTError(BAD_FLAGS, "PUBLISH with QoS 3")
        if qos == 0 and flags & 0x08:
            raise MQTTError(BAD_FLAGS, "DUP on a QoS 0 PUBLISH")
        if n < 2:
            raise MQTTError(MALFORMED, "PUBLISH without a topic")
        tl = (body[0] << 8) | body[1]
        at = 2 + tl
        if at > n or (qos and at + 2 > n):
            raise MQTTError(MALFORMED, "PUBLISH shorter than its topic")
        try:
            topic = bytes(body[2:at]).decode()
        except UnicodeError:
            raise MQTTError(MALFORMED, "topic is not UTF-8") from None
        pid = 0
        if qos:
            pid = _pid_of(body, at)
            at += 2
        return (PUBLISH, flags, pid, topic, bytes(body[at:]))
    if ptype in (CONNACK, PUBACK, SUBACK, PINGRESP):
        if flags:
            raise MQTTError(BAD_FLAGS, "type " + str(ptype) + " flags " + str(flags))
        if ptype == CONNACK:
            if n != 2 or body[0] > 1:
                raise MQTTError(MALFORMED, "CONNACK")
            return (CONNACK, body[0], 0, None, bytes((body[1],)))
        if ptype == PUBACK:
            if n != 2:
                raise MQTTError(MALFORMED, "PUBACK length " + str(n))
            return (PUBACK, 0, _pid_of(body, 0), None, None)
        if ptype == SUBACK:
            if n < 3:
                raise MQTTError(MALFORMED, "SUBACK length " + str(n))
            for c in body[2:]:
                if c not in (0, 1, 2, 0x80):
                    raise MQTTError(MALFORMED, "SUBACK return code " + str(c))
            return (SUBACK, 0, _pid_of(body, 0), None, bytes(body[2:]))
        if n:
            raise MQTTError(MALFORMED, "PINGRESP with a body")
        return (PINGRESP, 0, 0, None, None)
    raise MQTTError(UNEXPECTED, "type " + str(ptype))


def connack_error(pkt):
    """None when a CONNACK packet accepts the connection, else an MQTTError to raise."""
    rc = pkt[4][0]
    if rc == 0:
        return None
    return MQTTError(REFUSED, CONNACK_REASONS.get(rc, "return code " + str(rc)))
