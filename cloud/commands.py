"""Commands to gateways: record, publish on ``el/v1/<gw>/cmd``, store the gateway's Result.

The row id of ``commands`` is the command id on the wire (``messages.Command.id``), so a
Result on ``el/v1/<gw>/res`` finds its row by (id, gw). Args are kept under the API's names
(``{"state": "on", "duration_s": 600}``) and mapped to the wire's integer keys when sent.

The database functions are keyword-only and never commit (as in ``crud``). ``publish`` is the
API's short-lived MQTT publish: connect, publish at QoS 1, wait for the PUBACK, disconnect, all
within one timeout, so a dead broker is a ``PublishError`` and never a hung request.
The ingest worker publishes automatic time syncs on its own connection
(``ingest/worker.py``); the throttle that keeps them to one per gateway per interval, across
workers, is ``claim_time_sync``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import aiomqtt
from emberlink.protocol import cbor, messages, topics
from sqlalchemy import case, update
from sqlalchemy.orm import Session

from . import models, schemas
from .core.config import Settings, mqtt_client_options

log = logging.getLogger(__name__)

CLOUD = "cloud"  # ``who`` of the commands the cloud sends by itself
MAX_RESULT_BYTES = 256  # a Result is {ver, gw, id, result, ?note <= 64 bytes}: far below

# op name -> (wire op, API arg name -> wire arg key)
OPS: dict[str, tuple[int, dict[str, int]]] = {
    "rebirth": (messages.OP_REBIRTH, {}),
    "test_mode": (messages.OP_TEST_MODE, {"state": 0, "duration_s": 1, "src": 2}),
    "time_sync": (messages.OP_TIME_SYNC, {"utc_ms": 0}),
    "reset": (messages.OP_RESET, {"src": 0}),
    "resend": (messages.OP_RESEND, {"seq": 0, "boot": 1}),
}
OP_NAMES = {op: name for name, (op, _) in OPS.items()}
ON_OFF = {"on": 1, "off": 0}


class PublishError(Exception):
    """The broker could not be reached, or did not acknowledge the publish in time."""


# ---- records --------------------------------------------------------------------------------


def create_command(
    *, session: Session, gateway_id: int, op: str, args: dict[str, Any], who: str, now_ms: int
) -> models.Command:
    """Record a command (status pending) and give it its id; ``args`` under the API's names."""
    args = {k: v for k, v in args.items() if v is not None}
    if op == "time_sync" and "utc_ms" not in args:
        args["utc_ms"] = now_ms
    row = models.Command(
        gateway_id=gateway_id,
        op=OPS[op][0],
        args=args,
        who=who[:200],
        created_ms=now_ms,
        status="pending",
    )
    session.add(row)
    session.flush()
    return row


def wire_args(op: int, args: dict[str, Any]) -> dict[int, int]:
    """The wire's {key: int} args of a recorded command."""
    keys = OPS[OP_NAMES[op]][1]
    out: dict[int, int] = {}
    for name, v in args.items():
        out[keys[name]] = ON_OFF[v] if isinstance(v, str) else int(v)
    return out


def message(row: models.Command) -> messages.Command:
    """The wire message of a recorded command (raises MessageError if the id passed u32)."""
    return messages.Command(row.gateway_id, row.id, row.op, wire_args(row.op, row.args) or None)


def mark_sent(*, session: Session, command_id: int, now_ms: int) -> None:
    """The broker acknowledged the publish (a result that came first keeps ``answered``)."""
    C = models.Command
    session.execute(
        update(C)
        .where(C.id == command_id)
        .values(sent_ms=now_ms, status=case((C.status == "pending", "sent"), else_=C.status))
    )


def mark_send_failed(*, session: Session, command_id: int, error: str) -> None:
    C = models.Command
    session.execute(
        update(C)
        .where(C.id == command_id, C.status == "pending")
        .values(status="send_failed", error=error[:300])
    )


