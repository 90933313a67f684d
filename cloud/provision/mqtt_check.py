"""Small synchronous MQTT probes (paho) used by tests and ``emberlink claim check``: can these
credentials connect, and does a publish reach a subscriber?"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

CONNECT_TIMEOUT_S = 5.0


def connect(host: str, port: int, username: str, password: str) -> mqtt.Client | str:
    """A connected client, or the broker's refusal reason as a string."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.username_pw_set(username, password)
    done = threading.Event()
    result: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        result.append(str(rc))
        done.set()

    c.on_connect = on_connect
    c.connect(host, port, keepalive=10)
    c.loop_start()
    if not done.wait(CONNECT_TIMEOUT_S):
        c.loop_stop()
        return "timeout"
    if result[0] != "Success":
        c.loop_stop()
        c.disconnect()
        return result[0]
    return c


class Listener:
    """A subscriber that records every (topic, payload) it gets."""

    def __init__(self, client: mqtt.Client, topic: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.client = client
        sub = threading.Event()
        client.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        client.on_subscribe = lambda *a: sub.set()
        client.subscribe(topic, qos=1)
        if not sub.wait(CONNECT_TIMEOUT_S):
            raise TimeoutError("subscribe not acknowledged")

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.got) >= n


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(CONNECT_TIMEOUT_S)
