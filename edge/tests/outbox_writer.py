"""A process that stores events in a loop and prints each seq once it is durable (kill -9 target).

python outbox_writer.py DB MAX_TELEMETRY
"""

from __future__ import annotations

import random
import sys
import time

from emberlink.edge.outbox import Outbox
from emberlink.protocol import codes
from emberlink.protocol.messages import Event


def main() -> None:
    ob = Outbox(sys.argv[1], max_telemetry=int(sys.argv[2]), synchronous="normal")
    print(f"boot {ob.boot}", flush=True)
    rnd = random.Random()
    while True:
        t = int(time.time() * 1000)
        if rnd.random() < 0.2:
            seqs = [ob.append(Event(codes.FIRE_ALARM, 0, 5, state=1, code=10), t)]
        else:
            evs = [(Event(codes.MEASUREMENT, 0, 7, period=1000, samples=[i, i + 1]), t)
                   for i in range(rnd.randint(1, 20))]  # fmt: skip
            seqs = ob.append_many(evs)
        print(" ".join(map(str, seqs)), flush=True)


if __name__ == "__main__":
    main()
