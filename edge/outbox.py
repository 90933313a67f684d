"""The durable outbox: every event is stored before anything else happens to it.

SQLite in WAL mode. The sequence number is allocated in the same transaction that stores the
event (``boots.last_seq`` is bumped and the row inserted, then one COMMIT), so a ``kill -9`` at
any instant leaves either both or neither: no lost event, no hole. Each start opens a new boot
(the counter is persisted); seq starts at 1 per boot.

A record's life: *queued* -> *in flight* (handed to the uplink in a batch) -> *acknowledged*
(deleted: after the broker's PUBACK, or after the cloud's Ack high-water mark when configured).
In flight is a volatile state: after a restart or a lost connection every stored record is
queued again, and batches sent a second time carry BF_REPLAYED. Two lanes hand out batches:

* the alarm lane: PRIORITY_KINDS (fire alarm, fault, ...), always asked first, so a new fire
  alarm is published before any backlog of telemetry;
* the bulk lane: everything else, oldest first.

A batch holds a contiguous run of seqs of one boot (Batch.seq0 + i), so batches stop where the
other lane's records sit. Telemetry (EVICTABLE_KINDS) beyond ``max_telemetry`` records is
evicted oldest first and each evicted run is announced by a DROPPED event ``range`` [first,
last] in the same boot; alarms and faults are never evicted.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from emberlink.protocol import cbor, codes
from emberlink.protocol.messages import Batch, Event, event_from_map

from .errors import OutboxError

ALARM_LANE, BULK_LANE = 0, 1
CLASS_PRIORITY, CLASS_OTHER, CLASS_TELEMETRY = 0, 1, 2
CLASS_NAMES = {CLASS_PRIORITY: "priority", CLASS_OTHER: "other", CLASS_TELEMETRY: "telemetry"}
DT_MAX = 0xFFFFFFFF  # messages: event dt is a u32 of ms after t0
EVICT_FRACTION = 10  # evict a tenth of the cap at once: few, long DROPPED ranges

_SCHEMA = """
CREATE TABLE IF NOT EXISTS boots (boot INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,
                                  started_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind INTEGER NOT NULL, lane INTEGER NOT NULL, cls INTEGER NOT NULL,
    t_ms INTEGER NOT NULL, unsynced INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (boot, seq));
