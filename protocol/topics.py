"""MQTT topic layout of protocol v1 (see protocol/README.md for the reasons).

    el/v1/<gw>/ev     gateway -> cloud  QoS 1  event batches (CBOR or COSE_Mac0)
    el/v1/<gw>/state  gateway -> cloud  QoS 1  retained birth; the will (death) on the same topic
    el/v1/<gw>/ack    cloud -> gateway  QoS 1  application ack: high-water mark after commit
    el/v1/<gw>/cmd    cloud -> gateway  QoS 1  commands
    el/v1/<gw>/res    gateway -> cloud  QoS 1  command results

``<gw>`` is the registry gateway number in decimal. The version sits in the topic so that a v2
fleet and a v1 fleet can share a broker and a consumer can subscribe to one contract.
MicroPython-compatible.
"""

PREFIX = "el/v1/"
EVENTS = "ev"
STATE = "state"
ACK = "ack"
COMMAND = "cmd"
RESULT = "res"
LEAVES = (EVENTS, STATE, ACK, COMMAND, RESULT)
QOS = 1  # every EmberLink topic: at least once, duplicates removed by (gw, boot, seq)
SHARED_GROUP = "emberlink-ingest"


def topic(gw, leaf):
    """The topic of ``leaf`` for gateway ``gw``: topic(12, "ev") == "el/v1/12/ev"."""
    if not isinstance(gw, int) or isinstance(gw, bool) or gw < 0 or gw > 0xFFFFFFFF:
        raise ValueError("gateway number must be an unsigned 32-bit int: " + repr(gw))
    if leaf not in LEAVES:
        raise ValueError("unknown topic leaf: " + repr(leaf))
    return PREFIX + str(gw) + "/" + leaf


def parse(name):
    """(gw, leaf) of an EmberLink topic; raises ValueError for anything else."""
    if not name.startswith(PREFIX):
        raise ValueError("not an EmberLink v1 topic: " + repr(name))
    parts = name[len(PREFIX) :].split("/")
    if len(parts) != 2 or parts[1] not in LEAVES:
        raise ValueError("not an EmberLink v1 topic: " + repr(name))
    gw = parts[0]
    if not gw.isdigit() or (len(gw) > 1 and gw[0] == "0") or int(gw) > 0xFFFFFFFF:
        raise ValueError("bad gateway number in topic: " + repr(name))
    return int(gw), parts[1]


def subscription(leaf, shared=False):
    """Wildcard filter over every gateway's ``leaf``; ``shared`` splits it across workers."""
    f = PREFIX + "+/" + leaf
    return "$share/" + SHARED_GROUP + "/" + f if shared else f
