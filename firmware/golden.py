"""Run a golden vector: the same function on CPython (pytest) and on MicroPython.

A vector is a dict (stored as JSON under firmware/vectors/):

* ``detectors``: a point's detector configuration (see config.py / README);
* ``src``: the point's source address (default 0);
* ``inputs``: a list of steps, each one of
  ``[t_ms, x]`` (a sample), ``[t_ms, "tick"]``, ``[t_ms, "ack"]``, ``[t_ms, "reset"]``,
  ``[t_ms, "test", 0|1]``, or ``{"from": t0, "to": t1, "every": ms, "x": value}`` (a constant
  run of samples at t0, t0+every, ... < t1);
* ``expect``: the transitions, ``[t_ms, {event fields}]`` in order (Event.fields() names).

``run_vector(vec)`` returns what the core produced in the ``expect`` format.
"""

import sys
from array import array

from .config import build_detectors

_MICROPYTHON = sys.implementation.name == "micropython"


def run_vector(vec, block=False):
    """Events for ``vec``; ``block=True`` feeds runs of samples through Point.feed_block."""
    point = build_detectors(vec["detectors"], vec.get("src", 0), [])
    out = []  # type: list
    ts = []  # type: list
    xs = []  # type: list
    for step in vec["inputs"]:
        if isinstance(step, dict):
            t = step["from"]
            while t < step["to"]:
                ts.append(t)
                xs.append(step["x"])
                t += step["every"]
        elif isinstance(step[1], int):
            ts.append(step[0])
            xs.append(step[1])
        else:
            _flush(point, ts, xs, out, block)
            _action(point, step, out)
    _flush(point, ts, xs, out, block)
    return [[t, e.fields()] for t, e in out]


def _flush(point, ts, xs, out, block):
    if block:
        if _MICROPYTHON and xs and _fits_i32(xs):
            # arrays, as a board's poll buffers are: this exercises the viper fast path
            # (micropython's array('i') silently wraps a value outside int32: those go as a list)
            point.feed_block(array("i", ts), array("i", xs), out)
        else:
            point.feed_block(ts, xs, out)
    else:
        for k in range(len(xs)):
            point.feed(ts[k], xs[k], out)
    del ts[:]
    del xs[:]


def _fits_i32(xs):
    return all(-0x80000000 <= x <= 0x7FFFFFFF for x in xs)


def _action(point, step, out):
    t = step[0]
    op = step[1]
    if op == "tick":
        point.tick(t, out)
    elif op == "ack":
        point.ack(t, out)
    elif op == "reset":
        point.reset(t, out)
    elif op == "test":
        point.set_test(t, step[2], out)
    else:
        raise ValueError("unknown step " + repr(step))
