"""The few clock calls that differ between MicroPython and CPython.

``ticks_ms``/``ticks_diff``/``ticks_add``/``sleep_ms`` come from MicroPython's ``time`` where it
has them, else from ``time.monotonic`` (CPython, for tests of the sans-I/O parts).
"""

import time

try:
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
    MICROPYTHON = True
except AttributeError:
    MICROPYTHON = False

    def ticks_ms():  # type: ignore[misc]
        return int(time.monotonic() * 1000) & 0x3FFFFFFF  # type: ignore[attr-defined,unused-ignore]

    def ticks_diff(a, b):  # type: ignore[misc]
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d

    def ticks_add(a, b):  # type: ignore[misc]
        return (a + b) & 0x3FFFFFFF

    def sleep_ms(ms):  # type: ignore[misc]
        time.sleep(ms / 1000)


def unix_ms():
    """Wall-clock UTC milliseconds as the host (or the board's RTC) knows it."""
    return time.time_ns() // 1000000
