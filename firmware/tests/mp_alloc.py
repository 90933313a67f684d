# gc.mem_alloc() growth over 10,000 samples per point on micropython.
# Prints "alloc <bytes> <events>".
import gc  # micropython's gc: mem_alloc
import sys

sys.path.append(sys.argv[1])
import workload

out = []  # type: list
points = workload.build()
workload.feed(points, 0, 200, out)  # warm-up
n0 = len(out)
gc.collect()
gc.disable()
a = gc.mem_alloc()  # type: ignore[attr-defined]
b = gc.mem_alloc()  # type: ignore[attr-defined]  # the first measurement after a collect carries a one-off 32 bytes
a = gc.mem_alloc()  # type: ignore[attr-defined]
workload.feed(points, 200, 10000, out)
b = gc.mem_alloc()  # type: ignore[attr-defined]
gc.enable()
print("alloc", b - a, len(out) - n0)

# feed_block over array buffers (the viper fast path on this interpreter), 10,000 samples
from array import array  # noqa: E402

from emberlink.firmware.config import build_detectors  # noqa: E402

p = build_detectors(workload.CONFIGS[4], 9)
N = 10200
ts = array("i", bytes(4 * N))
xs = array("i", bytes(4 * N))
for k in range(N):
    ts[k] = k * 20
    xs[k] = 1050 + (k & 3)


def blocks(j0):
    for j in range(j0, N, 64):
        p.feed_block(ts, xs, out, j, j + 64 if j + 64 < N else N)


p.feed_block(ts, xs, out, 0, 200)  # warm-up
n0 = len(out)
gc.collect()
gc.disable()
a = gc.mem_alloc()  # type: ignore[attr-defined]
a = gc.mem_alloc()  # type: ignore[attr-defined]
blocks(200)
b = gc.mem_alloc()  # type: ignore[attr-defined]
gc.enable()
print("alloc_block", b - a, len(out) - n0)
