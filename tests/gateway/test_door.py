"""The gateway as the only door: real gateway process, real OpenBao dev server, scripted upstream."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clientkeys import ClientKeyStore
from gateway.policy import load_policies
from tests.support import Bao, Proc, Upstream, metric_samples, sovereign

PROMPT_SECRET = "Erika Mustermann, geboren 14.03.1968"
# the module's gateway (tests/conftest.py): short timeouts, a small body limit
GATEWAY_SETTINGS = {"limits": {"read_timeout_s": 1.5, "max_body_bytes": 64 * 1024}}


@pytest.fixture(scope="module")
def api_key(gw_dir: Path, gateway: Proc) -> str:
    # issued while the gateway runs: the key store is re-read on change
    _, key = ClientKeyStore(gw_dir / "keys.json").create("clinic-berlin")
    return key


def chat(gateway: Proc, key: str | None, body: dict[str, Any] | bytes, **headers: str) -> httpx.Response:
    hdrs = {"content-type": "application/json", **headers}
    if key:
        hdrs["authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gateway.url}/v1/chat/completions", content=content, headers=hdrs, timeout=30)


def stream_events(gateway: Proc, key: str) -> list[str]:
    """The data fields of a streamed chat request's events (an SSE response)."""
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body(stream=True),
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]


def body(use_case: str = "patient-support", **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": PROMPT_SECRET}],
        "sovereign": {"use_case": use_case},
        **extra,
    }


def audit_records(gw_dir: Path) -> list[dict[str, Any]]:
    """The trail once every admit in it has its final record: a stream's is written just after
    the end of its body goes out, so a client that read to the end may come first. (After a
    deadlock guard of 10 s, the trail as it is: a test that leaves a request open still reads.)"""
    path = gw_dir / "audit" / "audit.jsonl"
    records: list[dict[str, Any]] = []
    for _ in range(1000):
        if not path.exists():
            return []
        try:
            records = [json.loads(line) for line in path.read_text().splitlines()]
        except ValueError:  # a record being written as it is read
            time.sleep(0.01)
            continue
        admits = {r["seq"] for r in records if r.get("kind") == "admit"}
        if admits <= {r.get("admit_seq") for r in records if r.get("kind") == "request"}:
            break
        time.sleep(0.01)  # polling for the record, not timing anything
    return records


def test_health_and_readiness(gateway: Proc) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"openbao": "ok", "upstream:chat": "ok", "audit": "ok"}


def test_chat_goes_through_and_is_audited_without_text(
    gateway: Proc, api_key: str, gw_dir: Path, upstream: Upstream
) -> None:
    request_id = "0f8fad5b-d9cb-469f-a165-70867728950e"  # a UUID: the only form kept (docs/gateway-api.md)
    resp = chat(gateway, api_key, body(), **{"x-request-id": request_id})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == "chat"
    assert answer["choices"][0]["message"]["content"].startswith("ok ok")
    assert resp.headers["x-request-id"] == request_id
    record = audit_records(gw_dir)[-1]
    assert record["request_id"] == request_id
    assert record["tenant"] == "clinic-berlin"
    assert record["use_case"] == "patient-support"
    assert record["outcome"] == "ok" and record["status"] == 200
    assert record["upstream_model"] == "scripted" and record["weights_sha256"] == "ab" * 32
    assert record["policy_version"].startswith(f"{load_policies()['patient-support'].version}+")
    assert record["latency_ms"]["upstream"] > 0
    assert record["bytes"]["request"] > 0 and record["bytes"]["response"] == len(resp.content)
    trail = (gw_dir / "audit" / "audit.jsonl").read_text()
    assert "Erika" not in trail and "1968" not in trail and "ok ok" not in trail


