"""The uplink against a real Mosquitto: PUBACK deletes, will and birth, cloud ack, commands,
alarm priority over a backlog, broker outage, silent link death, username/password."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from emberlink.edge import config
from emberlink.edge.config import MqttConfig
from emberlink.edge.outbox import Outbox
from emberlink.edge.uplink import OP_RESEND, LinkState, Uplink
from emberlink.protocol import cbor, codes, messages, topics, wire
from emberlink.protocol.errors import ProtocolError
from emberlink.protocol.messages import Batch, Event

from .conftest import Broker, free_port, wait_for

pytestmark = pytest.mark.broker
GW = 42


class Collector:
    """Subscribes to every topic of GW and keeps (leaf, batch or raw, retained)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any, bool]] = []

    def batches(self, leaf: str = "ev") -> list[Batch]:
        return [b for lf, b, _ in self.got if lf == leaf and isinstance(b, Batch)]

    def events(self, leaf: str = "ev") -> list[tuple[int, int, Event, int]]:
        return [(b.boot, s, e, b.flags) for b in self.batches(leaf) for s, e in b.seqs()]


def collector(port: int) -> contextlib.AbstractAsyncContextManager[Collector]:
    return collector_for(port, GW)


@contextlib.asynccontextmanager
async def collector_for(port: int, gw: int) -> AsyncIterator[Collector]:
    c = Collector()
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"el/v1/{gw}/#", qos=1)

        async def rx() -> None:
            async for m in client.messages:
                leaf = topics.parse(str(m.topic))[1]
                data = m.payload if isinstance(m.payload, bytes) else b""
                try:
                    if leaf in ("ev", "state"):
                        msg: Any = wire.open_batch(data)
                    else:
                        msg = messages.from_map(cbor.loads(data))
                except ProtocolError:
                    msg = data
                c.got.append((leaf, msg, bool(m.retain)))

        task = asyncio.create_task(rx())
        try:
            yield c
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def make_uplink(tmp: Path, port: int, **mqtt: Any) -> tuple[Uplink, Outbox]:
    ob = Outbox(tmp / "outbox.sqlite")
    cfg = MqttConfig(host="127.0.0.1", port=port, puback_timeout_s=2, backoff_min_s=0.05,
                     backoff_max_s=0.5, **mqtt)  # fmt: skip
    up = Uplink(cfg, GW, ob, birth_info=lambda: {0: "test", 1: 1}, now_ms=lambda: 1_700_000_000_000)
    return up, ob


