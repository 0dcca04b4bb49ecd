"""Catalogue retrieval through a real gateway process (real OpenBao, real PostgreSQL + pgvector,
the scripted upstream double answering chat and embeddings): issue #27 item 6.

The double's vectors are deterministic (tests/doubles/scripted_upstream.py ``vector``: a bag
of hashed words, L2-normalised), so the products the chat model must be shown are computed
here from the texts the embedding model received, independently of the store's search.
What is checked: cost and margin never reach the embedding model, the store (every column of
every table) or the chat model; a patient identifier in a product name is removed before it is
embedded; the chat model sees the top_k nearest products; a reload replaces the catalogue;
without the embedding model or the store, the chat is refused (503) and nothing reaches the
chat model; a use case without retrieval has no catalogue to load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.clientkeys import ClientKeyStore
from gateway.policy import load_policies
from tests.doubles.scripted_upstream import vector
from tests.memory.conftest import Postgres
from tests.memory.scan import database_text
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway

TENANT = "shop-catalogue"
USE_CASE = "catalog-search"
TOP_K = load_policies()[USE_CASE].retrieval.top_k  # type: ignore[union-attr]
CATALOGUE = "/v1/sovereign/catalogue"
KVNR = "A123456780"  # a valid KVNR (check digit), written into one product's name
#: internal pricing: values that must never leave the request that carries them
COSTS = ["3141.59", "2718.28", "1414.21", "1732.05", "2236.06", "2645.75", "1123.58", "3316.62"]
MARGINS = ["41.42", "73.21", "23.61", "64.58", "12.35", "31.66", "57.72", "69.31"]
NAMES = [
    "Blood pressure monitor with arm cuff",
    "Digital thermometer for fast fever measurement",
    "Compression stockings knee high",
    f"Wrist blood pressure monitor for {KVNR}",
    "Pulse oximeter finger clip",
    "Heating pad for back pain",
    "Inhaler spacer for children",
    "Pill organiser weekly",
]


def products() -> list[dict[str, Any]]:
    return [
        {"sku": f"SKU-{i:03d}", "name": name, "category": "home care", "price": f"{19 + i}.90",
         "cost": COSTS[i], "margin": MARGINS[i]}
        for i, name in enumerate(NAMES)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gw_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalogue")


@pytest.fixture(scope="module")
def api_key(gw_tmp: Path) -> str:
    return ClientKeyStore(gw_tmp / "keys.json").create(TENANT)[1]


def config(gw_tmp: Path, bao: Bao, url: str, dsn: str | None) -> Path:
    memory: dict[str, Any] = {}
    if dsn is not None:
        dsn_file = gw_tmp / "memory.dsn"
        dsn_file.write_text(dsn)
        dsn_file.chmod(0o600)
        memory = {"dsn_file": str(dsn_file)}
    embed = {"url": f"{url}/v1", "model": "scripted-embed", "kind": "embeddings", "dimensions": 384}
    return gateway_config(
        gw_tmp, bao.address, bao.gateway_token, url, upstreams={"embed": embed}, memory=memory
    )


@pytest.fixture(scope="module")
def gateway_proc(bao: Bao, postgres: Postgres, gw_tmp: Path, upstream_server: Upstream) -> Iterator[Proc]:
    with running_gateway(config(gw_tmp, bao, upstream_server.url, postgres.dsn), gw_tmp) as proc:
        yield proc


def post(proc: Proc, path: str, key: str, body: Any) -> httpx.Response:
    return httpx.post(proc.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)


def load(proc: Proc, key: str, items: list[dict[str, Any]], use_case: str = USE_CASE) -> httpx.Response:
    return post(proc, CATALOGUE, key, {"sovereign": {"use_case": use_case}, "products": items})


def chat(proc: Proc, key: str, text: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}], "sovereign": {"use_case": USE_CASE}}
    return post(proc, "/v1/chat/completions", key, body)


def embedded(upstream: Upstream) -> list[str]:
    return [t for b in upstream.captured() if "input" in b for t in b["input"]]


def chats(upstream: Upstream) -> list[dict[str, Any]]:
    return [b for b in upstream.captured() if "messages" in b]


def records(gw_tmp: Path) -> list[dict[str, Any]]:
    lines = (gw_tmp / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def similarity(query: str, text: str) -> float:
    """Cosine of the double's (unit) vectors of *query* and *text*."""
    return float(np.dot(np.asarray(vector(query, 384)), np.asarray(vector(text, 384))))


