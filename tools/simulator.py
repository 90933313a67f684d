"""``emberlink sim``: a simulated site of Modbus devices built from the shipped profiles.

Each device is a pymodbus ``SimDevice`` whose async ``action`` hook holds the device model: the
hook copies the model's registers into the server's block before every answer, so scenarios
change values while the server runs (the deprecated datastore classes cannot be changed after
start). The hook is also where faults go: a silent device raises ``NoSuchIdException`` with
``ignore_missing_devices`` set, so the server stays quiet as a dead RS-485 unit does; a garbage
device writes a frame with a bad CRC to the line and gives no answer; an RTU device holds every
answer for its wire time at the bus's baud rate, because a socat pty pair has none.

RTU buses run over real pseudo-terminal pairs made with ``socat``: the gateway opens the bus's
configured ``device`` path and the simulator the same path + ``.sim``. TCP buses listen on the
configured host and port. The site is the gateway's own configuration file, so

    emberlink sim run --config site.toml [--scenario steps.toml | --builtin residual-ramp]
    emberlink gateway run --config site.toml

is a complete bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emberlink.edge import config as gwconfig
from emberlink.protocol import profile as schema
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

log = logging.getLogger("emberlink.sim")

SOCAT = shutil.which("socat") or "/usr/bin/socat"
PTY_WAIT_S = 5.0  # socat creates both links within milliseconds; 5 s means it failed
DEFAULT_TURNAROUND_MS = 5  # a quick slave; datasheets give 13..200 ms (standards.md §6.1)


def rtu_wire_s(n_bytes: int, baud: int, char_bits: int = 11) -> float:
    """Seconds ``n_bytes`` take on the line at ``baud``, plus the 3.5-character frame gap."""
    t_char = char_bits / baud
    gap = 3.5 * t_char if baud <= 19200 else 0.00175  # fixed t3.5 above 19200 (V1.02 p.13)
    return n_bytes * t_char + gap


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@dataclass
class SimulatedDevice:
    """The model of one device: registers from its profile, values, and the fault mode."""

    profile: dict[str, Any]
    unit: int
    name: str = ""
    zone: str = ""
    baud: int | None = None  # RTU: hold each answer for its wire time
    char_bits: int = 11
    turnaround_ms: int = DEFAULT_TURNAROUND_MS
    mode: str = "ok"  # ok | silent | garbage | exception
    exception_code: int = 0
    line_fd: int | None = None  # where garbage goes (the simulator's pty end)
    regs: list[int] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        end = max(p["address"] + p["words"] for p in self.profile["points"])
        sigs = self.profile.get("signature", [])
        end = max([end] + [s["address"] + 1 for s in sigs])
        self.regs = [0] * min(end + schema.DEFAULT_MAX_GAP, 0x10000)
        for s in sigs:  # the model-id registers a bus scan identifies the device by
            self.regs[s["address"]] = s["value"]
        self.points = {p["name"]: p for p in self.profile["points"]}
        self.last_change = 0.0

    # --- the model ---------------------------------------------------------------------------
    def point(self, name: str) -> dict[str, Any]:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"{self.profile['name']} has no point {name!r}") from None

    def set(self, name: str, val: int | float) -> None:
        """Set a point to ``val`` (in 10**exp units of its unit, as the gateway reports it)."""
        p = self.point(name)
        regs = schema.encode(p, val if p["type"] == "f32" else int(val))
        self.regs[p["address"] : p["address"] + len(regs)] = regs
        self.last_change = asyncio.get_event_loop().time() if _loop_running() else 0.0

    def set_raw(self, name: str, raw: int) -> None:
        """Write the raw register of a one-word point (a sentinel such as a sensor break)."""
        p = self.point(name)
        self.regs[p["address"]] = raw & 0xFFFF
        self.last_change = asyncio.get_event_loop().time() if _loop_running() else 0.0

    def get(self, name: str) -> int:
        p = self.point(name)
        return int(schema.decode(p, self.regs[p["address"] : p["address"] + p["words"]]))

    def set_bit(self, name: str, bit: int, on: bool) -> None:
        p = self.point(name)
        a = p["address"]
        self.regs[a] = self.regs[a] | (1 << bit) if on else self.regs[a] & ~(1 << bit)
        self.last_change = asyncio.get_event_loop().time() if _loop_running() else 0.0

    def bit_of(self, name: str, event: str) -> int:
        """The bit of a bits point that raises ``event`` (e.g. fire_alarm)."""
        for b in self.point(name)["bits"]:
            if b["name"] == event or schema.CONDITION_KINDS.get(event) == b["kind"]:
                return int(b["bit"])
        raise KeyError(f"{name} has no bit for {event!r}")

    # --- the server hook ---------------------------------------------------------------------
    def simdevice(self) -> SimDevice:
        return SimDevice(
            self.unit,
            simdata=[SimData(0, values=list(self.regs), datatype=DataType.REGISTERS)],
            action=self.action,
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if set_values:
            for i, v in enumerate(set_values):
                self.regs[address - start_address + i] = int(v)
        if self.mode == "silent":
            raise NoSuchIdException(f"unit {self.unit} is silent (scenario)")
        req_bytes = 8 if set_values is None else 9 + 2 * len(set_values)
        resp_bytes = 5 + 2 * count if set_values is None else 8
        if self.baud:
            await asyncio.sleep(
                rtu_wire_s(req_bytes, self.baud, self.char_bits) + self.turnaround_ms / 1000
            )
        elif self.turnaround_ms:
            await asyncio.sleep(self.turnaround_ms / 1000)
        if self.mode == "garbage":
            self._write_garbage(function_code, count)
            raise NoSuchIdException(f"unit {self.unit} answered garbage (scenario)")
        if self.mode == "exception":
            return ExcCodes(self.exception_code)
        current_registers[:] = self.regs[: len(current_registers)]
        if self.baud:
            await asyncio.sleep(rtu_wire_s(resp_bytes, self.baud, self.char_bits))
        return None

    def _write_garbage(self, function_code: int, count: int) -> None:
        """A well-shaped answer with a wrong CRC, as a noisy line delivers it."""
        body = bytes([self.unit, function_code, 2 * count]) + bytes(2 * count)
        crc = crc16(body) ^ 0x5A5A
        frame = body + bytes([crc & 0xFF, crc >> 8])
        if self.line_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.line_fd, frame)


async def _absent(fc: int, start: int, address: int, count: int, regs: list[int],
                  values: list[int] | list[bool] | None) -> ExcCodes | None:  # fmt: skip
    raise NoSuchIdException("no such unit on this bus")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _die_with_parent() -> None:
    """In the socat child: ask Linux for SIGTERM when the simulator dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PtyPair:
    """Two linked pseudo-terminals made by ``socat``: ``a`` for the gateway, ``b`` for us."""

    def __init__(self, a: str, b: str) -> None:
        self.a = a
        self.b = b
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> PtyPair:
        for p in (self.a, self.b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self.proc = await asyncio.create_subprocess_exec(
            SOCAT,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={self.a}",
            f"pty,raw,echo=0,link={self.b}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PTY_WAIT_S
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if loop.time() > deadline or self.proc.returncode is not None:
                await self.__aexit__(None, None, None)
                raise RuntimeError(f"socat did not create {self.a} and {self.b}")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(self.proc.wait(), 5)
        for p in (self.a, self.b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class Site:
    """Every bus of a gateway configuration, served by simulated devices.

    ``async with Site(cfg) as site:`` starts socat pairs and servers; ``site.device(name)``
    gives a device model to script.
    """

    def __init__(self, cfg: gwconfig.GatewayConfig, *, wire_time: bool = True) -> None:
        self.cfg = cfg
        self.wire_time = wire_time
        self.devices: dict[str, SimulatedDevice] = {}
        self._stack = contextlib.AsyncExitStack()
        self._servers: list[Any] = []
        self._fds: list[int] = []

    def device(self, name: str) -> SimulatedDevice:
        return self.devices[name]

    async def __aenter__(self) -> Site:
        try:
            for bus in self.cfg.buses:
                await self._start_bus(bus)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start_bus(self, bus: gwconfig.BusConfig) -> None:
        devs = [d for d in self.cfg.devices if d.bus == bus.id]
        models = [
            SimulatedDevice(
                d.profile,
                d.unit,
                d.name,
                d.zone,
                baud=bus.baud if bus.type == "rtu" and self.wire_time else None,
                char_bits=bus.char_bits,
            )
            for d in devs
        ]
        for m in models:
            self.devices[m.name] = m
        if not models:
            return
        # id 0 catches every unit not on the bus: it stays silent, as an absent RS-485 unit does
        context = [m.simdevice() for m in models] + [
            SimDevice(0, simdata=[SimData(0, count=0xFFFF, datatype=DataType.REGISTERS)],
                      action=_absent)
        ]  # fmt: skip
        server: Any
        if bus.type == "rtu":
            pair = PtyPair(bus.device, bus.device + ".sim")
            await self._stack.enter_async_context(pair)
            fd = os.open(pair.b, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            self._fds.append(fd)
            for m in models:
                m.line_fd = fd
            server = ModbusSerialServer(
                context,
                framer=FramerType.RTU,
                port=pair.b,
                baudrate=bus.baud,
                parity=bus.parity,
                stopbits=bus.stopbits,
                ignore_missing_devices=True,  # an absent unit stays silent, as on RS-485
            )
        else:
            server = ModbusTcpServer(
                context, address=(bus.host, bus.port), ignore_missing_devices=True
            )
        await server.serve_forever(background=True)
        self._servers.append(server)

    async def __aexit__(self, *exc: object) -> None:
        for s in self._servers:
            with contextlib.suppress(Exception):
                await s.shutdown()
        self._servers.clear()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        await self._stack.aclose()


# --- scenarios -------------------------------------------------------------------------------
STEP_ACTIONS = ("set", "raw", "bit", "ramp", "silent", "garbage", "exception", "ok", "break",
                "overcurrent")  # fmt: skip


def _first(site: Site, profile: str) -> SimulatedDevice:
    for d in site.devices.values():
        if d.profile["name"] == profile:
            return d
    raise KeyError(f"the site has no {profile} device")


def builtin(name: str, site: Site) -> list[dict[str, Any]]:
    """Steps of a named scenario, applied to the first device of the profile it needs."""
    if name == "smoke-rise":  # every smoke loop in the zone of the first one
        d = _first(site, "smoke_loop")
        return [{"at_s": 1, "zone": d.zone, "action": "ramp", "point": "obscuration_1",
                 "from": 50, "to": 600, "over_s": 20}]  # fmt: skip
    if name == "residual-ramp":
        d = _first(site, "acrel_asj")
        return [{"at_s": 1, "device": d.name, "action": "ramp", "point": "residual_current",
                 "from": 20, "to": 500, "over_s": 20}]  # fmt: skip
    if name == "overcurrent":
        d = _first(site, "efm_multi")
        pickup = 6300  # 63.00 A in 0.01 A, as in the profile's detector section
        return [{"at_s": 1, "device": d.name, "action": "overcurrent", "point": "phase_a_current",
                 "k": 3, "pickup": pickup}]  # fmt: skip
    if name == "sensor-break":
        d = _first(site, "efm_multi")
        return [{"at_s": 1, "device": d.name, "action": "break", "point": "temperature_2"}]
    if name == "device-silent":
        d = next(iter(site.devices.values()))
        return [{"at_s": 1, "device": d.name, "action": "silent"},
                {"at_s": 31, "device": d.name, "action": "ok"}]  # fmt: skip
    if name == "crc-garbage":
        d = next(iter(site.devices.values()))
        return [{"at_s": 1, "device": d.name, "action": "garbage"},
                {"at_s": 11, "device": d.name, "action": "ok"}]  # fmt: skip
    if name == "panel-fire":
        d = _first(site, "fire_panel")
        return [{"at_s": 1, "device": d.name, "action": "bit", "point": "system_status",
                 "bit": 1, "on": True}]  # fmt: skip
    raise KeyError(f"unknown scenario {name!r}")


BUILTINS = ("smoke-rise", "residual-ramp", "overcurrent", "sensor-break", "device-silent",
            "crc-garbage", "panel-fire")  # fmt: skip


async def apply_step(site: Site, step: dict[str, Any]) -> None:
    """Apply one step now (a ramp runs until its end) to its device, or to every device of
    its ``zone`` that has the step's point."""
    if "zone" in step:
        targets = [d for d in site.devices.values() if d.zone == step["zone"]
                   and ("point" not in step or step["point"] in d.points)]  # fmt: skip
        if not targets:
            raise ValueError(f"no device in zone {step['zone']!r} fits {step}")
        await asyncio.gather(*(apply_step(site, {**{k: v for k, v in step.items() if k != "zone"},
                                                 "device": d.name}) for d in targets))  # fmt: skip
        return
    d = site.device(step["device"])
    act = step["action"]
    if act not in STEP_ACTIONS:
        raise ValueError(f"unknown action {act!r}")
    if act == "set":
        d.set(step["point"], step["value"])
    elif act == "overcurrent":  # k x the protection's pickup, in the point's units
        d.set(step["point"], round(float(step["k"]) * int(step["pickup"])))
    elif act == "raw":
        d.set_raw(step["point"], step["value"])
    elif act == "break":
        p = d.point(step["point"])
        if p.get("break_value") is None:
            raise ValueError(f"{step['point']} has no break_value")
        d.set_raw(step["point"], p["break_value"])
    elif act == "bit":
        d.set_bit(step["point"], step["bit"], bool(step.get("on", True)))
    elif act == "ramp":
        start, end, over = step["from"], step["to"], float(step["over_s"])
        n = max(1, int(over / 0.1))
        for i in range(n + 1):
            d.set(step["point"], start + (end - start) * i // n)
            if i < n:
                await asyncio.sleep(over / n)
    elif act in ("silent", "garbage", "ok"):
        d.mode = act
    elif act == "exception":
        d.mode = "exception"
        d.exception_code = int(step.get("code", 4))


async def run_steps(site: Site, steps: list[dict[str, Any]]) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for s in sorted(steps, key=lambda s: s.get("at_s", 0)):
        delay = t0 + float(s.get("at_s", 0)) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        log.info("step %s", s)
        tasks.append(asyncio.create_task(apply_step(site, s)))
    await asyncio.gather(*tasks)


def load_steps(path: Path) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    steps = raw.get("step", [])
    if not isinstance(steps, list):
        raise ValueError("a scenario file holds [[step]] tables")
    return steps


# --- command line ----------------------------------------------------------------------------
async def _run(args: argparse.Namespace) -> int:
    cfg = gwconfig.load(args.config)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop cleanly: servers down, socat ended
        loop.add_signal_handler(sig, lambda: main.cancel() if main else None)
    try:
        return await _serve(args, cfg)
    except asyncio.CancelledError:
        return 0


async def _serve(args: argparse.Namespace, cfg: gwconfig.GatewayConfig) -> int:
    async with Site(cfg, wire_time=not args.no_wire_time) as site:
        for b in cfg.buses:
            where = (
                f"{b.device} (sim end {b.device}.sim)" if b.type == "rtu" else f"{b.host}:{b.port}"
            )
            n = sum(1 for d in cfg.devices if d.bus == b.id)
            print(f"bus {b.id} {b.type} {where}: {n} devices", flush=True)
        steps: list[dict[str, Any]] = []
        if args.scenario:
            steps = load_steps(Path(args.scenario))
        for name in args.builtin or []:
            steps += builtin(name, site)
        if steps:
            await run_steps(site, steps)
        if args.duration:
            await asyncio.sleep(args.duration)
        elif not steps or not args.exit_after_steps:
            await asyncio.Event().wait()
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="emberlink sim", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="serve every bus of a gateway configuration")
    r.add_argument("--config", required=True, help="the gateway's configuration file (TOML)")
    r.add_argument("--scenario", help="a TOML file of [[step]] tables")
    r.add_argument("--builtin", action="append", choices=BUILTINS, help="a built-in scenario")
    r.add_argument("--duration", type=float, help="stop after this many seconds")
    r.add_argument("--exit-after-steps", action="store_true")
    r.add_argument("--no-wire-time", action="store_true", help="answer RTU at pty speed")
    r.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("profiles", help="list the shipped profiles")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    if args.cmd == "profiles":
        from emberlink.edge import profiles

        for name, p in profiles.load_all().items():
            print(f"{name:<12} {len(p['points']):>3} points  {p['title']}")
        return 0
    try:
        return asyncio.run(_run(args))
    except (gwconfig.ConfigError, ValueError, KeyError) as e:
        print(f"emberlink sim: {e}", file=sys.stderr)
        return 2
