"""Gateway settings: one typed model per section, read from a YAML file and the environment.

Precedence (highest first): environment variables (``SOVEREIGN_GATEWAY__...``, nested with
``__``), the YAML file named by ``SOVEREIGN_GATEWAY_CONFIG``, then the defaults below.
Every field documents its default; ``docs/gateway-settings.md`` is the rendered list.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from gateway import validation
from gateway.errors import BadInput
from infra import residency

CONFIG_ENV = "SOVEREIGN_GATEWAY_CONFIG"

#: In-boundary destinations allowed by default: loopback and in-cluster service names.
DEFAULT_ALLOWLIST = ["127.0.0.0/8", "::1/128", "localhost", "*.svc", "*.svc.cluster.local"]


class UpstreamTLS(BaseModel):
    """mTLS to an upstream: the CA its certificate must chain to, and our client certificate."""

    ca_file: Path = Field(description="CA certificate (PEM) the upstream's server certificate must chain to.")
    cert_file: Path = Field(description="The gateway's client certificate (PEM).")
    key_file: Path = Field(description="The client certificate's private key (PEM).")

    def context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2+, the upstream verified against ca_file, our certificate presented."""
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if not path.is_file():
                raise ValueError(f"tls.{key}: {path} does not exist (mount the certificate Secret there)")
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


