"""The MQTT session over a socket: the thin I/O adapter around ``mqtt`` (sans-I/O).

``Client.connect()`` opens the TCP connection and waits for CONNACK; ``publish()`` sends a QoS 1
PUBLISH and keeps it in flight until its PUBACK; ``poll(timeout_ms)`` reads what arrived,
answers the server's QoS 1 publishes, sends PINGREQ when the link has been idle for half the
keepalive, retransmits unacknowledged publishes with DUP after ``retry_ms`` and raises
``MQTTError`` when a PINGRESP does not come within the keepalive (a dead link that TCP has not
noticed). ``close()`` drops the socket; the caller reconnects with backoff, and ``connect()``
subscribes again (clean session) and sends every publish still in flight again, with DUP,
before anything new (§4.4).

The in-flight table is volatile and bounded (``max_inflight``); what must survive a power cut
is in the outbox, which only forgets a record after its PUBACK.
"""

import select
import socket

from . import mqtt
from .compat import ticks_diff, ticks_ms


class Client:
    def __init__(
        self,
        host,
        port,
        client_id,
        keepalive_s=30,
        will_topic=None,
        will_payload=b"",
        username=None,
        password=None,
        retry_ms=10000,
        max_inflight=4,
        on_message=None,
        on_puback=None,
    ):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_ms = keepalive_s * 1000
        self.keepalive_s = keepalive_s
        self.will_topic = will_topic
        self.will_payload = will_payload
        self.username = username
        self.password = password
        self.retry_ms = retry_ms
        self.max_inflight = max_inflight
        self.on_message = on_message
        self.on_puback = on_puback
        self.sock = None
        self.poller = None
        self.parser = mqtt.Parser()
        self.subs = {}  # topic -> QoS, renewed on connect
        self.inflight = {}  # pid -> [packet (bytearray; DUP set once sent again), sent ticks]
        self.pid = 0
        self.last_tx = 0
        self.ping_at = None  # ticks of an unanswered PINGREQ
        self.retransmits = 0
        self.connects = 0

    @property
    def connected(self):
        return self.sock is not None

    def _next_pid(self):
        while True:
            self.pid = self.pid % 0xFFFF + 1
            if self.pid not in self.inflight:
                return self.pid

    def _send(self, data):
        s = self.sock
        if s is None:
            raise OSError("not connected")
        mv = memoryview(data)
        while len(mv):
            n = s.send(mv)
            if n is None:  # MicroPython: would block
                n = 0
            mv = mv[n:]
        self.last_tx = ticks_ms()

    def connect(self, timeout_ms=10000):
        """Open the connection; raises OSError or MQTTError (refused, malformed)."""
        self.close()
        addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout_ms / 1000)
            s.connect(addr)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.poller = select.poll()
        self.poller.register(s, select.POLLIN)
        self.parser = mqtt.Parser()
        self.ping_at = None
        try:
            self._send(
                mqtt.connect(
                    self.client_id,
                    self.keepalive_s,
                    True,
                    self.will_topic,
                    self.will_payload,
                    1,
                    True,
                    self.username,
                    self.password,
                )
            )
            start = ticks_ms()
            while True:
                left = timeout_ms - ticks_diff(ticks_ms(), start)
                if left <= 0:
                    raise OSError("no CONNACK within " + str(timeout_ms) + " ms")
                pkt = self._read(left)
                if pkt is None:
                    continue
                if pkt[0] != mqtt.CONNACK:
                    raise mqtt.MQTTError(mqtt.MALFORMED, "first packet is not CONNACK")
                err = mqtt.connack_error(pkt)
                if err is not None:
                    raise err
                break
        except BaseException:
            self.close()
            raise
        self.connects += 1
        for topic in self.subs:  # a clean session forgets them: subscribe again
            self._subscribe(topic, self.subs[topic], timeout_ms)
        for pid in sorted(self.inflight):  # §4.4: unacknowledged publishes again, with DUP
            ent = self.inflight[pid]
            ent[1] = ticks_ms()
            ent[0][0] |= 0x08
            self._send(ent[0])
            self.retransmits += 1

    def _read(self, timeout_ms):
        """At most one packet, waiting up to ``timeout_ms`` for bytes; None if none whole."""
        pkt = self.parser.next()
        if pkt is not None:
            return pkt
        s = self.sock
        if s is None or self.poller is None:
            raise OSError("not connected")
        if not self.poller.poll(max(0, timeout_ms)):
            return None
        data = s.recv(512)
        if not data:
            raise OSError("connection closed by the broker")
        self.parser.feed(data)
        return self.parser.next()

    def subscribe(self, topic, qos=1, timeout_ms=10000):
        """SUBSCRIBE and wait for its SUBACK; renewed on every later connect."""
        self.subs[topic] = qos
        if self.sock is not None:
            self._subscribe(topic, qos, timeout_ms)

    def _subscribe(self, topic, qos, timeout_ms):
        pid = self._next_pid()
        self._send(mqtt.subscribe(pid, topic, qos))
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < timeout_ms:
            pkt = self._read(100)
            if pkt is None:
                continue
            if pkt[0] == mqtt.SUBACK and pkt[2] == pid:
                if pkt[4][0] == 0x80:
                    raise mqtt.MQTTError(mqtt.REFUSED, "subscription to " + topic)
                return
            self._handle(pkt)
        raise OSError("no SUBACK within " + str(timeout_ms) + " ms")

    def can_publish(self):
        return self.sock is not None and len(self.inflight) < self.max_inflight

    def publish(self, topic, payload, retain=False, qos=1):
        """Send a PUBLISH; QoS 1 returns its packet id (in flight until PUBACK), QoS 0 None."""
        if qos == 0:
            self._send(mqtt.publish(topic, payload, 0, retain))
            return None
        pid = self._next_pid()
        pkt = mqtt.publish(topic, payload, 1, retain, pid)  # a bytearray: DUP is set in place
        self.inflight[pid] = [pkt, ticks_ms()]
        if self.sock is not None:
            self._send(pkt)
        return pid

    def forget(self, pid):
        """Stop retransmitting ``pid`` (the outbox will send its records again itself)."""
        self.inflight.pop(pid, None)

    def _handle(self, pkt):
        t = pkt[0]
        if t == mqtt.PUBACK:
            if self.inflight.pop(pkt[2], None) is not None and self.on_puback:
                self.on_puback(pkt[2])
        elif t == mqtt.PUBLISH:
            if (pkt[1] >> 1) & 3:
                self._send(mqtt.puback(pkt[2]))
            if self.on_message:
                self.on_message(pkt[3], pkt[4])
        elif t == mqtt.PINGRESP:
            self.ping_at = None
        # CONNACK/SUBACK out of turn: ignored

    def poll(self, timeout_ms=0):
        """Handle what arrives within ``timeout_ms``; keepalive and retransmission."""
        if self.sock is None:
            raise OSError("not connected")
        pkt = self._read(timeout_ms)
        while pkt is not None:
            self._handle(pkt)
            pkt = self._read(0)
        now = ticks_ms()
        if self.ping_at is not None:
            if ticks_diff(now, self.ping_at) > self.keepalive_ms:
                raise OSError("no PINGRESP within the keepalive: link dead")
        elif self.keepalive_ms and ticks_diff(now, self.last_tx) >= self.keepalive_ms // 2:
            self._send(mqtt.pingreq())
            self.ping_at = now
        for pid in self.inflight:
            ent = self.inflight[pid]
            if ticks_diff(now, ent[1]) >= self.retry_ms:
                ent[1] = now
                ent[0][0] |= 0x08
                self._send(ent[0])
                self.retransmits += 1

    def disconnect(self):
        if self.sock is not None:
            try:
                self._send(mqtt.disconnect())
            except OSError:
                pass
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.poller = None
