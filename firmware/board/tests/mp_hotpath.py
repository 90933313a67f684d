# micropython: build the board application from its configuration, warm it up against the
# simulator, then poll every read with the heap locked: any allocation raises MemoryError.
# argv: config.json rounds     prints "heap <after build> <after gc>" and "hotpath <polls> ok"
import gc
import sys

import micropython
from emberlink.firmware.board import app
from emberlink.firmware.board.compat import ticks_ms

cfg = app.load_config(sys.argv[1])  # as main() does: conf.py is let go before the build
a = app.App(cfg)
cfg = None
gc.collect()
print("heap", gc.mem_alloc(), gc.mem_free(), sum(len(d.pts) for d in a.devices))
for _ in range(3):  # warm-up: first readings raise their events, detectors fill
    for r in a.reads:
        a.poll(r, ticks_ms())
gc.collect()
polls = 0
bad = 0
micropython.heap_lock()
try:
    for _ in range(int(sys.argv[2])):
        for r in a.reads:
            if a.poll(r, ticks_ms()) != 0:
                bad += 1
            polls += 1
finally:
    micropython.heap_unlock()
print("hotpath", polls, "ok", bad, a.events)
