"""OpenAI's files and vector-store API through a real gateway process (real OpenBao, real
PostgreSQL + pgvector, the scripted embeddings double tests/doubles/scripted_upstream.py),
driven by the official openai SDK unchanged (openai-python 3.57.0: files.create,
vector_stores.create, vector_stores.files.upload_and_poll / create_and_poll,
vector_stores.search with extra_body, delete): what the embedding model and the database
received holds no patient value, search results come back restored, one patient's search never
returns another's items, retention is set, the audit records carry counts only, errors echo
nothing, and the data subject's erasure removes what this API stored."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hvac
import openai
import pytest
from openai import OpenAI

from gateway.app import GatewayError
from gateway.clientkeys import ClientKeyStore
from gateway.embeddings import unit_length
from gateway.memory.store import Store
from gateway.memory.vector_api import MODEL_TOKENS, ChunkingStatic, StaticChunking, chunk_sizes, chunks_of
from gateway.phi.checksums import kvnr_with_check_digit
from infra import openbao_contract
from infra.cli import main as sovereign_cli
from tests.memory.conftest import Postgres
from tests.memory.test_rights import scan
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway

TENANT = "clinic-vstore"
USE_CASE = "patient-support"
DIMS = 384
FAQ = "Kompressionsstruempfe werden innerhalb von drei Werktagen geliefert."


@pytest.fixture(scope="module")
def vs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vector-api")


@pytest.fixture(scope="module")
def vs_key(vs_dir: Path) -> str:
    return ClientKeyStore(vs_dir / "keys.json").create(TENANT)[1]


@pytest.fixture(scope="module")
def vs_gateway(
    bao: Bao, postgres: Postgres, vs_dir: Path, vs_key: str, gateway_upstream_url: str
) -> Iterator[Proc]:
    dsn_file = vs_dir / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    dsn_file.chmod(0o600)
    upstreams = {
        "embed": {
            "url": f"{gateway_upstream_url}/v1", "model": "scripted-embed", "kind": "embeddings",
            "dimensions": DIMS,
        }
    }  # fmt: skip
    config = gateway_config(
        vs_dir, bao.address, bao.gateway_token, gateway_upstream_url, upstreams=upstreams,
        memory={"dsn_file": str(dsn_file)}, incident={"poll_s": 0.2},
    )  # fmt: skip
    with running_gateway(config, vs_dir) as proc:
        yield proc


@pytest.fixture
def client(vs_gateway: Proc, vs_key: str) -> OpenAI:
    return OpenAI(
        base_url=f"{vs_gateway.url}/v1", api_key=vs_key, max_retries=0, timeout=60,
        default_headers={"x-sovereign-use-case": USE_CASE},
    )  # fmt: skip


class Person:
    def __init__(self, first: str, last: str) -> None:
        tag = random.randrange(10**8, 10**9)
        self.name = f"{first} {last}"
        self.first, self.last = first, last
        self.kvnr = kvnr_with_check_digit(random.choice("ABCDEFGH"), f"{tag:09d}"[:8])
        self.customer_id = str(tag)
        self.phone = f"+49 30 {random.randrange(1000000, 9999999)}"
        self.email = f"{first.lower()}.{tag}@example.org"
        self.dob = f"1961-04-{random.randrange(10, 28):02d}"
        self.topic = f"kompressionsstrumpf zq{tag:x}"
        self.text = (
            f"# Notiz\n{self.name} (geboren {self.dob}) fragt nach {self.topic}. Rückruf unter {self.phone}, "
            f"E-Mail {self.email}, KVNR {self.kvnr}."
        )

    @property
    def context(self) -> dict[str, Any]:
        return {"name": self.name, "kvnr": self.kvnr, "email": self.email, "phone": self.phone}

    @property
    def values(self) -> list[str]:
        return [self.name, self.first, self.last, self.kvnr, self.phone, self.email, self.dob]


def sovereign(p: Person) -> dict[str, Any]:
    return {"sovereign": {"use_case": USE_CASE, "context": p.context}}


def upload(client: OpenAI, p: Person, *, as_json_field: bool = False) -> Any:
    extra: dict[str, Any] = (
        {"sovereign": json.dumps(sovereign(p)["sovereign"])} if as_json_field else sovereign(p)
    )
    return client.files.create(
        file=("Erika's notes.md", io.BytesIO(p.text.encode()), "text/markdown"),
        purpose="assistants",
        extra_body=extra,
    )


def db_texts(postgres: Postgres) -> str:
    """Every text column (and the attributes) of the store's tables, as one string."""

    async def run() -> str:
        store = Store(postgres.dsn, DIMS)
        await store.open()
        try:
            out = []
            async with store.connection() as conn:
                for q in (
                    "SELECT name AS t FROM vector_stores",
                    "SELECT filename || ' ' || coalesce(text, '') || ' ' || purpose AS t FROM files",
                    "SELECT text || ' ' || coalesce(attributes::text, '') AS t FROM chunks",
                    "SELECT coalesce(encode(sealed, 'escape'), '') AS t FROM chunks",
                ):
                    out += [r["t"] for r in await (await conn.execute(q)).fetchall()]
            return "\n".join(out)
        finally:
            await store.close()

    return asyncio.run(run())


