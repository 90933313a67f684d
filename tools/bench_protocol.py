"""``emberlink bench protocol``: wire sizes against JSON, SenML and float CBOR, and codec speed
on CPython (against cbor2) and on the micropython interpreter. Figures, never pass/fail.

Sizes are for one event in its own batch (envelope included) and for a 60-sample residual
current series. "Compact JSON" is the same content with the same integers, field names as keys,
no spaces and absolute sample values (JSON has no delta convention). "SenML-CBOR" is RFC 8428
with a base name, base time and unit in the first record, then one record per sample with a
float64 value in amperes and an integer relative time (no name per record). "float64 CBOR"
is our map with float values in SI units.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cbor2
from emberlink.protocol import cbor, codes, messages
from emberlink.protocol.messages import FIELDS, Batch, Event

T0 = 1_764_421_200_000


def residual_current_trace(n: int = 60) -> list[int]:
    """A realistic residual-current series in mA: 160-175 mA of natural leakage with noise."""
    out, v, x = [], 162, 12345
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        v = max(150, min(180, v + (x >> 16) % 5 - 2))
        out.append(v)
    return out


def sample_events() -> dict[int, Event]:
    """One realistic event of each kind."""
    src = (0 << 24) | (3 << 16) | 12
    return {
        codes.FIRE_ALARM: Event(
            codes.FIRE_ALARM,
            0,
            src,
            state=1,
            code=1,
            val=412,
            exp=-2,
            unit=8,
            sys=1,
            part=42,
            verify=[12000, 60000],
            eflags=codes.EF_VERIFIED,
        ),
        codes.PRE_ALARM: Event(codes.PRE_ALARM, 0, src, state=1, code=1, val=210, exp=-2, unit=8),
        codes.FAULT: Event(codes.FAULT, 0, src, state=1, code=53, sys=100, part=18),
        codes.SUPERVISORY: Event(codes.SUPERVISORY, 0, src, state=1, code=10, sys=12, part=97),
        codes.SHIELD: Event(codes.SHIELD, 0, src, state=1, code=10, sys=1, part=42),
        codes.RESET: Event(codes.RESET, 0, 1 << 16, actor=17, sys=1),
        codes.SILENCE: Event(codes.SILENCE, 0, 1 << 16, actor=17),
        codes.MANUAL_ALARM: Event(codes.MANUAL_ALARM, 0, src, state=1, code=10, part=23),
        codes.TEST_MODE: Event(codes.TEST_MODE, 0, 0, state=1, actor=501),
        codes.COMMS: Event(codes.COMMS, 0, 9 << 16, state=1, code=55),
        codes.MEASUREMENT: Event(
            codes.MEASUREMENT,
            0,
            (2 << 16) | 1,
            period=1000,
            exp=-3,
            unit=1,
            part=17,
            samples=residual_current_trace(60),
        ),
        codes.HEALTH: Event(
            codes.HEALTH,
            0,
            0,
            health={0: 86400, 2: 172800, 3: 12, 4: 3, 6: 31, 7: 1, 9: 4, 10: 30},
        ),
        codes.BIRTH: Event(
            codes.BIRTH,
            0,
            0,
            info={0: "0.1.0", 1: 1, 2: 55, 3: 30, 4: "EL-PI-000123"},
        ),
        codes.DEATH: Event(codes.DEATH, 0, 0, code=101),
        codes.MAINTENANCE: Event(
            codes.MAINTENANCE,
            0,
            src,
            code=2,
            result=0,
            actor=501,
            sys=1,
            part=42,
        ),
        codes.DROPPED: Event(codes.DROPPED, 0, 0, range=[1001, 4600], code=100),
    }


def _named(m: dict[int, Any], event: bool) -> dict[str, Any]:
    names = {0: "ver", 1: "gw", 2: "boot", 3: "seq0", 4: "t0", 5: "events", 6: "ackd", 7: "flags"}
    out: dict[str, Any] = {}
    for k, v in m.items():
        name = FIELDS[k][0] if event else names[k]
        if event and k == 9:
            acc, absolute = 0, []
            for d in v:
                acc += d
                absolute.append(acc)
            v = absolute
        elif isinstance(v, dict):
            v = {str(kk): vv for kk, vv in v.items()}
        elif not event and k == 5:
            v = [_named(e, True) for e in v]
        out[name] = v
    return out


def compact_json(batch: Batch) -> bytes:
    """The same batch as compact JSON: same integers, names as keys, no whitespace."""
    return json.dumps(_named(batch.to_map(), False), separators=(",", ":")).encode()


def senml_cbor(samples: list[int], period_ms: int, exp: int) -> bytes:
    base = {-2: "urn:dev:gw:1234:2:1:rc", -3: T0 // 1000, -4: "A"}
    recs: list[dict[int, Any]] = []
    for i, s in enumerate(samples):
        r: dict[int, Any] = {2: s * 10.0**exp, 6: i * period_ms // 1000}
        if i == 0:
            r.update(base)
        recs.append(r)
    return cbor2.dumps(recs)


def float64_cbor(samples: list[int], exp: int) -> bytes:
    ev = {0: 11, 1: 0, 2: (2 << 16) | 1, 7: 1, 8: 1000, 9: [s * 10.0**exp for s in samples]}
    return cbor2.dumps(ev)


def sizes() -> list[tuple[str, int, int, float]]:
    rows = []
    for kind, ev in sample_events().items():
        b = Batch(1234, 7, 1, T0, [ev])
        c, j = len(messages.encode_batch(b)), len(compact_json(b))
        rows.append((codes.KIND_NAMES[kind], c, j, j / c))
    return rows


def _timeit(fn: Callable[[], object], n: int) -> float:
    """Median of 5 runs, microseconds per call."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


