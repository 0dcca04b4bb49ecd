"""Backup generations of the store: ``pg_dump`` (custom format) into a folder, N kept.

A generation is one file ``memory-<UTC time>.dump``; :func:`backup` writes a new one (through a
temporary name, so a half-written dump never counts) and deletes the oldest beyond *keep*.
What an erasure cannot reach: a generation written BEFORE the erasure still holds the patient's
rows until it is deleted, i.e. for at most *keep* further generations (docs/memory.md says how
long that is with the schedule). The next generation after the erasure holds nothing of them.

:func:`restore` loads a generation into the database (``pg_restore --clean``, the vector
extension left as it is) and then re-applies every erasure recorded in the database before
the restore and in the generation itself (gateway/memory/rights.py apply_tombstones), so an
older backup never brings an erased patient back.

pg_dump/pg_restore get the password in PGPASSWORD, never on their command line (visible to
every user in /proc).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from gateway.memory.rights import apply_tombstones
from gateway.memory.store import Store, StoreError

PG_BIN = Path(os.environ.get("SOVEREIGN_PG_BIN", "/usr/lib/postgresql/15/bin"))
PREFIX = "memory-"


def _client(dsn: str) -> tuple[list[str], dict[str, str]]:
    """(connection arguments, environment) of a pg_* client for *dsn*."""
    parts = conninfo_to_dict(dsn)
    args = []
    for option, name in (
        ("--host", "host"),
        ("--port", "port"),
        ("--username", "user"),
        ("--dbname", "dbname"),
    ):
        if parts.get(name):
            args.append(f"{option}={parts[name]}")
    env = {**os.environ, "PGPASSWORD": str(parts.get("password") or ""), "PGCONNECT_TIMEOUT": "10"}
    return args, env


def generations(directory: Path) -> list[Path]:
    """The generations in *directory*, oldest first."""
    return sorted(directory.glob(f"{PREFIX}*.dump"))


def stamp(now_ns: int) -> str:
    """A generation's name part: UTC time to the nanosecond, from ONE reading of the clock (the
    seconds and their fraction read apart could straddle a second: the newer generation would
    then sort, and be pruned, as the oldest)."""
    seconds, fraction = divmod(now_ns, 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{fraction:09d}Z"


def backup(dsn: str, directory: Path, keep: int) -> Path:
    """A new generation; the oldest beyond *keep* deleted. Returns its path."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / f"{PREFIX}{stamp(time.time_ns())}.dump"
    tmp = target.with_suffix(".part")
    args, env = _client(dsn)
    done = subprocess.run(
        [str(PG_BIN / "pg_dump"), *args, "--format=custom", f"--file={tmp}", "--no-owner"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"pg_dump failed with code {done.returncode}; see the database's log")
    os.chmod(tmp, 0o600)
    tmp.replace(target)
    for old in generations(directory)[:-keep]:
        old.unlink()
    return target


async def restore(store: Store, dsn: str, dump: Path) -> dict[str, int]:
    """Load *dump* into the database, then re-apply every erasure (those in the database now and
    those in the dump). Returns the rows the re-application deleted, by table."""
    async with store.connection() as conn:
        cur = await conn.execute("SELECT tenant, digest, erased_at FROM erasures")
        tombstones = [(r["tenant"], r["digest"], r["erased_at"]) for r in await cur.fetchall()]
    args, env = _client(dsn)
    listed = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--list", str(dump)], env=env, capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise StoreError(f"pg_restore could not read the generation {dump.name} (code {listed.returncode})")
    # the extension is the cluster's (created by its superuser): kept, not dropped and re-created
    entries = [line for line in listed.stdout.splitlines() if " EXTENSION " not in line]
    list_file = dump.with_name(dump.name + ".list")
    list_file.write_text("\n".join(entries) + "\n", encoding="utf-8")
    try:
        done = subprocess.run(
            [str(PG_BIN / "pg_restore"), *args, "--clean", "--if-exists", "--no-owner",
             "--single-transaction", f"--use-list={list_file}", str(dump)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        list_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StoreError(f"pg_restore failed with code {done.returncode}; see the database's log")
    async with store.connection() as conn, conn.transaction():
        for tenant, digest, erased_at in tombstones:
            await conn.execute(
                "INSERT INTO erasures (tenant, digest, erased_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant, digest, erased_at),
            )
    return await apply_tombstones(store)
