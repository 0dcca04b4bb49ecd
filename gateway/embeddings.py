"""POST /v1/embeddings: OpenAI's embeddings API through the boundary (issue #27).

Order of work, as for a chat request (gateway/app.py): API key -> admission -> body limits ->
JSON -> schema (gateway/schemas.py EmbeddingRequest: text only, token ids refused) -> use case
-> kill switch -> the use case's ``embedding_model`` (none: 422 ``embeddings_not_allowed``) ->
keys from OpenBao (fail closed, 503) -> PHI filter over every input with the use case's
minimisation, tokens scoped to the TENANT (the data key itself, not a per-request key: the same
value gets the same token in every request of the tenant, so a tokenised query finds tokenised
stored text; never across tenants; docs/phi-filter.md) -> write-ahead audit record -> the
embeddings upstream (``upstreams.<alias>.kind: embeddings``), always asked for floats, in
calls whose answers fit ``limits.max_answer_bytes`` -> the answer checked strictly (502
``upstream_malformed`` otherwise) -> OpenAI's answer (base64 made here when asked for) -> the
final audit record. Records and metrics carry counts and categories, never a text or a vector.

Vectors are answered L2-normalised whatever the upstream does (:func:`unit_length`).

``embed_upstream`` is the upstream call alone, for texts that are already filtered (the memory
store and catalogue retrieval use it).
"""

from __future__ import annotations

import array
import asyncio
import base64
import functools
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from gateway.app import (
    SHUTTING_DOWN,
    Admitted,
    Exchange,
    Gateway,
    GatewayError,
    count_phi,
    parse_body,
    request_id_from,
)
from gateway.audit import AuditWriteError
from gateway.kms import KeyUnavailable
from gateway.memory import pseudonym
from gateway.schemas import EmbeddingRequest
from gateway.settings import Upstream
from gateway.upstream import UPSTREAM_ERRORS, UpstreamFailure

log = logging.getLogger("sovereign.gateway")

PATH = "/v1/embeddings"

EMBEDDED_INPUTS = Counter(
    "sovereign_gateway_embedded_inputs_total",
    "Texts embedded (filtered, sent to the embeddings upstream and answered), by use case.",
    ["use_case"],
)
#: bytes one vector component may take in an upstream's JSON answer: a float32 written by Python's
#: repr (llama-cpp-python, vLLM: ``-1.2345678901234567e-05``, 23 characters) and ``, ``
JSON_FLOAT_BYTES = 26
#: bytes of one data item around its vector ({"object": "embedding", "index": 2047, ...})
JSON_ITEM_BYTES = 96


class _UpstreamItem(BaseModel):
    """One item of an upstream's answer (OpenAI's Embedding object: llama-cpp-python 0.3.36
    llama.py create_embedding, vLLM v0.11.0 EmbeddingResponseData)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    object: Literal["embedding"]
    index: int = Field(ge=0)
    # strict floats accept JSON integers (a component of exactly 0 may be written 0); never NaN
    embedding: list[Annotated[float, Field(allow_inf_nan=False)]]


class _UpstreamUsage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    prompt_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class _UpstreamAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    object: Literal["list"]
    data: list[_UpstreamItem]
    usage: _UpstreamUsage


@dataclass
class EmbeddingsExchange(Exchange):
    """An embeddings request's audit record: the chat record's fields, the endpoint and the
    number of inputs (never a text or a vector)."""

    inputs: int = 0

    def admission(self) -> dict[str, Any]:
        return {**super().admission(), "endpoint": "embeddings", "inputs": self.inputs}


def parse(raw: bytes) -> EmbeddingRequest:
    return parse_body(raw, EmbeddingRequest)


def per_call(upstream: Upstream, max_answer_bytes: int) -> int:
    """How many texts one upstream call may carry: its answer must fit max_answer_bytes."""
    dims = upstream.dimensions or 1
    return max(1, (max_answer_bytes - 1024) // (dims * JSON_FLOAT_BYTES + JSON_ITEM_BYTES))


def _vectors(raw: bytes, n: int, dims: int) -> tuple[list[list[float]], int, int]:
    """(the vectors in input order, prompt_tokens, total_tokens) of an upstream answer for *n*
    texts; ValueError when it is not exactly that (an index missing or twice, another length)."""
    answer = _UpstreamAnswer.model_validate_json(raw)
    if len(answer.data) != n or sorted(item.index for item in answer.data) != list(range(n)):
        raise ValueError("indexes")
    if any(len(item.embedding) != dims for item in answer.data):
        raise ValueError("dimensions")
    ordered = sorted(answer.data, key=lambda item: item.index)
    return [item.embedding for item in ordered], answer.usage.prompt_tokens, answer.usage.total_tokens


#: how far from 1 a vector's length may be and count as unit length already (float32 rounding)
UNIT_TOLERANCE = 1e-4


def unit_length(vector: list[float]) -> list[float]:
    """*vector* L2-normalised: OpenAI documents its embeddings as normalised to length 1, vLLM
    v0.11.0's embed pooler normalises by default (PoolerConfig ``normalize``), the local
    llama-cpp-python 0.3.36 server does not (its vectors measured with lengths far from 1,
    docs/memory.md); clients and the store compare vectors by dot product or cosine, so the
    gateway answers unit vectors from every upstream. A vector within UNIT_TOLERANCE of length 1
    is returned as it is (dividing would change only its rounding); a zero vector too (it has no
    direction)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0 or abs(norm - 1.0) <= UNIT_TOLERANCE:
        return vector
    return [x / norm for x in vector]


