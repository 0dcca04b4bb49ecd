"""Supervised local processes: start with a log file, wait for readiness, stop by PID.

A process is identified by its PID *and* its start time (``/proc/<pid>/stat`` field 22), so
``down`` never signals an unrelated process that reused a PID after a reboot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SovereignError


class ComponentError(SovereignError, RuntimeError):
    """A component could not start; the message names it and its log file."""


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    start_ticks: int
    log: Path


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (the command name, field 2, may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, ticks: int) -> bool:
    """The process that had this PID and start time still runs (a zombie does not count)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == ticks


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spawn(
    name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], Started]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # its own process group: stop() takes its children too
        )
    ticks = start_ticks(proc.pid)
    if ticks is None:
        raise ComponentError(f"{name}: exited immediately; see its log {log}")
    return proc, Started(name, proc.pid, ticks, log)


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout_s: float,
    log: Path,
    interval_s: float = 0.1,
) -> float:
    """Poll *ready* until it returns True; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            raise ComponentError(f"{name}: exited with code {code} while starting; see its log {log}")
        with contextlib.suppress(Exception):
            if ready():
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise ComponentError(f"{name}: not ready after {timeout_s:.0f} s; see its log {log}")
        time.sleep(interval_s)


def stop(pid: int, ticks: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group, SIGKILL it after *timeout_s*. False if it was not running."""
    if not alive(pid, ticks):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid, ticks):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True
