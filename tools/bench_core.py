"""``emberlink bench core``: the detection core beside its reference variants, on both interpreters.

One run measures, on CPython and (spawned) on micropython, samples/s for the channel chain of
shared/research/protocol-core-anchors.md B1 in every variant of tools/bench_core_variants.py
(``c_full``: the deque reference doing the core's whole job -- supervision, events, real dt),
plus numpy blocks on CPython; heap bytes per sample and bytes per channel on micropython
(``gc.mem_alloc``) and on CPython (tracemalloc). Two signals: ``chain`` (the research signal:
noise, an overcurrent phase, a flatline, spikes -- the core raises and clears events on it) and
``quiet`` (a normal channel: nothing crosses a threshold). Figures are medians of ``--reps``
runs on a shared machine: compare rows of one run, not runs of different days. Never pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from emberlink.tools import bench_core_variants as V
from emberlink.tools import micropython

HERE = Path(__file__).resolve().parent

# Published anchors (protocol-core-anchors.md B1.1, same 2-core machine class) for the table.
ANCHORS = {
    ("cpython", "c_deque"): 1.43e6,
    ("cpython", "a_list"): 1.33e6,
    ("cpython", "a0_naive"): 0.224e6,
    ("micropython", "a_list"): 0.762e6,
    ("micropython", "c_deque"): 0.595e6,
    ("micropython", "viper per call (research)"): 4.12e6,
    ("micropython", "viper 64-blocks (research)"): 27.8e6,
}


def numpy_blocks(xs: list[int], block: int) -> float:
    """d1: numpy time blocks (CPython only): vectorised sums/max/flatline, sparse loops."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    w = V.W
    lut = np.array(V.LUT, dtype=np.int64)
    arr = np.array(xs, dtype=np.int64)
    tail = np.zeros(0, dtype=np.int64)
    over = 0
    alarm = False
    acc = 0
    counts = [0, 0, 0, 0]
    t0 = time.perf_counter()
    for j in range(0, len(arr), block):
        b = arr[j : j + block]
        ext = np.concatenate((tail, b))
        cs = np.concatenate(([0], np.cumsum(ext)))
        cs2 = np.concatenate(([0], np.cumsum(ext * ext)))
        k = np.arange(len(tail), len(ext))
        lo = np.maximum(k + 1 - w, 0)
        n = k + 1 - lo
        s = cs[k + 1] - cs[lo]
        _ = cs2[k + 1] - cs2[lo]
        if len(ext) >= w:
            mx_full = sliding_window_view(ext, w).max(axis=1)
            mx = np.empty(len(k), dtype=np.int64)
            first_full = max(w - 1 - len(tail), 0)
            mx[first_full:] = mx_full[len(mx_full) - (len(k) - first_full) :]
            for q in range(first_full):
                mx[q] = ext[: k[q] + 1].max()
        else:
            mx = np.maximum.accumulate(ext)[len(tail) :]
        counts[2] += int(np.count_nonzero((n == w) & (s == mx * n)))
        counts[1] += int(np.count_nonzero(mx > V.PK))
        above = s > V.THR * n
        below = s < V.CLR * n
        for q in range(len(b)):  # hysteresis is sequential
            if above[q]:
                over += 1
                if over >= V.HOLD and not alarm:
                    alarm = True
                    counts[0] += 1
            else:
                over = 0
                if alarm and below[q]:
                    alarm = False
        hi = b > V.IS
        idx = (b * 16) // V.IS
        for q in range(len(b)):  # IDMT with reset and decay does not vectorise cleanly
            if hi[q]:
                acc += int(lut[idx[q]])
                if acc >= V.TRIP:
                    counts[3] += 1
                    acc = 0
            elif acc:
                acc = acc - V.DECAY if acc > V.DECAY else 0
        tail = ext[-(w - 1) :] if w > 1 else ext[:0]
    return len(xs) / (time.perf_counter() - t0)


