"""Locust suite: OpenAI-compatible streaming users running the healthcare workload against the
gateway. Each stream is one Locust request (its use case as the name, timed to the end of the
stream) and one stream record (``samples.json``); the SLA verdict is evaluated from the records
at the end of each test (on the master only, in distributed mode).

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8080 -u 10 -r 2 -t 60s \\
        --sla-profile cpu-local --sla-out reports/loadtest --api-key-file .sovereign/secrets/demo.key

`sovereign loadtest` builds this command line, and its ``--help`` lists the suite's options
(``locust --help`` cannot: Locust prints its help before it loads a locustfile, locustio/locust
issue 2917; docs/load-tests.md).

The clock of a stream starts when its request is written on an established connection (a new
connection's connect and TLS handshake are timed apart, ``loadtests/client.py``); every response
is read to its end so the connection is reused. Closed loop (default): a user sends its next
request when the last one ended, after a capped exponential backoff with jitter when it failed.
Open loop (``--arrival-rate``): requests start at seeded scheduled times (``loadtests/schedule.py``),
each in its own greenlet, at most ``--max-in-flight`` per process (arrivals finding it full are
dropped and counted). A 401 or 403 stops the run at once.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
import locust
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from infra.paths import REPO_ROOT as REPO
from loadtests import arrival, report, schedule, sla, workflows
from loadtests.client import Client, Exchange, post_stream
from loadtests.options import add_shared
from loadtests.stream import StreamFailure, measure

BACKOFF_BASE_S = 0.1  # after the first failure in a row; doubles with each further one
BACKOFF_CAP_S = 5.0
AUTH_FAILURES = (401, 403)
FLUSH_DEADLINE_S = 30.0  # the master waits this long for the workers' last stream records


class StreamError(Exception):
    """A failed stream in Locust's failure table: a short code (``HTTP 401 invalid_api_key``)."""


class Recorder:
    """The stream records and arrival counts of this process for the current test."""

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        # open loop, in the measured window: arrivals the seeded schedules hold (whether or not
        # the loop reached them), arrivals the loop reached, requests sent, arrivals dropped
        self.held = self.scheduled = self.sent = self.dropped = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def drain(self) -> dict[str, Any]:
        batch = {
            "streams": self.streams,
            "held": self.held,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "dropped": self.dropped,
        }
        self.reset()
        return batch

    def merge(self, batch: dict[str, Any], measure_from: float | None) -> None:
        for s in batch["streams"]:
            # the master's end of the warm-up decides: a worker may have learnt it a little late
            s["warm_up"] = bool(s["warm_up"]) or measure_from is None or float(s["start"]) < measure_from
            self.streams.append(s)
        self.held += int(batch.get("held") or 0)
        self.scheduled += int(batch["scheduled"])
        self.sent += int(batch["sent"])
        self.dropped += int(batch["dropped"])


