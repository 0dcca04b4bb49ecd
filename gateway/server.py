"""Run the gateway under uvicorn, with the egress guard installed first, connection bounds
(gateway/connections.py), an open-file limit checked at start, and a shutdown with a deadline."""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from prometheus_client import Gauge, Histogram

from gateway import egress
from gateway.app import create_app
from gateway.connections import MAX_LINGERING, ConnectionBounds, protocol_class
from gateway.phi import compiled
from gateway.settings import CONFIG_ENV, GatewaySettings, LimitSettings, read_config_file
from gateway.upstream import PROBE_CONNECTIONS

log = logging.getLogger("sovereign.gateway.server")

#: open files the process needs besides client and upstream connections: the audit trail,
#: OpenBao, the key store, logs, threads, the listening socket
FD_HEADROOM = 128
#: seconds after the shutdown deadline before uvicorn cancels what still runs (a backstop: the
#: app's drain ends in-flight work at the deadline itself)
BACKSTOP_S = 2
#: seconds after that backstop before the process ends itself, whatever still blocks it (the
#: pod's budget, infra/k8s_platform/gateway.py, keeps 1 s after the backstop before SIGKILL)
WATCHDOG_S = 1

FROZEN = Gauge(
    "sovereign_gateway_gc_frozen_objects",
    "Objects of the gateway's start-up (modules, settings, routes) moved out of the garbage "
    "collector's reach before it serves (gc.freeze).",
)


