"""The per-sample path allocates nothing: micropython gc.mem_alloc() and CPython tracemalloc."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import pytest
from emberlink.tools import micropython

from . import workload

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent


@pytest.mark.micropython
def test_no_heap_growth_on_micropython_over_10000_samples() -> None:
    proc = micropython.run(script=HERE / "mp_alloc.py", args=[str(HERE)], heapsize="1M")
    lines = [x.split() for x in proc.stdout.decode().splitlines()]
    assert [x[0] for x in lines] == ["alloc", "alloc_block"]
    for _, alloc, events in lines:
        assert int(events) == 0, "the workload must not change state after its warm-up"
        assert int(alloc) == 0


@pytest.mark.micropython
def test_the_micropython_allocation_check_can_fail() -> None:
    """A transition allocates (an Event): the same measurement sees it."""
    code = (
        "import gc\n"
        "from emberlink.firmware.config import build_detectors\n"
        "p = build_detectors({'input': 'residual_current', 'stuck': False,"
        " 'residual_current': {'delay_ms': 0}})\n"
        "out = []\n"
        "p.feed(0, 100, out)\n"
        "gc.collect(); gc.disable(); a = gc.mem_alloc()\n"
        "p.feed(20, 400, out)\n"
        "print(gc.mem_alloc() - a, len(out))\n"
    )
    grown, events = micropython.run(code=code).stdout.decode().split()
    assert int(events) == 2 and int(grown) > 0


def test_no_per_sample_growth_on_cpython() -> None:
    out: list = []
    points = workload.build()
    workload.feed(points, 0, 200, out)
    tracemalloc.start()
    try:
        workload.feed(points, 200, 1000, out)
        before, _ = tracemalloc.get_traced_memory()
        workload.feed(points, 1200, 10000, out)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == []
    assert after - before < 256  # 10,000 samples x 6 points: not even one byte per sample


MODULES = sorted(p for p in FIRMWARE.glob("*.py"))


@pytest.mark.parametrize("arch", ["armv6m", "xtensawin"])
def test_every_firmware_module_compiles_with_mpy_cross(arch: str, tmp_path: Path) -> None:
    mpy_cross = str(Path(micropython.interpreter()).with_name("mpy-cross"))
    assert MODULES
    for src in MODULES:
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run(
            [mpy_cross, "-march=" + arch, "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, (src.name, proc.stderr)
        assert out.stat().st_size > 0
