"""The gateway's disk fills up under it: the outbox lives on a small tmpfs (mounted for the test:
the suite runs as root; skipped otherwise). The gateway raises its disk_full fault below 50 MB
free (edge/service.py DISK_LOW_KB); when the disk is full to the last byte a fire still starts,
and once space returns the alarm reaches the cloud with nothing lost or doubled.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from emberlink.protocol import codes

from . import bench
from .bench import PANEL, Result, await_alarm, src
from .conftest import Bench, make_bench
from .harness import Broker, Cloud, now_ms, wait_until

pytestmark = [pytest.mark.hil, pytest.mark.broker, pytest.mark.postgres, pytest.mark.modbus]

GW = 9301
TMPFS_MB = 64  # free space starts above the gateway's 50 MB disk-low threshold
LOW_FILL_MB = 24  # leaves ~40 MB: below the threshold, the fault is raised
FULL_S = 6.0  # the disk stays full to the last byte this long while the fire starts
FAULT_WAIT_S = 3 * bench.HEARTBEAT_S + 10  # the fault is checked at each heartbeat


def _mount(where: Path) -> bool:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(where)],
                       capture_output=True)  # fmt: skip
    return r.returncode == 0


def _fill(path: Path, mb: int | None) -> None:
    """Write zeros to ``path``: ``mb`` megabytes, or until the file system refuses (None)."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        n = 0
        while mb is None or n < mb:
            try:
                f.write(chunk)
            except OSError:
                break
            n += 1
        if mb is None:  # the last bytes, a page at a time
            small = b"\0" * 4096
            with contextlib.suppress(OSError):
                while True:
                    f.write(small)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory, broker: Broker, cloud: Cloud) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("disk")
    mnt = tmp / "sd"
    if os.geteuid() != 0 or not _mount(mnt):
        pytest.skip("needs root to mount a small tmpfs for the gateway's data directory")
    try:
        yield from make_bench(tmp, broker, cloud, GW, data_dir=mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def disk_faults(b: Bench, state: int) -> list[bench.Row]:
    return [r for r in bench.events(b.cloud, GW) if r.kind == codes.FAULT and r.code == 105
            and r.src == 0 and r.state == state]  # fmt: skip


def test_gateway_disk_full(disk: Bench) -> None:
    mnt = disk.gateway.cfg.outbox.path.parent
    low, full = mnt / "filler-low", mnt / "filler-full"
    _fill(low, LOW_FILL_MB)
    wait_until("the disk_full fault in the cloud database",
               lambda: disk_faults(disk, codes.ACTIVE), FAULT_WAIT_S)  # fmt: skip
    _fill(full, None)  # not a byte left
    t = disk.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=True)
    time.sleep(FULL_S)
    refused = "outbox:" in (disk.gateway.proc.tail(20_000) if disk.gateway.proc else "")
    full.unlink()
    freed = now_ms()
    bound = int(FULL_S * 1000) + bench.STATUS_MS + bench.MARGIN_MS
    row, lat = await_alarm(disk.cloud, GW, codes.FIRE_ALARM, src(PANEL, 1), 10, t, bound,
                           "the fire raised on a full disk", national=False)  # fmt: skip
    low.unlink()
    wait_until("the disk_full fault cleared in the cloud database",
               lambda: disk_faults(disk, codes.NORMAL), FAULT_WAIT_S)  # fmt: skip
    disk.site.step(device=PANEL[2], action="bit", point="system_status", bit=1, on=False)
    r = Result("gateway disk full", latencies_ms=[lat], bound_ms=bound,
               note=("the outbox refused writes; events held in memory" if refused else
                     "SQLite kept writing into its already grown WAL")
               + f"; alarm stored {row.received_ms - freed} ms after space returned")  # fmt: skip
    r.lost, r.duplicates = disk.check_nothing_lost()
    r.save()
