"""Modbus RTU master: CRC-16, frames, timing from the baud rate, and two line adapters.

The frame logic has no I/O (``crc16``, ``Master.build``, ``Master.parse``), so it runs and is
tested on both interpreters. ``Master.read(unit, fc, addr, count)`` does one transaction over a
*port*: an object with ``write(buf)``, ``readinto(buf) -> n`` (0 when nothing is waiting) and
``wait(ms) -> bool`` (bytes arrived). ``UartPort`` wraps ``machine.UART`` on a board (with an
optional RS-485 driver-enable pin); ``PtyPort`` opens a pseudo-terminal with ``termios`` on the
unix port, which is how the tests reach the simulator through ``socat``.

Timing (Modbus over Serial Line V1.02 §2.5.1.1, standards.md §6.1): a character is
``char_bits`` (11: start, 8 data, parity or a second stop bit, stop) at ``baud``; frames are
separated by t3.5 = 3.5 characters, fixed at 1750 µs above 19200 baud, and the master waits
that silence before each request. The answer must start within ``timeout_ms`` (the slave's
turnaround, 13..200 ms in datasheets); the frame ends when ``expected`` bytes have come or
the line is silent for ``gap_ms`` (t3.5, but never under ``GAP_FLOOR_MS`` on a host whose
scheduler, not a UART, paces the bytes).

``read`` returns ``OK`` (the registers are in ``master.regs[:count]``), an exception code
1..255 from the slave, or a negative error: ``NO_RESPONSE`` (silent: a dead or absent unit),
``BAD_CRC`` or ``BAD_FRAME`` (bytes came, but not a valid answer). It allocates nothing: the
request, answer and register buffers are made once, so the per-poll path is heap-free.
"""

from array import array

from .compat import sleep_ms, ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


OK = const(0)
NO_RESPONSE = const(-1)
BAD_CRC = const(-2)
BAD_FRAME = const(-3)
ERROR_NAMES = {NO_RESPONSE: "no response", BAD_CRC: "CRC error", BAD_FRAME: "malformed answer"}
# event condition codes (protocol codes.CONDITION_NAMES) for the errors
CONDITION = {NO_RESPONSE: 55, BAD_CRC: 56, BAD_FRAME: 56}

FC_READ_HOLDING = const(3)
FC_READ_INPUT = const(4)
MAX_REGS = const(125)  # FC03/04: 250 data bytes fit a 256-byte ADU
GAP_FLOOR_MS = const(20)