def audit_text(vs_dir: Path) -> str:
    return (vs_dir / "audit" / "audit.jsonl").read_text()


def test_sdk_end_to_end_tokenised_stored_restored_and_scoped(
    client: OpenAI, upstream: Upstream, postgres: Postgres, vs_dir: Path, vs_gateway: Proc, vs_key: str
) -> None:
    erika, hans = Person("Erika", "Mustermann"), Person("Hans", "Beispiel")
    erika_tag = f"tag-{random.getrandbits(48):012x}"
    store = client.vector_stores.create(
        name="patient notes", extra_body={"sovereign": {"use_case": USE_CASE}}
    )
    assert store.object == "vector_store" and store.status == "completed"

    f1 = upload(client, erika)
    assert f1.object == "file" and f1.purpose == "assistants" and f1.filename == "upload.md"
    assert f1.expires_at is not None and 29 * 86400 <= f1.expires_at - f1.created_at <= 30 * 86400 + 5
    added = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=f1.id, extra_body=sovereign(erika),
        attributes={"topic": "orders", "priority": 2, "tag": erika_tag, "about": erika.name},
    )  # fmt: skip
    assert added.status == "completed" and added.vector_store_id == store.id
    # the file object names no patient (no context on a GET): its attributes as stored, tokenised
    listed = client.vector_stores.files.list(vector_store_id=store.id).data
    assert listed and all(erika.name not in str(f.attributes) for f in listed)
    assert erika.name not in str(added.attributes)

    f2 = upload(client, hans)
    assert (
        client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=f2.id, extra_body=sovereign(hans)
        ).status
        == "completed"
    )
    # upload_and_poll takes no extra_body: its file belongs to no patient (the use case from the
    # client's header), a shared text every patient's search may find
    shared = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("faq.txt", io.BytesIO(FAQ.encode()), "text/plain")
    )
    assert shared.status == "completed"
    listed = client.vector_stores.files.list(vector_store_id=store.id)
    assert {x.id for x in listed.data} == {f1.id, f2.id, shared.id}
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 3

    # what the embedding model received: tokens, never a patient value
    sent = json.dumps([b for b in upstream.captured()])
    for value in erika.values + hans.values:
        assert value not in sent

    found = client.vector_stores.search(
        vector_store_id=store.id, query=f"{erika.topic} {erika.name}", extra_body=sovereign(erika)
    )
    assert found.data, "Erika's own notes are found"
    texts = " ".join(c.text for r in found.data for c in r.content)
    assert erika.name in texts and erika.phone in texts and erika.email in texts  # restored
    # what the policy removes (patient-support: the KVNR) was never stored, so never restored
    assert erika.kvnr not in texts and "[KVNR_REMOVED]" in texts
    assert hans.topic not in texts and hans.name not in texts  # never another patient's
    assert found.data[0].attributes == {
        "topic": "orders",
        "priority": 2,
        "tag": erika_tag,
        "about": erika.name,
    }
    assert found.data[0].file_id == f1.id and 0 <= found.data[0].score <= 1

    faq = client.vector_stores.search(vector_store_id=store.id, query=FAQ, extra_body=sovereign(hans))
    assert faq.data[0].content[0].text == FAQ and faq.data[0].file_id == shared.id

    # Hans' search: his items only, even asking for Erika's topic
    other = client.vector_stores.search(
        vector_store_id=store.id, query=erika.topic, extra_body=sovereign(hans)
    )
    results = json.dumps([r.model_dump() for r in other.data])
    assert other.data and erika.topic not in results and erika.name not in results

    # attribute filters: eq matches, ne excludes
    hit = client.vector_stores.search(
        vector_store_id=store.id, query=erika.topic, extra_body=sovereign(erika),
        filters={"type": "and", "filters": [{"key": "topic", "type": "eq", "value": "orders"}]},
    )  # fmt: skip
    miss = client.vector_stores.search(
        vector_store_id=store.id, query=erika.topic, extra_body=sovereign(erika),
        filters={"key": "topic", "type": "ne", "value": "orders"},
    )  # fmt: skip
    assert hit.data and not miss.data

    # what the database holds: no value in any text column
    held = db_texts(postgres)
    for value in erika.values + hans.values:
        assert value not in held
    assert erika.topic in held  # the scan can fail: the non-patient text is there

    # the audit trail: operations and counts, never values, ids or filenames
    trail = audit_text(vs_dir)
    for value in [*erika.values, *hans.values, erika.topic, "Erika's notes", f1.id, store.id]:
        assert value not in trail
    ops = {json.loads(line).get("operation") for line in trail.splitlines()}
    assert {"file_upload", "vector_store_create", "vector_store_file_add", "search"} <= ops

    # erasure removes what this API stored for Erika; Hans stays
    erased = httpx.post(
        f"{vs_gateway.url}/v1/sovereign/data_subjects/erase", json=sovereign(erika),
        headers={"authorization": f"Bearer {vs_key}"}, timeout=120,
    )  # fmt: skip
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["files"] == 1 and erased.json()["deleted"]["chunks"] >= 1
    after = client.vector_stores.search(
        vector_store_id=store.id, query=erika.topic, extra_body=sovereign(erika)
    )
    assert [r.file_id for r in after.data] == [shared.id]  # the shared text only
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f1.id)
    assert erika.topic not in db_texts(postgres)
    # and on disk (tests/memory/test_rights.py's proof, for what this API wrote: the file's text,
    # its chunks and their attributes): nothing of Erika in any file of the data directory
    wanted = {
        "erika": erika.topic.encode(),
        "erika attribute": erika_tag.encode(),
        "hans": hans.topic.encode(),
    }
    found = scan(postgres.data_dir, wanted)
    assert found["erika"] == [] and found["erika attribute"] == [], found
    assert found["hans"], "the scan did not find the other patient's text: it cannot show an absence"
    assert {x.id for x in client.vector_stores.files.list(vector_store_id=store.id).data} == {
        f2.id,
        shared.id,
    }

    # deletes
    assert client.vector_stores.files.delete(vector_store_id=store.id, file_id=f2.id).deleted
    assert client.files.delete(f2.id).deleted
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_sovereign_as_one_json_form_field(client: OpenAI) -> None:
    p = Person("Greta", "Beispiel")
    f = upload(client, p, as_json_field=True)
    assert f.bytes == len(p.text.encode())
    assert client.files.retrieve(f.id).id == f.id
    with pytest.raises(openai.BadRequestError) as err:
        client.files.content(f.id)
    assert err.value.status_code == 400


