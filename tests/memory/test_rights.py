"""Erasure (Art. 17) and access (Art. 15) against a real PostgreSQL 15 + pgvector 0.8.0 cluster
and a real OpenBao dev server: the erased patient's bytes are nowhere in the data directory
(tables, indexes, WAL, everything), nor in the next backup generation; the older generation
still has them, and its restore re-applies the erasure. Export restores the originals.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.kms import KeyProvider
from gateway.memory import backup, rights
from gateway.memory.pseudonym import memory_key, pseudonym
from gateway.memory.store import Owner, Pseudonym, Store
from gateway.phi.context import PatientContext
from gateway.phi.filter import PHIFilter, recognizers
from gateway.policy import load_policies
from gateway.settings import OpenBaoSettings
from tests.memory.conftest import Postgres
from tests.support import Bao

TENANT = "clinic-a"
DIMS = 384


def unit_vector(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    return [float(x) for x in v / np.linalg.norm(v)]


def vector_bytes(v: list[float]) -> bytes:
    """pgvector's on-disk form of a vector's elements: float4 in the server's byte order (x86-64:
    little endian; pgvector 0.8.0 src/vector.h: ``float x[FLEXIBLE_ARRAY_MEMBER]``)."""
    return struct.pack(f"<{len(v)}f", *v)


@pytest.fixture(scope="module")
def keys(bao: Bao, tmp_path_factory: pytest.TempPathFactory) -> KeyProvider:
    wrapped = tmp_path_factory.mktemp("wrapped")
    return KeyProvider(OpenBaoSettings(address=bao.address, token=bao.gateway_token), wrapped)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class Patient:
    """One fictitious patient's stored items: a chunk with a unique marker phrase and her name
    (tokenised by the real PHI filter under the tenant's data key), and its vector."""

    def __init__(self, context: PatientContext, phrase: str, seed: int) -> None:
        self.context = context
        self.phrase = phrase
        self.text = f"{context.name} asked about {phrase} for her order."
        self.vector = unit_vector(seed)
        self.pseudonym: Pseudonym | None = None
        self.tokenised = ""
        self.originals: dict[str, str] = {}


async def store_patient(store: Store, keys: KeyProvider, patient: Patient) -> None:
    policy = load_policies()["patient-support"]
    data_key = await memory_key(keys, TENANT)  # as the gateway stores
    filtered = PHIFilter(recognizers(False, [])).apply(
        policy, patient.context, [patient.text], data_key, TENANT
    )
    patient.tokenised = filtered.texts[0]
    patient.originals = dict(filtered.tokens.originals)
    assert patient.context.name not in patient.tokenised  # the store receives tokens only
    patient.pseudonym = await pseudonym(keys, TENANT, patient.context)
    owner = Owner(TENANT, policy.name, patient.pseudonym)
    assert policy.memory is not None
    vs = await store.add_vector_store(owner, "conversation", policy.memory.retention_days)
    fid = await store.add_file(
        owner,
        "chat.txt",
        "user_data",
        len(patient.text),
        patient.originals,
        data_key,
        policy.memory.retention_days,
        text=patient.tokenised,  # the vector-store API's file text (schema 2)
    )
    # and its chunk attributes (schema 2): the erasure proof covers both columns
    await store.add_chunk(
        owner, patient.tokenised, patient.vector, patient.originals, data_key,
        policy.memory.retention_days, store_id=vs, file_id=fid, attributes={"note": patient.tokenised},
    )  # fmt: skip


def needles(p: Patient) -> dict[str, bytes]:
    assert p.pseudonym is not None
    return {
        "tokenised text": p.tokenised.encode(),
        "marker phrase": p.phrase.encode(),
        "pseudonym hex": p.pseudonym.hex.encode(),
        "vector bytes": vector_bytes(p.vector)[:64],
    }


def scan(directory: Path, wanted: dict[str, bytes]) -> dict[str, list[str]]:
    """Every file under *directory* (base/, global/, pg_wal/, pg_xact/, ... all of it): which
    needles occur in which files."""
    found: dict[str, list[str]] = {name: [] for name in wanted}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:  # a file unlinked while we walked (a WAL segment removed)
            continue
        for name, needle in wanted.items():
            if needle in data:
                found[name].append(str(path.relative_to(directory)))
    return found


def patients() -> tuple[Patient, Patient]:
    """Two patients with identifiers, texts and vectors new to the session (each test's rows
    are its own, and the scan's needles occur nowhere else)."""
    tag = f"{random.getrandbits(48):012x}"
    erika_id, hans_id = (str(random.randrange(10**8, 10**9)) for _ in range(2))
    erika = Patient(
        PatientContext(name="Erika Mustermann", customer_id=erika_id, email=f"erika.{tag}@example.org"),
        f"compression stockings model zq{tag}a",
        random.getrandbits(32),
    )
    hans = Patient(
        PatientContext(name="Hans Beispiel", customer_id=hans_id, email=f"hans.{tag}@example.org"),
        f"a blood pressure cuff model zq{tag}b",
        random.getrandbits(32),
    )
    return erika, hans


async def _open(postgres: Postgres) -> Store:
    store = Store(postgres.dsn, DIMS)
    await store.open()
    return store


def test_erasure_leaves_nothing(
    postgres: Postgres, keys: KeyProvider, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    erika, hans = patients()
    backups = tmp_path / "backups"

    async def before() -> Store:
        store = await _open(postgres)
        await store_patient(store, keys, erika)
        await store_patient(store, keys, hans)
        return store

    store = loop.run_until_complete(before())
    try:
        check_erasure(postgres, keys, loop, store, erika, hans, backups)
    finally:
        loop.run_until_complete(store.close())


def check_erasure(
    postgres: Postgres,
    keys: KeyProvider,
    loop: asyncio.AbstractEventLoop,
    store: Store,
    erika: Patient,
    hans: Patient,
    backups: Path,
) -> None:
    older = backup.backup(postgres.dsn, backups, keep=3)

    assert erika.pseudonym is not None
    erased = loop.run_until_complete(rights.erase(store, TENANT, [erika.pseudonym]))
    assert erased.rows == {"chunks": 1, "files": 1, "vector_stores": 1}

    # the data directory: nothing of Erika anywhere, Hans still there (the scan can find things)
    found_erika = scan(postgres.data_dir, needles(erika))
    found_hans = scan(postgres.data_dir, needles(hans))
    assert found_erika == {name: [] for name in needles(erika)}, found_erika
    for name, files in found_hans.items():
        assert files, f"the scan did not find the other patient's {name}: it cannot show an absence"

    # the next backup generation holds nothing of her; the older one still does
    newer = backup.backup(postgres.dsn, backups, keep=3)
    assert backup.generations(backups) == [older, newer]
    newer_bytes, older_bytes = newer.read_bytes(), older.read_bytes()
    # pg_dump's custom format compresses table data (zlib): search the restored text instead
    assert dump_contains(newer, erika) == []
    assert dump_contains(newer, hans) != []
    assert dump_contains(older, erika) != []
    assert newer_bytes != older_bytes

    # restoring the older generation brings her back for a moment: the erasure is re-applied
    async def restore_older() -> dict[str, Any]:
        deleted = await backup.restore(store, postgres.dsn, older)
        assert erika.pseudonym is not None and hans.pseudonym is not None
        data_key = await memory_key(keys, TENANT)  # as the gateway stores
        return {
            "deleted": deleted,
            "erika": await rights.export(store, TENANT, [erika.pseudonym], data_key),
            "hans": await rights.export(store, TENANT, [hans.pseudonym], data_key),
        }

    after = loop.run_until_complete(restore_older())
    assert after["deleted"] == {"chunks": 1, "files": 1, "vector_stores": 1}
    assert after["erika"] == {"vector_stores": [], "files": [], "chunks": []}
    assert [c["text"] for c in after["hans"]["chunks"]] == [hans.text]
    assert scan(postgres.data_dir, needles(erika)) == {name: [] for name in needles(erika)}


def dump_contains(dump: Path, patient: Patient) -> list[str]:
    """The needles of *patient* found in *dump*'s content as pg_restore writes it out as SQL
    (table data is zlib-compressed in the custom format; the vector as pgvector's text form)."""
    import subprocess

    sql = subprocess.run(
        [str(backup.PG_BIN / "pg_restore"), "--file=-", str(dump)], capture_output=True, check=True
    ).stdout
    assert patient.pseudonym is not None
    wanted = {
        "tokenised text": patient.tokenised.encode(),
        "marker phrase": patient.phrase.encode(),
        "pseudonym hex": patient.pseudonym.hex.encode(),
        "vector text": ("[" + ",".join(f"{x:g}" for x in patient.vector[:1])).encode(),
    }
    return [name for name, needle in wanted.items() if needle in sql]


def test_export_restores(postgres: Postgres, keys: KeyProvider, loop: asyncio.AbstractEventLoop) -> None:
    erika, hans = patients()

    async def run() -> dict[str, Any]:
        store = await _open(postgres)
        try:
            await store_patient(store, keys, erika)
            await store_patient(store, keys, hans)
            assert erika.pseudonym is not None
            return await rights.export(store, TENANT, [erika.pseudonym], await memory_key(keys, TENANT))
        finally:
            await store.close()

    exported = loop.run_until_complete(run())
    assert [c["text"] for c in exported["chunks"]] == [erika.text]  # restored: her name as sent
    assert erika.tokenised != erika.text  # ... and stored tokenised
    assert [f["filename"] for f in exported["files"]] == ["chat.txt"]
    assert [f["text"] for f in exported["files"]] == [erika.text]
    assert [c["attributes"] for c in exported["chunks"]] == [{"note": erika.text}]
    assert [s["name"] for s in exported["vector_stores"]] == ["conversation"]
    assert np.allclose(exported["chunks"][0]["embedding"], erika.vector, atol=1e-6)
    flat = repr(exported)
    for other in (hans.phrase, "Hans", hans.tokenised):
        assert other not in flat


def test_tombstones_remove_what_was_stored_before_the_erasure_only(
    postgres: Postgres, keys: KeyProvider, loop: asyncio.AbstractEventLoop
) -> None:
    """After a restore, an erasure is applied again to the rows written before it (the restored
    ones) and not to what the patient stored after it (she came back: a new basis)."""
    ada = Patient(PatientContext(name="Ada Lindqvist", customer_id="tomb-71001"), "amber sextant", 71)
    later = Patient(ada.context, "cobalt quill", 72)

    async def run() -> tuple[int, int]:
        store = await _open(postgres)
        try:
            await store_patient(store, keys, ada)
            assert ada.pseudonym is not None
            await rights.erase(store, TENANT, [ada.pseudonym])
            # a restored row of hers from before the erasure, and one she stored after it
            await store_patient(store, keys, ada)  # stands for the restored row: dated back below
            async with store.connection() as conn:
                await conn.execute(
                    "UPDATE chunks SET created_at = created_at - interval '1 day' WHERE pseudonym = %s",
                    (ada.pseudonym.hex,),
                )
            await store_patient(store, keys, later)
            await rights.apply_tombstones(store)
            async with store.connection() as conn:
                cur = await conn.execute("SELECT text FROM chunks WHERE pseudonym = %s", (ada.pseudonym.hex,))
                texts = [r["text"] for r in await cur.fetchall()]
            return texts.count(ada.tokenised), texts.count(later.tokenised)
        finally:
            await store.close()

    restored, stored_after = loop.run_until_complete(run())
    assert (restored, stored_after) == (0, 1)