def public(row: models.Command) -> schemas.CommandPublic:
    return schemas.CommandPublic(
        id=row.id,
        gateway_id=row.gateway_id,
        op=OP_NAMES.get(row.op, str(row.op)),
        args=row.args,
        who=row.who,
        created_ms=row.created_ms,
        status=row.status,  # type: ignore[arg-type]
        sent_ms=row.sent_ms,
        error=row.error,
        result=row.result,
        note=row.note,
        result_ms=row.result_ms,
    )


# ---- automatic time sync ----------------------------------------------------------------------


def claim_time_sync(
    *, session: Session, gateway_id: int, now_ms: int, interval_ms: int
) -> models.Command | None:
    """Record an automatic time sync for ``gateway_id`` unless one was sent within
    ``interval_ms`` (by this worker or another): the conditional UPDATE is atomic on both
    databases (a row lock on PostgreSQL, the write lock on SQLite), so of two workers racing
    for the same gateway exactly one wins. None: not now (or the gateway is not registered)."""
    G = models.Gateway
    won = session.execute(
        update(G)
        .where(G.id == gateway_id)
        .where((G.time_sync_ms.is_(None)) | (G.time_sync_ms <= now_ms - interval_ms))
        .values(time_sync_ms=now_ms)
    )
    if getattr(won, "rowcount", 0) != 1:
        return None
    return create_command(
        session=session,
        gateway_id=gateway_id,
        op="time_sync",
        args={"utc_ms": now_ms},
        who=CLOUD,
        now_ms=now_ms,
    )


# ---- results ----------------------------------------------------------------------------------


def decode_result(topic: str, payload: bytes) -> messages.Result:
    """The Result on ``el/v1/<gw>/res``; raises ValueError or ProtocolError with the reason."""
    gw, leaf = topics.parse(topic)
    if leaf != topics.RESULT:
        raise ValueError(f"not a result topic: {topic!r}")
    if len(payload) > MAX_RESULT_BYTES:
        raise ValueError(f"result payload of {len(payload)} bytes (limit {MAX_RESULT_BYTES})")
    res = messages.result_from_map(cbor.loads(payload, 4, 16, messages.MAX_NOTE))
    if res.gw != gw:
        raise ValueError(f"result says gateway {res.gw}, topic says {gw}")
    return res


def store_result(*, session: Session, result: messages.Result, now_ms: int) -> str | None:
    """Put a gateway's Result into its command row; None, or why it was ignored."""
    row = session.get(models.Command, result.id)
    if row is None or row.gateway_id != result.gw:
        return f"unknown command id {result.id} for gateway {result.gw}"
    if row.result is not None:
        return f"command {result.id} already answered"  # a QoS 1 redelivery
    row.result = messages.RESULT_NAMES.get(result.result, f"code {result.result}")[:20]
    row.note = result.note
    row.result_ms = now_ms
    row.status = "answered"
    return None


# ---- publish (the API's short-lived connection) ----------------------------------------------


async def publish(settings: Settings, commands: list[messages.Command]) -> None:
    """Publish ``commands`` at QoS 1 and wait for each PUBACK, within
    ``command_publish_timeout_s`` in all; raises PublishError with the reason."""
    timeout = settings.command_publish_timeout_s
    ident = f"{settings.mqtt_client_prefix}-api-{secrets.token_hex(4)}"
    try:
        async with asyncio.timeout(timeout):
            async with aiomqtt.Client(
                settings.mqtt_host,
                settings.mqtt_port,
                identifier=ident,
                clean_session=True,
                timeout=timeout,
                **mqtt_client_options(settings),
            ) as client:
                for cmd in commands:
                    await client.publish(
                        topics.topic(cmd.gw, topics.COMMAND), messages.encode(cmd), qos=topics.QOS
                    )
    except TimeoutError:
        raise PublishError(f"no answer from the broker within {timeout:g} s") from None
    except (aiomqtt.MqttError, OSError) as e:
        raise PublishError(str(e) or type(e).__name__) from None
