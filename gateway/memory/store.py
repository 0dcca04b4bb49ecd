"""The store's schema, writes, search and retention, over an async psycopg pool (docs/memory.md).

Every row carries its tenant, use case, the patient's pseudonym (gateway/memory/pseudonym.py;
NULL for catalogue items) and ``expires_at`` (NOT NULL: created_at + the use case's
``memory.retention_days``); searches never return an expired row and :meth:`Store.purge_expired`
deletes them. Text columns hold TOKENISED text only (the PHI filter's output under the tenant's
data key); the originals needed to restore a text (token -> value, gateway/phi/tokenise.py
TokenMap.originals) are sealed with AES-GCM under a key derived by HKDF from the tenant's data
key, with the row's id as associated data (a sealed blob moved to another row does not open).

Columns that hold patient-derived values have statistics target 0: ANALYZE never copies their
values into pg_statistic (from where an erasure could not remove them).

pgvector 0.8.0 (github.com/pgvector/pgvector, README at v0.8.0): ``vector(n)`` columns, HNSW
indexes with ``vector_cosine_ops`` and the ``<=>`` cosine distance operator; filtered HNSW
searches use ``hnsw.iterative_scan`` (new in 0.8.0) so a filter does not starve the top k.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.errors import SovereignError

SCHEMA_VERSION = 3
#: the tables holding a data subject's rows, children first (rights.py erases in this order)
SUBJECT_TABLES = ("chunks", "files", "vector_stores")
_SEAL_INFO = b"sovereign-llm memory seal v1"


class StoreError(SovereignError, RuntimeError):
    """The store refused a write, or is not usable (the message never holds a stored value)."""


class StoreUnavailable(StoreError):
    """No store configured, or the database did not answer: 503 store_unavailable."""


@dataclass(frozen=True)
class Pseudonym:
    """A tenant-scoped pseudonym: the hex of the OpenBao transit HMAC and its key version."""

    hex: str
    version: int


@dataclass(frozen=True)
class Owner:
    """Whose a row is: tenant, use case, and the patient's pseudonym (None: catalogue item)."""

    tenant: str
    use_case: str
    pseudonym: Pseudonym | None


