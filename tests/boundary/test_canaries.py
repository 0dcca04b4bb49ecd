"""Leak canaries under load: thousands of synthetic patients (Faker de_DE / en_GB, fictitious)
through the gateway from concurrent clients, plain and streamed, all use cases, with a share of
requests that are refused (bad context fields). Then every place a value could surface is
scanned for every known value of every patient: what the model received, every error answer,
every line the gateway logged (at info level), and the audit trail. Zero hits.

Three paths, with the leak rate per kind of value (values that reached the model / values in
requests that reached it) printed, and written as JSON where SOVEREIGN_CANARY_REPORT names a
file (benchmarks/README.md, "Leak canaries: without context and other persons"):

- with context: the patient's values, the context names them. Zero hits, every kind.
- without context: a share of requests carry no ``sovereign.context``; the text still names the
  patient, and the filter has only its patterns and the name recogniser. Zero hits for the
  pattern and checksum kinds; names under a ceiling that only the name recogniser meets.
- other persons: about half the texts mention a relative and a doctor (Faker names with
  relations and titles, their phone numbers, dates of birth, e-mail and street addresses),
  none of it in any context; plus the sister's KVNR and phone number and a card number. The
  same assertions as without context.

Addresses without a context: postcodes (German and British) and the towns after them never
through; streets under a ceiling (a street name without a street word or USPS suffix passes: a
few per hundred). Customer and order numbers without a context are recorded, not asserted (a
bare number is no identifier).
SOVEREIGN_CANARY_PHI_NAMES=false runs the gateway with ``phi_names: false``, to show that the
name ceilings fail without the name recogniser.

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
from tests.phi_corpus import OTHER, PATIENT, Item, distinctive, generate, leaks
from tests.support import gateway_config, running_gateway

MESSAGES = int(os.environ.get("SOVEREIGN_CANARY_MESSAGES", "1500"))
REPORT = os.environ.get("SOVEREIGN_CANARY_REPORT", "")
PHI_NAMES = os.environ.get("SOVEREIGN_CANARY_PHI_NAMES", "true").lower() not in {"0", "false", "no"}
CLIENTS = 4
USE_CASES = sorted(load_policies())

WITH_CONTEXT, WITHOUT_CONTEXT, OTHER_PERSONS = "with context", "without context", "other persons"
#: kinds with a pattern or checksum: never through, in any path
PATTERN_KINDS = {"card", "iban", "kvnr", "e-mail", "phone", "date"}
NAME_KINDS = {"name", "first name", "surname"}
#: the most of the name values without a context, and of other persons, that may reach the
#: model (the name kinds together). Measured with 1,500 messages (benchmarks/README.md): 2.8 %
#: without context, 1.4 % of other persons (surnames that are also words, first names that are
#: months); with ``phi_names: false`` 99.4 % and 99.8 %.
NAME_CEILING = {WITHOUT_CONTEXT: 0.06, OTHER_PERSONS: 0.04}
#: the most of the streets without a context that may reach the model (1.8 % and 1.1 % measured)
STREET_CEILING = 0.04


def without_context(i: int) -> bool:
    """A quarter of the requests carry no context, German and English alike (even and odd
    numbers), none of those refused for a bad one."""
    return i % 8 in (1, 2) and i % 10 != 9


def leak_rates(
    items: list[Item], sent: dict[int, str]
) -> tuple[dict[str, dict[str, list[int]]], list[dict[str, object]]]:
    """Per path and kind: [values in requests that reached the model, of them found there];
    and each value found, as path, kind and item number (no value: rerun generate to see it)."""
    counts: dict[str, dict[str, list[int]]] = {}
    found: list[dict[str, object]] = []
    for i, text in sorted(sent.items()):
        item = items[i]
        values = sorted({(v.whose, v.kind, v.value) for v in item.fields})
        hits = set(leaks([value for _, _, value in values], text))
        for whose, kind, value in values:
            path = (
                OTHER_PERSONS if whose == OTHER else WITHOUT_CONTEXT if without_context(i) else WITH_CONTEXT
            )
            count = counts.setdefault(path, {}).setdefault(kind, [0, 0])
            count[0] += 1
            if value in hits:
                count[1] += 1
                found.append({"path": path, "kind": kind, "item": i})
    return counts, found


def strict(item: Item) -> list[str]:
    """What must not reach the model when the request has a context: every value as before
    other persons were mentioned, the patient's every value, other persons' pattern kinds."""
    counted = {v.value for v in item.fields if v.whose == OTHER and v.kind not in PATTERN_KINDS}
    patient = [v.value for v in item.fields if v.whose == PATIENT]
    return [s for s in item.secrets if s not in counted] + [v for v in patient if v not in item.secrets]


def name_rate(kinds: dict[str, list[int]]) -> float:
    values = sum(kinds[k][0] for k in NAME_KINDS if k in kinds)
    return sum(kinds[k][1] for k in NAME_KINDS if k in kinds) / values if values else 0.0


def rate_table(counts: dict[str, dict[str, list[int]]]) -> str:
    paths = [p for p in (WITH_CONTEXT, WITHOUT_CONTEXT, OTHER_PERSONS) if p in counts]
    kinds = sorted({k for p in paths for k in counts[p]})
    lines = ["| kind | " + " | ".join(paths) + " |", "|---" * (len(paths) + 1) + "|"]
    for kind in kinds:
        cells = []
        for p in paths:
            total, hit = counts[p].get(kind, [0, 0])
            cells.append(f"{hit}/{total} ({100 * hit / total:.1f} %)" if total else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append(
        "| names together | " + " | ".join(f"{100 * name_rate(counts[p]):.1f} %" for p in paths) + " |"
    )
    return "\n".join(lines)


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
    items = generate(MESSAGES, seed=2026, others=True)
    upstream.script(mode="echo", capture=True, chunk_chars=5)
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url, phi_names=PHI_NAMES)
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
                        sovereign: dict[str, object] = {"use_case": USE_CASES[i % len(USE_CASES)]}
                        if not without_context(i):
                            sovereign["context"] = context
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
    # with a context: every value of the patient and every pattern kind of other persons, none
    # through; other persons' names and addresses are counted below (no context names them)
    model_hits = [
        s for i, text in sent.items() if not without_context(i) for s in leaks(strict(items[i]), text)
    ]
    counts, found = leak_rates(items, sent)
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
    print(f"leak rate per kind (phi_names: {PHI_NAMES}), values that reached the model / values sent:")
    print(rate_table(counts))
    if REPORT:
        report = {
            "messages": MESSAGES, "seed": 2026, "phi_names": PHI_NAMES, "requests_to_model": len(sent),
            "rates": {path: {kind: {"sent": n, "leaked": k, "rate": round(k / n, 4) if n else None}
                             for kind, (n, k) in sorted(kinds.items())} for path, kinds in counts.items()},
            "names_together": {path: round(name_rate(kinds), 4) for path, kinds in counts.items()},
            "leaks": found,  # item numbers of generate(messages, seed=2026, others=True)
        }  # fmt: skip
        Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
        Path(REPORT).write_text(json.dumps(report, indent=1) + "\n")
    assert len(sent) == statuses[200] and model_hits == []
    # every path was there, with every kind, and no pattern or checksum kind through in any path
    assert set(counts) == {WITH_CONTEXT, WITHOUT_CONTEXT, OTHER_PERSONS}
    for kind in PATTERN_KINDS | NAME_KINDS | {"street", "city"}:
        assert any(counts[p].get(kind, (0, 0))[0] > 0 for p in counts), kind
    for path in counts:  # each path carries names, phones, dates and e-mail addresses
        assert all(counts[path].get(k, (0, 0))[0] > 0 for k in NAME_KINDS | {"phone", "date", "e-mail"}), path
    pattern_leaks = [f for f in found if f["kind"] in PATTERN_KINDS | {"postcode", "city"}]
    assert pattern_leaks == [], pattern_leaks
    for path in (WITHOUT_CONTEXT, OTHER_PERSONS):  # measured 1.8 % and 1.1 %
        sent_streets, leaked_streets = counts[path].get("street", (0, 0))
        assert leaked_streets <= STREET_CEILING * sent_streets, (path, leaked_streets, sent_streets)
    # names without context and of other persons: the name recogniser's share, under a ceiling
    # (recorded, not asserted: customer and order numbers; their rates are in the table)
    for path, ceiling in NAME_CEILING.items():
        assert name_rate(counts[path]) <= ceiling, (path, name_rate(counts[path]), counts[path])
    assert all(text for text in places.values())  # each place was really there to scan
    # and the scan finds a patient's values where they are: in the request Magento sent
    assert len(leaks(secrets, items[1].text + json.dumps(items[1].context))) >= 3
    assert hits == {place: [] for place in places}
    assert refused_outbound == []  # the gateway refused nothing: it tried nothing outside
    # and the namespace saw the gateway reach OpenBao and the model, and nothing else tried
    assert {loopback(bao.address), loopback(upstream.url)} <= attempts
    assert attempts - allowed == set()