class Upstream(BaseModel):
    """One in-boundary inference endpoint (vLLM or llama.cpp, OpenAI-compatible)."""

    url: str = Field(description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8081/v1")
    model: str = Field(description="Model name the upstream expects in the `model` field.")
    weights_sha256: str | None = Field(
        default=None, description="SHA-256 of the served weights; recorded in every audit record."
    )
    tls: UpstreamTLS | None = Field(
        default=None, description="mTLS to this upstream (required for an https URL in the cluster)."
    )
    kind: Literal["chat", "embeddings"] = Field(
        default="chat",
        description="What the upstream serves: `chat` (POST /chat/completions) or `embeddings` "
        "(POST /embeddings: llama-cpp-python's server with --embedding, vLLM's pooling runner). "
        "A use case's `model` must name a chat upstream and its `embedding_model` an embeddings "
        "upstream (checked at start): /v1/chat/completions never goes to an embeddings upstream, "
        "nor /v1/embeddings to a chat one. The chat fields below do not apply to an embeddings upstream.",
    )
    dimensions: int | None = Field(
        default=None,
        gt=0,
        description="The length of the vectors an embeddings upstream answers (required for kind "
        "`embeddings`, refused for `chat`). Every answer is checked against it (502 "
        "upstream_malformed otherwise), and a request's `dimensions` must equal it: neither "
        "llama-cpp-python 0.3.36 (its CreateEmbeddingRequest has no such field) nor vLLM v0.11.0 "
        "for a model without Matryoshka representation shortens vectors.",
    )
    system_role: bool = Field(
        default=True,
        description="Whether the model's chat template has a system role. When false (Gemma), "
        "the use case's system prompt is folded into the first user turn, and a client's system "
        "or developer message goes as a user turn, instead of being silently dropped by the "
        "template (llama-cpp-python 0.3.36's format_gemma keeps user and assistant turns only).",
    )
    tool_role: bool = Field(
        default=True,
        description="Whether the model's chat template shows tool turns. When false (Gemma on "
        "llama-cpp-python, whose format_gemma drops `tool` turns and an assistant turn's "
        "`tool_calls`), a tool result goes as a user turn `Result of tool call <id>: <result>` "
        "and an earlier call as the assistant turn's text `Tool call <id>: <name> <arguments>` "
        "(both filtered, the name reviewed), so the model sees what it called and got.",
    )

    tool_choices: list[Literal["auto", "required", "named"]] = Field(
        default=["auto", "required", "named"],
        description="The `tool_choice` values this upstream honours (`none` always): `auto` (also a "
        "request with tools and no tool_choice) needs vLLM's tool call parser (the stack config's "
        "`platform.models[].tool_calling`; without it vLLM v0.11.0 answers 400), `required` and "
        '`named` ({"type": "function", ...}) vLLM serves with its structured outputs. '
        "llama-cpp-python 0.3.36 with a plain chat format (the local stack's `gemma`) honours "
        "`named` only: it constrains the answer to that tool's parameters "
        "(llama_chat_format.py, chat_formatter_to_chat_completion_handler) and answers text otherwise.",
    )
    json_schema_as_json_object: bool = Field(
        default=False,
        description='Send `response_format` json_schema as `{"type": "json_object", "schema": S}`: '
        "llama-cpp-python 0.3.36's server accepts response_format types `text` and `json_object` "
        "only (llama_types.py ChatCompletionRequestResponseFormat; json_schema is a 422 there) and "
        "constrains the answer to `schema` by grammar (llama_chat_format.py "
        "_grammar_for_response_format). vLLM takes json_schema as is: false.",
    )

    def honours_tool_choice(self, tool_choice: object) -> bool:
        """Whether this upstream does what *tool_choice* asks of a request with tools (None: the
        default, which is `auto` when tools are given: vLLM v0.11.0 protocol.py, OpenAI API)."""
        if tool_choice == "none":
            return True
        if tool_choice is None or isinstance(tool_choice, str):
            return (tool_choice or "auto") in self.tool_choices
        return "named" in self.tool_choices  # {"type": "function", "function": {"name": ...}}

    def response_format(self, reviewed: dict[str, Any]) -> dict[str, Any]:
        """The `response_format` to send this upstream for the reviewed one (json_schema rewritten
        for llama-cpp-python when json_schema_as_json_object)."""
        if self.json_schema_as_json_object and reviewed.get("type") == "json_schema":
            return {"type": "json_object", "schema": reviewed["json_schema"]["schema"]}
        return reviewed

    @model_validator(mode="after")
    def _dimensions_fit_kind(self) -> Upstream:
        if self.kind == "embeddings" and self.dimensions is None:
            raise ValueError(
                "dimensions: required for an upstream of kind embeddings (the length of its "
                "vectors, e.g. 384 for all-MiniLM-L6-v2)"
            )
        if self.kind == "chat" and self.dimensions is not None:
            raise ValueError("dimensions: only for an upstream of kind embeddings; remove it or set kind")
        return self

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"must be an http(s) URL with a host, got scheme {parts.scheme!r}; "
                "write it as http://HOST:PORT/v1"
            )
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class OpenBaoSettings(BaseModel):
    """Where the gateway's keys live (OpenBao, Vault API)."""

    address: str = Field(default="http://127.0.0.1:8200", description="OpenBao API address.")
    token_file: Path | None = Field(
        default=None, description="File holding the gateway's (non-root) token; read at start."
    )
    token: SecretStr | None = Field(
        default=None, description="The token itself; prefer token_file. Never logged."
    )
    kubernetes_role: str | None = Field(
        default=None,
        description="In a cluster: log in with Kubernetes auth as this role (replaces token/token_file).",
    )
    kubernetes_mount: str = Field(
        default="kubernetes", description="Mount path of the Kubernetes auth method."
    )
    kubernetes_token_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="The pod's projected service-account token, sent to OpenBao at login.",
    )
    ca_file: Path | None = Field(
        default=None, description="CA certificate that OpenBao's TLS certificate must chain to."
    )
    transit_mount: str = Field(default="transit", description="Mount path of the transit engine.")
    tenant_key: str = Field(
        default="tenant-data", description="Transit key (derived) that wraps per-tenant data keys."
    )
    audit_key: str = Field(
        default="audit-hmac", description="Transit key that wraps the audit trail's HMAC keys."
    )
    key_ttl_s: float = Field(
        default=300.0, gt=0, description="How long a plaintext data key stays cached in memory."
    )
    timeout_s: float = Field(
        default=2.0, gt=0,
        description="Timeout of one OpenBao call. Every request waiting for a key gets 503 within "
        "twice this (gateway/kms.py WAIT_FACTOR); after OpenBao failed to answer, keys not in "
        "memory fail at once for this long.",
    )  # fmt: skip
    wrapped_keys_dir: Path = Field(
        default=Path("keys"), description="Where wrapped (encrypted) tenant data keys are kept."
    )

    def resolved_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None and self.token_file.exists():
            return self.token_file.read_text(encoding="utf-8").strip()
        return None


