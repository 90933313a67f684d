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
   the outbox on its PUBACK, or with ``cloud_ack`` on the cloud's Ack (cloudack.py);
   commands (rebirth, test mode, time sync, reset, resend: commands.py) answered on ``res``;
3. the heartbeat (HEALTH events, gateway and per device) every ``heartbeat_s``, a status file,
   the watchdog fed while reads and the outbox make progress, the heap high-water mark.

Every event is stored before anything else happens to it, so a power cut loses nothing the
outbox has returned a seq for. Events are built with protocol/ exactly as the Pi builds them
and batches are their stored bytes spliced (enc.py, byte-identical to messages.encode_batch),
so the cloud decodes both with the same code. Memory: see App.__init__ and the README.
"""

import gc

from ...protocol import codes
from ...protocol.messages import Event
from .compat import MICROPYTHON, sleep_ms, ticks_add, ticks_diff, ticks_ms
from .hw import Clock, Watchdog
from .points import Pt, Read, src_of

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


VERSION = "0.1.0"
PLATFORM = 2 if MICROPYTHON else 1  # codes.PLATFORM_NAMES
CAP_RTU = const(1)
CAP_MAC = const(4)
CAP_SERIES = const(32)
STATUS_PRIO = const(0)
TELEMETRY_PRIO = const(1)
BACKOFF_MAX_MS = const(60000)  # a down device is probed at least once a minute
GC_EVERY_MS = const(1000)
ALARM_LANE = const(0)  # outbox.ALARM_LANE
BULK_LANE = const(1)  # outbox.BULK_LANE
EF_TEST = const(1)  # codes.EF_TEST


def log(*args):
    print("emberlink:", *args)


class Device:
    test = False  # in test mode (the device, or the whole gateway): set by commands.py

    def __init__(self, d, bus, prof):
        self.name = d["name"]
        self.unit = d["unit"]
        self.bus = bus["id"]
        self.down_after = bus["down_after"]
        self.sys = prof["sys"] or None
        self.part = prof["part"] or None
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
        """Build the gateway from a checked configuration (conf.py). The configuration's
        ``profiles``, ``devices`` and ``buses`` are set to None once built from."""
        # Memory: the points (and their detectors, built by firmware/config.py) come first,
        # while nothing else is loaded; then the builder, the configuration checker and the
        # parsed configuration are let go, and only then are the uplink's modules imported.
        # The heap's high-water mark is the larger of the two phases, not their sum.
        self.gw = cfg["gw"]
        self.serial = cfg["serial"]
        self.heartbeat_s = cfg["heartbeat_s"]
        self.data_dir = cfg["data_dir"]
        self.clock = Clock(cfg["clock_synced"])
        self.wdt = None
        self.started = ticks_ms()
        self.warnings = []  # type: list
        self.out = []  # type: list  # the detectors' (t, Event) scratch list
        self.emit_bound = self.emit
        self.masters = {}
        self.devices = []
        self.reads = []
        self.test_all = False  # the whole gateway in test mode (commands.py)
        self.test_devs = []  # type: list  # devices (src with point 0) in test mode
        self.test_timers = []  # type: list  # (ticks, src), soonest first: test mode off
        _forget("emberlink.firmware.board.conf")  # checked: the checker is not needed again
        gc.collect()
        self._build(cfg)
        for w in self.warnings:
            log("warning:", w)
        self.warnings = []
        _forget("emberlink.firmware.config")  # the detector builder: 20 KB of heap, used once
        _forget("emberlink.firmware.idmt")  # imported by the builder; reloaded if a curve needs it
        o = cfg["outbox"]
        m = cfg["mqtt"]
        buses = cfg["buses"]
        for k in ("profiles", "devices", "buses"):  # built: the heap can have them back
            cfg[k] = None
        gc.collect()
        from . import modbus_rtu  # imported once the points are built, like the uplink's

        self.rtu = modbus_rtu
        for b in buses:
            self.masters[b["id"]] = modbus_rtu.Master(
                (port_factory or self._port)(b), b["baud"], b["char_bits"], b["timeout_ms"]
            )
        self._uplink_init(o, m)

    def _port(self, bus):
        if bus.get("uart") is not None:
            return self.rtu.UartPort(bus["uart"], bus["baud"], None, 1, bus["tx"], bus["rx"],
                                     bus["de"])  # fmt: skip
        return self.rtu.PtyPort(bus["device"], bus["baud"])

    def _build(self, cfg):
        series_ms = cfg["series_s"] * 1000
        for d in cfg["devices"]:
            bus = next(b for b in cfg["buses"] if b["id"] == d["bus"])
            prof = cfg["profiles"][d["profile"]]
            dev = Device(d, bus, prof)
            self.devices.append(dev)
            poll = prof["poll"]
            status_ms = d["status_ms"] or poll["status_ms"]
            telemetry_ms = d["telemetry_ms"] or poll["telemetry_ms"]
            built = []
            for p in prof["points"]:
                period = status_ms if p["class"] == "status" else telemetry_ms
                built.append(Pt(p, prof, bus["id"], dev.unit, period, series_ms, self.warnings))
                gc.collect()  # a detector's build leaves garbage: keep the peak down
            dev.pts = built
            for block in prof["reads"]:
                status = block["class"] == "status"
                r = Read(
                    dev,
                    block,
                    STATUS_PRIO if status else TELEMETRY_PRIO,
                    status_ms if status else telemetry_ms,
                    [built[i] for i in block["points"]],
                )
                self.reads.append(r)

    def _uplink_init(self, o, m):
        from ...protocol import topics
        from .client import Client
        from .mqtt import MQTTError
        from .outbox import Outbox

        self.link_errors = (OSError, MQTTError)  # what ends a link (and is survived)

        try:
            import os

            os.mkdir(self.data_dir)
        except OSError:
            pass  # exists
        self.outbox = Outbox(self.data_dir + "/outbox", o["max_telemetry"], o["seg_records"])
        self.batch_max = o["batch_max_events"]
        self.host = m["host"]
        self.mqtt_port = m["port"]
        self.backoff_min = m["backoff_min_ms"]
        self.backoff_max = m["backoff_max_ms"]
        self.mac_key = m["mac_key"]
        self.t_ev = topics.topic(self.gw, "ev")
        self.t_state = topics.topic(self.gw, "state")
        self.t_res = topics.topic(self.gw, "res")
        self.t_cmd = topics.topic(self.gw, "cmd")
        self.t_ack = None
        self.acks = None  # cloud-ack mode: records leave the outbox on the cloud's Ack
        if m["cloud_ack"]:
            from .cloudack import CloudAck

            self.t_ack = topics.topic(self.gw, "ack")
            self.acks = CloudAck(self.outbox, self.gw, m["cloud_ack_timeout_ms"])
        _forget("emberlink.protocol.topics")  # a few strings were all the board needed
        death = Event(codes.DEATH, 0, 0, code=102)
        self.client = Client(
            m["host"],
            m["port"],
            m["client_id"],
            m["keepalive_s"],
            self.t_state,
            self.seal_one(0, self.clock.now_ms(), death),
            m["username"],
            m["password"],
            m["retry_ms"],
            4,
            self._on_message,
            self._on_puback,
        )
        self.pending = {}  # pid -> (lane, boot, first, last)
        self.next_connect = ticks_ms()
        self.backoff = self.backoff_min
        self.events = 0
        self.published = 0
        self.progress = 0
        self.faults = 0
        self.peak_heap = 0
        self.last_gc = ticks_ms()
        self.last_hb = ticks_ms()
        self.caps = CAP_RTU | CAP_SERIES | (CAP_MAC if self.mac_key else 0)

    def seal(self, payload):
        """What goes on the wire for batch bytes: bare, or in a COSE_Mac0 with the key."""
        if self.mac_key is None:
            return payload
        from ...protocol import mac  # only a board with a key loads it

        return mac.wrap(payload, self.mac_key)

    def seal_one(self, seq, t, ev):
        """The sealed batch of one event at ``t`` (birth, death)."""
        from . import enc
        from .outbox import event_body

        return self.seal(enc.one(self.gw, self.outbox.boot, seq, t, event_body(ev)))

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
        m = self.masters[dev.bus]
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
            ev = Event(codes.COMMS, 0, dev.src, state=codes.NORMAL, part=dev.part,
                       eflags=EF_TEST if dev.test else None)  # fmt: skip
            self.emit(ev, t)
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
        return Event(codes.FAULT, 0, dev.src, state=state, code=57, sys=dev.sys, part=dev.part,
                     eflags=EF_TEST if dev.test else None)  # fmt: skip

    def _failed(self, dev, r, rc, t):
        dev.polls_failed += 1
        dev.fails += 1
        if dev.down:
            dev.backoff = min(dev.backoff * 2, BACKOFF_MAX_MS)
            r.due = ticks_add(t, dev.backoff)
            return
        if dev.fails >= dev.down_after:
            dev.down = True
            dev.backoff = r.period
            code = self.rtu.CONDITION[rc]
            log(dev.name, "down after", dev.fails, "failures:", self.rtu.ERROR_NAMES[rc])
            ev = Event(codes.COMMS, 0, dev.src, state=codes.ACTIVE, code=code, part=dev.part,
                       eflags=EF_TEST if dev.test else None)  # fmt: skip
            self.emit(ev, t)
            for p in dev.pts:
                p.stale()

    # --- uplink ------------------------------------------------------------------------------
    def _on_puback(self, pid):
        p = self.pending.pop(pid, None)
        if p is not None:
            if self.acks is None:
                self.outbox.ack(p[1], p[2], p[3])
            else:  # stored until the cloud's Ack covers it
                self.acks.puback(p[1], p[2], p[3], ticks_ms())
            self.published += 1
            self.progress += 1

    def _on_message(self, topic, payload):
        if topic == self.t_cmd:
            self._commands("handle", payload)
        elif topic == self.t_ack and self.acks is not None and self.acks.on_ack(payload):
            self.progress += 1
        # the board subscribes to its own command (and ack) topics only

    def birth(self):
        info = {0: VERSION, 1: PLATFORM, 2: self.caps, 3: self.heartbeat_s, 4: self.serial}
        ev = Event(codes.BIRTH, 0, 0, info=info)
        t = self.clock.now_ms()
        seq = self.outbox.append(ev, t, not self.clock.synced)
        self.client.publish(self.t_state, self.seal_one(seq, t, ev), retain=True)

    def _drop_link(self, why):
        log("uplink:", why)
        self.client.close()
        for pid in self.pending:
            self.client.forget(pid)
        self.pending = {}
        self.outbox.requeue()
        if self.acks is not None:
            self.acks.clear()
        self.next_connect = ticks_add(ticks_ms(), self.backoff)
        self.backoff = min(self.backoff * 2, self.backoff_max)

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
                c.subscribe(self.t_cmd)
                if self.t_ack is not None:
                    c.subscribe(self.t_ack)
                self.birth()
            except self.link_errors as e:
                self._drop_link("connect: " + str(e))
                return
            log("connected to", self.host, self.mqtt_port)
            self.backoff = self.backoff_min
        try:
            self._send()
            c.poll(wait_ms)
            if self.acks is not None:
                self.acks.check(ticks_ms())
            self._send()
        except self.link_errors as e:
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
            pid = c.publish(self.t_ev, self.seal(p[4]))
            self.pending[pid] = (p[0], p[1], p[2], p[3])

    # --- housekeeping ------------------------------------------------------------------------
    def heartbeat(self):
        t = ticks_ms()
        up = ticks_diff(t, self.started) // 1000
        ok = sum(1 for d in self.devices if not d.down)
        h = {0: up, 1: gc.mem_free(), 2: sum(d.polls_ok for d in self.devices),
             3: sum(d.polls_failed for d in self.devices), 4: self.outbox.depth(),
             6: ok, 7: len(self.devices) - ok, 10: self.heartbeat_s}  # fmt: skip
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
        import json

        path = self.data_dir + "/status.json"
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
        t = self.test_timers  # soonest first
        if t and ticks_diff(now, t[0][0]) >= 0:
            self._commands("expire", now)
        if ticks_diff(now, self.last_hb) >= self.heartbeat_s * 1000:
            self.last_hb = now
            self.heartbeat()
        if self.progress or not self.reads:
            self.progress = 0
            if self.wdt is not None:
                self.wdt.feed()

    def _commands(self, what, arg):
        """``commands.<what>(self, arg)``: commands are rare, so commands.py is loaded for the
        occasion and let go after (its bytecode does not stay in the heap)."""
        from . import commands

        getattr(commands, what)(self, arg)
        _forget("emberlink.firmware.board.commands")

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


def load_config(path):
    """The checked configuration, or None (reported). conf.py is only referenced from this
    frame, so once App has dropped it from sys.modules nothing keeps it."""
    from . import conf

    try:
        cfg = conf.load(path)
    except conf.ConfigError as e:
        log("configuration refused:", e)
        return None
    _forget("emberlink.firmware.board.conf")
    return cfg


def main(path="/config.json", duration_ms=None):
    """The board's entry: load the configuration and run; a bad configuration is reported."""
    cfg = load_config(path)
    if cfg is None:
        return 2
    app = App(cfg)
    cfg = None  # the rest of it: App has kept what it needs
    log("gateway", app.gw, "boot", app.outbox.boot, "devices", len(app.devices))
    app.run(duration_ms)
    return 0