async def _embed(
    gw: Gateway, upstream: Upstream, texts: list[str], request: Request | None
) -> tuple[list[list[float]], int, int]:
    """The upstream's vectors for *texts* (already filtered), with the usage summed over the calls,
    within limits.request_deadline_s in all; with *request*, cancelled when its client goes."""
    limits = gw.settings.limits
    deadline = asyncio.get_running_loop().time() + limits.request_deadline_s
    size = per_call(upstream, limits.max_answer_bytes)
    vectors: list[list[float]] = []
    prompt = total = 0
    for start in range(0, len(texts), size):
        part = texts[start : start + size]
        # only the upstream's model name, the filtered texts and floats: nothing else of the client's
        payload = {"model": upstream.model, "input": part, "encoding_format": "float"}
        call = gw.http.post_json(f"{upstream.url}/embeddings", payload, gw.tls.get(upstream.url))
        try:
            if request is not None:
                status, raw = await gw._with_client(request, call, deadline)
            else:
                status, raw = await gw.bounded(call, deadline)
        except UpstreamFailure as exc:
            raise gw._upstream_failure(exc) from None
        except TimeoutError:
            raise gw.timed_out() from None
        if status != 200:
            UPSTREAM_ERRORS.labels(kind="status").inc()
            raise GatewayError(502, "upstream_error", f"the embedding upstream answered HTTP {status}")
        try:
            got, p, t = _vectors(raw, len(part), upstream.dimensions or 0)
        except (ValueError, ValidationError):
            UPSTREAM_ERRORS.labels(kind="malformed").inc()
            raise GatewayError(
                502,
                "upstream_malformed",
                f"the embedding upstream sent a malformed answer (not one vector of "
                f"{upstream.dimensions} numbers per input, each index once)",
            ) from None
        vectors += [unit_length(v) for v in got]
        prompt, total = prompt + p, total + t
    return vectors, prompt, total


async def embed_upstream(gw: Gateway, upstream: Upstream, texts: list[str]) -> list[list[float]]:
    """The vectors of *texts*, which are ALREADY filtered (Gateway.filter_request with the
    tenant's data key), from the embeddings *upstream*, in their order; GatewayError (502, 504)
    when the upstream fails or answers anything but one vector of its dimensions per text."""
    if upstream.kind != "embeddings":
        raise ValueError("embed_upstream needs an upstream of kind embeddings")
    return (await _embed(gw, upstream, texts, None))[0]


def encoded(vector: list[float]) -> str:
    """*vector* as OpenAI's base64 form: little-endian float32 bytes, base64 (openai-python
    3.57.0 lib/_parsing/_embeddings.py decodes it with ``array("f", b64decode(s))`` or numpy's
    ``frombuffer(dtype="float32")``)."""
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def answer(body: EmbeddingRequest, alias: str, vectors: list[list[float]], prompt: int, total: int) -> bytes:
    """OpenAI's CreateEmbeddingResponse: the data in input order, the model by its alias."""
    as_base64 = body.encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": encoded(v) if as_base64 else v}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt, "total_tokens": total}
    out = {"object": "list", "data": data, "model": alias, "usage": usage}
    # pydantic-core's serialiser: the shortest form that reads back as the same float, as
    # json.dumps writes it, ~8x faster for a batch's thousands of floats (12,288 for 32 texts
    # of 384 dimensions: 1.7 ms instead of 13 ms here)
    return to_json(out)


