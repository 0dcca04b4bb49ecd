"""Catalogue retrieval (issue #27 item 6): a use case's product catalogue, embedded inside the
boundary, searched for chat.

Loading: ``POST /v1/sovereign/catalogue`` with ``{"sovereign": {"use_case": U}, "products":
[Product, ...]}`` (gateway/phi/context.py Product). The order of work is chat's: API key ->
admission -> body limits -> schema (422 names the field, never a value) -> use case (its policy
must have ``retrieval``) -> kill switch -> the embeddings upstream -> the store -> the tenant's
data key -> each product's PUBLIC fields only (the policy's ``context_fields`` among
``product.*``; ``cost`` and ``margin`` are never allowed by any policy, and their values are
removed wherever they appear in the text) through the PHI filter with every category removed
(a catalogue belongs to no patient: an identifier in a product name is removed, never
tokenised) -> write-ahead audit record -> the embeddings upstream -> the store, replacing the
use case's catalogue of the tenant in one transaction -> the final audit record.

Chat (gateway/app.py Gateway.chat, for a use case whose policy has ``retrieval`` only): the
last user message, filtered as /v1/embeddings filters (tenant-scoped tokens, as stored), is
embedded, the ``top_k`` nearest items of the tenant's catalogue are searched, and their stored
text (public fields, filtered) is added to the system prompt. Without the store or the
embedding model the chat is refused (503 ``store_unavailable`` / ``model_unavailable``): an
answer without the catalogue would be the model's guess at products and prices, answered as if
it were the catalogue's (docs/memory.md, "The catalogue").
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.app import (
    Admitted,
    Exchange,
    Gateway,
    GatewayError,
    RecordNotWritten,
    parse_body,
    request_id_from,
)
from gateway.embeddings import embed_upstream, memory_key
from gateway.phi.context import FIELD_CATEGORIES, PatientContext, Product
from gateway.policy import UseCasePolicy
from gateway.schemas import ChatRequest
from gateway.settings import Upstream

if TYPE_CHECKING:
    from gateway.memory.store import Store

log = logging.getLogger("sovereign.catalogue")

PATH = "/v1/sovereign/catalogue"
#: the order public product fields are written in (stored, embedded and shown the same way)
PUBLIC_ORDER = ("sku", "name", "category", "price")
_TEXT_FIELDS = ("sku", "name", "category")


class CatalogueSovereign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    use_case: str = Field(description="The use case whose catalogue this is (its policy has retrieval).")


class CatalogueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sovereign: CatalogueSovereign
    products: list[Product] = Field(
        max_length=100_000, description="The whole catalogue: it replaces the one loaded before."
    )


@dataclass
class CatalogueExchange(Exchange):
    """A catalogue load's audit records: the endpoint and counts, never a text."""

    items: int = 0
    replaced: int = 0

    def admission(self) -> dict[str, Any]:
        return {**super().admission(), "endpoint": "catalogue", "items": self.items}

    def record(self, outcome: str, status: int) -> dict[str, Any]:
        return {**super().record(outcome, status), "replaced": self.replaced}


def public_fields(policy: UseCasePolicy) -> list[str]:
    """The product fields the policy lets the model see (``product.cost``/``margin`` never)."""
    allowed = {f.split(".", 1)[1] for f in policy.context_fields if f.startswith("product.")}
    return [f for f in PUBLIC_ORDER if f in allowed and FIELD_CATEGORIES[f"product.{f}"] is None]


def public_text(
    gw: Gateway, policy: UseCasePolicy, product: Product, data_key: bytes, tenant: str
) -> tuple[str, dict[str, int]]:
    """*product*'s public fields as one line (``sku: ...; name: ...; price: 12.50``), the free-text
    ones filtered with every category removed (the product's cost and margin are known values
    of the filter, removed wherever they appear); the removed counts by category."""
    fields = public_fields(policy)
    texts = {f: str(v) for f in fields if f in _TEXT_FIELDS and (v := getattr(product, f))}
    removed: dict[str, int] = {}
    if texts:
        minimal = policy.model_copy(update={"tokenise": [], "context_fields": []})
        filtered = gw.phi.apply(
            minimal, PatientContext(product=product), list(texts.values()), data_key, tenant,
            make_context_line=False,
        )  # fmt: skip
        texts = dict(zip(texts, filtered.texts, strict=True))
        removed = dict(filtered.tokens.removed)
    parts = []
    for f in fields:
        if f == "price":
            price: Decimal | None = product.price
            if price is not None:
                parts.append(f"price: {price}")
        elif texts.get(f, "").strip():
            parts.append(f"{f}: {texts[f].strip()}")
    return "; ".join(parts), removed


def _embedding_upstream(gw: Gateway, policy: UseCasePolicy) -> tuple[str, Upstream]:
    alias = policy.embedding_model or ""
    upstream = gw.settings.upstreams.get(alias)
    if upstream is None or upstream.kind != "embeddings":
        raise GatewayError(503, "model_unavailable", f"no embeddings upstream serves model {alias}")
    return alias, upstream


async def _store(gw: Gateway, doing: str) -> Store:
    if gw.memory is None:
        raise GatewayError(503, "store_unavailable", f"this gateway has no memory store; {doing}")
    try:
        store: Store = await gw.memory.store()
    except GatewayError:  # store_unavailable, its message for this request's kind
        raise GatewayError(503, "store_unavailable", f"the memory store is not available; {doing}") from None
    return store