class State:
    """This process's view of the current test."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.measure_from: float | None = None  # None: still warming up
        self.armed = False
        self.in_flight = 0
        self.aborted: str | None = None
        self.evaluated = False
        self.last: dict[str, Any] | None = None  # the latest test's verdict (sla.json) and report
        self.finals: set[str] = set()  # workers whose last records reached the master
        self.missing: list[str] = []  # workers whose last records did not reach it in time
        self.users: int | None = None  # the test's users over all processes (the master's count)
        self.told = gevent.event.Event()  # worker: the master's count for this test has arrived
        self.listening: set[str] = set()  # master: workers whose message handlers are registered
        self.timer: gevent.Greenlet | None = None  # the pending end of the warm-up
        self.ordinal = 0  # users started in this process

    def measuring(self, at: float) -> bool:
        return self.measure_from is not None and at >= self.measure_from

    def in_window(self, at: float) -> bool:
        """Inside the measured window: after the warm-up and not after the test began to stop
        (what `scheduled` and `sent` count; `held` counts the schedule over the same window)."""
        return self.measuring(at) and (self.ended is None or at <= self.ended)


RECORDS = Recorder()
STATE = State()


def _options(parser: Any) -> None:
    group = parser.add_argument_group("sovereign-llm load test (loadtests/locustfile.py)")
    group.add_argument(
        "--sla-profile", default="cpu-local", help="SLA profile: a name in loadtests/profiles or a .yaml path"
    )
    group.add_argument(
        "--sla-out",
        default="reports/loadtest",
        help="folder for sla.json, samples.json, sla.html, llm_stats.csv, plots",
    )
    group.add_argument(
        "--api-key-file", default="", help="file with the gateway API key (else SOVEREIGN_API_KEY)"
    )
    group.add_argument(
        "--workload",
        default=workflows.DEFAULT_WORKLOAD,
        help="workload: a name in loadtests/workloads or a .yaml path (use-case weights, prompt/output "
        "lengths)",
    )
    group.add_argument(
        "--ca-file", default="", help="https: PEM file of the CA that signed the gateway's certificate"
    )
    add_shared(group)  # the options `sovereign loadtest` takes too (loadtests/options.py)


def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    # the message handlers first: a worker is already connected, and anything below that waits
    # (arrival.enable) lets it handle the master's messages
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message("sla_abort", lambda msg, **_: _abort(environment, str(msg.data["reason"])))
        runner.register_message("sla_final", lambda msg, **_: _final(msg.data))
        runner.register_message("sla_listening", lambda msg, **_: _listening(runner, msg.node_id))
    elif isinstance(runner, WorkerRunner):
        runner.register_message(
            "sla_measure_from", lambda msg, **_: _learn_measure_from(float(msg.data["at"]))
        )
        runner.register_message("sla_flush", lambda msg, **_: gevent.spawn(_flush, environment))
        runner.register_message("sla_users", lambda msg, **_: _learn_users(int(msg.data["users"])))
        # a worker is connected (and may be sent the test's start) before this event fires:
        # the master sends the user count only to workers that said they listen
        runner.send_message("sla_listening", {})
    sla.load_profile(options.sla_profile)  # a bad profile, workload or option fails before any load
    workflows.load_workload(options.workload).only(options.use_cases)
    schedule.duration_s(options.warm_up)
    if options.stamps == "kernel":
        arrival.enable()  # kernel receive stamps from the first packet on
    if environment.web_ui is not None:
        _extend_web_ui(environment)


def _send(client_id: str, data: dict[str, Any]) -> None:
    data["sla_records"] = RECORDS.drain()
    data["sla_measuring"] = STATE.measure_from is not None


def _receive(client_id: str, data: dict[str, Any]) -> None:
    if "sla_records" in data:
        RECORDS.merge(data["sla_records"], STATE.measure_from)
    environment = _ENV[0] if _ENV else None
    runner = environment.runner if environment is not None else None
    running = STATE.measure_from is not None and STATE.ended is None
    if data.get("sla_measuring") is False and running and isinstance(runner, MasterRunner):
        # a worker that missed the end of the warm-up (it joined late): tell it again
        runner.send_message("sla_measure_from", {"at": STATE.measure_from}, client_id=client_id)


def _learn_measure_from(at: float) -> None:
    STATE.measure_from = at


def _learn_users(users: int) -> None:
    """Worker: the test's users over all processes (its own options do not hold it: Locust
    hands a worker only the options that differ from their defaults, and --users is not one)."""
    STATE.users = users
    STATE.told.set()


def _listening(runner: MasterRunner, worker: str) -> None:
    """Master: *worker* has registered its handlers; a test already started tells it its
    user count now (the count sent at the start went only to workers listening then)."""
    STATE.listening.add(worker)
    if STATE.users and STATE.started is not None and STATE.ended is None:
        runner.send_message("sla_users", {"users": STATE.users}, client_id=worker)


def _flush(environment: Environment) -> None:
    """Worker: stop the users, report Locust's stats and hand the last records to the master."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return
    runner.stop()
    runner._send_stats()  # Locust's stats first: the master counts them before the records arrive
    runner.send_message("sla_final", {"worker": runner.client_id, "records": RECORDS.drain()})


