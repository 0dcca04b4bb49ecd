"""OpenAI's files and vector-store API over the memory store (openai-python 3.57.0 unchanged).

Endpoints (docs/gateway-api.md has every field's fate): POST/GET/DELETE /v1/files[/{id}];
POST/GET/DELETE /v1/vector_stores[/{id}]; POST/GET/DELETE /v1/vector_stores/{id}/files[/{file_id}];
POST /v1/vector_stores/{id}/search. The use case comes from ``sovereign.use_case`` (a JSON body's
field, a multipart form's ``sovereign`` field holding JSON or openai-python's bracketed form
fields ``sovereign[use_case]``) or the ``x-sovereign-use-case`` header; the patient from
``sovereign.context``.

Order of work, as for chat (gateway/app.py): API key -> admission -> body limits -> schema (422
names the field, never a value) -> use case -> its ``memory`` (none: 422 ``memory_not_allowed``)
-> store -> keys from OpenBao (fail closed, 503) -> pseudonym -> write-ahead audit record ->
the PHI filter with the TENANT's data key (make_context_line=False) -> the embedding upstream
(for additions and searches) -> the store -> the final audit record -> the answer. Records
carry ``operation`` and counts; never an id a client chose, a pseudonym, a filename or a value.

- Files are UTF-8 text (text/plain, text/markdown, application/json), at most
  ``memory.max_file_bytes``; stored TOKENISED with the originals sealed (store.seal) and the
  patient's pseudonym when a context is given. The client's filename is never stored nor
  answered: the stored name is generated (``upload.txt``, ``upload.md``, ``upload.json`` by
  the content type). Content downloads are refused (OpenAI refuses them for purpose assistants).
- Vector stores belong to the tenant and use case, never to a patient (erasing one patient
  must not delete a store holding others' chunks); a name must match NAME_PATTERN and hold no
  value the PHI filter finds; metadata is refused (free client text, stored and echoed as
  given, outside the filter). A store's expiry is pushed to now + retention at every addition.
- Chunks carry their file's pseudonym and the retention; a search of a memory use case needs a
  patient context (422 otherwise) and finds that patient's chunks and those of no patient,
  never another patient's; texts and attribute strings are answered RESTORED.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

# starlette's form parser needs it and imports it only if present: missing, the gateway fails
# at start, not at the first upload (tests/unit/test_packaging.py)
import python_multipart  # noqa: F401
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from gateway.app import (
    SHUTTING_DOWN,
    Admitted,
    BodyReader,
    ClientGone,
    Exchange,
    Gateway,
    GatewayError,
    RecordNotWritten,
    count_phi,
    request_id_from,
)
from gateway.embeddings import embed_upstream, memory_key
from gateway.kms import KeyUnavailable
from gateway.memory.api import Memory
from gateway.memory.pseudonym import NoIdentifier, pseudonym
from gateway.memory.store import Owner, Pseudonym, Store, unseal
from gateway.phi.context import PatientContext
from gateway.phi.tokenise import restore
from gateway.policy import UseCasePolicy
from gateway.schemas import USE_CASE_HEADER, describe_validation_error
from gateway.settings import Upstream

log = logging.getLogger("sovereign.memory")

#: a vector store's name: letters, digits, space, ``_ . -``, 1..64 characters
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$"
#: an attribute's key (OpenAI: at most 16 keys of at most 64 characters)
KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: digits an attribute's number may have (a count, a priority, a year); longer ones may identify
MAX_NUMBER_DIGITS = 5
CONTENT_TYPES = {"text/plain": "upload.txt", "text/markdown": "upload.md", "application/json": "upload.json"}
PURPOSES = ("assistants", "user_data")
#: all-MiniLM-L6-v2 reads 512 WordPiece tokens, two of them [CLS] and [SEP]; a WordPiece token
#: covers at least one character, so a chunk of at most 510 characters fits (counted in characters)
MODEL_TOKENS = 510
#: OpenAI's auto chunking: 800 tokens, 400 overlap; here bounded by MODEL_TOKENS
AUTO_MAX, AUTO_OVERLAP = 800, 400


# -- ids ------------------------------------------------------------------------------------
def file_id(row: uuid.UUID) -> str:
    return f"file-{row.hex}"


def store_id(row: uuid.UUID) -> str:
    return f"vs_{row.hex}"


def parse_id(value: str, prefix: str, what: str, param: str) -> uuid.UUID:
    if value.startswith(prefix):
        try:
            return uuid.UUID(hex=value[len(prefix) :])
        except ValueError:
            pass
    raise GatewayError(404, "not_found", f"no such {what} for this tenant and use case", param)


# -- request bodies -------------------------------------------------------------------------
class Sovereign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    use_case: str | None = None
    context: PatientContext | None = None


class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)


class ChunkingAuto(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto"]


class ChunkingStatic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["static"]
    static: StaticChunking


Chunking = Annotated[ChunkingAuto | ChunkingStatic, Field(discriminator="type")]
AttributeValue = Annotated[str, Field(max_length=512)] | bool | int | float


class VectorStoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    metadata: dict[str, Any] | None = Field(default=None, max_length=0)
    file_ids: list[str] | None = Field(default=None, max_length=0)
    expires_after: None = None
    chunking_strategy: None = None
    description: None = None
    sovereign: Sovereign | None = None


class VectorStoreFileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_id: str
    attributes: dict[Annotated[str, Field(pattern=KEY_PATTERN)], AttributeValue] | None = Field(
        default=None, max_length=16
    )
    chunking_strategy: Chunking | None = None
    sovereign: Sovereign | None = None


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(pattern=KEY_PATTERN)]
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte"]
    value: AttributeValue


class Compound(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["and", "or"]
    filters: list[Comparison | Compound] = Field(min_length=1, max_length=32)


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranker: Literal["auto", "default-2024-11-15"] | None = None
    score_threshold: float | None = Field(default=None, ge=0, le=1)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=16)]
    )
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Comparison | Compound | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: Literal[False] = False
    sovereign: Sovereign | None = None


# -- audit ----------------------------------------------------------------------------------
@dataclass
class VectorExchange(Exchange):
    """A vector-store request's audit records: the operation and counts, never ids or values."""

    operation: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def admission(self) -> dict[str, Any]:
        return {**super().admission(), "endpoint": "vector_stores", "operation": self.operation}

    def record(self, outcome: str, status: int) -> dict[str, Any]:
        return {**super().record(outcome, status), "counts": dict(self.counts)}


