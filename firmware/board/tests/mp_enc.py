# micropython: batches built by the board's splicing encoder (enc.py, outbox records) and by
# protocol.messages.encode_batch for the same events; prints "same <hex>" or "DIFF <a> <b>".
# argv: cases file (one Python expression per line: (gw, boot, seq0, t0, flags, [(event, t)]))
import sys

from emberlink.firmware.board import enc
from emberlink.firmware.board.outbox import event_body
from emberlink.protocol import codes  # noqa: F401  (for the expressions)
from emberlink.protocol.messages import Batch, Event, encode_batch

with open(sys.argv[1]) as f:
    for line in f:
        if not line.strip():
            continue
        gw, boot, seq0, t0, flags, evs = eval(line)
        buf = enc.batch(gw, boot, seq0, t0, len(evs), flags)
        for ev, t in evs:
            enc.event(buf, event_body(ev), t - t0)
        mine = enc.end(buf, flags)
        events = []
        for ev, t in evs:
            m = ev.fields()
            m.pop("kind")
            m.pop("dt")
            src = m.pop("src")
            events.append(Event(ev.kind, t - t0, src, **m))
        ref = encode_batch(Batch(gw, boot, seq0, t0, events, None, flags))
        print(("same " + mine.hex()) if mine == ref else ("DIFF " + mine.hex() + " " + ref.hex()))
