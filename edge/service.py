"""The gateway service: pollers -> points/detectors -> outbox -> uplink, plus health and systemd.

``Gateway(cfg)`` wires the pieces; ``await gateway.run()`` runs until ``stop()`` (SIGTERM), then
flushes partial series into the outbox, publishes the death (clean_shutdown) and closes the
store. systemd integration needs no library: READY=1 and WATCHDOG=1 go to $NOTIFY_SOCKET, and
the watchdog is only fed while the poll loops and the outbox are making progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import time
from importlib import metadata
from typing import Any

from emberlink.protocol import codes, messages, release
from emberlink.protocol.messages import Event

from . import health
from .config import GatewayConfig
from .detect import Detectors
from .errors import OutboxError
from .outbox import Outbox
from .points import PointTranslator
from .poller import Health, Link, WallClock
from .uplink import Uplink

log = logging.getLogger("emberlink.gateway")

DISK_LOW_KB = 50 * 1024  # FAULT disk_full below 50 MB free: hours of telemetry at our rates
SPILL_MAX = 10_000  # events held in memory while the outbox cannot write
SPILL_RETRY_S = 1.0  # how often held events are offered to the store again
RESTART_S = 2.0  # a crashed bus or uplink task is restarted after this pause
SHUTDOWN_FLUSH_S = 5.0  # SIGTERM: time allowed to publish what is queued and the death
WATCHDOG_STALL_S = 10.0  # a poll loop that has not turned for this long is wedged
CAPS = 1 | 2 | 32  # modbus_rtu, modbus_tcp, series (codes.CAP_NAMES)


def software_version() -> str:
    try:
        return metadata.version("emberlink")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def sd_notify(state: str) -> None:
    """Send a state line to systemd's notify socket, if we run under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)  # a full notify queue must never stall the event loop
        s.sendto(state.encode(), addr)


