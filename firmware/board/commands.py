"""Operator commands on the board (``el/v1/<gw>/cmd``), answered on ``res`` as the Pi answers.

The same operations, checks, result codes and notes as the Pi gateway (edge/uplink.py
``_on_command``, edge/service.py ``handle_command`` / ``set_test``):

* rebirth (1): a birth published again (retained on ``state``) and a heartbeat;
* test_mode (2) {0: 1 on | 0 off, ?1: duration s, ?2: src (0: the whole gateway)}: a
  TEST_MODE event for the scope, the detectors of the device (or all) set to test, and the
  alarm-class events raised meanwhile carry EF_TEST; with a duration, off again after it;
* time_sync (3) {0: UTC ms};
* reset (4) {?0: src}: latched alarms of the matching detector points back to normal (the
  core's ``Point.reset``: a RESET event, NORMAL for each latched condition), "N points reset";
* resend (5) {0: seq, ?1: boot}: stored records from seq queued again (flagged replayed).

Anything else is unknown_op. Commands are rare, so this module is imported when one arrives
and let go afterwards (``App._commands``): its bytecode does not sit in the heap between them.
"""

from ...protocol import codes, messages
from ...protocol.messages import Event
from .compat import ticks_add, ticks_diff, ticks_ms

TEST_MAX_S = 0x1FFFFFFF // 1000  # a test-mode duration on 30-bit ticks: about 6 days


def handle(app, payload):
    """Carry out a command (its CBOR payload) and publish the Result on ``res``; a command
    that does not decode, or is another gateway's, is dropped (logged) as on the Pi."""
    from ...protocol import cbor
    from ...protocol.errors import ProtocolError

    try:
        cmd = messages.command_from_map(cbor.loads(payload))
    except ProtocolError as e:
        print("emberlink: refused command:", e)
        return
    if cmd.gw != app.gw:
        return
    res, note = run(app, cmd.op, cmd.args or {})
    app.client.publish(app.t_res, messages.encode(messages.Result(app.gw, cmd.id, res, note)))


def run(app, op, args):
    """Carry out one operation: (result code, note)."""
    if op == messages.OP_REBIRTH:
        app.birth()
        app.heartbeat()
    elif op == messages.OP_TIME_SYNC:
        if 0 not in args or args[0] <= 0:
            return messages.RES_BAD_ARGS, "args {0: UTC ms} required"
        app.clock.sync(args[0])
    elif op == messages.OP_RESEND:
        if 0 not in args or args[0] < 1:
            return messages.RES_BAD_ARGS, "args {0: seq, ?1: boot} required"
        app.outbox.resend_from(args.get(1, app.outbox.boot), args[0])
    elif op == messages.OP_RESET:
        return messages.RES_OK, str(reset(app, args.get(0, 0))) + " points reset"
    elif op == messages.OP_TEST_MODE:
        if args.get(0) not in (0, 1):
            return messages.RES_BAD_ARGS, "args {0: 1 on | 0 off, ?1: s, ?2: src}"
        on = args[0] == 1
        src = args.get(2, 0)
        if not 0 <= src <= 0xFFFFFFFF:  # (the Pi's Event refuses it and answers nothing)
            return messages.RES_BAD_ARGS, "args {0: 1 on | 0 off, ?1: s, ?2: src}"
        set_test(app, src, on)
        duration = args.get(1, 0)
        if on and duration > 0:
            due = ticks_add(ticks_ms(), min(duration, TEST_MAX_S) * 1000)
            t = app.test_timers  # soonest first: the main loop looks at the head only
            i = 0
            while i < len(t) and ticks_diff(t[i][0], due) <= 0:
                i += 1
            t.insert(i, (due, src))
    else:
        return messages.RES_UNKNOWN_OP, "op " + str(op) + " not supported by this gateway"
    return messages.RES_OK, None


def expire(app, now):
    """Test mode off for the timers that are due (the Pi's call_later)."""
    t = app.test_timers
    while t and ticks_diff(now, t[0][0]) >= 0:
        set_test(app, t.pop(0)[1], False)


def _targets(app, src):
    """Points with detectors matching src: 0 = all, point 0 = a whole device, else one point
    (the Pi's Gateway._targets)."""
    out = []
    for d in app.devices:
        for p in d.pts:
            s = p.src
            if p.det is not None and (
                src == 0 or s == src or (src & 0xFFFF == 0 and s & 0xFFFF0000 == src)
            ):
                out.append(p)
    return out


def reset(app, src):
    """Operator reset of the matching points: their events stored; how many points."""
    t = ticks_ms()
    out = app.out
    targets = _targets(app, src)
    for p in targets:
        p.det.reset(t, out)
        for at, ev in out:
            app.emit(ev, at)
        out.clear()
    return len(targets)


def set_test(app, src, on):
    """Test mode for the gateway (src 0) or a device (the device of a point src)."""
    t = ticks_ms()
    dev = src & 0xFFFF0000
    if src == 0:
        if app.test_all == on:
            return
        app.test_all = on
    elif on == (dev in app.test_devs):
        return
    elif on:
        app.test_devs.append(dev)
    else:
        app.test_devs.remove(dev)
    app.emit(Event(codes.TEST_MODE, 0, src, state=codes.ACTIVE if on else codes.NORMAL), t)
    for d in app.devices:  # status words, sensor faults and comms of a device in test
        d.test = app.test_all or d.src in app.test_devs
        for p in d.pts:
            p.test = d.test
    out = app.out
    for p in _targets(app, dev):
        p.det.set_test(t, on, out)
    for at, ev in out:
        if ev.kind != codes.TEST_MODE:  # ours above already says it for the whole scope
            app.emit(ev, at)
    out.clear()