CREATE INDEX IF NOT EXISTS events_lane ON events (lane, boot, seq);
CREATE INDEX IF NOT EXISTS events_cls ON events (cls, boot, seq);
"""

Key = tuple[int, int]  # (boot, seq)


def class_of(kind: int) -> int:
    if kind in codes.PRIORITY_KINDS:
        return CLASS_PRIORITY
    if kind in codes.EVICTABLE_KINDS:
        return CLASS_TELEMETRY
    return CLASS_OTHER


@dataclass(frozen=True)
class Pending:
    """A batch handed to the uplink and the keys it carries."""

    lane: int
    boot: int
    seqs: tuple[int, int]  # first, last
    batch: Batch

    @property
    def keys(self) -> list[Key]:
        return [(self.boot, s) for s in range(self.seqs[0], self.seqs[1] + 1)]


class Outbox:
    """The store. Not thread-safe: one owner (the gateway's event loop, or one writer process)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_telemetry: int = 200_000,
        synchronous: str = "full",
        new_boot: bool = True,
    ) -> None:
        self.path = Path(path)
        self.max_telemetry = max_telemetry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self.db.executescript(_SCHEMA)
            self.boot = self._open_boot() if new_boot else self._current_boot()
            (self.telemetry_rows,) = self.db.execute(
                "SELECT COUNT(*) FROM events WHERE cls=?", (CLASS_TELEMETRY,)
            ).fetchone()
        except sqlite3.Error as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from e
        self._cursor: dict[int, Key] = {ALARM_LANE: (0, 0), BULK_LANE: (0, 0)}
        self._sent_before: Key = (self.boot, 0)  # rows at or below were possibly sent already
        self.dropped = 0  # telemetry records evicted since start
        self.appended = 0

    # --- boots and sequence numbers ------------------------------------------------------------
    def _open_boot(self) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT MAX(boot) FROM boots").fetchone()
            boot = (row[0] or 0) + 1
            self.db.execute(
                "INSERT INTO boots (boot, last_seq, started_ms) VALUES (?, 0, ?)",
                (boot, int(time.time() * 1000)),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return int(boot)

    def _current_boot(self) -> int:
        row = self.db.execute("SELECT MAX(boot) FROM boots").fetchone()
        if row[0] is None:
            return self._open_boot()
        return int(row[0])

    def last_seq(self, boot: int | None = None) -> int:
        row = self.db.execute(
            "SELECT last_seq FROM boots WHERE boot=?", (self.boot if boot is None else boot,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _alloc(self, boot: int, n: int) -> int:
        """First of ``n`` new seqs of ``boot``; call inside a transaction."""
        row = self.db.execute(
            "UPDATE boots SET last_seq = last_seq + ? WHERE boot=? RETURNING last_seq", (n, boot)
        ).fetchone()
        return int(row[0]) - n + 1

    # --- writing -------------------------------------------------------------------------------
    def append(self, event: Event, t_ms: int, unsynced: bool = False) -> int:
        """Store one event; returns its seq once it is durable."""
        return self.append_many([(event, t_ms)], unsynced)[0]

    def append_many(self, items: list[tuple[Event, int]], unsynced: bool = False) -> list[int]:
        """Store events in one transaction; returns their seqs (consecutive)."""
        if not items:
            return []
        rows = []
        n_tel = 0
        for ev, t in items:
            m = ev.to_map()
            del m[1]  # dt is relative to a batch's t0: rebuilt when the batch is
            cls = class_of(ev.kind)
            n_tel += cls == CLASS_TELEMETRY
            lane = ALARM_LANE if cls == CLASS_PRIORITY else BULK_LANE
            rows.append((ev.kind, lane, cls, int(t), int(unsynced), cbor.dumps(m)))
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if n_tel and self.telemetry_rows + n_tel > self.max_telemetry:
                    self._evict(self.telemetry_rows + n_tel - self.max_telemetry, int(unsynced))
                first = self._alloc(self.boot, len(rows))
                self.db.executemany(
                    "INSERT INTO events (boot, seq, kind, lane, cls, t_ms, unsynced, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(self.boot, first + i, *r) for i, r in enumerate(rows)],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise OutboxError(f"cannot store {len(rows)} events: {e}") from e
        self.telemetry_rows += n_tel
        self.appended += len(rows)
        return list(range(first, first + len(rows)))

    def _evict(self, need: int, unsynced: int) -> None:
        """Delete the oldest queued telemetry and store a DROPPED event per run; in a txn."""
        n = max(need, self.max_telemetry // EVICT_FRACTION, 1)
        cur = self._cursor[BULK_LANE]
        keys = self.db.execute(
            "SELECT boot, seq FROM events WHERE cls=? AND (boot, seq) > (?, ?) "
            "ORDER BY boot, seq LIMIT ?",
            (CLASS_TELEMETRY, cur[0], cur[1], n),
        ).fetchall()
        if not keys:
            return  # everything evictable is in flight: run over the cap until it is acked
        self.db.executemany("DELETE FROM events WHERE boot=? AND seq=?", keys)
        runs: list[list[int]] = []  # [boot, first, last]
        for b, s in keys:
            if runs and runs[-1][0] == b and runs[-1][2] + 1 == s:
                runs[-1][2] = s
            else:
                runs.append([b, s, s])
        now = int(time.time() * 1000)
        for b, first, last in runs:
            ev = Event(codes.DROPPED, 0, 0, range=[first, last], code=100)
            m = ev.to_map()
            del m[1]
            seq = self._alloc(b, 1)  # the announcement belongs to the boot it explains
            self.db.execute(
                "INSERT INTO events (boot, seq, kind, lane, cls, t_ms, unsynced, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (b, seq, codes.DROPPED, BULK_LANE, CLASS_OTHER, now, unsynced, cbor.dumps(m)),
            )
        self.telemetry_rows -= len(keys)
        self.dropped += len(keys)

    # --- reading batches -----------------------------------------------------------------------
    def next_batch(self, lane: int, gw: int, max_events: int = 256, ackd: int | None = None
                   ) -> Pending | None:  # fmt: skip
        """The next queued run of ``lane`` as a batch (now in flight), or None."""
        cur = self._cursor[lane]
        rows = self.db.execute(
            "SELECT boot, seq, t_ms, unsynced, body FROM events WHERE lane=? AND (boot, seq) > "
            "(?, ?) ORDER BY boot, seq LIMIT ?",
            (lane, cur[0], cur[1], max_events),
        ).fetchall()
        if not rows:
            return None
        boot, seq0 = rows[0][0], rows[0][1]
        run = [rows[0]]
        lo = hi = rows[0][2]
        for r in rows[1:]:
            if r[0] != boot or r[1] != run[-1][1] + 1:
                break
            lo, hi = min(lo, r[2]), max(hi, r[2])
            if hi - lo > DT_MAX:
                break  # dt is a u32 of ms: a run spanning more than ~49 days is split
            run.append(r)
        t0 = min(r[2] for r in run)
        events = []
        for r in run:
            m = cbor.loads(r[4])
            m[1] = r[2] - t0
            events.append(event_from_map(m))
        last = run[-1][1]
        flags = 0
        if any(r[3] for r in run):
            flags |= codes.BF_CLOCK_UNSYNCED
        if boot < self.boot or (boot, seq0) <= self._sent_before:
            flags |= codes.BF_REPLAYED
        self._cursor[lane] = (boot, last)
        batch = Batch(0 if gw is None else gw, boot, seq0, t0, events, ackd, flags)
        return Pending(lane, boot, (seq0, last), batch)

    def requeue_all(self) -> None:
        """Connection lost: every record not yet acknowledged is queued again."""
        hi = max(self._cursor.values())
        self._sent_before = max(self._sent_before, hi)
        self._cursor = {ALARM_LANE: (0, 0), BULK_LANE: (0, 0)}

    def resend_from(self, boot: int, seq: int, lanes: tuple[int, ...] | None = None) -> None:
        """Queue again every stored record of ``boot`` from ``seq`` on (the cloud asks), in
        ``lanes`` only when given (a late alarm batch does not replay the telemetry)."""
        self._sent_before = max(self._sent_before, max(self._cursor.values()))
        for lane in self._cursor if lanes is None else lanes:
            self._cursor[lane] = min(self._cursor[lane], (boot, max(seq - 1, 0)))

    def acknowledge(self, pending: Pending) -> int:
        """Delete the records of a batch (PUBACK, or the cloud's ack covers it)."""
        return self._delete(
            "DELETE FROM events WHERE boot=? AND seq BETWEEN ? AND ? AND lane=?",
            (pending.boot, pending.seqs[0], pending.seqs[1], pending.lane),
        )

    def acknowledge_upto(self, boot: int, hwm: int) -> int:
        """The cloud's Ack: every record of ``boot`` with seq <= hwm is durably stored there."""
        return self._delete("DELETE FROM events WHERE boot=? AND seq<=?", (boot, hwm))

    def _delete(self, sql: str, args: tuple[int, ...]) -> int:
        try:
            before = self.db.total_changes
            n_tel = 0
            self.db.execute("BEGIN IMMEDIATE")
            try:
                where = sql.split(" WHERE ", 1)[1]
                (n_tel,) = self.db.execute(
                    f"SELECT COUNT(*) FROM events WHERE cls={CLASS_TELEMETRY} AND {where}", args
                ).fetchone()
                self.db.execute(sql, args)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise OutboxError(f"cannot delete acknowledged records: {e}") from e
        self.telemetry_rows -= n_tel
        return int(self.db.total_changes - before)

    # --- inspection ----------------------------------------------------------------------------
    def state_of(self, boot: int, seq: int) -> str:
        """queued | in_flight | acknowledged (gone) for one record."""
        row = self.db.execute(
            "SELECT lane FROM events WHERE boot=? AND seq=?", (boot, seq)
        ).fetchone()
        if row is None:
            return "acknowledged"
        return "in_flight" if (boot, seq) <= self._cursor[row[0]] else "queued"

    def depth(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def stats(self, now_ms: int | None = None) -> dict[str, tuple[int, int]]:
        """(depth, oldest age in s) per class name."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        out = {name: (0, 0) for name in CLASS_NAMES.values()}
        for cls, n, oldest in self.db.execute(
            "SELECT cls, COUNT(*), MIN(t_ms) FROM events GROUP BY cls"
        ):
            out[CLASS_NAMES[cls]] = (int(n), max(0, (now - int(oldest)) // 1000))
        return out

    def stored_keys(self) -> list[Key]:
        return [(int(b), int(s)) for b, s in self.db.execute(
            "SELECT boot, seq FROM events ORDER BY boot, seq")]  # fmt: skip

    def close(self) -> None:
        self.db.close()