def _table():
    t = array("H", [0] * 256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_CRC = _table()


def crc16(buf, start=0, end=None):
    """Modbus CRC-16 (reflected 0x8005, init 0xFFFF) of ``buf[start:end]``; no allocation."""
    if end is None:
        end = len(buf)
    crc = 0xFFFF
    t = _CRC
    for i in range(start, end):
        crc = (crc >> 8) ^ t[(crc ^ buf[i]) & 0xFF]
    return crc


def t35_us(baud, char_bits=11):
    """The inter-frame silence in µs (fixed 1750 µs above 19200 baud)."""
    if baud > 19200:
        return 1750
    return char_bits * 3500000 // baud


def frame_us(n_bytes, baud, char_bits=11):
    """Time ``n_bytes`` take on the line, in µs."""
    return n_bytes * char_bits * 1000000 // baud


class Master:
    def __init__(self, port, baud=9600, char_bits=11, timeout_ms=300, gap_floor_ms=GAP_FLOOR_MS):
        self.port = port
        self.baud = baud
        self.t35_us = t35_us(baud, char_bits)
        self.char_bits = char_bits
        self.gap_ms = max(gap_floor_ms, (self.t35_us + 999) // 1000)
        self.timeout_ms = timeout_ms
        self.req = bytearray(8)
        self.resp = bytearray(256)
        self.chunk = bytearray(64)
        self.regs = array("H", [0] * MAX_REGS)
        self.n = 0  # bytes of the last answer
        self.last_end = ticks_ms()
        self.requests = 0
        self.errors = 0
        self.line_errors = 0
        self.discarded = 0  # stray bytes found on the line before a request

    # --- frames (no I/O) ----------------------------------------------------------------------
    def build(self, unit, fc, addr, count):
        """The 8-byte read request in ``self.req`` (also returned)."""
        if not 1 <= unit <= 247:
            raise ValueError("unit must be 1..247, got " + str(unit))
        if not 1 <= count <= MAX_REGS:
            raise ValueError("count must be 1..125, got " + str(count))
        r = self.req
        r[0] = unit
        r[1] = fc
        r[2] = addr >> 8
        r[3] = addr & 0xFF
        r[4] = count >> 8
        r[5] = count & 0xFF
        c = crc16(r, 0, 6)
        r[6] = c & 0xFF
        r[7] = c >> 8
        return r

    def parse(self, buf, n, unit, fc, count):
        """Check the answer ``buf[:n]`` to a read of ``count`` registers; fill ``self.regs``."""
        if n < 5:
            return NO_RESPONSE if n == 0 else BAD_FRAME
        if buf[0] != unit:
            return BAD_FRAME
        if buf[1] == fc | 0x80:
            if crc16(buf, 0, 3) != buf[3] | (buf[4] << 8):
                return BAD_CRC
            return buf[2] or BAD_FRAME
        want = 5 + 2 * count
        if n < want:
            return BAD_FRAME
        if crc16(buf, 0, want - 2) != buf[want - 2] | (buf[want - 1] << 8):
            return BAD_CRC
        if buf[1] != fc or buf[2] != 2 * count:
            return BAD_FRAME
        regs = self.regs
        for i in range(count):
            regs[i] = (buf[3 + 2 * i] << 8) | buf[4 + 2 * i]
        return OK

    # --- one transaction ----------------------------------------------------------------------
    def read(self, unit, fc, addr, count):
        """One read transaction; returns OK, an exception code or a negative error.

        An OSError from the line (an unplugged adapter, a pty whose far end went away) is a
        transaction without an answer: NO_RESPONSE, counted in ``line_errors``, never a crash.
        """
        try:
            return self._read(unit, fc, addr, count)
        except OSError:
            self.line_errors += 1
            self.errors += 1
            self.last_end = ticks_ms()
            return NO_RESPONSE

    def _read(self, unit, fc, addr, count):
        port = self.port
        self.build(unit, fc, addr, count)
        while port.readinto(self.chunk):  # a late answer or noise from before: not ours
            self.discarded += 1
        wait = self.t35_us // 1000 + 1 - ticks_diff(ticks_ms(), self.last_end)
        if wait > 0:
            sleep_ms(wait)
        port.write(self.req)
        self.requests += 1
        expected = 5 + 2 * count
        n = 0
        resp = self.resp
        chunk = self.chunk
        limit = self.timeout_ms + frame_us(expected + 8, self.baud, self.char_bits) // 1000
        while port.wait(limit if n == 0 else self.gap_ms):
            k = port.readinto(chunk)
            for i in range(k):
                if n < 256:
                    resp[n] = chunk[i]
                    n += 1
            if n >= 2 and resp[1] & 0x80:
                expected = 5
            if n >= expected:
                break
        self.n = n
        self.last_end = ticks_ms()
        rc = self.parse(resp, n, unit, fc, count)
        if rc != OK:
            self.errors += 1
        return rc


class PtyPort:
    """A pseudo-terminal (or a serial device) on the unix port, raw, non-blocking reads."""

    def __init__(self, path, baud=9600):
        import select
        import termios

        self.f = open(path, "r+b", buffering=0)  # noqa: SIM115 (owned until close)
        fd = self.f.fileno()
        termios.setraw(fd)  # type: ignore[attr-defined]
        a = termios.tcgetattr(fd)
        speed = getattr(termios, "B" + str(baud), None)
        if speed is not None:
            a[4] = a[5] = speed
        a[6][5] = 0  # VTIME: no read timer
        a[6][6] = 0  # VMIN: a read returns what is there, possibly nothing
        termios.tcsetattr(fd, termios.TCSANOW, a)
        self.poller = select.poll()
        self.poller.register(self.f, select.POLLIN)

    def write(self, buf):
        return self.f.write(buf)

    def readinto(self, buf):
        return self.f.readinto(buf) or 0

    def wait(self, ms):
        for _ in self.poller.ipoll(ms):
            return True
        return False

    def close(self):
        self.f.close()


class UartPort:
    """``machine.UART`` on a board; ``de`` is the RS-485 driver-enable pin, if any."""

    def __init__(self, uart_id, baud=9600, parity=None, stop=1, tx=None, rx=None, de=None):
        import select

        import machine

        kw = {"baudrate": baud, "bits": 8, "parity": parity, "stop": stop, "timeout": 0}
        if tx is not None:
            kw["tx"] = machine.Pin(tx)
            kw["rx"] = machine.Pin(rx)
        self.uart = machine.UART(uart_id, **kw)
        self.de = machine.Pin(de, machine.Pin.OUT, value=0) if de is not None else None
        self.poller = select.poll()
        self.poller.register(self.uart, select.POLLIN)

    def write(self, buf):
        de = self.de
        if de is not None:
            de.value(1)
        n = self.uart.write(buf)
        if de is not None:
            self.uart.flush()  # returns when the last stop bit has left the shift register
            de.value(0)
        return n

    def readinto(self, buf):
        return self.uart.readinto(buf) or 0

    def wait(self, ms):
        for _ in self.poller.ipoll(ms):
            return True
        return False

    def close(self):
        self.uart.deinit()
