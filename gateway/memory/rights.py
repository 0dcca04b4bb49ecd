"""The data subject's rights over the store: erasure (GDPR Art. 17) and access (Art. 15).

:func:`erase` deletes every row of one patient (tenant + her pseudonyms: one per identifier the
request names, since a row carries the pseudonym of the first identifier its own request named)
in every table, records a tombstone per pseudonym (sha256 of its hex, never the pseudonym) so a
restore of an older backup
re-applies the erasure (gateway/memory/backup.py), and then removes the old tuples from disk:

1. ``VACUUM FULL`` of each table: PostgreSQL writes the live rows into new files and rebuilds
   every index (the HNSW index included); the old files are truncated to zero at commit and
   unlinked at the next checkpoint (PostgreSQL 15 docs, VACUUM: "VACUUM FULL rewrites the entire
   contents of the table into a new disk file"; md.c mdunlink).
2. ``pg_switch_wal()`` then ``CHECKPOINT``: the WAL with the inserted rows is in segments before
   the checkpoint's redo point, and with the local cluster's settings (wal_recycle = off,
   wal_keep_size = 0, no archiving, no replication slot; infra/local/postgres.py) the checkpoint
   unlinks them. WAL written afterwards holds pages of the rewritten tables only.

The rewrite holds an ACCESS EXCLUSIVE lock per table for its duration (searches wait).
:func:`export` returns everything stored for the patient, the texts restored (tokens -> the
sealed originals) as JSON-ready dicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from gateway.memory.store import SUBJECT_TABLES, Pseudonym, Store, unseal
from gateway.phi.tokenise import restore


def tombstone(pseudonym: Pseudonym) -> bytes:
    return hashlib.sha256(pseudonym.hex.encode()).digest()


@dataclass(frozen=True)
class Erased:
    rows: dict[str, int]  # by table

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _hexes(pseudonyms: Sequence[Pseudonym]) -> list[str]:
    if not pseudonyms:
        raise ValueError("a data subject's request needs at least one pseudonym")
    return sorted({p.hex for p in pseudonyms})


async def erase(
    store: Store, tenant: str, pseudonyms: Sequence[Pseudonym], maintenance_work_mem_mb: int | None = None
) -> Erased:
    """Delete the patient's rows (under any of *pseudonyms*) in every table, tombstone each
    pseudonym, rewrite the tables, drop the WAL."""
    rows: dict[str, int] = {}
    hexes = _hexes(pseudonyms)
    async with store.connection() as conn, conn.transaction():
        for pseudonym in pseudonyms:  # the same one twice: its tombstone's time set twice
            await conn.execute(
                # a later erasure of the same patient moves the time on (apply_tombstones below)
                "INSERT INTO erasures (tenant, digest) VALUES (%s, %s) "
                "ON CONFLICT (tenant, digest) DO UPDATE SET erased_at = now()",
                (tenant, tombstone(pseudonym)),
            )
        for table in SUBJECT_TABLES:  # children first
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant = %s AND pseudonym = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (tenant, hexes),
            )
            rows[table] = cur.rowcount
    await rewrite(store, maintenance_work_mem_mb)
    return Erased(rows)


async def rewrite(store: Store, maintenance_work_mem_mb: int | None = None) -> None:
    """Rewrite the subject tables and their indexes, then end the WAL that held the old rows.
    *maintenance_work_mem_mb*: memory for the index rebuilds of this session (the server's
    setting when None; an HNSW graph larger than it is built much more slowly)."""
    async with store.connection() as conn:  # autocommit: VACUUM cannot run in a transaction
        if maintenance_work_mem_mb is not None:
            await conn.execute(
                sql.SQL("SET maintenance_work_mem = {}").format(f"{int(maintenance_work_mem_mb)}MB")
            )
        try:
            for table in SUBJECT_TABLES:
                await conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(sql.Identifier(table)))
            await conn.execute("SELECT pg_switch_wal()")
            await conn.execute("CHECKPOINT")
        finally:
            if maintenance_work_mem_mb is not None:
                await conn.execute("RESET maintenance_work_mem")


async def apply_tombstones(store: Store) -> dict[str, int]:
    """Delete every row of an erased patient written before the erasure (after a restore of an
    older backup), then rewrite. A row written after it (the patient came back, and stored
    again: a new lawful basis) is kept."""
    rows: dict[str, int] = {}
    async with store.connection() as conn, conn.transaction():
        for table in SUBJECT_TABLES:
            cur = await conn.execute(
                sql.SQL(
                    "DELETE FROM {} t USING erasures e WHERE t.pseudonym IS NOT NULL "
                    "AND e.tenant = t.tenant AND e.digest = sha256(convert_to(t.pseudonym, 'UTF8')) "
                    "AND t.created_at <= e.erased_at"
                ).format(sql.Identifier(table))
            )
            rows[table] = cur.rowcount
    await rewrite(store)
    return rows


async def export(
    store: Store, tenant: str, pseudonyms: Sequence[Pseudonym], data_key: bytes
) -> dict[str, Any]:
    """Everything stored for the patient (under any of *pseudonyms*) in *tenant*, texts
    restored, expired rows included until the purge removes them (they are still stored)."""
    hexes = _hexes(pseudonyms)

    def restored(text: str, originals: dict[str, str]) -> str:
        return restore(text, originals)[0] if originals else text

    out: dict[str, Any] = {"vector_stores": [], "files": [], "chunks": []}
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT id, use_case, name, created_at, expires_at FROM vector_stores "
            "WHERE tenant = %s AND pseudonym = ANY(%s) ORDER BY created_at, id",
            (tenant, hexes),
        )
        for r in await cur.fetchall():
            out["vector_stores"].append({**_common(r), "name": r["name"]})
        cur = await conn.execute(
            "SELECT id, use_case, filename, text, purpose, bytes, sealed, created_at, expires_at FROM files "
            "WHERE tenant = %s AND pseudonym = ANY(%s) ORDER BY created_at, id",
            (tenant, hexes),
        )
        for r in await cur.fetchall():
            originals = unseal(data_key, r["id"], r["sealed"])
            out["files"].append(
                {**_common(r), "filename": restored(r["filename"], originals), "purpose": r["purpose"],
                 "bytes": r["bytes"],
                 "text": restored(r["text"], originals) if r["text"] is not None else None}
            )  # fmt: skip
        cur = await conn.execute(
            "SELECT id, use_case, store_id, file_id, text, sealed, attributes, embedding, created_at, "
            "expires_at "
            "FROM chunks WHERE tenant = %s AND pseudonym = ANY(%s) ORDER BY created_at, id",
            (tenant, hexes),
        )
        for r in await cur.fetchall():
            originals = unseal(data_key, r["id"], r["sealed"])
            out["chunks"].append(
                {
                    **_common(r),
                    "vector_store_id": str(r["store_id"]) if r["store_id"] else None,
                    "file_id": str(r["file_id"]) if r["file_id"] else None,
                    "text": restored(r["text"], originals),
                    "attributes": _attributes(r["attributes"], originals),
                    "embedding": _floats(r["embedding"]),
                }
            )
    return out


def _attributes(stored: dict[str, Any] | None, originals: dict[str, str]) -> dict[str, Any] | None:
    """A chunk's attributes (the vector-store API's), their strings restored."""
    if stored is None:
        return None
    return {k: restore(v, originals)[0] if isinstance(v, str) and originals else v for k, v in stored.items()}


def _floats(vector: Any) -> list[float]:
    """pgvector's Python type (pgvector 0.5.1: ``Vector``, with to_list) or an array, as floats."""
    values = vector.to_list() if hasattr(vector, "to_list") else vector
    return [float(x) for x in values]


def _common(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "use_case": r["use_case"],
        "created_at": r["created_at"].isoformat(),
        "expires_at": r["expires_at"].isoformat(),
    }
