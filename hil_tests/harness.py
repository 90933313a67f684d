"""The bench of the hardware-in-the-loop scenarios: real processes, real broker, real database.

Roles (as in aioble's multitests): the *site* (simulated Modbus devices, run in a thread of the
test process so a scenario knows the instant it changes a register), the *gateway* (the real
``emberlink gateway run`` process), the *broker* (a private Mosquitto on a free port that can be
restarted on the same port), a *proxy* between gateway and broker that can cut the network, and
the *cloud* (``emberlink cloud serve`` and ``ingest`` processes on a PostgreSQL database created
for the session and dropped at the end).

Every wait names what it waits for and has a named timeout; every process is started in its own
session and its whole group is killed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import psycopg
from emberlink.edge import config as gwconfig
from emberlink.protocol import messages, topics
from emberlink.tools import simulator

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
EMBERLINK = [sys.executable, "-m", "emberlink.tools.cli"]
PG_ADMIN = os.environ.get("EMBERLINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Named timeouts (seconds). Generous: other engineers' tests share this 2-core machine.
PROCESS_START_S = 30.0  # a broker, an API or a gateway is up and answering
PROCESS_STOP_S = 15.0  # SIGTERM to exit (the gateway flushes for 5 s, then its death)
CONVERGE_S = 60.0  # after a fault is lifted, every stored event has reached the database
POLL_S = 0.1  # how often a wait re-checks its condition

RESULTS = Path(__file__).parent / ".results"  # one JSON line per scenario, read by report.py
# This session's results: one file per pytest process, so concurrent runs never mix them.
RESULTS_FILE = RESULTS / f"results-{os.getpid()}.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
        return True
    return False


def now_ms() -> int:
    return int(time.time() * 1000)


class WaitTimeout(AssertionError, TimeoutError):
    """A named wait ran out of time; carries what was awaited."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:.0f} s waiting for {what}")
        self.what = what


def wait_until(what: str, pred: Callable[[], Any], timeout_s: float) -> Any:
    """Poll ``pred`` until it returns something truthy (returned) or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise WaitTimeout(what, timeout_s)
        time.sleep(POLL_S)


class Proc:
    """A child process in its own session, output to a log file; stopped by process group."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log = log_dir / f"{name}.log"
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.p is not None and self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the whole group: no flush, no goodbye."""
        self.signal(signal.SIGKILL)
        if self.p is not None:
            self.p.wait(PROCESS_STOP_S)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after PROCESS_STOP_S; the exit code."""
        if self.p is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(PROCESS_STOP_S)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.p.wait(PROCESS_STOP_S)
        return self.p.returncode

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-n:]
        return ""


