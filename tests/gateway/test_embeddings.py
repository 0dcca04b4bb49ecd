"""POST /v1/embeddings through a real gateway (issue #27): the use case's minimisation and
tokenisation before anything is embedded, tokens scoped to the tenant, the official SDKs, the
refusals, the upstream's answer checked, the audit trail.

The embedding model is the scripted upstream (tests/doubles/scripted_upstream.py), answering
``/v1/embeddings`` as llama-cpp-python 0.3.36's server does; it records what it received, so a
test sees what the model got. The module's gateway has the chat upstream of every test module
and an embeddings upstream ``embed`` (384 dimensions) on the same double; its
``limits.max_answer_bytes`` lets one upstream call carry 3 texts, so a longer request is cut in
calls (gateway/embeddings.py per_call). The use case is patient-support (its policy:
embedding_model embed; name and phone tokenised, a KVNR removed), order-support has no
embedding_model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hvac
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from openai import OpenAI
from pydantic import ValidationError

from gateway.app import Gateway, GatewayError, check_upstream_kinds
from gateway.clientkeys import ClientKeyStore
from gateway.embeddings import JSON_FLOAT_BYTES, JSON_ITEM_BYTES, embed_upstream
from gateway.policy import PolicyError, load_policies
from gateway.settings import GatewaySettings
from gateway.settings import Upstream as UpstreamSettings
from infra import openbao_contract
from infra.cli import main as sovereign
from tests.doubles.scripted_upstream import vector
from tests.support import Bao, Proc, Upstream, free_port, gateway_config, running_gateway

TENANT = "clinic-embed"  # the module's client key (tests/gateway/conftest.py)
OTHER_TENANT = "clinic-embed-other"
USE_CASE = "patient-support"
DIMS = 384
PER_CALL = 3
# the answer limit at which one upstream call carries PER_CALL texts (gateway/embeddings.py per_call)
MAX_ANSWER = 1024 + PER_CALL * (DIMS * JSON_FLOAT_BYTES + JSON_ITEM_BYTES)
GATEWAY_SETTINGS = {"limits": {"max_answer_bytes": MAX_ANSWER}, "incident": {"poll_s": 0.2}}

NAME, PHONE, KVNR = "Erika Müller", "+49 30 1234567", "A123456780"
CONTEXT = {"name": NAME, "phone": PHONE, "kvnr": KVNR}
SOVEREIGN = {"use_case": USE_CASE, "context": CONTEXT}
TEXT = f"{NAME} fragt nach ihrer Bestellung, Rückruf unter {PHONE}, KVNR {KVNR}."
SECRETS = [NAME, "Erika", "Müller", PHONE, "1234567", KVNR]


def embed_upstream_settings(url: str) -> dict[str, Any]:
    return {"url": f"{url}/v1", "model": "scripted-embed", "kind": "embeddings", "dimensions": DIMS}


@pytest.fixture(scope="module")
def gateway(gw_dir: Path, bao: Bao, gateway_upstream_url: str) -> Iterator[Proc]:
    """The module's gateway (tests/conftest.py's, with the embeddings upstream beside the chat one)."""
    upstreams = {"embed": embed_upstream_settings(gateway_upstream_url)}
    config = gateway_config(
        gw_dir, bao.address, bao.gateway_token, gateway_upstream_url, upstreams=upstreams, **GATEWAY_SETTINGS
    )
    with running_gateway(config, gw_dir) as proc:
        yield proc


@pytest.fixture
def client(gateway: Proc, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def post(gateway: Proc, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/embeddings", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def sent_texts(upstream: Upstream) -> list[str]:
    """Every text the embedding model received, in order."""
    return [t for body in upstream.captured() for t in body["input"]]


def records(gw_dir: Path, request_id: str) -> list[dict[str, Any]]:
    lines = (gw_dir / "audit" / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("request_id") == request_id]


def test_patient_values_never_reach_the_model_and_tokens_are_the_tenants(
    gateway: Proc, gw_dir: Path, api_key: str, upstream: Upstream
) -> None:
    other_key = ClientKeyStore(gw_dir / "keys.json").create(OTHER_TENANT)[1]
    upstream.script(capture=True)
    body: dict[str, Any] = {
        "model": "embed",
        "input": [TEXT, "Lieferzeit für Blutdruckmessgeräte?"],
        "sovereign": SOVEREIGN,
    }
    first = post(gateway, api_key, body)
    second = post(gateway, api_key, body)
    other = post(gateway, other_key, body)
    assert [r.status_code for r in (first, second, other)] == [200, 200, 200], first.text
    sent = sent_texts(upstream)
    assert len(sent) == 6
    for secret in SECRETS:
        assert all(secret not in text for text in sent), secret
    assert "[KVNR_REMOVED]" in sent[0]  # not a category patient-support may pass
    # the same value, the same token in every request of the tenant: the texts (and so the
    # vectors) of the two requests are equal; another tenant's tokens differ
    assert sent[0] == sent[2] and sent[0] != TEXT
    assert sent[4] != sent[0]
    assert first.json()["data"] == second.json()["data"] != other.json()["data"]
    # text without patient data goes as it is, and embeds the same for every tenant
    assert sent[1] == sent[3] == sent[5] == body["input"][1]
    answer = first.json()
    assert answer["object"] == "list" and answer["model"] == "embed"
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["data"][0]["embedding"] == pytest.approx(vector(sent[0], DIMS))
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0


def test_a_long_request_is_cut_in_calls_and_answered_in_input_order(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    texts = [f"Produkt Nummer {i} Verband" for i in range(2 * PER_CALL + 1)]
    resp = post(gateway, api_key, {"input": texts, "sovereign": {"use_case": USE_CASE}})
    assert resp.status_code == 200, resp.text
    assert [len(b["input"]) for b in upstream.captured()] == [PER_CALL, PER_CALL, 1]
    # only the upstream's model name, the texts and floats are sent
    assert all(set(b) == {"model", "input", "encoding_format"} for b in upstream.captured())
    assert all(
        b["model"] == "scripted-embed" and b["encoding_format"] == "float" for b in upstream.captured()
    )
    data = resp.json()["data"]
    assert [d["index"] for d in data] == list(range(len(texts)))
    for d, text in zip(data, texts, strict=True):
        assert d["embedding"] == pytest.approx(vector(text, DIMS))
    usage = resp.json()["usage"]
    assert usage["total_tokens"] == sum(len(t.split()) + 2 for t in texts)  # summed over the calls


def test_openai_sdk_base64_default_and_float(client: OpenAI, upstream: Upstream) -> None:
    """openai-python 3.57.0 asks for base64 unless told (lib/_parsing/_embeddings.py) and decodes
    it: the gateway encodes the upstream's floats as little-endian float32."""
    extra = {"sovereign": SOVEREIGN}
    default = client.embeddings.create(model="embed", input=[TEXT, "Pflaster"], extra_body=extra)
    floats = client.embeddings.create(
        model="embed", input=[TEXT, "Pflaster"], encoding_format="float", extra_body=extra
    )
    assert default.model == floats.model == "embed"
    assert len(default.data) == 2 and all(len(d.embedding) == DIMS for d in default.data)
    for a, b in zip(default.data, floats.data, strict=True):
        # base64 carries float32: equal to the floats rounded to float32
        assert a.embedding == np.asarray(b.embedding, dtype=np.float32).tolist()
    assert default.usage.prompt_tokens == floats.usage.prompt_tokens > 0