def _parse(raw: bytes) -> CatalogueRequest:
    return parse_body(raw, CatalogueRequest)


async def load(gw: Gateway, request: Request) -> Response:
    """One POST /v1/sovereign/catalogue (the module docstring has the order of work)."""
    request_id, replaced = request_id_from(request.headers)
    ex = CatalogueExchange(request_id=request_id, request_id_replaced=replaced)
    return await gw.serve(request, ex, "catalogue load", functools.partial(_load, gw))


async def _load(gw: Gateway, request: Request, ex: CatalogueExchange, admitted: Admitted) -> Response:
    key, request_id = admitted.key, ex.request_id
    body = _parse(admitted.raw)
    ex.items = len(body.products)
    policy = gw.named_policy(None, body.sovereign.use_case)
    ex.use_case, ex.policy = policy.name, policy
    if policy.retrieval is None:
        with_retrieval = sorted(n for n, p in gw.policies.items() if p.retrieval is not None)
        raise GatewayError(
            422, "retrieval_not_allowed",
            f"use case {policy.name} has no catalogue (its policy has no retrieval); use cases "
            f"with one: {', '.join(with_retrieval) or 'none'}",
            "sovereign.use_case",
        )  # fmt: skip
    await gw.refuse_suspended(ex, policy)
    ex.alias, upstream = _embedding_upstream(gw, policy)
    ex.upstream = upstream
    store = await _store(gw, "nothing was changed. Retry later.")
    gw.recheck_audit()
    data_key = await memory_key(gw, ex, key.tenant)
    texts: list[str] = []
    removed: dict[str, int] = {}
    for i, product in enumerate(body.products):
        text, counts = public_text(gw, policy, product, data_key, key.tenant)
        if not text:
            raise GatewayError(
                422, "invalid_field",
                f"products.{i}: no public field with a value (the policy shows "
                f"{', '.join(public_fields(policy))}); give at least one",
                f"products.{i}",
            )  # fmt: skip
        texts.append(text)
        for category, n in counts.items():
            removed[category] = removed.get(category, 0) + n
    ex.phi = {"tokenised": {}, "removed": dict(sorted(removed.items()))}
    await gw.write_ahead(ex)
    vectors = await embed_upstream(gw, upstream, texts) if texts else []
    try:
        ex.replaced = await store.replace_catalogue(
            key.tenant, policy.name, list(zip(texts, vectors, strict=True))
        )
    except Exception as exc:  # the database's messages may quote values: the type only
        log.error("catalogue load %s failed in the store: %s", request_id, type(exc).__name__)
        raise GatewayError(
            503, "store_unavailable", "the memory store failed; the catalogue was not changed. Retry."
        ) from None
    if await gw.write_audit(ex, "ok", 200, answer_waits=True) is None:
        raise RecordNotWritten(
            "the catalogue was loaded, and its audit record could not be written; load it again "
            "(a load replaces the catalogue) once the audit trail is writable"
        )
    answer = {"object": "sovereign.catalogue", "use_case": policy.name, "items": len(texts),
              "replaced": ex.replaced}  # fmt: skip
    return JSONResponse(answer, headers=ex.headers)


def last_user_text(body: ChatRequest) -> str:
    """The text of the request's last user message ("" without one)."""
    return next((m.text() or "" for m in reversed(body.messages) if m.role == "user"), "")


async def retrieve(
    gw: Gateway,
    policy: UseCasePolicy,
    body: ChatRequest,
    context: PatientContext | None,
    data_key: bytes,
    tenant: str,
) -> tuple[str, int]:
    """(the system prompt's catalogue section, the number of items in it) for a chat of a use
    case with retrieval; GatewayError 503 when the store or the embedding model fails."""
    if policy.retrieval is None:
        raise ValueError("retrieve() is for use cases with retrieval")
    _, upstream = _embedding_upstream(gw, policy)
    store = await _store(gw, "the request was not forwarded. Retry later.")
    query = last_user_text(body)
    rows: list[dict[str, Any]] = []
    if query.strip():
        # filtered as /v1/embeddings filters: tokens of the tenant, as the stored texts'
        # (its values are counted once, by the chat's own filter: not again here)
        filtered = gw.filter_request(policy, context, [query], data_key, tenant, make_context_line=False)
        try:
            vector = (await embed_upstream(gw, upstream, filtered.texts))[0]
        except GatewayError as exc:
            log.error("catalogue retrieval: the embedding model failed (%s)", exc.code)
            raise GatewayError(
                503, "model_unavailable",
                f"the embedding model of use case {policy.name}'s catalogue retrieval did not answer "
                f"({exc.code}); the request was not forwarded. Retry later.",
            ) from None  # fmt: skip
        try:
            rows = await store.search_catalogue(tenant, policy.name, vector, policy.retrieval.top_k)
        except Exception as exc:  # the database's messages may quote values: the type only
            log.error("catalogue retrieval: the store failed (%s)", type(exc).__name__)
            raise GatewayError(
                503, "store_unavailable", "the memory store failed; the request was not forwarded. Retry."
            ) from None
    if not rows:
        return "Catalogue matches: none.", 0
    return "Catalogue matches:\n" + "\n".join(f"- {r['text']}" for r in rows), len(rows)


def install(app: FastAPI, gw: Gateway) -> None:
    @app.post(PATH)
    async def catalogue(request: Request) -> Response:
        return await load(gw, request)
