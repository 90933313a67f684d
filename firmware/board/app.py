"""The board's main loop: poll -> detect -> store -> forward, one thread, no asyncio.

``App(cfg)`` builds the buses (RTU master over a UART or a pty), the points and their
detectors, the flash outbox and the MQTT client. ``run()`` repeats:

1. the most urgent due read (status blocks before telemetry, then the most overdue), one RTU
   transaction; the answer updates the points, a failure counts towards the device's down
   threshold (``down_after``), after which one COMMS event (active, no_response 55 or
   bad_frame 56) is stored, and one COMMS normal when it answers again;
2. the uplink: connect with backoff (birth stored and published retained on ``state``, the
   will a death with seq0 = 0), the session's keepalive and retransmissions, then batches from
   the outbox, alarm lane first with a publish slot of its own; a record is acknowledged in
   the outbox on its PUBACK; commands (rebirth, time sync) answered on ``res``;
3. the heartbeat (HEALTH events, gateway and per device) every ``heartbeat_s``, a status file,
   the watchdog fed while reads and the outbox make progress, the heap high-water mark.

Every event is stored before anything else happens to it, so a power cut loses nothing the
outbox has returned a seq for. Messages are built with protocol/ exactly as the Pi builds
them, so the cloud decodes both with the same code.
"""

import gc
import json

from ...protocol import cbor, codes, messages, topics, wire
from ...protocol.errors import ProtocolError
from ...protocol.messages import Batch, Event
from . import modbus_rtu, mqtt
from .client import Client
from .compat import MICROPYTHON, sleep_ms, ticks_add, ticks_diff, ticks_ms
from .hw import Clock, Watchdog
from .outbox import ALARM_LANE, BULK_LANE, Outbox
from .points import Pt, Read, src_of

VERSION = "0.1.0"
PLATFORM = 2 if MICROPYTHON else 1  # codes.PLATFORM_NAMES
CAP_RTU = 1
CAP_MAC = 4
CAP_SERIES = 32
STATUS_PRIO = 0
TELEMETRY_PRIO = 1
BACKOFF_MAX_MS = 60000  # a down device is probed at least once a minute
GC_EVERY_MS = 1000


def log(*args):
    print("emberlink:", *args)


class Device:
    def __init__(self, d, bus, prof):
        self.name = d["name"]
        self.unit = d["unit"]
        self.bus = bus
        self.prof = prof
        self.src = src_of(bus["id"], d["unit"], 0)
        self.fails = 0
        self.down = False
        self.backoff = 0
        self.polls_ok = 0
        self.polls_failed = 0
        self.exc = 0
        self.pts = []


