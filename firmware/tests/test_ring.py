"""Ring: O(1) statistics equal a naive recompute; the 30-bit bounds hold and are enforced."""

from __future__ import annotations

from array import array

import pytest
from emberlink.firmware import ring as ring_mod
from emberlink.firmware.ring import SMALL_INT_MAX, Ring, isqrt, max_abs_sample
from hypothesis import given, settings
from hypothesis import strategies as st


@st.composite
def windows_and_samples(draw: st.DrawFn) -> tuple[int, bool, list[int]]:
    w = draw(st.integers(2, 40))
    var = draw(st.booleans())
    lim = max_abs_sample(w, var)
    xs = draw(st.lists(st.one_of(st.integers(-lim, lim), st.integers(-3, 3)), max_size=200))
    return w, var, xs


@pytest.mark.parametrize("board_storage", [False, True], ids=["lists", "arrays"])
@settings(max_examples=300, deadline=None)
@given(case=windows_and_samples())
def test_running_statistics_equal_a_naive_recompute(
    case: tuple[int, bool, list[int]], board_storage: bool
) -> None:
    """Both storages: lists (CPython) and array('i')/array('H') (what MicroPython uses)."""
    w, var, xs = case
    saved = ring_mod._MICROPYTHON
    ring_mod._MICROPYTHON = board_storage
    try:
        r = Ring(w, variance=var)
    finally:
        ring_mod._MICROPYTHON = saved
    assert isinstance(r.buf, array) == board_storage
    for k, x in enumerate(xs):
        r.push(x)
        win = xs[max(0, k + 1 - w) : k + 1]
        assert r.n == len(win)
        assert r.s == sum(win)
        assert r.max() == max(win)
        assert r.min() == min(win)
        assert r.last() == x
        assert r.samples() == win
        assert r.flat() == (len(win) == w and max(win) == min(win))
        if var:
            assert r.s2 == sum(v * v for v in win)
            assert r.variance_num() == len(win) * sum(v * v for v in win) - sum(win) ** 2
        for v in (r.s, r.s2):
            assert -SMALL_INT_MAX - 1 <= v <= SMALL_INT_MAX


def test_flat_with_tolerance_and_clear() -> None:
    r = Ring(4)
    for x in (10, 11, 10, 11):
        r.push(x)
    assert not r.flat() and r.flat(1)
    r.clear()
    assert r.n == 0 and r.max() == 0 and r.samples() == []


@pytest.mark.parametrize(
    ("window", "with_var", "without_var"),
    [(16, 8191, 67108863), (64, 4095, 16777215), (256, 2047, 4194303), (1024, 1023, 1048575)],
)
def test_documented_bounds(window: int, with_var: int, without_var: int) -> None:
    """The table in ring.py's docstring, and that the bound is the largest that fits."""
    assert max_abs_sample(window, True) == with_var
    assert window * with_var**2 <= SMALL_INT_MAX < window * (with_var + 1) ** 2
    assert max_abs_sample(window, False) == without_var
    assert window * without_var <= SMALL_INT_MAX < window * (without_var + 1)


def test_at_the_bound_sums_stay_small_and_over_it_is_refused() -> None:
    lim = max_abs_sample(64, True)
    r = Ring(64, lim, variance=True)
    for _ in range(200):
        r.push(lim)
        r.push(-lim)
    assert r.s2 == 64 * lim * lim <= SMALL_INT_MAX
    with pytest.raises(ValueError, match=r"^limit: \|sample\| 4096 with window 64 and variance"):
        Ring(64, lim + 1, variance=True)


@pytest.mark.parametrize("window", [0, 1, 4097, True, 2.5])
def test_bad_windows_are_refused(window: object) -> None:
    with pytest.raises(ValueError, match=r"^window: "):
        Ring(window)  # type: ignore[arg-type]


def test_variance_needs_variance_mode() -> None:
    with pytest.raises(ValueError, match=r"^variance: "):
        Ring(8).variance_num()


@given(st.integers(0, 10**12))
def test_isqrt(n: int) -> None:
    s = isqrt(n)
    assert s * s <= n < (s + 1) * (s + 1)


def test_the_word_numbers_point_writes_as_literals() -> None:
    """point.py's and cpyfeed.py's hot paths index the state array with these numbers."""
    from emberlink.firmware import ring

    words = {
        "I_": 0, "N_": 1, "S_": 2, "S2_": 3, "HMAX_": 4, "CMAX_": 5, "RUNX_": 8, "RUN_": 9,
        "XQ_": 11, "TOL_": 12, "LAST_": 13, "STUCK_": 14, "STUCKON_": 15, "RX_": 18, "PREV_": 19,
        "VIPER_": 20, "GAP_": 21, "HASPREV_": 22, "RXOK_": 23, "BAD_": 24, "QOK_": 27,
        "COMMSON_": 29, "DTT0_": 35, "DTON_": 36, "DTDROP_": 37, "DTDELAY_": 38, "CLEAN_": 39,
        "VAR_": 16, "W_": 17,
    }  # fmt: skip
    assert {k: getattr(ring, k) for k in words} == words
    assert ring.SMALL_INT_MAX == 0x3FFFFFFF
