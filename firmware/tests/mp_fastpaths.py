# mypy: disable-error-code="var-annotated,arg-type"
# Fast paths on micropython: for pseudo-random sample sequences (stdin: the configs as JSON; argv:
# first seed, count; an argument of 256 bytes or more crashes the unix port), print one JSON
# line per (config, seed) with the events of the full pass, of feed (per call: the viper feed) and
# of feed_block over arrays (the viper block loop), each ending with the ring's state
# (samples, sums, max, n); test_fastpaths.py compares them with CPython.
import json
import sys
from array import array

from emberlink.firmware.config import build_detectors

CONFIGS = json.loads(sys.stdin.read())
seed0 = int(sys.argv[1])
count = int(sys.argv[2])


def sequence(seed, n):
    s = seed
    out = []
    x = 500
    for _ in range(n):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        r = (s >> 8) & 0xFFFF
        dt = r % 300
        k = (r >> 9) % 16
        if k < 9:
            x = (x + ((s >> 4) & 0xFF) - 128) % 3600
        elif k < 12:
            pass  # flat: the same value again
        elif k == 12:
            x = (s >> 3) % 3600
        elif k == 13:
            out.append((dt, "tick"))
            continue
        elif k == 14:
            out.append((dt, "reset" if r & 1 else "ack"))
            continue
        out.append((dt, x))
    return out


def run(cfg, seq, mode):
    p = build_detectors(cfg, 3)
    if mode == "full":
        p.quiet_ok = False
        p._refresh_quiet()
    out = []
    ts = []
    xs = []
    t = 0

    def flush():
        if mode == "block" and xs:
            p.feed_block(array("i", ts), array("i", xs), out)
        else:
            for k in range(len(xs)):
                if mode == "full":
                    p._full(ts[k], xs[k], out)
                else:
                    p.feed(ts[k], xs[k], out)
        del ts[:]
        del xs[:]

    for dt, v in seq:
        t += dt
        if isinstance(v, int):
            ts.append(t)
            xs.append(v)
            continue
        flush()
        if v == "tick":
            t += 200000
            p.tick(t, out)
        elif v == "reset":
            p.reset(t, out)
        else:
            p.ack(t, out)
    flush()
    r = p.ring
    ring = None
    if r is not None:
        ring = [r.samples(), r.s, r.s2 if r.variance else 0, r.max(), r.n]
    return [[tt, e.fields()] for tt, e in out] + [ring]


for ci in range(len(CONFIGS)):
    for seed in range(seed0, seed0 + count):
        seq = sequence(seed, 400)
        got = {"config": ci, "seed": seed, "seq": seq}
        for mode in ("full", "feed", "block"):
            got[mode] = run(CONFIGS[ci], seq, mode)
        print(json.dumps(got))