def test_refusals_name_the_field_and_echo_nothing(client: OpenAI, vs_dir: Path) -> None:
    p = Person("Erika", "Mustermann")
    store = client.vector_stores.create(name="memory")
    f = upload(client, p)
    client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=f.id, extra_body=sovereign(p)
    )
    cases: list[tuple[Any, int, str]] = [
        # a memory store is never searched without the patient
        (lambda: client.vector_stores.search(vector_store_id=store.id, query=p.name), 422,
         "sovereign.context"),
        (lambda: client.vector_stores.search(vector_store_id=store.id, query=p.name, rewrite_query=True,
                                             extra_body=sovereign(p)), 422, "rewrite_query"),
        (lambda: client.vector_stores.search(vector_store_id=store.id, query=p.name, max_num_results=51,
                                             extra_body=sovereign(p)), 422, "max_num_results"),
        (lambda: client.vector_stores.search(vector_store_id=store.id, query=p.name, extra_body=sovereign(p),
                                             ranking_options={"ranker": p.name}), 422,
         "ranking_options.ranker"),
        (lambda: client.vector_stores.search(vector_store_id=store.id, query=p.name, extra_body=sovereign(p),
                                             filters={"key": "k", "type": "in", "value": p.name}), 422,
         "filters.type"),
        (lambda: client.vector_stores.create(name=p.name), 422, "name"),
        (lambda: client.vector_stores.create(name="x", metadata={"patient": p.name}), 422, "metadata"),
        (lambda: client.files.create(file=("a.pdf", io.BytesIO(b"%PDF"), "application/pdf"),
                                     purpose="assistants"),
         415, "file"),
        (lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id=f.id,
                                                   attributes={"dob": 19610412}, extra_body=sovereign(p)),
         422, "attributes"),
        # a key is client text too: a patient's name or id as a key is refused, never echoed
        (lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id=f.id,
                                                   attributes={f"{p.last}_{p.first}": "x"},
                                                   extra_body=sovereign(p)),
         422, "attributes"),
        (lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id=f.id,
                                                   attributes={f"id_{p.kvnr}": "x"}, extra_body=sovereign(p)),
         422, "attributes"),
        (lambda: client.vector_stores.retrieve("vs_" + p.kvnr), 404, "vector_store_id"),
        # a file with personal data and no patient would be shared and out of reach of erasure
        (lambda: client.files.create(file=("n.txt", io.BytesIO(p.text.encode()), "text/plain"),
                                     purpose="assistants"),
         422, "sovereign.context"),
    ]  # fmt: skip
    for i, (do, status, param) in enumerate(cases):
        with pytest.raises(openai.APIStatusError) as err:
            do()
        assert err.value.status_code == status, (i, err.value.response.text)
        body = err.value.response.json()["error"]
        assert body["param"] == param, (i, body)
        for value in p.values:
            assert value not in err.value.response.text
    # a use case without memory stores nothing
    with pytest.raises(openai.UnprocessableEntityError) as no_memory:
        client.vector_stores.create(name="x", extra_headers={"x-sovereign-use-case": "catalog-search"})
    assert no_memory.value.response.json()["error"]["code"] == "memory_not_allowed"
    trail = audit_text(vs_dir)
    for value in p.values:
        assert value not in trail


