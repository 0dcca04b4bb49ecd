"""What a client sends is bounded before it goes anywhere (#20 findings 2, 6, 7, 9, 10): every
forwarded string through the PHI filter, the seed keyed, a request id of a fixed form,
errors and /readyz without client-chosen names or internal addresses, no /docs, product
fields filtered, large answers restored off the event loop."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clientkeys import ClientKeyStore
from tests.support import Bao, Proc, Upstream, free_port, gateway_config, running_gateway

CONTEXT = {"name": "Erika Müller", "date_of_birth": "1968-03-14", "customer_id": "4711"}


TENANT = "clinic-bounds"  # the client key of this module's gateway (conftest.py)


def post(gateway: Proc, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


def last_record(gw_dir: Path) -> dict[str, Any]:
    return dict(json.loads((gw_dir / "audit" / "audit.jsonl").read_text().splitlines()[-1]))


def test_stop_sequences_go_through_the_filter(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    body = {
        "messages": [{"role": "user", "content": "Termin bitte"}],
        "stop": ["Erika Müller", "14.03.1968", "KVNR A123456780", "END"],
        "sovereign": {"use_case": "appointment-scheduling", "context": CONTEXT},
    }
    assert post(gateway, api_key, body).status_code == 200
    stop = upstream.captured()[0]["stop"]
    sent = json.dumps(stop, ensure_ascii=False)
    for value in ("Erika", "Müller", "1968", "A123456780"):
        assert value not in sent
    assert len(stop) == 4 and stop[3] == "END"


def test_a_seed_never_reaches_the_model_as_sent_but_stays_reproducible(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 19680314,  # a birth date as a number
        "sovereign": {"use_case": "patient-support"},
    }
    assert post(gateway, api_key, body).status_code == 200
    assert post(gateway, api_key, body).status_code == 200
    first, second = (c["seed"] for c in upstream.captured())
    assert first != 19680314 and first == second and 0 <= first < 2**31


def test_a_free_form_request_id_is_replaced_and_never_audited(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script()
    body = {"messages": [{"role": "user", "content": "hi"}], "sovereign": {"use_case": "patient-support"}}
    chosen = "Erika-Mueller-19680314"
    resp = post(gateway, api_key, body, **{"x-request-id": chosen})
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] != chosen and resp.headers["x-request-id-replaced"] == "true"
    record = last_record(gw_dir)
    assert record["request_id"] == resp.headers["x-request-id"]
    assert "Erika" not in (gw_dir / "audit" / "audit.jsonl").read_text()
    # a UUID is the form a client may choose: kept (in lower case), nothing replaced
    mine = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    resp = post(gateway, api_key, body, **{"x-request-id": mine})
    assert resp.headers["x-request-id"] == mine.lower() and "x-request-id-replaced" not in resp.headers
    assert last_record(gw_dir)["request_id"] == mine.lower()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"Erika_Mueller_1968": 1}, "body"),
        ({"sovereign": {"use_case": "patient-support", "context": {"Erika_Mueller_1968": "x"}}},
         "sovereign.context"),
        ({"messages": [{"role": "user", "content": "hi", "Erika_Mueller_1968": "x"}]}, "messages.0"),
    ],
)  # fmt: skip
def test_an_unknown_field_is_refused_without_echoing_its_name(
    gateway: Proc, api_key: str, body: dict[str, Any], param: str
) -> None:
    full = {"messages": [{"role": "user", "content": "hi"}], **body}
    resp = post(gateway, api_key, full)
    assert resp.status_code == 422
    assert resp.json()["error"]["param"] == param
    assert "Erika" not in resp.text


def test_readyz_names_no_internal_address(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()  # nothing listens there
    config = gateway_config(tmp_path, f"http://127.0.0.1:{port}", "s.dead", upstream.url)
    with running_gateway(config, tmp_path) as gw:
        ready = httpx.get(f"{gw.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["openbao"] == "unavailable"
    assert str(port) not in ready.text and "127.0.0.1" not in ready.text and "http" not in ready.text


def test_no_docs_pages_and_no_external_assets(gateway: Proc) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(f"{gateway.url}{path}", timeout=10).status_code == 404
    schema = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert schema.status_code == 200 and "ChatRequest" in schema.text
    assert not re.search(r"https?://(?!127\.0\.0\.1)", schema.text)


def test_catalog_product_fields_are_filtered(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    context = {
        "name": "Erika Müller",
        "product": {
            "sku": "BP-200",
            "name": "Blutdruckmessgerät für Erika Müller",
            "category": "Rückruf +49 30 1234567, erika@example.de",
            "price": "49.90",
            "cost": "21.37",
            "margin": "0.57",
        },
    }
    body = {
        "messages": [{"role": "user", "content": "Welches Messgerät?"}],
        "sovereign": {"use_case": "catalog-search", "context": context},
    }
    assert post(gateway, api_key, body).status_code == 200
    sent = " ".join(m["content"] for m in upstream.captured()[0]["messages"])
    for value in ("Erika", "Müller", "1234567", "erika@example.de", "21.37", "0.57"):
        assert value not in sent
    assert "BP-200" in sent and "Blutdruckmessgerät" in sent and "49.90" in sent


def test_one_date_two_spellings_one_token(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    body = {
        "messages": [{"role": "user", "content": "Geboren am 14.03.1968, also 1968-03-14."}],
        "sovereign": {"use_case": "patient-support"},
    }
    assert post(gateway, api_key, body).status_code == 200
    sent = upstream.captured()[0]["messages"][-1]["content"]
    tokens = re.findall(r"\[DATE_[0-9a-f]{6}\]", sent)
    assert len(tokens) == 2 and tokens[0] == tokens[1]


def test_a_large_restoration_does_not_hold_the_event_loop(
    tmp_path: Path, bao: Bao, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A health request sent while a large answer is being restored is served before the
    restoration ends (ordering, not timing: the restoration waits until health was served)."""
    import gateway.app as app_module
    from gateway.settings import load_settings

    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    ClientKeyStore(tmp_path / "keys.json").create("clinic-loop")
    key = ClientKeyStore(tmp_path / "keys.json").create("clinic-loop")[1]
    app = app_module.create_app(load_settings(config))
    started, release, order = threading.Event(), threading.Event(), []
    real = vars(app_module)["restore"]

    def slow_restore(text: str, originals: dict[str, str], scanner: Any = None) -> tuple[str, int]:
        started.set()
        release.wait(60)  # a guard against a hang, not a bound on time
        order.append("restored")
        out: tuple[str, int] = real(text, originals, scanner)
        return out

    monkeypatch.setattr(app_module, "restore", slow_restore)
    text = "Erika Müller, " * 3000  # a large answer, many tokens (one per name)
    # echoed in pieces of 500 characters: about 90 "tokens", within the use case's max_tokens (the
    # scripted upstream stops there, as a model server does)
    upstream.script(mode="echo", chunk_chars=500)
    body = {
        "messages": [{"role": "user", "content": text}],
        "sovereign": {"use_case": "patient-support", "context": {"name": "Erika Müller"}},
    }

    async def scenario() -> str:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                chat = asyncio.create_task(
                    client.post("/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {key}"}, timeout=60)
                )  # fmt: skip
                while not started.is_set():
                    await asyncio.sleep(0.01)
                    assert not chat.done(), (await chat).text
                health = await client.get("/healthz")
                order.append(f"health {health.status_code}")
                release.set()
                resp = await chat
                return str(resp.json()["choices"][0]["message"]["content"])

    answer = asyncio.run(scenario())
    assert order == ["health 200", "restored"]
    assert answer == text