def cpython_rows(n: int, reps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ts = V._times(n)
    for sig_name, make in (("chain", V.signal), ("quiet", V.quiet_signal)):
        xs = list(make(n))
        names = ("a0_naive", "a_list", "c_deque", "c_full", "core", "core_block64")
        rates = V.time_all(names, xs, reps, ts, short=("a0_naive",))
        for name in names:
            rate = rates[name]
            rows.append(
                {
                    "signal": sig_name,
                    "variant": name,
                    "samples_per_s": rate,
                    "heap_b_per_sample": _tracemalloc_per_sample(name, xs[:20000], ts),
                    "bytes_per_channel": _tracemalloc_per_channel(name),
                }
            )
        for block in (64, 1024):
            rates = sorted(numpy_blocks(xs, block) for _ in range(reps))
            rows.append(
                {
                    "signal": sig_name,
                    "variant": f"d1_numpy_block{block}",
                    "samples_per_s": rates[len(rates) // 2],
                }
            )
    return rows


def _tracemalloc_per_sample(name: str, xs: list[int], ts: list[int]) -> float:
    obj = V.VARIANTS[name]()
    warm = xs[: 2 * V.W]
    half = len(xs) // 2
    if name.startswith("core"):
        V._run_core(name, obj, ts, warm)
    else:
        for x in warm:
            obj.push(x)
    tracemalloc.start()
    try:
        if name.startswith("core"):
            # same object, later samples: time keeps advancing (ts offsets keep order)
            t_off = ts[len(warm)]
            V._core_loop_from(obj.point, xs[:half], obj.out, t_off)
            a, _ = tracemalloc.get_traced_memory()
            V._core_loop_from(obj.point, xs[half:], obj.out, t_off + half * V.PERIOD_MS)
        else:
            for x in xs[:half]:
                obj.push(x)
            a, _ = tracemalloc.get_traced_memory()
            for x in xs[half:]:
                obj.push(x)
        b, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, b - a) / (len(xs) - half)


def _tracemalloc_per_channel(name: str, channels: int = 200) -> float:
    xs = V.signal(2 * V.W)
    ts = V._times(2 * V.W)
    gc.collect()
    tracemalloc.start()
    try:
        a, _ = tracemalloc.get_traced_memory()
        keep = []
        for _ in range(channels):
            obj = V.VARIANTS[name]()
            if name.startswith("core"):
                V._run_core(name, obj, ts, xs)
                obj = obj.point  # the channel is the Point (the time and out list are the caller's)
            else:
                for x in xs:
                    obj.push(x)
            keep.append(obj)
        b, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (b - a) / channels


def micropython_rows(n: int, reps: int) -> list[dict[str, Any]]:
    proc = micropython.run(
        script=HERE / "bench_core_variants.py", args=[str(n), str(reps)], timeout=900
    )
    return [json.loads(x) for x in proc.stdout.decode().splitlines() if x.strip()]


def table(interp: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{interp}:",
        f"  {'signal':<7} {'variant':<28} {'samples/s':>12} {'us/sample':>10} "
        f"{'heap B/sample':>14} {'B/channel':>10}",
    ]
    for r in rows:
        rate = r["samples_per_s"]
        heap = r.get("heap_b_per_sample")
        chan = r.get("bytes_per_channel")
        heap_s = "" if heap is None else f"{heap:.3f}"
        chan_s = "" if chan is None else f"{chan:,.0f}"
        lines.append(
            f"  {r['signal']:<7} {r['variant']:<28} {rate:>12,.0f} {1e6 / rate:>10.3f} "
            f"{heap_s:>14} {chan_s:>10}"
        )
    anchors = [(k[1], v) for k, v in ANCHORS.items() if k[0] == interp]
    if anchors:
        lines.append(
            "  published anchors (research B1.1, chain signal): "
            + ", ".join(f"{k} {v / 1e6:.2f} M/s" for k, v in anchors)
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="emberlink bench core", description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000, help="samples per run (CPython)")
    ap.add_argument("--mp-samples", type=int, default=30_000, help="samples per run (micropython)")
    ap.add_argument("--reps", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON lines instead")
    ap.add_argument("--no-micropython", action="store_true", help="CPython only")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    if args.samples < 1000 or args.mp_samples < 1000 or args.reps < 1:
        print("emberlink bench core: --samples/--mp-samples >= 1000, --reps >= 1", file=sys.stderr)
        return 2
    results = {"cpython": cpython_rows(args.samples, args.reps)}
    if not args.no_micropython:
        try:
            results["micropython"] = micropython_rows(args.mp_samples, args.reps)
        except micropython.MicroPythonError as e:
            print(f"emberlink bench core: micropython failed: {e}", file=sys.stderr)
            return 1
    if args.json:
        for interp, rows in results.items():
            for r in rows:
                print(json.dumps({"interpreter": interp, **r}))
        return 0
    print(f"emberlink bench core  (W={V.W}, 20 ms samples; python {sys.version.split()[0]})")
    for interp, rows in results.items():
        print(table(interp, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