_MPY_BENCH = """
import time
from emberlink.protocol import cbor, messages
def timeit(fn, n):
    runs = []
    for _ in range(5):
        t = time.ticks_us()
        for _ in range(n):
            fn()
        runs.append(time.ticks_diff(time.ticks_us(), t) / n)
    runs.sort()
    return runs[2]
alarm = {ALARM}
allk = {ALL}
alarm_b = messages.decode_batch(alarm)
all_b = messages.decode_batch(allk)
alarm_m = alarm_b.to_map()
all_m = all_b.to_map()
print("cbor.dumps 1-alarm batch", timeit(lambda: cbor.dumps(alarm_m), 2000))
print("cbor.dumps all-kinds batch", timeit(lambda: cbor.dumps(all_m), 300))
print("cbor.loads 1-alarm batch", timeit(lambda: cbor.loads(alarm), 2000))
print("cbor.loads all-kinds batch", timeit(lambda: cbor.loads(allk), 300))
print("encode_batch 1-alarm (validated)", timeit(lambda: messages.encode_batch(alarm_b), 2000))
print("decode_batch 1-alarm (validated)", timeit(lambda: messages.decode_batch(alarm), 2000))
print("decode_batch all-kinds (validated)", timeit(lambda: messages.decode_batch(allk), 300))
"""