# an object-storage host outside the built-in EU allowlist, reviewed in the stack config
# (residency.extra_hosts): the same model and the same EU/EEA check as there
ReviewedHost = residency.ReviewedEndpoint


class AuditArchiveSettings(BaseModel):
    """Where `sovereign audit ship` puts sealed segments: the stack's Object Lock bucket."""

    url: str = Field(description="s3://bucket/prefix/ of the archive (storage.audit_archive).")
    endpoint: str = Field(description="S3 endpoint URL (endpoints.object_storage).")
    region: str | None = Field(default=None, description="S3 region of the endpoint.")
    retention_days: int = Field(default=3650, ge=1, description="Object Lock retention per segment.")
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE", description="Object Lock mode."
    )
    chain: str | None = Field(
        default=None, description="Name of this trail in the archive; default: the host name (the pod's)."
    )
    reviewed_hosts: list[ReviewedHost] = Field(
        default_factory=list, description="The endpoint's allowlist entry when it is not built in."
    )

    @model_validator(mode="after")
    def _endpoint_in_boundary(self) -> AuditArchiveSettings:
        # the stack config's check of endpoints.object_storage (infra/residency.py), here too:
        # sealed audit segments leave the gateway for this endpoint
        problem = residency.endpoint_problem(self.endpoint, [h.entry() for h in self.reviewed_hosts])
        if problem:
            raise ValueError(f"endpoint: {problem}")
        return self


class AuditSettings(BaseModel):
    """The tamper-evident audit trail (hash-chained, HMAC-signed JSONL)."""

    path: Path = Field(default=Path("audit/audit.jsonl"), description="Audit trail file.")
    fsync: bool = Field(
        default=True,
        description="fdatasync after every record so an acknowledged request is on disk.",
    )
    segment_max_bytes: int = Field(
        default=64 << 20, ge=4096,
        description="Seal the active segment (for `sovereign audit ship`) once it holds this many bytes.",
    )  # fmt: skip
    segment_max_age_s: float = Field(
        default=3600, gt=0,
        description="... or once its first record is this old (checked every minute, also when idle).",
    )  # fmt: skip
    min_free_bytes: int = Field(
        default=8 << 20, ge=0,
        description="Refuse requests (503) before forwarding once the trail's disk has less free space.",
    )  # fmt: skip
    archive: AuditArchiveSettings | None = Field(
        default=None, description="The Object Lock archive sealed segments are shipped to, if any."
    )


class TenantLimit(BaseModel):
    """Admission limits of one tenant (all its API keys together), per gateway pod."""

    max_concurrent: int = Field(
        default=64, gt=0, description="Requests of the tenant in flight at once; more get 429."
    )
    rate_per_s: float = Field(
        default=100.0, gt=0, description="Sustained requests per second (a token bucket); more get 429."
    )
    burst: int = Field(default=200, gt=0, description="Requests the bucket lets through at once.")


