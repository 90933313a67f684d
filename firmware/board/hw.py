"""Board services behind small adapters: the wall clock with time sync, and the watchdog.

``Clock.now_ms()`` is UTC milliseconds: the RTC (or the host clock on the unix port) plus an
offset set by the cloud's time-sync command or by SNTP (``ntptime``) on a board with network.
Until one of them succeeds a board's clock is *unsynced* and its events say so
(BF_CLOCK_UNSYNCED). Detectors never see it: they run on ``ticks_ms`` (DESIGN.md: monotonic
time inside detectors).

``Watchdog`` is ``machine.WDT`` on a board: once started it cannot be stopped, and the main
loop feeds it only while polls and the outbox make progress, so a wedged loop resets the board.
On the unix port there is no hardware watchdog; the same object counts feeds and records the
last one so tests can see the loop feeding it.
"""

from .compat import ticks_diff, ticks_ms, unix_ms


class Clock:
    def __init__(self, synced=False):
        self.offset_ms = 0
        self.synced = synced

    def now_ms(self):
        return unix_ms() + self.offset_ms

    def at(self, t_ticks):
        """UTC ms of an earlier ``ticks_ms`` reading."""
        return self.now_ms() - ticks_diff(ticks_ms(), t_ticks)

    def sync(self, utc_ms):
        """The cloud's time-sync command (messages.OP_TIME_SYNC)."""
        self.offset_ms = utc_ms - unix_ms()
        self.synced = True

    def sntp(self, host="pool.ntp.org"):
        """Set the RTC over SNTP where ``ntptime`` exists (boards with network); True on success."""
        try:
            import ntptime  # type: ignore[import-not-found]
        except ImportError:
            return False
        try:
            ntptime.host = host
            ntptime.settime()
        except (OSError, OverflowError):
            return False
        self.offset_ms = 0
        self.synced = True
        return True


class Watchdog:
    def __init__(self, timeout_ms=8000):
        self.feeds = 0
        self.last = ticks_ms()
        self.wdt = None
        try:
            from machine import WDT
        except ImportError:
            return
        self.wdt = WDT(timeout=timeout_ms)

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()
        self.feeds += 1
        self.last = ticks_ms()
