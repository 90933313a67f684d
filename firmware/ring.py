"""Per-channel ring buffer of integer samples with O(1) rolling statistics.

Theory of operation
-------------------
A ``Ring`` keeps the last ``window`` samples of one channel in a preallocated ``array('i')``.
``push(x)`` overwrites the oldest sample and updates, in O(1) amortised time and with no heap
allocation:

* ``s``  -- the running integer sum of the window (mean = s / n);
* ``s2`` -- the running sum of squares (only when ``variance=True``): variance is
  ``(n*s2 - s*s) / n**2``, computed when reporting, never per sample;
* a monotonic queue for the rolling maximum and one for the minimum: the maximum is the
  queue's head; pushing pops the tail entries it dominates, so each sample enters and leaves a
  queue once (amortised O(1)).

Two layouts of the queues, one per interpreter (chosen when the ring is built):

* MicroPython: preallocated arrays used as circular queues (values ``qv``, and ring positions
  ``qi`` for expiry; head and count are state words), which the viper fast paths
  (fastpath.py) read as raw memory and which never allocate;
* CPython: ``collections.deque`` of values only (``qi`` is None). The queue keeps equal values
  (it pops only smaller ones), so the sample leaving the window is the head exactly when it
  equals the head: expiry needs no positions. ``popleft``/``pop``/``append`` run in C, which
  on CPython costs fewer bytecodes than the index arithmetic of a circular array.

Integer sums are exact, so they never drift and never need a periodic recompute (a float
running variance over a constant segment goes negative or spuriously positive; see
shared/research/protocol-core-anchors.md B1).

Bounds (32-bit boards)
----------------------
On RP2040/ESP32 MicroPython a small int is a signed 31-bit value: anything outside
-2**30 .. 2**30-1 becomes a heap-allocated long int. Every value the ring holds therefore
stays inside signed 30 bits: ``window * limit`` for ``s`` and ``window * limit**2`` for
``s2``. ``max_abs_sample(window, variance)`` gives the largest allowed ``|x|``:

=========  ====================  ======================
window     limit with variance   limit without variance
=========  ====================  ======================
16         8191                  67,108,863
64         4095                  16,777,215
256        2047                  4,194,303
1024       1023                  1,048,575
=========  ====================  ======================

The ring checks the limit when it is built; the caller (``point.Point``) range-checks each
sample before pushing it, so an out-of-range sample is a fault and never reaches the sums.

Time is not the ring's business: it counts samples. Callers that need time windows keep their
own timestamps (see ``detectors.RateOfRise``).
"""

import sys
from array import array

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


SMALL_INT_MAX = const(0x3FFFFFFF)  # 2**30 - 1: the largest small int on a 32-bit board
MAX_WINDOW = const(4096)  # queue slots are 'H' (16-bit) positions; 4096 keeps limits useful
MIN_WINDOW = const(2)

# Scalar state words of a ring (``Ring.st``): one array, so the state costs 4 bytes a word on a
# board and the viper fast path (fastpath.py) reads and writes it in place.
I_ = const(0)  # next write position
N_ = const(1)  # samples held, <= window
S_ = const(2)  # running sum
S2_ = const(3)  # running sum of squares (variance=True)
HMAX_ = const(4)  # max queue: head slot
CMAX_ = const(5)  # max queue: entries
HMIN_ = const(6)  # min queue: head slot
CMIN_ = const(7)
# A Point's ring keeps no min queue: detectors.Overcurrent (at most one a point) uses its words
OCSPEC_ = const(6)  # the Overcurrent conditions' kind, plus 32 when they latch
DTP_ = const(7)  # the Overcurrent definite stage's pickup (0: none)
RUNX_ = const(8)  # words 8.. belong to the owner: Point's stuck-sensor run (value, length)
RUN_ = const(9)
RING_WORDS = const(10)  # the words clear() resets
# Point's words, read by its viper fast paths (fastpath.py) in the same array
LO_ = const(10)  # lowest valid sample
XQ_ = const(11)  # quiet bound: samples in lo .. xq-1 change no condition (xq <= lo: none)
TOL_ = const(12)  # stuck tolerance
LAST_ = const(13)  # stuck run length that raises, minus one
STUCK_ = const(14)  # stuck check on (1/0)
STUCKON_ = const(15)  # stuck_sensor cause present (1/0)
VAR_ = const(16)  # ring keeps s2 (1/0)
W_ = const(17)  # window (Ring.window)
RX_ = const(18)  # time of the last sample, ms mod 2**30
PREV_ = const(19)  # time of the last valid sample, ms mod 2**30
VIPER_ = const(20)  # the viper fast paths serve this point (1/0)
GAP_ = const(21)  # longest interval integrated at one sample's value (max_gap_ms)
HASPREV_ = const(22)  # a valid sample has been seen (1/0; its time is PREV_)
RXOK_ = const(23)  # a sample has come (1/0; its time is RX_)
BAD_ = const(24)  # a supervision fault (value or range) has its cause present (1/0)
LOCODE_ = const(25)  # condition code below lo (out_of_range 50 or open_circuit 51)
HICODE_ = const(26)  # condition code above hi (out_of_range 50 or short_circuit 52)
QOK_ = const(27)  # every detector knows when it is idle (Point.quiet_ok; 1/0)
HI_ = const(28)  # highest valid sample (viper points)
COMMSON_ = const(29)  # no_response cause present (1/0)
FV_ = const(30)  # the point has fault values (1/0)
CMPT_ = const(31)  # the ring has the compact layout (Ring.compact; 1/0)
TMO_ = const(32)  # comms_timeout_ms (Point.timeout)
UNIT_ = const(33)  # Point.unit (NONE_WORD: None)
EXP_ = const(34)  # Point.exp (NONE_WORD: None)
# detectors.Overcurrent's definite-time stage (a point has at most one Overcurrent)
DTT0_ = const(35)  # time x first exceeded the pickup, ms mod 2**30
DTON_ = const(36)  # timing (1/0)
DTDROP_ = const(37)  # dropout level
DTDELAY_ = const(38)  # delay, ms
# Point's busy path may take an in-range sample (1/0): the ring is full (no min queue), a valid
# sample has come and no supervision condition (value, range, comms) is present or possible
CLEAN_ = const(39)
STATE_WORDS = const(40)  # (40 words: the same ten 16-byte blocks on a board as 39)
NONE_WORD = const(-0x80000000)  # a word standing for None