class LimitSettings(BaseModel):
    """Bounds on what clients and the upstream may send, how long anything may take, and
    admission control. Every bound ends the request with a named error code and an audit
    record (docs/gateway-api.md lists the codes)."""

    max_body_bytes: int = Field(default=1_048_576, gt=0, description="Largest accepted body (413).")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Upstream connect timeout.")
    read_timeout_s: float = Field(
        default=120.0, gt=0,
        description="Idle deadline: longest wait for the upstream's next byte of a plain answer, "
        "or its next complete event of a stream (504 `upstream_timeout` past it).",
    )  # fmt: skip
    max_connections: int = Field(default=256, gt=0, description="Upstream connection pool size.")
    request_deadline_s: float = Field(
        default=120.0, gt=0,
        description="Total time a plain answer may take from the upstream, however it drips (504).",
    )  # fmt: skip
    stream_deadline_s: float = Field(
        default=600.0,
        gt=0,
        description="Total time a streamed answer may take (ends with `upstream_timeout`).",
    )
    max_answer_bytes: int = Field(
        default=8 << 20, gt=0,
        description="Largest upstream answer, plain or streamed in all (502 `upstream_too_large`).",
    )  # fmt: skip
    max_event_bytes: int = Field(
        default=256 << 10, gt=0,
        description="Longest server-sent-event line or event from the upstream (502 `upstream_too_large`).",
    )  # fmt: skip
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A client must send its complete request headers within this."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="... and its complete body within this after them (408)."
    )
    write_timeout_s: float = Field(
        default=30.0, gt=0,
        description="A client that takes no bytes of its answer for this long is cut off (audited).",
    )  # fmt: skip
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, description="An idle client connection is closed after this."
    )
    max_client_connections: int = Field(
        default=2048, gt=0,
        description="Open client connections per pod; a connection beyond it is answered 503 and "
        "closed. Must leave room below the process's open-file limit (checked at start).",
    )  # fmt: skip
    max_pending_connections: int = Field(
        default=256, gt=0,
        description="Client connections that have not yet sent complete headers (so no API key); "
        "a new one beyond it is closed at once.",
    )  # fmt: skip
    max_concurrent_requests: int = Field(
        default=512, gt=0, description="Chat requests in flight per pod; more get 503 with Retry-After."
    )
    max_concurrent_streams: int = Field(
        default=256, gt=0, description="Streamed chat requests in flight per pod; more get 503."
    )
    tenant_defaults: TenantLimit = Field(
        default_factory=TenantLimit, description="Admission limits of every tenant not named in `tenants`."
    )
    tenants: dict[str, TenantLimit] = Field(
        default_factory=dict, description="Admission limits per tenant name, replacing the defaults."
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After (seconds) sent with a 503 for a full pod."
    )
    shutdown_deadline_s: float = Field(
        default=20.0, gt=0,
        description="On SIGTERM: stop accepting, let requests in flight finish within this, then end "
        "the rest with an audited `shutting_down` error. Below the pod's grace period less its preStop.",
    )  # fmt: skip

    def tenant(self, name: str) -> TenantLimit:
        return self.tenants.get(name, self.tenant_defaults)


class IncidentSettings(BaseModel):
    """The kill switch (`sovereign incident suspend|resume`): use cases an operator suspended,
    read from OpenBao (KV v2 `kv/sovereign/incident`) with the gateway's token."""

    poll_s: float = Field(
        default=2.0, gt=0,
        description="How often the suspended use cases are read from OpenBao: a suspension takes "
        "effect within about this (plus openbao.timeout_s). A failed read keeps the last known state.",
    )  # fmt: skip
    kv_mount: str = Field(default="kv", description="Mount path of the KV v2 engine holding the state.")
    path: str = Field(default="sovereign/incident", description="The state's path in that engine.")


class MemorySettings(BaseModel):
    """The memory store (PostgreSQL + pgvector, docs/memory.md)."""

    dsn_file: Path | None = Field(
        default=None,
        description="File holding the store's libpq connection string (mode 0600; read at start, "
        "never logged). None: no store; erasure and export answer 503 store_unavailable.",
    )
    dimensions: int = Field(default=384, ge=1, le=16000, description="The stored embeddings' dimensions.")
    pool_max: int = Field(default=8, ge=1, le=200, description="Most connections to the store at once.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long the start waits for the store to answer."
    )
    erasure_work_mem_mb: int = Field(
        default=1024,
        ge=64,
        le=65536,
        description="maintenance_work_mem (MB) of an erasure's rewrite: its index rebuilds (the HNSW "
        "graph) run 3x faster when the graph fits (benchmarks/README.md, memory search); the database "
        "server must have the memory for it.",
    )
    max_file_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest file POST /v1/files takes (UTF-8 text; the whole is filtered and "
        "tokenised in memory at once).",
    )
    purge_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often the gateway deletes the store's expired rows (retention; searches "
        "never return them even before).",
    )

    def dsn(self) -> str | None:
        if self.dsn_file is None:
            return None
        return self.dsn_file.read_text(encoding="utf-8").strip()


