"""The PHI filter in the gateway: nothing identifying reaches the model; answers come back
restored; the audit trail counts, never shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.policy import load_policies
from tests.phi_corpus import generate, leaked
from tests.support import Proc, Upstream

USE_CASES = sorted(load_policies())


TENANT = "clinic-leak"  # the client key of this module's gateway (conftest.py)


def test_leak_check_catches_leaks() -> None:
    assert leaked("Erika Müller", "hello ERIKA MÜLLER")
    assert leaked("+49 30 1234567", "call 49301234567")
    assert not leaked("Hans", "Hansestadt")


def test_no_known_value_or_identifier_reaches_the_model(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    """1,000 synthetic patient messages, all use cases: leak count 0."""
    upstream.script(capture=True)
    items = generate(1000, seed=11)
    with httpx.Client(timeout=30) as client:
        for i, item in enumerate(items):
            body = {
                "messages": [{"role": "user", "content": item.text}],
                "sovereign": {"use_case": USE_CASES[i % len(USE_CASES)], "context": item.context},
            }
            resp = client.post(
                f"{gateway.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {api_key}"},
            )
            assert resp.status_code == 200, resp.text
    captured = upstream.captured()
    assert len(captured) == len(items)
    leaks = []
    for item, sent_body in zip(items, captured, strict=True):
        sent = " ".join(m["content"] for m in sent_body["messages"])
        leaks += [s for s in item.secrets if leaked(s, sent)]
    assert leaks == [], f"{len(leaks)} leaks"
    # and the filter made no outbound call on the way (the egress guard would have counted it)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    refused = [line for line in metrics.splitlines() if line.startswith("sovereign_egress_refused_total{")]
    assert refused and all(line.endswith(" 0.0") for line in refused)


def ask(gateway: Proc, key: str, text: str, use_case: str, context: dict[str, Any], stream: bool) -> str:
    body = {
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        "sovereign": {"use_case": use_case, "context": context},
    }
    headers = {"authorization": f"Bearer {key}"}
    if not stream:
        resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])
    parts = []
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                parts.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    return "".join(parts)


CONTEXT = {
    "name": "Erika Müller",
    "date_of_birth": "1968-03-14",
    "kvnr": "A123456780",
    "phone": "+49 30 1234567",
    "customer_id": "4711",
}
TEXT = (
    "Hier ist Erika Müller, geb. 14.03.1968, Tel. +49 30 1234567, Kundennr. 4711. Karte 4111 1111 1111 1111."
)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chunk_chars", [1, 3, 7])
def test_answers_are_restored(
    gateway: Proc, api_key: str, upstream: Upstream, stream: bool, chunk_chars: int
) -> None:
    """The upstream echoes what it received (tokens cut across events); the client gets the
    real values back, except what was removed."""
    upstream.script(mode="echo", chunk_chars=chunk_chars, capture=True)
    answer = ask(gateway, api_key, TEXT, "appointment-scheduling", CONTEXT, stream)
    sent = upstream.captured()[0]["messages"][-1]["content"]
    assert "Erika" not in sent and "4711" not in sent and "1234567" not in sent
    # the phone is a field this use case may not use: removed, like the card
    expected = TEXT.replace("4111 1111 1111 1111", "[CARD_REMOVED]").replace(
        "+49 30 1234567", "[PHONE_REMOVED]"
    )
    assert answer == expected


def test_audit_counts_categories_and_never_values(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script(mode="echo")
    ask(gateway, api_key, TEXT, "appointment-scheduling", CONTEXT, False)
    record = json.loads((gw_dir / "audit" / "audit.jsonl").read_text().splitlines()[-1])
    phi = record["phi"]
    assert phi["tokenised"]["NAME"] >= 1 and phi["tokenised"]["CUSTOMER_ID"] == 2  # text + context
    assert phi["removed"] == {"CARD": 1, "PHONE": 1}
    assert phi["context_fields_used"] == ["name", "date_of_birth", "customer_id"]
    assert phi["context_fields_dropped"] == ["kvnr", "phone"]
    assert phi["restored"] == 3 and phi["unrestored"] == 0  # name, date of birth, customer id
    hex_fields = {"hash", "mac", "prev", "wrapped", "kid", "weights_sha256", "request_id", "key_id", "ts"}
    records = [json.loads(line) for line in (gw_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    # every text in the trail (keys and string values; numbers are counts, sizes and timings, and
    # a latency of 0.41968 ms is no date of birth)
    texts: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                texts.append(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            texts.append(value)

    walk([{k: v for k, v in r.items() if k not in hex_fields} for r in records])
    trail = "\n".join(texts)
    for value in ("Erika", "Müller", "1968", "A123456780", "1234567", "4111"):
        assert value not in trail


def test_a_mangled_token_stays_masked_and_is_counted(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script(mode="echo")
    answer = ask(gateway, api_key, "Bitte an [NAME_0a0a0a] weiterleiten", "patient-support", CONTEXT, False)
    assert "[NAME_0a0a0a]" in answer  # not guessed
    record = json.loads((gw_dir / "audit" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["phi"]["unrestored"] == 1


def test_catalog_search_gets_no_patient_data_and_no_internal_pricing(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    context = {
        "name": "Erika Müller",
        "product": {
            "sku": "BP-200",
            "name": "Blutdruckmessgerät",
            "price": "49.90",
            "cost": "21.37",
            "margin": "0.57",
        },
    }
    text = "Erika sucht ein Blutdruckmessgerät unter 50 Euro, wir kaufen es für 21.37 ein (Marge 0.57)."
    ask(gateway, api_key, text, "catalog-search", context, False)
    sent = " ".join(m["content"] for m in upstream.captured()[0]["messages"])
    assert "Erika" not in sent and "21.37" not in sent and "0.57" not in sent
    assert "BP-200" in sent and "49.90" in sent  # public product data stays usable


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"kvnr": "A123456781"}, "sovereign.context.kvnr"),
        ({"date_of_birth": "14.03.1968"}, "sovereign.context.date_of_birth"),
        ({"iban": "DE00123412341234123412"}, "sovereign.context.iban"),
        ({"email": "erika-at-example"}, "sovereign.context.email"),
        ({"order_ids": "000000123"}, "sovereign.context.order_ids"),
        # an unknown field: named by where it is, never by its name (it may carry data)
        ({"insurance": "AOK"}, "sovereign.context"),
    ],
)
def test_bad_context_gets_422_naming_the_field_without_its_value(
    gateway: Proc, api_key: str, context: dict[str, Any], field: str
) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "sovereign": {"use_case": "order-support", "context": context},
    }
    resp = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["param"] == field and field in err["message"]
    for key, value in context.items():
        assert str(value) not in resp.text
        if field == "sovereign.context":
            assert key not in resp.text