@contextlib.asynccontextmanager
async def running(up: Uplink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(up.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def alarm(src: int = 1, state: int = codes.ACTIVE) -> Event:
    return Event(codes.FIRE_ALARM, 0, src, state=state, code=10)


def sample(v: int) -> Event:
    return Event(codes.MEASUREMENT, 0, 3, period=1000, samples=[v])


async def test_events_deleted_after_puback_and_birth_retained(
    tmp_path: Path, broker: Broker
) -> None:
    up, ob = make_uplink(tmp_path, broker.port)
    async with collector(broker.port) as c, running(up):
        seqs = ob.append_many([(sample(i), 1_700_000_000_000 + i) for i in range(5)])
        up.wake()
        await wait_for(lambda: len(c.events()) >= 6 and ob.depth() == 0)
        got = {s for _, s, _, _ in c.events()}
        assert set(seqs) <= got
        births = [b for b in c.batches("state") if b.events[0].kind == codes.BIRTH]
        assert births and births[-1].boot == ob.boot
    # a subscriber arriving later still sees the retained birth
    async with collector(broker.port) as late:
        await wait_for(lambda: any(lf == "state" and r for lf, _, r in late.got))
        retained = [b for lf, b, r in late.got if lf == "state" and r]
        assert retained[-1].events[0].kind == codes.BIRTH and retained[-1].boot == ob.boot
    ob.close()


async def test_will_is_a_death_with_seq0_zero_on_kill_9(tmp_path: Path, broker: Broker) -> None:
    script = tmp_path / "gw.py"
    script.write_text(f"""
import asyncio
from pathlib import Path
from emberlink.edge.config import MqttConfig
from emberlink.edge.outbox import Outbox
from emberlink.edge.uplink import Uplink
ob = Outbox(Path({str(tmp_path)!r}) / "o.sqlite")
up = Uplink(MqttConfig(port={broker.port}, keepalive_s=5), {GW}, ob,
            birth_info=lambda: {{0: "x"}}, now_ms=lambda: 1_700_000_000_000)
print("boot", ob.boot, flush=True)
asyncio.run(up.run())
""")
    async with collector(broker.port) as c:
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        boot = int(p.stdout.readline().split()[1])
        await wait_for(lambda: any(lf == "state" for lf, _, _ in c.got))
        p.kill()
        p.wait(10)
        await wait_for(lambda: any(b.events[0].kind == codes.DEATH for b in c.batches("state")))
        death = next(b for b in c.batches("state") if b.events[0].kind == codes.DEATH)
        assert death.seq0 == 0 and death.boot == boot and death.gw == GW
        assert death.events[0].code == 102  # connection_lost


async def test_alarm_published_before_a_backlog_of_10000(tmp_path: Path, broker: Broker) -> None:
    up, ob = make_uplink(tmp_path, broker.port)
    ob.append_many([(sample(i), 1_700_000_000_000) for i in range(10_000)])
    a = ob.append(alarm(), 1_700_000_000_500)
    async with collector(broker.port) as c, running(up):
        await wait_for(lambda: any(e.kind == codes.FIRE_ALARM for _, _, e, _ in c.events()), 20)
        order = [s for _, s, _, _ in c.events()]
        # only the birth may precede it: no telemetry batch went out first
        assert order.index(a) <= 1, order[:5]
        await wait_for(lambda: ob.depth() == 0, 60)
    ob.close()


async def test_cloud_ack_mode_keeps_records_until_the_ack(tmp_path: Path, broker: Broker) -> None:
    up, ob = make_uplink(tmp_path, broker.port, cloud_ack=True, cloud_ack_timeout_s=30)
    async with (
        collector(broker.port) as c,
        running(up),
        aiomqtt.Client("127.0.0.1", broker.port) as cloud,
    ):
        seqs = ob.append_many([(alarm(i), 1_700_000_000_000) for i in range(1, 4)])
        up.wake()
        await wait_for(lambda: {s for _, s, _, _ in c.events()} >= set(seqs))
        await asyncio.sleep(0.2)
        assert {s for _, s in ob.stored_keys()} >= set(seqs)  # PUBACK alone does not delete
        ack = messages.Ack(GW, ob.boot, seqs[1])
        await cloud.publish(topics.topic(GW, "ack"), messages.encode_ack(ack), qos=1)
        await wait_for(lambda: not {s for _, s in ob.stored_keys()} & set(seqs[:2]))
        assert seqs[2] in {s for _, s in ob.stored_keys()}
        # resend from a sequence number: the cloud asks for seq 3 again
        n_before = len(c.events())
        cmd = messages.Command(GW, 9, OP_RESEND, {0: seqs[2]})
        await cloud.publish(topics.topic(GW, "cmd"), messages.encode(cmd), qos=1)
        await wait_for(lambda: any(s == seqs[2] for _, s, _, _ in c.events()[n_before:]))
        again = [f for _, s, _, f in c.events()[n_before:] if s == seqs[2]]
        assert again[0] & codes.BF_REPLAYED
        res = [r for lf, r, _ in c.got if lf == "res"]
        assert res and res[-1].id == 9 and res[-1].result == messages.RES_OK
    ob.close()


async def test_unacked_alarm_batches_are_sent_again_sooner_and_alone(
    tmp_path: Path, broker: Broker
) -> None:
    """With nobody acking (the broker dropped them: no ingest subscribed), the alarm lane is sent
    again after cloud_ack_alarm_timeout_s while the telemetry waits for cloud_ack_timeout_s."""
    up, ob = make_uplink(tmp_path, broker.port, cloud_ack=True, cloud_ack_timeout_s=30,
                         cloud_ack_alarm_timeout_s=0.6)  # fmt: skip
    async with (
        collector(broker.port) as c,
        running(up),
        aiomqtt.Client("127.0.0.1", broker.port) as cloud,
    ):
        tel = ob.append_many([(sample(i), 1_700_000_000_000) for i in range(5)])
        a = ob.append(alarm(), 1_700_000_000_500)
        up.wake()
        await wait_for(lambda: sum(s == a for _, s, _, _ in c.events()) >= 3, 10)
        sent = [(s, f) for _, s, _, f in c.events()]
        again = [f for s, f in sent if s == a][1:]
        assert again and all(f & codes.BF_REPLAYED for f in again)
        assert all(sum(s == t for s, _ in sent) == 1 for t in tel), sent  # no telemetry replay
        # the cloud's ack covers everything: nothing is sent again after it
        hwm = max(s for _, s in ob.stored_keys())  # the birth is stored too
        ack = messages.encode_ack(messages.Ack(GW, ob.boot, hwm))
        await cloud.publish(topics.topic(GW, "ack"), ack, qos=1)
        await wait_for(lambda: ob.depth() == 0, 10)
        n = len(c.events())
        await asyncio.sleep(1.5)
        assert len(c.events()) == n
    ob.close()


async def test_alarm_resends_back_off_while_the_cloud_does_not_ack(
    tmp_path: Path, broker: Broker
) -> None:
    """A cloud that never acks an alarm batch (down for long, or refusing it) gets it
    ALARM_QUICK_RESENDS times at the short wait, then at doubling waits, not every 2 s forever;
    an ack that moves the high-water mark on brings the quick resends back."""
    up, ob = make_uplink(tmp_path, broker.port, cloud_ack=True, cloud_ack_timeout_s=30,
                         cloud_ack_alarm_timeout_s=0.25)  # fmt: skip
    async with collector(broker.port) as c, running(up):
        a = ob.append(alarm(), 1_700_000_000_500)
        up.wake()
        t0 = time.monotonic()
        sends: list[float] = []  # when each send of the alarm arrived (polled every 20 ms)
        while time.monotonic() - t0 < 6:
            n = sum(s == a for _, s, _, _ in c.events())
            sends += [time.monotonic()] * (n - len(sends))
            await asyncio.sleep(0.02)
        # without the back-off: one send every 0.25-0.35 s, about 18; with it: 1 + 3 quick
        # resends, then waits of 0.5, 1, 2, (4) s
        assert 5 <= len(sends) <= 8, [round(t - t0, 2) for t in sends]
        gaps = [b - a_ for a_, b in itertools.pairwise(sends)]
        assert gaps[-1] > 1.5 * max(gaps[:3]), gaps
        assert up._alarm_resends >= 5
        hwm = max(s for _, s in ob.stored_keys())
        up._on_ack(messages.Ack(GW, ob.boot, hwm))
        assert up._alarm_resends == 0
    ob.close()


async def test_commands_time_sync_rebirth_unknown(tmp_path: Path, broker: Broker) -> None:
    synced: list[int] = []
    up, ob = make_uplink(tmp_path, broker.port)
    up.on_time_sync = synced.append
    async with (
        collector(broker.port) as c,
        running(up),
        aiomqtt.Client("127.0.0.1", broker.port) as cloud,
    ):
        await wait_for(lambda: up.state is LinkState.CONNECTED)
        await asyncio.sleep(0.2)
        for cmd in (
            messages.Command(GW, 1, messages.OP_TIME_SYNC, {0: 1_800_000_000_000}),
            messages.Command(GW, 2, messages.OP_TIME_SYNC),
            messages.Command(GW, 3, 77),
            messages.Command(GW, 4, messages.OP_REBIRTH),
        ):
            await cloud.publish(topics.topic(GW, "cmd"), messages.encode(cmd), qos=1)
        await cloud.publish(topics.topic(GW, "cmd"), b"\xff\x00garbage", qos=1)
        await wait_for(lambda: len([r for lf, r, _ in c.got if lf == "res"]) >= 4)
        res = {r.id: r.result for lf, r, _ in c.got if lf == "res"}
        assert res == {1: messages.RES_OK, 2: messages.RES_BAD_ARGS,
                       3: messages.RES_UNKNOWN_OP, 4: messages.RES_OK}  # fmt: skip
        assert synced == [1_800_000_000_000]
        births = [b for b in c.batches("state") if b.events[0].kind == codes.BIRTH]
        assert len(births) >= 2  # connect + rebirth
        assert up.state is LinkState.CONNECTED  # garbage did not break the session
    ob.close()


async def test_broker_outage_loses_nothing(tmp_path: Path) -> None:
    b = Broker(tmp_path).start()
    up, ob = make_uplink(tmp_path, b.port)
    try:
        async with running(up):
            await wait_for(lambda: up.state is LinkState.CONNECTED)
            b.stop()
            await wait_for(lambda: up.state is not LinkState.CONNECTED, 10)
            seqs = ob.append_many([(alarm(i), 1_700_000_000_000) for i in range(1, 6)])
            up.wake()
            await asyncio.sleep(0.5)
            assert {s for _, s in ob.stored_keys()} >= set(seqs)  # kept while the broker is away
            b.start()
            async with collector(b.port) as c:
                await wait_for(lambda: {s for _, s, _, _ in c.events()} >= set(seqs), 20)
            await wait_for(lambda: ob.depth() == 0)
    finally:
        b.stop()
        ob.close()


async def test_reconnect_backoff_is_exponential_with_full_jitter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No broker on the port (connection refused at once): attempts thin out from
    backoff_min_s to backoff_max_s (doubling) and come at random gaps, not in step."""
    caplog.set_level(logging.WARNING, "emberlink.uplink")
    ob = Outbox(tmp_path / "outbox.sqlite")
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), backoff_min_s=0.05, backoff_max_s=0.8)
    up = Uplink(cfg, GW, ob, birth_info=lambda: {0: "test"}, now_ms=lambda: 1_700_000_000_000)
    try:
        async with running(up):
            await asyncio.sleep(5)
    finally:
        ob.close()
    attempts = [r.created for r in caplog.records if r.getMessage().startswith("uplink:")]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # retrying at backoff_min_s without growth would make 100-200 attempts in 5 s
    assert 4 <= len(attempts) <= 40, len(attempts)
    assert max(gaps) <= 0.8 + 0.3  # capped at backoff_max_s (+ the attempt itself)
    late = gaps[4:]  # backoff at its cap: each gap uniform in (0, 0.8]
    assert max(late) - min(late) > 0.05, late  # full jitter: a fleet does not retry in step


class FreezableProxy:
    """A TCP proxy whose open connections can be frozen: bytes stop, sockets stay open."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.frozen: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def freeze(self) -> None:
        for gate in self.frozen:
            gate.clear()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", self.target)
        gate = asyncio.Event()
        gate.set()
        self.frozen.append(gate)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(4096):
                    await gate.wait()
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(r, tw), pipe(tr, w))

    async def close(self) -> None:
        if self.server:
            self.server.close()


async def test_silent_link_death_forces_reconnect(tmp_path: Path, broker: Broker) -> None:
    proxy = FreezableProxy(broker.port)
    await proxy.start()
    up, ob = make_uplink(tmp_path, proxy.port, keepalive_s=60)
    try:
        async with collector(broker.port) as c, running(up):
            await wait_for(lambda: up.state is LinkState.CONNECTED)
            proxy.freeze()  # the link dies without a FIN: TCP stays up, nothing flows
            seq = ob.append(alarm(), 1_700_000_000_000)
            up.wake()
            # the PUBACK deadline (2 s) fires long before the 60 s keepalive would
            await wait_for(lambda: up.connects >= 2, 15)
            await wait_for(lambda: any(s == seq for _, s, _, _ in c.events()), 10)
    finally:
        await proxy.close()
        ob.close()


async def test_username_password(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "gw42", "s3cret"], check=True)
    b = Broker(tmp_path, f"allow_anonymous false\npassword_file {pw}\n").start()
    try:
        bad, ob1 = make_uplink(tmp_path / "a", b.port, username="gw42", password="wrong")
        async with running(bad):
            await asyncio.sleep(1.0)
            assert bad.connects == 0
        good, ob2 = make_uplink(tmp_path / "b", b.port, username="gw42", password="s3cret")
        async with running(good):
            await wait_for(lambda: good.connects == 1)
        ob1.close()
        ob2.close()
    finally:
        b.stop()


