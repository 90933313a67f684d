"""The flash outbox: append-only segment files of CRC-checked records, durable before use.

Layout of the outbox directory (littlefs on a board, any directory on the unix port)::

    boot                 the boot counter (ASCII), replaced atomically (write boot.tmp, rename)
    s<boot>_<index>      a segment: records of one boot, consecutive sequence numbers
    acks                 append-only list of delivered (or evicted) ranges [boot, first, last]

A record is ``EB len:u16 crc32:u32`` then the payload ``boot:u32 seq:u32 t_ms:u64 kind:u8
flags:u8 event`` (little-endian; ``event`` is the event's CBOR map without ``dt``, as the Pi's
SQLite outbox stores it). ``append`` writes the record and flushes it (``flush`` is fsync on
the unix port and a littlefs sync on a board) before it returns the seq, so an event the caller
was told about survives a power cut. A torn write leaves a record whose length or CRC is wrong:
the scan at start stops that segment there, and since every start opens a new boot (seq from
1) and a new segment, nothing is ever appended after a torn tail and no seq is skipped.

Delivery marks ranges done in ``acks``; a segment whose records are all done is deleted, and
``acks`` is rewritten (tmp + rename) without the ranges of deleted segments. In RAM the store
keeps 5 bytes per stored record (offset, class, state), so it is bounded by ``max_records``.

Lanes and eviction follow the Pi's outbox (edge/outbox.py): alarm-class kinds
(codes.PRIORITY_KINDS) go out first in their own batches; telemetry (codes.EVICTABLE_KINDS)
beyond ``max_telemetry`` queued records is evicted oldest first, each evicted run announced by
a DROPPED event with ``range`` [first, last] stored in the boot it explains; alarms and faults
are never evicted.
"""

import gc
import os
import struct
from array import array
from binascii import crc32

from ...protocol import cbor, codes
from ...protocol.messages import Event
from . import enc

try:
    from micropython import const

    _collect = gc.collect
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x

    def _collect():  # type: ignore[misc]
        # CPython (tests, tools) frees the scan's garbage by reference counting; a full
        # collection per segment there costs seconds in a big test process and frees nothing
        return 0


ALARM_LANE = const(0)
BULK_LANE = const(1)
CLS_PRIORITY = const(0)
CLS_OTHER = const(1)
CLS_TELEMETRY = const(2)
QUEUED = const(0)
IN_FLIGHT = const(1)
DONE = const(2)
SENT = const(4)  # flag: handed out before (a resend carries BF_REPLAYED)
MAGIC = const(0xEB)
ACK_MAGIC = const(0xAC)
HDR = const(7)  # magic, len, crc32
FIXED = const(18)  # boot, seq, t_ms, kind, flags
MAX_BODY = const(4096)
EVICT_FRACTION = const(10)
BF_REPLAYED = const(1)  # codes.BF_REPLAYED
BF_CLOCK_UNSYNCED = const(2)  # codes.BF_CLOCK_UNSYNCED


class OutboxError(Exception):
    pass


def class_of(kind):
    if kind in codes.PRIORITY_KINDS:
        return CLS_PRIORITY
    if kind in codes.EVICTABLE_KINDS:
        return CLS_TELEMETRY
    return CLS_OTHER


def event_body(ev):
    """An event as stored: its wire map without ``dt`` (relative to a batch's t0), as CBOR."""
    m = ev.to_map()
    del m[1]
    return cbor.dumps(m)


def _join(d, name):
    return d + "/" + name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _sync(f):
    f.flush()
    fsync = getattr(os, "fsync", None)  # CPython: flush does not reach the disk by itself
    if fsync is not None:
        fsync(f.fileno())


class _Seg:
    """One segment file: records ``first .. first + n - 1`` of ``boot``."""

    def __init__(self, name, boot, index):
        self.name = name
        self.boot = boot
        self.index = index
        self.first = 0
        self.offs = array("I")
        self.cls = bytearray()
        self.state = bytearray()
        self.size = 0

    def add(self, seq, off, cls, state):
        if not self.offs:
            self.first = seq
        self.offs.append(off)
        self.cls.append(cls)
        self.state.append(state)

    @property
    def n(self):
        return len(self.offs)

    def live(self):
        for s in self.state:  # noqa: SIM110 (a generator would allocate)
            if s & 3 != DONE:
                return True
        return False


