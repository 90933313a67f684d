"""``emberlink bench <name>``: benchmarks print figures beside their baselines; never pass/fail."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "protocol": "emberlink.tools.bench_protocol",  # wire sizes and codec speed
    "core": "emberlink.tools.bench_core",  # ring-buffer detection core
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print("usage: emberlink bench {" + "|".join(BENCHES) + "} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHES[argv[0]])
    rc: int = module.main(argv[1:])
    return rc
