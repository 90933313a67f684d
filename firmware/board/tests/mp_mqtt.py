# micropython: the board's MQTT client against a real broker.
# argv: port gw mode   (mode: "session" publishes and reports; "hang" connects and stops polling)
import sys
import time

from emberlink.firmware.board.client import Client
from emberlink.protocol import codes, topics, wire
from emberlink.protocol.messages import Batch, Event

port = int(sys.argv[1])
gw = int(sys.argv[2])
mode = sys.argv[3]
death = wire.seal(Batch(gw, 1, 0, 1700000000000, [Event(codes.DEATH, 0, 0, code=102)]))
acked = []
got = []
c = Client(
    "127.0.0.1",
    port,
    "board-" + str(gw),
    keepalive_s=1 if mode == "hang" else 2,
    will_topic=topics.topic(gw, "state"),
    will_payload=death,
    retry_ms=500,
    on_puback=acked.append,
    on_message=lambda t, p: got.append((t, p)),
)
c.connect(5000)
print("connected")
if mode == "hang":
    time.sleep(6)  # no PINGREQ: the broker drops us after 1.5 x keepalive and sends the will
    sys.exit(0)
c.subscribe(topics.topic(gw, "cmd"))
ev = Event(codes.FIRE_ALARM, 0, 0x01020001, state=codes.ACTIVE, code=1)
pid = c.publish(topics.topic(gw, "ev"), wire.seal(Batch(gw, 1, 1, 1700000000000, [ev])))
t0 = time.ticks_ms()
while pid not in acked and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    c.poll(50)
print("puback", pid in acked, len(c.inflight))
# published while the link is down: kept in flight, sent with DUP on the next connect
c.close()
pid2 = c.publish(topics.topic(gw, "ev"), wire.seal(Batch(gw, 1, 2, 1700000000001, [ev])))
c.connect(5000)
t0 = time.ticks_ms()
while pid2 not in acked and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    c.poll(50)
print("redelivered", pid2 in acked, c.retransmits)
# keepalive: idle for 3 x keepalive, only PINGREQ/PINGRESP keep the session
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 5000:
    c.poll(100)
print("alive", c.connected, c.connects)
# a command from the cloud arrives (the test publishes it once it sees "waiting")
print("waiting")
t0 = time.ticks_ms()
while not got and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    c.poll(100)
print("command", got[0][0] if got else None, got[0][1].hex() if got else None)
c.disconnect()
