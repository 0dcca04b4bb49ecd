"""Locust suite: OpenAI-compatible streaming users running the healthcare workflows against the
gateway, with the stream metrics recorded as named Locust metrics and as raw samples, and the
SLA profile evaluated at the end of the run (on the master only, in distributed mode).

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8080 -u 10 -r 2 -t 60s \\
        --sla-profile cpu-local --sla-out reports/loadtest --api-key-file .sovereign/secrets/demo.key

`sovereign loadtest` builds this command line (docs/load-tests.md).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests import arrival, report, sla, workflows
from loadtests.stream import StreamFailure, measure


class Samples:
    """Raw samples of this process: metric -> [(unix time, value)]; drained to the master."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.requests = 0
        self.failures = 0

    def add(self, metrics: dict[str, list[float]], at: float) -> None:
        for name, values in metrics.items():
            self.values[name].extend((at, v) for v in values)

    def drain(self) -> dict[str, Any]:
        batch = {"values": dict(self.values), "requests": self.requests, "failures": self.failures}
        self.values, self.requests, self.failures = defaultdict(list), 0, 0
        return batch

    def merge(self, batch: dict[str, Any]) -> None:
        for name, pairs in batch["values"].items():
            self.values[name].extend((float(t), float(v)) for t, v in pairs)
        self.requests += int(batch["requests"])
        self.failures += int(batch["failures"])


SAMPLES = Samples()


def _options(parser: Any) -> None:
    parser.add_argument("--sla-profile", default="cpu-local", help="SLA profile in loadtests/profiles")
    parser.add_argument("--sla-out", default="reports/loadtest", help="folder for the SLA verdict and plots")
    parser.add_argument(
        "--api-key-file", default="", help="file with the gateway API key (else SOVEREIGN_API_KEY)"
    )
    parser.add_argument("--use-cases", default="", help="comma list of workflows (default: all, weighted)")
    parser.add_argument(
        "--arrival-rate", type=float, default=0.0,
        help="constant arrival rate in requests/s over all users (0: closed loop, each user at once again)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic patient data")
    parser.add_argument(
        "--stamps", choices=("kernel", "read"), default="kernel",
        help="when a token arrived: the kernel's receive stamp (loadtests/arrival.py) or the clock at read",
    )  # fmt: skip


def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    sla.load_profile(options.sla_profile)  # a bad profile name fails before any load
    if options.stamps == "kernel":
        arrival.enable()  # kernel receive stamps from the first packet on
    workflows.select(options.use_cases)


def _send(client_id: str, data: dict[str, Any]) -> None:
    data["sla_samples"] = SAMPLES.drain()


def _receive(client_id: str, data: dict[str, Any]) -> None:
    if "sla_samples" in data:
        SAMPLES.merge(data["sla_samples"])


def _verdict(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    # Locust fires `quitting` before it stops the users: stop them first, so the verdict and
    # Locust's final stats count the same finished streams (the master waits for every worker's
    # final report; a local run kills its user greenlets and waits until they are gone)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.stop()
    elif environment.runner is not None:
        environment.runner.user_greenlets.kill(block=True)
    profile = sla.load_profile(options.sla_profile)
    values = {name: [v for _, v in pairs] for name, pairs in SAMPLES.values.items()}
    verdict = sla.evaluate(profile, values, SAMPLES.requests, SAMPLES.failures)
    out = Path(options.sla_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sla.json").write_text(json.dumps(verdict.to_json(), indent=2))
    (out / "samples.json").write_text(json.dumps({k: v for k, v in SAMPLES.values.items()}))
    report.plots(SAMPLES.values, out)
    print(verdict.report(), flush=True)
    environment.process_exit_code = 0 if verdict.passed else 1


events.init_command_line_parser.add_listener(_options)
events.init.add_listener(_init)
events.report_to_master.add_listener(_send)
events.worker_report.add_listener(_receive)
events.quitting.add_listener(_verdict)


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


class GatewayUser(FastHttpUser):
    """A Magento backend calling the gateway with streaming chat completions."""

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = getattr(options, "arrival_rate", 0.0) if options else 0.0
        if rate > 0:  # constant arrival rate: each of N users starts a request every N/rate seconds
            users = max(1, self.environment.runner.user_count if self.environment.runner else 1)
            return float(constant_throughput(rate / users)(self))
        return float(constant(0)(self))

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.api_key = _api_key(options)
        self.flows = workflows.select(getattr(options, "use_cases", "") if options else "")
        seed = getattr(options, "seed", 7) if options else 7
        self.rng = random.Random(f"{seed}-{id(self)}")  # noqa: S311 - synthetic test data, not security

    @task
    def workflow(self) -> None:
        flow = self.rng.choices(self.flows, weights=[w.weight for w in self.flows])[0]
        body = flow.request(self.rng)
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "text/event-stream"}
        started = time.time()  # the wall clock: the kernel stamps arrivals on it (loadtests/arrival.py)
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=headers,
            stream=True,
            catch_response=True,
            name=flow.use_case,
        ) as response:
            # counted once done: a stream cut off by the end of the run counts neither way
            if response.status_code != 200:
                SAMPLES.requests += 1
                SAMPLES.failures += 1
                response.failure(f"HTTP {response.status_code}")
                return
            kernel = getattr(self.environment.parsed_options, "stamps", "kernel") == "kernel"
            lines = arrival.read_lines(response.stream, kernel=kernel)
            # parse once no other stream has bytes waiting: the parsing and the metric events
            # below would otherwise run between another stream's arrival and its clock reading
            gevent.idle()
            try:
                metrics = measure(started, _decoded(lines), started_wall=started)
            except StreamFailure as exc:
                SAMPLES.requests += 1
                SAMPLES.failures += 1
                response.failure(str(exc))
                return
            response.success()
        SAMPLES.requests += 1
        SAMPLES.add(metrics.as_samples(), time.time())
        fire = self.environment.events.request.fire
        for name, values in metrics.as_samples().items():
            for value in values:
                fire(request_type="STREAM", name=name, response_time=value, response_length=0, exception=None,
                     context={})  # fmt: skip