def test_base64_is_little_endian_float32_of_the_same_vector(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    body: dict[str, Any] = {"input": "Blutzuckermessgerät", "sovereign": {"use_case": USE_CASE}}
    floats = post(gateway, api_key, {**body, "encoding_format": "float"}).json()["data"][0]["embedding"]
    encoded = post(gateway, api_key, {**body, "encoding_format": "base64"}).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert decoded.shape == (DIMS,)
    assert decoded.tolist() == np.asarray(floats, dtype="<f4").tolist()
    assert floats == pytest.approx(vector("Blutzuckermessgerät", DIMS))


def test_langchain_embeddings_with_text_input(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    """langchain-openai's OpenAIEmbeddings tokenises with tiktoken and sends token ids unless
    check_embedding_ctx_length=False (langchain_openai/embeddings/base.py embed_documents); with
    it, it sends the texts, and they are filtered like any other."""
    upstream.script(capture=True)
    model = OpenAIEmbeddings(
        model="embed",
        openai_api_base=f"{gateway.url}/v1",
        openai_api_key=api_key,
        check_embedding_ctx_length=False,
        max_retries=0,
        model_kwargs={"extra_body": {"sovereign": SOVEREIGN}},
    )
    docs = model.embed_documents([TEXT, "Inhalierhilfe"])
    query = model.embed_query("Inhalierhilfe")
    assert len(docs) == 2 and all(len(v) == DIMS for v in docs)
    assert query == pytest.approx(docs[1], abs=1e-6)
    sent = sent_texts(upstream)
    assert len(sent) == 3 and all(s not in text for s in SECRETS for text in sent)


def test_token_ids_are_refused_naming_the_langchain_setting(client: OpenAI, upstream: Upstream) -> None:
    """What LangChain's default (check_embedding_ctx_length=True) sends: arrays of token ids."""
    upstream.script(capture=True)
    for ids in ([9906, 1917], [[9906, 1917], [15339]]):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.embeddings.create(model="embed", input=ids, extra_body={"sovereign": SOVEREIGN})
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["code"] == "invalid_field" and error["param"] == "input"
        assert "patient data" in error["message"] and "check_embedding_ctx_length=False" in error["message"]
    assert upstream.captured() == []


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (
            {"input": "Pflaster", "sovereign": {"use_case": "order-support"}},
            422,
            "embeddings_not_allowed",
            None,
        ),
        ({"input": "Pflaster", "dimensions": 256}, 422, "dimensions_not_supported", "dimensions"),
        ({"input": "Pflaster", "model": "chat"}, 400, "model_not_allowed", "model"),
        ({"input": ["Pflaster", ""]}, 422, "invalid_field", "input.1"),
        ({"input": []}, 422, "invalid_field", "input"),
        ({"input": ["x"] * 2049}, 422, "invalid_field", "input"),
        ({"input": "Pflaster", "encoding_format": "int8"}, 422, "invalid_field", "encoding_format"),
        ({"input": "Pflaster", f"{KVNR}": 1}, 422, "invalid_field", "body"),
    ],
)
def test_refusals_forward_nothing_and_echo_nothing(
    gateway: Proc,
    api_key: str,
    upstream: Upstream,
    body: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    upstream.script(capture=True)
    resp = post(gateway, api_key, {"sovereign": {"use_case": USE_CASE}, **body})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert KVNR not in resp.text and "int8" not in resp.text
    assert upstream.captured() == []


def test_the_models_dimensions_are_accepted(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    resp = post(
        gateway, api_key, {"input": "Pflaster", "dimensions": DIMS, "sovereign": {"use_case": USE_CASE}}
    )
    assert resp.status_code == 200 and len(resp.json()["data"][0]["embedding"]) == DIMS


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("emb_wrong_dims", "upstream_malformed"),
        ("emb_missing_index", "upstream_malformed"),
        ("emb_nan", "upstream_malformed"),
        ("emb_no_usage", "upstream_malformed"),
        ("malformed", "upstream_malformed"),
        ("status500", "upstream_error"),
    ],
)
def test_a_malformed_upstream_answer_is_a_502(
    gateway: Proc, gw_dir: Path, api_key: str, upstream: Upstream, mode: str, code: str
) -> None:
    upstream.script(mode=mode)
    resp = post(gateway, api_key, {"input": ["Pflaster", "Verband"], "sovereign": {"use_case": USE_CASE}})
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"]["code"] == code
    (admit, final) = records(gw_dir, resp.headers["x-request-id"])
    assert admit["kind"] == "admit" and final["outcome"] == code and final["status"] == 502