def _final(data: dict[str, Any]) -> None:
    worker = str(data["worker"])
    if STATE.evaluated:  # too late: the verdict is written; say so rather than drop them silently
        batch = data["records"]
        print(f"sovereign loadtest: worker {worker}'s last {len(batch['streams'])} stream records arrived "
              "after the verdict: not judged (run.missing_workers in sla.json names it)",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    RECORDS.merge(data["records"], STATE.measure_from)
    STATE.finals.add(worker)


def _cancel_timer() -> None:
    if STATE.timer is not None:
        STATE.timer.kill(block=False)
        STATE.timer = None


def _test_start(environment: Environment, **_: Any) -> None:
    RECORDS.reset()
    _cancel_timer()  # a previous test's end of warm-up (web UI) must not end this one's
    STATE.started, STATE.ended, STATE.measure_from = time.time(), None, None
    STATE.aborted = None
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return  # a worker learns the users and the end of the warm-up from the master
    STATE.armed = STATE.evaluated = False
    STATE.finals, STATE.missing = set(), []
    # test_start fires before any user is spawned: the workers have the count before their users
    STATE.users = int(runner.target_user_count or 0) if runner is not None else None
    if isinstance(runner, MasterRunner) and STATE.users:
        # only to the workers listening: a message a worker cannot handle yet is dropped (with
        # Locust's "Unknown message type" warning); the others get it when they say they listen
        for worker in sorted(STATE.listening):
            runner.send_message("sla_users", {"users": STATE.users}, client_id=worker)


def _spawning_complete(user_count: int, **_: Any) -> None:
    environment = _ENV[0] if _ENV else None
    if environment is None or isinstance(environment.runner, WorkerRunner) or STATE.armed:
        return
    STATE.armed = True
    options = environment.parsed_options
    warm_up = schedule.duration_s(options.warm_up) if options is not None else 0.0
    delay = (STATE.started or time.time()) + warm_up - time.time()
    if delay > 0:
        STATE.timer = gevent.spawn_later(delay, _measure_now, environment)
    else:
        _measure_now(environment)


def _measure_now(environment: Environment) -> None:
    """The end of the warm-up: Locust's tables restart here too, so they count what sla.json counts."""
    STATE.timer = None
    if STATE.ended is not None:
        return
    STATE.measure_from = time.time()
    runner = environment.runner
    if runner is not None:
        runner.stats.reset_all()
    if isinstance(runner, MasterRunner):
        runner.send_message("sla_measure_from", {"at": STATE.measure_from})


def _reset_stats(**_: Any) -> None:
    """Web UI "reset stats": the verdict restarts from now as well."""
    RECORDS.reset()
    STATE.measure_from = time.time()
    environment = _ENV[0] if _ENV else None
    if environment is not None and isinstance(environment.runner, MasterRunner):
        environment.runner.send_message("sla_measure_from", {"at": STATE.measure_from})


def _test_stopping(environment: Environment, **_: Any) -> None:
    _cancel_timer()
    if STATE.ended is None:
        STATE.ended = time.time()
    # measure_from stays: streams ending during a graceful stop are measured; test_start resets it


def _test_stop(environment: Environment, **_: Any) -> None:
    _close_shared()  # every user has stopped
    if isinstance(environment.runner, WorkerRunner):
        STATE.users = None  # the next test's count comes from the master again
        STATE.told.clear()
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or environment.parsed_options is None or STATE.evaluated:
        return
    if isinstance(runner, MasterRunner):  # every worker's last records, then the verdict, once
        expected = {c.id for c in runner.clients.all}
        workers = set(expected)
        runner.send_message("sla_flush")
        deadline = time.monotonic() + FLUSH_DEADLINE_S
        while not workers <= STATE.finals and time.monotonic() < deadline:
            workers &= {c.id for c in runner.clients.all}  # a worker gone will not send them
            gevent.sleep(0.05)
        STATE.missing = sorted(expected - STATE.finals)
        if STATE.missing:
            names = ", ".join(STATE.missing)
            print(f"sovereign loadtest: the last stream records of worker(s) {names} did not arrive (worker "
                  f"gone, or later than {FLUSH_DEADLINE_S:g} s): the verdict is judged without them",
                  file=sys.stderr, flush=True)  # fmt: skip
    _evaluate(environment)


def _quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    if not STATE.evaluated and STATE.started is not None:
        _test_stop(environment)
    _final_csv(environment)
    if STATE.aborted:
        environment.process_exit_code = 3
    elif STATE.last is not None:
        environment.process_exit_code = 0 if STATE.last["verdict"]["passed"] else 1


def _final_csv(environment: Environment) -> None:
    """Locust writes its CSV files once a second and not at the end: write them once more now
    that every user has stopped, so locust_stats.csv counts every stream (it missed the last
    second's, 1.6-2.3 % of a 60 s run). Locust's own writer, should it run once more, writes
    the same final rows."""
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None)
    if not prefix or environment.runner is None:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv),
                          ("_exceptions.csv", writer.exceptions_csv)):  # fmt: skip
        with open(f"{prefix}{suffix}", "w", newline="", encoding="utf-8") as handle:
            write(csv.writer(handle))


