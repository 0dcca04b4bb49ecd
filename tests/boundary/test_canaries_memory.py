"""Leak canaries over embeddings and memory (issue #27, Done-when): synthetic patients
(tests/phi_corpus.py, the chat canaries' corpus and leak scanner) through every path on which
text reaches the embedding model or the store, then every place scanned for every identifier.

Paths, one client, in order (so each text the embedding model received is known to be whose):

- ``POST /v1/embeddings`` of use case patient-support, the patient's context with it: the
  message as the patient wrote it;
- chat of use case catalog-search (catalogue retrieval, gateway/catalogue.py) with the
  patient's context, every fourth patient: the message's text is embedded as the query;
- the catalogue (``POST /v1/sovereign/catalogue``): one product per patient (at most
  ``PRODUCTS``) whose sku, name and category carry that patient's identifiers of the pattern
  and checksum kinds (KVNR, IBAN, e-mail, phone, card) and whose cost and margin are
  internal pricing; a catalogue has no patient context, so names there are the name
  recogniser's (the chat canaries measure that rate) and are not put in.

Scanned: (a) everything the embedding model received (per request, for the values of the
patient whose it was: ``strict`` of the chat canaries: every value of the patient, other
persons' pattern kinds); (b) every text, bytea, json and vector column of every table of the
real PostgreSQL (tests/memory/scan.py), and every file of its data directory (heap, indexes,
WAL); (c) the gateway's log and audit trail: (b) and (c) for every distinctive value of every
patient and every product's cost and margin. Zero hits. The embedding model is the scripted
double (its log is not scanned: it logs no request text); a real embedding server's log is
not part of this run.

``make test`` runs ``CANARY_DEFAULT`` patients; ``make canaries`` sets SOVEREIGN_CANARY_MESSAGES
(10,000), which this module honours as the chat canaries do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clientkeys import ClientKeyStore
from tests.boundary.test_canaries import audit_fields, strict
from tests.memory.conftest import Postgres
from tests.memory.conftest import postgres as postgres  # the real PostgreSQL fixture
from tests.memory.scan import data_dir_text, database_text
from tests.phi_corpus import Item, distinctive, generate, leaks
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway

CANARY_DEFAULT = 200
MESSAGES = int(os.environ.get("SOVEREIGN_CANARY_MESSAGES", str(CANARY_DEFAULT)))
#: the most products in the catalogue (one load: the body limit, limits.max_body_bytes, bounds it)
PRODUCTS = 1000
TENANT = "clinic-canary-memory"
#: the identifiers put into products: the kinds the filter finds by pattern or checksum without a
#: context (a bare date is none: "June 19, 1931" in a product name is not a patient's birth date
#: without a context that says so, and the filter leaves it)
PATTERN_KINDS = {"card", "iban", "kvnr", "e-mail", "phone"}


@pytest.fixture(scope="module")
def gw_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canaries-memory")


@pytest.fixture(scope="module")
def gateway_proc(bao: Bao, postgres: Postgres, gw_tmp: Path, upstream_server: Upstream) -> Iterator[Proc]:
    dsn_file = gw_tmp / "memory.dsn"
    dsn_file.write_text(postgres.dsn)
    dsn_file.chmod(0o600)
    url = upstream_server.url
    embed = {"url": f"{url}/v1", "model": "scripted-embed", "kind": "embeddings", "dimensions": 384}
    config = gateway_config(
        gw_tmp, bao.address, bao.gateway_token, url, upstreams={"embed": embed},
        memory={"dsn_file": str(dsn_file)},
    )  # fmt: skip
    with running_gateway(config, gw_tmp, log_level="info") as proc:
        yield proc


def product(i: int, item: Item) -> dict[str, Any]:
    """A product whose free-text fields carry the patient's pattern-kind identifiers."""
    values = [v.value for v in item.fields if v.kind in PATTERN_KINDS]
    name = " ".join(["Kit", *values[: len(values) // 2]])[:200]
    category = " ".join(["care", *values[len(values) // 2 :]])[:200]
    # eight digits and more: a shorter number turns up by chance in a data directory's binary files
    cost, margin = f"{1_234_567 + 7919 * i}.{i % 89 + 10}", f"{10 + i % 80}.{(7 * i) % 900_000 + 100_000}"
    return {"sku": f"S-{i}-{values[0]}"[:64], "name": name, "category": category,
            "price": f"{10 + i % 50}.99", "cost": cost, "margin": margin}  # fmt: skip


def test_no_identifier_reaches_the_embedding_model_or_the_store(
    gateway_proc: Proc,
    postgres: Postgres,
    gw_tmp: Path,
    upstream_server: Upstream,
) -> None:
    upstream = upstream_server
    upstream.reset()
    upstream.script(capture=True)
    items = generate(MESSAGES, seed=2027, others=True)
    key = ClientKeyStore(gw_tmp / "keys.json").create(TENANT)[1]
    expected: list[int] = []  # whose each body the upstream captured is (item number)
    errors: list[str] = []
    with httpx.Client(
        base_url=gateway_proc.url, timeout=120, headers={"authorization": f"Bearer {key}"}
    ) as http:
        catalogue = [product(i, item) for i, item in enumerate(items[:PRODUCTS])]
        load = {"sovereign": {"use_case": "catalog-search"}, "products": catalogue}
        loaded = http.post("/v1/sovereign/catalogue", json=load)
        assert loaded.status_code == 200, loaded.text
        load_bodies = len(upstream.captured())
        for i, item in enumerate(items):
            sovereign = {"use_case": "patient-support", "context": item.context}
            answer = http.post(
                "/v1/embeddings", json={"model": "embed", "input": [item.text], "sovereign": sovereign}
            )
            if answer.status_code != 200:
                errors.append(answer.text)
            expected.append(i)
            if i % 4 == 0:
                body = {"messages": [{"role": "user", "content": item.text}],
                        "sovereign": {"use_case": "catalog-search", "context": item.context}}  # fmt: skip
                answer = http.post("/v1/chat/completions", json=body)
                if answer.status_code != 200:
                    errors.append(answer.text)
                expected += [i, i]  # the query embedded, then the chat model's request
    assert errors == []
    captured = upstream.captured()
    load_texts = [t for b in captured[:load_bodies] for t in b["input"]]
    assert len(load_texts) == len(catalogue)
    bodies = captured[load_bodies:]
    assert len(bodies) == len(expected)
    # (a) what the embedding model (and the chat model) received, each for its patient's values
    model_hits = []
    for whose, body in zip(expected, bodies, strict=True):
        text = json.dumps(body["input"] if "input" in body else body["messages"], ensure_ascii=False)
        model_hits += [(whose, s) for s in leaks(strict(items[whose]), text)]
    # the catalogue's texts: every product's identifiers, cost and margin
    pricing = [v for p in catalogue for v in (p["cost"], p["margin"])]
    catalogue_secrets = sorted(
        {v.value for item in items[:PRODUCTS] for v in item.fields if v.kind in PATTERN_KINDS} | set(pricing)
    )
    catalogue_hits = leaks(catalogue_secrets, "\n".join(load_texts))
    # (b) the store, every column of every table, and its data directory; (c) log and audit trail
    secrets = sorted({s for item in items for s in item.secrets if distinctive(s)} | set(catalogue_secrets))
    places = {f"column {col}": text for col, text in database_text(postgres.dsn).items()}
    places["data directory"] = data_dir_text(postgres.data_dir)
    places["gateway log"] = "\n".join(p.read_text(errors="replace") for p in gw_tmp.glob("gateway-*.log"))
    places["audit trail"] = audit_fields(gw_tmp / "audit" / "audit.jsonl")
    hits = {place: leaks(secrets, text) for place, text in places.items()}
    print(f"\ncanaries over embeddings and memory: {MESSAGES} patients, {len(bodies)} requests to the "
          f"models, {len(load_texts)} products embedded and stored: {len(model_hits)} + "
          f"{len(catalogue_hits)} hits; {len(secrets)} values scanned in {len(places)} places: "
          f"{sum(len(h) for h in hits.values())} hits")  # fmt: skip
    assert model_hits == [] and catalogue_hits == []
    # the places were there, and the scan finds values where they are
    assert places["column catalogue_items.text"].count("sku: S-") == len(catalogue)
    assert places["data directory"] and places["audit trail"]
    assert leaks(secrets, json.dumps(catalogue[0])) and leaks(strict(items[0]), items[0].text)
    assert {place: found for place, found in hits.items() if found} == {}