def speeds(micropython: bool) -> list[tuple[str, float, float | None, float | None]]:
    evs = list(sample_events().values())
    alarm_b = Batch(1234, 7, 1, T0, [evs[0]])
    all_b = Batch(1234, 7, 1, T0, evs)
    alarm, allk = messages.encode_batch(alarm_b), messages.encode_batch(all_b)
    am, allm = alarm_b.to_map(), all_b.to_map()
    cp = {
        "cbor.dumps 1-alarm batch": (
            _timeit(lambda: cbor.dumps(am), 20000),
            _timeit(lambda: cbor2.dumps(am, canonical=True), 20000),
        ),
        "cbor.dumps all-kinds batch": (
            _timeit(lambda: cbor.dumps(allm), 2000),
            _timeit(lambda: cbor2.dumps(allm, canonical=True), 2000),
        ),
        "cbor.loads 1-alarm batch": (
            _timeit(lambda: cbor.loads(alarm), 20000),
            _timeit(lambda: cbor2.loads(alarm), 20000),
        ),
        "cbor.loads all-kinds batch": (
            _timeit(lambda: cbor.loads(allk), 2000),
            _timeit(lambda: cbor2.loads(allk), 2000),
        ),
        "encode_batch 1-alarm (validated)": (
            _timeit(lambda: messages.encode_batch(alarm_b), 20000),
            None,
        ),
        "decode_batch 1-alarm (validated)": (
            _timeit(lambda: messages.decode_batch(alarm), 20000),
            None,
        ),
        "decode_batch all-kinds (validated)": (
            _timeit(lambda: messages.decode_batch(allk), 2000),
            None,
        ),
    }
    mp: dict[str, float] = {}
    if micropython:
        from emberlink.tools.micropython import MicroPythonError, run

        code = _MPY_BENCH.replace("{ALARM}", repr(alarm)).replace("{ALL}", repr(allk))
        try:
            out = run(code=code, timeout=600).stdout.decode()
            for line in out.splitlines():
                name, _, val = line.rpartition(" ")
                mp[name] = float(val)
        except MicroPythonError as e:
            print("micropython run failed:", e, file=sys.stderr)
    return [(name, ours, ref, mp.get(name)) for name, (ours, ref) in cp.items()]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="emberlink bench protocol", description=__doc__)
    p.add_argument("--no-micropython", action="store_true", help="skip the micropython run")
    args = p.parse_args(argv)

    print("## Bytes per event kind (one event in its own batch, envelope included)\n")
    print("| kind | CBOR | compact JSON | JSON / CBOR |")
    print("|---|---:|---:|---:|")
    for name, c, j, r in sizes():
        print(f"| {name} | {c} | {j} | {r:.2f}x |")
    evs = sample_events()
    all_b = Batch(1234, 7, 1, T0, list(evs.values()))
    print(
        f"| batch of all 16 kinds | {len(messages.encode_batch(all_b))} | "
        f"{len(compact_json(all_b))} | "
        f"{len(compact_json(all_b)) / len(messages.encode_batch(all_b)):.2f}x |"
    )
    rc = residual_current_trace(60)
    ev = Event(codes.MEASUREMENT, 0, (2 << 16) | 1, period=1000, exp=-3, unit=1, samples=rc)
    print("\n## 60-sample residual-current series (1 Hz, mA)\n")
    print("| encoding | bytes |")
    print("|---|---:|")
    print(f"| EmberLink event, delta-encoded scaled ints | {len(cbor.dumps(ev.to_map()))} |")
    print(
        f"| EmberLink batch holding it | {len(messages.encode_batch(Batch(1234, 7, 1, T0, [ev])))}"
        " |"
    )
    print(f"| compact JSON batch | {len(compact_json(Batch(1234, 7, 1, T0, [ev])))} |")
    print(f"| float64 CBOR (values in A) | {len(float64_cbor(rc, -3))} |")
    print(f"| SenML-CBOR (RFC 8428, bn/bt/bu, float64 values) | {len(senml_cbor(rc, 1000, -3))} |")

    print("\n## Codec speed, microseconds per operation (median of 5 runs)\n")
    print("| operation | EmberLink, CPython | cbor2 6.3 (Rust), CPython | EmberLink, MicroPython |")
    print("|---|---:|---:|---:|")
    for name, ours, ref, mp in speeds(not args.no_micropython):
        refs = f"{ref:.1f}" if ref is not None else "n/a"
        mps = f"{mp:.1f}" if mp is not None else "n/a"
        print(f"| {name} | {ours:.1f} | {refs} | {mps} |")
    return 0