def _git() -> tuple[str | None, bool | None]:
    """The commit of this checkout and whether tracked files differ from it (None: not a checkout)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        return git("rev-parse", "HEAD") or None, bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def run_metadata(environment: Environment) -> dict[str, Any]:
    options = environment.parsed_options
    if options is None:
        raise RuntimeError("the suite runs under Locust's command line (parsed options missing)")
    commit, dirty = _git()
    workload = workflows.load_workload(options.workload).only(options.use_cases)
    rate = float(options.arrival_rate or 0.0)
    ended = STATE.ended or time.time()
    return {
        "target": (environment.host or "").rstrip("/"),
        "profile": options.sla_profile,
        "users": int(options.num_users or 0),
        "spawn_rate": float(options.spawn_rate or 0.0),
        "run_time": None if not options.run_time else f"{options.run_time}s",
        "processes": int(getattr(options, "processes", 0) or 0),
        "use_cases": list(workload.use_cases),
        "workload": options.workload,
        "seed": options.seed,
        # TLS: records are decrypted in user space, the kernel's receive stamps cannot be used
        "stamps": "read" if (environment.host or "").startswith("https://") else options.stamps,
        "arrival": {
            "mode": options.arrival if rate > 0 else "closed",
            "rate": rate or None,
            "max_in_flight": options.max_in_flight if rate > 0 else None,
        },
        "started": STATE.started,
        "ended": ended,
        "measure_from": STATE.measure_from if STATE.measure_from is not None else ended,
        "warm_up_s": schedule.duration_s(options.warm_up),
        "held": RECORDS.held,
        "scheduled": RECORDS.scheduled,
        "sent": RECORDS.sent,
        "dropped": RECORDS.dropped,
        "aborted": STATE.aborted,
        "missing_workers": list(STATE.missing),
        "commit": commit,
        "dirty": dirty,
        "locust_version": locust.__version__,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


def _evaluate(environment: Environment) -> None:
    options = environment.parsed_options
    if options is None:
        raise RuntimeError("the suite runs under Locust's command line (parsed options missing)")
    STATE.evaluated = True
    run = run_metadata(environment)
    streams = sorted(RECORDS.streams, key=lambda s: float(s["start"]))
    for s in streams:  # streams that ended after the warm-up but started in it
        s["warm_up"] = bool(s["warm_up"]) or float(s["start"]) < float(run["measure_from"])
    verdict = sla.evaluate(sla.load_profile(options.sla_profile), streams, run)
    out = Path(options.sla_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sla.json").write_text(json.dumps(verdict.to_json(), indent=2))
    (out / "samples.json").write_text(json.dumps({"version": 2, "run": run, "streams": streams}))
    report.plots(streams, run, out)
    report.write_llm_csv(verdict, out / "llm_stats.csv")
    report.write_html(verdict, streams, run, out / "sla.html")
    text = verdict.report()
    if STATE.aborted:
        text += f"\nthe run was stopped: {STATE.aborted}"
    STATE.last = {"verdict": verdict.to_json(), "report": text, "llm_rows": report.llm_rows(verdict)}
    print(text, flush=True)
    environment.process_exit_code = 3 if STATE.aborted else (0 if verdict.passed else 1)


# -- web UI: the verdict of the last test as a tab and as JSON (/sla) --------------------------


def _extend_web_ui(environment: Environment) -> None:
    from flask import Response, jsonify, request

    web_ui = environment.web_ui
    if web_ui is None or web_ui.app is None:
        return
    app = web_ui.app
    web_ui.template_args["extendedTabs"] = [{"title": "SLA verdict", "key": "sla-verdict"}]
    web_ui.template_args["extendedTables"] = [
        {"key": "sla-verdict", "structure": [{"key": c, "title": c} for c in report.COLUMNS]}
    ]

    def sla_json() -> Any:
        if STATE.last is None:
            return jsonify({"verdict": None, "message": "no test has finished yet"})
        return jsonify(STATE.last)

    def extend_stats(response: Response) -> Response:
        if request.path != "/stats/requests" or not response.is_json:
            return response
        rows = list(STATE.last["llm_rows"]) if STATE.last is not None else []
        if STATE.last is not None:
            rows.append({"use case": f"verdict: {'PASSED' if STATE.last['verdict']['passed'] else 'FAILED'}"})
        data = response.get_json()
        data["extendedStats"] = [{"key": "sla-verdict", "data": rows}]
        response.set_data(json.dumps(data))
        return response

    app.add_url_rule("/sla", "sla", sla_json)
    app.after_request(extend_stats)


_ENV: list[Environment] = []


def _remember(environment: Environment, **_: Any) -> None:
    _ENV[:] = [environment]


events.init_command_line_parser.add_listener(_options)
events.init.add_listener(_remember)
events.init.add_listener(_init)
events.report_to_master.add_listener(_send)
events.worker_report.add_listener(_receive)
events.test_start.add_listener(_test_start)
events.spawning_complete.add_listener(_spawning_complete)
events.reset_stats.add_listener(_reset_stats)
events.test_stopping.add_listener(_test_stopping)
events.test_stop.add_listener(_test_stop)
events.quitting.add_listener(_quitting)


def _decoded(lines: list[tuple[float, bytes]]) -> Iterator[tuple[float, str]]:
    for at, line in lines:
        text = line.decode("utf-8", errors="replace").strip()
        if text:
            yield at, text


def _api_key(options: Any) -> str:
    if options.api_key_file:
        return Path(options.api_key_file).read_text(encoding="utf-8").strip()
    key = os.environ.get("SOVEREIGN_API_KEY", "")
    if not key:
        raise SystemExit("no API key: pass --api-key-file FILE or set SOVEREIGN_API_KEY")
    return key


def _abort(environment: Environment, reason: str) -> None:
    """Stop the run at once (an auth failure: every further request would fail the same way)."""
    if STATE.aborted:
        return
    STATE.aborted = reason
    runner = environment.runner
    print(f"sovereign loadtest: stopping the run: {reason}", file=sys.stderr, flush=True)
    if isinstance(runner, WorkerRunner):
        runner.send_message("sla_abort", {"reason": reason})
    elif runner is not None:
        options = environment.parsed_options
        headless = bool(options is not None and options.headless)
        gevent.spawn(runner.quit if headless else runner.stop)


def record(use_case: str, request_id: str, exchange: Exchange, scheduled: float | None) -> dict[str, Any]:
    """The stream record (samples.json v2) of one exchange."""
    c = exchange.connection
    s: dict[str, Any] = {
        "use_case": use_case,
        "request_id": request_id,
        "start": c.start,
        "end": exchange.failed_at or time.time(),
        "ok": False,
        "status": exchange.status,
        "error": exchange.error,
        "ttft_ms": None,
        "itl_ms": [],
        "tpot_ms": None,
        "e2e_ms": None,
        "output_tokens": None,
        "prompt_tokens": None,
        "connect_ms": c.connect_ms,
        "tls_ms": c.tls_ms,
        "reused": c.reused,
        "scheduled": scheduled,
        "warm_up": not STATE.measuring(c.start),
    }
    if exchange.error is None:
        try:
            m = measure(c.start, _decoded(exchange.lines), started_wall=c.start)
        except StreamFailure as exc:
            s["error"] = f"stream {exc}"
            return s
        s["ok"], s["end"] = True, c.start + m.e2e_ms / 1000
        s["ttft_ms"], s["itl_ms"], s["tpot_ms"], s["e2e_ms"] = m.ttft_ms, m.itl_ms, m.tpot_ms, m.e2e_ms
        s["output_tokens"], s["prompt_tokens"] = m.output_tokens, m.prompt_tokens
        if m.ttft_error_ms is not None:
            s["ttft_error_ms"], s["itl_error_ms"] = m.ttft_error_ms, m.itl_error_ms
    return s


class Slot:
    """One place of --max-in-flight, given back once: when the stream's last byte has been read
    (it is no longer in flight at the server; parsing and recording it take no place), or when
    its greenlet ends without that (killed before it started, at the end of the test)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        STATE.in_flight += 1
        self.held = True

    def give_back(self, _: object = None) -> None:
        if self.held:
            self.held = False
            STATE.in_flight -= 1


