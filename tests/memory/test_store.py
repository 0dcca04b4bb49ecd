"""The store against a real PostgreSQL 15 + pgvector 0.8.0 and a real OpenBao: retention (an
expired row is never returned and the purge removes it; no row without an expiry), search
(HNSW and exact agree on a small set), pseudonyms (tenant-scoped, stable, not the identifier;
OpenBao down fails closed, nothing stored)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.kms import KeyProvider, KeyUnavailable
from gateway.memory.pseudonym import NoIdentifier, memory_key, pseudonym
from gateway.memory.store import Owner, Pseudonym, Store, StoreError, seal, unseal
from gateway.phi.context import PatientContext
from gateway.settings import OpenBaoSettings
from tests.memory.conftest import Postgres
from tests.memory.test_rights import DIMS, unit_vector
from tests.support import Bao, free_port


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def provider(address: str, token: str, tmp: Path) -> KeyProvider:
    return KeyProvider(OpenBaoSettings(address=address, token=token, timeout_s=2), tmp / "wrapped")


async def count(store: Store, table: str, tenant: str) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table} WHERE tenant = %s", (tenant,))  # noqa: S608
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


def test_retention_expired_rows_never_returned_and_purged(
    postgres: Postgres, loop: asyncio.AbstractEventLoop
) -> None:
    tenant = "retention-t"
    owner = Owner(tenant, "patient-support", Pseudonym("ab" * 32, 1))

    async def run() -> None:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            key = b"k" * 32
            kept = await store.add_chunk(owner, "kept text", unit_vector(10), {}, key, 30)
            gone = await store.add_chunk(owner, "expired text", unit_vector(11), {}, key, 30)
            # age the second row past its retention (as time would)
            async with store.connection() as conn:
                await conn.execute(
                    "UPDATE chunks SET created_at = now() - interval '31 days', "
                    "expires_at = now() - interval '1 day' WHERE id = %s",
                    (gone,),
                )
            for exact in (False, True):
                hits = await store.search(tenant, unit_vector(11), 5, exact=exact)
                assert [h["id"] for h in hits] == [kept]  # the nearest (itself) is expired: not returned
            assert await count(store, "chunks", tenant) == 2
            purged = await store.purge_expired()
            assert purged["chunks"] == 1
            assert await count(store, "chunks", tenant) == 1
            # no row without an expiry: the store refuses it, the database too
            with pytest.raises(StoreError, match="retention"):
                await store.add_chunk(owner, "x", unit_vector(12), {}, key, None)
            with pytest.raises(StoreError, match="retention"):
                await store.add_chunk(owner, "x", unit_vector(12), {}, key, 0)
            async with store.connection() as conn:
                with pytest.raises(Exception, match="expires_at"):
                    await conn.execute(
                        "INSERT INTO chunks (id, text, embedding, tenant, use_case, expires_at) "
                        "VALUES (gen_random_uuid(), 'x', %s, %s, 'u', NULL)",
                        (str(unit_vector(13)), tenant),
                    )
        finally:
            await store.close()

    loop.run_until_complete(run())


def test_search_hnsw_matches_exact_and_filters(postgres: Postgres, loop: asyncio.AbstractEventLoop) -> None:
    tenant = "search-t"
    a = Owner(tenant, "patient-support", Pseudonym("cd" * 32, 1))
    b = Owner(tenant, "patient-support", Pseudonym("ef" * 32, 1))
    other = Owner("search-other", "patient-support", Pseudonym("cd" * 32, 1))

    async def run() -> None:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            ids = {}
            for i in range(20):
                owner = a if i % 2 else b
                ids[i] = await store.add_chunk(owner, f"t{i}", unit_vector(100 + i), {}, b"k" * 32, 30)
            await store.add_chunk(other, "other tenant", unit_vector(105), {}, b"k" * 32, 30)
            q = unit_vector(105)
            hnsw = await store.search(tenant, q, 5)
            exact = await store.search(tenant, q, 5, exact=True)
            assert [h["id"] for h in hnsw] == [h["id"] for h in exact]
            assert hnsw[0]["id"] == ids[5]  # itself first; the other tenant's copy never
            only_a = await store.search(tenant, q, 20, pseudonym=a.pseudonym)
            assert {h["id"] for h in only_a} == {ids[i] for i in range(1, 20, 2)}
        finally:
            await store.close()

    loop.run_until_complete(run())


def test_pseudonym_tenant_scoped_stable_not_the_identifier(
    bao: Bao, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    keys = provider(bao.address, bao.gateway_token, tmp_path)
    erika = PatientContext(name="Erika Mustermann", kvnr="A123456780", customer_id="100234")

    async def run() -> list[Pseudonym]:
        return [
            await pseudonym(keys, "tenant-a", erika),
            await pseudonym(keys, "tenant-a", erika.model_copy()),
            await pseudonym(keys, "tenant-b", erika),
            await pseudonym(keys, "tenant-a", PatientContext(customer_id="100234")),
        ]

    same_a, again_a, in_b, by_customer = loop.run_until_complete(run())
    assert same_a == again_a  # stable within the tenant
    assert same_a.hex != in_b.hex  # unrelated across tenants
    assert by_customer.hex != same_a.hex  # kvnr wins over customer_id when both are present
    assert len(same_a.hex) == 64 and int(same_a.hex, 16) >= 0 and same_a.version == 1
    for p in (same_a, in_b, by_customer):
        assert "A123456780".lower() not in p.hex and "100234" not in p.hex
    with pytest.raises(NoIdentifier, match="kvnr, customer_id or email"):
        loop.run_until_complete(pseudonym(keys, "tenant-a", PatientContext(name="Erika Mustermann")))


def test_pseudonym_openbao_down_fails_closed(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    keys = provider(f"http://127.0.0.1:{free_port()}", "nothing-listens", tmp_path)
    with pytest.raises(KeyUnavailable, match="unreachable"):
        loop.run_until_complete(pseudonym(keys, "tenant-a", PatientContext(customer_id="100234")))


def test_memory_key_is_every_pods_and_survives_a_data_key_rotation(
    bao: Bao, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    # two gateway pods: each keeps its own wrapped data keys (a StatefulSet volume each)
    pod0 = provider(bao.address, bao.gateway_token, tmp_path / "pod-0")
    pod1 = provider(bao.address, bao.gateway_token, tmp_path / "pod-1")
    row = uuid.uuid4()

    async def run() -> None:
        assert await pod0.tenant_key("tenant-a") != await pod1.tenant_key("tenant-a")  # per pod
        m0, m1 = await memory_key(pod0, "tenant-a"), await memory_key(pod1, "tenant-a")
        assert m0 == m1 and len(m0) == 32
        assert await memory_key(pod0, "tenant-b") != m0  # tenant-scoped
        assert m0 not in (await pod0.tenant_key("tenant-a"), await pod1.tenant_key("tenant-a"))
        # what one pod sealed, the other opens
        sealed = seal(m0, row, {"[NAME_1]": "Erika Mustermann"})
        assert unseal(m1, row, sealed) == {"[NAME_1]": "Erika Mustermann"}
        # `sovereign gateway tenant-key rotate` gives new data keys, not a new memory key
        pod0.rotate_tenant_key("tenant-a")
        pod0.forget()
        assert await memory_key(pod0, "tenant-a") == m0

    loop.run_until_complete(run())


def test_a_schema_the_database_refuses_is_store_unavailable(
    postgres: Postgres, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused CREATE (no rights, a full disk) is the gateway's 503 store_unavailable (its type
    only: the driver's message may quote the DSN), not an unhandled error per request."""
    import psycopg

    async def refused(self: Store) -> None:
        raise psycopg.errors.InsufficientPrivilege("permission denied for schema public")

    monkeypatch.setattr(Store, "migrate", refused)
    store = Store(postgres.dsn, DIMS)
    with pytest.raises(StoreError, match=r"schema could not be made \(InsufficientPrivilege\)") as err:
        loop.run_until_complete(store.open())
    assert "permission denied" not in str(err.value) and postgres.dsn not in str(err.value)
    loop.run_until_complete(store.close())


