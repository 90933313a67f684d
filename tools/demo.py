"""``emberlink demo``: the main job on one machine, end to end, with a live view.

It starts, each as its own process and all in a scratch folder:

1. an MQTT broker (``--broker``): a private ``mosquitto`` on a free port; when there is no
   ``mosquitto`` (``auto``, the default) or on request (``embedded``), the pure-Python amqtt
   broker (``emberlink.tools.embedded_broker``) on a free port, with the cloud's ingest on the
   plain topic filter, since amqtt has no ``$share/`` subscriptions; without amqtt installed,
   a broker already listening on 127.0.0.1:1883;
2. the cloud registry on SQLite: ``emberlink cloud migrate``, ``serve`` and ``ingest``;
3. a simulated site: ``emberlink sim run`` with a fire-alarm panel, an Acrel ASJ
   residual-current relay and an analog smoke loop on a 9600-baud RTU bus (a real socat pty
   pair, with wire time), and a multi-channel electrical-fire detector over Modbus TCP;
4. the Pi gateway: ``emberlink gateway run``.

Then it registers the site and the gateway in the cloud, plays a scripted scenario (a residual
current ramp past the setpoint, smoke rising in a corridor, the panel's fire bit, a device that
goes silent and comes back) and prints, as they arrive in the cloud database, the events, the
alarms and the gateway's health, with the cloud's API address. Ctrl-C (or ``--duration``)
stops everything cleanly: the gateway publishes its death, every child is ended.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from emberlink.protocol import codes
from emberlink.tools.testbroker import free_port

GATEWAY_ID = 1
HEARTBEAT_S = 5  # short, so the live view shows health changing within the demo
EMBERLINK = [sys.executable, "-m", "emberlink.tools.cli"]

SCENARIO = """
# The demo's script: times are seconds after the simulator starts.
[[step]]
at_s = 8
device = "residual-AL1"
action = "ramp"
point = "residual_current"
from = 40
to = 480
over_s = 12

[[step]]
at_s = 26
device = "smoke-loop-1"
action = "ramp"
point = "obscuration_1"
from = 50
to = 600
over_s = 10

[[step]]
at_s = 40
device = "panel-1"
action = "bit"
point = "system_status"
bit = 1
on = true

[[step]]
at_s = 48
device = "efm-main"
action = "silent"

[[step]]
at_s = 70
device = "efm-main"
action = "ok"
"""


BROKER_CHOICES = ("auto", "mosquitto", "embedded")


def find_mosquitto(path: str | None = None) -> str | None:
    """``mosquitto`` on PATH, or in the ``sbin`` folder beside a PATH ``bin`` folder.

    Debian installs it as /usr/sbin/mosquitto, which is not on an ordinary user's PATH.
    """
    dirs = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    sbins = [str(Path(d).parent / "sbin") for d in dirs if d and Path(d).name == "bin"]
    return shutil.which("mosquitto", path=os.pathsep.join([*dirs, *sbins]))


def have_amqtt() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def choose_broker(mode: str, mosquitto: str | None) -> tuple[str, str]:
    """(kind, why): kind is "mosquitto", "embedded", "local" (127.0.0.1:1883) or "none"."""
    if mode == "mosquitto":
        return ("mosquitto", "--broker mosquitto") if mosquitto else ("none", "mosquitto not found")
    if mode == "embedded":
        if have_amqtt():
            return "embedded", "--broker embedded"
        return "none", "amqtt is not installed (pip install 'emberlink[demo]')"
    if mosquitto:
        return "mosquitto", "found"
    if have_amqtt():
        return "embedded", "mosquitto not found"
    if port_open(1883):
        return "local", "mosquitto not found, amqtt not installed"
    return "none", "mosquitto not found and amqtt not installed"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def rtu_bus(work: Path, rtu_tcp_port: int | None) -> str:
    """Bus 1: the 9600-baud RTU pty pair, or, without ``socat`` on this machine, the same three
    devices served over Modbus TCP on ``rtu_tcp_port`` (the gateway and profiles are the same;
    only the link differs)."""
    if rtu_tcp_port is None:
        return f"""type = "rtu"
