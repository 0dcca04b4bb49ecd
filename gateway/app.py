"""The gateway: the only door between Magento and the models.

Order of work for a chat request: size and content-type limits -> JSON -> schema (422 names
the field) -> API key (tenant) -> use case (policy) -> keys from OpenBao (fail closed, 503)
-> upstream from the allowlisted configuration -> answer -> signed audit record.
Neither prompt nor answer text is logged or audited; only ids, counts, outcomes, timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import ValidationError

from gateway.audit import AuditKey, AuditLog, AuditWriteError
from gateway.clientkeys import ClientKey, ClientKeyStore
from gateway.kms import KeyProvider, KeyUnavailable
from gateway.phi.context import FIELD_CATEGORIES, PatientContext, set_fields
from gateway.phi.filter import Filtered, PHIFilter, recognizers
from gateway.phi.tokenise import StreamRestorer, TokenScanner, count_unrestored, request_key, restore
from gateway.policy import UseCasePolicy, load_policies
from gateway.schemas import (
    REQUEST_ID_HEADER,
    REQUEST_ID_REPLACED_HEADER,
    TENANT_HEADER,
    USE_CASE_HEADER,
    ChatRequest,
    describe_validation_error,
    openai_error,
)
from gateway.settings import GatewaySettings, Upstream
from gateway.sse import SSEDecoder
from gateway.upstream import StreamHandle, UpstreamClient, UpstreamFailure, UpstreamTimeout

log = logging.getLogger("sovereign.gateway")

REQUESTS = Counter(
    "sovereign_gateway_requests_total", "Chat requests by use case and HTTP status.", ["use_case", "status"]
)
LATENCY = Histogram(
    "sovereign_gateway_request_seconds",
    "End-to-end chat request latency at the gateway.",
    ["use_case", "stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter("sovereign_gateway_upstream_errors_total", "Upstream failures.", ["kind"])
AUDIT_FAILURES = Counter("sovereign_gateway_audit_failures_total", "Audit records that could not be written.")

#: the only X-Request-Id a client may choose: a UUID in its textual form (any version, stored in
#: lower case). Anything else is replaced by a new UUID, and the answer says so in
#: X-Request-Id-Replaced: a free-form id could carry patient data into the signed audit trail.
_REQUEST_ID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: answers (and stream chunks) of more characters than this are restored in a worker thread,
#: so a large answer never holds the event loop (a setting `limits.restore_in_thread_chars`
#: may replace this default)
RESTORE_IN_THREAD_CHARS = 16_384
#: product fields of free text: detected like any text before the context line shows them
_PRODUCT_TEXT_FIELDS = ("sku", "name", "category")


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

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def response(self, request_id: str, replaced: bool = False) -> JSONResponse:
        type_ = "invalid_request_error" if self.status < 500 else "server_error"
        return JSONResponse(
            openai_error(self.message, type_, self.code, self.param),
            status_code=self.status,
            headers=id_headers(request_id, replaced),
        )


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

    @property
    def headers(self) -> dict[str, str]:
        return id_headers(self.request_id, self.request_id_replaced)

    def record(self, outcome: str, status: int) -> dict[str, Any]:
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
            "outcome": outcome,
            "status": status,
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


class Gateway:
    """Holds the gateway's state; one per process."""

    def __init__(self, settings: GatewaySettings, keys: KeyProvider | None = None) -> None:
        self.settings = settings
        self.policies = load_policies(settings.policies_dir)
        for policy in self.policies.values():
            if policy.model not in settings.upstreams:
                log.warning("use case %s names model %s, which no upstream serves", policy.name, policy.model)
        self.client_keys = ClientKeyStore(settings.keys_file)
        self.keys = keys or KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir)
        self.audit = AuditLog(
            settings.audit.path, self.keys, fsync=settings.audit.fsync,
            segment_max_bytes=settings.audit.segment_max_bytes,
            segment_max_age_s=settings.audit.segment_max_age_s,
            min_free_bytes=settings.audit.min_free_bytes,
        )  # fmt: skip
        self.audit_healthy = True
        self.http = UpstreamClient(settings.limits)
        # mTLS contexts, built once at start (a missing certificate stops the start, naming the file)
        self.tls = {u.url: u.tls.context() for u in settings.upstreams.values() if u.tls is not None}
        self.phi = PHIFilter(recognizers(settings.phi_names, settings.phi_plugins))

    # -- audit ----------------------------------------------------------------------------
    async def seal_audit_segments(self) -> None:
        """Seal the active audit segment when it is due, also without traffic, so that records
        reach the archive within about segment_max_age_s (records are appended from this loop
        too, so the two never interleave)."""
        interval = min(60.0, self.settings.audit.segment_max_age_s)
        while True:
            await asyncio.sleep(interval)
            try:
                self.audit.seal_if_due()
            except AuditWriteError as exc:
                AUDIT_FAILURES.inc()
                self.audit_healthy = False
                log.error("audit segment not sealed: %s", exc)

    def write_audit(self, ex: Exchange, outcome: str, status: int) -> dict[str, Any] | None:
        REQUESTS.labels(use_case=ex.use_case or "-", status=str(status)).inc()
        if ex.use_case:
            LATENCY.labels(use_case=ex.use_case, stream=str(ex.stream).lower()).observe(
                time.perf_counter() - ex.started
            )
        if ex.tenant is None:
            return None  # unauthenticated: metrics and access log only
        try:
            record = self.audit.append(ex.record(outcome, status), key=ex.audit_key)
        except (AuditWriteError, KeyUnavailable) as exc:
            AUDIT_FAILURES.inc()
            self.audit_healthy = False
            log.error("audit record for request %s not written: %s", ex.request_id, exc)
            return None
        # below the disk reserve: the next requests are refused before they are forwarded
        space_ok = self.audit.space_ok()
        if self.audit_healthy and not space_ok:  # said once, when it happens, not per request
            log.error("audit trail disk below its reserve (audit.min_free_bytes): refusing requests")
        self.audit_healthy = space_ok
        return record

    # -- request handling ------------------------------------------------------------------
    def authenticate(self, request: Request) -> ClientKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GatewayError(
                401, "missing_api_key", "send the client API key as 'Authorization: Bearer sk-sov-...'"
            )
        key = self.client_keys.authenticate(token.strip())
        if key is None:
            raise GatewayError(401, "invalid_api_key", "the API key is unknown or revoked")
        claimed = request.headers.get(TENANT_HEADER)
        if claimed is not None and claimed != key.tenant:
            raise GatewayError(
                403, "tenant_mismatch", f"header {TENANT_HEADER} does not match the API key's tenant"
            )
        return key

    def resolve_policy(self, request: Request, body: ChatRequest) -> UseCasePolicy:
        header = request.headers.get(USE_CASE_HEADER)
        field_value = body.sovereign.use_case if body.sovereign else None
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
        texts: list[str],
        context_line: str = "",
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """The request as the model sees it: *texts* are the filtered message contents, *stop*
        the filtered stop sequences, *seed* the keyed seed (docs/gateway-api.md lists what
        happens to every field)."""
        messages = [{"role": m.role, "content": t} for m, t in zip(body.messages, texts, strict=True)]
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
        return out

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayError(413, "body_too_large", f"the body is larger than the limit of {limit} bytes")
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise GatewayError(
                415, "unsupported_media_type", "send the body as Content-Type: application/json"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise GatewayError(
                    413, "body_too_large", f"the body is larger than the limit of {limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, raw: bytes) -> ChatRequest:
        try:
            data = json.loads(raw)
        except ValueError:
            raise GatewayError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(400, "invalid_json", "the body must be a JSON object")
        try:
            return ChatRequest.model_validate(data)
        except ValidationError as exc:
            param, message = describe_validation_error(exc)
            raise GatewayError(422, "invalid_field", message, param) from None

    def filter_request(
        self,
        policy: UseCasePolicy,
        context: PatientContext | None,
        texts: list[str],
        key: bytes,
        tenant: str,
    ) -> Filtered:
        """The PHI filter over *texts* (messages, then stop sequences) and the context.

        The free-text product fields (sku, name, category) go through detection first, with
        every patient field of the request treated as dropped (an identifier there is
        removed), and the context line then shows the filtered text; price is a validated
        number, cost and margin are never shown."""
        product = context.product if context is not None else None
        raw = {n: v for n in _PRODUCT_TEXT_FIELDS if product is not None and (v := getattr(product, n))}
        first = None
        if context is not None and product is not None and raw:
            plain = [f for f in policy.context_fields if FIELD_CATEGORIES[f] is None]
            first = self.phi.apply(
                policy.model_copy(update={"context_fields": plain}), context, list(raw.values()), key, tenant
            )
            update = dict(zip(raw, first.texts, strict=True))
            context = context.model_copy(update={"product": product.model_copy(update=update)})
        filtered = self.phi.apply(policy, context, texts, key, tenant)
        if first is not None:
            tokens = filtered.tokens
            for token, value in first.tokens.originals.items():
                tokens.originals.setdefault(token, value)
            tokens.tokenised.update(first.tokens.tokenised)
            tokens.removed.update(first.tokens.removed)
        return filtered

    async def chat(self, request: Request) -> Response:
        request_id, replaced = request_id_from(request.headers)
        ex = Exchange(request_id=request_id, request_id_replaced=replaced)
        try:
            raw = await self.read_body(request)
            ex.request_bytes = len(raw)
            key = self.authenticate(request)
            ex.tenant, ex.key_id = key.tenant, key.key_id
            body = self.parse(raw)
            ex.stream = body.stream
            if body.user is not None:
                ex.dropped_fields.append("user")
            policy = self.resolve_policy(request, body)
            ex.use_case, ex.policy = policy.name, policy
            if body.model is not None and body.model != policy.model:
                raise GatewayError(
                    400,
                    "model_not_allowed",
                    f"use case {policy.name} uses model {policy.model}; omit 'model' or send that name",
                    "model",
                )
            upstream = self.settings.upstreams.get(policy.model)
            if upstream is None:
                raise GatewayError(503, "model_unavailable", f"no upstream serves model {policy.model}")
            ex.alias, ex.upstream = policy.model, upstream
            if not self.audit_healthy:
                self.audit.check_writable()
                self.audit_healthy = True
            try:
                data_key = await self.keys.ensure(key.tenant)
                ex.audit_key = self.keys.current()
            except KeyUnavailable as exc:
                log.error("request %s refused, keys unavailable: %s", request_id, exc)
                raise GatewayError(
                    503,
                    "key_unavailable",
                    "the key service is unavailable; nothing was forwarded. Retry later.",
                ) from None
            context = body.sovereign.context if body.sovereign else None
            texts = [m.text() for m in body.messages]
            stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
            # tokens of this request only: unlinkable to any token seen elsewhere
            filtered = self.filter_request(
                policy, context, [*texts, *stops], request_key(data_key), key.tenant
            )
            ex.phi = filtered.audit()
            ex.originals = untyped(filtered.tokens.originals, [*texts, *stops], context)
            payload = self.upstream_body(
                body,
                policy,
                upstream,
                filtered.texts[: len(texts)],
                filtered.context_line,
                stop=filtered.texts[len(texts) :],
                seed=None if body.seed is None else keyed_seed(data_key, body.seed),
            )
            if body.stream:
                return await self.forward_stream(ex, upstream, payload)
            return await self.forward(ex, upstream, payload)
        except GatewayError as err:
            self.write_audit(ex, err.code if err.status >= 500 else "rejected", err.status)
            return err.response(request_id, replaced)
        except AuditWriteError as exc:
            log.error("request %s refused, audit trail not writable: %s", request_id, exc)
            return GatewayError(
                503, "audit_unavailable", "the audit trail cannot be written; the request was not served"
            ).response(request_id, replaced)

    def _upstream_failure(self, exc: UpstreamFailure, upstream: Upstream) -> GatewayError:
        UPSTREAM_ERRORS.labels(kind=exc.kind).inc()
        if isinstance(exc, UpstreamTimeout):
            return GatewayError(504, "upstream_timeout", "the model upstream did not answer in time")
        return GatewayError(502, "upstream_unreachable", "the model upstream is unreachable")

    async def forward(self, ex: Exchange, upstream: Upstream, payload: dict[str, Any]) -> Response:
        t0 = time.perf_counter()
        try:
            status, raw = await self.http.post_json(
                f"{upstream.url}/chat/completions", payload, self.tls.get(upstream.url)
            )
        except UpstreamFailure as exc:
            raise self._upstream_failure(exc, upstream) from None
        ex.upstream_ms = round((time.perf_counter() - t0) * 1000, 3)
        if status != 200:
            UPSTREAM_ERRORS.labels(kind="status").inc()
            raise GatewayError(502, "upstream_error", f"the model upstream answered HTTP {status}")
        try:
            if len(raw) > RESTORE_IN_THREAD_CHARS:
                content = await run_in_threadpool(self._restore_answer, ex, raw)
            else:
                content = self._restore_answer(ex, raw)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            UPSTREAM_ERRORS.labels(kind="malformed").inc()
            raise GatewayError(
                502, "upstream_malformed", "the model upstream sent a malformed answer"
            ) from None
        ex.response_bytes = len(content)
        if self.write_audit(ex, "ok", 200) is None:
            raise AuditWriteError("the audit record was not written")
        return Response(content, media_type="application/json", headers=ex.headers)

    @staticmethod
    def _restore_answer(ex: Exchange, raw: bytes) -> bytes:
        """The answer as the client gets it: tokens restored (one linear pass per choice),
        the model named by its alias."""
        answer = json.loads(raw)
        ex.finish_reason = answer["choices"][0].get("finish_reason")
        scanner = TokenScanner(ex.originals)
        for choice in answer["choices"]:
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str):
                message["content"], n = restore(message["content"], ex.originals, scanner)
                ex.restored += n
                ex.unrestored += count_unrestored(message["content"])
        answer["model"] = ex.alias
        return json.dumps(answer, ensure_ascii=False).encode()

    async def forward_stream(self, ex: Exchange, upstream: Upstream, payload: dict[str, Any]) -> Response:
        t0 = time.perf_counter()
        try:
            resp = await self.http.open_stream(
                f"{upstream.url}/chat/completions", payload, self.tls.get(upstream.url)
            )
        except UpstreamFailure as exc:
            raise self._upstream_failure(exc, upstream) from None
        if resp.status != 200:
            resp.close()
            UPSTREAM_ERRORS.labels(kind="status").inc()
            raise GatewayError(502, "upstream_error", f"the model upstream answered HTTP {resp.status}")
        return StreamingResponse(
            self._relay(ex, resp, t0),
            media_type="text/event-stream",
            headers={**ex.headers, "cache-control": "no-cache"},
        )

    def _relay_event(self, ex: Exchange, data: bytes, t0: float, restorers: _Restorers) -> bytes:
        """One upstream event as it goes to the client, tokens restored; raises ValueError
        when malformed."""
        if data == b"[DONE]":
            return b"data: [DONE]\n\n"
        try:
            event = json.loads(data)
            for choice in event["choices"]:
                delta = choice.get("delta") or {}
                content = delta.get("content")
                text = restorers.feed(choice.get("index", 0), content if isinstance(content, str) else "")
                if choice.get("finish_reason"):
                    ex.finish_reason = choice["finish_reason"]
                    text += restorers.flush(choice.get("index", 0))
                if text or isinstance(content, str):
                    delta["content"] = text
                    choice["delta"] = delta
                if ex.ttft_ms is None and text:
                    ex.ttft_ms = round((time.perf_counter() - t0) * 1000, 3)
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError("malformed event") from exc
        event["model"] = ex.alias
        return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"

    async def _relay(self, ex: Exchange, resp: StreamHandle, t0: float) -> AsyncIterator[bytes]:
        """Relay the upstream's SSE events, renaming the model to its alias.

        Events that arrive together leave together (one write), so a fast upstream is not
        slowed by one send per token, and a slow one is not held back.
        """
        outcome, status = "client_disconnected", 499
        decoder = SSEDecoder()
        restorers = _Restorers(ex.originals)
        try:
            async for chunk in resp.chunks():
                if len(chunk) > RESTORE_IN_THREAD_CHARS:
                    out, malformed = await run_in_threadpool(
                        self._relay_chunk, ex, decoder, chunk, t0, restorers
                    )
                else:
                    out, malformed = self._relay_chunk(ex, decoder, chunk, t0, restorers)
                if malformed:
                    UPSTREAM_ERRORS.labels(kind="malformed").inc()
                    outcome, status = "upstream_malformed", 502
                    out.append(_sse_error("upstream_malformed", "the model upstream sent a malformed event"))
                    yield self._count(ex, out)
                    return
                if out:
                    yield self._count(ex, out)
            ex.upstream_ms = round((time.perf_counter() - t0) * 1000, 3)
            if ex.finish_reason is None or decoder.pending:
                outcome, status = "upstream_incomplete", 502
                yield _sse_error("upstream_incomplete", "the model upstream ended the stream early")
            else:
                outcome, status = "ok", 200
        except UpstreamTimeout:
            UPSTREAM_ERRORS.labels(kind="timeout").inc()
            outcome, status = "upstream_timeout", 504
            yield _sse_error("upstream_timeout", "the model upstream stopped sending in time")
        except UpstreamFailure:
            UPSTREAM_ERRORS.labels(kind="broken_stream").inc()
            outcome, status = "upstream_incomplete", 502
            yield _sse_error("upstream_incomplete", "the model upstream closed the stream early")
        finally:
            resp.close()
            ex.restored, ex.unrestored = restorers.counts()
            self.write_audit(ex, outcome, status)

    def _relay_chunk(
        self, ex: Exchange, decoder: SSEDecoder, chunk: bytes, t0: float, restorers: _Restorers
    ) -> tuple[list[bytes], bool]:
        """The events *chunk* completes, as they go to the client; (events, malformed)."""
        out: list[bytes] = []
        try:
            for data in decoder.feed(chunk):
                out.append(self._relay_event(ex, data, t0, restorers))
        except ValueError:
            return out, True
        return out, False

    @staticmethod
    def _count(ex: Exchange, parts: list[bytes]) -> bytes:
        payload = b"".join(parts)
        ex.response_bytes += len(payload)
        return payload

    # -- readiness -------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        # the answer names no address, path or error text (it is unauthenticated); the log has them
        checks: dict[str, str] = {}
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


class _Restorers:
    """One stream restorer per choice of a streamed answer."""

    def __init__(self, originals: dict[str, str]) -> None:
        self._originals = originals
        self._scanner = TokenScanner(originals)
        self._by_choice: dict[int, StreamRestorer] = {}
        self._text: list[str] = []

    def _get(self, index: int) -> StreamRestorer:
        if index not in self._by_choice:
            self._by_choice[index] = StreamRestorer(self._originals, self._scanner)
        return self._by_choice[index]

    def feed(self, index: int, text: str) -> str:
        out = self._get(index).feed(text) if text else ""
        self._text.append(out)
        return out

    def flush(self, index: int) -> str:
        out = self._get(index).flush()
        self._text.append(out)
        return out

    def counts(self) -> tuple[int, int]:
        """(tokens restored, surrogate tokens left in the answer: mangled or invented)."""
        restored = sum(r.restored for r in self._by_choice.values())
        return restored, count_unrestored("".join(self._text))


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


def _sse_error(code: str, message: str) -> bytes:
    body = openai_error(message, "server_error", code)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def create_app(settings: GatewaySettings, keys: KeyProvider | None = None) -> FastAPI:
    gw = Gateway(settings, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sealer = asyncio.create_task(gw.seal_audit_segments())
        yield
        sealer.cancel()
        await gw.http.close()
        gw.audit.close()
        gw.keys.forget()

    app = FastAPI(
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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        try:
            gw.authenticate(request)
        except GatewayError as err:
            return err.response(*request_id_from(request.headers))
        data = [{"id": alias, "object": "model", "owned_by": "sovereign-llm"} for alias in settings.upstreams]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            return await gw.chat(request)
        except Exception as exc:
            # log the type only: an exception's text could carry request content
            log.error("unhandled %s in chat request", type(exc).__name__)
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
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
