"""Fixtures: one broker and one cloud (PostgreSQL) per session; one site + gateway per module.

Modules start their processes once and run several scenarios against the running site; the
checks at the end of each scenario look at the whole history of the gateway (nothing lost,
nothing twice), so a scenario that breaks something shows up even in a later one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import bench
from .harness import (
    CONVERGE_S,
    PROCESS_START_S,
    RESULTS,
    RESULTS_FILE,
    Broker,
    Cloud,
    Gateway,
    Proxy,
    SiteThread,
    free_port,
    wait_until,
)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"))
    try:
        yield b.start()
    finally:
        b.stop()


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Cloud]:
    c = Cloud(tmp_path_factory.mktemp("cloud"), broker.port)
    try:
        yield c.start()
    finally:
        c.stop()
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS_FILE, "a") as f:
            f.write(json.dumps({"kind": "ingest", "duplicates_seen": c.duplicates_seen}) + "\n")


_STARTED = time.monotonic()


def whole_suite(config: pytest.Config) -> bool:
    """The run selected every HIL scenario: no -k/-m filter and hil_tests named as a whole
    (or nothing named, so every testpath runs)."""
    if config.option.keyword or config.option.markexpr:
        return False
    here = Path(__file__).parent.resolve()
    named = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    return not config.args or any(p == here or p in here.parents for p in named)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Each run reports only what it measured (its own results file), then drops the file: a
    run of the whole suite writes hil_tests/REPORT.md (kept in git, copied to README), a partial
    run (one module, -k, -m) hil_tests/.results/REPORT.md, so it never replaces the full one."""
    from . import report

    report.write(time.monotonic() - _STARTED, partial=not whole_suite(session.config))
    RESULTS_FILE.unlink(missing_ok=True)


@dataclass
class Bench:
    """The roles of one module's scenarios."""

    broker: Broker
    cloud: Cloud
    site: SiteThread
    gateway: Gateway
    proxy: Proxy | None
    work: Path

    @property
    def gw(self) -> int:
        return self.gateway.cfg.id

    def birth(self, boot: int) -> None:
        """Wait for the gateway's birth of ``boot`` in the database. (This host has no
        timesyncd: the gateway boots unsynced and the cloud's ingest sends it a time sync when
        the flagged birth arrives; nothing here stands in for it.)"""
        wait_until(
            f"the birth of gateway {self.gw} boot {boot}",
            lambda: self.cloud.sql(
                "SELECT 1 FROM events WHERE gateway_id=%s AND boot=%s AND kind=13", self.gw, boot
            ),
            PROCESS_START_S,
        )

    def check_nothing_lost(self, timeout_s: float = CONVERGE_S) -> tuple[int, int]:
        """Every seq the gateway allocated is in the database once; (lost, duplicates)."""
        dups = bench.converged(self.cloud, self.gateway, timeout_s)
        assert dups == 0, f"{dups} events stored twice"
        return 0, dups


def make_bench(
    tmp: Path,
    broker: Broker,
    cloud: Cloud,
    gw: int,
    *,
    via_proxy: bool = False,
    data_dir: Path | None = None,
) -> Iterator[Bench]:
    proxy = Proxy(broker.port) if via_proxy else None
    cfg = bench.site_toml(
        tmp, gw, proxy.port if proxy else broker.port, free_port(), data_dir=data_dir
    )
    cloud.register(gw, bench.HEARTBEAT_S, [(b, u, n) for b, u, n in bench.DEVICES])
    site = SiteThread(cfg)
    gateway = Gateway(cfg, tmp)
    try:
        with site:
            gateway.start()
            b = Bench(broker, cloud, site, gateway, proxy, tmp)
            b.birth(1)
            yield b
            gateway.stop()
    finally:
        gateway.stop()
        if proxy:
            proxy.close()


def own_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, gw: int, **cloud_settings: str
) -> Iterator[Bench]:
    """A broker, a cloud and a site + gateway of the module's own, for a cloud configured unlike
    the session's (``database="sqlite"``, a setting). The broker is its own because on the
    session's broker this cloud's ingest worker would join the session cloud's shared
    subscription group and get only part of the messages."""
    broker = Broker(tmp_path_factory.mktemp(f"{name}-broker"))
    cloud: Cloud | None = None
    try:
        broker.start()
        cloud = Cloud(tmp_path_factory.mktemp(f"{name}-cloud"), broker.port, **cloud_settings)
        cloud.start()
        yield from make_bench(tmp_path_factory.mktemp(name), broker, cloud, gw)
    finally:
        if cloud is not None:
            cloud.stop()
        broker.stop()