# --- broker ------------------------------------------------------------------------------------
class Broker:
    """A private Mosquitto on a fixed free port, restartable (the port stays the same)."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.work = work
        self.conf = work / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{user}allow_anonymous true\npersistence false\n"
        )
        self.proc = Proc("mosquitto", [MOSQUITTO, "-c", str(self.conf)], work)

    def start(self) -> Broker:
        self.proc.start()
        wait_until("mosquitto to listen", lambda: port_open(self.port), PROCESS_START_S)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def restart(self, down_s: float) -> None:
        self.proc.kill9()
        time.sleep(down_s)
        self.start()

    def publish(self, topic: str, payload: bytes) -> None:
        """One QoS 1 publish (the cloud has no command route yet: the test plays the cloud)."""
        subprocess.run(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic, "-s"],
            input=payload,
            check=True,
            timeout=PROCESS_START_S,
        )

    def command(self, gw: int, op: int, args: dict[int, int] | None = None) -> None:
        cmd = messages.Command(gw, secrets.randbelow(2**31), op, args)
        self.publish(topics.topic(gw, "cmd"), messages.encode(cmd))


# --- network partition -------------------------------------------------------------------------
class Proxy:
    """A TCP relay gateway <-> broker that can cut the network: while cut, open connections
    are dropped without a word (frozen, then closed) and new ones are refused."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", self.port))
        self._srv.listen(16)
        self._srv.settimeout(0.2)
        self._t = threading.Thread(target=self._accept, name="proxy", daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except (TimeoutError, OSError):
                continue
            if self.cut.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:  # the broker is down: reset, as the broker's host itself would
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
                continue
            with self._lock:
                self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        a.settimeout(0.2)
        while not self._stop.is_set():
            if self.cut.is_set():  # frozen: nothing passes, as on a dead uplink
                time.sleep(0.05)
                continue
            try:
                data = a.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                b.sendall(data)
            except OSError:
                break
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()

    def partition(self) -> None:
        self.cut.set()

    def heal(self) -> None:
        with self._lock:  # connections frozen during the cut are dead on both sides now
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.close()
            self._conns.clear()
        self.cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        self.heal()
        self._t.join(2)


# --- cloud -------------------------------------------------------------------------------------
class Cloud:
    """API and ingest workers on a database made for this bench and dropped after: PostgreSQL
    (the production database) or, with ``database="sqlite"``, the embedded default, a file
    shared by the API and the ingest worker processes as in the demo."""

    def __init__(
        self, work: Path, mqtt_port: int, database: str = "postgresql", **settings: str
    ) -> None:
        if database not in ("postgresql", "sqlite"):
            raise ValueError(f"database must be postgresql or sqlite, not {database!r}")
        self.work = work
        self.database = database
        self.db = f"emberlink_hil_{os.getpid()}_{secrets.token_hex(4)}"
        if database == "sqlite":
            self.sqlite_path = work / "cloud.db"
            self.url = f"sqlite:///{self.sqlite_path}"
        else:
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.token = "hil-" + secrets.token_urlsafe(32)
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            EMBERLINK_DATABASE_URL=self.url,
            EMBERLINK_MQTT_HOST="127.0.0.1",
            EMBERLINK_MQTT_PORT=str(mqtt_port),
            EMBERLINK_BOOTSTRAP_ADMIN_TOKEN=self.token,
            EMBERLINK_MIN_DWELL_S="2",  # hysteresis short enough to see transitions in a test
            EMBERLINK_SWEEP_INTERVAL_S="0.5",
            EMBERLINK_FLUSH_MS="100",
        )
        self.env.update({f"EMBERLINK_{k.upper()}": v for k, v in settings.items()})
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self._n = 0
        self.http: httpx.Client | None = None
        self.duplicates_seen = 0  # duplicate deliveries reported by stopped ingest workers

    def start(self) -> Cloud:
        if self.database == "postgresql":
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{self.db}"')
        subprocess.run(
            [*EMBERLINK, "cloud", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.api = Proc(
            "cloud-api",
            [*EMBERLINK, "cloud", "serve", "--port", str(self.http_port)],
            self.work,
            self.env,
        ).start()
        self.start_worker()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        wait_until("the cloud API", self._api_up, PROCESS_START_S)
        return self

    def _api_up(self) -> bool:
        assert self.http is not None
        try:
            return self.http.get("/fleet").status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self) -> Proc:
        self._n += 1
        p = Proc(f"cloud-ingest-{self._n}", [*EMBERLINK, "cloud", "ingest"], self.work, self.env)
        self.workers.append(p.start())
        wait_until(
            "the ingest worker to subscribe", lambda: "subscribed" in p.tail(), PROCESS_START_S
        )
        return p

    def stop_worker(self, p: Proc) -> None:
        p.stop()
        self.duplicates_seen += _duplicates_in(p.tail(100_000))

    def register(self, gw: int, heartbeat_s: int, devices: list[tuple[int, int, str]]) -> None:
        """Organisation, unit, site, gateway and its devices, through the API."""
        assert self.http is not None
        h = self.http
        org = h.post("/organisations", json={"name": f"HIL {gw}"}).json()
        unit = h.post(
            "/units",
            json={
                "organisation_id": org["id"],
                "name": f"HIL unit {gw}",
                "kind": "micro_station",
                "address": "bench",
            },
        ).json()
        site = h.post("/sites", json={"unit_id": unit["id"], "name": f"HIL site {gw}"}).json()
        h.post(
            "/gateways",
            json={"id": gw, "site_id": site["id"], "name": f"hil-{gw}", "heartbeat_s": heartbeat_s},
        ).raise_for_status()
        for bus, addr, name in devices:
            h.post(
                "/devices", json={"gateway_id": gw, "bus": bus, "unit_addr": addr, "name": name}
            ).raise_for_status()

    def command(self, gw: int, op: str, **args: int) -> dict[str, Any]:
        """An operator's command through the cloud API (recorded, then published to the
        gateway); the command's row as the API returns it."""
        assert self.http is not None
        r = self.http.post(f"/gateways/{gw}/commands", json={"op": op, "args": args})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of ``query`` (``%s`` placeholders on both databases; JSON columns come back
        decoded on both)."""
        if self.database == "postgresql":
            with psycopg.connect(self.url, autocommit=True) as c:
                return c.execute(query, args).fetchall()  # type: ignore[arg-type]
        db = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(query.replace("%s", "?"), args).fetchall()
        finally:
            db.close()
        return [tuple(_json_or_value(v) for v in r) for r in rows]

    def stop(self) -> None:
        try:
            for p in self.workers:
                if p.alive:
                    self.stop_worker(p)
            if self.api:
                self.api.stop()
            if self.http:
                self.http.close()
        finally:
            if self.database == "postgresql":
                with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def _json_or_value(v: Any) -> Any:
    """SQLite keeps JSON columns as text: decode the objects, leave every other value alone."""
    if isinstance(v, str) and v[:1] == "{":
        with contextlib.suppress(ValueError):
            return json.loads(v)
    return v


def _duplicates_in(log: str) -> int:
    return sum(int(m) for m in re.findall(r"stored, (\d+) duplicates", log))


# --- site --------------------------------------------------------------------------------------
class SiteThread:
    """The simulated devices (``emberlink.tools.simulator.Site``) on an event loop of their own
    thread, so a synchronous test can change a register and know the instant it did."""

    def __init__(self, cfg_path: Path, wire_time: bool = True) -> None:
        self.cfg = gwconfig.load(cfg_path)
        self.wire_time = wire_time
        self.loop = asyncio.new_event_loop()
        self._ready: Future[simulator.Site] = Future()
        self._stop: asyncio.Event | None = None
        self._t = threading.Thread(target=self._run, name="site", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with simulator.Site(self.cfg, wire_time=self.wire_time) as site:
                self._ready.set_result(site)
                await self._stop.wait()
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)

    def __enter__(self) -> SiteThread:
        self._t.start()
        self.site = self._ready.result(PROCESS_START_S)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._t.join(PROCESS_STOP_S)

    def step(self, **step: Any) -> int:
        """Apply one simulator step now (``apply_step``); the UTC ms when it began. A ramp
        runs in the background on the site's loop."""
        t = now_ms()
        fut = asyncio.run_coroutine_threadsafe(simulator.apply_step(self.site, step), self.loop)
        if step["action"] != "ramp":
            fut.result(5)
        return t

    def device(self, name: str) -> simulator.SimulatedDevice:
        return self.site.device(name)


# --- gateway -----------------------------------------------------------------------------------
class Gateway:
    """``emberlink gateway run`` as a process: start, SIGTERM, kill -9, restart."""

    def __init__(self, cfg_path: Path, work: Path) -> None:
        self.cfg_path = cfg_path
        self.cfg = gwconfig.load(cfg_path)
        self.work = work
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> Gateway:
        self.starts += 1
        self.proc = Proc(
            f"gateway-{self.cfg.id}",
            [*EMBERLINK, "gateway", "run", "--config", str(self.cfg_path)],
            self.work,
        ).start()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None

    def health(self) -> dict[str, Any]:
        p = self.cfg.outbox.path.parent / "health.json"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(p.read_text()))
        return {}


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop what was started, in reverse order, whatever happens."""
    try:
        yield
    finally:
        for t in reversed(things):
            with contextlib.suppress(Exception):
                t.stop() if hasattr(t, "stop") else t.close()
