# mypy: ignore-errors
# (CPython benchmark, not board code; see the note at the top of build.py.)
"""Memory benchmark: the board application with 16 points on the micropython unix port.

    .venv/bin/python firmware/board/bench_memory.py [--seconds 10] [--heaps 2M,512K,256K,224K]
        [--operator]

Starts a Mosquitto and the site simulator (two ASJ residual-current relays: 16 points on one
RTU bus), builds the .mpy tree for the unix port (``build.py mpy --arch x64``) and runs the
application for ``--seconds`` under each ``-X heapsize``, from .mpy files and from source,
with the residual-current scenario (pre-alarm, alarm) running. For each run it prints whether
it survived, the heap high-water mark (``gc.mem_alloc()`` sampled every loop turn, garbage
included: collection runs once a second) and the live heap after a collection at the end,
both from the application's status file. With ``--operator`` the board runs in cloud-ack mode
with a stand-in cloud acking what it receives, and gets commands during the scenario (test
mode on, reset, time sync, test mode off): the figures then include commands.py and
cloudack.py. Not part of the test suite: figures, not verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402

from emberlink.edge import config as gwconfig  # noqa: E402
from emberlink.firmware.board import build  # noqa: E402
from emberlink.tools import micropython, simulator  # noqa: E402

_kit = importlib.import_module("firmware.board.tests.conftest")  # the tests' broker and site
HERE, Broker, site_toml = _kit.HERE, _kit.Broker, _kit.site_toml


def command(port: int, gw: int, cid: int, op: int, args: dict | None = None) -> None:  # type: ignore[type-arg]
    import paho.mqtt.publish as paho_publish
    from emberlink.protocol import messages

    cmd = messages.encode(messages.Command(gw, cid, op, args))
    paho_publish.single(f"el/v1/{gw}/cmd", cmd, qos=1, hostname="127.0.0.1", port=port)


async def one(tmp: Path, port: int, tree: Path, heap: str, seconds: float,
              operator: bool = False) -> dict:  # type: ignore[type-arg]  # fmt: skip
    run = tmp / f"run-{tree.name}-{heap}"
    run.mkdir()
    site = site_toml(run, port, [(3, "acrel_asj"), (4, "acrel_asj")], gw=99)
    cfg = build.board_config(site, str(run / "board"), clock_synced=True)
    cfg["heartbeat_s"] = 5
    cloud = None
    if operator:
        from emberlink.protocol import messages as ms

        cfg["mqtt"]["cloud_ack"] = True
        cfg["mqtt"]["cloud_ack_timeout_ms"] = 5000
        cloud = importlib.import_module("firmware.board.tests.test_commands").Cloud(port, 99)
    (run / "board").mkdir()
    (run / "board.json").write_text(json.dumps(cfg))
    env = dict(os.environ)
    env["MICROPYPATH"] = str(tree) + os.pathsep + ".frozen"
    async with simulator.Site(gwconfig.load(site)) as sim:
        for u in (3, 4):
            sim.device(f"acrel_asj-{u}").set("residual_current", 40)
        proc = await asyncio.create_subprocess_exec(
            micropython.interpreter(), "-X", "heapsize=" + heap, str(HERE / "mp_app.py"),
            str(run / "board.json"), str(int(seconds * 1000)), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1)
        if operator:
            command(port, 99, 1, ms.OP_TEST_MODE, {0: 1, 2: 4 << 16 | 1 << 24})
        for ma in (100, 180, 260, 340, 420, 500):
            sim.device("acrel_asj-3").set("residual_current", ma)
            await asyncio.sleep(0.6)
        if operator:
            sim.device("acrel_asj-3").set("residual_current", 40)
            await asyncio.sleep(1)
            command(port, 99, 2, ms.OP_RESET)
            command(port, 99, 3, ms.OP_TIME_SYNC, {0: 1_800_000_000_000})
            command(port, 99, 4, ms.OP_TEST_MODE, {0: 0, 2: 4 << 16 | 1 << 24})
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    status = {}
    f = run / "board" / "status.json"
    if proc.returncode == 0 and f.exists():
        status = json.loads(f.read_text())
    if cloud is not None:
        status["cloud_hwm"] = cloud.hwm.get(1, 0)
        cloud.close()
    status["ok"] = proc.returncode == 0
    said = (err + out).decode().strip().splitlines()
    status["error"] = (said[-1] if said else f"exit {proc.returncode}") if proc.returncode else ""
    return status


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="emberlink-mem-"))
    broker = Broker(tmp).start()
    try:
        build.build_mpy(tmp / "mpy", ("x64",))
        trees = [(tmp / "mpy" / "x64", ".mpy"), (micropython.stage(), "source")]
        print(f"{'code':<7} {'heap':>6} {'runs':>5} {'peak heap':>10} {'live heap':>10} "
              f"{'events':>7} {'published':>9}")  # fmt: skip
        for tree, label in trees:
            for heap in args.heaps.split(","):
                s = await one(tmp, broker.port, tree, heap, args.seconds, args.operator)
                if s["ok"]:
                    live, ev, pub = s["heap_after_gc"], s["events"], s["published"]
                    print(f"{label:<7} {heap:>6} {'yes':>5} {s['peak_heap']:>10} "
                          f"{live:>10} {ev:>7} {pub:>9}")  # fmt: skip
                else:
                    print(f"{label:<7} {heap:>6} {'no':>5}  {s['error'][:60]}")
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--heaps", default="2M,512K,256K,224K,192K,64K")
    ap.add_argument("--operator", action="store_true",
                    help="cloud-ack mode and operator commands during the run")  # fmt: skip
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
