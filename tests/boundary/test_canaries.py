"""Leak canaries under load: thousands of synthetic patients (Faker de_DE / en_GB, fictitious)
through the gateway from concurrent clients, plain and streamed, all use cases, with a share of
requests that are refused (bad context fields). Then every place a value could surface is
scanned for every known value of every patient: what the model received, every error answer,
every line the gateway logged (at info level), and the audit trail. Zero hits, and zero
connections outside the allowlist.

``make test`` sends SOVEREIGN_CANARY_MESSAGES=1500; ``make canaries`` 10,000 (recorded in
benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from gateway.clientkeys import ClientKeyStore
from gateway.policy import load_policies
from tests.phi_corpus import Item, distinctive, generate, leaks
from tests.support import Bao, Upstream, gateway_config, running_gateway

MESSAGES = int(os.environ.get("SOVEREIGN_CANARY_MESSAGES", "1500"))
CLIENTS = 4
USE_CASES = sorted(load_policies())


# digests and ids the gateway computes (hex): scanning them would find digit runs by chance
COMPUTED = {"hash", "mac", "prev", "wrapped", "request_id", "ts"}


def audit_fields(trail: Path) -> str:
    """The audit records without their computed digests, ids and timestamps."""
    records = (json.loads(line) for line in trail.read_text().splitlines())
    return "\n".join(json.dumps({k: v for k, v in r.items() if k not in COMPUTED}) for r in records)


def test_no_patient_value_surfaces_anywhere_under_load(bao: Bao, upstream: Upstream, tmp_path: Path) -> None:
    items = generate(MESSAGES, seed=2026)
    upstream.script(mode="echo", capture=True, chunk_chars=5)
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    statuses: Counter[int] = Counter()
    errors: list[str] = []  # every answer that was not a 200
    failures: list[BaseException] = []
    t0 = time.monotonic()
    with running_gateway(config, tmp_path, log_level="info") as gateway:
        _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic-canary")
        headers = {"authorization": f"Bearer {key}"}

        def client(part: list[tuple[int, Item]]) -> None:
            try:
                with httpx.Client(base_url=gateway.url, timeout=60, headers=headers) as http:
                    for i, item in part:
                        context = dict(item.context)
                        if i % 10 == 9:  # refused: a malformed KVNR next to the real values
                            context["kvnr"] = "not-a-kvnr-" + item.context.get("name", "x")
                        sovereign = {"use_case": USE_CASES[i % len(USE_CASES)], "context": context}
                        body = {
                            "messages": [{"role": "user", "content": item.text}],
                            "stream": i % 3 == 0,
                            "seed": i,
                            "sovereign": sovereign,
                        }  # fmt: skip  (seed: which patient)
                        answer = http.post("/v1/chat/completions", json=body)
                        statuses[answer.status_code] += 1
                        if answer.status_code != 200:
                            errors.append(answer.text)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        numbered = list(enumerate(items))
        threads = [threading.Thread(target=client, args=(numbered[k::CLIENTS],)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused_outbound = [
            line for line in httpx.get(f"{gateway.url}/metrics").text.splitlines()
            if line.startswith("sovereign_egress_refused_total{") and not line.endswith(" 0.0")
        ]  # fmt: skip
    seconds = time.monotonic() - t0
    assert failures == []
    assert sum(statuses.values()) == MESSAGES
    assert statuses[422] >= MESSAGES // 10 - 1 and set(statuses) <= {200, 422}, statuses
    captured = upstream.captured()
    assert len(captured) == statuses[200]
    # what the model received, request by request (the seed, passed through, says whose it was)
    sent = {int(c["seed"]): " ".join(str(m["content"]) for m in c["messages"]) for c in captured}
    model_hits = [s for i, text in sent.items() for s in leaks(items[i].secrets, text)]
    # everywhere else nothing of a patient belongs at all: every distinctive value, anywhere
    secrets = sorted({s for item in items for s in item.secrets if distinctive(s)})
    places = {
        "error answers": "\n".join(errors),
        "gateway log": "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("gateway-*.log")),
        "audit trail": audit_fields(tmp_path / "audit" / "audit.jsonl"),
    }
    hits = {place: leaks(secrets, text) for place, text in places.items()}
    print(f"\ncanaries: {MESSAGES} messages from {CLIENTS} clients in {seconds:.0f} s, statuses "
          f"{dict(statuses)}; {len(sent)} requests to the model: {len(model_hits)} hits; {len(secrets)} "
          f"values scanned in {', '.join(places)}: {sum(len(h) for h in hits.values())} hits")  # fmt: skip
    assert len(sent) == statuses[200] and model_hits == []
    assert all(text for text in places.values())  # each place was really there to scan
    # and the scan finds a patient's values where they are: in the request Magento sent
    assert len(leaks(secrets, items[1].text + json.dumps(items[1].context))) >= 3
    assert hits == {place: [] for place in places}
    assert refused_outbound == []  # no connection outside the allowlist was even tried