def _take(group: gevent.pool.Group, run: Any, *args: Any) -> gevent.Greenlet:
    """Open loop: take a slot of --max-in-flight now and start ``run(*args, slot)`` in a
    greenlet of *group*; *run* gives the slot back when its stream is read, the greenlet's end
    gives it back however it ends (a greenlet killed before it started included)."""
    slot = Slot()
    greenlet = group.spawn(run, *args, slot)
    greenlet.link(slot.give_back)
    return greenlet


def _held(mode: str, began: float, rate: float, seed: str) -> int:
    """Arrivals of one user's seeded schedule due in the measured window: the loop may not have
    reached them (a lagging load generator), the schedule holds them all the same."""
    if STATE.measure_from is None:
        return 0
    end = STATE.ended or time.time()
    held = 0
    for offset in schedule.offsets(mode, rate, seed):
        due = began + offset
        if due > end:
            return held
        held += due >= STATE.measure_from
    return held  # pragma: no cover - the schedule is endless


_SHARED: dict[str, Client] = {}


def _shared_client(target: str, options: Any) -> Client:
    """Open loop: the process's one pool, sized --max-in-flight (a pool per user would leave
    connections idle for the user's mean gap, often past the gateway's keep-alive, and a close
    racing a send would count as a gateway failure)."""
    client = _SHARED.get(target)
    if client is None:
        client = _SHARED[target] = Client(target, insecure=options.insecure, ca_file=options.ca_file or None,
                                          concurrency=max(1, options.max_in_flight))  # fmt: skip
    return client