device = "{work / "bus1"}"
baud = 9600
stopbits = 2
turnaround_ms = 50"""
    return f"""type = "tcp"
host = "127.0.0.1"
port = {rtu_tcp_port}"""


def site_config(work: Path, mqtt_port: int, tcp_port: int, rtu_tcp_port: int | None = None) -> str:
    return f"""
[gateway]
id = {GATEWAY_ID}
data_dir = "{work / "gateway-var"}"
heartbeat_s = {HEARTBEAT_S}
series_s = 10
serial = "DEMO-PI-0001"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
cloud_ack = true

[[bus]]
id = 1
{rtu_bus(work, rtu_tcp_port)}

[[bus]]
id = 2
type = "tcp"
host = "127.0.0.1"
port = {tcp_port}

[[device]]
bus = 1
unit = 1
profile = "fire_panel"
name = "panel-1"
zone = "Building A"

[[device]]
bus = 1
unit = 2
profile = "acrel_asj"
name = "residual-AL1"
zone = "A1 distribution board"

[[device]]
bus = 1
unit = 3
profile = "smoke_loop"
name = "smoke-loop-1"
zone = "A1 corridor"

[[device]]
bus = 2
unit = 1
profile = "efm_multi"
name = "efm-main"
zone = "Main switchroom"
"""


class Demo:
    """The processes of the demo, started in order and stopped in reverse."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.procs.append((name, p))

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)