def make_certs(d: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=emberlink-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return d


def uplink_from_config(d: Path, port: int, ca: Path, password_file: Path) -> tuple[Uplink, Outbox]:
    """An uplink built the way the service builds it: from a validated configuration file."""
    d.mkdir()
    (d / "gateway.toml").write_text(
        f'[gateway]\nid = {GW}\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = true\n'
        f'ca_file = "{ca}"\nusername = "gw42"\npassword_file = "{password_file}"\n'
        "puback_timeout_s = 2\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\n"
    )
    cfg = config.load(d / "gateway.toml")
    assert cfg.mqtt.tls and cfg.mqtt.username == "gw42"
    ob = Outbox(d / "outbox.sqlite")
    up = Uplink(cfg.mqtt, GW, ob, birth_info=lambda: {0: "test", 1: 1},
                now_ms=lambda: 1_700_000_000_000)  # fmt: skip
    return up, ob


async def test_tls_and_password_against_a_tls_listener(tmp_path: Path) -> None:
    """Mosquitto with a TLS listener (a generated CA and server certificate) and a password
    file: the gateway needs both the right CA and the right password."""
    certs = make_certs(tmp_path)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "gw42", "s3cret"], check=True)
    (tmp_path / "right").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    tls = f"cafile {certs}/ca.pem\ncertfile {certs}/server.pem\nkeyfile {certs}/server.key\n"
    b = Broker(tmp_path, f"allow_anonymous false\npassword_file {pw}\n{tls}").start()
    other = tmp_path / "other"
    other.mkdir()
    make_certs(other)
    obs = []
    try:
        for name, ca, secret in (("bad-ca", other / "ca.pem", tmp_path / "right"),
                                 ("bad-pw", certs / "ca.pem", tmp_path / "wrong")):  # fmt: skip
            bad, ob = uplink_from_config(tmp_path / name, b.port, ca, secret)
            obs.append(ob)
            async with running(bad):
                await asyncio.sleep(1.0)
                # a broker we cannot verify is not a broker; a refused login is no session
                assert bad.connects == 0, name
        good, ob = uplink_from_config(tmp_path / "good", b.port, certs / "ca.pem",
                                      tmp_path / "right")  # fmt: skip
        obs.append(ob)
        async with running(good):
            seq = ob.append(alarm(), 1_700_000_000_000)
            good.wake()
            await wait_for(lambda: good.connects == 1 and ob.state_of(ob.boot, seq)
                           == "acknowledged", 10)  # fmt: skip
    finally:
        for ob in obs:
            ob.close()
        b.stop()