def test_chunks_fit_the_model_overlap_and_never_cut_a_token() -> None:
    words = [f"w{i:03d}" for i in range(400)] + ["[NAME_3f9a2c]", "[EMAIL_a1b2c3]"] * 20
    text = " ".join(words)
    size, overlap = chunk_sizes(None)  # auto: OpenAI's 800/400 tokens, bounded by the model
    assert size == MODEL_TOKENS and 0 < overlap <= size // 2
    pieces = chunks_of(text, size, overlap)
    assert len(pieces) > 1 and all(len(p) <= size for p in pieces)
    for token in ("[NAME_3f9a2c]", "[EMAIL_a1b2c3]"):
        assert sum(p.split().count(token) for p in pieces) >= 20  # whole tokens only
    assert all(
        w.startswith(("w", "[")) and (w.endswith("]") or w[1:].isdigit()) for p in pieces for w in p.split()
    )
    assert set(" ".join(pieces).split()) == set(words)
    # consecutive chunks overlap: the next one starts with words the previous one ends with
    assert pieces[1].split()[0] in pieces[0].split()
    static = ChunkingStatic(
        type="static", static=StaticChunking(max_chunk_size_tokens=200, chunk_overlap_tokens=50)
    )
    assert chunk_sizes(static) == (200, 50)
    with pytest.raises(GatewayError) as err:
        chunk_sizes(
            ChunkingStatic(
                type="static", static=StaticChunking(max_chunk_size_tokens=200, chunk_overlap_tokens=101)
            )
        )
    assert err.value.param == "chunking_strategy.static.chunk_overlap_tokens"