def test_audit_records_carry_counts_never_values(
    gateway: Proc, gw_dir: Path, api_key: str, upstream: Upstream
) -> None:
    resp = post(gateway, api_key, {"input": [TEXT, "Pflaster"], "user": "kunde-4711", "sovereign": SOVEREIGN})
    assert resp.status_code == 200
    found = records(gw_dir, resp.headers["x-request-id"])
    assert [r["kind"] for r in found] == ["admit", "request"]
    admit, final = found
    assert admit["endpoint"] == final["endpoint"] == "embeddings"
    assert admit["inputs"] == final["inputs"] == 2
    assert (
        final["use_case"] == USE_CASE
        and final["model"] == "embed"
        and final["upstream_model"] == "scripted-embed"
    )
    assert final["outcome"] == "ok" and final["admit_seq"] == admit["seq"]
    assert final["dropped_fields"] == ["user"]
    phi = final["phi"]
    assert phi["tokenised"]["NAME"] >= 1 and phi["tokenised"]["PHONE"] == 1 and phi["removed"]["KVNR"] >= 1
    assert "kvnr" in phi["context_fields_dropped"]
    trail = (gw_dir / "audit" / "audit.jsonl").read_text()
    for secret in [*SECRETS, "kunde-4711"]:
        assert secret not in trail


def test_models_lists_the_embedding_model(gateway: Proc, api_key: str) -> None:
    resp = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {api_key}"}, timeout=10)
    assert {m["id"] for m in resp.json()["data"]} == {"chat", "embed"}
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in resp.json()["data"])


def test_kill_switch_refuses_embeddings(
    gateway: Proc, gw_dir: Path, bao: Bao, api_key: str, upstream: Upstream
) -> None:
    client = hvac.Client(url=bao.address, token=bao.root, timeout=10)
    created = client.auth.token.create(policies=[openbao_contract.INCIDENT_POLICY_NAME], ttl="1h")
    token = gw_dir / "operator.token"
    token.write_text(created["auth"]["client_token"])
    address = ["--openbao-address", bao.address, "--token-file", str(token)]
    body = {"input": TEXT, "sovereign": SOVEREIGN}
    assert (
        sovereign(
            ["incident", "suspend", "--use-case", USE_CASE, "--reason", "drill", "--by", "oncall", *address]
        )
        == 0
    )
    try:
        for _ in range(400):  # the gateway polls every 0.2 s; this only ends a hang
            if post(gateway, api_key, body).status_code == 503:
                break
        upstream.script(capture=True)
        resp = post(gateway, api_key, body)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "use_case_suspended"
        assert upstream.captured() == []
    finally:
        assert (
            sovereign(
                [
                    "incident",
                    "resume",
                    "--use-case",
                    USE_CASE,
                    "--by",
                    "oncall",
                    "--reason",
                    "drill over",
                    *address,
                ]
            )
            == 0
        )
        for _ in range(400):
            if post(gateway, api_key, body).status_code == 200:
                break