_MICROPYTHON = sys.implementation.name == "micropython"
if not _MICROPYTHON:
    # CPython's ring layout and hot paths (a board never imports them: heap there)
    from collections import deque

    from . import cpyfeed


def _ints(n, limit=SMALL_INT_MAX):
    # array on MicroPython: 'h' (2 bytes) when every value fits 16 bits, else 'i' (4 bytes);
    # a list on CPython (faster: reading an array item allocates an int object)
    if not _MICROPYTHON:
        return [0] * n
    if limit <= 32767:
        return array("h", bytes(2 * n))
    return array("i", bytes(4 * n))


def _positions(n):
    # ring positions: 'B' (1 byte) up to window 256, else 'H'
    if not _MICROPYTHON:
        return [0] * n
    if n <= 256:
        return array("B", bytes(n))
    return array("H", bytes(2 * n))


_NONE = _ints(0)  # shared stand-in for the min queue when it is not kept


def isqrt(n):
    """Integer square root (math.isqrt is missing on MicroPython)."""
    if n < 0:
        raise ValueError("isqrt of a negative number")
    if n < 2:
        return n
    x = n
    y = (x + 1) // 2
    while y < x:
        x = y
        y = (x + n // x) // 2
    return x


def max_abs_sample(window, variance=False):
    """The largest |sample| for which every running sum of a ``window`` ring fits 30 bits."""
    if variance:
        return isqrt(SMALL_INT_MAX // window)
    return SMALL_INT_MAX // window


class Ring:
    """A preallocated window of ``window`` int samples with sum, sum of squares, max and min.

    ``limit`` is the largest |sample| the caller will push (checked against the 30-bit bound,
    ``ValueError`` names the field); ``push`` does not re-check it. ``track_min=False`` skips
    the min queue (``min()`` then scans the window: reporting only).

    Storage: ``array`` on MicroPython (2 bytes a sample when ``limit`` <= 32767, else 4; 1 byte
    a queue position up to window 256, else 2); on CPython a plain list for the samples (reading
    an array item allocates an int object) and deques of values for the queues (see above).
    """

    track_min = False
    mv = _NONE
    mi = _NONE

    def __init__(self, window, limit=None, variance=False, track_min=True):
        if not isinstance(window, int) or isinstance(window, bool):
            raise ValueError("window: expected an integer")
        if window < MIN_WINDOW or window > MAX_WINDOW:
            raise ValueError(
                "window: " + str(window) + " outside " + str(MIN_WINDOW) + ".." + str(MAX_WINDOW)
            )
        bound = max_abs_sample(window, variance)
        if limit is None:
            limit = bound
        if limit > bound:
            raise ValueError(
                "limit: |sample| "
                + str(limit)
                + " with window "
                + str(window)
                + (" and variance" if variance else "")
                + " overflows 30-bit sums (at most "
                + str(bound)
                + ")"
            )
        self.buf = _ints(window, limit)
        if _MICROPYTHON:
            self.qv = _ints(window, limit)  # max queue: values, decreasing from head to tail
            self.qi = _positions(window)  # max queue: their ring positions (for expiry)
        else:
            self.qv = deque()  # max queue: values, non-increasing from head to tail
            self.qi = None  # (the deque layout: no positions)
        if track_min:  # (the class attributes stand in when not: no instance slots spent)
            self.track_min = True
            if _MICROPYTHON:
                self.mv = _ints(window, limit)  # min queue: values, increasing
                self.mi = _positions(window)
            else:
                self.mv = deque()  # min queue: values, non-decreasing
        self.st = st = _ints(STATE_WORDS)  # scalar state, one array (see the *_ indices)
        self.clear()
        st[VAR_] = 1 if variance else 0
        st[W_] = window  # (words, not instance slots: 4 bytes each on a board instead of 16)
        # the viper fast path (fastpath.py) reads the compact layout: 'h' values, 'B' positions
        st[CMPT_] = 1 if _MICROPYTHON and limit <= 32767 and window <= 256 else 0

    @property
    def window(self):
        """The window in samples: st[W_]."""
        return self.st[W_]

    @property
    def compact(self):
        """The compact layout the viper fast paths read ('h' values, 'B' positions)."""
        return bool(self.st[CMPT_])

    @property
    def variance(self):
        """The ring keeps the sum of squares (``s2``): st[VAR_]."""
        return bool(self.st[VAR_])

    def clear(self):
        """Forget every sample (the storage is kept)."""
        st = self.st
        for k in range(RING_WORDS):
            st[k] = 0
        st[CLEAN_] = 0  # (a Point's busy path waits for the window to fill again)
        if self.buf is not None and self.qi is None:  # the deque layout
            self.qv.clear()
            if self.track_min:
                self.mv.clear()

    # Read-only views of the state words (reporting and tests; the hot paths index ``st``).
    @property
    def i(self):
        return self.st[I_]

    @property
    def n(self):
        return self.st[N_]

    @property
    def s(self):
        return self.st[S_]

    @property
    def s2(self):
        return self.st[S2_]

    def push(self, x):
        """Add sample ``x`` (an int within ``limit``); the oldest leaves a full window."""
        if self.qi is None:  # CPython's layout (deques)
            cpyfeed.ring_push(self, x)
            return
        buf = self.buf
        st = self.st
        i = st[I_]
        w = st[W_]
        if st[N_] == w:
            old = buf[i]
            st[S_] += x - old
            if st[VAR_]:
                st[S2_] += x * x - old * old
            # The sample at position i leaves the window: drop it from the queue heads.
            h = st[HMAX_]
            if self.qi[h] == i:
                st[HMAX_] = 0 if h == w - 1 else h + 1
                st[CMAX_] -= 1
            if self.track_min:
                h = st[HMIN_]
                if self.mi[h] == i:
                    st[HMIN_] = 0 if h == w - 1 else h + 1
                    st[CMIN_] -= 1
        else:
            st[N_] += 1
            st[S_] += x
            if st[VAR_]:
                st[S2_] += x * x
        buf[i] = x
        # Rolling max: drop tail entries <= x, then append x.
        q = self.qv
        c = st[CMAX_]
        t = st[HMAX_] + c - 1
        if t >= w:
            t -= w
        while c and q[t] <= x:
            c -= 1
            t = w - 1 if t == 0 else t - 1
        t = 0 if t == w - 1 else t + 1
        q[t] = x
        self.qi[t] = i
        st[CMAX_] = c + 1
        if self.track_min:
            q = self.mv
            c = st[CMIN_]
            t = st[HMIN_] + c - 1
            if t >= w:
                t -= w
            while c and q[t] >= x:
                c -= 1
                t = w - 1 if t == 0 else t - 1
            t = 0 if t == w - 1 else t + 1
            q[t] = x
            self.mi[t] = i
            st[CMIN_] = c + 1
        st[I_] = 0 if i == w - 1 else i + 1

    def max(self):
        """The largest sample in the window (0 when empty)."""
        if not self.st[N_]:
            return 0
        if self.qi is None:
            return self.qv[0]
        return self.qv[self.st[HMAX_]]

    def min(self):
        """The smallest sample in the window (0 when empty)."""
        n = self.st[N_]
        if not n:
            return 0
        if self.track_min:
            if self.qi is None:  # the deque layout
                return self.mv[0]
            return self.mv[self.st[HMIN_]]
        m = self.buf[0]
        for j in range(1, n):
            if self.buf[j] < m:
                m = self.buf[j]
        return m

    def full(self):
        return self.n == self.window

    def flat(self, tolerance=0):
        """True when the window is full and max - min <= tolerance (a stuck sensor)."""
        if self.n != self.window:
            return False
        return self.max() - self.min() <= tolerance

    def last(self):
        """The newest sample (0 when empty)."""
        if not self.n:
            return 0
        i = self.i - 1
        return self.buf[self.window - 1 if i < 0 else i]

    def mean_floor(self):
        """floor(s / n), 0 when empty. Reporting only: it divides."""
        return self.s // self.n if self.n else 0

    def variance_num(self):
        """n*s2 - s*s (= n**2 * variance). Reporting only: may be a long int on a board."""
        if not self.variance:
            raise ValueError("variance: this ring was built with variance=False")
        return self.n * self.s2 - self.s * self.s

    def samples(self):
        """The window, oldest first, as a new list (reporting and tests; allocates)."""
        out = []
        w = self.window
        j = self.i if self.n == w else 0
        for _ in range(self.n):
            out.append(self.buf[j])
            j += 1
            if j == w:
                j = 0
        return out
