# A steady multi-detector workload shared by the allocation tests (CPython and micropython):
# every kind of point, varying samples, no state transitions after the warm-up.
from emberlink.firmware.config import build_detectors

CONFIGS = [
    {
        "input": "smoke",
        "smoke": {
            "alarm": 150,
            "baseline": 100,
            "verification": True,
            "drift": {"baseline_min": 0, "baseline_max": 400},
        },
    },
    {"input": "heat", "heat": {"class": "A1R"}},
    {"input": "residual_current", "residual_current": {"level_mA": 300}},
    {"input": "cable_temperature", "cable_temperature": {"level": 800}},
    {
        "input": "current",
        "range": [0, 30000],  # a compact ring: feed_block takes the viper path on micropython
        "overcurrent": {
            "inverse": {"curve": "iec_lti", "pickup": 1000, "tms": 1.0},
            "definite": {"pickup": 1000, "delay_ms": 600000},
            "instantaneous": {"pickup": 5000},
        },
        "thermal": {"k_ib": 1200, "tau_heat_ms": 600000},
    },
    {"input": "panel_status", "panel": {"fire": 1, "fault": 2}},
]
# sample(k) for each config: varies every sample, never crosses a threshold
BASES = [110, 250, 100, 500, 1050, 0x100]


def build():
    return [build_detectors(c, i + 1) for i, c in enumerate(CONFIGS)]


def feed(points, k0, n, out, period=20):
    for k in range(k0, k0 + n):
        t = k * period
        j = k & 3
        points[0].feed(t, BASES[0] + j, out)
        points[1].feed(t, BASES[1] + j, out)
        points[2].feed(t, BASES[2] + j, out)
        points[3].feed(t, BASES[3] + j, out)
        points[4].feed(t, BASES[4] + j, out)
        points[5].feed(t, BASES[5] << (k & 1), out)