# -- chunking -------------------------------------------------------------------------------
def chunk_sizes(strategy: ChunkingAuto | ChunkingStatic | None) -> tuple[int, int]:
    """(max characters, overlap characters) of a chunk: the strategy's tokens, each counted as
    one character (a WordPiece token covers at least one), bounded by the model's MODEL_TOKENS."""
    if isinstance(strategy, ChunkingStatic):
        size, overlap = strategy.static.max_chunk_size_tokens, strategy.static.chunk_overlap_tokens
        if overlap > size // 2:
            raise GatewayError(
                422, "invalid_field",
                "chunking_strategy.static.chunk_overlap_tokens: at most half of max_chunk_size_tokens",
                "chunking_strategy.static.chunk_overlap_tokens",
            )  # fmt: skip
    else:
        size, overlap = AUTO_MAX, AUTO_OVERLAP
    limit = min(size, MODEL_TOKENS)
    return limit, min(overlap, limit // 2) if size <= MODEL_TOKENS else limit * overlap // size


def chunks_of(text: str, size: int, overlap: int) -> list[str]:
    """*text* cut at whitespace into pieces of at most *size* characters, each beginning with
    about *overlap* characters of the one before; a word longer than *size* is cut (a token of
    the PHI filter is far shorter, so a token is never cut)."""
    words: list[str] = []
    for word in text.split():
        words += [word[i : i + size] for i in range(0, len(word), size)]
    out: list[str] = []
    i = 0
    while i < len(words):
        piece: list[str] = []
        length = 0
        j = i
        while j < len(words) and length + len(words[j]) + (1 if piece else 0) <= size:
            length += len(words[j]) + (1 if piece else 0)
            piece.append(words[j])
            j += 1
        out.append(" ".join(piece))
        if j >= len(words):
            break
        back, k = 0, j
        while k - 1 > i and back + len(words[k - 1]) + 1 <= overlap:
            back += len(words[k - 1]) + 1
            k -= 1
        i = k
    return out


# -- the API --------------------------------------------------------------------------------
#: a vector-store file's statuses in OpenAI's API (the `filter` of a store's file list)
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")

Work = Callable[["VectorExchange", "Call"], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass
class Call:
    """One request's resolved state for the operation."""

    request: Request
    tenant: str
    raw: bytes = b""
    sovereign: Sovereign | None = None
    policy: UseCasePolicy | None = None


def _parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        param, message = describe_validation_error(exc)
        # a union's member is named in pydantic's location (filters.Comparison.type): drop it
        for member in _UNION_MEMBERS:
            param, message = param.replace(f".{member}", ""), message.replace(f".{member}", "")
        raise GatewayError(422, "invalid_field", message, param) from None


_UNION_MEMBERS = ("Comparison", "Compound")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise GatewayError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None


def _bracketed(form: list[tuple[str, str]]) -> dict[str, Any]:
    """openai-python's multipart form of a nested extra_body (``sovereign[context][kvnr]``,
    _base_client.py _serialize_multipartform, array_format brackets) as a nested dict."""
    out: dict[str, Any] = {}
    for name, value in form:
        parts = re.findall(r"\[([^\[\]]*)\]", name[len("sovereign") :])
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GatewayError(422, "invalid_field", "sovereign: malformed form fields", "sovereign")
        last = parts[-1] if parts else ""
        if last == "" and len(parts) >= 2:  # a list: name[]
            parent = out
            for part in parts[:-2]:
                parent = parent[part]
            parent.setdefault(parts[-2], [])
            if isinstance(parent[parts[-2]], dict) and not parent[parts[-2]]:
                parent[parts[-2]] = []
            parent[parts[-2]].append(value)
        elif last:
            node[last] = value
        else:
            raise GatewayError(422, "invalid_field", "sovereign: malformed form fields", "sovereign")
    return out


class VectorAPI:
    """The endpoints over the gateway's :class:`Memory` (its store, opened at first use)."""

    def __init__(self, gw: Gateway, memory: Memory) -> None:
        self.gw, self.memory = gw, memory

    # -- common steps ----------------------------------------------------------------------
    async def policy(self, call: Call, ex: VectorExchange) -> UseCasePolicy:
        policy = self.gw.named_policy(
            call.request.headers.get(USE_CASE_HEADER), call.sovereign.use_case if call.sovereign else None
        )
        ex.use_case, ex.policy = policy.name, policy
        if policy.memory is None:
            raise GatewayError(
                422, "memory_not_allowed",
                f"use case {policy.name} stores nothing (its policy has no memory); use a use case "
                "whose policy has memory.retention_days",
                "sovereign.use_case",
            )  # fmt: skip
        # the operator's kill switch (sovereign incident suspend): nothing stored, embedded or found
        await self.gw.refuse_suspended(ex, policy)
        call.policy = policy
        return policy

    def embedding_upstream(self, policy: UseCasePolicy, ex: VectorExchange) -> Upstream:
        alias = policy.embedding_model
        if alias is None:
            raise GatewayError(
                422, "embeddings_not_allowed",
                f"use case {policy.name} embeds nothing (its policy names no embedding_model)",
                "sovereign.use_case",
            )  # fmt: skip
        upstream = self.gw.settings.upstreams.get(alias)
        if upstream is None or upstream.kind != "embeddings":
            raise GatewayError(503, "model_unavailable", f"no embeddings upstream serves model {alias}")
        ex.alias, ex.upstream = alias, upstream
        return upstream

    async def keys(self, ex: VectorExchange, call: Call) -> bytes:
        self.gw.recheck_audit()
        return await memory_key(self.gw, ex, call.tenant)

    async def subject(self, call: Call) -> Pseudonym | None:
        context = call.sovereign.context if call.sovereign else None
        if context is None:
            return None
        try:
            subject: Pseudonym = await self.gw.bounded(
                pseudonym(self.gw.keys, call.tenant, context), float("inf")
            )
            return subject
        except NoIdentifier as exc:
            raise GatewayError(422, "invalid_field", str(exc), "sovereign.context") from None
        except KeyUnavailable as exc:
            log.error("vector-store request refused, keys unavailable: %s", exc)
            raise GatewayError(
                503, "key_unavailable", "the key service is unavailable; nothing was stored. Retry later."
            ) from None

    def filter(
        self, call: Call, ex: VectorExchange, texts: list[str], data_key: bytes
    ) -> tuple[list[str], dict[str, str]]:
        if call.policy is None:
            raise RuntimeError("filter before the use case is known")
        context = call.sovereign.context if call.sovereign else None
        filtered = self.gw.filter_request(
            call.policy, context, texts, data_key, call.tenant, make_context_line=False
        )
        for kind in ("tokenised", "removed"):
            for category, n in filtered.audit()[kind].items():
                ex.phi.setdefault(kind, {})
                ex.phi[kind][category] = ex.phi[kind].get(category, 0) + n
        count_phi(call.policy.name, filtered.tokens)
        return filtered.texts, dict(filtered.tokens.originals)

    # -- the runner --------------------------------------------------------------------------
    async def run(self, request: Request, operation: str, work: Work, *, multipart: bool = False) -> Response:
        """*work* under Gateway.serve (its order of work and its failures' answers; a failure
        nobody foresaw is the store's: 503 store_unavailable, retry), then the final record and
        the answer."""
        gw = self.gw
        request_id, replaced = request_id_from(request.headers)
        ex = VectorExchange(request_id=request_id, request_id_replaced=replaced, operation=operation)
        read: BodyReader | Literal["json"] = (
            self.read_multipart if multipart else "json" if request.method == "POST" else None
        )

        async def answered(request: Request, ex: VectorExchange, admitted: Admitted) -> Response:
            call = Call(request=request, tenant=admitted.key.tenant, raw=admitted.raw)
            status, answer = await work(ex, call)
            if await gw.write_audit(ex, "ok", status, answer_waits=True) is None:
                raise RecordNotWritten(
                    f"the {operation} was done, and its audit record could not be written; "
                    "check its result before a retry, once the audit trail is writable"
                )
            return JSONResponse(answer, status_code=status, headers=ex.headers)

        failed = GatewayError(
            503, "store_unavailable", f"the memory store failed during {operation}; retry it"
        )
        return await gw.serve(request, ex, operation, answered, read=read, unexpected=failed)

    async def read_multipart(self, request: Request) -> bytes:
        limit = self.gw.settings.memory.max_file_bytes + 64 * 1024
        declared = request.headers.get("content-length")
        too_large = GatewayError(
            413, "body_too_large",
            f"the upload is larger than the limit of {self.gw.settings.memory.max_file_bytes} bytes "
            "(setting memory.max_file_bytes)", close=True,
        )  # fmt: skip
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise GatewayError(
                415, "unsupported_media_type", "send the file as multipart/form-data", close=True
            )
        body = bytearray()

        async def read() -> None:
            async for part in request.stream():
                body.extend(part)
                if len(body) > limit:
                    raise too_large

        timeout_s = self.gw.settings.limits.body_timeout_s
        try:
            await self.gw.bounded(read(), asyncio.get_running_loop().time() + timeout_s)
        except ClientDisconnect:
            raise ClientGone from None
        except TimeoutError:
            if self.gw.draining:
                raise GatewayError(503, *SHUTTING_DOWN, close=True) from None
            raise GatewayError(
                408, "body_timeout",
                f"the body did not arrive within limits.body_timeout_s ({timeout_s:g} s)", close=True,
            ) from None  # fmt: skip
        return bytes(body)

    # -- files ------------------------------------------------------------------------------
    async def file_upload(self, ex: VectorExchange, call: Call) -> tuple[int, dict[str, Any]]:
        max_bytes = self.gw.settings.memory.max_file_bytes

        async def stream() -> AsyncGenerator[bytes, None]:
            yield call.raw

        parser = MultiPartParser(
            Headers(raw=call.request.headers.raw), stream(), max_files=1, max_fields=64,
            max_part_size=max_bytes,
        )  # fmt: skip
        # the file stays in memory: starlette spools a part larger than spool_max_size (1 MiB) to a
        # temporary file on disk, where patient text would outlive the request
        parser.spool_max_size = max_bytes + 1
        try:
            form = await parser.parse()
        except (MultiPartException, KeyError, ValueError, UnicodeDecodeError):  # no boundary, bad bytes
            raise GatewayError(
                400, "invalid_multipart", "the body is not a readable multipart form (at most one file)"
            ) from None
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise GatewayError(422, "invalid_field", "file: send the file as the form's part 'file'", "file")
        if purpose not in PURPOSES:
            raise GatewayError(
                422, "invalid_field", "purpose: must be 'assistants' or 'user_data'", "purpose"
            )
        fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        as_json = [v for k, v in fields if k == "sovereign"]
        bracketed = [(k, v) for k, v in fields if k.startswith("sovereign[")]
        others = {k for k, _ in fields} - {"purpose", "sovereign"} - {k for k, _ in bracketed}
        if others:
            raise GatewayError(
                422, "invalid_field", "body: only file, purpose and sovereign are read", "body"
            )
        sovereign_data: Any = None
        if as_json:
            sovereign_data = _json(as_json[0].encode())
        elif bracketed:
            sovereign_data = _bracketed(bracketed)
        if sovereign_data is not None:
            call.sovereign = _parse(Sovereign, sovereign_data)
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            raise GatewayError(
                415, "unsupported_file_type",
                f"file: only UTF-8 text is stored ({', '.join(CONTENT_TYPES)}); send it as one of these",
                "file",
            )  # fmt: skip
        content = await upload.read()
        if len(content) > max_bytes:
            raise GatewayError(
                413, "body_too_large", f"file: larger than {max_bytes} bytes (memory.max_file_bytes)", "file"
            )
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayError(422, "invalid_field", "file: not UTF-8 text", "file") from None
        if not text.strip():
            raise GatewayError(422, "invalid_field", "file: empty; send text to store", "file")
        policy = await self.policy(call, ex)
        store = await self.memory.store()
        data_key = await self.keys(ex, call)
        subject = await self.subject(call)
        await self.gw.write_ahead(ex)
        [tokenised], originals = self.filter(call, ex, [text], data_key)
        if subject is None and tokenised != text:
            # without a patient the file is shared (every patient's search finds it, restored)
            # and out of reach of erasure and export: only a file with no personal data may be
            raise GatewayError(
                422, "context_required",
                "the file holds personal data, so it belongs to a patient: send the patient as "
                "sovereign.context (files.create(..., extra_body={'sovereign': {'context': {...}}})); "
                "only a file without personal data (an FAQ, a leaflet) is stored without one",
                "sovereign.context",
            )  # fmt: skip
        filename = CONTENT_TYPES[ctype]
        row = await store.add_file(
            Owner(call.tenant, policy.name, subject), filename, str(purpose), len(content), originals,
            data_key, policy.memory.retention_days if policy.memory else None, text=tokenised,
        )  # fmt: skip
        ex.counts = {"files": 1, "bytes": len(content)}
        got = await self._file_row(store, call.tenant, policy.name, row)
        return 200, self._file_object(got)

    async def _file_row(self, store: Store, tenant: str, use_case: str, row: uuid.UUID) -> dict[str, Any]:
        async with store.connection() as conn:
            cur = await conn.execute(
                "SELECT id, filename, purpose, bytes, created_at, expires_at FROM files "
                "WHERE id = %s AND tenant = %s AND use_case = %s AND expires_at > now()",
                (row, tenant, use_case),
            )
            got = await cur.fetchone()
        if got is None:
            raise GatewayError(404, "not_found", "no such file for this tenant and use case", "file_id")
        return dict(got)

    @staticmethod
    def _file_object(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": file_id(r["id"]), "object": "file", "bytes": r["bytes"],
            "created_at": int(r["created_at"].timestamp()), "expires_at": int(r["expires_at"].timestamp()),
            "filename": r["filename"], "purpose": r["purpose"], "status": "processed",
        }  # fmt: skip

    async def _scoped(self, ex: VectorExchange, call: Call) -> tuple[Store, UseCasePolicy]:
        """A GET or DELETE: its use case from the header (no body), its store."""
        policy = await self.policy(call, ex)
        store = await self.memory.store()
        await self.keys(ex, call)
        return store, policy

    async def file_get(self, ex: VectorExchange, call: Call, fid: str) -> tuple[int, dict[str, Any]]:
        row = parse_id(fid, "file-", "file", "file_id")
        store, policy = await self._scoped(ex, call)
        return 200, self._file_object(await self._file_row(store, call.tenant, policy.name, row))

    async def file_delete(self, ex: VectorExchange, call: Call, fid: str) -> tuple[int, dict[str, Any]]:
        row = parse_id(fid, "file-", "file", "file_id")
        store, policy = await self._scoped(ex, call)
        await self.gw.write_ahead(ex)
        async with store.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM files WHERE id = %s AND tenant = %s AND use_case = %s",
                (row, call.tenant, policy.name),
            )
        if cur.rowcount == 0:
            raise GatewayError(404, "not_found", "no such file for this tenant and use case", "file_id")
        ex.counts = {"files": 1}
        return 200, {"id": fid, "object": "file", "deleted": True}

    async def file_content(self, ex: VectorExchange, call: Call, fid: str) -> tuple[int, dict[str, Any]]:
        raise GatewayError(
            400, "download_not_allowed",
            "files stored for memory are not downloadable (as OpenAI's purpose assistants); a data "
            "subject's stored data comes with POST /v1/sovereign/data_subjects/export",
        )  # fmt: skip

    # -- vector stores ------------------------------------------------------------------------
    async def _store_row(self, store: Store, tenant: str, use_case: str, row: uuid.UUID) -> dict[str, Any]:
        async with store.connection() as conn:
            cur = await conn.execute(
                "SELECT v.id, v.name, v.created_at, v.expires_at, "
                "(SELECT count(DISTINCT c.file_id) FROM chunks c WHERE c.store_id = v.id "
                " AND c.expires_at > now()) AS files, "
                "(SELECT coalesce(sum(octet_length(c.text)), 0) FROM chunks c WHERE c.store_id = v.id "
                " AND c.expires_at > now()) AS usage "
                "FROM vector_stores v WHERE v.id = %s AND v.tenant = %s AND v.use_case = %s "
                "AND v.expires_at > now()",
                (row, tenant, use_case),
            )
            got = await cur.fetchone()
        if got is None:
            raise GatewayError(
                404, "not_found", "no such vector store for this tenant and use case", "vector_store_id"
            )
        return dict(got)

    @staticmethod
    def _store_object(r: dict[str, Any]) -> dict[str, Any]:
        n = int(r["files"])
        return {
            "id": store_id(r["id"]), "object": "vector_store", "created_at": int(r["created_at"].timestamp()),
            "name": r["name"], "usage_bytes": int(r["usage"]),
            "file_counts": {"in_progress": 0, "completed": n, "failed": 0, "cancelled": 0, "total": n},
            "status": "completed", "last_active_at": int(r["created_at"].timestamp()), "metadata": None,
            "expires_after": None, "expires_at": int(r["expires_at"].timestamp()),
        }  # fmt: skip

    async def store_create(self, ex: VectorExchange, call: Call) -> tuple[int, dict[str, Any]]:
        body: VectorStoreCreate = _parse(VectorStoreCreate, _json(call.raw))
        call.sovereign = body.sovereign
        policy = await self.policy(call, ex)
        store = await self.memory.store()
        data_key = await self.keys(ex, call)
        await self.gw.write_ahead(ex)
        name = body.name or "vector store"
        [filtered], _ = self.filter(call, ex, [name], data_key)
        if filtered != name:
            raise GatewayError(
                422, "invalid_field",
                "name: holds a value the PHI filter finds (a name, a number, a date...); name the store "
                "by its purpose",
                "name",
            )  # fmt: skip
        row = await store.add_vector_store(
            Owner(call.tenant, policy.name, None),
            name,
            policy.memory.retention_days if policy.memory else None,
        )
        ex.counts = {"vector_stores": 1}
        return 200, self._store_object(await self._store_row(store, call.tenant, policy.name, row))

    async def store_get(self, ex: VectorExchange, call: Call, vid: str) -> tuple[int, dict[str, Any]]:
        row = parse_id(vid, "vs_", "vector store", "vector_store_id")
        store, policy = await self._scoped(ex, call)
        return 200, self._store_object(await self._store_row(store, call.tenant, policy.name, row))

    async def store_list(self, ex: VectorExchange, call: Call) -> tuple[int, dict[str, Any]]:
        paging = _paging(call.request, "vs_", "vector store")
        store, policy = await self._scoped(ex, call)
        items = sql.SQL(
            "SELECT id, created_at AS t FROM vector_stores "
            "WHERE tenant = %(tenant)s AND use_case = %(use_case)s AND expires_at > now()"
        )
        async with store.connection() as conn:
            ids, more = await _page_ids(conn, items, {"tenant": call.tenant, "use_case": policy.name}, paging)
        data = [self._store_object(await self._store_row(store, call.tenant, policy.name, i)) for i in ids]
        ex.counts = {"vector_stores": len(data)}
        return 200, _page(data, more)

    async def store_delete(self, ex: VectorExchange, call: Call, vid: str) -> tuple[int, dict[str, Any]]:
        row = parse_id(vid, "vs_", "vector store", "vector_store_id")
        store, policy = await self._scoped(ex, call)
        await self.gw.write_ahead(ex)
        async with store.connection() as conn, conn.transaction():
            chunks = await conn.execute(
                "DELETE FROM chunks WHERE store_id = %s AND tenant = %s", (row, call.tenant)
            )
            cur = await conn.execute(
                "DELETE FROM vector_stores WHERE id = %s AND tenant = %s AND use_case = %s",
                (row, call.tenant, policy.name),
            )
            if cur.rowcount == 0:
                raise GatewayError(
                    404, "not_found", "no such vector store for this tenant and use case", "vector_store_id"
                )
        ex.counts = {"vector_stores": 1, "chunks": chunks.rowcount}
        return 200, {"id": vid, "object": "vector_store.deleted", "deleted": True}

    # -- a store's files ----------------------------------------------------------------------
    async def store_file_add(self, ex: VectorExchange, call: Call, vid: str) -> tuple[int, dict[str, Any]]:
        body: VectorStoreFileCreate = _parse(VectorStoreFileCreate, _json(call.raw))
        call.sovereign = body.sovereign
        vrow = parse_id(vid, "vs_", "vector store", "vector_store_id")
        frow = parse_id(body.file_id, "file-", "file", "file_id")
        size, overlap = chunk_sizes(body.chunking_strategy)
        policy = await self.policy(call, ex)
        upstream = self.embedding_upstream(policy, ex)
        store = await self.memory.store()
        data_key = await self.keys(ex, call)
        await self._store_row(store, call.tenant, policy.name, vrow)
        async with store.connection() as conn:
            cur = await conn.execute(
                "SELECT id, text, sealed, pseudonym, pseudonym_version FROM files "
                "WHERE id = %s AND tenant = %s "
                "AND use_case = %s AND expires_at > now()",
                (frow, call.tenant, policy.name),
            )
            frec = await cur.fetchone()
        if frec is None or frec["text"] is None:
            raise GatewayError(404, "not_found", "no such file for this tenant and use case", "file_id")
        owner_p = Pseudonym(frec["pseudonym"], frec["pseudonym_version"]) if frec["pseudonym"] else None
        originals = unseal(data_key, frec["id"], frec["sealed"])
        await self.gw.write_ahead(ex)
        attributes, attr_originals = self.attributes(call, ex, body.attributes, data_key)
        pieces = chunks_of(frec["text"], size, overlap)
        vectors = await embed_upstream(self.gw, upstream, pieces)
        days = policy.memory.retention_days if policy.memory else None
        async with store.connection() as conn:
            await conn.execute("DELETE FROM chunks WHERE store_id = %s AND file_id = %s", (vrow, frow))
        for piece, vector in zip(pieces, vectors, strict=True):
            mine = {t: v for t, v in originals.items() if t in piece}
            await store.add_chunk(
                Owner(call.tenant, policy.name, owner_p), piece, vector, {**mine, **attr_originals}, data_key,
                days, store_id=vrow, file_id=frow, attributes=attributes,
            )  # fmt: skip
        async with store.connection() as conn:
            await conn.execute(
                "UPDATE vector_stores SET expires_at = "
                "greatest(expires_at, now() + make_interval(days => %s)) "
                "WHERE id = %s",
                (days, vrow),
            )
        ex.counts = {"chunks": len(pieces)}
        return 200, await self._store_file(
            store, call.tenant, policy.name, vrow, frow, body.chunking_strategy
        )

    def attributes(
        self,
        call: Call,
        ex: VectorExchange,
        given: dict[str, str | bool | int | float] | None,
        data_key: bytes,
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The attributes to store: strings tokenised (the same tokens as a filter's values);
        a number of more than MAX_NUMBER_DIGITS digits (an id, a date 19610412, a phone number
        written as digits) or whose text the PHI filter changes is refused: send it as a string."""
        if given is None:
            return None, {}
        keys = sorted(given)
        # a key is client text too, stored and answered as given: one the filter would change (a
        # name, a date, an id written as a key) is refused, by position, never echoed
        checked_keys, _ = self.filter(call, ex, [k.replace("_", " ") for k in keys], data_key)
        for i, (k, after) in enumerate(zip(keys, checked_keys, strict=True)):
            if after != k.replace("_", " "):
                raise GatewayError(
                    422, "invalid_field",
                    f"attributes: key {i + 1} (in sorted order) looks like personal data (a name, a "
                    "date, an id); name attributes by what they are (e.g. topic, visit_type), never "
                    "by a patient's data",
                    "attributes",
                )  # fmt: skip
        strings = [k for k in keys if isinstance(given[k], str)]
        numbers = [k for k in keys if isinstance(given[k], float | int) and not isinstance(given[k], bool)]
        texts, originals = (
            self.filter(call, ex, [str(given[k]) for k in strings], data_key) if strings else ([], {})
        )
        out: dict[str, Any] = dict(given)
        out.update(zip(strings, texts, strict=True))
        if numbers:
            shown = [_number_text(given[k]) for k in numbers]
            checked, _ = self.filter(call, ex, shown, data_key)
            for k, before, after in zip(numbers, shown, checked, strict=True):
                if before != after or sum(c.isdigit() for c in before) > MAX_NUMBER_DIGITS:
                    raise GatewayError(
                        422, "invalid_field",
                        "attributes: a number looks like personal data (a phone number, a date, an id); "
                        "send it as a string, which is tokenised",
                        "attributes",
                    )  # fmt: skip
                del k
        return out, originals

    async def _store_file(
        self, store: Store, tenant: str, use_case: str, vrow: uuid.UUID, frow: uuid.UUID,
        chunking: ChunkingAuto | ChunkingStatic | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        async with store.connection() as conn:
            cur = await conn.execute(
                "SELECT id, attributes, sealed, octet_length(text) AS size, created_at FROM chunks "
                "WHERE store_id = %s AND file_id = %s AND tenant = %s AND use_case = %s "
                "AND expires_at > now() "
                "ORDER BY created_at, id",
                (vrow, frow, tenant, use_case),
            )
            rows = await cur.fetchall()
        if not rows:
            raise GatewayError(404, "not_found", "no such file in this vector store", "file_id")
        first = rows[0]
        out: dict[str, Any] = {
            "id": file_id(frow), "object": "vector_store.file", "usage_bytes": sum(r["size"] for r in rows),
            "created_at": int(first["created_at"].timestamp()), "vector_store_id": store_id(vrow),
            "status": "completed", "last_error": None,
            # as stored (tokenised): these answers name no patient (no sovereign.context), so they
            # restore nothing; a search for the patient answers them restored
            "attributes": first["attributes"],
        }  # fmt: skip
        if chunking is not None:
            out["chunking_strategy"] = chunking.model_dump()
        return out

    async def store_file_get(
        self, ex: VectorExchange, call: Call, vid: str, fid: str
    ) -> tuple[int, dict[str, Any]]:
        vrow = parse_id(vid, "vs_", "vector store", "vector_store_id")
        frow = parse_id(fid, "file-", "file", "file_id")
        store, policy = await self._scoped(ex, call)  # its keys too (fail closed, as every call)
        return 200, await self._store_file(store, call.tenant, policy.name, vrow, frow)

    async def store_file_list(self, ex: VectorExchange, call: Call, vid: str) -> tuple[int, dict[str, Any]]:
        vrow = parse_id(vid, "vs_", "vector store", "vector_store_id")
        paging = _paging(call.request, "file-", "file")
        status = call.request.query_params.get("filter")
        if status is not None and status not in FILE_STATUSES:
            raise GatewayError(422, "invalid_field", f"filter: one of {', '.join(FILE_STATUSES)}", "filter")
        store, policy = await self._scoped(ex, call)  # its keys too (fail closed, as every call)
        await self._store_row(store, call.tenant, policy.name, vrow)
        frows: list[uuid.UUID] = []
        more = False
        if status in (None, "completed"):  # a file is attached whole, in one call: never in progress
            items = sql.SQL(
                "SELECT file_id AS id, min(created_at) AS t FROM chunks WHERE store_id = %(store)s "
                "AND tenant = %(tenant)s AND use_case = %(use_case)s AND expires_at > now() "
                "AND file_id IS NOT NULL GROUP BY file_id"
            )
            params = {"store": vrow, "tenant": call.tenant, "use_case": policy.name}
            async with store.connection() as conn:
                frows, more = await _page_ids(conn, items, params, paging)
        data = [await self._store_file(store, call.tenant, policy.name, vrow, f) for f in frows]
        ex.counts = {"files": len(data)}
        return 200, _page(data, more)

    async def store_file_delete(
        self, ex: VectorExchange, call: Call, vid: str, fid: str
    ) -> tuple[int, dict[str, Any]]:
        vrow = parse_id(vid, "vs_", "vector store", "vector_store_id")
        frow = parse_id(fid, "file-", "file", "file_id")
        store, policy = await self._scoped(ex, call)
        await self.gw.write_ahead(ex)
        async with store.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM chunks WHERE store_id = %s AND file_id = %s AND tenant = %s AND use_case = %s",
                (vrow, frow, call.tenant, policy.name),
            )
        if cur.rowcount == 0:
            raise GatewayError(404, "not_found", "no such file in this vector store", "file_id")
        ex.counts = {"chunks": cur.rowcount}
        return 200, {"id": fid, "object": "vector_store.file.deleted", "deleted": True}

    # -- search -------------------------------------------------------------------------------
    async def search(self, ex: VectorExchange, call: Call, vid: str) -> tuple[int, dict[str, Any]]:
        body: SearchRequest = _parse(SearchRequest, _json(call.raw))
        call.sovereign = body.sovereign
        vrow = parse_id(vid, "vs_", "vector store", "vector_store_id")
        policy = await self.policy(call, ex)
        if call.sovereign is None or call.sovereign.context is None:
            raise GatewayError(
                422, "context_required",
                f"sovereign.context: use case {policy.name} stores patients' memory; a search names the "
                "patient (kvnr, customer_id or email) and finds that patient's items only",
                "sovereign.context",
            )  # fmt: skip
        upstream = self.embedding_upstream(policy, ex)
        store = await self.memory.store()
        data_key = await self.keys(ex, call)
        subject = await self.subject(call)
        await self._store_row(store, call.tenant, policy.name, vrow)
        await self.gw.write_ahead(ex)
        queries = [body.query] if isinstance(body.query, str) else list(body.query)
        tokenised, _ = self.filter(call, ex, [" ".join(queries)], data_key)
        condition = self.condition(call, ex, body.filters, data_key) if body.filters is not None else None
        [vector] = await embed_upstream(self.gw, upstream, tokenised)
        rows = await store.search(
            call.tenant, vector, body.max_num_results, use_case=policy.name, pseudonym=subject,
            store_id=vrow, include_shared=True, condition=condition,
        )  # fmt: skip
        threshold = body.ranking_options.score_threshold if body.ranking_options else None
        names: dict[uuid.UUID, str] = {}
        file_rows = {r["file_id"] for r in rows if r["file_id"] is not None}
        if file_rows:
            async with store.connection() as conn:
                cur = await conn.execute(
                    "SELECT id, filename FROM files WHERE id = ANY(%s)", (list(file_rows),)
                )
                names = {r["id"]: r["filename"] for r in await cur.fetchall()}
        data = []
        for r in rows:
            score = max(0.0, min(1.0, 1.0 - float(r["distance"])))
            if threshold is not None and score < threshold:
                continue
            originals = unseal(data_key, r["id"], r["sealed"])
            text = restore(r["text"], originals)[0] if originals else r["text"]
            data.append({
                "file_id": file_id(r["file_id"]) if r["file_id"] else None,
                "filename": names.get(r["file_id"], ""), "score": score,
                "attributes": _restored_attributes(r["attributes"], originals),
                "content": [{"type": "text", "text": text}],
            })  # fmt: skip
        ex.counts = {"queries": len(queries), "results": len(data)}
        return 200, {
            "object": "vector_store.search_results.page", "search_query": queries, "data": data,
            "has_more": False, "next_page": None,
        }  # fmt: skip

    def condition(
        self, call: Call, ex: VectorExchange, filters: Comparison | Compound, data_key: bytes
    ) -> tuple[sql.Composable, list[Any]]:
        """The SQL of OpenAI's attribute filters over ``chunks.attributes`` (jsonb): string values
        tokenised as stored, compared as jsonb (eq/ne any type; gt.. on numbers and strings; a
        chunk without the key matches none)."""
        if isinstance(filters, Compound):
            parts = [self.condition(call, ex, f, data_key) for f in filters.filters]
            joined = sql.SQL(" AND " if filters.type == "and" else " OR ").join(p[0] for p in parts)
            return sql.SQL("({})").format(joined), [x for p in parts for x in p[1]]
        value: Any = filters.value
        if isinstance(value, str):
            [value], _ = self.filter(call, ex, [value], data_key)
        op = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[filters.type]
        # a chunk without the key matches no comparison, ne included (NULL is not true)
        clause = sql.SQL("(attributes -> %s " + op + " %s)")
        return clause, [filters.key, Jsonb(value)]


def _number_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _restored_attributes(stored: dict[str, Any] | None, originals: dict[str, str]) -> dict[str, Any] | None:
    if stored is None:
        return None
    return {k: restore(v, originals)[0] if isinstance(v, str) and originals else v for k, v in stored.items()}


@dataclass(frozen=True, slots=True)
class Paging:
    """A list call's page, as OpenAI's list endpoints take it: at most *limit* items in *order*
    (of creation; newest first by default), after the item *after* and/or before the item
    *before* (both: the items between them; the SDK's auto-paging adds `after` to a page
    asked with `before`). With `before` alone, the page is the one that precedes it."""

    limit: int
    descending: bool
    after: uuid.UUID | None
    before: uuid.UUID | None

    @property
    def backwards(self) -> bool:
        return self.before is not None and self.after is None


def _paging(request: Request, prefix: str, what: str) -> Paging:
    query = request.query_params
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise GatewayError(422, "invalid_field", "limit: a number from 1 to 100", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(422, "invalid_field", "order: 'asc' or 'desc'", "order")
    after, before = (
        parse_id(v, prefix, what, name) if (v := query.get(name)) is not None else None
        for name in ("after", "before")
    )
    return Paging(int(raw), order == "desc", after, before)


async def _page_ids(
    conn: Any, items: sql.Composable, params: dict[str, Any], paging: Paging
) -> tuple[list[uuid.UUID], bool]:
    """One page of the ids of *items* (a query whose rows have ``id`` and ``t``, the creation
    time; ties broken by id) by keyset: (the page's ids in the asked order, whether more lie
    beyond it). A cursor's position is read first, so the page is cut at it even if the item
    goes meanwhile; a cursor that is not in the list is 404, naming the parameter (delete
    while iterating over a list you collected, not over the SDK's pages)."""
    where: list[sql.Composable] = []
    args = dict(params)
    for name, cursor, later in (("after", paging.after, True), ("before", paging.before, False)):
        if cursor is None:
            continue
        cur = await conn.execute(
            sql.SQL("WITH items AS ({}) SELECT t FROM items WHERE id = %(c)s").format(items),
            {**params, "c": cursor},
        )
        row = await cur.fetchone()
        if row is None:
            raise GatewayError(404, "not_found", f"{name}: no such item in this list", name)
        # "after" in newest-first order is older: (t, id) below the cursor's
        op = "<" if later == paging.descending else ">"
        where.append(sql.SQL(f"(t, id) {op} (%({name}_t)s, %({name}_id)s)"))  # fixed names only
        args[f"{name}_t"], args[f"{name}_id"] = row["t"], cursor
    desc = paging.descending != paging.backwards
    query = sql.SQL(
        "WITH items AS ({items}) SELECT id FROM items WHERE {where} ORDER BY t {way}, id {way} LIMIT %(n)s"
    ).format(
        items=items, where=sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE"),
        way=sql.SQL("DESC" if desc else "ASC"),
    )  # fmt: skip
    args["n"] = paging.limit + 1
    ids = [r["id"] for r in await (await conn.execute(query, args)).fetchall()]
    more = len(ids) > paging.limit
    ids = ids[: paging.limit]
    if paging.backwards:
        ids.reverse()
    return ids, more


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    }  # fmt: skip


def install(app: FastAPI, gw: Gateway, memory: Memory) -> VectorAPI:
    """Register the files and vector-store endpoints on *app*."""
    api = VectorAPI(gw, memory)

    @app.post("/v1/files")
    async def files_create(request: Request) -> Response:
        return await api.run(request, "file_upload", api.file_upload, multipart=True)

    @app.get("/v1/files/{fid}")
    async def files_get(request: Request, fid: str) -> Response:
        return await api.run(request, "file_get", lambda ex, c: api.file_get(ex, c, fid))

    @app.get("/v1/files/{fid}/content")
    async def files_content(request: Request, fid: str) -> Response:
        return await api.run(request, "file_content", lambda ex, c: api.file_content(ex, c, fid))

    @app.delete("/v1/files/{fid}")
    async def files_delete(request: Request, fid: str) -> Response:
        return await api.run(request, "file_delete", lambda ex, c: api.file_delete(ex, c, fid))

    @app.post("/v1/vector_stores")
    async def stores_create(request: Request) -> Response:
        return await api.run(request, "vector_store_create", api.store_create)

    @app.get("/v1/vector_stores")
    async def stores_list(request: Request) -> Response:
        return await api.run(request, "vector_store_list", api.store_list)

    @app.get("/v1/vector_stores/{vid}")
    async def stores_get(request: Request, vid: str) -> Response:
        return await api.run(request, "vector_store_get", lambda ex, c: api.store_get(ex, c, vid))

    @app.delete("/v1/vector_stores/{vid}")
    async def stores_delete(request: Request, vid: str) -> Response:
        return await api.run(request, "vector_store_delete", lambda ex, c: api.store_delete(ex, c, vid))

    @app.post("/v1/vector_stores/{vid}/files")
    async def store_files_add(request: Request, vid: str) -> Response:
        return await api.run(request, "vector_store_file_add", lambda ex, c: api.store_file_add(ex, c, vid))

    @app.get("/v1/vector_stores/{vid}/files")
    async def store_files_list(request: Request, vid: str) -> Response:
        return await api.run(request, "vector_store_file_list", lambda ex, c: api.store_file_list(ex, c, vid))

    @app.get("/v1/vector_stores/{vid}/files/{fid}")
    async def store_files_get(request: Request, vid: str, fid: str) -> Response:
        return await api.run(
            request, "vector_store_file_get", lambda ex, c: api.store_file_get(ex, c, vid, fid)
        )

    @app.delete("/v1/vector_stores/{vid}/files/{fid}")
    async def store_files_delete(request: Request, vid: str, fid: str) -> Response:
        return await api.run(
            request, "vector_store_file_delete", lambda ex, c: api.store_file_delete(ex, c, vid, fid)
        )

    @app.post("/v1/vector_stores/{vid}/search")
    async def stores_search(request: Request, vid: str) -> Response:
        return await api.run(request, "search", lambda ex, c: api.search(ex, c, vid))

    return api
