"""The gateway: the only door between Magento and the models.

Order of work for a chat request: API key (tenant, from the headers: a client without one
costs no body read) -> admission (pod and tenant limits: 503/429 at once) -> size,
content-type and time limits on the body -> JSON -> schema (422 names the field) -> use case
(policy) -> kill switch (503 when an operator suspended the use case) -> tools, response
format, store and logprobs checked against the policy (422) -> keys from OpenBao (fail
closed, 503) -> PHI filter -> write-ahead audit record (on disk before the model sees a
byte) -> upstream from the allowlisted configuration, under a total and an idle deadline,
cancelled when the client goes -> answer, bounded in size and tokens -> the final signed
audit record. Neither prompt nor answer text is logged or audited;
only ids, counts, outcomes, timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admission import Admission, Refused, Ticket
from gateway.audit import AuditKey, AuditLog, AuditWriteError, AuditWriter
from gateway.clientkeys import ClientKey, ClientKeyStore
from gateway.incident import SUSPENDED_CODE, IncidentState
from gateway.kms import KeyProvider, KeyUnavailable
from gateway.phi.context import FIELD_CATEGORIES, PatientContext, set_fields
from gateway.phi.detect import CATEGORIES, Split
from gateway.phi.filter import Filtered, PHIFilter, recognizers
from gateway.phi.jsonrestore import restore_json
from gateway.phi.jsontexts import Gathered
from gateway.phi.tokenise import (
    TokenMap,
    TokenScanner,
    count_unrestored,
    request_key,
    restore,
)
from gateway.policy import PolicyError, UseCasePolicy, load_policies, same_schema
from gateway.relay import RESTORE_IN_THREAD_CHARS, RelayResponse, StreamRelay, TooLong, Watchdog
from gateway.schemas import (
    REQUEST_ID_HEADER,
    REQUEST_ID_REPLACED_HEADER,
    TENANT_HEADER,
    USE_CASE_HEADER,
    ChatRequest,
    EmbeddingRequest,
    ResponseFormatJsonSchema,
    describe_validation_error,
    openai_error,
)
from gateway.scrape_metrics import COLLECTOR
from gateway.settings import GatewaySettings, Upstream
from gateway.upstream import (
    UPSTREAM_ERRORS,
    StreamHandle,
    UpstreamClient,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamTooLarge,
)

if TYPE_CHECKING:
    from gateway.memory.api import Memory

log = logging.getLogger("sovereign.gateway")

T = TypeVar("T")
_Body = TypeVar("_Body", bound=BaseModel)

REQUESTS = Counter(
    "sovereign_gateway_requests_total",
    "Requests (chat completions and embeddings) by use case and HTTP status.",
    ["use_case", "status"],
)
LATENCY = Histogram(
    "sovereign_gateway_request_seconds",
    "End-to-end request latency at the gateway (chat completions and embeddings).",
    ["use_case", "stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
#: where a chat completion's time at the gateway goes, stage by stage (docs/platform.md,
#: "Where the gateway's time goes"): ``prepare`` (from the request's task to the upstream
#: call, less the write-ahead wait: authentication, admission, the client's body, the keys,
#: the PHI filter, the upstream body; a use case with retrieval adds the catalogue's query),
#: ``write_ahead`` (the admit record made durable by the audit writer), ``upstream`` (from
#: there to the upstream's response headers for a stream, to its whole answer otherwise;
#: failed and abandoned calls too), ``answer`` (a non-streamed answer that went out: restored,
#: its final record durable). A non-streamed answer's stages add up to its
#: sovereign_gateway_request_seconds; a stream's end at the upstream's headers.
STAGE_SECONDS = Histogram(
    "sovereign_gateway_stage_seconds",
    "Time of a chat completion at the gateway by stage: prepare, write_ahead, upstream, answer.",
    ["stage", "stream"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
AUDIT_FAILURES = Counter("sovereign_gateway_audit_failures_total", "Audit records that could not be written.")
IN_FLIGHT = Gauge("sovereign_gateway_in_flight", "Chat requests in flight in this pod.", ["kind"])
REFUSED = Counter(
    "sovereign_gateway_refused_total", "Requests refused by admission control, by error code.", ["code"]
)
#: every 503 answer by its error code: an operator's suspension (use_case_suspended) is not an
#: outage (key_unavailable, audit_unavailable, ...), and alerts tell them apart
#: (infra/k8s_platform/alerts.py GatewayUnavailableAnswers). Only these values, never another.
UNAVAILABLE_CODES = frozenset(
    {"key_unavailable", "model_unavailable", "gateway_busy", "shutting_down", "audit_unavailable"}
    | {SUSPENDED_CODE}
)
#: PHI values the filter tokenised or removed before a request was forwarded, by category (the
#: detector's fixed CATEGORIES; a plugin's other category counts as OTHER): the boundary's work,
#: for the service owner's dashboard (infra/k8s_platform/dashboards.py). Counts only, never values.
PHI_VALUES = Counter(
    "sovereign_gateway_phi_values_total",
    "PHI values tokenised or removed in forwarded requests, by use case, category and action.",
    ["use_case", "category", "action"],
)
UNAVAILABLE = Counter(
    "sovereign_gateway_unavailable_total",
    "Requests answered 503, by use case and error code (audit_unavailable included).",
    ["use_case", "code"],
)

#: the only X-Request-Id a client may choose: a UUID in its textual form (any version, stored in
#: lower case). Anything else is replaced by a new UUID, and the answer says so in
#: X-Request-Id-Replaced: a free-form id could carry patient data into the signed audit trail.
_REQUEST_ID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: product fields of free text: detected like any text before the context line shows them
_PRODUCT_TEXT_FIELDS = ("sku", "name", "category")


#: the children of REQUESTS, LATENCY and UNAVAILABLE by (metric, label values in the metric's
#: order): labels() takes a lock and builds a key each call (~2 us), the cached child ~0.1 us;
#: the metric keeps each child anyway
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    """*metric*'s child for *values* (its label names' order)."""
    child = _CHILDREN.get((metric, values))
    if child is None:
        child = _CHILDREN[(metric, values)] = metric.labels(*values)
    return child


def count_unavailable(ex: Exchange, code: str) -> None:
    """One 503 answer in sovereign_gateway_unavailable_total (a code outside the fixed set as `other`)."""
    _child(UNAVAILABLE, ex.use_case or "-", code if code in UNAVAILABLE_CODES else "other").inc()


def request_id_from(headers: Any) -> tuple[str, bool]:
    """(the request id to use, whether the client's was replaced)."""
    sent = headers.get(REQUEST_ID_HEADER)
    if sent is not None and _REQUEST_ID_RE.fullmatch(sent):
        return sent.lower(), False
    return str(uuid.uuid4()), sent is not None


def keyed_seed(data_key: bytes, seed: int) -> int:
    """The seed the upstream gets: an HMAC of the client's under the tenant's data key, so the
    same seed still samples the same way, and a number chosen to carry data (a birth date,
    an insurance number) never reaches the model server as it is."""
    mac = hmac.new(data_key, f"sovereign-llm seed:{seed}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:4], "big") >> 1  # 0 .. 2**31 - 1


class GatewayError(Exception):
    """An error answered to the client as an OpenAI-style JSON error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        retry_after_s: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.retry_after_s = retry_after_s
        # answered before the body was read: the connection is closed after the answer, so
        # an unread body is never left to a kept-alive connection
        self.close = close

    def response(self, request_id: str, replaced: bool = False) -> JSONResponse:
        type_ = "invalid_request_error" if self.status < 500 else "server_error"
        headers = id_headers(request_id, replaced)
        if self.retry_after_s is not None:
            headers["retry-after"] = str(self.retry_after_s)
        if self.close:
            headers["connection"] = "close"
        return JSONResponse(
            openai_error(self.message, type_, self.code, self.param), status_code=self.status, headers=headers
        )


#: the answer to a request refused because the audit trail cannot be written
AUDIT_UNAVAILABLE = "the audit trail cannot be written; the request was not served"


class RecordNotWritten(AuditWriteError):
    """A request's final record could not be written after its work was done: *answer* says
    what the client should know (an erasure was done, and may be retried: it is idempotent)."""

    def __init__(self, answer: str) -> None:
        super().__init__("the final audit record was not written")
        self.answer = answer


class ClientGone(Exception):
    """The client closed its connection while its request was with the upstream (or while
    its body was still on its way)."""


@dataclass(slots=True)
class Admitted:
    """A request past authentication and admission (Gateway.serve): its key, its place in the
    admission limits (given back when the request ends, unless the work marks it *taken*: a
    stream gives its place back itself when it ends) and its body."""

    key: ClientKey
    ticket: Ticket
    raw: bytes = b""
    taken: bool = False


ExchangeT = TypeVar("ExchangeT", bound="Exchange")

#: how an endpoint reads its body (Gateway.read_body, a multipart reader), or None: it has none
BodyReader = Callable[[Request], Awaitable[bytes]] | None


#: the end of a request under the drain deadline at shutdown (audited as such)
SHUTTING_DOWN = ("shutting_down", "the gateway is shutting down; retry on another instance")
#: refusals whose record is not worth a key fetch: OpenBao just failed, or the pod is going
_NO_KEY_FETCH = frozenset({"key_unavailable", SHUTTING_DOWN[0]})
#: seconds a failed audit-key fetch for a refusal's record is not tried again (Gateway._audit_key_for_refusal)
AUDIT_KEY_RETRY_S = 5.0


def id_headers(request_id: str, replaced: bool) -> dict[str, str]:
    headers = {REQUEST_ID_HEADER: request_id}
    if replaced:
        headers[REQUEST_ID_REPLACED_HEADER] = "true"
    return headers


@dataclass
class Exchange:
    """What the audit record says about one request (never any text of it)."""

    request_id: str
    request_id_replaced: bool = False
    started: float = field(default_factory=time.perf_counter)
    # the audit key current when the request was admitted: its record is signed with it even
    # when the key's time in memory ends while the answer is still on its way
    audit_key: AuditKey | None = field(default=None, repr=False)
    tenant: str | None = None
    key_id: str | None = None
    use_case: str | None = None
    policy: UseCasePolicy | None = None
    alias: str | None = None
    upstream: Upstream | None = None
    stream: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    finish_reason: str | None = None
    dropped_fields: list[str] = field(default_factory=list)
    phi: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    restored: int = 0
    unrestored: int = 0
    error: str | None = None  # the error code the client got, if any
    counted: bool = False  # in sovereign_gateway_requests_total already
    final_record: bool = False  # its final record is handed to the audit writer (never a second)
    stalled: bool = False  # the client stopped taking the streamed answer (write timeout)
    drained: bool = False  # the shutdown's drain deadline ended the stream
    ended: bool = False  # a stream's end is handled (its final record is on its way)
    # how the relay ended the stream (None: it never ran, or was cut at a write): its final
    # record is written once the end of the body has gone out (gateway/relay.py StreamRelay.end)
    outcome: tuple[str, int] | None = None
    admit_seq: int | None = None  # the seq of its write-ahead record, once that is durable
    write_ahead_s: float = 0.0  # the wait for its write-ahead record to be durable
    ready: float | None = None  # when it was ready for the upstream (its stages: STAGE_SECONDS)
    finished: float | None = None  # when it was observed in sovereign_gateway_request_seconds
    # the write-ahead record's job in the audit writer thread, and the seq it was given there
    # (durable only with its batch): read by that thread only (admit_in_trail)
    admit_job: Future[int] | None = field(default=None, repr=False)
    admit_batched: int | None = None
    max_tokens: int | None = None  # what the upstream was asked for: the answer may not exceed it
    json_answer: bool = False  # response_format asked for JSON: tokens restored JSON-escaped
    body_read: bool = False  # the body was read whole (a refusal after it may fetch the audit key)
    retrieved: int | None = None  # catalogue items shown to the model (retrieval use cases only)

    @property
    def headers(self) -> dict[str, str]:
        return id_headers(self.request_id, self.request_id_replaced)

    def admission(self) -> dict[str, Any]:
        """The write-ahead record: who sent what to which model, before the model sees it."""
        return {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "use_case": self.use_case,
            "policy_version": self.policy.policy_version if self.policy else None,
            "model": self.alias,
            "upstream_model": self.upstream.model if self.upstream else None,
            "weights_sha256": self.upstream.weights_sha256 if self.upstream else None,
            "stream": self.stream,
            "bytes": {"request": self.request_bytes},
        }

    def admit_in_trail(self) -> int | None:
        """In the audit writer thread, for the final record: the seq of this request's admit if
        that is in the trail, or in the batch the final record joins (the two then written
        together or not at all); None without one, or when its batch could not be written (the
        seq then goes to another request's record)."""
        job = self.admit_job
        if job is None or job.cancelled():
            return None
        if not job.done():  # jobs run in order: the admit ran, in the batch still open
            return self.admit_batched
        return None if job.exception() is not None else job.result()

    def record(self, outcome: str, status: int) -> dict[str, Any]:
        if self.retrieved is not None:
            return {**self._record(outcome, status), "retrieved": self.retrieved}
        return self._record(outcome, status)

    def _record(self, outcome: str, status: int) -> dict[str, Any]:
        return {
            **self.admission(),
            "admit_seq": self.admit_seq,  # the admit this completes (None: refused before one)
            "outcome": outcome,
            "status": status,
            "error": self.error,
            "finish_reason": self.finish_reason,
            "latency_ms": {
                "total": round((time.perf_counter() - self.started) * 1000, 3),
                "upstream": self.upstream_ms,
                "ttft": self.ttft_ms,
            },
            "bytes": {"request": self.request_bytes, "response": self.response_bytes},
            "dropped_fields": self.dropped_fields,
            "phi": {**self.phi, "restored": self.restored, "unrestored": self.unrestored}
            if self.phi
            else None,
        }


#: PHI_VALUES' children by (use case, category, action): labels() costs ~4 us a call (a lock, a
#: dict of label values), a dozen per filtered request; the metric keeps each child anyway
_PHI_CHILDREN: dict[tuple[str, str, str], Any] = {}


def count_phi(use_case: str, tokens: TokenMap) -> None:
    for action, counts in (("tokenised", tokens.tokenised), ("removed", tokens.removed)):
        for category, n in counts.items():
            label = category if category in CATEGORIES else "OTHER"
            child = _PHI_CHILDREN.get((use_case, label, action))
            if child is None:
                child = PHI_VALUES.labels(use_case=use_case, category=label, action=action)
                _PHI_CHILDREN[(use_case, label, action)] = child
            child.inc(n)


def check_upstream_kinds(policy: UseCasePolicy, upstreams: Mapping[str, Upstream]) -> None:
    """PolicyError when the use case's ``model`` names an embeddings upstream or its
    ``embedding_model`` a chat one (chat never goes to an embeddings server, nor embeddings to
    a chat one); a warning when its embedding_model names no upstream (its requests get 503)."""
    chat = upstreams.get(policy.model)
    if chat is not None and chat.kind != "chat":
        raise PolicyError(
            f"use case {policy.name}: model {policy.model} is an upstream of kind {chat.kind}; "
            "name a chat upstream (upstreams.<alias>.kind: chat)"
        )
    if policy.embedding_model is None:
        return
    embed = upstreams.get(policy.embedding_model)
    if embed is None:
        log.warning(
            "use case %s names embedding_model %s, which no upstream serves",
            policy.name, policy.embedding_model,
        )  # fmt: skip
    elif embed.kind != "embeddings":
        raise PolicyError(
            f"use case {policy.name}: embedding_model {policy.embedding_model} is an upstream of kind "
            f"{embed.kind}; name an upstream of kind embeddings"
        )


def parse_body(raw: bytes, model: type[_Body]) -> _Body:
    """A request body that must be one JSON object of *model*: 400 invalid_json when it is not,
    422 invalid_field naming where it does not fit (describe_validation_error: never a value).
    Chat, embeddings, the catalogue and the rights endpoints read their bodies with it."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise GatewayError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        param, message = describe_validation_error(exc)
        raise GatewayError(422, "invalid_field", message, param) from None


class Gateway:
    """Holds the gateway's state; one per process."""

    def __init__(self, settings: GatewaySettings, keys: KeyProvider | None = None) -> None:
        self.settings = settings
        self._audit_key_failed_at = float("-inf")  # the last failed fetch for a refusal's record
        self.policies = load_policies(settings.policies_dir)
        for policy in self.policies.values():
            check_upstream_kinds(policy, settings.upstreams)
            if policy.model not in settings.upstreams:
                log.warning("use case %s names model %s, which no upstream serves", policy.name, policy.model)
            elif policy.tools and "auto" not in settings.upstreams[policy.model].tool_choices:
                log.warning(
                    "use case %s offers tools, and its model %s honours tool_choice %s only: a request "
                    "with tools and no tool_choice (auto, the OpenAI SDK's default) is refused; for vLLM "
                    "set the model's tool_calling in the stack config",
                    policy.name, policy.model, ", ".join(settings.upstreams[policy.model].tool_choices),
                )  # fmt: skip
        self.client_keys = ClientKeyStore(settings.keys_file)
        self.keys = keys or KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir)
        self.audit = AuditLog(
            settings.audit.path, self.keys, fsync=settings.audit.fsync,
            segment_max_bytes=settings.audit.segment_max_bytes,
            segment_max_age_s=settings.audit.segment_max_age_s,
            min_free_bytes=settings.audit.min_free_bytes,
        )  # fmt: skip
        self.audit_healthy = True
        # every append to the trail runs in this one thread, in the order the event loop hands
        # them over (the chain's order is the loop's), records waiting together sharing one
        # fdatasync; no fdatasync holds the loop (the other streams, and the end of a stream's
        # body, never wait for a record). Also without fdatasync (audit.fsync: false, as in the
        # tests), so that what is tested is what runs; after close_audit a record handed over
        # is written at once, on the loop (a stream cancelled at shutdown may unwind after it)
        self._audit_writer = AuditWriter(self.audit)
        # the kill switch: use cases an operator suspended (read from OpenBao, gateway/incident.py)
        self.incident = IncidentState(settings.incident, self.keys._client, settings.openbao.timeout_s)
        self.http = UpstreamClient(settings.limits)
        # audit disk, audit shipping and certificate expiry, read at every scrape
        COLLECTOR.bind(settings, self.http.peers)
        # mTLS contexts, built once at start (a missing certificate stops the start, naming the file)
        self.tls = {u.url: u.tls.context() for u in settings.upstreams.values() if u.tls is not None}
        self.phi = PHIFilter(recognizers(settings.phi_names, settings.phi_plugins))
        # the memory store (gateway/memory/api.py Memory), set by create_app: catalogue retrieval
        self.memory: Memory | None = None
        self.admission = Admission(settings.limits)
        admission = self.admission
        IN_FLIGHT.labels(kind="requests").set_function(lambda: admission.requests)
        IN_FLIGHT.labels(kind="streams").set_function(lambda: admission.streams)
        # shutdown: set by begin_drain; every wait on the upstream ends by drain_at at the latest
        self.draining = False
        self.drain_at = float("inf")
        self._waits: set[asyncio.Timeout] = set()
        # the streams' watchdogs (gateway/relay.py): one timer per stream for all its waits
        self.watchdogs: weakref.WeakSet[Watchdog] = weakref.WeakSet()

    # -- deadlines --------------------------------------------------------------------------
    def begin_drain(self, deadline_s: float) -> None:
        """SIGTERM: refuse new requests (503 `shutting_down`), and end every request still
        waiting on the upstream *deadline_s* from now with an audited `shutting_down` error
        (gateway/server.py calls this; the pod's grace period is longer)."""
        self.draining = True
        self.drain_at = asyncio.get_running_loop().time() + deadline_s
        for wait in list(self._waits):
            when = wait.when()
            if when is None or when > self.drain_at:
                wait.reschedule(self.drain_at)
        for dog in list(self.watchdogs):
            dog.drain(self.drain_at)

    async def bounded(self, aw: Awaitable[Any], deadline: float) -> Any:
        """Await *aw* until the loop time *deadline* (or the drain deadline, if sooner);
        TimeoutError past it."""
        when = min(deadline, self.drain_at)
        async with asyncio.timeout_at(None if when == float("inf") else when) as wait:
            self._waits.add(wait)
            try:
                return await aw
            finally:
                self._waits.discard(wait)

    def timed_out(self) -> GatewayError:
        """The error for a deadline that passed: the drain's, or the request's own."""
        if self.draining and asyncio.get_running_loop().time() >= self.drain_at:
            return GatewayError(503, *SHUTTING_DOWN)
        UPSTREAM_ERRORS.labels(kind="timeout").inc()
        return GatewayError(504, "upstream_timeout", "the model upstream did not answer in time")

    # -- audit ----------------------------------------------------------------------------
    async def in_audit_thread(self, fn: Callable[..., T], /, *args: Any, batched: bool = True) -> T:
        """``fn(*args)`` in the audit writer thread, after every audit call handed over before;
        *batched*: fn only appends records, and returns once they are durable (group commit).
        Shielded: a caller cancelled while it waits (uvicorn's shutdown backstop) does not take
        back its record; the record is still written (close_audit waits for it)."""
        return await self._settled(self._audit_writer.submit(fn, *args, batched=batched))

    @staticmethod
    async def _settled(job: Future[T]) -> T:
        """The result of a job handed to the audit writer (shielded, as in_audit_thread)."""
        result: T = await asyncio.shield(asyncio.wrap_future(job))
        return result

    def close_audit(self) -> None:
        """Write every record handed over, then close the trail (at shutdown); a record handed
        over later (a stream cancelled at shutdown, still unwinding) is written at once."""
        self._audit_writer.close()
        self.audit.close()

    async def seal_audit_segments(self) -> None:
        """Seal the active audit segment when it is due, also without traffic, so that records
        reach the archive within about segment_max_age_s (run by the audit writer thread, which
        appends every record too, so the two never interleave)."""
        interval = min(60.0, self.settings.audit.segment_max_age_s)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.in_audit_thread(self.audit.seal_if_due, batched=False)
            except AuditWriteError as exc:
                AUDIT_FAILURES.inc()
                self.audit_healthy = False
                log.error("audit segment not sealed: %s", exc)

    async def watch_incidents(self) -> None:
        """The kill switch: read the suspended use cases every incident.poll_s (the first read
        is the lifespan's), and put each change into the audit trail."""
        while True:
            await self.write_incident_records()
            await asyncio.sleep(self.settings.incident.poll_s)
            await self.incident.refresh()

    async def write_incident_records(self) -> None:
        """One `incident` record per suspension or resumption seen; those that cannot be
        written now (no audit key, the trail not writable) are tried again at the next poll."""
        pending = self.incident.pending
        while pending:
            try:
                await self.keys.refresh_audit_key()
                await self.in_audit_thread(self._incident_record, pending[0])
                self.audit_problem()
            except (AuditWriteError, KeyUnavailable) as exc:
                AUDIT_FAILURES.inc()
                log.error("incident record (%s %s) not written yet: %s",
                          pending[0]["action"], pending[0]["use_case"], exc)  # fmt: skip
                return
            pending.pop(0)

    def _incident_record(self, fields: dict[str, Any]) -> None:
        """In the audit writer thread."""
        self.audit.event("incident", fields)

    def _admit_record(self, ex: Exchange) -> int:
        """In the audit writer thread: the write-ahead record's seq (durable once the batch is;
        ex.admit_seq is set from it on the loop then)."""
        seq: int = self.audit.admit(ex.admission(), key=ex.audit_key)["seq"]
        ex.admit_batched = seq
        return seq

    async def refuse_suspended(self, ex: Exchange, policy: UseCasePolicy) -> None:
        """503 `use_case_suspended` when an operator suspended the use case (or all of them):
        before keys, the PHI filter and the upstream, so nothing is forwarded."""
        if self.incident.suspension(policy.name) is None:
            return
        # the refusal is audited like others; its record needs the audit key in memory
        with contextlib.suppress(KeyUnavailable, TimeoutError):
            await self.bounded(self.keys.refresh_audit_key(), float("inf"))
            ex.audit_key = self.keys.current()
        raise GatewayError(
            503,
            SUSPENDED_CODE,
            f"use case {policy.name} is suspended by the operator; nothing was forwarded. Show the "
            "shop's own fallback (e.g. 'please call the practice') instead of an AI answer",
        )

    async def serve(
        self,
        request: Request,
        ex: ExchangeT,
        what: str,
        work: Callable[[Request, ExchangeT, Admitted], Awaitable[Response]],
        *,
        read: BodyReader | Literal["json"] = "json",
        unexpected: GatewayError | None = None,
    ) -> Response:
        """One request's order of work and its ending, the same for every endpoint:
        authenticate (before the body: no key, no memory spent on it), admit, read the body
        (*read*: "json" is read_body, None reads none), then *work*; every way it ends gets its
        final audit record and its answer here:

        - GatewayError: its own status and code (a refusal under 500 is recorded `rejected`);
        - AuditWriteError: 503 audit_unavailable, the trail marked unwritable;
        - ClientGone (the client left during the body or the upstream call): 499, nobody reads it;
        - cancellation (uvicorn's shutdown backstop): recorded, then raised on;
        - anything else is a defect: its type logged (an exception's text may quote a request's
          or a database's values, never logged), answered *unexpected* (default 500
          internal_error; the memory endpoints answer 503 store_unavailable).

        *what* names the request in the log ("chat request", "file_upload")."""
        request_id, replaced = ex.request_id, ex.request_id_replaced
        admitted: Admitted | None = None
        try:
            key = self.authenticate(request)
            ex.tenant, ex.key_id = key.tenant, key.key_id
            admitted = Admitted(key, self.admit(ex))
            reader = self.read_body if read == "json" else read
            if reader is not None:
                admitted.raw = await reader(request)
                ex.request_bytes = len(admitted.raw)
            # past its body (a GET or DELETE has none): a refusal from here on is recorded with
            # the audit key, fetched for it if none is in memory (write_audit)
            ex.body_read = True
            return await work(request, ex, admitted)
        except GatewayError as err:
            ex.error = err.code
            await self._final(ex, err.code if err.status >= 500 else "rejected", err.status)
            return err.response(request_id, replaced)
        except AuditWriteError as exc:
            log.error("%s %s refused, audit trail not writable: %s", what, request_id, exc)
            if not ex.final_record:  # a final record that failed is counted by _after_record
                AUDIT_FAILURES.inc()
            self.audit_healthy = False
            if not ex.counted:  # refused before its record: counted here (never twice)
                REQUESTS.labels(use_case=ex.use_case or "-", status="503").inc()
            count_unavailable(ex, "audit_unavailable")
            message = exc.answer if isinstance(exc, RecordNotWritten) else AUDIT_UNAVAILABLE
            return GatewayError(503, "audit_unavailable", message).response(request_id, replaced)
        except ClientGone:
            ex.error = "client_disconnected"
            await self._final(ex, "client_disconnected", 499)
            return Response(status_code=499)  # nobody reads it: the connection is gone
        except asyncio.CancelledError:
            # uvicorn's shutdown backstop (or the loop ending): the record first, then go
            ex.error = "shutting_down" if self.draining else "cancelled"
            await self._final(ex, ex.error, 503 if self.draining else 499)
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and self.draining:  # a wait cut by the drain deadline
                failure = GatewayError(503, *SHUTTING_DOWN)
            else:
                # a defect, not a client's or an upstream's doing: still a final record (an
                # admitted request would otherwise look lost in a crash); the type only, never its text
                log.error("unhandled %s in %s %s", type(exc).__name__, what, request_id)
                failure = unexpected or GatewayError(500, "internal_error", "internal error")
            ex.error = failure.code
            await self._final(ex, failure.code, failure.status)
            return failure.response(request_id, replaced)
        finally:
            if admitted is not None and not admitted.taken:
                self.admission.release(admitted.ticket)

    def recheck_audit(self) -> None:
        """Before a request's keys step: a trail marked unwritable is checked again, and the
        request refused (AuditWriteError) while it still is."""
        if not self.audit_healthy:
            self.audit.check_writable()
            self.audit_healthy = True

    async def write_ahead(self, ex: Exchange) -> None:
        """The request's write-ahead admit record, durable before anything of it leaves the
        gateway (a crash from here on leaves it open; `sovereign audit verify` names it)."""
        began = time.perf_counter()
        ex.admit_job = self._audit_writer.submit(self._admit_record, ex)
        ex.admit_seq = await self._settled(ex.admit_job)
        ex.write_ahead_s += time.perf_counter() - began
        self.audit_problem()

    async def _final(self, ex: Exchange, outcome: str, status: int) -> None:
        """The final record of a request that ends in a failure, unless it has one already
        (a failure after its record was handed over: cancelled while it was written, or a
        defect in building the answer), so one request never has two."""
        if not ex.final_record:
            await self.write_audit(ex, outcome, status)

    async def write_audit(
        self, ex: Exchange, outcome: str, status: int, *, answer_waits: bool = False
    ) -> dict[str, Any] | None:
        """The request's final record, and the request counted under the status it is answered
        with. *answer_waits*: the answer goes out only once its record is written; if it cannot be,
        the caller answers 503 audit_unavailable and counts that instead (never both). The
        record is appended by the audit writer thread; the record's latency is taken now, the
        request's in sovereign_gateway_request_seconds once the answer can go (with
        *answer_waits*, after its record)."""
        if not answer_waits:
            self._observe_latency(ex)
            return await self._write_audit(ex, outcome, status, answer_waits)
        try:
            return await self._write_audit(ex, outcome, status, answer_waits)
        finally:
            self._observe_latency(ex)

    @staticmethod
    def _observe_latency(ex: Exchange) -> None:
        ex.finished = time.perf_counter()
        if ex.use_case:
            _child(LATENCY, ex.use_case, "true" if ex.stream else "false").observe(ex.finished - ex.started)

    async def _write_audit(
        self, ex: Exchange, outcome: str, status: int, answer_waits: bool
    ) -> dict[str, Any] | None:
        if ex.tenant is None:  # unauthenticated: metrics and access log only, no record to wait for
            return self._after_record(ex, None, None, outcome, status, answer_waits)
        if ex.audit_key is None and ex.body_read and ex.error not in _NO_KEY_FETCH:
            await self._audit_key_for_refusal(ex)
        ex.final_record = True
        future = asyncio.wrap_future(
            self._audit_writer.submit(self._append_final, ex, ex.record(outcome, status))
        )
        try:
            record = await asyncio.shield(future)
        except (AuditWriteError, KeyUnavailable) as exc:
            return self._after_record(ex, None, exc, outcome, status, answer_waits)
        except asyncio.CancelledError:
            # cancelled while its record is on its way (uvicorn's shutdown backstop): the record
            # is still written, and the request counted when it is
            def counted(done: asyncio.Future[dict[str, Any]]) -> None:
                failure = None if done.cancelled() else done.exception()
                record = None if done.cancelled() or failure is not None else done.result()
                self._after_record(ex, record, failure, outcome, status, answer_waits)

            future.add_done_callback(counted)
            raise
        return self._after_record(ex, record, None, outcome, status, answer_waits)

    async def _audit_key_for_refusal(self, ex: Exchange) -> None:
        """A request refused after its body was read but before the keys were fetched (a bad
        body, use case or tool): its record is signed with the audit key all the same, fetched
        now if none is in memory (once per key lifetime; concurrent refusals share the fetch).
        A fetch that failed is not tried again for a refusal within AUDIT_KEY_RETRY_S, so a
        flood of refusals never drives OpenBao, and admission's refusals (429, 503 busy, 408,
        413, 415: before the body) never wait for it. Without the key the record is not
        written, and the refusal is logged and counted (_after_record)."""
        now = time.monotonic()
        if now - self._audit_key_failed_at < AUDIT_KEY_RETRY_S:
            return
        try:
            await self.bounded(self.keys.refresh_audit_key(), float("inf"))
            ex.audit_key = self.keys.current()
        except (KeyUnavailable, TimeoutError):
            self._audit_key_failed_at = time.monotonic()

    def _append_final(self, ex: Exchange, fields: dict[str, Any]) -> dict[str, Any]:
        """In the audit writer thread: the final record, naming the admit it completes (written
        before it by the same thread, also when the wait for it was cut short; not one whose
        batch failed, whose seq another record may have now)."""
        fields["admit_seq"] = ex.admit_in_trail()
        return self.audit.append(fields, key=ex.audit_key)

    def _after_record(
        self,
        ex: Exchange,
        record: dict[str, Any] | None,
        failure: BaseException | None,
        outcome: str,
        status: int,
        answer_waits: bool,
    ) -> dict[str, Any] | None:
        """write_audit once the record is durable (*record*), failed (*failure*), or was not
        needed (neither: an unauthenticated request)."""
        if failure is None or not answer_waits:
            _child(REQUESTS, ex.use_case or "-", str(status)).inc()
            ex.counted = True
            if status == 503:
                count_unavailable(ex, ex.error or outcome)
        if failure is not None:
            AUDIT_FAILURES.inc()
            self.audit_healthy = False
            log.error("audit record for request %s not written: %s", ex.request_id, failure)
            return None
        if record is None:
            return None
        self.audit_problem()
        # below the disk reserve: the next requests are refused before they are forwarded
        space_ok = self.audit.space_ok()
        if self.audit_healthy and not space_ok:  # said once, when it happens, not per request
            log.error("audit trail disk below its reserve (audit.min_free_bytes): refusing requests")
        self.audit_healthy = space_ok
        return record

    def audit_problem(self) -> None:
        """A failure after a record was already on disk (its head, a seal): counted and logged;
        the next request checks that the trail is writable before it is forwarded."""
        problem = self.audit.take_problem()
        if problem is not None:
            AUDIT_FAILURES.inc()
            self.audit_healthy = False
            log.error("audit trail: %s", problem)

    # -- request handling ------------------------------------------------------------------
    def authenticate(self, request: Request) -> ClientKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GatewayError(
                401,
                "missing_api_key",
                "send the client API key as 'Authorization: Bearer sk-sov-...'",
                close=True,
            )
        key = self.client_keys.authenticate(token.strip())
        if key is None:
            raise GatewayError(401, "invalid_api_key", "the API key is unknown or revoked", close=True)
        claimed = request.headers.get(TENANT_HEADER)
        if claimed is not None and claimed != key.tenant:
            raise GatewayError(
                403,
                "tenant_mismatch",
                f"header {TENANT_HEADER} does not match the API key's tenant",
                close=True,
            )
        return key

    def resolve_policy(self, request: Request, body: ChatRequest | EmbeddingRequest) -> UseCasePolicy:
        return self.named_policy(
            request.headers.get(USE_CASE_HEADER), body.sovereign.use_case if body.sovereign else None
        )

    def named_policy(self, header: str | None, field_value: str | None) -> UseCasePolicy:
        """The use case a request names in its header or its body's sovereign.use_case (both:
        they must agree); 400 unknown_use_case for a name no policy has (never echoed), and
        missing_use_case for none at all."""
        if header and field_value and header != field_value:
            raise GatewayError(
                400,
                "use_case_conflict",
                f"header {USE_CASE_HEADER} and field sovereign.use_case differ",
                "sovereign.use_case",
            )
        name = field_value or header
        known = ", ".join(sorted(self.policies))
        if not name:
            raise GatewayError(
                400,
                "missing_use_case",
                f"name the use case in header {USE_CASE_HEADER} or field sovereign.use_case; "
                f"known use cases: {known}",
                "sovereign.use_case",
            )
        policy = self.policies.get(name)
        if policy is None:
            raise GatewayError(
                400, "unknown_use_case", f"unknown use case; known use cases: {known}", "sovereign.use_case"
            )
        return policy

    def upstream_body(
        self,
        body: ChatRequest,
        policy: UseCasePolicy,
        upstream: Upstream,
        texts: Sequence[str | None],
        context_line: str = "",
        stop: list[str] | None = None,
        seed: int | None = None,
        arguments: Mapping[int, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """The request as the model sees it: *texts* are the filtered message contents (None:
        an assistant turn with tool calls only), *arguments* the filtered arguments of each
        assistant turn's tool calls by message index, *stop* the filtered stop sequences,
        *seed* the keyed seed (docs/gateway-api.md lists what happens to every field). Tools
        and response formats are the policy's reviewed definitions (check_features passed)."""
        messages = self._upstream_messages(body, texts, arguments or {})
        if not upstream.tool_role or not upstream.system_role:
            messages = [_as_template_shows(m, upstream) for m in messages]
        system = "\n\n".join(p for p in (policy.system_prompt, context_line) if p)
        if system:
            if upstream.system_role:
                messages.insert(0, {"role": "system", "content": system})
            else:
                first_user = next((m for m in messages if m["role"] == "user"), None)
                if first_user is not None:
                    first_user["content"] = f"{system}\n\n{first_user['content']}"
        requested = body.max_completion_tokens or body.max_tokens or policy.max_tokens
        out: dict[str, Any] = {
            "model": upstream.model,
            "messages": messages,
            "max_tokens": min(requested, policy.max_tokens),
            "stream": body.stream,
        }
        for name in ChatRequest.FORWARDED:
            value = getattr(body, name)
            if value is not None:
                out[name] = value
        if stop:
            out["stop"] = stop
        if seed is not None:
            out["seed"] = seed
        if body.stream and body.stream_options is not None:
            out["stream_options"] = body.stream_options.model_dump()
        out.update(self._upstream_tools(body, policy))
        if "response_format" in out:  # json_schema as llama-cpp-python takes it (settings.py)
            out["response_format"] = upstream.response_format(out["response_format"])
        return out

    @staticmethod
    def _upstream_messages(
        body: ChatRequest, texts: Sequence[str | None], arguments: Mapping[int, Sequence[str]]
    ) -> list[dict[str, Any]]:
        """The messages with their filtered texts: ``developer`` as ``system`` (the chat
        templates of vLLM's and llama.cpp's models know no developer role), tool-call ids
        replaced by positional ones (``call00001``: consistent within the request; a client's
        id could carry anything), a tool call's name (checked against the policy) as sent."""
        ids: dict[str, str] = {}

        def call_id(sent: str) -> str:
            return ids.setdefault(sent, f"call{len(ids) + 1:05d}")

        messages: list[dict[str, Any]] = []
        for i, (m, text) in enumerate(zip(body.messages, texts, strict=True)):
            # an assistant turn with tool calls only: content "" (llama-cpp-python 0.3.36 takes a
            # str or nothing, and its plain chat formats read message["content"]: _map_roles)
            out: dict[str, Any] = {
                "role": "system" if m.role == "developer" else m.role,
                "content": "" if text is None else text,
            }
            if m.tool_calls:
                filtered = arguments.get(i)
                if filtered is None:  # never the client's own: the caller filters them first
                    raise ValueError(f"messages[{i}]: tool-call arguments not filtered")
                out["tool_calls"] = [
                    {
                        "id": call_id(c.id),
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": args},
                    }
                    for c, args in zip(m.tool_calls, filtered, strict=True)
                ]
            if m.tool_call_id is not None:
                out["tool_call_id"] = call_id(m.tool_call_id)
            messages.append(out)
        return messages

    @staticmethod
    def _upstream_tools(body: ChatRequest, policy: UseCasePolicy) -> dict[str, Any]:
        """tools, tool_choice, parallel_tool_calls and response_format as the upstream gets
        them: the policy's reviewed names, descriptions and schemas, never the client's."""
        out: dict[str, Any] = {}
        if body.tools:
            tools = []
            for tool in body.tools:
                reviewed = policy.tool_named(tool.function.name)
                if reviewed is None:  # check_features refuses it before
                    raise ValueError("a tool outside the policy reached upstream_body")
                function: dict[str, Any] = {
                    "name": reviewed.name,
                    "description": reviewed.description,
                    "parameters": reviewed.parameters,
                }
                if tool.function.strict is not None:
                    function["strict"] = tool.function.strict
                tools.append({"type": "function", "function": function})
            out["tools"] = tools
            if body.tool_choice is not None:
                out["tool_choice"] = (
                    body.tool_choice if isinstance(body.tool_choice, str) else body.tool_choice.model_dump()
                )
            if body.parallel_tool_calls is not None:
                out["parallel_tool_calls"] = body.parallel_tool_calls
        fmt = body.response_format
        if fmt is not None and fmt.type == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif isinstance(fmt, ResponseFormatJsonSchema):
            schema = policy.structured_output.schema_named(fmt.json_schema.name)
            if schema is None:  # check_features refuses it before
                raise ValueError("a response schema outside the policy reached upstream_body")
            spec: dict[str, Any] = {"name": schema.name, "schema": schema.schema_}
            if schema.description:
                spec["description"] = schema.description
            if fmt.json_schema.strict is not None:
                spec["strict"] = fmt.json_schema.strict
            out["response_format"] = {"type": "json_schema", "json_schema": spec}
        return out

    def check_features(self, body: ChatRequest, policy: UseCasePolicy) -> None:
        """422 for what the gateway does not do (store, logprobs) and for tools and response
        formats the use case's policy does not offer as sent. Errors name positions and the
        policy's reviewed names, never a name or value the client sent."""
        if body.store:
            raise GatewayError(
                422, "store_not_supported",
                "store: the gateway stores nothing outside the boundary (no completions are kept "
                "for the client or the model server); send false or omit it",
                "store",
            )  # fmt: skip
        for name, value in (("logprobs", body.logprobs), ("top_logprobs", body.top_logprobs)):
            if value:
                raise GatewayError(
                    422, "logprobs_not_supported",
                    f"{name}: log-probabilities are per token of the filtered text the model saw "
                    "(they would show tokens, not the restored answer, and cannot be restored token "
                    "by token); omit it",
                    name,
                )  # fmt: skip
        offered = ", ".join(t.name for t in policy.tools) or "none"

        def not_offered(where: str) -> GatewayError:
            return GatewayError(
                422, "tool_not_allowed",
                f"{where}: not a tool of use case {policy.name}; its policy offers: {offered}",
                where,
            )  # fmt: skip

        sent: set[str] = set()
        for i, tool in enumerate(body.tools or []):
            reviewed = policy.tool_named(tool.function.name)
            if reviewed is None:
                raise not_offered(f"tools[{i}].function.name")
            if reviewed.name in sent:
                raise GatewayError(
                    422, "invalid_field", f"tools[{i}]: tool {reviewed.name} is offered twice",
                    f"tools[{i}].function.name",
                )  # fmt: skip
            sent.add(reviewed.name)
            if tool.function.parameters is not None and not same_schema(
                tool.function.parameters, reviewed.parameters
            ):
                where = f"tools[{i}].function.parameters"
                raise GatewayError(
                    422, "tool_schema_mismatch",
                    f"{where}: not the JSON Schema the policy of use case {policy.name} reviewed for "
                    f"tool {reviewed.name} (annotations such as title and description aside); send "
                    "the policy's schema or omit parameters (an SDK writes the reviewed, strict form "
                    "from a matching model with strict=True: openai.pydantic_function_tool, "
                    "LangChain's bind_tools(..., strict=True))",
                    where,
                )  # fmt: skip
        choice = body.tool_choice
        if choice is not None and not isinstance(choice, str) and choice.function.name not in sent:
            raise GatewayError(
                422, "tool_not_allowed",
                f"tool_choice.function.name: not a tool of this request's tools; it offers: "
                f"{', '.join(sorted(sent)) or 'none'}",
                "tool_choice.function.name",
            )  # fmt: skip
        if choice in ("auto", "required") and not sent:
            raise GatewayError(
                422, "invalid_field", f"tool_choice: {choice} needs tools; send tools or omit it",
                "tool_choice",
            )  # fmt: skip
        for i, message in enumerate(body.messages):
            for j, call in enumerate(message.tool_calls or []):
                if policy.tool_named(call.function.name) is None:
                    raise not_offered(f"messages[{i}].tool_calls[{j}].function.name")
        self._check_response_format(body, policy)

    @staticmethod
    def _check_response_format(body: ChatRequest, policy: UseCasePolicy) -> None:
        fmt = body.response_format
        if fmt is None or fmt.type == "text":
            return
        structured = policy.structured_output
        allowed = (["json_object"] if structured.json_object else []) + [
            f"json_schema {s.name}" for s in structured.schemas
        ]
        allows = f"use case {policy.name} allows: text{''.join(', ' + a for a in allowed)}"
        if fmt.type == "json_object":
            if not structured.json_object:
                raise GatewayError(
                    422, "response_format_not_allowed",
                    f"response_format.type: json_object is not allowed; {allows}", "response_format.type",
                )  # fmt: skip
            return
        if not isinstance(fmt, ResponseFormatJsonSchema):  # the schema allows no other type
            return
        schema = structured.schema_named(fmt.json_schema.name)
        if schema is None:
            raise GatewayError(
                422, "response_format_not_allowed",
                f"response_format.json_schema.name: not a schema of this use case; {allows}",
                "response_format.json_schema.name",
            )  # fmt: skip
        if fmt.json_schema.schema_ is not None and not same_schema(fmt.json_schema.schema_, schema.schema_):
            raise GatewayError(
                422, "response_format_schema_mismatch",
                f"response_format.json_schema.schema: not the JSON Schema the policy of use case "
                f"{policy.name} reviewed for {schema.name} (annotations such as title and description "
                "aside); send the policy's schema or omit it",
                "response_format.json_schema.schema",
            )  # fmt: skip

    async def read_body(self, request: Request) -> bytes:
        """The body, at most limits.max_body_bytes, complete within limits.body_timeout_s.
        Every refusal here closes the connection (the rest of the body is never read)."""
        limits = self.settings.limits
        limit = limits.max_body_bytes
        too_large = GatewayError(
            413, "body_too_large", f"the body is larger than the limit of {limit} bytes", close=True
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise GatewayError(
                415, "unsupported_media_type", "send the body as Content-Type: application/json", close=True
            )
        chunks: list[bytes] = []

        async def read() -> None:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)

        try:
            await self.bounded(read(), asyncio.get_running_loop().time() + limits.body_timeout_s)
        except ClientDisconnect:
            raise ClientGone from None
        except TimeoutError:
            if self.draining:
                raise GatewayError(503, *SHUTTING_DOWN, close=True) from None
            raise GatewayError(
                408, "body_timeout",
                f"the body did not arrive within limits.body_timeout_s ({limits.body_timeout_s:g} s)",
                close=True,
            ) from None  # fmt: skip
        return b"".join(chunks)

    def admit(self, ex: Exchange) -> Ticket:
        """A place for the request in the pod's and the tenant's limits (or 503/429 at once)."""
        if self.draining:
            raise GatewayError(
                503, *SHUTTING_DOWN, retry_after_s=self.settings.limits.retry_after_s, close=True
            )
        try:
            return self.admission.admit(str(ex.tenant))
        except Refused as refused:
            REFUSED.labels(code=refused.code).inc()
            raise GatewayError(
                refused.status, refused.code, refused.message, retry_after_s=refused.retry_after_s, close=True
            ) from None

    def parse(self, raw: bytes) -> ChatRequest:
        return parse_body(raw, ChatRequest)

    def filter_request(
        self,
        policy: UseCasePolicy,
        context: PatientContext | None,
        texts: list[str],
        key: bytes,
        tenant: str,
        splits: Sequence[Split | None] | None = None,
        *,
        make_context_line: bool = True,
        per_request: bool = False,
    ) -> Filtered:
        """The PHI filter over *texts* (message contents, tool-call arguments and tool results
        value by value, then stop sequences: gathered in chat) and the context; *splits*:
        where and how a value split across two texts is looked for (Gathered.splits);
        *make_context_line* false: none is made (PHIFilter.apply). *per_request*: *key* is
        this request's own, so every value gets a token no other value of the request holds
        (TokenMap.distinct; tenant-keyed tokens must stay the same in every request instead).

        The free-text product fields (sku, name, category) go through detection first, with
        every patient field of the request treated as dropped (an identifier there is
        removed), and the context line then shows the filtered text; price is a validated
        number, cost and margin are never shown."""
        product = context.product if context is not None else None
        raw = {n: v for n in _PRODUCT_TEXT_FIELDS if product is not None and (v := getattr(product, n))}
        tokens = TokenMap(distinct=per_request)  # both passes add to one map
        if context is not None and product is not None and raw and make_context_line:
            plain = [f for f in policy.context_fields if FIELD_CATEGORIES[f] is None]
            first = self.phi.apply(
                policy.model_copy(update={"context_fields": plain}), context, list(raw.values()), key, tenant,
                tokens=tokens,
            )  # fmt: skip
            update = dict(zip(raw, first.texts, strict=True))
            context = context.model_copy(update={"product": product.model_copy(update=update)})
        return self.phi.apply(
            policy, context, texts, key, tenant, splits, make_context_line=make_context_line, tokens=tokens
        )

    async def chat(self, request: Request) -> Response:
        request_id, replaced = request_id_from(request.headers)
        ex = Exchange(request_id=request_id, request_id_replaced=replaced)
        return await self.serve(request, ex, "chat request", self._chat)

    async def _chat(self, request: Request, ex: Exchange, admitted: Admitted) -> Response:
        """The chat completion's work past admission (Gateway.serve answers its failures)."""
        request_id, key = ex.request_id, admitted.key
        body = self.parse(admitted.raw)
        ex.stream = body.stream
        if body.stream:
            try:
                self.admission.admit_stream(admitted.ticket)
            except Refused as refused:
                admitted.taken = True  # released by admit_stream
                REFUSED.labels(code=refused.code).inc()
                raise GatewayError(
                    refused.status, refused.code, refused.message, retry_after_s=refused.retry_after_s
                ) from None
        if body.user is not None:
            ex.dropped_fields.append("user")
        policy = self.resolve_policy(request, body)
        ex.use_case, ex.policy = policy.name, policy
        await self.refuse_suspended(ex, policy)
        if body.model is not None and body.model != policy.model:
            raise GatewayError(
                400,
                "model_not_allowed",
                f"use case {policy.name} uses model {policy.model}; omit 'model' or send that name",
                "model",
            )
        self.check_features(body, policy)
        ex.json_answer = body.response_format is not None and body.response_format.type != "text"
        upstream = self.settings.upstreams.get(policy.model)
        if upstream is None:
            raise GatewayError(503, "model_unavailable", f"no upstream serves model {policy.model}")
        ex.alias, ex.upstream = policy.model, upstream
        if body.tools and not upstream.honours_tool_choice(body.tool_choice):
            # vLLM without its tool call parser answers "auto" with 400; llama.cpp's plain chat
            # formats answer "auto" and "required" with text (gateway/settings.py tool_choices)
            raise GatewayError(
                422, "tool_choice_not_supported",
                f"tool_choice: the model of use case {policy.name} honours tool_choice "
                f"{', '.join(upstream.tool_choices) or 'none'} only, and a request with tools "
                "and no tool_choice asks for auto; name the tool to call: "
                '{"type": "function", "function": {"name": ...}}',
                "tool_choice",
            )  # fmt: skip
        self.recheck_audit()
        try:
            data_key = await self.bounded(self.keys.ensure(key.tenant), float("inf"))
            ex.audit_key = self.keys.current()
        except TimeoutError:
            raise GatewayError(503, *SHUTTING_DOWN) from None  # only the drain bounds it here
        except KeyUnavailable as exc:
            log.error("request %s refused, keys unavailable: %s", request_id, exc)
            raise GatewayError(
                503,
                "key_unavailable",
                "the key service is unavailable; nothing was forwarded. Retry later.",
            ) from None
        context = body.sovereign.context if body.sovereign else None
        gathered, contents, calls, stops = gather_texts(body)
        # tokens of this request only: unlinkable to any token seen elsewhere
        filtered = self.filter_request(
            policy, context, gathered.texts, request_key(data_key), key.tenant, gathered.splits(),
            per_request=True,
        )  # fmt: skip
        ex.phi = filtered.audit()
        count_phi(policy.name, filtered.tokens)
        if filtered.tokens.originals:  # nothing tokenised (plain text): nothing to restore
            ex.originals = untyped(filtered.tokens.originals, gathered.texts, context)
        done = gathered.put_back(filtered.texts)
        context_line = filtered.context_line
        if policy.retrieval is not None:  # the catalogue's nearest items (gateway/catalogue.py)
            from gateway import catalogue

            # write-ahead: the record is on disk before the query goes to the embedding model
            await self.write_ahead(ex)
            found, ex.retrieved = await catalogue.retrieve(self, policy, body, context, data_key, key.tenant)
            context_line = "\n\n".join(p for p in (context_line, found) if p)
        payload = self.upstream_body(
            body,
            policy,
            upstream,
            [None if slot is None else done[slot] for slot in contents],
            context_line,
            stop=[done[slot] for slot in stops],
            seed=None if body.seed is None else keyed_seed(data_key, body.seed),
            arguments={i: [done[slot] for slot in slots] for i, slots in calls.items()},
        )
        ex.max_tokens = payload["max_tokens"]
        # write-ahead: the record that this request goes to the model is on disk first
        # (a crash from here on leaves it open; `sovereign audit verify` names it)
        if ex.admit_job is None:
            await self.write_ahead(ex)
        stream = "true" if body.stream else "false"
        ex.ready = time.perf_counter()  # the stages meet here: prepare ends, upstream begins
        _child(STAGE_SECONDS, "prepare", stream).observe(ex.ready - ex.started - ex.write_ahead_s)
        _child(STAGE_SECONDS, "write_ahead", stream).observe(ex.write_ahead_s)
        if body.stream:
            response = await self.forward_stream(ex, upstream, payload, admitted.ticket, request)
            admitted.taken = True  # the stream gives it back when it ends
            return response
        return await self.forward(ex, upstream, payload, request)

    @staticmethod
    def _upstream_failure(exc: UpstreamFailure) -> GatewayError:
        UPSTREAM_ERRORS.labels(kind=exc.kind).inc()
        if isinstance(exc, UpstreamTimeout):
            return GatewayError(504, "upstream_timeout", "the model upstream did not answer in time")
        if isinstance(exc, UpstreamTooLarge):
            return GatewayError(
                502, "upstream_too_large", "the model upstream's answer exceeds limits.max_answer_bytes"
            )
        if isinstance(exc, UpstreamMalformed):
            return GatewayError(502, "upstream_malformed", "the model upstream sent a malformed answer")
        if exc.kind == "unreachable":
            return GatewayError(502, "upstream_unreachable", "the model upstream is unreachable")
        return GatewayError(502, "upstream_incomplete", "the model upstream closed the answer early")

    async def _with_client(self, request: Request, call: Coroutine[Any, Any, Any], deadline: float) -> Any:
        """*call*'s result, unless the client goes first (ClientGone: the call is cancelled, so
        the upstream stops working for nobody) or *deadline* passes (GatewayError)."""
        task = asyncio.ensure_future(call)
        gone = asyncio.ensure_future(_disconnect(request.receive))
        returned = False
        try:
            await self.bounded(asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED), deadline)
            if task.done():
                returned = True
                return task.result()
            raise ClientGone
        except TimeoutError:
            raise self.timed_out() from None
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # the upstream connection is closed before we go on
            elif not returned and not task.cancelled() and task.exception() is None:
                result = task.result()  # done just as the deadline or the client came: not used
                if isinstance(result, StreamHandle):
                    result.close()

    async def forward(
        self, ex: Exchange, upstream: Upstream, payload: dict[str, Any], request: Request
    ) -> Response:
        t0 = ex.ready or time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.settings.limits.request_deadline_s
        call = self.http.post_json(f"{upstream.url}/chat/completions", payload, self.tls.get(upstream.url))
        try:
            status, raw = await self._with_client(request, call, deadline)
        except UpstreamFailure as exc:
            raise self._upstream_failure(exc) from None
        finally:  # a call that failed or was left by its client counted too: the slow ones are those
            answered = time.perf_counter()
            _child(STAGE_SECONDS, "upstream", "false").observe(answered - t0)
        ex.upstream_ms = round((answered - t0) * 1000, 3)
        if status != 200:
            UPSTREAM_ERRORS.labels(kind="status").inc()
            raise GatewayError(502, "upstream_error", f"the model upstream answered HTTP {status}")
        try:
            if len(raw) > RESTORE_IN_THREAD_CHARS:
                content = await run_in_threadpool(self._restore_answer, ex, raw)
            else:
                content = self._restore_answer(ex, raw)
        except TooLong:
            raise self._too_long() from None
        except Exception:  # whatever the upstream's bytes make the parser raise (RecursionError too)
            UPSTREAM_ERRORS.labels(kind="malformed").inc()
            raise GatewayError(
                502, "upstream_malformed", "the model upstream sent a malformed answer"
            ) from None
        ex.response_bytes = len(content)
        if await self.write_audit(ex, "ok", 200, answer_waits=True) is None:
            raise AuditWriteError("the audit record was not written")
        # to the instant sovereign_gateway_request_seconds took: the stages add up to it
        _child(STAGE_SECONDS, "answer", "false").observe((ex.finished or time.perf_counter()) - answered)
        return Response(content, media_type="application/json", headers=ex.headers)

    @staticmethod
    def _too_long() -> GatewayError:
        UPSTREAM_ERRORS.labels(kind="too_long").inc()
        return GatewayError(
            502, "upstream_too_long", "the model upstream sent more tokens than max_tokens asked for"
        )

    @staticmethod
    def _restore_answer(ex: Exchange, raw: bytes) -> bytes:
        """The answer as the client gets it: tokens restored (one linear pass per text), in
        the content (JSON-aware when the request asked for a JSON answer) and JSON-aware in
        each tool call's arguments (gateway/phi/jsonrestore.py), the model named by its alias.
        TooLong when the upstream counts more completion tokens than it was asked for."""
        answer = json.loads(raw)
        usage = answer.get("usage")
        # n is always 1 here (the schema allows no other): usage is that one choice's
        if isinstance(usage, dict) and int(usage.get("completion_tokens") or 0) > (ex.max_tokens or 1 << 62):
            raise TooLong
        ex.finish_reason = answer["choices"][0].get("finish_reason")
        scanner = TokenScanner(ex.originals) if ex.originals else None  # none: nothing to restore

        def restored(text: str, json_text: bool, counted: bool = True) -> str:
            """*text* restored; counted in the record unless it repeats what is counted already."""
            if scanner is not None:
                text, n = (restore_json if json_text else restore)(text, ex.originals, scanner)
                ex.restored += n if counted else 0
            ex.unrestored += count_unrestored(text) if counted else 0
            return text

        for choice in answer["choices"]:
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str):
                message["content"] = restored(message["content"], ex.json_answer)
            calls = message.get("tool_calls")
            functions = [
                c["function"]
                for c in (calls if isinstance(calls, list) else [])
                if isinstance(c, dict) and isinstance(c.get("function"), dict)
            ]
            for function in functions:
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = restored(function["arguments"], True)
            # llama-cpp-python 0.3 sends the legacy function_call beside tool_calls, the same
            # arguments: restored too, counted once (as the call's), unless it is the only form
            legacy = message.get("function_call")
            if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
                legacy["arguments"] = restored(legacy["arguments"], True, counted=not functions)
        answer["model"] = ex.alias
        return json.dumps(answer, ensure_ascii=False).encode()

    async def forward_stream(
        self, ex: Exchange, upstream: Upstream, payload: dict[str, Any], ticket: Ticket, request: Request
    ) -> Response:
        t0 = ex.ready or time.perf_counter()
        limits = self.settings.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.stream_deadline_s
        opening = self.http.open_stream(
            f"{upstream.url}/chat/completions", payload, self.tls.get(upstream.url)
        )
        try:
            resp = await self._with_client(
                request, opening, min(deadline, loop.time() + limits.read_timeout_s)
            )
        except UpstreamFailure as exc:
            raise self._upstream_failure(exc) from None
        finally:  # failed or left calls too (as in forward)
            _child(STAGE_SECONDS, "upstream", "true").observe(time.perf_counter() - t0)
        if resp.status != 200:
            resp.close()
            UPSTREAM_ERRORS.labels(kind="status").inc()
            raise GatewayError(502, "upstream_error", f"the model upstream answered HTTP {resp.status}")
        relay = StreamRelay(self, ex, resp, t0, deadline, ticket)
        return RelayResponse(
            relay.events(),
            write_timeout_s=limits.write_timeout_s,
            wait=relay.watchdog.wait,
            on_stall=relay.stalled,
            on_close=relay.end,
            media_type="text/event-stream",
            headers={**ex.headers, "cache-control": "no-cache"},
        )

    # -- readiness -------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        # the answer names no address, path or error text (it is unauthenticated); the log has them
        checks: dict[str, str] = {}
        if self.draining:
            checks["gateway"] = "shutting down"
        try:
            await self.keys.check()
            checks["openbao"] = "ok"
        except KeyUnavailable as exc:
            log.warning("readiness: OpenBao: %s", exc)
            checks["openbao"] = "unavailable"
        for alias, upstream in self.settings.upstreams.items():
            try:
                status = await self.http.probe(f"{upstream.url}/models", tls=self.tls.get(upstream.url))
                checks[f"upstream:{alias}"] = "ok" if status == 200 else f"HTTP {status}"
            except UpstreamFailure as exc:
                checks[f"upstream:{alias}"] = f"unreachable ({exc.kind})"
        try:
            self.audit.check_writable()
            checks["audit"] = "ok"
        except AuditWriteError as exc:
            log.warning("readiness: audit trail: %s", exc)
            checks["audit"] = exc.reason  # the words without the trail's path
        return all(v == "ok" for v in checks.values()), checks


async def _disconnect(receive: Receive) -> None:
    """Return when the client has closed the connection (the body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _as_template_shows(message: dict[str, Any], upstream: Upstream) -> dict[str, Any]:
    """*message* in a role the upstream's chat template keeps (gateway/settings.py system_role,
    tool_role): a template that has no such turn drops it silently, and the model would answer
    without the instruction, the call or its result."""
    role = message["role"]
    if role == "system" and not upstream.system_role:
        return {"role": "user", "content": message["content"]}
    if upstream.tool_role:
        return message
    if role == "tool":
        result = f"Result of tool call {message['tool_call_id']}: {message['content']}"
        return {"role": "user", "content": result}
    if role == "assistant" and "tool_calls" in message:
        calls = [
            f"Tool call {c['id']}: {c['function']['name']} {c['function']['arguments']}"
            for c in message["tool_calls"]
        ]
        return {"role": "assistant", "content": "\n".join([message["content"], *calls]).strip()}
    return message


def gather_texts(
    body: ChatRequest, walk: bool = True
) -> tuple[Gathered, list[int | None], dict[int, list[int]], list[int]]:
    """Every text of *body* that reaches the model, for the one filter call: (the gathered
    texts, each message's content slot (None: no content), the slots of each assistant turn's
    tool-call arguments by message index, the stop sequences' slots). A tool message's content
    and a tool call's arguments are walked as JSON when they are JSON (gateway/phi/jsontexts.py;
    *walk* false: as plain text, what benchmarks/tool_request_filter.py compares with)."""
    gathered = Gathered()
    contents: list[int | None] = []
    calls: dict[int, list[int]] = {}
    for i, m in enumerate(body.messages):
        json_aware = walk and m.role == "tool"
        contents.append(None if m.content is None else gathered.add(m.text(), json_aware=json_aware))
        if m.tool_calls:
            calls[i] = [gathered.add(c.function.arguments, json_aware=walk) for c in m.tool_calls]
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return gathered, contents, calls, [gathered.add(s) for s in stops]


def untyped(originals: dict[str, str], texts: list[str], context: PatientContext | None) -> dict[str, str]:
    """The restoration map less every token that the client's own request contains (in a
    message, a stop sequence or a context value): a token the client typed is never restored,
    only ones this request's filter made from values the request itself holds."""
    sent = [*texts]
    if context is not None:
        for _, value in set_fields(context):
            sent += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    typed = {token for _, _, token in TokenScanner(originals).find("\n".join(sent))}
    return {t: v for t, v in originals.items() if t not in typed} if typed else originals