GC_PAUSE = Histogram(
    "sovereign_gateway_gc_pause_seconds",
    "The gateway process's garbage collections by generation; each stops the event loop (and every "
    "stream in flight) for its length.",
    ["generation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def watch_collections() -> None:
    """Time every garbage collection of this process into sovereign_gateway_gc_pause_seconds
    (gc.callbacks: called at the start and the stop of each, with the GIL held)."""
    children = [GC_PAUSE.labels(str(g)) for g in range(3)]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(timed)


def freeze_start_up_heap() -> int:
    """Collect once, then freeze every object tracked so far (gc.freeze,
    https://docs.python.org/3.11/library/gc.html#gc.freeze): a full collection no longer walks
    the start-up heap (over 100,000 objects: the modules' functions, classes and tables, the
    settings, the routes), which made each one a pause of the event loop of 70 ms and more on a
    2-vCPU VM (benchmarks/README.md, "Garbage collection, and how many streams one gateway
    process takes"); what requests allocate is collected as before. Returns the objects frozen.
    Frozen objects are still freed by reference counting; only a cycle among them, left behind
    later, would stay (the start-up objects live as long as the process anyway)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    FROZEN.set(frozen)
    return frozen


def raise_open_file_limit(limits: LimitSettings) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; refuse to start (SystemExit) when the
    connection limits do not fit below it. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's ceiling is fs.nr_open
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = soft
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d to %d", soft, target)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the connections answered below the app while they linger, and the probes' own pool, too
    need = (
        limits.max_client_connections
        + MAX_LINGERING
        + limits.max_connections
        + PROBE_CONNECTIONS
        + FD_HEADROOM
    )
    if soft != resource.RLIM_INFINITY and need > soft:
        raise SystemExit(
            f"gateway: limits.max_client_connections ({limits.max_client_connections}) plus "
            f"limits.max_connections ({limits.max_connections}) plus {FD_HEADROOM} for the audit "
            f"trail, OpenBao and threads need {need} open files, but the open-file limit "
            f"(RLIMIT_NOFILE) is {soft} (hard {hard}). Lower limits.max_client_connections to "
            f"{max(soft - limits.max_connections - FD_HEADROOM, 0)} or less, or raise the "
            f"limit (ulimit -n, the container runtime's nofile setting, LimitNOFILE= in systemd)."
        )
    return int(soft)


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's shutdown: stop accepting, close idle connections,
    let the app end its in-flight work within the deadline, then end whatever remains."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, deadline_s: float) -> None:
        super().__init__(config)
        self.gateway_app = app
        self.deadline_s = deadline_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        backstop = self.config.timeout_graceful_shutdown or 0
        watchdog = threading.Timer(backstop + WATCHDOG_S, _force_exit)
        watchdog.daemon = True
        watchdog.start()
        begin_drain = getattr(getattr(self.gateway_app.state, "gateway", None), "begin_drain", None)
        if callable(begin_drain):
            try:
                begin_drain(self.deadline_s)
            except Exception as exc:  # the shutdown goes on: uvicorn's backstop still applies
                log.error("begin_drain failed: %s", type(exc).__name__)
        # uvicorn 0.54 server.py:281-311: closes the listeners; calls shutdown() on every
        # connection, which closes those without an answer in progress (idle keep-alive, headers
        # incomplete; httptools_impl.py:349-356); waits for the connections, then the tasks
        # (_wait_tasks_to_complete, :313-329) at most timeout_graceful_shutdown; then cancels the
        # tasks still running and runs the lifespan shutdown
        await super().shutdown(sockets)
        # a connection whose answer cannot be flushed (a client that stopped reading) would stay
        # open after its task ended: abort it, so nothing holds the loop
        for connection in list(self.server_state.connections):
            transport: Any = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


def _force_exit() -> None:
    # the handlers write each record at once; logging.shutdown() could wait on a lock held by a
    # stuck thread
    log.error("shutdown did not finish within its backstop; exiting now")
    os._exit(1)


def uvicorn_config(
    app: FastAPI, settings: GatewaySettings, host: str, port: int, log_level: str
) -> uvicorn.Config:
    """uvicorn's configuration for the gateway *app*: the connection bounds of *settings*, the
    guarded uvloop event loop, no WebSocket, no access log, the shutdown's backstop."""
    limits = settings.limits
    bounds = ConnectionBounds(
        header_timeout_s=limits.header_timeout_s,
        keep_alive_timeout_s=limits.keep_alive_timeout_s,
        max_client_connections=limits.max_client_connections,
        max_pending_connections=limits.max_pending_connections,
        retry_after_s=limits.retry_after_s,
        write_timeout_s=limits.write_timeout_s,
        body_timeout_s=limits.body_timeout_s,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvloop, with the egress guard's checks on the connects and lookups it makes in libuv,
        # which the audit hook does not see (gateway/egress.py)
        loop="gateway.egress:GuardedLoop",
        http=protocol_class(bounds),
        ws="none",  # no WebSocket upgrade: an upgraded connection would leave the bounds' counts
        log_level=log_level,
        access_log=False,
        # whole seconds in uvicorn's Config; the protocol applies the exact value
        timeout_keep_alive=math.ceil(limits.keep_alive_timeout_s),
        timeout_graceful_shutdown=math.ceil(limits.shutdown_deadline_s) + BACKSTOP_S,
    )


def serve(config: Path | None, host: str, port: int, log_level: str = "info") -> None:
    if config is not None:
        read_config_file(config)  # missing or not YAML: refused here, by position only
        os.environ[CONFIG_ENV] = str(config)
    settings = GatewaySettings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # the filter's compiled modules, or why not (gateway/phi/compiled.py; also a metric)
    log.log(
        logging.INFO if compiled.active else logging.WARNING,
        "PHI filter %s",
        compiled.describe(compiled.active),
    )
    if settings.enforce_egress:
        destinations = [u.host for u in settings.upstreams.values()]
        destinations.append(urlsplit(settings.openbao.address).hostname or "")
        egress.install(settings.egress_allowlist, destinations)
    limits = settings.limits
    raise_open_file_limit(limits)
    app = create_app(settings)
    log.info("froze %d start-up objects out of the garbage collector's reach", freeze_start_up_heap())
    watch_collections()
    uv_config = uvicorn_config(app, settings, host, port, log_level)
    server = GatewayServer(uv_config, app, limits.shutdown_deadline_s)
    server.run()
    if not server.started:  # as uvicorn.run does (main.py:639-640)
        raise SystemExit(3)