class Outbox:
    def __init__(self, path, max_telemetry=512, seg_records=64, new_boot=True):
        self.dir = path
        self.max_telemetry = max_telemetry
        self.seg_records = seg_records
        try:
            os.mkdir(path)
        except OSError:
            pass
        self.segs = []  # type: list  # ordered by (boot, index)
        self.torn = 0  # records found damaged at start (torn writes)
        self.dropped = 0
        self.appended = 0
        self._load()
        last = 0
        for s in self.segs:
            last = max(last, s.boot)
        stored = self._read_boot()
        self.boot = max(stored, last)
        if new_boot or self.boot == 0:
            self.boot += 1
            self._write_boot(self.boot)
        self.seq = 0  # last seq of this boot
        for s in self.segs:
            if s.boot == self.boot and s.n:
                self.seq = max(self.seq, s.first + s.n - 1)
        self.cur = None  # the open segment of this boot (file, _Seg)
        self.telemetry = 0
        for s in self.segs:
            for i in range(s.n):
                if s.cls[i] == CLS_TELEMETRY and s.state[i] & 3 != DONE:
                    self.telemetry += 1
        self._gc()

    # --- boot counter ------------------------------------------------------------------------
    def _read_boot(self):
        try:
            with open(_join(self.dir, "boot")) as f:
                return int(f.read().strip() or "0")
        except (OSError, ValueError):
            return 0

    def _write_boot(self, boot):
        tmp = _join(self.dir, "boot.tmp")
        with open(tmp, "w") as f:
            f.write(str(boot))
            _sync(f)
        os.rename(tmp, _join(self.dir, "boot"))

    # --- start: scan -------------------------------------------------------------------------
    def _load(self):
        names = []
        for name in os.listdir(self.dir):
            if name.startswith("s") and "_" in name:
                try:
                    b, i = name[1:].split("_")
                    names.append((int(b), int(i), name))
                except ValueError:
                    continue
        names.sort()
        done = self._read_acks()
        for b, i, name in names:
            seg = _Seg(name, b, i)
            self._scan(seg, done)
            _collect()  # the unix port's automatic collection misses the scan's garbage
            if seg.n:
                self.segs.append(seg)
            else:
                self._remove(name)

    def _read_acks(self):
        ranges = []  # type: list
        try:
            with open(_join(self.dir, "acks"), "rb") as f:
                data = f.read()
        except OSError:
            return ranges
        at = 0
        while at + 17 <= len(data):
            if data[at] != ACK_MAGIC:
                break
            body = data[at + 5 : at + 17]
            if crc32(body) != struct.unpack("<I", data[at + 1 : at + 5])[0]:
                break  # a torn tail: ranges after it were never acknowledged to anyone
            ranges.append(struct.unpack("<III", body))
            at += 17
        return ranges

    def _scan(self, seg, done):
        try:
            f = open(_join(self.dir, seg.name), "rb")  # noqa: SIM115
        except OSError:
            return
        off = 0
        with f:
            while True:
                hdr = f.read(HDR)
                if len(hdr) < HDR:
                    break
                n = hdr[1] | (hdr[2] << 8)
                if hdr[0] != MAGIC or n < FIXED or n > FIXED + MAX_BODY:
                    self.torn += 1
                    break
                payload = f.read(n)
                if len(payload) < n or crc32(payload) != struct.unpack("<I", hdr[3:7])[0]:
                    self.torn += 1
                    break
                boot, seq, _t, kind, _fl = struct.unpack("<IIQBB", payload[:FIXED])
                if boot != seg.boot or (seg.n and seq != seg.first + seg.n):
                    self.torn += 1
                    break
                st = QUEUED
                for r in done:
                    if r[0] == boot and r[1] <= seq <= r[2]:
                        st = DONE
                        break
                seg.add(seq, off, class_of(kind), st)
                off += HDR + n
        seg.size = off

    # --- appending ---------------------------------------------------------------------------
    def _record(self, boot, seq, ev, t_ms, unsynced):
        body = event_body(ev)
        if len(body) > MAX_BODY:
            raise OutboxError("event of " + str(len(body)) + " bytes over " + str(MAX_BODY))
        payload = struct.pack("<IIQBB", boot, seq, t_ms, ev.kind, 1 if unsynced else 0) + body
        n = len(payload)
        hdr = struct.pack("<BHI", MAGIC, n, crc32(payload))
        return hdr + payload

    def _open_segment(self, boot, index):
        name = f"s{boot:08d}_{index:04d}"
        seg = _Seg(name, boot, index)
        self.segs.append(seg)
        self.segs.sort(key=lambda s: (s.boot, s.index))
        return seg

    def _write(self, seg, rec):
        with open(_join(self.dir, seg.name), "ab") as f:
            f.write(rec)
            _sync(f)

    def append(self, ev, t_ms, unsynced=False):
        """Store one event durably; returns its seq (this boot)."""
        cls = class_of(ev.kind)
        if cls == CLS_TELEMETRY and self.telemetry + 1 > self.max_telemetry:
            self._evict(self.telemetry + 1 - self.max_telemetry, t_ms, unsynced)
        seg = self.cur
        if seg is None or seg.n >= self.seg_records:
            last = -1
            for s in self.segs:
                if s.boot == self.boot:
                    last = max(last, s.index)
            seg = self.cur = self._open_segment(self.boot, last + 1)
        seq = self.seq + 1
        rec = self._record(self.boot, seq, ev, t_ms, unsynced)
        self._write(seg, rec)
        seg.add(seq, seg.size, cls, QUEUED)
        seg.size += len(rec)
        self.seq = seq
        self.appended += 1
        if cls == CLS_TELEMETRY:
            self.telemetry += 1
        return seq

    def _evict(self, need, t_ms, unsynced):
        """Mark the oldest queued telemetry done; announce each run with a DROPPED event."""
        n = max(need, self.max_telemetry // EVICT_FRACTION, 1)
        runs = []  # type: list  # [boot, first, last]
        for s in self.segs:
            for i in range(s.n):
                if n == 0:
                    break
                if s.cls[i] == CLS_TELEMETRY and s.state[i] & 3 == QUEUED:
                    seq = s.first + i
                    if runs and runs[-1][0] == s.boot and runs[-1][2] + 1 == seq:
                        runs[-1][2] = seq
                    else:
                        runs.append([s.boot, seq, seq])
                    n -= 1
        for b, first, last in runs:
            ev = Event(codes.DROPPED, 0, 0, range=[first, last], code=100)  # outbox_eviction
            if b == self.boot:
                seg = self.cur
                if seg is None or seg.n >= self.seg_records:
                    idx = -1
                    for s in self.segs:
                        if s.boot == b:
                            idx = max(idx, s.index)
                    seg = self.cur = self._open_segment(b, idx + 1)
                seq = self.seq + 1
                self.seq = seq
            else:  # the announcement belongs to the boot it explains: that boot's next seq
                idx, seq = -1, 0
                for s in self.segs:
                    if s.boot == b:
                        idx = max(idx, s.index)
                        seq = max(seq, s.first + s.n)
                seg = self._open_segment(b, idx + 1)
            rec = self._record(b, seq, ev, t_ms, unsynced)
            self._write(seg, rec)  # announce first: a crash now re-sends, never loses silently
            seg.add(seq, seg.size, CLS_OTHER, QUEUED)
            seg.size += len(rec)
            self._mark(b, first, last, True)
            self.dropped += last - first + 1

    # --- delivery ----------------------------------------------------------------------------
    def next_batch(self, lane, gw, max_events=64):
        """The next queued run of ``lane`` as ``(lane, boot, first, last, batch bytes)``, or
        None; the bytes are ``messages.encode_batch`` of that run (enc.py)."""
        for s in self.segs:
            for i in range(s.n):
                st = s.state[i]
                if st & 3 != QUEUED or (s.cls[i] == CLS_PRIORITY) != (lane == ALARM_LANE):
                    continue
                j = i
                while (
                    j + 1 < s.n
                    and j + 1 - i < max_events
                    and s.state[j + 1] & 3 == QUEUED
                    and (s.cls[j + 1] == CLS_PRIORITY) == (lane == ALARM_LANE)
                ):
                    j += 1
                return self._batch(s, i, j, lane, gw)
        return None

    def _batch(self, s, i, j, lane, gw):
        # Two passes over the records: t0 and the flags first (the fixed part of each), then
        # each stored event spliced into the batch bytes with its dt (enc.py): nothing decoded.
        replayed = s.boot != self.boot
        t0 = -1
        unsynced = False
        with open(_join(self.dir, s.name), "rb") as f:
            for k in range(i, j + 1):
                f.seek(s.offs[k] + HDR)
                fx = f.read(FIXED)
                t = struct.unpack_from("<Q", fx, 8)[0]
                if t0 < 0 or t < t0:
                    t0 = t
                if fx[17] & 1:
                    unsynced = True
                if s.state[k] & SENT:
                    replayed = True
                s.state[k] = IN_FLIGHT | SENT
            flags = (BF_CLOCK_UNSYNCED if unsynced else 0) | (BF_REPLAYED if replayed else 0)
            first = s.first + i
            buf = enc.batch(gw, s.boot, first, t0, j + 1 - i, flags)
            for k in range(i, j + 1):
                f.seek(s.offs[k])
                hdr = f.read(HDR)
                p = f.read(hdr[1] | (hdr[2] << 8))
                enc.event(buf, p, struct.unpack_from("<Q", p, 8)[0] - t0, FIXED)
        return (lane, s.boot, first, s.first + j, enc.end(buf, flags))

    def _mark(self, boot, first, last, evicted=False):
        rec = struct.pack("<III", boot, first, last)
        with open(_join(self.dir, "acks"), "ab") as f:
            f.write(struct.pack("<BI", ACK_MAGIC, crc32(rec)) + rec)
            _sync(f)
        for s in self.segs:
            if s.boot != boot:
                continue
            for i in range(s.n):
                seq = s.first + i
                if first <= seq <= last and s.state[i] & 3 != DONE:
                    if s.cls[i] == CLS_TELEMETRY:
                        self.telemetry -= 1
                    s.state[i] = DONE
        if not evicted:
            self._gc()

    def ack(self, boot, first, last):
        """Records ``first..last`` of ``boot`` are delivered: forget them, durably."""
        self._mark(boot, first, last)

    def ack_upto(self, boot, hwm):
        """The cloud's Ack: every record of ``boot`` with seq <= ``hwm`` is stored there. Marks
        them delivered (one acks record, none when nothing changes); returns how many."""
        lo, n = 0, 0
        for s in self.segs:
            if s.boot != boot:
                continue
            for i in range(min(s.n, hwm - s.first + 1)):
                if s.state[i] & 3 != DONE:
                    if not lo:
                        lo = s.first + i
                    n += 1
        if n:
            self._mark(boot, lo, hwm)
        return n

    def resend_from(self, boot, seq):
        """Queue again every stored record from ``(boot, seq)`` on (the cloud asks, or did not
        ack in time); they say replayed when sent. Returns how many."""
        n = 0
        for s in self.segs:
            if s.boot < boot:
                continue
            st = s.state
            for i in range(s.n):
                if st[i] & 3 != DONE and (s.boot > boot or s.first + i >= seq):
                    st[i] = QUEUED | SENT
                    n += 1
        return n

    def requeue(self):
        """The link dropped: everything in flight is queued again (and will say replayed)."""
        for s in self.segs:
            st = s.state
            for i in range(s.n):
                if st[i] & 3 == IN_FLIGHT:
                    st[i] = QUEUED | SENT

    def _gc(self):
        """Delete segments with nothing left to send; rewrite ``acks`` for what remains."""
        keep = []
        gone = False
        for s in self.segs:
            if s.live() or s is self.cur:
                keep.append(s)
            else:
                self._remove(s.name)
                gone = True
        self.segs = keep
        if not gone:
            return
        lines = []
        for s in keep:  # the done runs of the remaining segments
            i = 0
            while i < s.n:
                if s.state[i] & 3 == DONE:
                    j = i
                    while j + 1 < s.n and s.state[j + 1] & 3 == DONE:
                        j += 1
                    rec = struct.pack("<III", s.boot, s.first + i, s.first + j)
                    lines.append(struct.pack("<BI", ACK_MAGIC, crc32(rec)) + rec)
                    i = j + 1
                else:
                    i += 1
        tmp = _join(self.dir, "acks.tmp")
        with open(tmp, "wb") as f:
            for rec in lines:
                f.write(rec)
            _sync(f)
        os.rename(tmp, _join(self.dir, "acks"))

    def _remove(self, name):
        try:
            os.remove(_join(self.dir, name))
        except OSError:
            pass

    # --- inspection --------------------------------------------------------------------------
    def depth(self):
        n = 0
        for s in self.segs:
            for st in s.state:
                if st & 3 != DONE:
                    n += 1
        return n

    def stored(self):
        """[(boot, seq, kind class, state)] of every record not done (tests, allocates)."""
        out = []
        for s in self.segs:
            for i in range(s.n):
                if s.state[i] & 3 != DONE:
                    out.append((s.boot, s.first + i, s.cls[i], s.state[i] & 3))
        return out

    def close(self):
        self.cur = None