def test_upstream_gets_policy_prompt_capped_tokens_and_no_extension(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script(capture=True)
    resp = chat(
        gateway,
        api_key,
        body("appointment-scheduling", max_tokens=100000, user="customer-42", temperature=0.2),
    )
    assert resp.status_code == 200, resp.text
    (sent,) = upstream.captured()
    assert sent["model"] == "scripted"
    assert sent["max_tokens"] == 256  # the use case's cap
    assert sent["messages"][0]["role"] == "system"
    assert "appointments" in sent["messages"][0]["content"]
    assert sent["temperature"] == 0.2
    assert "user" not in sent and "sovereign" not in sent
    assert audit_records(gw_dir)[-1]["dropped_fields"] == ["user"]


def test_streaming_relays_events_and_audits(
    gateway: Proc, api_key: str, gw_dir: Path, upstream: Upstream
) -> None:
    upstream.script(tokens=5)
    events = stream_events(gateway, api_key)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "ok ok ok ok ok"
    assert {c["model"] for c in chunks} == {"chat"}
    record = audit_records(gw_dir)[-1]
    assert record["stream"] is True and record["outcome"] == "ok" and record["finish_reason"] == "stop"
    assert record["latency_ms"]["ttft"] is not None


def test_models_needs_a_key_and_lists_aliases(gateway: Proc, api_key: str) -> None:
    assert httpx.get(f"{gateway.url}/v1/models").status_code == 401
    resp = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {api_key}"})
    assert [m["id"] for m in resp.json()["data"]] == ["chat"]


def test_keys_missing_invalid_revoked_and_tenant_mismatch(gateway: Proc, api_key: str, gw_dir: Path) -> None:
    assert chat(gateway, None, body()).json()["error"]["code"] == "missing_api_key"
    assert chat(gateway, "sk-sov-nothere.secret", body()).status_code == 401
    store = ClientKeyStore(gw_dir / "keys.json")
    record, other = store.create("clinic-munich")
    assert chat(gateway, other, body()).status_code == 200
    store.revoke(record.key_id)
    assert chat(gateway, other, body()).json()["error"]["code"] == "invalid_api_key"
    resp = chat(gateway, api_key, body(), **{"x-sovereign-tenant": "clinic-munich"})
    assert resp.status_code == 403


def test_use_case_unknown_missing_header_and_conflict(gateway: Proc, api_key: str) -> None:
    resp = chat(gateway, api_key, body("astrology"))
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "unknown_use_case"
    for known in (
        "appointment-scheduling",
        "catalog-search",
        "order-support",
        "patient-support",
        "telehealth-summary",
    ):
        assert known in err["message"]
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    assert chat(gateway, api_key, plain).json()["error"]["code"] == "missing_use_case"
    assert chat(gateway, api_key, plain, **{"x-sovereign-use-case": "order-support"}).status_code == 200
    conflict = chat(gateway, api_key, body("catalog-search"), **{"x-sovereign-use-case": "order-support"})
    assert conflict.json()["error"]["code"] == "use_case_conflict"


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b'{"messages": "\xff\xfe"}', 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (json.dumps(body(temperature="SECRET-VALUE-77")).encode(), 422, "invalid_field", "temperature"),
        (
            json.dumps(body(messages=[{"role": "user", "content": 12345678}])).encode(),
            422,
            "invalid_field",
            "messages.0.content.str",
        ),
        # an unknown field is named by where it is only (its name may carry data)
        (json.dumps(body(logit_bias={"SECRET-VALUE-77": 1})).encode(), 422, "invalid_field", "body"),
        (json.dumps(body(messages=[])).encode(), 422, "invalid_field", "messages"),
        # strict types, as the published schema says: nothing is reinterpreted (found by fuzzing)
        (json.dumps(body(stream=0)).encode(), 422, "invalid_field", "stream"),
        # n is an integer: `true` equals 1 in Python, and Literal[1] let it through (fuzzing)
        (json.dumps(body(n=True)).encode(), 422, "invalid_field", "n"),
        (json.dumps(body(temperature="0.5")).encode(), 422, "invalid_field", "temperature"),
        (
            json.dumps(body(sovereign={"context": {"date_of_birth": 12345678}})).encode(),
            422,
            "invalid_field",
            "sovereign.context.date_of_birth",
        ),
        (
            json.dumps({"sovereign": {"use_case": "patient-support"}}).encode(),
            422,
            "invalid_field",
            "messages",
        ),
    ],
)
def test_bad_bodies_name_the_field_without_echoing_values(
    gateway: Proc, api_key: str, payload: bytes, status: int, code: str, param: str | None
) -> None:
    resp = chat(gateway, api_key, payload)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["param"] == param
    if param:
        assert param.split(".")[0] in err["message"]
    assert "SECRET-VALUE-77" not in resp.text and "12345678" not in resp.text


def test_oversized_and_wrong_content_type(gateway: Proc, api_key: str) -> None:
    big = body()
    big["messages"][0]["content"] = "x" * (70 * 1024)
    assert chat(gateway, api_key, big).status_code == 413
    resp = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b"hello",
        headers={"authorization": f"Bearer {api_key}", "content-type": "text/plain"},
    )
    assert resp.status_code == 415