def test_unit_length_vectors() -> None:
    v = unit_length([3.0, 4.0])
    assert v == [0.6, 0.8]
    already = [0.6, 0.8]
    assert unit_length(already) is already  # unit length within tolerance: untouched
    assert unit_length([0.0, 0.0]) == [0.0, 0.0]
    assert abs(math.fsum(x * x for x in unit_length([0.1] * 384)) - 1.0) < 1e-9


def test_retention_other_tenants_and_audit_pairs(
    client: OpenAI, vs_gateway: Proc, postgres: Postgres, vs_dir: Path
) -> None:
    p = Person("Greta", "Beispiel")
    store = client.vector_stores.create(name="retention")
    f = upload(client, p)
    client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=f.id, extra_body=sovereign(p)
    )
    assert client.vector_stores.search(vector_store_id=store.id, query=p.topic, extra_body=sovereign(p)).data

    # another tenant's key finds nothing of this tenant's: 404, the id not echoed
    other_key = ClientKeyStore(vs_dir / "keys.json").create("clinic-vstore-other")[1]
    other = OpenAI(
        base_url=f"{vs_gateway.url}/v1", api_key=other_key, max_retries=0, timeout=60,
        default_headers={"x-sovereign-use-case": USE_CASE},
    )  # fmt: skip
    for do in (
        lambda: other.vector_stores.retrieve(store.id),
        lambda: other.files.retrieve(f.id),
        lambda: other.vector_stores.search(vector_store_id=store.id, query=p.topic, extra_body=sovereign(p)),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            do()
        assert store.id not in err.value.response.text and f.id not in err.value.response.text

    # once expired (as if written 31 days ago under a 30-day retention), nothing is answered
    async def age() -> None:
        s = Store(postgres.dsn, DIMS)
        await s.open()
        try:
            async with s.connection() as conn:
                for table in ("chunks", "files"):
                    await conn.execute(
                        f"UPDATE {table} SET created_at = now() - interval '31 days', "  # noqa: S608
                        "expires_at = now() - interval '1 day' WHERE expires_at > now() "
                        "AND text LIKE %s",
                        (f"%{p.topic}%",),
                    )
        finally:
            await s.close()

    asyncio.run(age())
    assert (
        client.vector_stores.search(vector_store_id=store.id, query=p.topic, extra_body=sovereign(p)).data
        == []
    )
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)

    # every write and search has its write-ahead record; the final ones carry counts only
    records = [json.loads(line) for line in audit_text(vs_dir).splitlines() if line.strip()]
    ours = [r for r in records if r.get("endpoint") == "vector_stores"]
    finals = {r["request_id"]: r for r in ours if r["kind"] == "request"}
    admitted = {r["request_id"] for r in ours if r["kind"] == "admit"}
    assert {"file_upload", "vector_store_file_add", "search"} <= {r["operation"] for r in finals.values()}
    for rid, r in finals.items():
        if r["operation"] in {"file_upload", "vector_store_file_add", "search"} and r["status"] == 200:
            assert rid in admitted, r["operation"]
            assert r["counts"] and all(isinstance(n, int) for n in r["counts"].values())