async def memory_key(gw: Gateway, ex: Exchange, tenant: str) -> bytes:
    """The tenant's memory key (gateway/memory/pseudonym.py memory_key: the same in every pod),
    the audit key with it, or 503: nothing is forwarded without."""
    try:
        await gw.bounded(gw.keys.refresh_audit_key(), float("inf"))
        data_key: bytes = await gw.bounded(pseudonym.memory_key(gw.keys, tenant), float("inf"))
        ex.audit_key = gw.keys.current()
    except TimeoutError:
        raise GatewayError(503, *SHUTTING_DOWN) from None  # only the drain bounds it here
    except KeyUnavailable as exc:
        log.error("request %s refused, keys unavailable: %s", ex.request_id, exc)
        raise GatewayError(
            503, "key_unavailable", "the key service is unavailable; nothing was forwarded. Retry later."
        ) from None
    return data_key


async def embeddings(gw: Gateway, request: Request) -> Response:
    """One POST /v1/embeddings (the module docstring has the order of work)."""
    request_id, replaced = request_id_from(request.headers)
    ex = EmbeddingsExchange(request_id=request_id, request_id_replaced=replaced)
    return await gw.serve(request, ex, "embeddings request", functools.partial(_embeddings, gw))


async def _embeddings(gw: Gateway, request: Request, ex: EmbeddingsExchange, admitted: Admitted) -> Response:
    key = admitted.key
    body = parse(admitted.raw)
    ex.inputs = len(body.input)
    if body.user is not None:
        ex.dropped_fields.append("user")
    policy = gw.resolve_policy(request, body)
    ex.use_case, ex.policy = policy.name, policy
    await gw.refuse_suspended(ex, policy)
    alias = policy.embedding_model
    if alias is None:
        raise GatewayError(
            422,
            "embeddings_not_allowed",
            f"use case {policy.name} embeds nothing (its policy names no embedding_model); "
            "use a use case whose policy allows embeddings",
            "sovereign.use_case",
        )
    if body.model is not None and body.model != alias:
        raise GatewayError(
            400,
            "model_not_allowed",
            f"use case {policy.name} embeds with model {alias}; omit 'model' or send that name",
            "model",
        )
    upstream = gw.settings.upstreams.get(alias)
    if upstream is None or upstream.kind != "embeddings":
        raise GatewayError(503, "model_unavailable", f"no embeddings upstream serves model {alias}")
    ex.alias, ex.upstream = alias, upstream
    if body.dimensions is not None and body.dimensions != upstream.dimensions:
        raise GatewayError(
            422,
            "dimensions_not_supported",
            f"dimensions: model {alias} answers vectors of {upstream.dimensions} numbers and "
            "does not shorten them; send that number or omit dimensions",
            "dimensions",
        )
    gw.recheck_audit()
    data_key = await memory_key(gw, ex, key.tenant)
    context = body.sovereign.context if body.sovereign else None
    # the tenant's data key itself: tokens the same in every request of the tenant (stored
    # vectors stay matchable), never the same in another tenant's
    # the context's values are known values to find in the texts; no context line is made
    # (it is not embedded)
    filtered = gw.filter_request(policy, context, body.input, data_key, key.tenant, make_context_line=False)
    ex.phi = filtered.audit()
    count_phi(policy.name, filtered.tokens)
    # write-ahead: the record that these texts go to the model is on disk first
    await gw.write_ahead(ex)
    t0 = time.perf_counter()
    vectors, prompt, total = await _embed(gw, upstream, filtered.texts, request)
    ex.upstream_ms = round((time.perf_counter() - t0) * 1000, 3)
    content = answer(body, alias, vectors, prompt, total)
    ex.response_bytes = len(content)
    if await gw.write_audit(ex, "ok", 200, answer_waits=True) is None:
        raise AuditWriteError("the audit record was not written")
    EMBEDDED_INPUTS.labels(use_case=policy.name).inc(len(vectors))
    return Response(content, media_type="application/json", headers=ex.headers)