def wait_until(what: str, ok: Any, demo: Demo, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        demo.check()
        if ok():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def src_name(src: int, names: dict[tuple[int, int], str]) -> str:
    if src == 0:
        return "gateway"
    bus, unit, point = src >> 24, (src >> 16) & 0xFF, src & 0xFFFF
    return f"{names.get((bus, unit), f'bus{bus}/unit{unit}')}#{point}"


def describe(ev: dict[str, Any], names: dict[tuple[int, int], str]) -> str:
    kind = ev["kind_name"]
    parts = [kind, src_name(ev["src"], names)]
    if ev.get("state") is not None:
        parts.append(codes.name_of(codes.STATE_NAMES, ev["state"]))
    if ev.get("code") is not None and ev["kind"] not in (codes.MAINTENANCE,):
        parts.append(codes.name_of(codes.CONDITION_NAMES, ev["code"]))
    data = ev.get("data") or {}
    if "val" in data:
        exp = data.get("exp", 0)
        unit = codes.name_of(codes.UNIT_NAMES, data["unit"]) if "unit" in data else ""
        parts.append(f"{data['val'] * 10.0**exp:g} {unit}".strip())
    if kind == "measurement" and "samples" in data:
        s = data["samples"]
        exp = data.get("exp", 0)
        unit = codes.name_of(codes.UNIT_NAMES, data["unit"]) if "unit" in data else ""
        parts.append(f"{len(s)} samples, last {s[-1] * 10.0**exp:g} {unit}".strip())
    latency = ev["received_ms"] - ev["t_ms"]
    return f"{' '.join(str(p) for p in parts)}  (in the cloud {latency / 1000:.2f} s later)"


def run(args: argparse.Namespace) -> int:
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="emberlink-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    demo = Demo(work)
    token = "demo-" + secrets.token_urlsafe(32)
    http_port = args.http_port or free_port()
    tcp_port = free_port()
    base = f"http://127.0.0.1:{http_port}/api/v1"

    mosquitto = find_mosquitto()
    kind, why = choose_broker(args.broker, mosquitto)
    if kind == "none":
        print(
            f"emberlink demo: no MQTT broker ({why}): install Mosquitto "
            "(apt-get install mosquitto) or the demo extra (pip install 'emberlink[demo]'), "
            "or start a broker on 127.0.0.1:1883",
            file=sys.stderr,
        )
        return 1
    mqtt_port = 1883 if kind == "local" else free_port()
    if kind == "mosquitto" and mosquitto:
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
        demo.start("mosquitto", [mosquitto, "-c", str(conf)])
        banner = f"broker: mosquitto ({mosquitto}) on 127.0.0.1:{mqtt_port}"
    elif kind == "embedded":
        demo.start(
            "broker",
            [sys.executable, "-m", "emberlink.tools.embedded_broker", "--port", str(mqtt_port)],
        )
        banner = f"broker: embedded amqtt on 127.0.0.1:{mqtt_port} ({why})"
    else:
        banner = f"broker: the one already on 127.0.0.1:1883 ({why})"

    rtu_tcp_port = None
    if args.no_rtu or not shutil.which("socat"):
        rtu_tcp_port = free_port()
        why_tcp = "--no-rtu" if args.no_rtu else "socat not found; apt-get install socat for it"
        banner += (
            f"\nbus 1: Modbus TCP on 127.0.0.1:{rtu_tcp_port} instead of the RTU pty ({why_tcp})"
        )
    site = work / "site.toml"
    site.write_text(site_config(work, mqtt_port, tcp_port, rtu_tcp_port))
    scenario = Path(args.scenario).read_text() if args.scenario else SCENARIO
    (work / "scenario.toml").write_text(scenario)
    env = dict(os.environ)
    env.update(
        EMBERLINK_DATABASE_URL=f"sqlite:///{work / 'cloud.db'}",
        EMBERLINK_MQTT_HOST="127.0.0.1",
        EMBERLINK_MQTT_PORT=str(mqtt_port),
        EMBERLINK_BOOTSTRAP_ADMIN_TOKEN=token,
        # health hysteresis of seconds, not the default 30 s, so the live view shows the
        # gateway's unsynced clock at boot cleared by the cloud's time sync within the demo
        EMBERLINK_MIN_DWELL_S="3",
        # amqtt has no $share/ subscriptions; the demo runs one ingest worker
        EMBERLINK_MQTT_SHARED_SUBSCRIPTION="false" if kind == "embedded" else "true",
    )
    print(f"EmberLink demo in {work}", flush=True)
    print(banner, flush=True)
    try:
        if kind == "embedded":  # its readiness line (a bare port probe makes amqtt log errors)
            log = work / "broker.log"
            wait_until("the broker", lambda: "listening" in log.read_text(errors="replace"), demo)
        elif kind == "mosquitto":
            wait_until("the broker", lambda: port_open(mqtt_port), demo)
        subprocess.run([*EMBERLINK, "cloud", "migrate"], env=env, check=True, capture_output=True)
        demo.start("cloud-serve", [*EMBERLINK, "cloud", "serve", "--port", str(http_port)], env)
        demo.start("cloud-ingest", [*EMBERLINK, "cloud", "ingest"], env)
        wait_until("the cloud API", lambda: port_open(http_port), demo)
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        wait_until("the cloud API", lambda: client.get("/fleet").status_code == 200, demo)
        org = client.post("/organisations", json={"name": "Demo district"}).json()
        unit = client.post(
            "/units",
            json={
                "organisation_id": org["id"],
                "name": "Community micro fire station No. 1",
                "kind": "micro_station",
                "address": "1 Demo Road",
            },
        ).json()
        site_row = client.post("/sites", json={"unit_id": unit["id"], "name": "Building A"}).json()
        client.post(
            "/gateways",
            json={
                "id": GATEWAY_ID,
                "site_id": site_row["id"],
                "name": "micro-station gateway",
                "serial": "DEMO-PI-0001",
                "heartbeat_s": HEARTBEAT_S,
            },
        ).raise_for_status()
        names = {
            (1, 1): "panel-1",
            (1, 2): "residual-AL1",
            (1, 3): "smoke-loop-1",
            (2, 1): "efm-main",
        }
        for (bus, addr), name in names.items():
            client.post(
                "/devices",
                json={"gateway_id": GATEWAY_ID, "bus": bus, "unit_addr": addr, "name": name},
            ).raise_for_status()

        demo.start(
            "simulator",
            [
                *EMBERLINK,
                "sim",
                "run",
                "--config",
                str(site),
                "--scenario",
                str(work / "scenario.toml"),
            ],
        )
        wait_until(
            "the simulated site",
            lambda: (
                port_open(tcp_port)
                and (port_open(rtu_tcp_port) if rtu_tcp_port else (work / "bus1").exists())
            ),
            demo,
        )
        demo.start("gateway", [*EMBERLINK, "gateway", "run", "--config", str(site)])

        print(f"cloud API: {base}  (docs http://127.0.0.1:{http_port}/docs, token {token})")
        if args.scenario:
            print(f"scenario: {args.scenario}; Ctrl-C stops.\n", flush=True)
        else:
            print("scenario: residual-current ramp at 8 s, smoke at 26 s, panel fire at 40 s,")
            print("          EFM device silent 48-70 s; Ctrl-C stops.\n", flush=True)
        live_view(client, demo, names, args.duration, args.all)
        return 0
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as e:
        print(f"emberlink demo: {e}", file=sys.stderr)
        print(f"logs in {work}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping: gateway, simulator, cloud, broker ...")
        demo.stop()
        if not args.dir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


TELEMETRY = (codes.MEASUREMENT, codes.HEALTH)


def live_view(
    client: httpx.Client,
    demo: Demo,
    names: dict[tuple[int, int], str],
    duration: float,
    show_all: bool = False,
) -> None:
    last_id = 0
    last_health = ""
    started = time.monotonic()
    last_summary = started
    alarms_seen: dict[int, str] = {}
    telemetry = {codes.MEASUREMENT: 0, codes.HEALTH: 0}
    while duration <= 0 or time.monotonic() - started < duration:
        demo.check()
        page = client.get("/events", params={"limit": 500}).json()["data"]
        for ev in sorted(page, key=lambda e: e["id"]):
            if ev["id"] <= last_id:
                continue
            last_id = ev["id"]
            if ev["kind"] in TELEMETRY:
                telemetry[ev["kind"]] += 1
                if not show_all:
                    continue
            t = dt.datetime.fromtimestamp(ev["t_ms"] / 1000, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
            print(f"{t}  seq {ev['seq']:>4}  {describe(ev, names)}", flush=True)
        if not show_all and time.monotonic() - last_summary >= 15:
            last_summary = time.monotonic()
            print(
                f"          stored so far: {telemetry[codes.MEASUREMENT]} measurement series, "
                f"{telemetry[codes.HEALTH]} health reports",
                flush=True,
            )
        for a in client.get("/alarms", params={"limit": 100}).json()["data"]:
            key = f"{a['status']}/{a['condition_active']}"
            if alarms_seen.get(a["id"]) != key:
                alarms_seen[a["id"]] = key
                print(
                    f"          ALARM #{a['id']} {a['kind_name']} at "
                    f"{src_name(a['src'], names)}: {a['status']}"
                    f"{' (condition active)' if a['condition_active'] else ''}",
                    flush=True,
                )
        gw = client.get(f"/gateways/{GATEWAY_ID}").json()
        h = gw.get("health") or {}
        state = f"{h.get('status')} ({h.get('reason')})"
        if state != last_health:  # a line per change of health, not per outbox depth
            last_health = state
            depth = h.get("outbox_depth")
            queued = "" if depth is None else f", {depth} events queued on the gateway"
            print(f"          gateway {GATEWAY_ID}: {state}{queued}", flush=True)
        time.sleep(1.0)
    fleet = client.get("/fleet").json()
    print("\nfleet:", json.dumps(fleet))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="emberlink demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)"
    )
    p.add_argument("--http-port", type=int, default=0, help="cloud API port (default: a free one)")
    p.add_argument("--dir", help="work in this folder and keep it (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--all", action="store_true", help="also print every telemetry event")
    p.add_argument(
        "--broker",
        choices=BROKER_CHOICES,
        default="auto",
        help="auto (default): a private mosquitto when there is one, else the embedded "
        "pure-Python amqtt broker; mosquitto or embedded: that one or fail",
    )
    p.add_argument(
        "--scenario",
        help="play this scenario file (the simulator's [[step]] format) instead of the built-in "
        "script",
    )
    p.add_argument(
        "--no-rtu",
        action="store_true",
        help="serve the RTU bus's devices over Modbus TCP (the default when socat is missing)",
    )
    args = p.parse_args(argv)
    if args.scenario and not Path(args.scenario).is_file():
        p.error(f"no scenario file {args.scenario}")
    return run(args)