def test_lists_page_by_cursor_as_the_sdk_expects(vs_gateway: Proc, vs_dir: Path) -> None:
    """limit, order, after and before of OpenAI's list calls, has_more set when more lie
    beyond the page: the SDK's auto-paging (after = the page's last id) walks every item once,
    where one page of `limit` items was all before. A tenant of its own: nothing else listed."""
    key = ClientKeyStore(vs_dir / "keys.json").create("clinic-vstore-pages")[1]
    client = OpenAI(
        base_url=f"{vs_gateway.url}/v1", api_key=key, max_retries=0, timeout=60,
        default_headers={"x-sovereign-use-case": USE_CASE},
    )  # fmt: skip
    made = [client.vector_stores.create(name=f"page {i}").id for i in range(5)]
    newest_first = list(reversed(made))
    assert [s.id for s in client.vector_stores.list(limit=2)] == newest_first  # auto-paged: 3 pages
    first = client.vector_stores.list(limit=2)
    assert [s.id for s in first.data] == newest_first[:2] and first.has_more is True
    last = client.vector_stores.list(limit=2, after=newest_first[3])
    assert [s.id for s in last.data] == newest_first[4:] and last.has_more is False
    assert [s.id for s in client.vector_stores.list(limit=3, order="asc")] == made
    before = client.vector_stores.list(limit=2, before=newest_first[3])
    assert [s.id for s in before.data] == newest_first[1:3] and before.has_more is True
    with pytest.raises(openai.NotFoundError) as err:
        client.vector_stores.list(after="vs_" + "0" * 32)
    assert "after" in err.value.response.text
    # both: the items between them (the SDK's auto-paging adds `after` to a `before` page)
    between = client.vector_stores.list(after=newest_first[0], before=newest_first[4], limit=2)
    assert [s.id for s in between.data] == newest_first[1:3] and between.has_more is True
    assert [s.id for s in between] == newest_first[1:4]
    for query in ({"limit": 0}, {"order": "up"}):
        bad = httpx.get(
            f"{vs_gateway.url}/v1/vector_stores", params=query, timeout=30,
            headers={"authorization": f"Bearer {key}", "x-sovereign-use-case": USE_CASE},
        )  # fmt: skip
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_field", bad.text

    # a store's files: FAQ texts (no patient), attached one by one
    store = client.vector_stores.create(name="files")
    files = []
    for i in range(3):
        f = client.files.create(
            file=(f"faq{i}.txt", io.BytesIO(f"{FAQ} ({i})".encode()), "text/plain"), purpose="assistants"
        )
        client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=f.id)
        files.append(f.id)
    listed = client.vector_stores.files.list(vector_store_id=store.id, limit=1)
    assert [f.id for f in listed] == list(reversed(files))
    assert not client.vector_stores.files.list(vector_store_id=store.id, filter="in_progress").data
    assert len(client.vector_stores.files.list(vector_store_id=store.id, filter="completed").data) == 3


