"""The data-subject endpoints through a real gateway process (real OpenBao, real PostgreSQL +
pgvector), and `sovereign memory erase|export` against it: restored export, erasure, the audit
records (operation and counts; never the pseudonym, a name, an identifier or a text), errors
that name the field and echo nothing, 503 without a store."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clientkeys import ClientKeyStore
from gateway.kms import KeyProvider
from gateway.memory.store import Owner, Pseudonym, Store
from gateway.settings import OpenBaoSettings
from tests.memory.conftest import Postgres
from tests.memory.test_rights import DIMS, TENANT, Patient, patients, store_patient, unit_vector
from tests.support import Bao, Proc, free_port, gateway_config, running_gateway

ERASE = "/v1/sovereign/data_subjects/erase"
EXPORT = "/v1/sovereign/data_subjects/export"


@pytest.fixture(scope="module")
def gw_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-api")


@pytest.fixture(scope="module")
def api_key(gw_tmp: Path) -> str:
    return ClientKeyStore(gw_tmp / "keys.json").create(TENANT)[1]


@pytest.fixture(scope="module")
def gateway_proc(bao: Bao, postgres: Postgres, gw_tmp: Path, api_key: str) -> Iterator[Proc]:
    dsn_file = gw_tmp / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    dsn_file.chmod(0o600)
    config = gateway_config(
        gw_tmp, bao.address, bao.gateway_token, "http://127.0.0.1:9", memory={"dsn_file": str(dsn_file)}
    )
    with running_gateway(config, gw_tmp) as proc:
        yield proc


def store_all(postgres: Postgres, bao: Bao, gw_tmp: Path, *items: Patient) -> None:
    """*items* stored as the gateway stores them (its OpenBao token, its wrapped-key folder)."""
    keys = KeyProvider(OpenBaoSettings(address=bao.address, token=bao.gateway_token), gw_tmp / "wrapped")

    async def run() -> None:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            for item in items:
                await store_patient(store, keys, item)
        finally:
            await store.close()

    asyncio.run(run())


def stored(postgres: Postgres, bao: Bao, gw_tmp: Path) -> tuple[Patient, Patient]:
    """Two patients' items stored under the gateway's own tenant data key (its wrapped copy)."""
    erika, hans = patients()
    store_all(postgres, bao, gw_tmp, erika, hans)
    return erika, hans


def post(proc: Proc, path: str, key: str, body: Any) -> httpx.Response:
    return httpx.post(proc.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)


def audit_records(gw_tmp: Path) -> list[dict[str, Any]]:
    path = gw_tmp / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def context_of(p: Patient) -> dict[str, Any]:
    return p.context.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def test_export_then_erase_through_the_gateway(
    gateway_proc: Proc, postgres: Postgres, bao: Bao, gw_tmp: Path, api_key: str
) -> None:
    erika, hans = stored(postgres, bao, gw_tmp)
    body = {"sovereign": {"use_case": "patient-support", "context": context_of(erika)}}
    exported = post(gateway_proc, EXPORT, api_key, body)
    assert exported.status_code == 200, exported.text
    data = exported.json()
    assert [c["text"] for c in data["chunks"]] == [erika.text]
    assert hans.phrase not in exported.text and "Hans" not in exported.text

    erased = post(gateway_proc, ERASE, api_key, body)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"] == {"chunks": 1, "files": 1, "vector_stores": 1}
    again = post(gateway_proc, EXPORT, api_key, body).json()
    assert again["chunks"] == [] and again["files"] == [] and again["vector_stores"] == []
    others = post(gateway_proc, EXPORT, api_key, {"sovereign": {"context": context_of(hans)}}).json()
    assert [c["text"] for c in others["chunks"]] == [hans.text]

    records = audit_records(gw_tmp)
    ops = [r for r in records if r.get("operation") in {"erasure", "export"}]
    finals = [(r["kind"], r["operation"], r["status"], r["rows"]) for r in ops if r["kind"] == "request"]
    assert ("request", "export", 200, {"vector_stores": 1, "files": 1, "chunks": 1}) in finals
    assert ("request", "erasure", 200, {"chunks": 1, "files": 1, "vector_stores": 1}) in finals
    assert sum(1 for r in ops if r["kind"] == "admit") == len(finals)  # each one written ahead
    assert erika.pseudonym is not None
    trail = (gw_tmp / "audit" / "audit.jsonl").read_text()
    for value in (
        erika.pseudonym.hex,
        "Erika",
        "Mustermann",
        str(erika.context.customer_id),
        str(erika.context.email),
        erika.phrase,
        erika.tokenised,
    ):
        assert value not in trail


def test_a_request_naming_each_identifier_covers_rows_stored_under_any(
    gateway_proc: Proc, postgres: Postgres, bao: Bao, gw_tmp: Path, api_key: str
) -> None:
    """A row carries the pseudonym of the first identifier its own request named: her note
    stored with customer id and e-mail is under the customer id's, the one stored with her
    e-mail alone under the e-mail's. An export or erasure naming both finds both (before, it
    looked under the first one only, and the e-mail-only note survived her erasure)."""
    erika, _ = patients()
    by_mail = Patient(
        erika.context.model_copy(update={"customer_id": None}),
        erika.phrase + " by mail",
        random.getrandbits(32),
    )
    store_all(postgres, bao, gw_tmp, erika, by_mail)
    assert erika.pseudonym != by_mail.pseudonym
    body = {"sovereign": {"context": context_of(erika)}}
    exported = post(gateway_proc, EXPORT, api_key, body)
    assert exported.status_code == 200, exported.text
    assert sorted(c["text"] for c in exported.json()["chunks"]) == sorted([erika.text, by_mail.text])
    erased = post(gateway_proc, ERASE, api_key, body)
    assert erased.json()["deleted"] == {"chunks": 2, "files": 2, "vector_stores": 2}, erased.text
    for context in (context_of(erika), context_of(by_mail)):
        left = post(gateway_proc, EXPORT, api_key, {"sovereign": {"context": context}}).json()
        assert left == {
            "object": "sovereign.data_subject.export",
            "vector_stores": [],
            "files": [],
            "chunks": [],
        }


def test_cli_export_and_erase(
    gateway_proc: Proc, postgres: Postgres, bao: Bao, gw_tmp: Path, api_key: str, tmp_path: Path
) -> None:
    erika, _ = stored(postgres, bao, gw_tmp)
    key_file = tmp_path / "key"
    key_file.write_text(api_key)
    base = [sys.executable, "-m", "infra.cli", "memory"]
    common = ["--tenant", TENANT, "--target", gateway_proc.url, "--key-file", str(key_file), "--context", "-"]
    out = tmp_path / "export.json"
    done = subprocess.run(
        [*base, "export", *common, "--output", str(out)],
        input=json.dumps(context_of(erika)), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [c["text"] for c in json.loads(out.read_text())["chunks"]] == [erika.text]
    assert out.stat().st_mode & 0o077 == 0
    assert "Erika" not in done.stdout  # the counts only when written to a file
    done = subprocess.run(
        [*base, "erase", *common],
        input=json.dumps(context_of(erika)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "erased 3 rows" in done.stdout
    # a context without an identifier: refused by the gateway, named, nothing echoed
    done = subprocess.run(
        [*base, "erase", *common], input=json.dumps({"name": "Erika Mustermann"}),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "sovereign.context" in done.stderr and "Erika" not in done.stderr
    # a bad field: named by position, its value never echoed
    done = subprocess.run(
        [*base, "export", *common], input=json.dumps({"customer_id": "100 234!"}),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "customer_id" in done.stderr and "100 234" not in done.stderr


def test_no_store_answers_503(bao: Bao, tmp_path: Path) -> None:
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, "http://127.0.0.1:9")
    with running_gateway(config, tmp_path) as proc:
        resp = post(proc, ERASE, key, {"sovereign": {"context": {"customer_id": "100234"}}})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "store_unavailable"
    assert "100234" not in resp.text


def test_openbao_down_answers_503_and_changes_nothing(
    postgres: Postgres, bao: Bao, gw_tmp: Path, tmp_path: Path
) -> None:
    """No pseudonym without OpenBao: 503 key_unavailable, and the patient's rows are still there."""
    erika, _ = stored(postgres, bao, gw_tmp)
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    dsn_file = tmp_path / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    config = gateway_config(
        tmp_path, f"http://127.0.0.1:{free_port()}", "no-openbao-here", "http://127.0.0.1:9",
        memory={"dsn_file": str(dsn_file)},
    )  # fmt: skip
    with running_gateway(config, tmp_path) as proc:
        resp = post(proc, ERASE, key, {"sovereign": {"context": context_of(erika)}})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "key_unavailable"
    assert str(erika.context.customer_id) not in resp.text

    async def still_there() -> int:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            async with store.connection() as conn:
                assert erika.pseudonym is not None
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM chunks WHERE pseudonym = %s", (erika.pseudonym.hex,)
                )
                row = await cur.fetchone()
                assert row is not None
                return int(row["n"])
        finally:
            await store.close()

    assert asyncio.run(still_there()) == 1


