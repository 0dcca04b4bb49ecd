"""Helpers for tests that run real processes (OpenBao, scripted upstream, gateway, `sovereign`)."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from infra.local import openbao
from infra.local.process import spawn, stop, wait_ready
from tests.doubles.scripted_upstream import Script

REPO = Path(__file__).resolve().parent.parent


def sovereign_argv(*args: str) -> list[str]:
    """The `sovereign` command line as this interpreter runs it: ``python -m infra.cli *args``."""
    return [sys.executable, "-m", "infra.cli", *args]


def sovereign(
    *args: str,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`sovereign *args` run to its end (sovereign_argv), its output captured as text."""
    return subprocess.run(
        sovereign_argv(*args),
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def double(name: str, *args: str) -> list[str]:
    """The argv of a test double in tests/doubles/ (run it with ``cwd=REPO``: it is not installed)."""
    return [sys.executable, "-m", f"tests.doubles.{name}", *args]


def passable_tmp(near: Path) -> Path:
    """A new folder that other OS users may pass through (mode 0711, under the system's temp
    folder, removed when the test process ends; *near* names it): PostgreSQL runs as the
    ``postgres`` user when the tests run as root (infra/local/postgres.py), and pytest's basetemp
    is root's only (0700)."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=f"sovereign-{near.name}-"))
    os.chmod(folder, 0o711)  # noqa: S103  (search only: nothing in it is readable by others)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(proc: subprocess.Popen[bytes], port: int, what: str, timeout_s: float = 30) -> None:
    """Until something accepts connections on loopback *port* (for servers without an HTTP
    readiness path reachable in the clear, e.g. mTLS); fails if *proc* exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start listening on port {port}") from None
            time.sleep(0.1)


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            from infra.local.process import start_ticks

            ticks = start_ticks(self.proc.pid)
            if ticks is not None:
                stop(self.proc.pid, ticks)
        self.proc.wait(timeout=20)


def start_process(
    name: str,
    argv: list[str],
    url: str,
    ready_path: str,
    log: Path,
    timeout_s: float = 60,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    proc, _ = spawn(name, argv, log, env={**os.environ, **(env or {})}, cwd=cwd)
    wait_ready(name, proc, lambda: httpx.get(url + ready_path, timeout=1).status_code == 200, timeout_s, log)
    return Proc(proc, url, log)


@dataclass
class Bao:
    proc: Proc
    address: str
    root: str
    gateway_token: str
    auditor_token: str


def start_bao(tmp: Path) -> Bao:
    from infra.local.stack import _bao_binary

    port = free_port()
    root = secrets.token_urlsafe(16)
    cfg = tmp / "openbao.hcl"
    cfg.write_text(openbao.server_config(tmp / "openbao-audit.log"))
    address = f"http://127.0.0.1:{port}"
    proc = start_process(
        "openbao",
        [
            _bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={root}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
            f"-config={cfg}",
        ],
        address,
        "/v1/sys/health",
        tmp / "openbao.log",
    )
    tokens = openbao.bootstrap(address, root)
    return Bao(proc, address, root, tokens.gateway, tokens.auditor)


class Upstream:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.url = proc.url

    def script(self, **fields: Any) -> None:
        httpx.post(f"{self.url}/_control", json=fields, timeout=5).raise_for_status()

    def reset(self) -> None:
        """Back to the scripted upstream's defaults (its ``Script``)."""
        self.script(**dataclasses.asdict(Script()))

    def captured(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.url}/_captured", timeout=5).json()
        return result


def start_upstream(tmp: Path, *extra: str) -> Upstream:
    port = free_port()
    proc = start_process(
        "upstream",
        double("scripted_upstream", "--port", str(port), *extra),
        f"http://127.0.0.1:{port}",
        "/v1/models",
        tmp / f"upstream-{port}.log",
        cwd=REPO,
    )
    return Upstream(proc)


class FaultUpstream:
    """tests/doubles/fault_upstream.py (a misbehaving upstream on raw sockets), by its URL."""

    def __init__(self, url: str, proc: Proc | None = None) -> None:
        self.url, self.proc = url, proc
        self.chat = f"{url}/v1/chat/completions"

    def script(self, **fields: Any) -> None:
        httpx.post(f"{self.url}/_control", json=fields, timeout=5).raise_for_status()

    def mode(self, mode: str, **params: Any) -> None:
        self.script(mode=mode, **params)

    def counts(self) -> dict[str, Any]:
        """Chat requests and connections it has seen (``/_requests``)."""
        result: dict[str, Any] = httpx.get(f"{self.url}/_requests", timeout=5).json()
        return result


def start_fault_upstream(tmp: Path) -> FaultUpstream:
    port = free_port()
    proc = start_process(
        "fault upstream",
        double("fault_upstream", "--port", str(port)),
        f"http://127.0.0.1:{port}",
        "/v1/models",
        tmp / f"fault-upstream-{port}.log",
        cwd=REPO,
    )
    return FaultUpstream(proc.url, proc)


def policies_without_retrieval(tmp: Path) -> Path:
    """The shipped policies (byte for byte) in *tmp*/policies, less ``retrieval`` in the ones
    that have it (catalog-search): for a gateway without a memory store, whose chats of such a
    use case are refused (503 store_unavailable; tests/memory/test_catalogue.py tests that)."""
    from gateway.policy import default_policies_dir

    out = tmp / "policies"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(default_policies_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "retrieval" in data:
            data.pop("retrieval")
            (out / path.name).write_text(yaml.safe_dump(data, allow_unicode=True))
        else:
            (out / path.name).write_bytes(path.read_bytes())
    return out


def gateway_config(tmp: Path, bao_address: str, token: str, upstream_url: str, **extra: Any) -> Path:
    """A gateway's settings file in *tmp*: OpenBao, the scripted upstream as model ``chat``, the
    audit trail and client keys in *tmp*; *extra* sections merged in. Without a ``memory``
    section (no store) the policies are the shipped ones less retrieval
    (:func:`policies_without_retrieval`), unless *extra* names ``policies_dir``."""
    if "memory" not in extra and "policies_dir" not in extra:
        extra["policies_dir"] = str(policies_without_retrieval(tmp))
    token_file = tmp / "gateway.token"
    token_file.write_text(token)
    config: dict[str, Any] = {
        "upstreams": {
            "chat": {"url": f"{upstream_url}/v1", "model": "scripted", "weights_sha256": "ab" * 32}
        },
        "openbao": {
            "address": bao_address,
            "token_file": str(token_file),
            "wrapped_keys_dir": str(tmp / "wrapped"),
        },
        "audit": {"path": str(tmp / "audit" / "audit.jsonl"), "fsync": False},
        "keys_file": str(tmp / "keys.json"),
        # tests and benchmarks drive one tenant at full speed: admission control is tested on its
        # own (tests/gateway/test_abuse.py); a test that passes limits keeps this unless it names it
        "limits": {"tenant_defaults": {"max_concurrent": 4096, "rate_per_s": 1e6, "burst": 1_000_000}},
    }
    for section, values in extra.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: a sample of a /metrics page: (sample name, its labels sorted) -> value
MetricSamples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(url: str) -> MetricSamples:
    """The /metrics page under *url* (a gateway's base URL) as samples (prometheus_client's
    parser): ``("sovereign_gateway_stage_seconds_count", (("stage", "prepare"), ("stream",
    "false")))`` -> 3.0."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gateway_argv(config: Path, port: int, log_level: str = "warning") -> list[str]:
    """The gateway as a process: `python -m gateway` on *config* and *port*."""
    return [
        sys.executable,
        "-m",
        "gateway",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]


@contextmanager
def running_gateway(config: Path, tmp: Path, log_level: str = "warning") -> Iterator[Proc]:
    port = free_port()
    proc = start_process(
        "gateway",
        gateway_argv(config, port, log_level),
        f"http://127.0.0.1:{port}",
        "/healthz",
        tmp / f"gateway-{port}.log",
    )
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class S3Server:
    """moto's S3 server as a process on loopback, with IAM authentication switched on: only the
    access key it created for the tests (``env``) is accepted."""

    proc: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_s3() -> S3Server:
    import json

    import boto3

    port = free_port()
    # moto checks credentials after the first three requests: the three that create the key
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_port(proc, port, "the moto S3 server")
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )  # fmt: skip
    iam.create_user(UserName="ops")
    key = iam.create_access_key(UserName="ops")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="ops", PolicyName="all", PolicyDocument=json.dumps(policy))
    return S3Server(
        proc, url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    )