class Gateway:
    def __init__(self, cfg: GatewayConfig, *, client_id: str | None = None) -> None:
        self.cfg = cfg
        self.clock = WallClock()
        self.started = time.monotonic()
        self.outbox = Outbox(
            cfg.outbox.path,
            max_telemetry=cfg.outbox.max_telemetry,
            synchronous=cfg.outbox.synchronous,
        )
        self.version = software_version()
        self.version_code = release.version_code(self.version)  # health key 19
        self.config_hash = b""  # first 16 bytes of SHA-256 of the configuration file
        if cfg.source is not None:
            with contextlib.suppress(OSError):
                self.config_hash = hashlib.sha256(cfg.source.read_bytes()).digest()[:16]
        pairs = [(d.bus, d) for d in cfg.devices]
        self.detectors = Detectors.from_config(pairs)
        self.points = PointTranslator(self.emit, cfg.series_s, self.detectors)
        self.links = [
            Link(b, [d for d in cfg.devices if d.bus == b.id], self.points, self.clock)
            for b in cfg.buses
        ]
        self.uplink = Uplink(
            cfg.mqtt,
            cfg.id,
            self.outbox,
            birth_info=self.birth_info,
            now_ms=self.clock.now_ms,
            on_time_sync=self.clock.sync,
            on_rebirth=self.heartbeat,
            on_command=self.handle_command,
            batch_max_events=cfg.outbox.batch_max_events,
            inflight=cfg.outbox.inflight_batches,
            client_id=client_id,
        )
        log_path = os.environ.get("EMBERLINK_PUBACK_LOG")  # benchmark hook (edge/bench.py)
        if log_path:
            self.uplink.puback_log = open(log_path, "a")  # noqa: SIM115 - open for the run
        self._stop = asyncio.Event()
        self._spill: list[tuple[Event, int, bool]] = []
        self.crashes = 0
        self.disk_low = False
        self._progress = 0
        self.budget_warnings = [w for w in (lk.check_budget() for lk in self.links) if w]

    # --- events in -------------------------------------------------------------------------------
    def emit(self, ev: Event, t_ms: int) -> None:
        """Store one event (durably, seq allocated) and wake the uplink.

        If the store refuses (disk full, I/O error) the event waits in memory, at most
        SPILL_MAX of them, alarms kept first, and is stored with the next event that succeeds
        or by the retry loop (every SPILL_RETRY_S), whichever comes first.
        """
        self._spill.append((ev, t_ms, not self.clock.synced))
        self._store_spill()

    def _store_spill(self, retry: bool = False) -> None:
        try:
            while self._spill:  # in order, one transaction per run of equal clock flags
                flag = self._spill[0][2]
                n = next((i for i, x in enumerate(self._spill) if x[2] != flag), len(self._spill))
                self.outbox.append_many([(e, t) for e, t, _ in self._spill[:n]], unsynced=flag)
                del self._spill[:n]
        except OutboxError as e:
            (log.debug if retry else log.error)(
                "outbox: %s (%d events held in memory)", e, len(self._spill)
            )
            if len(self._spill) > SPILL_MAX:
                keep = [x for x in self._spill if x[0].kind in codes.PRIORITY_KINDS]
                self._spill = keep[-SPILL_MAX:]
            return
        self._progress += 1
        self.uplink.wake()

    def birth_info(self) -> dict[int, Any]:
        info: dict[int, Any] = {0: self.version, 1: 1, 2: CAPS, 3: self.cfg.heartbeat_s}
        if self.cfg.serial:
            info[4] = self.cfg.serial
        if self.config_hash:
            info[5] = self.config_hash
        return info

    # --- commands routed from the uplink -----------------------------------------------------
    def _targets(self, src: int) -> list[tuple[int, Any]]:
        """Detector points matching src: 0 = all, point 0 = a whole device, else one point."""
        out: list[tuple[int, Any]] = []
        for s, dets in self.detectors.by_src.items():
            if src == 0 or s == src or (src & 0xFFFF == 0 and s & 0xFFFF0000 == src):
                out.extend((s, d) for d in dets)
        return out

    def handle_command(self, op: int, args: dict[int, int]) -> tuple[int, str | None]:
        """Reset latched alarms, or enter/leave test mode; (result, note) for the Result."""
        t = self.clock.now_ms()
        if op == messages.OP_RESET:
            src = int(args.get(0, 0))
            targets = self._targets(src)
            for _, d in targets:
                for ev, at in d.reset(t):
                    self.emit(ev, at)
            return messages.RES_OK, f"{len(targets)} points reset"
        if op == messages.OP_TEST_MODE:
            if args.get(0) not in (0, 1):
                return messages.RES_BAD_ARGS, "args {0: 1 on | 0 off, ?1: s, ?2: src}"
            on = args[0] == 1
            src = int(args.get(2, 0))
            self.set_test(src, on)
            duration = int(args.get(1, 0))
            if on and duration > 0:
                asyncio.get_running_loop().call_later(duration, self.set_test, src, False)
            return messages.RES_OK, None
        return messages.RES_UNKNOWN_OP, f"op {op} not supported by this gateway"

    def set_test(self, src: int, on: bool) -> None:
        """Test mode for the gateway (src 0) or a device: events raised carry EF_TEST."""
        t = self.clock.now_ms()
        dev = src & 0xFFFF0000
        if src == 0:
            if self.points.test_all == on:
                return
            self.points.test_all = on
        elif on == (dev in self.points.test_srcs):
            return
        elif on:
            self.points.test_srcs.add(dev)
        else:
            self.points.test_srcs.discard(dev)
        self.emit(Event(codes.TEST_MODE, 0, src, state=codes.ACTIVE if on else codes.NORMAL), t)
        out: list[tuple[int, Event]] = []
        for _, d in self._targets(dev):
            d.point.set_test(t, on, out)
        for at, ev in out:
            if ev.kind != codes.TEST_MODE:  # ours above already says it for the whole scope
                self.emit(ev, at)

    # --- health ----------------------------------------------------------------------------------
    def health_values(self) -> dict[str, int | None]:
        st = self.outbox.stats(self.clock.now_ms())
        devs = [d for lk in self.links for d in lk.devices]
        return {
            "uptime_s": int(time.monotonic() - self.started),
            "polls_ok": sum(d.polls_ok for d in devs),
            "polls_failed": sum(d.polls_failed for d in devs),
            "outbox_depth": sum(n for n, _ in st.values()),
            "devices_ok": sum(d.health is Health.OK for d in devs),
            "devices_down": sum(d.health is Health.DOWN for d in devs),
            "devices_suspect": sum(d.health is Health.SUSPECT for d in devs),
            "cpu_temp_dC": health.cpu_temp_dC(),
            "oldest_queued_s": max(age for _, age in st.values()),
            "heartbeat_s": self.cfg.heartbeat_s,
            "disk_free_kb": health.disk_free_kb(self.cfg.outbox.path.parent),
            "outbox_priority_depth": st["priority"][0],
            "outbox_priority_oldest_s": st["priority"][1],
            "outbox_telemetry_depth": st["telemetry"][0],
            "outbox_telemetry_oldest_s": st["telemetry"][1],
            "clock_synced": int(self.clock.synced),
            "outbox_dropped": self.outbox.dropped,
            "sw_version": self.version_code,
        }

    def heartbeat(self) -> None:
        t = self.clock.now_ms()
        self.points.flush_stale(t)
        values = self.health_values()
        low = (values["disk_free_kb"] or 0) < DISK_LOW_KB
        if low != self.disk_low:  # a fault well before the card is full (TB #2094: 45 GB)
            self.disk_low = low
            state = codes.ACTIVE if low else codes.NORMAL
            self.emit(Event(codes.FAULT, 0, 0, state=state, code=105, part=202), t)
        items = [(Event(codes.HEALTH, 0, 0, health=health.gateway_map(values)), t)]
        for lk in self.links:
            for d in lk.devices:
                hm = {2: d.polls_ok, 3: d.polls_failed, 7: int(d.health is Health.DOWN)}
                items.append((Event(codes.HEALTH, 0, d.src, health=hm), t))
        try:
            self.outbox.append_many(items, unsynced=not self.clock.synced)
        except OutboxError as e:
            log.error("heartbeat not stored: %s", e)
        self.uplink.wake()
        self._write_status(values)

    def _write_status(self, values: dict[str, int | None]) -> None:
        """health.json beside the outbox: the same figures for a local look (and tests)."""
        status = {
            "gateway": self.cfg.id,
            "boot": self.outbox.boot,
            "version": self.version,
            "uplink": self.uplink.state.value,
            "health": values,
            "devices": {
                d.name: {
                    "zone": d.cfg.zone,
                    "unit": d.unit,
                    "bus": d.bus,
                    "health": d.health.value,
                    "ok": d.polls_ok,
                    "failed": d.polls_failed,
                }
                for lk in self.links
                for d in lk.devices
            },
            "budget_warnings": self.budget_warnings,
        }
        path = self.cfg.outbox.path.parent / "health.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(status, indent=1))
            os.replace(tmp, path)

    async def _spill_retry_loop(self) -> None:
        # Events held in memory (the store refused them) must not wait for the next event to
        # be stored: a fire alarm raised on a full disk goes out as soon as space returns.
        while True:
            await asyncio.sleep(SPILL_RETRY_S)
            if self._spill:
                self._store_spill(retry=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            self.heartbeat()

    async def _watchdog_loop(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if not usec:
            return
        loop = asyncio.get_running_loop()
        # a scheduler turns at least once a second plus one request (its longest deadline with
        # retries): beyond that, or WATCHDOG_STALL_S, it is wedged and systemd may restart us
        while True:
            await asyncio.sleep(usec / 2e6)
            now = loop.time()
            if all(now - lk.last_turn < max(WATCHDOG_STALL_S, lk.stall_limit_s())
                   for lk in self.links):  # fmt: skip
                sd_notify("WATCHDOG=1")
            else:
                log.error("a poll loop has not turned for %.0f s: not feeding the watchdog",
                          max(now - lk.last_turn for lk in self.links))  # fmt: skip

    # --- life ------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        for w in self.budget_warnings:
            log.warning(w)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [
            asyncio.create_task(self._supervise(lk.run, f"bus {lk.bus.id}")) for lk in self.links
        ]
        uplink = asyncio.create_task(self._supervise(self.uplink.run, "uplink"))
        tasks += [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._spill_retry_loop(), name="spill-retry"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
        ]
        self.heartbeat()
        sd_notify("READY=1")
        log.info("gateway %s boot %s running: %d buses, %d devices",
                 self.cfg.id, self.outbox.boot, len(self.links), len(self.cfg.devices))  # fmt: skip
        try:
            await self._stop.wait()
        finally:
            sd_notify("STOPPING=1")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.points.flush_all()
            await self._drain(uplink)
            uplink.cancel()
            await asyncio.gather(uplink, return_exceptions=True)
            self.outbox.close()
            log.info("gateway stopped")

    async def _supervise(self, run: Any, name: str) -> None:
        """Run a long-lived task; a bug that escapes it is logged and the task restarted."""
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in %.0f s", name, RESTART_S)
                self.crashes += 1
            await asyncio.sleep(RESTART_S)

    async def _drain(self, uplink: asyncio.Task[None]) -> None:
        """Give the uplink SHUTDOWN_FLUSH_S to empty the outbox, then publish the death."""
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while time.monotonic() < deadline and self.outbox.depth() and not uplink.done():
            await asyncio.sleep(0.05)
        await self.uplink.publish_death(101)  # clean_shutdown; stays in the outbox if unsent