@pytest.mark.parametrize(
    ("script", "stream", "status", "code"),
    [
        ({"mode": "status500"}, False, 502, "upstream_error"),
        ({"mode": "malformed"}, False, 502, "upstream_malformed"),
        ({"mode": "hang", "hang_s": 5}, False, 504, "upstream_timeout"),
        ({"mode": "status500"}, True, 502, "upstream_error"),
    ],
)
def test_upstream_failures_get_clear_errors(
    gateway: Proc,
    api_key: str,
    upstream: Upstream,
    gw_dir: Path,
    script: dict[str, Any],
    stream: bool,
    status: int,
    code: str,
) -> None:
    upstream.script(**script)
    resp = chat(gateway, api_key, body(stream=stream))
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    record = audit_records(gw_dir)[-1]
    assert record["status"] == status and record["outcome"] == code


@pytest.mark.parametrize(
    ("mode", "code"), [("truncate", "upstream_incomplete"), ("malformed", "upstream_malformed")]
)
def test_broken_streams_end_with_an_error_event(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path, mode: str, code: str
) -> None:
    upstream.script(mode=mode, tokens=6)
    events = stream_events(gateway, api_key)
    assert json.loads(events[-1])["error"]["code"] == code
    assert "[DONE]" not in events
    assert audit_records(gw_dir)[-1]["outcome"] == code


def test_stream_timeout_mid_answer(gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path) -> None:
    upstream.script(tokens=3, itl_ms=3000)  # longer than the gateway's 1.5 s read timeout
    events = stream_events(gateway, api_key)
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert audit_records(gw_dir)[-1]["status"] == 504


def test_audit_trail_verifies_with_openbao_and_detects_an_edit(
    gateway: Proc, api_key: str, gw_dir: Path, bao: Bao, tmp_path: Path
) -> None:
    for _ in range(3):  # a key record and at least two request records, whatever ran before
        assert chat(gateway, api_key, body()).status_code == 200
    token_file = tmp_path / "auditor.token"
    token_file.write_text(bao.auditor_token)
    trail = tmp_path / "audit.jsonl"
    shutil.copy(gw_dir / "audit" / "audit.jsonl", trail)
    shutil.copy(gw_dir / "audit" / "audit.jsonl.head", tmp_path / "audit.jsonl.head")

    def verify() -> subprocess.CompletedProcess[str]:
        return sovereign(
            "audit", "verify", str(trail), "--openbao-address", bao.address, "--token-file", str(token_file),
            timeout=60,
        )  # fmt: skip

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK ")
    lines = trail.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"status":200', '"status":201')
    trail.write_text("".join(lines))
    bad = verify()
    assert bad.returncode == 1
    assert "line 3" in bad.stdout and "edited" in bad.stdout


def test_the_gateway_token_cannot_read_audit_keys(
    bao: Bao, gw_dir: Path, gateway: Proc, api_key: str
) -> None:
    """Least privilege: the gateway's token can make audit keys but not unwrap them."""
    from gateway.kms import transit_unwrapper

    assert chat(gateway, api_key, body()).status_code == 200

    wrapped = audit_records(gw_dir)[0]["wrapped"]
    with pytest.raises(Exception, match="permission denied"):
        transit_unwrapper(bao.address, bao.gateway_token, "audit-hmac")(wrapped)


def test_audit_sink_unwritable_refuses_requests(gateway: Proc, api_key: str, gw_dir: Path) -> None:
    assert chat(gateway, api_key, body()).status_code == 200
    trail = gw_dir / "audit" / "audit.jsonl"
    moved = gw_dir / "audit" / "moved.jsonl"
    trail.rename(moved)
    trail.mkdir()  # appends now fail, even for root
    try:
        resp = chat(gateway, api_key, body())
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "audit_unavailable"
        assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 503
    finally:
        trail.rmdir()
        moved.rename(trail)
    assert chat(gateway, api_key, body()).status_code == 200


def test_client_disconnect_mid_stream_is_audited(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script(tokens=50, itl_ms=100)
    request_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body(stream=True),
        headers={"authorization": f"Bearer {api_key}", "x-request-id": request_id},
        timeout=30,
    ) as resp:
        for line in resp.iter_lines():
            if '"content":"ok"' in line.replace(" ", ""):
                break  # leave after the first token: the client hangs up
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [
            r
            for r in audit_records(gw_dir)
            if r.get("request_id") == request_id and r.get("kind") == "request"
        ]
        if records:
            break
        time.sleep(0.05)  # polling for the record, not timing anything
    assert records, "no audit record for the disconnected stream"
    assert records[0]["outcome"] == "client_disconnected" and records[0]["status"] == 499