def test_the_gateway_purges_expired_rows(postgres: Postgres, bao: Bao, tmp_path: Path) -> None:
    """Retention enforced by the running gateway: an expired row is deleted by its purge task
    (memory.purge_interval_s), an unexpired one stays."""
    owner = Owner("purge-t", "patient-support", Pseudonym("12" * 32, 1))

    async def rows(setup: bool) -> set[str]:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            if setup:
                kept = await store.add_chunk(owner, "kept", unit_vector(1), {}, b"k" * 32, 30)
                gone = await store.add_chunk(owner, "gone", unit_vector(2), {}, b"k" * 32, 30)
                async with store.connection() as conn:
                    await conn.execute(
                        "UPDATE chunks SET created_at = now() - interval '31 days', "
                        "expires_at = now() - interval '1 day' WHERE id = %s",
                        (gone,),
                    )
                assert kept != gone
            async with store.connection() as conn:
                cur = await conn.execute("SELECT text FROM chunks WHERE tenant = %s", (owner.tenant,))
                return {r["text"] for r in await cur.fetchall()}
        finally:
            await store.close()

    assert asyncio.run(rows(setup=True)) == {"kept", "gone"}
    dsn_file = tmp_path / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    config = gateway_config(
        tmp_path, bao.address, bao.gateway_token, "http://127.0.0.1:9",
        memory={"dsn_file": str(dsn_file), "purge_interval_s": 0.2},
    )  # fmt: skip
    with running_gateway(config, tmp_path):
        left = asyncio.run(rows(setup=False))
        for _ in range(300):  # until the purge ran (a bound on the wait, not a timing assertion)
            if left == {"kept"}:
                break
            time.sleep(0.1)
            left = asyncio.run(rows(setup=False))
    assert left == {"kept"}