def test_no_key_service_means_503_and_nothing_forwarded(tmp_path: Path, upstream: Upstream) -> None:
    upstream.script(capture=True)
    dead_bao = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(
        tmp_path, dead_bao, "s.none", upstream.url, upstreams={"embed": embed_upstream_settings(upstream.url)}
    )
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = post(gw, key, {"input": TEXT, "sovereign": SOVEREIGN})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "key_unavailable"
    assert upstream.captured() == []


def test_upstream_kinds_are_checked() -> None:
    with pytest.raises(ValidationError, match="dimensions: required"):
        UpstreamSettings(url="http://127.0.0.1:1/v1", model="m", kind="embeddings")
    with pytest.raises(ValidationError, match="only for an upstream of kind embeddings"):
        UpstreamSettings(url="http://127.0.0.1:1/v1", model="m", dimensions=384)
    chat = UpstreamSettings(url="http://127.0.0.1:1/v1", model="m")
    embed = UpstreamSettings(url="http://127.0.0.1:1/v1", model="e", kind="embeddings", dimensions=384)
    policy = load_policies()[USE_CASE]
    check_upstream_kinds(policy, {"chat": chat, "embed": embed})  # as shipped: fine
    with pytest.raises(PolicyError, match="model chat is an upstream of kind embeddings"):
        check_upstream_kinds(policy, {"chat": embed, "embed": embed})
    with pytest.raises(PolicyError, match="embedding_model embed is an upstream of kind chat"):
        check_upstream_kinds(policy, {"chat": chat, "embed": chat})
    assert math.isclose(sum(x * x for x in vector("a b", DIMS)), 1.0)  # the double's vectors are unit


def test_embed_upstream_for_the_store(tmp_path: Path, upstream: Upstream) -> None:
    """embed_upstream (the memory store's and catalogue retrieval's call, texts already filtered):
    the upstream's vectors in input order, cut in calls that fit max_answer_bytes; a malformed
    answer a GatewayError 502."""
    settings = GatewaySettings(
        upstreams={"embed": embed_upstream_settings(upstream.url)},
        limits={"max_answer_bytes": MAX_ANSWER},
        audit={"path": tmp_path / "audit.jsonl"}, keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"}, enforce_egress=False,
    )  # fmt: skip
    texts = [f"Artikel {i} [NAME_0a1b2c]" for i in range(PER_CALL + 2)]

    async def run(mode: str) -> list[list[float]]:
        upstream.script(mode=mode, capture=True)
        gw = Gateway(settings)
        try:
            return await embed_upstream(gw, settings.upstreams["embed"], texts)
        finally:
            await gw.http.close()
            gw.close_audit()

    vectors = asyncio.run(run("normal"))
    assert [v == pytest.approx(vector(t, DIMS)) for v, t in zip(vectors, texts, strict=True)] == [True] * len(
        texts
    )
    assert [b["input"] for b in upstream.captured()] == [texts[:PER_CALL], texts[PER_CALL:]]
    # an upstream that does not normalise (llama-cpp-python): the vectors come back unit length
    raw = asyncio.run(run("emb_unnormalised"))
    assert [v == pytest.approx(vector(t, DIMS)) for v, t in zip(raw, texts, strict=True)] == [True] * len(
        texts
    )
    assert all(abs(math.fsum(x * x for x in v) - 1.0) < 1e-9 for v in raw)
    with pytest.raises(GatewayError) as failed:
        asyncio.run(run("emb_wrong_dims"))
    assert (failed.value.status, failed.value.code) == (502, "upstream_malformed")


def test_an_upstream_that_does_not_answer_is_a_504(tmp_path: Path, bao: Bao, upstream: Upstream) -> None:
    upstream.script(mode="hang", hang_s=10)
    config = gateway_config(
        tmp_path, bao.address, bao.gateway_token, upstream.url,
        upstreams={"embed": embed_upstream_settings(upstream.url)}, limits={"request_deadline_s": 0.5},
    )  # fmt: skip
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = post(gw, key, {"input": "Pflaster", "sovereign": {"use_case": USE_CASE}})
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    (admit, final) = records(tmp_path, resp.headers["x-request-id"])
    assert admit["endpoint"] == "embeddings" and final["outcome"] == "upstream_timeout"
