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