def test_metrics_count_requests_by_use_case_and_status(gateway: Proc, api_key: str) -> None:
    def count() -> float:
        labels = (("status", "200"), ("use_case", "order-support"))
        return metric_samples(gateway.url).get(("sovereign_gateway_requests_total", labels), 0.0)

    before = count()
    assert chat(gateway, api_key, body("order-support")).status_code == 200
    assert count() == before + 1
    text = httpx.get(f"{gateway.url}/metrics").text
    assert "sovereign_gateway_request_seconds_bucket" in text
    assert "sovereign_egress_refused_total" in text


def test_stage_metrics_split_a_chat_completion_time(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    """sovereign_gateway_stage_seconds: each stage of a non-streamed and a streamed answer is
    observed once; the model's wait lands in `upstream`; a non-streamed answer's stages add up
    to its latency (sovereign_gateway_request_seconds), a stream's to less than its own."""

    def stage(samples: dict[Any, float], suffix: str, name: str, stream: str) -> float:
        labels = (("stage", name), ("stream", stream))
        return samples.get((f"sovereign_gateway_stage_seconds_{suffix}", labels), 0.0)

    def latency(samples: dict[Any, float], suffix: str, stream: str) -> float:
        labels = (("stream", stream), ("use_case", "patient-support"))
        return samples.get((f"sovereign_gateway_request_seconds_{suffix}", labels), 0.0)

    stages = ("prepare", "write_ahead", "upstream", "answer")
    before = metric_samples(gateway.url)
    upstream.script(ttft_ms=300)  # the model takes 300 ms before it answers
    assert chat(gateway, api_key, body()).status_code == 200
    upstream.reset()
    assert stream_events(gateway, api_key)[-1] == "[DONE]"
    deadline = time.monotonic() + 10
    after = metric_samples(gateway.url)
    streams = latency(before, "count", "true")
    while latency(after, "count", "true") < streams + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # a stream's latency is observed with its final record, just after its body
        after = metric_samples(gateway.url)
    assert latency(after, "count", "true") == streams + 1
    assert latency(after, "count", "false") == latency(before, "count", "false") + 1
    for name in stages:
        assert stage(after, "count", name, "false") == stage(before, "count", name, "false") + 1, name
        expected = 0 if name == "answer" else 1  # a stream's answer is relayed, not a stage of its own
        assert stage(after, "count", name, "true") == stage(before, "count", name, "true") + expected, name
    spent = {n: stage(after, "sum", n, "false") - stage(before, "sum", n, "false") for n in stages}
    assert all(v > 0 for v in spent.values()), spent
    assert spent["upstream"] >= 0.3  # the scripted model's wait, in the upstream's stage
    whole = latency(after, "sum", "false") - latency(before, "sum", "false")
    assert math.isclose(sum(spent.values()), whole, abs_tol=1e-6), (spent, whole)  # float sums only
    streamed = sum(stage(after, "sum", n, "true") - stage(before, "sum", n, "true") for n in stages)
    assert 0 < streamed < latency(after, "sum", "true") - latency(before, "sum", "true")


def test_the_start_up_heap_is_out_of_the_collectors_reach(gateway: Proc, api_key: str) -> None:
    """gateway/server.py: the objects of the gateway's start-up are frozen before it serves (a
    full collection would walk them all: a pause of the event loop), and every collection is
    timed into sovereign_gateway_gc_pause_seconds."""
    before = metric_samples(gateway.url)
    frozen = before.get(("sovereign_gateway_gc_frozen_objects", ()), 0.0)
    assert frozen > 10_000  # the gateway's modules alone are tens of thousands of objects

    def collections(samples: dict[Any, float]) -> float:
        return samples.get(("sovereign_gateway_gc_pause_seconds_count", (("generation", "0"),)), 0.0)

    for _ in range(20):  # each allocates thousands of objects: the youngest generation fills
        assert chat(gateway, api_key, body()).status_code == 200
    after = metric_samples(gateway.url)
    assert collections(after) > collections(before)
    paused = ("sovereign_gateway_gc_pause_seconds_sum", (("generation", "0"),))
    assert after[paused] > before.get(paused, 0.0)