def test_a_refusal_without_a_body_is_recorded_by_a_gateway_that_served_nothing(
    bao: Bao, postgres: Postgres, tmp_path: Path, gateway_upstream_url: str
) -> None:
    """A GET or DELETE refused before its keys step (an id of the wrong form, a bad list
    parameter, files.content) fetches the audit key for its record like a refusal after a
    body: before, a gateway with no audit key in memory (its first request, or idle past the
    key's lifetime) lost the record and counted an audit failure (an alert that pages)."""
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    dsn_file = tmp_path / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    dsn_file.chmod(0o600)
    config = gateway_config(
        tmp_path, bao.address, bao.gateway_token, gateway_upstream_url, memory={"dsn_file": str(dsn_file)}
    )
    headers = {"authorization": f"Bearer {key}", "x-sovereign-use-case": USE_CASE}
    with running_gateway(config, tmp_path) as proc:
        ids = []
        for path in ("/v1/vector_stores/vs_not-an-id", "/v1/vector_stores?limit=0"):
            rid = str(uuid.uuid4())
            answer = httpx.get(proc.url + path, headers={**headers, "x-request-id": rid}, timeout=30)
            assert answer.status_code in (404, 422), answer.text
            ids.append(rid)
        metrics = httpx.get(proc.url + "/metrics", timeout=30).text
    records = [json.loads(line) for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    finals = {r["request_id"]: r for r in records if r.get("kind") == "request"}
    assert [(finals[i]["outcome"], finals[i]["status"]) for i in ids] == [
        ("rejected", 404),
        ("rejected", 422),
    ]
    assert "sovereign_gateway_audit_failures_total 0.0" in metrics


def test_upload_size_bound(client: OpenAI) -> None:
    """memory.max_file_bytes (1 MiB by default): one byte more is 413, naming the setting."""
    limit = 1024 * 1024
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(
            file=("big.txt", io.BytesIO(b"a " * (limit // 2) + b"b"), "text/plain"), purpose="user_data"
        )
    assert err.value.status_code == 413 and "memory.max_file_bytes" in err.value.response.text
    ok = client.files.create(
        file=("big.txt", io.BytesIO(b"a " * (limit // 2)), "text/plain"), purpose="user_data"
    )
    assert ok.bytes == limit and ok.purpose == "user_data"
    # a form that cannot be read: 400, never a server error
    for ctype, body in (("multipart/form-data", b"x"), ("multipart/form-data; boundary=abc", b"garbage")):
        bad = httpx.post(
            f"{client.base_url}files", content=body, timeout=30,
            headers={"authorization": f"Bearer {client.api_key}", "content-type": ctype,
                     "x-sovereign-use-case": USE_CASE},
        )  # fmt: skip
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_multipart"), bad.text


def test_kill_switch_refuses_uploads_and_searches(
    client: OpenAI, vs_dir: Path, bao: Bao, upstream: Upstream
) -> None:
    p = Person("Erika", "Mustermann")
    store = client.vector_stores.create(name="kill switch")
    f = upload(client, p)
    client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=f.id, extra_body=sovereign(p)
    )
    bao_client = hvac.Client(url=bao.address, token=bao.root, timeout=10)
    created = bao_client.auth.token.create(policies=[openbao_contract.INCIDENT_POLICY_NAME], ttl="1h")
    token = vs_dir / "operator.token"
    token.write_text(created["auth"]["client_token"])
    address = ["--openbao-address", bao.address, "--token-file", str(token)]

    def search() -> Any:
        return client.vector_stores.search(vector_store_id=store.id, query=p.topic, extra_body=sovereign(p))

    suspend = ["incident", "suspend", "--use-case", USE_CASE, "--reason", "drill", "--by", "oncall"]
    assert sovereign_cli([*suspend, *address]) == 0
    try:
        for _ in range(400):  # the gateway polls every 0.2 s; this only ends a hang
            try:
                search()
            except openai.APIStatusError as exc:
                if exc.status_code == 503:
                    break
        upstream.script(capture=True)
        for do in (search, lambda: upload(client, p)):
            with pytest.raises(openai.APIStatusError) as err:
                do()
            assert err.value.status_code == 503
            assert err.value.response.json()["error"]["code"] == "use_case_suspended"
        assert upstream.captured() == []  # nothing embedded
    finally:
        resume = ["incident", "resume", "--use-case", USE_CASE, "--by", "oncall", "--reason", "drill over"]
        assert sovereign_cli([*resume, *address]) == 0
        for _ in range(400):
            try:
                search()
                break
            except openai.APIStatusError:
                continue