class App:
    def __init__(self, cfg, port_factory=None):
        self.cfg = cfg
        self.gw = cfg["gw"]
        self.clock = Clock(cfg["clock_synced"])
        self.wdt = None
        self.started = ticks_ms()
        o = cfg["outbox"]
        try:
            import os

            os.mkdir(cfg["data_dir"])
        except OSError:
            pass  # exists
        self.outbox = Outbox(cfg["data_dir"] + "/outbox", o["max_telemetry"], o["seg_records"])
        self.batch_max = o["batch_max_events"]
        self.warnings = []  # type: list
        self.out = []  # type: list  # the detectors' (t, Event) scratch list
        self.emit_bound = self.emit
        self.masters = {}
        self.devices = []
        self.reads = []
        series_ms = cfg["series_s"] * 1000
        for b in cfg["buses"]:
            port = (port_factory or _port)(b)
            self.masters[b["id"]] = modbus_rtu.Master(
                port, b["baud"], b["char_bits"], b["timeout_ms"]
            )
        for d in cfg["devices"]:
            bus = next(b for b in cfg["buses"] if b["id"] == d["bus"])
            prof = cfg["profiles"][d["profile"]]
            dev = Device(d, bus, prof)
            self.devices.append(dev)
            pts = prof["points"]
            by_class = {
                "status": d["status_ms"] or prof["poll"]["status_ms"],
                "telemetry": d["telemetry_ms"] or prof["poll"]["telemetry_ms"],
            }
            built = [
                Pt(p, prof, bus["id"], dev.unit, by_class[p["class"]], series_ms, self.warnings)
                for p in pts
            ]
            dev.pts = built
            for block in prof["reads"]:
                prio = STATUS_PRIO if block["class"] == "status" else TELEMETRY_PRIO
                r = Read(
                    dev, block, prio, by_class[block["class"]], [built[i] for i in block["points"]]
                )
                self.reads.append(r)
        for w in self.warnings:
            log("warning:", w)
        _forget("emberlink.firmware.config")  # the detector builder: 20 KB of heap, used once
        _forget("emberlink.firmware.board.conf")
        m = cfg["mqtt"]
        self.mac_key = m["mac_key"]
        death = Batch(self.gw, self.outbox.boot, 0, self.clock.now_ms(),
                      [Event(codes.DEATH, 0, 0, code=102)])  # fmt: skip
        self.client = Client(
            m["host"],
            m["port"],
            m["client_id"],
            m["keepalive_s"],
            topics.topic(self.gw, "state"),
            wire.seal(death, self.mac_key),
            m["username"],
            m["password"],
            m["retry_ms"],
            4,
            self._on_message,
            self._on_puback,
        )
        self.t_ev = topics.topic(self.gw, "ev")
        self.t_state = topics.topic(self.gw, "state")
        self.t_res = topics.topic(self.gw, "res")
        self.pending = {}  # pid -> (lane, boot, first, last)
        self.next_connect = ticks_ms()
        self.backoff = m["backoff_min_ms"]
        self.events = 0
        self.published = 0
        self.progress = 0
        self.faults = 0
        self.peak_heap = 0
        self.last_gc = ticks_ms()
        self.last_hb = ticks_ms()
        self.caps = CAP_RTU | CAP_SERIES | (CAP_MAC if self.mac_key else 0)

    # --- events in ---------------------------------------------------------------------------
    def emit(self, ev, t_ticks):
        """Store one event durably (seq allocated) before anything else happens to it."""
        self.outbox.append(ev, self.clock.at(t_ticks), not self.clock.synced)
        self.events += 1

    # --- polling -----------------------------------------------------------------------------
    def _next_read(self, now):
        best = None
        for r in self.reads:
            if ticks_diff(now, r.due) < 0:
                continue
            if (
                best is None
                or r.prio < best.prio
                or (r.prio == best.prio and ticks_diff(r.due, best.due) < 0)
            ):
                best = r
        return best

    def poll(self, r, now):
        """One read transaction and what follows from it."""
        dev = r.dev
        m = self.masters[dev.bus["id"]]
        rc = m.read(dev.unit, r.fc, r.address, r.count)
        t = ticks_ms()
        r.due = ticks_add(now, r.period)
        self.progress += 1
        if rc < 0:
            self._failed(dev, r, rc, t)
            return rc
        dev.polls_ok += 1
        dev.fails = 0
        if dev.down:
            dev.down = False
            log(dev.name, "answers again")
            self.emit(Event(codes.COMMS, 0, dev.src, state=codes.NORMAL,
                            part=dev.prof["part"] or None), t)  # fmt: skip
            for x in self.reads:
                if x.dev is dev:
                    x.due = t
        if rc > 0:  # a Modbus exception: alive, but the profile does not fit the device
            if not dev.exc:
                dev.exc = rc
                self.emit(self._devfault(dev, codes.ACTIVE), t)
            return rc
        if dev.exc:
            dev.exc = 0
            self.emit(self._devfault(dev, codes.NORMAL), t)
        regs = m.regs
        emit = self.emit_bound  # made once: reading self.emit would allocate a bound method
        out = self.out
        for p in r.pts:
            p.update(regs, 0, t, emit, out)
        return 0

    def _devfault(self, dev, state):
        return Event(codes.FAULT, 0, dev.src, state=state, code=57,
                     sys=dev.prof["sys"] or None, part=dev.prof["part"] or None)  # fmt: skip

    def _failed(self, dev, r, rc, t):
        dev.polls_failed += 1
        dev.fails += 1
        if dev.down:
            dev.backoff = min(dev.backoff * 2, BACKOFF_MAX_MS)
            r.due = ticks_add(t, dev.backoff)
            return
        if dev.fails >= dev.bus["down_after"]:
            dev.down = True
            dev.backoff = r.period
            code = modbus_rtu.CONDITION[rc]
            log(dev.name, "down after", dev.fails, "failures:", modbus_rtu.ERROR_NAMES[rc])
            self.emit(Event(codes.COMMS, 0, dev.src, state=codes.ACTIVE, code=code,
                            part=dev.prof["part"] or None), t)  # fmt: skip
            for p in dev.pts:
                p.stale()

    # --- uplink ------------------------------------------------------------------------------
    def _on_puback(self, pid):
        p = self.pending.pop(pid, None)
        if p is not None:
            self.outbox.ack(p[1], p[2], p[3])
            self.published += 1
            self.progress += 1

    def _on_message(self, topic, payload):
        try:
            leaf = topics.parse(topic)[1]
            if leaf != "cmd":
                return
            cmd = messages.command_from_map(cbor.loads(payload))
        except (ProtocolError, ValueError) as e:
            log("refused message on", topic, ":", e)
            return
        if cmd.gw != self.gw:
            return
        args = cmd.args or {}
        res, note = messages.RES_OK, None
        if cmd.op == messages.OP_REBIRTH:
            self.birth()
            self.heartbeat()
        elif cmd.op == messages.OP_TIME_SYNC:
            if not isinstance(args.get(0), int) or args[0] <= 0:
                res, note = messages.RES_BAD_ARGS, "args {0: UTC ms} required"
            else:
                self.clock.sync(args[0])
        else:
            res, note = messages.RES_UNKNOWN_OP, "op " + str(cmd.op) + " not supported"
        self.client.publish(
            self.t_res, messages.encode(messages.Result(self.gw, cmd.id, res, note))
        )

    def birth(self):
        info = {0: VERSION, 1: PLATFORM, 2: self.caps, 3: self.cfg["heartbeat_s"],
                4: self.cfg["serial"]}  # fmt: skip
        ev = Event(codes.BIRTH, 0, 0, info=info)
        t = self.clock.now_ms()
        seq = self.outbox.append(ev, t, not self.clock.synced)
        b = Batch(self.gw, self.outbox.boot, seq, t, [ev])
        self.client.publish(self.t_state, wire.seal(b, self.mac_key), retain=True)

    def _drop_link(self, why):
        log("uplink:", why)
        self.client.close()
        for pid in self.pending:
            self.client.forget(pid)
        self.pending = {}
        self.outbox.requeue()
        self.next_connect = ticks_add(ticks_ms(), self.backoff)
        self.backoff = min(self.backoff * 2, self.cfg["mqtt"]["backoff_max_ms"])

    def uplink(self, wait_ms):
        c = self.client
        now = ticks_ms()
        if not c.connected:
            if ticks_diff(now, self.next_connect) < 0:
                if wait_ms > 0:
                    sleep_ms(min(wait_ms, ticks_diff(self.next_connect, now)))
                return
            try:
                c.inflight = {}  # the outbox sends its records again itself
                c.connect(5000)
                c.subscribe(topics.topic(self.gw, "cmd"))
                self.birth()
            except (OSError, mqtt.MQTTError) as e:
                self._drop_link("connect: " + str(e))
                return
            log("connected to", self.cfg["mqtt"]["host"], self.cfg["mqtt"]["port"])
            self.backoff = self.cfg["mqtt"]["backoff_min_ms"]
        try:
            self._send()
            c.poll(wait_ms)
            self._send()
        except (OSError, mqtt.MQTTError) as e:
            self._drop_link(str(e))

    def _send(self):
        c = self.client
        while c.connected:
            n = len(c.inflight)
            p = None
            if n < c.max_inflight:
                p = self.outbox.next_batch(ALARM_LANE, self.gw, self.batch_max)
            if p is None and n < c.max_inflight - 1:  # one slot stays free for alarms
                p = self.outbox.next_batch(BULK_LANE, self.gw, self.batch_max)
            if p is None:
                return
            pid = c.publish(self.t_ev, wire.seal(p[4], self.mac_key))
            self.pending[pid] = (p[0], p[1], p[2], p[3])

    # --- housekeeping ------------------------------------------------------------------------
    def heartbeat(self):
        t = ticks_ms()
        up = ticks_diff(t, self.started) // 1000
        ok = sum(1 for d in self.devices if not d.down)
        h = {0: up, 1: gc.mem_free(), 2: sum(d.polls_ok for d in self.devices),
             3: sum(d.polls_failed for d in self.devices), 4: self.outbox.depth(),
             6: ok, 7: len(self.devices) - ok, 10: self.cfg["heartbeat_s"]}  # fmt: skip
        self.emit(Event(codes.HEALTH, 0, 0, health=h), t)
        for d in self.devices:
            hm = {2: d.polls_ok, 3: d.polls_failed, 7: 1 if d.down else 0}
            self.emit(Event(codes.HEALTH, 0, d.src, health=hm), t)
        self.write_status()

    def status(self):
        gc.collect()
        return {
            "gateway": self.gw,
            "boot": self.outbox.boot,
            "events": self.events,
            "published": self.published,
            "connects": self.client.connects,
            "outbox_depth": self.outbox.depth(),
            "dropped": self.outbox.dropped,
            "peak_heap": self.peak_heap,
            "heap_after_gc": gc.mem_alloc(),
            "heap_total": gc.mem_alloc() + gc.mem_free(),
            "watchdog_feeds": self.wdt.feeds if self.wdt else 0,
            "loop_faults": self.faults,
            "devices": {d.name: [d.polls_ok, d.polls_failed, int(d.down)] for d in self.devices},
        }

    def write_status(self):
        path = self.cfg["data_dir"] + "/status.json"
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(self.status(), f)
            import os

            os.rename(path + ".tmp", path)
        except OSError as e:
            log("status not written:", e)

    def _housekeeping(self, now):
        a = gc.mem_alloc()
        if a > self.peak_heap:
            self.peak_heap = a
        if ticks_diff(now, self.last_gc) >= GC_EVERY_MS:
            self.last_gc = now
            gc.collect()
        if ticks_diff(now, self.last_hb) >= self.cfg["heartbeat_s"] * 1000:
            self.last_hb = now
            self.heartbeat()
        if self.progress or not self.reads:
            self.progress = 0
            if self.wdt is not None:
                self.wdt.feed()

    # --- life --------------------------------------------------------------------------------
    def step(self):
        """One turn of the loop: a due read (or a wait for one), the uplink, housekeeping."""
        now = ticks_ms()
        r = self._next_read(now)
        if r is not None:
            self.poll(r, now)
            self.uplink(0)
        else:
            wait = 50
            for x in self.reads:
                d = ticks_diff(x.due, now)
                if d < wait:
                    wait = max(d, 0)
            self.uplink(wait)
        self._housekeeping(ticks_ms())

    def run(self, duration_ms=None):
        """Run until ``duration_ms`` has passed (forever when None)."""
        self.wdt = Watchdog()
        self.heartbeat()
        start = ticks_ms()
        while duration_ms is None or ticks_diff(ticks_ms(), start) < duration_ms:
            try:
                self.step()
            except Exception as e:
                # logged and survived; a fault that repeats every turn stops the progress
                # counter, so the watchdog resets the board
                self.faults += 1
                log("loop fault:", type(e).__name__, e)
                sleep_ms(100)
        for d in self.devices:
            for p in d.pts:
                p.flush(self.emit)
        self.uplink(200)
        self.write_status()


def _forget(name):
    """Drop a module used only at start (from sys.modules and its package) so gc frees it."""
    if not MICROPYTHON:
        return  # on CPython the module is shared with whatever else runs in the process
    import sys

    sys.modules.pop(name, None)
    parent, _, leaf = name.rpartition(".")
    pkg = sys.modules.get(parent)
    if pkg is not None and leaf in pkg.__dict__:
        try:
            delattr(pkg, leaf)
        except (AttributeError, TypeError):
            pass


def _port(bus):
    if bus.get("uart") is not None:
        return modbus_rtu.UartPort(bus["uart"], bus["baud"], None, 1, bus["tx"], bus["rx"],
                                   bus["de"])  # fmt: skip
    return modbus_rtu.PtyPort(bus["device"], bus["baud"])


def main(path="/config.json", duration_ms=None):
    """The board's entry: load the configuration and run; a bad configuration is reported."""
    from . import conf

    try:
        cfg = conf.load(path)
    except conf.ConfigError as e:
        log("configuration refused:", e)
        return 2
    app = App(cfg)
    log("gateway", app.gw, "boot", app.outbox.boot, "devices", len(app.devices))
    app.run(duration_ms)
    return 0
