"""Leak canaries under load: thousands of synthetic patients (Faker de_DE / en_GB, fictitious)
through the gateway from concurrent clients, plain and streamed, all use cases, with a share of
requests that are refused (bad context fields). Then every place a value could surface is
scanned for every known value of every patient: what the model received, every error answer,
every line the gateway logged (at info level), and the audit trail. Zero hits.

Egress: the gateway, OpenBao and the model run in a network namespace with only loopback, where
nftables records every connection attempt (tests/boundary/namespace.py): the gateway's
connections to OpenBao and to the model are seen, and nothing else is tried.

``make test`` sends SOVEREIGN_CANARY_MESSAGES=1500; ``make canaries`` 10,000 (recorded in
benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from gateway.app import keyed_seed
from gateway.clientkeys import ClientKeyStore
from gateway.kms import KeyProvider
from gateway.policy import load_policies
from gateway.settings import load_settings
from tests.boundary.conftest import Sealed
from tests.boundary.namespace import Destination
from tests.phi_corpus import Item, distinctive, generate, leaks
from tests.support import gateway_config, running_gateway

MESSAGES = int(os.environ.get("SOVEREIGN_CANARY_MESSAGES", "1500"))
CLIENTS = 4
USE_CASES = sorted(load_policies())


# digests and ids the gateway computes (hex): scanning them would find digit runs by chance
COMPUTED = {"hash", "mac", "prev", "wrapped", "request_id", "ts"}


def audit_fields(trail: Path) -> str:
    """The audit records without their computed digests, ids and timestamps."""
    records = (json.loads(line) for line in trail.read_text().splitlines())
    return "\n".join(json.dumps({k: v for k, v in r.items() if k not in COMPUTED}) for r in records)


def loopback(url: str) -> Destination:
    return Destination("127.0.0.1", "tcp", httpx.URL(url).port or 80)


def test_the_namespace_has_only_loopback_and_sees_every_attempt(sealed: Sealed) -> None:
    """The observer's own proof: attempts to the outside, TCP, UDP and IPv6, made from a
    process in the namespace, are recorded, and each fails at once (nothing to route to)."""
    assert sealed.namespace.interfaces() == ["lo"]
    before = sealed.namespace.new_connections()
    probe = textwrap.dedent("""
        import socket
        outside = ((socket.AF_INET, ("203.0.113.5", 443)), (socket.AF_INET6, ("2001:db8::7", 8443)))
        for family, where in outside:
            s = socket.socket(family)
            s.settimeout(5)
            try:
                s.connect(where)
                raise SystemExit(f"connected to {where}")
            except ConnectionRefusedError:
                pass
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"?", ("192.0.2.53", 53))
    """)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert {
        Destination("203.0.113.5", "tcp", 443),
        Destination("2001:db8::7", "tcp", 8443),
        Destination("192.0.2.53", "udp", 53),
    } <= sealed.namespace.attempts()
    assert sealed.namespace.new_connections() >= before + 3


def test_no_patient_value_surfaces_anywhere_under_load(sealed: Sealed, tmp_path: Path) -> None:
    bao, upstream = sealed.bao, sealed.upstream
    upstream.reset()
    sealed.namespace.forget()  # what this test's run tries, from here on
    connections = sealed.namespace.new_connections()
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
                            "seed": i,  # reproducible sampling; replaced by a keyed value upstream
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
        allowed = {loopback(bao.address), loopback(upstream.url), loopback(gateway.url)}
    attempts = sealed.namespace.attempts()
    seconds = time.monotonic() - t0
    assert failures == []
    assert sum(statuses.values()) == MESSAGES
    assert statuses[422] >= MESSAGES // 10 - 1 and set(statuses) <= {200, 422}, statuses
    captured = upstream.captured()
    assert len(captured) == statuses[200]
    # what the model received, request by request: the seed says whose it was, once keyed as the
    # gateway keys it (the upstream never sees the client's number: gateway/app.py keyed_seed)
    settings = load_settings(config)
    keys = KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir)
    data_key = asyncio.run(keys.tenant_key("clinic-canary"))
    whose = {keyed_seed(data_key, i): i for i in range(MESSAGES)}
    sent = {whose[int(c["seed"])]: " ".join(str(m["content"]) for m in c["messages"]) for c in captured}
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
          f"values scanned in {', '.join(places)}: {sum(len(h) for h in hits.values())} hits; "
          f"{sealed.namespace.new_connections() - connections} connections in the namespace to "
          f"{len(attempts)} destinations, {len(attempts - allowed)} outside the allowlist")  # fmt: skip
    assert len(sent) == statuses[200] and model_hits == []
    assert all(text for text in places.values())  # each place was really there to scan
    # and the scan finds a patient's values where they are: in the request Magento sent
    assert len(leaks(secrets, items[1].text + json.dumps(items[1].context))) >= 3
    assert hits == {place: [] for place in places}
    assert refused_outbound == []  # the gateway refused nothing: it tried nothing outside
    # and the namespace saw the gateway reach OpenBao and the model, and nothing else tried
    assert {loopback(bao.address), loopback(upstream.url)} <= attempts
    assert attempts - allowed == set()