def is_top_k(query: str, shown: list[str], texts: list[str], k: int) -> bool:
    """Whether *shown* are *k* of *texts* nearest to *query*, nearest first (ties in any order)."""
    sims = [similarity(query, t) for t in shown]
    rest = [similarity(query, t) for t in texts if t not in shown]
    ordered = all(a >= b - 1e-6 for a, b in pairwise(sims))
    return len(shown) == k == len(set(shown)) and ordered and all(min(sims) >= r - 1e-6 for r in rest)


def test_catalogue_is_filtered_embedded_stored_and_retrieved(
    gateway_proc: Proc, postgres: Postgres, gw_tmp: Path, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    loaded = load(gateway_proc, api_key, products())
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["items"] == len(NAMES)
    stored_texts = embedded(upstream)
    assert len(stored_texts) == len(NAMES)
    # public fields only, the KVNR in the name removed before embedding
    first = "sku: SKU-000; name: Blood pressure monitor with arm cuff; category: home care; price: 19.90"
    assert stored_texts[0] == first
    assert KVNR not in stored_texts[3] and "[KVNR_REMOVED]" in stored_texts[3]
    secrets = [*COSTS, *MARGINS, KVNR]
    everything = json.dumps(stored_texts)
    assert [s for s in secrets if s in everything] == []
    # the store: every column of every table
    db = database_text(postgres.dsn)
    assert "catalogue_items.text" in db and "SKU-000" in db["catalogue_items.text"]
    found = {col: [s for s in secrets if s in text] for col, text in db.items()}
    assert {col: hits for col, hits in found.items() if hits} == {}

    upstream.script(capture=True)  # forget the load's requests
    query = "Which blood pressure monitor do you have?"
    answer = chat(gateway_proc, api_key, query)
    assert answer.status_code == 200, answer.text
    [query_embedded] = embedded(upstream)
    assert query_embedded == query  # no patient value in it: as sent
    [sent] = chats(upstream)
    system = sent["messages"][0]
    assert system["role"] == "system"
    section = system["content"].split("Catalogue matches:\n", 1)[1]
    shown = [line.removeprefix("- ") for line in section.splitlines()]
    assert is_top_k(query_embedded, shown, stored_texts, TOP_K)
    assert not is_top_k(query_embedded, shown[::-1], stored_texts, TOP_K)  # the check can fail
    assert set(shown[:2]) == {stored_texts[0], stored_texts[3]}  # the two blood pressure monitors
    assert [s for s in secrets if s in json.dumps(sent)] == []
    final = [r for r in records(gw_tmp) if r.get("request_id") == answer.headers["x-request-id"]]
    assert [r["kind"] for r in final] == ["admit", "request"]
    assert final[1]["retrieved"] == TOP_K and "retrieved" not in final[0]


def test_a_patient_identifier_in_the_query_is_removed_before_embedding(
    gateway_proc: Proc, api_key: str, upstream: Upstream
) -> None:
    assert load(gateway_proc, api_key, products()).status_code == 200
    upstream.script(capture=True)
    answer = chat(gateway_proc, api_key, f"Thermometer for my insurance number {KVNR}?")
    assert answer.status_code == 200, answer.text
    [query] = embedded(upstream)
    assert KVNR not in query and "[KVNR_REMOVED]" in query
    assert KVNR not in json.dumps(chats(upstream))


def test_a_reload_replaces_the_catalogue(
    gateway_proc: Proc, postgres: Postgres, api_key: str, upstream: Upstream
) -> None:
    assert load(gateway_proc, api_key, products()).status_code == 200
    again = load(gateway_proc, api_key, products()[:2])
    assert again.status_code == 200 and again.json() == {
        "object": "sovereign.catalogue", "use_case": USE_CASE, "items": 2, "replaced": len(NAMES)
    }  # fmt: skip
    assert database_text(postgres.dsn)["catalogue_items.text"].count("sku: ") == 2
    upstream.script(capture=True)
    answer = chat(gateway_proc, api_key, "pill organiser")
    assert answer.status_code == 200
    assert chats(upstream)[0]["messages"][0]["content"].count("\n- ") == 2
    assert load(gateway_proc, api_key, []).json()["replaced"] == 2  # an empty load empties it
    upstream.script(capture=True)
    assert chat(gateway_proc, api_key, "pill organiser").status_code == 200
    assert "Catalogue matches: none." in chats(upstream)[0]["messages"][0]["content"]


def test_without_the_embedding_model_the_chat_is_refused(
    gateway_proc: Proc, api_key: str, upstream: Upstream
) -> None:
    assert load(gateway_proc, api_key, products()).status_code == 200
    upstream.script(mode="emb_wrong_dims", capture=True)  # a broken embedding server
    answer = chat(gateway_proc, api_key, "thermometer")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert chats(upstream) == []  # nothing reached the chat model


def test_without_the_store_the_chat_is_refused(bao: Bao, upstream: Upstream, tmp_path: Path) -> None:
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    with running_gateway(config(tmp_path, bao, upstream.url, None), tmp_path) as proc:
        upstream.script(capture=True)
        answer = chat(proc, key, "thermometer")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable"
        assert upstream.captured() == []  # neither model was asked
        refused = load(proc, key, products())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"


def test_refusals_name_the_field_and_echo_nothing(gateway_proc: Proc, api_key: str) -> None:
    no_retrieval = load(gateway_proc, api_key, products(), use_case="patient-support")
    assert no_retrieval.status_code == 422
    assert no_retrieval.json()["error"]["code"] == "retrieval_not_allowed"
    bad = products()
    bad[2]["price"] = f"not a price {KVNR}"
    refused = load(gateway_proc, api_key, bad)
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "products.2.price"
    assert KVNR not in refused.text
    empty = load(gateway_proc, api_key, [{"cost": "1.00"}])
    assert empty.status_code == 422 and empty.json()["error"]["param"] == "products.0"


def test_cli_catalog_load(gateway_proc: Proc, api_key: str, tmp_path: Path, upstream: Upstream) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(api_key)
    upstream.script(capture=True)
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "catalog", "load", "--file", "-", "--tenant", TENANT,
         "--target", gateway_proc.url, "--key-file", str(key_file)],
        input=json.dumps(products()), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{len(NAMES)} products" in done.stdout
    assert len(embedded(upstream)) == len(NAMES)


def test_a_use_case_without_retrieval_embeds_nothing(
    gateway_proc: Proc, gw_tmp: Path, api_key: str, upstream: Upstream
) -> None:
    assert load(gateway_proc, api_key, products()).status_code == 200
    upstream.script(capture=True)
    body = {"messages": [{"role": "user", "content": "blood pressure monitor"}],
            "sovereign": {"use_case": "order-support"}}  # fmt: skip
    answer = post(gateway_proc, "/v1/chat/completions", api_key, body)
    assert answer.status_code == 200, answer.text
    assert embedded(upstream) == [] and "Catalogue" not in json.dumps(chats(upstream))
    final = [r for r in records(gw_tmp) if r.get("request_id") == answer.headers["x-request-id"]]
    assert [r["kind"] for r in final] == ["admit", "request"] and "retrieved" not in final[1]
