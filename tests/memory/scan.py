"""What a real PostgreSQL holds, as text to scan for leaked values: every text, bytea, json and
vector column of every table of the ``public`` schema (tests/memory/test_catalogue.py and the
leak canaries over embeddings and memory, tests/boundary/test_canaries_memory.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

#: column types whose values a client's text could end up in (information_schema data_type)
SCANNED_TYPES = ("text", "character varying", "character", "bytea", "json", "jsonb", "USER-DEFINED")


def columns(dsn: str) -> list[tuple[str, str, str]]:
    """(table, column, data type) of every scanned column of the public schema."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = ANY(%s) ORDER BY table_name, column_name",
            (list(SCANNED_TYPES),),
        ).fetchall()
    return [(t, c, d) for t, c, d in rows]


def database_text(dsn: str) -> dict[str, str]:
    """``table.column`` -> every value of it, one a line (bytea decoded as UTF-8 with
    replacement, so text in it is found; vectors as their text form)."""
    out: dict[str, str] = {}
    with psycopg.connect(dsn) as conn:
        for table, column, _ in columns(dsn):
            query = sql.SQL("SELECT {}::text FROM {}").format(sql.Identifier(column), sql.Identifier(table))
            if _ == "bytea":
                query = sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), sql.Identifier(table))
            values = []
            for (value,) in conn.execute(query).fetchall():
                if isinstance(value, bytes | memoryview):
                    values.append(bytes(value).decode("utf-8", "replace"))
                elif value is not None:
                    values.append(str(value))
            out[f"{table}.{column}"] = "\n".join(values)
    return out


def data_dir_text(data_dir: Path) -> str:
    """Every file of the cluster's data directory (heap, indexes, WAL, ...), decoded as UTF-8
    with replacement: the bytes a value left on disk (PostgreSQL stores short text inline, as
    written)."""
    parts = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            try:
                parts.append(path.read_bytes().decode("utf-8", "replace"))
            except OSError:
                continue
    return "\n".join(parts)
