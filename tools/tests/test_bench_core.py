"""``emberlink bench core``: runs end to end (small sizes) and its variants agree on the chain."""

from __future__ import annotations

import json

import pytest
from emberlink.tools import bench_core_variants as V
from emberlink.tools.bench_core import main


def test_reference_variants_agree() -> None:
    """a0, a, c and c_full implement the same chain: identical counts on the research signal."""
    xs = V.signal(12000)
    counts = []
    for name in ("a0_naive", "a_list", "c_deque", "c_full"):
        obj = V.VARIANTS[name]()
        for x in xs:
            obj.push(x)
        counts.append((obj.alarms, obj.peaks, obj.flats, obj.trips))
    assert counts[0] == counts[1] == counts[2]
    assert all(c > 0 for c in counts[0])


def test_full_reference_raises_events_like_the_core() -> None:
    """c_full does the core's whole job: its alarms, flatlines and trips come out as Events."""
    xs = V.signal(12000)
    ref = V.VARIANTS["c_full"]()
    for x in xs:
        ref.push(x)
    codes = {e.code for _, e in ref.out}
    assert {7, 6, 54} <= codes
    assert sum(1 for _, e in ref.out if e.code == 7 and e.state == 1) == ref.alarms


def test_core_variants_raise_the_same_events() -> None:
    xs = V.signal(12000)
    ts = V._times(len(xs))
    got = []
    for name in ("core", "core_block64"):
        obj = V.VARIANTS[name]()
        V._run_core(name, obj, ts, xs)
        got.append([(t, e.kind, e.code, e.state) for t, e in obj.out])
    assert got[0] == got[1] and got[0]


@pytest.mark.micropython
def test_bench_runs_on_both_interpreters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--samples", "2000", "--mp-samples", "2000", "--reps", "1", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    seen = {(r["interpreter"], r["signal"], r["variant"]) for r in rows}
    for interp in ("cpython", "micropython"):
        for v in ("a0_naive", "a_list", "c_deque", "c_full", "core", "core_block64"):
            assert (interp, "quiet", v) in seen
    assert ("cpython", "chain", "d1_numpy_block1024") in seen
    quiet_core = [r for r in rows if r["variant"] == "core" and r["signal"] == "quiet"]
    assert all(r["samples_per_s"] > 0 for r in rows)
    mp = [r for r in quiet_core if r["interpreter"] == "micropython"]
    # 0 per sample: at most the one-off 32 bytes the first gc.mem_alloc() reading carries
    assert mp[0]["heap_b_per_sample"] * 2000 <= 64


def test_bad_arguments_exit_2() -> None:
    assert main(["--samples", "10"]) == 2
    assert main(["--bogus"]) == 2
