"""Gateway benchmark: ``python -m emberlink.edge.bench [--alarms 1000] [--steady-s 60]``.

``--alarms N`` is per lane: the run goes on until N alarms have reached the broker from the
9600-baud RTU bus (the hard case) and N from the TCP devices (both lanes toggle meanwhile;
about 6 minutes for the default 1,000 + 1,000 on a 2-core host).

Prints figures beside the bounds they answer to; never pass/fail (DESIGN.md, quality gates).

1. Resources: the gateway as its own process (``emberlink gateway run``) polling 31 simulated
   devices on one 9600-baud RTU bus (socat ptys, every answer held for its wire time at 9600
   8N2: 11-bit characters) plus 10 Modbus TCP devices, publishing to a real Mosquitto.
   CPU (utime+stime from /proc) and resident memory over a steady window.
2. Alarm latency: panels' fire bits toggled at random moments (each toggle is one FIRE_ALARM
   event, active or normal; a panel toggles again once its last change has arrived, after a
   pause uniform over its status poll period, so changes land at a random phase of the
   cycle); latency = register change in the simulator -> PUBACK in the gateway (both
   CLOCK_MONOTONIC, system-wide on Linux). p50/p99 against the 10 s bound of GB 26875.1
   §4.1.1.4 and against the status poll period + 250 ms.
3. Outbox: stored events per second with durability on (WAL, synchronous=FULL), one
   transaction per event and in batches; and the time a fire alarm takes to reach PUBACK when
   10,000 telemetry events are queued ahead of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from emberlink.edge import config
from emberlink.edge.config import MqttConfig
from emberlink.edge.health import rss_kb
from emberlink.edge.outbox import Outbox
from emberlink.edge.uplink import Uplink
from emberlink.protocol import codes, topics, wire
from emberlink.protocol.messages import Event
from emberlink.tools.simulator import Site

GW = 900
NATIONAL_BOUND_S = 10.0  # GB 26875.1-2011 §4.1.1.4: fire alarm to the centre within 10 s
GOAL_MARGIN_S = 0.25  # the goal: p99 within the poll period + 250 ms
RTU_STATUS_MS = 2000  # 31 units at 9600 baud: a 1 s status cycle does not fit (standards §6.3)
TCP_STATUS_MS = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return proc, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def site_config(tmp: Path, broker_port: int) -> Path:
    """31 units on one 9600-baud RTU bus + 10 TCP devices, each TCP device its own endpoint."""
    rtu_profiles = ["fire_panel"] * 8 + ["acrel_asj"] * 12 + ["efm_multi"] * 6 + ["smoke_loop"] * 5
    lines = [
        f'[gateway]\nid = {GW}\ndata_dir = "var"\nheartbeat_s = 30\nseries_s = 60',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\npuback_timeout_s = 10',
        '[outbox]\nsynchronous = "full"',
        f'[[bus]]\nid = 1\ntype = "rtu"\ndevice = "{tmp}/rtu1"\nbaud = 9600\nstopbits = 2\n'
        "turnaround_ms = 20\nretries = 0",
    ]
    for i, prof in enumerate(rtu_profiles):
        unit = i + 1
        lines.append(
            f'[[device]]\nbus = 1\nunit = {unit}\nprofile = "{prof}"\nname = "rtu-{unit}"\n'
            f"status_ms = {RTU_STATUS_MS}\ntelemetry_ms = 10000"
        )
    for j in range(10):
        bus = 10 + j
        prof = "fire_panel" if j < 5 else "efm_multi"
        lines.append(
            f'[[bus]]\nid = {bus}\ntype = "tcp"\nhost = "127.0.0.1"\nport = {free_port()}\n'
            "turnaround_ms = 20"
        )
        lines.append(
            f'[[device]]\nbus = {bus}\nunit = 1\nprofile = "{prof}"\nname = "tcp-{j + 1}"\n'
            f"status_ms = {TCP_STATUS_MS}\ntelemetry_ms = 5000"
        )
    p = tmp / "gateway.toml"
    p.write_text("\n\n".join(lines) + "\n")
    return p


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


async def run_site(tmp: Path, n_alarms: int, steady_s: float) -> dict[str, Any]:
    broker, port = start_broker(tmp)
    cfg_path = site_config(tmp, port)
    cfg = config.load(cfg_path)
    puback_log = tmp / "puback.log"
    env = dict(os.environ, EMBERLINK_PUBACK_LOG=str(puback_log))
    out: dict[str, Any] = {}
    try:
        plan = subprocess.run(
            [sys.executable, "-m", "emberlink.tools.cli", "gateway", "check", "--config",
             str(cfg_path)], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        out["plan"] = plan.strip().splitlines()[:3]
        async with Site(cfg) as site, aiomqtt.Client("127.0.0.1", port) as sub:
            await sub.subscribe(topics.topic(GW, "ev"), qos=1)
            arrivals: list[tuple[int, int, int, float]] = []  # seq, src, state, mono
            arrived: dict[int, int] = {}  # src -> arrivals so far

            async def receive() -> None:
                async for m in sub.messages:
                    b = wire.open_batch(m.payload if isinstance(m.payload, bytes) else b"")
                    now = time.monotonic()
                    for s, e in b.seqs():
                        if e.kind == codes.FIRE_ALARM and e.code == 10:
                            arrivals.append((s, e.src, e.state, now))
                            arrived[e.src] = arrived.get(e.src, 0) + 1

            rx = asyncio.create_task(receive())
            gw = subprocess.Popen(
                [sys.executable, "-m", "emberlink.tools.cli", "gateway", "run", "--config",
                 str(cfg_path)], env=env, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await asyncio.sleep(10)  # connect, first full cycle, series buffers fill
                c0, t0 = cpu_s(gw.pid), time.monotonic()
                rss = []
                while time.monotonic() - t0 < steady_s:
                    await asyncio.sleep(1)
                    rss.append(rss_kb(gw.pid))
                out["cpu_pct"] = 100 * (cpu_s(gw.pid) - c0) / (time.monotonic() - t0)
                out["rss_mb"] = max(rss) / 1024
                out["rss_mb_median"] = statistics.median(rss) / 1024
                out["steady_s"] = steady_s
                health = (cfg.outbox.path.parent / "health.json").read_text()
                out["health"] = health
                # alarm latency: toggle fire bits of every panel at random moments
                panels = [d for d in cfg.devices if d.profile["name"] == "fire_panel"]
                changes: list[tuple[int, int, float, str]] = []  # src, state, mono, bus kind
                completed = {"rtu": 0, "tcp": 0}  # changes whose event has arrived, per lane
                done = {"rtu": asyncio.Event(), "tcp": asyncio.Event()}
                c1, t1 = cpu_s(gw.pid), time.monotonic()

                async def toggler(d: config.DeviceConfig) -> None:
                    m = site.device(d.name)
                    src = (d.bus << 24) | (d.unit << 16) | 1
                    state = 0
                    kind = "rtu" if d.bus == 1 else "tcp"
                    period = (RTU_STATUS_MS if kind == "rtu" else TCP_STATUS_MS) / 1000
                    while not done[kind].is_set():
                        # a pause uniform over the device's status period after the last
                        # arrival: the change lands at a random phase of its poll cycle
                        await asyncio.sleep(random.uniform(0, period))
                        state ^= 1
                        n = arrived.get(src, 0)
                        m.set_bit("system_status", 1, bool(state))
                        changes.append((src, state, time.monotonic(), kind))
                        while arrived.get(src, 0) <= n:
                            if done[kind].is_set():
                                return
                            await asyncio.sleep(0.01)
                        completed[kind] += 1
                        if completed[kind] >= n_alarms:
                            done[kind].set()

                await asyncio.wait_for(
                    asyncio.gather(*(toggler(d) for d in panels)), timeout=60 + n_alarms
                )
                out["cpu_pct_alarms"] = 100 * (cpu_s(gw.pid) - c1) / (time.monotonic() - t1)
                await asyncio.sleep(2)
            finally:
                gw.send_signal(signal.SIGTERM)
                try:
                    gw.wait(20)
                except subprocess.TimeoutExpired:
                    gw.kill()
                rx.cancel()
        puback = {}
        for line in puback_log.read_text().splitlines():
            _, seq, at = line.split()
            puback[int(seq)] = float(at)
        # match each change to the arrival of its event (same src, same state, in order)
        by_src: dict[int, list[tuple[int, int, float]]] = {}
        for s, src, state, t_rx in arrivals:
            by_src.setdefault(src, []).append((s, state, t_rx))
        lat: dict[str, list[float]] = {"rtu": [], "tcp": [], "rx_rtu": [], "rx_tcp": []}
        idx: dict[int, int] = {}
        for src, state, t_change, kind in changes:
            evs = by_src.get(src, [])
            i = idx.get(src, 0)
            if i >= len(evs):
                continue
            idx[src] = i + 1
            s, st, t_arrived = evs[i]
            if st != state or s not in puback:
                continue
            lat[kind].append(puback[s] - t_change)
            lat["rx_" + kind].append(t_arrived - t_change)
        out["latency"] = lat
    finally:
        broker.terminate()
        broker.wait(5)
    return out


async def outbox_rates(tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for sync in ("full", "normal"):
        ob = Outbox(tmp / f"rate-{sync}.sqlite", synchronous=sync)
        ev = Event(codes.FIRE_ALARM, 0, 1, state=1, code=10)
        n = 1000
        t = time.perf_counter()
        for _ in range(n):
            ob.append(ev, 1_700_000_000_000)
        out[f"single_{sync}"] = n / (time.perf_counter() - t)
        tel = [(Event(codes.MEASUREMENT, 0, 2, period=1000, samples=[1, 2, 3, 4]), 1)] * 100
        t = time.perf_counter()
        for _ in range(50):
            ob.append_many(tel)
        out[f"batch100_{sync}"] = 5000 / (time.perf_counter() - t)
        ob.close()
    return out


async def alarm_behind_backlog(tmp: Path) -> float:
    broker, port = start_broker(tmp)
    try:
        ob = Outbox(tmp / "backlog.sqlite")
        ob.append_many(
            [(Event(codes.MEASUREMENT, 0, 2, period=1000, samples=[i]), 1) for i in range(10_000)]
        )
        up = Uplink(MqttConfig(port=port), GW, ob, birth_info=lambda: {0: "bench"},
                    now_ms=lambda: int(time.time() * 1000))  # fmt: skip
        acked: dict[int, float] = {}
        orig = up._on_puback

        def hook(p: Any) -> None:
            for s in range(p.seqs[0], p.seqs[1] + 1):
                acked[s] = time.monotonic()
            orig(p)

        up._on_puback = hook  # type: ignore[method-assign]
        task = asyncio.create_task(up.run())
        while up.connects == 0:
            await asyncio.sleep(0.005)
        t = time.monotonic()
        seq = ob.append(Event(codes.FIRE_ALARM, 0, 1, state=1, code=10), 2)
        up.wake()
        while seq not in acked:
            await asyncio.sleep(0.001)
        dt = acked[seq] - t
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ob.close()
        return dt
    finally:
        broker.terminate()
        broker.wait(5)


def report(site: dict[str, Any], rates: dict[str, float], backlog_s: float, args: Any) -> None:
    print("EmberLink edge gateway benchmark")
    print(f"  run: {args.started} -> {args.ended} UTC ({args.wall_s:.0f} s wall)")
    print(f"  host: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}")
    for line in site["plan"]:
        print(f"  {line.strip()}")
    print()
    print(f"1. Resources while polling 31 RTU units @ 9600 8N2 + 10 TCP devices "
          f"({site['steady_s']:.0f} s steady window)")  # fmt: skip
    print(f"   gateway CPU          {site['cpu_pct']:6.1f} % of one core "
          f"({site['cpu_pct_alarms']:.1f} % while alarms toggle)")  # fmt: skip
    print(f"   gateway RSS          {site['rss_mb']:6.1f} MB peak "
          f"({site['rss_mb_median']:.1f} MB median)")  # fmt: skip
    h = json.loads(site["health"])["health"]
    print(
        f"   polls ok / failed    {h['polls_ok']} / {h['polls_failed']} "
        f"(after {h['uptime_s']} s; failures are deadlines missed under this host's load)"
    )
    print()
    lat = site["latency"]
    n = len(lat["rtu"]) + len(lat["tcp"])
    print(f"2. Alarm latency, register change -> PUBACK ({n} alarms, >= {args.alarms} per lane "
          "asked)")  # fmt: skip
    print(f"   {'link':<8}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'poll+250':>10}{'national':>10}")  # fmt: skip
    for kind, period in (("rtu", RTU_STATUS_MS), ("tcp", TCP_STATUS_MS)):
        xs = lat[kind]
        if not xs:
            continue
        goal = period + GOAL_MARGIN_S * 1000
        print(f"   {kind:<8}{len(xs):>6}{pct(xs, 50) * 1000:>9.0f}{pct(xs, 99) * 1000:>9.0f}"
              f"{max(xs) * 1000:>9.0f}{goal:>10.0f}{NATIONAL_BOUND_S * 1000:>10.0f}")  # fmt: skip
    for kind in ("rtu", "tcp"):
        xs = lat["rx_" + kind]
        if xs:
            print(f"   (cross-check, change -> subscriber receipt, {kind}: "
                  f"p50 {pct(xs, 50) * 1000:.0f} ms, p99 {pct(xs, 99) * 1000:.0f} ms)")  # fmt: skip
    print()
    print("3. Outbox (SQLite WAL) on this disk")
    print(f"   one event per transaction, synchronous=FULL   {rates['single_full']:8.0f} events/s")
    print(
        f"   100 events per transaction, synchronous=FULL  {rates['batch100_full']:8.0f} events/s"
    )
    print(
        f"   one event per transaction, synchronous=NORMAL {rates['single_normal']:8.0f} events/s"
    )
    print(f"   fire alarm behind 10,000 queued telemetry: PUBACK after {backlog_s * 1000:.0f} ms")


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


async def amain(args: Any) -> int:
    args.started, t0 = utc_now(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="emberlink-bench-") as d:
        tmp = Path(d)
        rates = await outbox_rates(tmp)
        backlog = await alarm_behind_backlog(tmp)
        site = await run_site(tmp, args.alarms, args.steady_s)
        args.ended, args.wall_s = utc_now(), time.monotonic() - t0
        report(site, rates, backlog, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emberlink.edge.bench", description=__doc__)
    ap.add_argument(
        "--alarms", type=int, default=1000, help="alarms per lane (RTU bus, TCP devices)"
    )
    ap.add_argument("--steady-s", type=float, default=60.0)
    args = ap.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