def _close_shared() -> None:
    for client in _SHARED.values():
        client.close()
    _SHARED.clear()


class GatewayUser(User):
    """A Magento backend calling the gateway with streaming chat completions."""

    pause = 0.0  # closed loop: the backoff after a failure (0 after a success)

    def wait_time(self) -> float:
        return self.pause

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if options is None:
            raise RuntimeError("the suite runs under Locust's command line (parsed options missing)")
        self.options = options
        self.api_key = _api_key(options)
        self.workload = workflows.load_workload(options.workload).only(options.use_cases)
        STATE.ordinal += 1
        runner = self.environment.runner
        worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        self.label = f"{options.seed}-{worker}-{STATE.ordinal}"
        self.rng = random.Random(self.label)  # noqa: S311 - synthetic test data, not security
        self.jitter = random.Random(f"{self.label}-jitter")  # noqa: S311
        self.open_loop = float(options.arrival_rate or 0.0) > 0
        target = self.host or self.environment.host or ""
        if self.open_loop:  # one pool for the process: few idle connections, none idle for long
            self.client = _shared_client(target, options)
        else:
            self.client = Client(target, insecure=options.insecure, ca_file=options.ca_file or None)
        self.in_flight = gevent.pool.Group()
        self.failures_in_row = 0
        self.schedule: tuple[float, float] | None = None  # open loop: (began, this user's rate)

    def on_stop(self) -> None:
        self.in_flight.kill(block=True)  # streams cut off by the end of the run: not recorded
        if self.schedule is not None:
            RECORDS.held += _held(self.options.arrival, *self.schedule, f"{self.label}-arrivals")
            self.schedule = None
        if not self.open_loop:
            self.client.close()  # the shared pool closes at the end of the test

    @task
    def workflow(self) -> None:
        if self.open_loop:
            self.arrivals()
        elif self.one(None):
            self.failures_in_row, self.pause = 0, 0.0
        else:  # capped exponential backoff with jitter: a broken gateway is not hammered
            self.failures_in_row += 1
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self.failures_in_row - 1))
            self.pause = ceiling * self.jitter.uniform(0.5, 1.0)

    def arrivals(self) -> None:
        """Open loop: start a request at each scheduled time, whether or not earlier ones ended."""
        options = self.options
        # a worker that connected just before the test began hears the count a moment later
        if isinstance(self.environment.runner, WorkerRunner):
            STATE.told.wait(timeout=10)
        users = STATE.users
        if not users:  # a worker the master has not told: X/1 per user would send X per user
            _abort(self.environment, "open loop: this worker does not know the test's user count (the master "
                   "sends it at the start of each test); run master and workers of this suite")  # fmt: skip
            return
        began, rate = time.time(), float(options.arrival_rate) / users
        self.schedule = (began, rate)  # on_stop counts what it holds up to the end of the run
        for offset in schedule.offsets(options.arrival, rate, f"{self.label}-arrivals"):
            due = began + offset
            delay = due - time.time()
            # behind schedule: yield all the same, so the streams already started (and the runner)
            # are not starved by a loop catching up
            gevent.sleep(max(0.0, delay))
            while STATE.ended is not None:  # the test is stopping: no new arrivals, and no new
                gevent.sleep(1.0)  # schedule either (on_stop counts what this one holds)
            counted = STATE.in_window(due)
            RECORDS.scheduled += counted
            if STATE.in_flight >= options.max_in_flight:
                RECORDS.dropped += counted
                continue
            _take(self.in_flight, self.one, due)

    def one(self, scheduled: float | None, slot: Slot | None = None) -> bool:
        use_case, body = self.workload.pick(self.rng)
        request_id = str(uuid.uuid4())  # the gateway keeps a client's id only in this form
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "text/event-stream",
                   "Content-Type": "application/json", "X-Request-Id": request_id}  # fmt: skip
        slot = slot or Slot()  # closed loop: a stream of its own
        try:
            # an open-loop arrival counts by its scheduled time, as `held` and `scheduled` do (one
            # due just before the window and sent just inside it counted once, in `sent` alone:
            # more sent than held); a closed-loop request by when it goes
            RECORDS.sent += STATE.in_window(time.time() if scheduled is None else scheduled)
            exchange = post_stream(self.client, "/v1/chat/completions", json.dumps(body).encode(), headers,
                                   kernel=self.options.stamps == "kernel")  # fmt: skip
        finally:
            slot.give_back()  # read to its end: no longer in flight, whatever parsing takes
        # parse once no other stream has bytes waiting: the parsing and the events below would
        # otherwise run between another stream's arrival and its clock reading
        gevent.idle()
        s = record(use_case, request_id, exchange, scheduled)
        RECORDS.streams.append(s)
        if not s["warm_up"]:  # Locust's tables count what sla.json counts
            self.environment.events.request.fire(
                request_type="POST", name=use_case, response_time=(s["end"] - s["start"]) * 1000,
                response_length=sum(len(line) for _, line in exchange.lines),
                exception=None if s["ok"] else StreamError(s["error"]), context={"request_id": request_id},
            )  # fmt: skip
        if exchange.status in AUTH_FAILURES:
            _abort(self.environment, f"the gateway answered {s['error']}: the API key is refused; "
                   "check --api-key-file (the key is not shown)")  # fmt: skip
        return bool(s["ok"])
