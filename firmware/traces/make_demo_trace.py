"""Write site_demo.csv: a deterministic 30-minute trace of a small site (seeded noise).

No field recording exists yet; this one is synthesised to exercise every detector the way a
recording would: natural leakage that turns into an insulation fault, a cable heating up with a
probe that opens for a few polls and a device that falls silent, an LTI overload, a steam
transient that alarm verification rejects and a real fire it confirms, and panel bits.
Run: .venv/bin/python firmware/traces/make_demo_trace.py
"""

from __future__ import annotations

import random
from pathlib import Path

MIN = 60_000


def rows() -> list[tuple[int, str, str]]:
    rng = random.Random(20261129)
    out: list[tuple[int, str, str]] = []
    for t in range(0, 30 * MIN, 5000):
        # residual current: 110-150 mA leakage, insulation fails at 10 min (ramp to 330 mA)
        rc = 130 + rng.randint(-20, 20)
        if t >= 10 * MIN:
            rc = min(330, 130 + (t - 10 * MIN) // 600) + rng.randint(-5, 5)
        if t >= 22 * MIN:
            rc = 120 + rng.randint(-10, 10)  # repaired
        out.append((t, "rc_main", str(rc)))
        # cable temperature: 45 C, heats 1 K per 30 s from 5 min; probe open 8:00-8:15;
        # the device is silent 20:00-23:00
        if not (20 * MIN <= t < 23 * MIN):
            temp = 450 + rng.randint(-3, 3)
            if t >= 5 * MIN:
                temp = min(850, 450 + (t - 5 * MIN) // 3000) + rng.randint(-3, 3)
            if 8 * MIN <= t < 8 * MIN + 15000:
                temp = 32767
            out.append((t, "cable_t1", str(temp)))
        # phase current: 40 A, overload at 1.6 x 63 A from 15:00 to 19:00
        amps = 400 + rng.randint(-15, 15)
        if 15 * MIN <= t < 19 * MIN:
            amps = 1008 + rng.randint(-10, 10)
        out.append((t, "phase_a", str(amps)))
        # panel: fire bit once the local smoke alarm has been confirmed; a call point at 27:00
        bits = 0
        if 12 * MIN + 30000 <= t < 24 * MIN:
            bits |= 0x0001
        if t >= 27 * MIN:
            bits |= 0x0010
        out.append((t, "panel", str(bits)))
    for t in range(0, 30 * MIN, 2000):
        # smoke: clean air 0.04 dB/m; steam for 6 s at 4:00; a real fire from 12:00
        x = 40 + rng.randint(-3, 3)
        if 4 * MIN <= t < 4 * MIN + 6000:
            x = 210
        if t >= 12 * MIN:
            x = min(400, 40 + (t - 12 * MIN) // 100) + rng.randint(-8, 8)
        if t >= 24 * MIN:
            x = 42 + rng.randint(-3, 3)
        out.append((t, "smoke_l1", str(x)))
    # operator actions
    out.append((14 * MIN, "rc_main", "ack"))
    out.append((25 * MIN, "rc_main", "reset"))
    out.append((25 * MIN, "smoke_l1", "reset"))
    out.sort(key=lambda r: r[0])
    return out


def main() -> None:
    path = Path(__file__).with_name("site_demo.csv")
    with path.open("w") as f:
        f.write("time_ms,point,value\n")
        for t, p, v in rows():
            f.write(f"{t},{p},{v}\n")


if __name__ == "__main__":
    main()