def test_opening_a_current_store_takes_no_table_lock(
    postgres: Postgres, loop: asyncio.AbstractEventLoop
) -> None:
    """A second process opening the store while another writes (a gateway's purge, a search)
    must not queue an ALTER behind it: re-running the schema's ALTERs on every open took ACCESS
    EXCLUSIVE locks and deadlocked with another gateway's traffic in a full test run."""

    async def run() -> list[str]:
        first = Store(postgres.dsn, DIMS)
        await first.open()  # the schema is current from here on
        second = Store(postgres.dsn, DIMS)
        try:
            async with first.connection() as conn, conn.transaction():
                await conn.execute("LOCK TABLE chunks IN ROW EXCLUSIVE MODE")  # a writer, mid-transaction
                opening = asyncio.ensure_future(second.open())
                waiting: list[str] = []
                while not opening.done():  # an open that waits on the lock never finishes: caught below
                    cur = await conn.execute(
                        "SELECT mode FROM pg_locks WHERE NOT granted AND relation = 'chunks'::regclass"
                    )
                    waiting += [r["mode"] for r in await cur.fetchall()]
                    if waiting:
                        opening.cancel()
                        break
                    await asyncio.sleep(0.01)
                if not opening.cancelled():
                    await opening
            return waiting
        finally:
            await second.close()
            await first.close()

    assert loop.run_until_complete(run()) == []