class GatewaySettings(BaseSettings):
    """All gateway settings. See docs/gateway-settings.md."""

    model_config = SettingsConfigDict(
        env_prefix="SOVEREIGN_GATEWAY__", env_nested_delimiter="__", extra="forbid"
    )

    upstreams: dict[str, Upstream] = Field(
        default_factory=dict,
        description="Public model alias -> in-boundary upstream. Empty means no model is served.",
    )
    egress_allowlist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWLIST),
        description="Hosts, CIDRs or *.suffix patterns the process may connect to. "
        "Upstreams and OpenBao must match it; every other outbound connection is refused.",
    )
    enforce_egress: bool = Field(
        default=True, description="Install the socket audit hook that refuses other connections."
    )
    openbao: OpenBaoSettings = Field(default_factory=OpenBaoSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    incident: IncidentSettings = Field(default_factory=IncidentSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    keys_file: Path = Field(
        default=Path("gateway-keys.json"),
        description="Hashed client API keys (see `sovereign gateway keys`).",
    )
    phi_names: bool = Field(
        default=True,
        description="Recognise person names the context does not name (a spouse, a doctor: "
        "gateway/phi/names.py). Its lexicon is built by `make install` (in the image: "
        "SOVEREIGN_NAMES_DATA); without it the gateway refuses to start rather than let names through.",
    )
    phi_plugins: list[str] = Field(
        default_factory=list,
        description="Extra PHI recognizers (e.g. an NER model) as 'package.module:Class'; each "
        "must offer analyze(text) -> spans. Loaded at start; a failure stops the start.",
    )
    policies_dir: Path | None = Field(
        default=None, description="Directory of use-case policy YAML files; None = the shipped ones."
    )
    ingress_cert_file: Path | None = Field(
        default=None,
        description="The front door's TLS certificate (PEM, the ingress Secret's tls.crt without its "
        "key), read at every scrape: its expiry is exported as "
        '`sovereign_gateway_certificate_expiry_timestamp_seconds{certificate="ingress"}`. '
        "None: not watched.",
    )

    @field_validator("egress_allowlist")
    @classmethod
    def _allowlist_entries_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"entry {entry!r} is not a valid CIDR: {exc}") from None
            elif not entry or " " in entry:
                raise ValueError(f"entry {entry!r} must be a host name, IP, CIDR or *.suffix")
        return value

    @model_validator(mode="after")
    def _destinations_in_boundary(self) -> GatewaySettings:
        for alias, upstream in self.upstreams.items():
            if not host_allowed(upstream.host, self.egress_allowlist):
                raise ValueError(
                    f"upstreams.{alias}.url: host {upstream.host!r} is outside the compliance "
                    f"boundary (not on egress_allowlist {self.egress_allowlist}). Patient data may "
                    "only go to in-boundary inference endpoints (GDPR Art. 44); point the upstream "
                    "at an in-boundary server, or add its host to egress_allowlist only if it is one."
                )
        bao_host = urlsplit(self.openbao.address).hostname or ""
        if not host_allowed(bao_host, self.egress_allowlist):
            raise ValueError(
                f"openbao.address: host {bao_host!r} is not on egress_allowlist; "
                "keys must stay inside the boundary: add the in-boundary OpenBao host to the list."
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """Whether *host* (a name or an IP literal) matches an allowlist entry."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in allowlist:
        entry = entry.lower()
        if "/" in entry:
            if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                return True
        elif entry.startswith("*."):
            if ip is None and host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def read_config_file(path: Path) -> dict[str, Any]:
    """A gateway settings file's YAML; BadInput when it is missing (pydantic-settings' YAML
    source would skip it, and the gateway start on its environment alone) or not YAML (PyYAML's
    own message quotes the offending line: a pasted key would reach stderr)."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file; pass the gateway's settings file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: {validation.not_yaml(exc)}") from None
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Load settings, optionally from an explicit YAML file, with keyword overrides on top."""
    if config_file is not None:
        data = read_config_file(config_file)
        data.update(overrides)
        return GatewaySettings(**data)
    return GatewaySettings(**overrides)
