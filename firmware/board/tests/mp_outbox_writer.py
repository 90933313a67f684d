# micropython: append events to the flash outbox as fast as possible; print each seq once the
# outbox has returned it (durable). The test kills this process with SIGKILL mid-burst.
# argv: dir
import sys

from emberlink.firmware.board.outbox import Outbox
from emberlink.protocol import codes
from emberlink.protocol.messages import Event

ob = Outbox(sys.argv[1], max_telemetry=100000, seg_records=16)
print("boot", ob.boot, ob.torn)
i = 0
while True:
    i += 1
    if i % 5 == 0:
        ev = Event(codes.FIRE_ALARM, 0, 0x01030001, state=codes.ACTIVE, code=1)
    else:
        ev = Event(codes.MEASUREMENT, 0, 0x01030001, period=1000, samples=[i, i + 1, i - 3])
    seq = ob.append(ev, 1700000000000 + i)
    print("seq", ob.boot, seq)
