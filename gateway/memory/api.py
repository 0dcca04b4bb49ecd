"""The data subject's rights over HTTP: POST /v1/sovereign/data_subjects/erase and /export.

Body: ``{"sovereign": {"use_case"?: str, "context": PatientContext}}``; the context must name
the patient by ``kvnr``, ``customer_id`` or ``email`` (gateway/memory/pseudonym.py). Any client
key of the tenant may ask (the shop is the controller; docs/memory.md). The order of work is
chat's (gateway/app.py Gateway.chat): API key -> admission -> body limits -> schema (422 names
the field, never a value) -> use case, if named -> store -> keys from OpenBao (fail closed, 503)
-> the pseudonyms of every identifier the context names (OpenBao transit HMAC) -> write-ahead
audit record -> the erasure or export -> the final audit record, then the answer. The records
carry ``operation`` (``erasure`` or ``export``) and the rows by table: counts only, never a
pseudonym or a value.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

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
from gateway.kms import KeyUnavailable
from gateway.memory import rights
from gateway.memory.pseudonym import NoIdentifier, memory_key, pseudonyms
from gateway.memory.store import Store, StoreError
from gateway.phi.context import PatientContext

log = logging.getLogger("sovereign.memory")

ERASE_PATH = "/v1/sovereign/data_subjects/erase"
EXPORT_PATH = "/v1/sovereign/data_subjects/export"


class SubjectSovereign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    use_case: str | None = Field(default=None, description="The use case the request is made under (audit).")
    context: PatientContext = Field(description="The patient: kvnr, customer_id or email identifies them.")


class SubjectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sovereign: SubjectSovereign


@dataclass
class RightsExchange(Exchange):
    """A rights request's audit records: the operation and the rows it touched, by table."""

    operation: str = "erasure"
    rows: dict[str, int] = field(default_factory=dict)

    def admission(self) -> dict[str, Any]:
        return {**super().admission(), "operation": self.operation}

    def record(self, outcome: str, status: int) -> dict[str, Any]:
        return {**super().record(outcome, status), "rows": dict(self.rows)}


class Memory:
    """The gateway's store, opened at first use (a store that is down does not stop the gateway
    from serving chat; rights requests answer 503 store_unavailable until it answers)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._store: Store | None = None
        self._lock = asyncio.Lock()

    async def store(self) -> Store:
        if self._store is not None:
            return self._store
        settings = self.gw.settings.memory
        unavailable = GatewayError(
            503, "store_unavailable", "the memory store is not available; nothing was changed. Retry later."
        )
        async with self._lock:
            if self._store is None:
                try:
                    dsn = settings.dsn()
                except OSError:
                    log.error("memory.dsn_file cannot be read")
                    raise unavailable from None
                if dsn is None:
                    raise GatewayError(
                        503, "store_unavailable", "this gateway has no memory store (setting memory.dsn_file)"
                    )
                store = Store(dsn, settings.dimensions, max_size=settings.pool_max)
                try:
                    await store.open(settings.connect_timeout_s)
                except StoreError as exc:
                    log.error("memory store: %s", exc)
                    await store.close()
                    raise unavailable from None
                self._store = store
        return self._store

    async def purge_forever(self) -> None:
        """Retention: delete expired rows every memory.purge_interval_s (the lifespan's task;
        a store that is down is tried again at the next period). Counts are logged, nothing else."""
        settings = self.gw.settings.memory
        if settings.dsn_file is None:
            return
        while True:
            await asyncio.sleep(settings.purge_interval_s)
            try:
                store = await self.store()
                purged = await store.purge_expired()
            except GatewayError:
                continue  # logged by store()
            except Exception as exc:  # the database's messages may quote values: the type only
                log.error("memory purge failed: %s", type(exc).__name__)
                continue
            if any(purged.values()):
                log.info("memory purge: expired rows deleted %s", purged)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    # -- the endpoints --------------------------------------------------------------------
    def parse(self, raw: bytes) -> SubjectRequest:
        return parse_body(raw, SubjectRequest)

    async def handle(self, request: Request, operation: str) -> Response:
        request_id, replaced = request_id_from(request.headers)
        ex = RightsExchange(request_id=request_id, request_id_replaced=replaced, operation=operation)
        return await self.gw.serve(request, ex, operation, self._handle)

    async def _handle(self, request: Request, ex: RightsExchange, admitted: Admitted) -> Response:
        gw, key, operation = self.gw, admitted.key, ex.operation
        request_id = ex.request_id
        body = self.parse(admitted.raw).sovereign
        if body.use_case is not None:
            policy = gw.named_policy(None, body.use_case)
            ex.use_case, ex.policy = policy.name, policy
        store = await self.store()
        gw.recheck_audit()
        try:
            await gw.bounded(gw.keys.refresh_audit_key(), float("inf"))
            data_key = await gw.bounded(memory_key(gw.keys, key.tenant), float("inf"))
            ex.audit_key = gw.keys.current()
            # every identifier the request names: rows stored under any of them are hers
            subject = await gw.bounded(pseudonyms(gw.keys, key.tenant, body.context), float("inf"))
        except NoIdentifier as exc:
            raise GatewayError(422, "invalid_field", str(exc), "sovereign.context") from None
        except KeyUnavailable as exc:
            log.error("%s %s refused, keys unavailable: %s", operation, request_id, exc)
            raise GatewayError(
                503,
                "key_unavailable",
                "the key service is unavailable; nothing was changed. Retry later.",
            ) from None
        await gw.write_ahead(ex)
        try:
            if operation == "erasure":
                erased = await rights.erase(
                    store, key.tenant, subject, gw.settings.memory.erasure_work_mem_mb
                )
                ex.rows = erased.rows
                answer: dict[str, Any] = {
                    "object": "sovereign.data_subject.erasure",
                    "deleted": erased.rows,
                    "total": erased.total,
                }
            else:
                exported = await rights.export(store, key.tenant, subject, data_key)
                ex.rows = {table: len(items) for table, items in exported.items()}
                answer = {"object": "sovereign.data_subject.export", **exported}
        except Exception as exc:  # the database's messages may quote values: the type only
            log.error("%s %s failed in the store: %s", operation, request_id, type(exc).__name__)
            raise GatewayError(
                503, "store_unavailable",
                f"the memory store failed during the {operation}; retry it (it is idempotent)",
            ) from None  # fmt: skip
        if await gw.write_audit(ex, "ok", 200, answer_waits=True) is None:
            raise RecordNotWritten(
                f"the {operation} was done, and its audit record could not be written; retry it "
                "(it is idempotent) once the audit trail is writable"
            )
        return JSONResponse(answer, headers=ex.headers)


def install(app: FastAPI, gw: Gateway) -> Memory:
    """Register the endpoints on *app*; the returned Memory is closed by the app's lifespan."""
    memory = Memory(gw)

    @app.post(ERASE_PATH)
    async def erase(request: Request) -> Response:
        return await memory.handle(request, "erasure")

    @app.post(EXPORT_PATH)
    async def export(request: Request) -> Response:
        return await memory.handle(request, "export")

    return memory
