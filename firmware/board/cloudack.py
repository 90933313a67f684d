"""Cloud-ack mode (``[mqtt] cloud_ack``): a record leaves the outbox on the cloud's Ack, not
the broker's PUBACK, as on the Pi (edge/uplink.py).

After its PUBACK a batch waits here (its records stay in flight in the outbox). The cloud's
``Ack`` on ``el/v1/<gw>/ack`` {gw, boot, hwm} says every seq <= hwm of that boot is stored
there: those records are marked delivered. A batch not covered within ``timeout_ms`` of its
PUBACK is sent again, with everything stored after it (the Pi's ``resend_from``), and says
replayed. A lost link queues every record again (``Outbox.requeue``) and forgets the waits.

Memory: at most ``AWAIT_MAX`` waits of four small ints; past that a batch joins the newest
wait of its boot (whose older PUBACK time it keeps: at worst sent again early, never lost).
Loaded only when the mode is on.
"""

from .compat import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


AWAIT_MAX = const(16)
CHECK_MAX_MS = const(5000)


class CloudAck:
    def __init__(self, outbox, gw, timeout_ms):
        self.outbox = outbox
        self.gw = gw
        self.timeout_ms = timeout_ms
        # looked at every half timeout (at most 5 s), as the Pi's watch does: the batches late
        # by then go again together, from the oldest, rather than one resend per loop turn
        self.every_ms = min(CHECK_MAX_MS, timeout_ms // 2)
        self.last_check = ticks_ms()
        self.waits = []  # type: list  # [boot, first, last, PUBACK ticks], oldest first
        self.hwm = {}  # type: dict  # boot -> highest seq the cloud has acked
        self.acked = 0  # records delivered on the cloud's acks
        self.resends = 0  # timeouts that sent records again

    def puback(self, boot, first, last, now):
        """The broker has ``first..last`` of ``boot``: wait for the cloud to say so too."""
        if last <= self.hwm.get(boot, 0):
            return  # the cloud's ack overtook the PUBACK
        w = self.waits
        if len(w) >= AWAIT_MAX:
            for i in range(len(w) - 1, -1, -1):
                e = w[i]
                if e[0] == boot:
                    e[1] = min(e[1], first)
                    e[2] = max(e[2], last)
                    return
        w.append([boot, first, last, now])

    def on_ack(self, payload):
        """The cloud's Ack (CBOR): the records it covers are delivered; how many."""
        from ...protocol import messages
        from ...protocol.errors import ProtocolError

        try:
            ack = messages.decode_ack(payload)
        except ProtocolError as e:
            print("emberlink: refused ack:", e)
            return 0
        if ack.gw != self.gw:
            print("emberlink: ack for gateway", ack.gw, "on our topic: ignored")
            return 0
        n = self.outbox.ack_upto(ack.boot, ack.hwm)
        if ack.hwm > self.hwm.get(ack.boot, 0):
            self.hwm[ack.boot] = ack.hwm
        w = self.waits
        i = 0
        while i < len(w):
            if w[i][0] == ack.boot and w[i][2] <= ack.hwm:
                w.pop(i)
            else:
                i += 1
        self.acked += n
        return n

    def check(self, now):
        """Send again what the cloud has not acked in time; True when something was queued."""
        if ticks_diff(now, self.last_check) < self.every_ms:
            return False
        self.last_check = now
        w = self.waits
        if not w or ticks_diff(now, w[0][3]) < self.timeout_ms:
            return False  # the oldest wait is first: nothing is late
        first = (w[0][0], w[0][1])  # late, so at least this
        i = 0
        while i < len(w):
            e = w[i]
            if ticks_diff(now, e[3]) >= self.timeout_ms:
                if (e[0], e[1]) < first:
                    first = (e[0], e[1])
                w.pop(i)
            else:
                i += 1
        print("emberlink: no cloud ack in", self.timeout_ms, "ms: sending again from", first)
        self.outbox.resend_from(first[0], first[1])
        self.resends += 1
        return True

    def clear(self):
        """The link dropped: the outbox queues everything again itself."""
        self.waits = []