# -- sealing ------------------------------------------------------------------------------
def seal_key(data_key: bytes) -> bytes:
    """The tenant's sealing key: HKDF-SHA256 of its data key (never the data key itself)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(data_key)


def seal(data_key: bytes, row_id: uuid.UUID, originals: dict[str, str]) -> bytes | None:
    """nonce (12 bytes) || AES-256-GCM(originals as JSON), AAD = the row id; None for no originals."""
    if not originals:
        return None
    nonce = os.urandom(12)
    return nonce + AESGCM(seal_key(data_key)).encrypt(nonce, json.dumps(originals).encode(), row_id.bytes)


def unseal(data_key: bytes, row_id: uuid.UUID, sealed: bytes | None) -> dict[str, str]:
    if not sealed:
        return {}
    plain = AESGCM(seal_key(data_key)).decrypt(sealed[:12], sealed[12:], row_id.bytes)
    result: dict[str, str] = json.loads(plain)
    return result


# -- schema -------------------------------------------------------------------------------
def schema_sql(dimensions: int) -> list[str]:
    """The statements of schema version 2 (1 plus ``files.text`` and ``chunks.attributes``, the
    vector-store API's: gateway/memory/vector_api.py); each is idempotent."""
    owner_cols = """
        tenant text NOT NULL,
        use_case text NOT NULL,
        pseudonym text NULL,
        pseudonym_version integer NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        CHECK (expires_at > created_at),
        CHECK ((pseudonym IS NULL) = (pseudonym_version IS NULL))
    """
    statements = [
        "CREATE TABLE IF NOT EXISTS memory_schema (version integer PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now())",
        f"CREATE TABLE IF NOT EXISTS vector_stores (id uuid PRIMARY KEY, name text NOT NULL, {owner_cols})",
        f"""CREATE TABLE IF NOT EXISTS files (
            id uuid PRIMARY KEY, filename text NOT NULL, purpose text NOT NULL, bytes integer NOT NULL,
            sealed bytea NULL, {owner_cols})""",
        f"""CREATE TABLE IF NOT EXISTS chunks (
            id uuid PRIMARY KEY,
            store_id uuid NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
            file_id uuid NULL REFERENCES files (id) ON DELETE CASCADE,
            text text NOT NULL, sealed bytea NULL, embedding vector({dimensions}) NOT NULL, {owner_cols})""",
        # erased data subjects: sha256 of the pseudonym's hex, never the pseudonym itself
        """CREATE TABLE IF NOT EXISTS erasures (
            tenant text NOT NULL, digest bytea NOT NULL, erased_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant, digest))""",
        # version 2: a file's tokenised text (the vector-store API chunks it when it is added to a
        # store), a chunk's attributes (tokenised strings, numbers, booleans; OpenAI's attributes)
        "ALTER TABLE files ADD COLUMN IF NOT EXISTS text text NULL",
        "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS attributes jsonb NULL",
        # a use case's product catalogue (no patient: no pseudonym, no retention of its own;
        # replaced whole on each load, gateway/catalogue.py): public fields, filtered, only
        f"""CREATE TABLE IF NOT EXISTS catalogue_items (
            id uuid PRIMARY KEY, tenant text NOT NULL, use_case text NOT NULL, text text NOT NULL,
            embedding vector({dimensions}) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX IF NOT EXISTS catalogue_items_embedding_hnsw ON catalogue_items "
        "USING hnsw (embedding vector_cosine_ops)",
        "CREATE INDEX IF NOT EXISTS catalogue_items_owner ON catalogue_items (tenant, use_case)",
        "CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)",
        "CREATE INDEX IF NOT EXISTS chunks_store ON chunks (store_id)",
        "CREATE INDEX IF NOT EXISTS chunks_file ON chunks (file_id)",
    ]
    for table in SUBJECT_TABLES:
        statements += [
            f"CREATE INDEX IF NOT EXISTS {table}_subject ON {table} (tenant, pseudonym)",
            f"CREATE INDEX IF NOT EXISTS {table}_expiry ON {table} (tenant, expires_at)",
            f"ALTER TABLE {table} ALTER COLUMN pseudonym SET STATISTICS 0",
        ]
    for table, column in (
        ("vector_stores", "name"),
        ("files", "filename"),
        ("files", "sealed"),
        ("files", "text"),
        ("chunks", "attributes"),
        ("chunks", "text"),
        ("chunks", "sealed"),
        ("chunks", "embedding"),
    ):
        statements.append(f"ALTER TABLE {table} ALTER COLUMN {column} SET STATISTICS 0")
    statements.append(
        # SCHEMA_VERSION
        "INSERT INTO memory_schema (version) VALUES (1), (2), (3) ON CONFLICT (version) DO NOTHING"
    )
    return statements


def _owner_values(owner: Owner) -> tuple[str, str, str | None, int | None]:
    p = owner.pseudonym
    return owner.tenant, owner.use_case, p.hex if p else None, p.version if p else None


def _retention(retention_days: int | None) -> int:
    if retention_days is None or not 1 <= retention_days <= 3650:
        raise StoreError(
            "the use case has no memory retention (policy memory.retention_days, 1..3650): "
            "nothing is stored without an expiry"
        )
    return retention_days


class Store:
    """The store over a pool of *dsn* (never logged); :meth:`open` creates or checks the schema."""

    def __init__(self, dsn: str, dimensions: int = 384, min_size: int = 1, max_size: int = 8) -> None:
        self.dimensions = dimensions
        self.pool = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, configure=self._configure,
            kwargs={"row_factory": dict_row}, name="sovereign-memory",
        )  # fmt: skip

    @staticmethod
    async def _configure(conn: AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        await conn.set_autocommit(True)

    async def open(self, timeout_s: float = 10.0) -> None:
        try:
            await self.pool.open(wait=True, timeout=timeout_s)
        except Exception as exc:  # the DSN is in the driver's message: the type only
            raise StoreUnavailable(f"the memory store did not answer ({type(exc).__name__})") from None
        try:
            await self.migrate()
        except StoreError:
            raise
        except Exception as exc:  # a refused CREATE (rights, a full disk): the type only, as above
            what = type(exc).__name__
            raise StoreUnavailable(f"the memory store's schema could not be made ({what})") from None

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self.pool.connection() as conn:
            yield conn

    async def migrate(self) -> None:
        """Create the schema (idempotent; one migrator at a time), and check its dimensions."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sovereign-memory-schema'))")
            # a current schema is left alone: its ALTERs take ACCESS EXCLUSIVE locks, and run on
            # every open they deadlocked with another process's traffic (a gateway's purge)
            exists = await (
                await conn.execute("SELECT to_regclass('memory_schema') IS NOT NULL AS yes")
            ).fetchone()
            made = None
            if exists is not None and exists["yes"]:  # a table named in a query must exist
                made = await (
                    await conn.execute("SELECT coalesce(max(version), 0) AS version FROM memory_schema")
                ).fetchone()
            if made is None or made["version"] < SCHEMA_VERSION:
                for statement in schema_sql(self.dimensions):
                    await conn.execute(statement)
            row = await (
                await conn.execute(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                    "AND attname = 'embedding'"
                )
            ).fetchone()
        if row is None or row["atttypmod"] != self.dimensions:
            raise StoreError(
                f"the store's chunks.embedding has {row and row['atttypmod']} dimensions, the embedding "
                f"model {self.dimensions}: a new model needs a new store (docs/memory.md)"
            )

    # -- writes -----------------------------------------------------------------------------
    async def add_vector_store(self, owner: Owner, name: str, retention_days: int | None) -> uuid.UUID:
        """A vector store; *name* tokenised already."""
        days = _retention(retention_days)
        row_id = uuid.uuid4()
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO vector_stores (id, name, tenant, use_case, pseudonym, pseudonym_version, "
                "expires_at) VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(days => %s))",
                (row_id, name, *_owner_values(owner), days),
            )
        return row_id

    async def add_file(
        self,
        owner: Owner,
        filename: str,
        purpose: str,
        size: int,
        originals: dict[str, str],
        data_key: bytes,
        retention_days: int | None,
        text: str | None = None,
    ) -> uuid.UUID:
        """A file's record; *filename* and *text* tokenised, *originals* sealed."""
        days = _retention(retention_days)
        row_id = uuid.uuid4()
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO files (id, filename, text, purpose, bytes, sealed, tenant, use_case, pseudonym, "
                "pseudonym_version, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(days => %s))",
                (
                    row_id,
                    filename,
                    text,
                    purpose,
                    size,
                    seal(data_key, row_id, originals),
                    *_owner_values(owner),
                    days,
                ),
            )
        return row_id

    async def add_chunk(
        self,
        owner: Owner,
        text: str,
        embedding: Sequence[float],
        originals: dict[str, str],
        data_key: bytes,
        retention_days: int | None,
        store_id: uuid.UUID | None = None,
        file_id: uuid.UUID | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        """One chunk: *text* tokenised already, its *embedding* of it, its *originals* sealed;
        *attributes*: strings tokenised already."""
        days = _retention(retention_days)
        if len(embedding) != self.dimensions:
            raise StoreError(f"embedding has {len(embedding)} dimensions, the store {self.dimensions}")
        row_id = uuid.uuid4()
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO chunks (id, store_id, file_id, text, sealed, embedding, attributes, tenant, "
                "use_case, pseudonym, pseudonym_version, expires_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(days => %s))",
                (
                    row_id, store_id, file_id, text, seal(data_key, row_id, originals),
                    np.asarray(embedding, dtype=np.float32),
                    Jsonb(attributes) if attributes is not None else None, *_owner_values(owner), days,
                ),
            )  # fmt: skip
        return row_id

    # -- reads ------------------------------------------------------------------------------
    async def search(
        self,
        tenant: str,
        query: Sequence[float],
        k: int,
        *,
        use_case: str | None = None,
        pseudonym: Pseudonym | None = None,
        store_id: uuid.UUID | None = None,
        exact: bool = False,
        ef_search: int | None = None,
        include_shared: bool = False,
        condition: tuple[sql.Composable, list[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The *k* nearest unexpired chunks of *tenant* by cosine distance (tokenised text;
        restore with the sealed originals, :func:`unseal`). *exact*: a sequential scan instead
        of the HNSW index (the benchmark's reference); *ef_search*: HNSW's candidate list (recall
        against speed, benchmarks/README.md); *include_shared*: with *pseudonym*, the rows of no
        patient too (pseudonym NULL); *condition*: one more SQL condition and its parameters
        (the vector-store API's attribute filters)."""
        where = ["tenant = %s", "expires_at > now()"]
        params: list[Any] = [tenant]
        for column, value in (("use_case", use_case), ("store_id", store_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if pseudonym is not None:
            where.append("(pseudonym = %s OR pseudonym IS NULL)" if include_shared else "pseudonym = %s")
            params.append(pseudonym.hex)
        conditions: list[sql.Composable] = [sql.SQL(w) for w in where]
        if condition is not None:
            conditions.append(condition[0])
            params += condition[1]
        vector = np.asarray(query, dtype=np.float32)
        query_sql = sql.SQL(
            "SELECT id, store_id, file_id, text, sealed, attributes, embedding <=> %s AS distance "
            "FROM chunks WHERE {} ORDER BY embedding <=> %s LIMIT %s"
        ).format(sql.SQL(" AND ").join(conditions))
        async with self.connection() as conn, conn.transaction():
            if exact:
                await conn.execute("SET LOCAL enable_indexscan = off")
            else:
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                if ef_search is not None:  # candidates kept per search (pgvector's default 40)
                    await conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(int(ef_search)))
            cur = await conn.execute(query_sql, [vector, *params, vector, k])
            rows = await cur.fetchall()
        return sorted(rows, key=lambda r: r["distance"])  # relaxed_order: re-sorted here

    # -- the catalogue (no patient data: not a subject table) ------------------------------
    async def replace_catalogue(
        self, tenant: str, use_case: str, items: Sequence[tuple[str, Sequence[float]]]
    ) -> int:
        """The catalogue of *tenant*'s *use_case* becomes *items* (filtered text, its vector), in
        one transaction: a search sees the old catalogue or the new one, never a mix; the old
        rows are deleted (their tuples reclaimed by autovacuum). The number of rows replaced."""
        if any(len(vector) != self.dimensions for _, vector in items):
            raise StoreError(f"an embedding has other dimensions than the store's {self.dimensions}")
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM catalogue_items WHERE tenant = %s AND use_case = %s", (tenant, use_case)
            )
            replaced = cur.rowcount
            async with conn.cursor() as c:
                await c.executemany(
                    "INSERT INTO catalogue_items (id, tenant, use_case, text, embedding) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [
                        (uuid.uuid4(), tenant, use_case, text, np.asarray(vector, dtype=np.float32))
                        for text, vector in items
                    ],
                )
        return replaced

    async def search_catalogue(
        self, tenant: str, use_case: str, query: Sequence[float], k: int
    ) -> list[dict[str, Any]]:
        """The *k* catalogue items of *tenant*'s *use_case* nearest to *query* (cosine), nearest first."""
        vector = np.asarray(query, dtype=np.float32)
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "SELECT id, text, embedding <=> %s AS distance FROM catalogue_items "
                "WHERE tenant = %s AND use_case = %s ORDER BY embedding <=> %s LIMIT %s",
                (vector, tenant, use_case, vector, k),
            )
            rows = await cur.fetchall()
        return sorted(rows, key=lambda r: r["distance"])

    async def purge_expired(self) -> dict[str, int]:
        """Delete every expired row; the counts by table."""
        counts: dict[str, int] = {}
        async with self.connection() as conn, conn.transaction():
            for table in SUBJECT_TABLES:
                cur = await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE expires_at <= now()").format(sql.Identifier(table))
                )
                counts[table] = cur.rowcount
        return counts