def create_app(settings: GatewaySettings, keys: KeyProvider | None = None) -> FastAPI:
    from gateway.memory import api as memory_api  # it imports this module
    from gateway.memory import vector_api

    gw = Gateway(settings, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sealer = asyncio.create_task(gw.seal_audit_segments())
        await gw.incident.refresh()  # suspended use cases are refused from the first request
        watcher = asyncio.create_task(gw.watch_incidents())
        purger = asyncio.create_task(memory.purge_forever())  # the store's retention
        yield
        sealer.cancel()
        watcher.cancel()
        purger.cancel()
        await gw.http.close()
        await memory.close()
        gw.close_audit()
        gw.keys.forget()

    app = GatewayApp(
        title="sovereign-llm gateway",
        version="0.1.0",
        description="OpenAI-compatible, PHI-filtering gateway; the only door to the models.",
        lifespan=lifespan,
        # no /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a public CDN, which a
        # browser inside the boundary must not be sent to; /openapi.json stays (the schema only)
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.gateway = gw
    memory = memory_api.install(app, gw)  # POST /v1/sovereign/data_subjects/erase|export
    vector_api.install(app, gw, memory)  # /v1/files, /v1/vector_stores (OpenAI's convention)
    gw.memory = memory  # the store, for catalogue retrieval
    from gateway import catalogue  # it imports this module

    catalogue.install(app, gw)  # POST /v1/sovereign/catalogue

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        # an exception handler, not an HTTP middleware: BaseHTTPMiddleware costs ~1 ms a request
        route = request.scope.get("route")  # the route's own path, never the one the client sent
        log.error("unhandled %s on %s", type(exc).__name__, getattr(route, "path", "-"))
        return JSONResponse(openai_error("internal error", "server_error", "internal_error"), 500)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, checks = await gw.readiness()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        # in a worker thread: the scrape-time collectors (gateway/scrape_metrics.py) stat the audit
        # disk and segments and parse certificates, which must not stall the event loop
        return Response(await run_in_threadpool(generate_latest), media_type=CONTENT_TYPE_LATEST)

    # the models' `created` (the OpenAI Model object requires it): when the gateway loaded its settings
    created = int(time.time())

    def model_entry(alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": created, "owned_by": "sovereign-llm"}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        try:
            gw.authenticate(request)
        except GatewayError as err:
            return err.response(*request_id_from(request.headers))
        return JSONResponse({"object": "list", "data": [model_entry(alias) for alias in settings.upstreams]})

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        request_id, replaced = request_id_from(request.headers)
        try:
            gw.authenticate(request)
        except GatewayError as err:
            return err.response(request_id, replaced)
        if model_id not in settings.upstreams:  # the id is not echoed: a client chose it
            known = ", ".join(sorted(settings.upstreams)) or "none"
            return GatewayError(
                404, "model_not_found", f"no such model; the gateway serves: {known}", "model"
            ).response(request_id, replaced)
        return JSONResponse(model_entry(model_id))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            return await gw.chat(request)
        except Exception as exc:
            # log the type only: an exception's text could carry request content
            log.error("unhandled %s in chat request", type(exc).__name__)
            return JSONResponse(openai_error("internal error", "server_error", "internal_error"), 500)

    app.serve_chat(chat_completions, _unhandled)

    from gateway import embeddings  # here: it imports this module

    @app.post(embeddings.PATH)
    async def create_embeddings(request: Request) -> Response:
        try:
            return await embeddings.embeddings(gw, request)
        except Exception as exc:
            log.error("unhandled %s in embeddings request", type(exc).__name__)
            return JSONResponse(openai_error("internal error", "server_error", "internal_error"), 500)

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the request contract: the handler reads the body itself (to
        refuse unknown fields by name), so the schema is added here, its parts as components."""
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)  # fmt: skip
            body = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["ChatRequest"] = body
            document["paths"]["/v1/chat/completions"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
            }
            body = EmbeddingRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["EmbeddingRequest"] = body
            ref = {"$ref": "#/components/schemas/EmbeddingRequest"}
            document["paths"][embeddings.PATH]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref}},
            }
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


#: the one path served by GatewayApp's direct route
CHAT_PATH = "/v1/chat/completions"


class GatewayApp(FastAPI):
    """FastAPI, with ``POST /v1/chat/completions`` handed to its endpoint straight from the
    ASGI call: the hot path skips the per-request middleware layers, the router's scan and
    FastAPI's dependency solving (none of which it uses: the handler reads the body itself and
    answers every error; 0.3-0.5 ms less CPU a plain request in benchmarks/gateway_overhead.py
    on the busy 2-core machine). It keeps what those layers do for it: the route in the scope
    (the unhandled error's log line names it) and Starlette's ServerErrorMiddleware with the
    app's own handler for an exception that escapes. The route stays registered (the OpenAPI
    document, and every other method on the path, answered by the router as before)."""

    _chat: ASGIApp | None = None
    _chat_route: BaseRoute | None = None

    def serve_chat(
        self,
        endpoint: Callable[[Request], Awaitable[Response]],
        on_error: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        """Serve POST CHAT_PATH with *endpoint* (registered as a route already), *on_error*
        answering an exception that escapes it (the app's Exception handler)."""
        self._chat_route = next(r for r in self.routes if isinstance(r, APIRoute) and r.path == CHAT_PATH)

        async def chat(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self._chat = ServerErrorMiddleware(chat, handler=on_error, debug=self.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._chat is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == CHAT_PATH
            and not self.root_path
            and not scope.get("root_path")
            and not self.user_middleware  # a middleware added later would be skipped: take the stack
        ):
            scope["app"] = self
            scope["route"] = self._chat_route
            scope["endpoint"] = getattr(self._chat_route, "endpoint", None)
            scope["path_params"] = {}
            await self._chat(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
