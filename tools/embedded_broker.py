"""A pure-Python MQTT broker (amqtt) for the demo on a machine without Mosquitto.

    python -m emberlink.tools.embedded_broker --port 18830 [--host 127.0.0.1]

It listens on one TCP port (loopback by default), lets anonymous clients in and keeps
everything in memory; SIGINT or SIGTERM stops it. The demo starts it as a child process when
no ``mosquitto`` is found (``emberlink demo --broker embedded|auto``).

What amqtt 0.12 does that the demo needs, checked by running it: MQTT 3.1.1, QoS 1 in both
directions, retained messages, will messages on an abnormal disconnect. What it does not:
``$share/`` shared subscriptions (a ``$share/...`` filter is taken literally and matches nothing),
so the cloud's ingest worker must use the plain filter (``EMBERLINK_MQTT_SHARED_SUBSCRIPTION=
false``) and only one worker may run; messages for a disconnected persistent session are kept
only for clients with a username; and it is far slower than Mosquitto. It is for the demo, not
for a site or a test of the broker's behaviour under faults (those use the real Mosquitto).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's configuration: one TCP listener, anonymous clients, no $SYS topics, no logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    """Run the broker until ``stop`` is set."""
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    print(f"amqtt broker listening on {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
        print("amqtt broker stopped", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emberlink.tools.embedded_broker", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("-v", "--verbose", action="store_true", help="log amqtt at DEBUG level")
    args = p.parse_args(argv)
    try:
        import amqtt  # noqa: F401
    except ImportError:
        print(
            "embedded broker: the amqtt package is missing: pip install 'emberlink[demo]'",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.host, args.port, stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
