"""End to end: `sovereign up` on free ports, a real request through the real tiny model,
audit verification with the stack's auditor token, duplicate-start refusal, `down`."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from infra.local.process import alive
from tests import support
from tests.loadtests.verdict import checked_run
from tests.support import free_port

pytest.importorskip("llama_cpp", reason="the local extra (llama-cpp-python) is not installed; run make test")
pytestmark = pytest.mark.e2e


def sovereign(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return support.sovereign(*args, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("stack")
    profile = tmp / "local.yaml"
    ports = {
        "openbao": free_port(), "model": free_port(), "embedding": free_port(),
        "gateway": free_port(), "postgres": free_port(),
    }  # fmt: skip
    # as root, PostgreSQL runs as the `postgres` user, which must reach state_dir/postgres:
    # pytest's basetemp is root's only (0700), so the state lives in a folder others may pass
    tmp = support.passable_tmp(tmp)
    profile.write_text(yaml.safe_dump({"state_dir": str(tmp / "state"), "ports": ports, "tenant": "e2e"}))
    up = sovereign("up", "--profile", str(profile))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield profile, {"up": up, "ports": ports, "state": tmp / "state"}
    finally:
        sovereign("down", "--profile", str(profile))


def test_up_reports_each_component_ready_and_the_demo_request(stack: tuple[Path, dict[str, object]]) -> None:
    out = stack[1]["up"].stdout  # type: ignore[union-attr]
    for component in ("openbao", "postgres", "model", "embedding", "gateway"):
        assert f"  {component:<9} ready" in out
    assert "answer:" in out
    record = json.loads(out.split("audit record:", 1)[1].split("\n\n", 1)[0])
    assert record["outcome"] == "ok" and record["tenant"] == "e2e"
    assert record["phi"]["tokenised"]["NAME"] >= 1 and record["phi"]["tokenised"]["PHONE"] >= 1
    assert "Mustermann" not in json.dumps(record)
    assert record["weights_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    # the embedding model's upstream in the gateway config `up` wrote (issue #27)
    config = yaml.safe_load((stack[1]["state"] / "run" / "gateway.yaml").read_text())  # type: ignore[operator]
    embed = config["upstreams"]["embed"]
    assert embed["kind"] == "embeddings" and embed["dimensions"] == 384
    assert embed["url"] == f"http://127.0.0.1:{stack[1]['ports']['embedding']}/v1"  # type: ignore[index]
    assert "embedding converted to GGUF" in out or "embedding reused" in out


def test_streamed_answer_from_the_real_model(stack: tuple[Path, dict[str, object]]) -> None:
    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    key = (state / "secrets" / "demo.key").read_text()
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "max_tokens": 12,
        "sovereign": {"use_case": "order-support"},
    }
    with httpx.stream(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=120,
    ) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip(), "the model streamed no text"
    assert any(c["choices"][0].get("finish_reason") for c in chunks)


def test_a_headless_load_test_runs_through_the_gateway_and_renders_the_verdict_of_its_samples(
    stack: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """The suite end to end through the real gateway and model: every report, and a verdict on
    the cpu-local profile (pass or miss: how fast the model answers is this machine's, measured
    by `make loadtest`, never asserted) that is the one its stream records give, printed with each
    threshold, with the exit code it implies; Locust's tables count the same streams (checked_run).
    Errors are behaviour: there must be none."""
    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    out = tmp_path / "loadtest"
    result = sovereign(
        "loadtest", "--target", f"http://127.0.0.1:{port}", "--profile", "cpu-local", "--users", "1",
        "--spawn-rate", "1", "--run-time", "30s", "--api-key-file", str(state / "secrets" / "demo.key"),
        "--out", str(out), timeout=240,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output[-3000:]  # 2 or a crash: the run itself failed
    run = checked_run(out, "cpu-local", result.returncode, output)
    assert run.verdict.failures == 0, output[-3000:]
    assert run.completed >= 1, output[-3000:]  # the model answered through the gateway, streamed
    # the gateway ends each body right after [DONE] and the suite reads it to its end: the one
    # user's later streams go out on its kept-alive connection, no connect inside their TTFT
    if len(run.streams) >= 2:
        assert any(s["reused"] for s in run.streams), [s["connect_ms"] for s in run.streams]
    assert (out / "sla.html").is_file() and (out / "llm_stats.csv").is_file()


def test_kill_switch_suspends_and_resumes_a_use_case(stack: tuple[Path, dict[str, object]]) -> None:
    """`sovereign incident suspend` reaches the running gateway without a restart (before the
    audit test below, which then verifies the incident records in the chain too)."""
    profile, info = stack
    state: Path = info["state"]  # type: ignore[assignment]
    port = info["ports"]["gateway"]  # type: ignore[index]
    key = (state / "secrets" / "demo.key").read_text()
    body = {"messages": [{"role": "user", "content": "Hello."}], "max_tokens": 8,
            "sovereign": {"use_case": "patient-support"}}  # fmt: skip

    def ask() -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}, timeout=120)  # fmt: skip

    def until(status: int) -> httpx.Response:
        deadline = time.monotonic() + 60  # a hang detector: the gateway polls every 2 s
        while (resp := ask()).status_code != status:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.2)
        return resp

    suspend = sovereign("incident", "suspend", "--use-case", "patient-support", "--reason", "drill",
                        "--by", "e2e", "--profile", str(profile))  # fmt: skip
    assert suspend.returncode == 0, suspend.stdout + suspend.stderr
    try:
        refused = until(503)
        assert refused.json()["error"]["code"] == "use_case_suspended"
    finally:
        resume = sovereign("incident", "resume", "--use-case", "patient-support", "--by", "e2e",
                           "--profile", str(profile))  # fmt: skip
    assert resume.returncode == 0, resume.stdout + resume.stderr
    answered = until(200)
    assert answered.json()["choices"][0]["message"]["content"] is not None
    trail = [json.loads(line) for line in (state / "audit" / "audit.jsonl").read_text().splitlines()]
    changes = [(r["action"], r["use_case"], r["by"]) for r in trail if r.get("kind") == "incident"]
    assert changes == [("suspend", "patient-support", "e2e"), ("resume", "patient-support", "e2e")]


# Tools and JSON on the tiny model (issue #26, item 6). llama-cpp-python 0.3.36 with the stack's
# chat format `gemma` (infra/local/stack.py): its handler (llama_chat_format.py,
# chat_formatter_to_chat_completion_handler) turns a *named* tool_choice into a grammar built from
# that tool's parameters and answers with message.tool_calls; "auto" and "required" get plain text
# (the gemma template never shows the model the tools). response_format json_object is grammar-
# constrained JSON, with llama.cpp's extra key `schema` constrained to that schema
# (_grammar_for_response_format); json_schema is not a type its server accepts (llama_types.py
# ChatCompletionRequestResponseFormat: "text" | "json_object"). One short request each: 2 shared cores.
SLOT_PARAMETERS = {
    "type": "object",
    "properties": {"date": {"type": "string", "format": "date"}},
    "required": ["date"],
    "additionalProperties": False,
}


def test_the_tiny_model_calls_a_named_tool_and_answers_json_by_schema(
    stack: tuple[Path, dict[str, object]],
) -> None:
    """What the gateway's local upstream settings (tool_choices [named], json_schema_as_json_object)
    rest on, asked of the real llama.cpp server directly."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    from infra.local.stack import MODEL_NAME_UPSTREAM

    port = stack[1]["ports"]["model"]  # type: ignore[index]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    tool = {"type": "function", "function": {"name": "find_free_slots", "parameters": SLOT_PARAMETERS}}
    called = httpx.post(url, timeout=300, json={
        "model": MODEL_NAME_UPSTREAM, "max_tokens": 32, "temperature": 0,
        "messages": [{"role": "user", "content": "Find a free slot on 3 December 2026."}],
        "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "find_free_slots"}},
    })  # fmt: skip
    assert called.status_code == 200, called.text
    choice = called.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "find_free_slots"
    Draft202012Validator(SLOT_PARAMETERS).validate(json.loads(call["function"]["arguments"]))
    # its ids are longer than 64 characters ("call__0_<tool>_cmpl-<uuid4>", llama_chat_format.py
    # _convert_completion_to_chat_function): what a client sends back in its history
    assert call["id"].startswith("call__0_find_free_slots_cmpl-")
    schema = {"type": "object", "properties": {"slot": {"enum": ["09:00", "10:00"]}}, "required": ["slot"]}
    refused = httpx.post(url, timeout=60, json={
        "model": MODEL_NAME_UPSTREAM, "max_tokens": 16, "messages": [{"role": "user", "content": "9 or 10?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": schema}},
    })  # fmt: skip
    # refused before any inference; its RouteErrorHandler (llama_cpp/server/errors.py) answers the
    # RequestValidationError with 500 internal_server_error and pydantic's words
    assert refused.status_code == 500
    assert "Input should be 'text' or 'json_object'" in refused.json()["error"]["message"]
    answered = httpx.post(url, timeout=300, json={
        "model": MODEL_NAME_UPSTREAM, "max_tokens": 16, "temperature": 0,
        "messages": [{"role": "user", "content": "Which slot, 09:00 or 10:00? Answer in JSON."}],
        "response_format": {"type": "json_object", "schema": schema},
    })  # fmt: skip
    assert answered.status_code == 200, answered.text
    Draft202012Validator(schema).validate(json.loads(answered.json()["choices"][0]["message"]["content"]))


def test_a_tool_calling_exchange_through_the_gateway(stack: tuple[Path, dict[str, object]]) -> None:
    """One tool-calling exchange through the gateway on the real tiny model (issue #26): the
    appointment-scheduling policy's reviewed find_free_slots tool, forced by name; the call comes
    back well formed with JSON arguments; the patient's values went through the filter (the audit
    record counts them tokenised and holds none of them); then the tool's result goes back with
    the call in the history, as the OpenAI SDK's loop sends it, and the model answers.

    Needs, besides this branch: the policy's tools (helper A); the policy's string parameters
    bounded (``format: date``, ``maxLength``): the grammar llama.cpp builds from them
    (llama_grammar.py) ends a bounded string, while an unbounded one may run to max_tokens, and
    llama-cpp-python reports ``tool_calls`` as the finish reason all the same; the tool-call id
    the model server made (``call__0_find_free_slots_cmpl-<uuid4>``, 65 characters) accepted back
    in the history; and an assistant turn with tool_calls sent upstream without ``content: null``
    (llama-cpp-python 0.3.36's ChatCompletionRequestAssistantMessage: content is a str or absent)."""
    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    key = (state / "secrets" / "demo.key").read_text()
    policy_file = support.REPO / "gateway" / "policies" / "appointment-scheduling.yaml"
    reviewed = {t["name"]: t for t in yaml.safe_load(policy_file.read_text()).get("tools", [])}
    assert "find_free_slots" in reviewed, "the appointment-scheduling policy offers no find_free_slots tool"
    parameters = reviewed["find_free_slots"]["parameters"]
    tool = {"type": "function", "function": {"name": "find_free_slots", "parameters": parameters}}
    asked = {"role": "user", "content": "I am Erika Mustermann, 0171 2345678. Any slot on 3 December?"}
    body = {
        "messages": [asked],
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "find_free_slots"}},
        "max_tokens": 96,
        "temperature": 0,
        "sovereign": {"use_case": "appointment-scheduling"},
    }

    def ask(payload: dict[str, object]) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=payload,
                          headers={"authorization": f"Bearer {key}"}, timeout=300)  # fmt: skip

    resp = ask(body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "find_free_slots"
    assert isinstance(json.loads(call["function"]["arguments"]), dict)  # what a 270M model fills in: anything
    trail = [json.loads(line) for line in (state / "audit" / "audit.jsonl").read_text().splitlines()]
    (record,) = [r for r in trail if r.get("request_id") == resp.headers["x-request-id"] and r.get("outcome")]
    assert record["outcome"] == "ok"
    assert record["phi"]["tokenised"]["NAME"] >= 1 and record["phi"]["tokenised"]["PHONE"] >= 1
    assert "Mustermann" not in json.dumps(record) and "2345678" not in json.dumps(record)
    result = {"role": "tool", "tool_call_id": call["id"], "content": '{"slots": [{"slot_id": "s1"}]}'}
    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer = ask({**body, "tool_choice": "none", "max_tokens": 8, "messages": [asked, turn, result]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


def test_a_json_answer_by_schema_through_the_gateway(stack: tuple[Path, dict[str, object]]) -> None:
    """One structured answer through the gateway on the real tiny model: the appointment-
    scheduling policy's reviewed slot_choice schema as response_format json_schema, which the
    local upstream gets as json_object with the schema (its server has no json_schema:
    Upstream.json_schema_as_json_object), and the answer is JSON valid against the schema.

    Needs, besides this branch: the policy's structured_output (helper A), the upstream body built
    with ``Upstream.response_format`` (gateway/settings.py), and the schema's strings bounded
    (``format``, ``maxLength``) so that the grammar ends them within max_tokens."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    key = (state / "secrets" / "demo.key").read_text()
    policy_file = support.REPO / "gateway" / "policies" / "appointment-scheduling.yaml"
    policy = yaml.safe_load(policy_file.read_text())
    schemas = {s["name"]: s["schema"] for s in (policy.get("structured_output") or {}).get("schemas", [])}
    assert "slot_choice" in schemas, "the appointment-scheduling policy has no slot_choice schema"
    spec = {"name": "slot_choice", "schema": schemas["slot_choice"]}
    body = {
        "messages": [{"role": "user", "content": "I take the first slot, s1 at 9:00 on 3 December 2026."}],
        "response_format": {"type": "json_schema", "json_schema": spec},
        "max_tokens": 64,
        "temperature": 0,
        "sovereign": {"use_case": "appointment-scheduling"},
    }
    resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=300)  # fmt: skip
    assert resp.status_code == 200, resp.text
    content = resp.json()["choices"][0]["message"]["content"]
    Draft202012Validator(schemas["slot_choice"]).validate(json.loads(content))


# The official openai SDK (and langchain-openai) against the local stack's gateway (issue #26,
# Done when): a forced tool call plain and streamed, a tool-result turn, parse() with a pydantic
# model. The values of the patient (context and text) are tokenised on the way in: the audit
# record of each request counts them, and the model server's log (which prints a request it
# refuses with its values: docs/architecture.md) never holds them. Four short requests, and one
# for langchain-openai's bind_tools.
SDK_NAME, SDK_DOB, SDK_PHONE = "Erika Mustermann", "1968-03-14", "0171 2345678"
SDK_CONTEXT = {"name": SDK_NAME, "date_of_birth": SDK_DOB, "customer_id": "4711"}
SDK_SOVEREIGN = {"use_case": "appointment-scheduling", "context": SDK_CONTEXT}
SDK_ASKED = f"I am {SDK_NAME}, phone {SDK_PHONE}. Any free slot on 3 December 2026?"
FORCED = {"type": "function", "function": {"name": "find_free_slots"}}


def sdk_client(stack: tuple[Path, dict[str, object]]) -> Any:
    from openai import OpenAI

    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    key = (state / "secrets" / "demo.key").read_text()
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=300)


def reviewed(kind: str, name: str) -> dict[str, Any]:
    """appointment-scheduling's reviewed tool (*kind* "tools") or response schema ("schemas")."""
    policy = yaml.safe_load(
        (support.REPO / "gateway" / "policies" / "appointment-scheduling.yaml").read_text()
    )
    entries = (
        policy.get("tools") or []
        if kind == "tools"
        else (policy.get("structured_output") or {}).get("schemas", [])
    )
    found = {e["name"]: e for e in entries}
    assert name in found, f"appointment-scheduling's policy has no {kind} entry {name}"
    entry: dict[str, Any] = found[name]
    return entry


def sdk_tool(name: str) -> Any:
    tool = reviewed("tools", name)
    return {"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")}}


# What the model wrote in place of each value: a surrogate token is 13 characters ([NAME_3f9a2c]),
# a short id's 20, a phone's FF1 token its E.164 form (gateway/phi/tokenise.py)
AS_TOKENS = {SDK_NAME: "[NAME_000000]", SDK_DOB: "[DATE_000000]", SDK_PHONE: "+490000000000",
             "4711": "[CUSTOMER_ID_000000]"}  # fmt: skip


def as_the_model_wrote_it(value: Any) -> Any:
    """*value* with each of the patient's values, restored by the gateway, back in its token's
    place: a restored string is longer or shorter than what the model's grammar bounded."""
    if isinstance(value, str):
        for original, token in AS_TOKENS.items():
            value = value.replace(original, token)
        return value
    if isinstance(value, dict):
        return {k: as_the_model_wrote_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_the_model_wrote_it(v) for v in value]
    return value


def assert_valid_as_written(schema: dict[str, Any], text: str) -> None:
    """*text* is JSON valid against *schema* as the model wrote it; with the originals restored
    it may not be: a name restored into a string of maxLength 64 can make it longer
    (docs/phi-filter.md, restoration inside JSON)."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    Draft202012Validator(schema).validate(as_the_model_wrote_it(json.loads(text)))


def assert_tokenised_in(stack: tuple[Path, dict[str, object]], request_id: str) -> None:
    """The request's audit record counts the patient's name and phone tokenised and holds none of
    the patient's values; the model server's log holds none of them either."""
    state: Path = stack[1]["state"]  # type: ignore[assignment]
    trail = [json.loads(line) for line in (state / "audit" / "audit.jsonl").read_text().splitlines()]
    (record,) = [r for r in trail if r.get("request_id") == request_id and r.get("outcome")]
    assert record["outcome"] == "ok", record
    assert record["phi"]["tokenised"]["NAME"] >= 1 and record["phi"]["tokenised"]["PHONE"] >= 1
    model_log = (state / "logs" / "model.log").read_text(errors="replace")
    for value in (SDK_NAME, "Mustermann", SDK_PHONE, "2345678", SDK_DOB):
        assert value not in json.dumps(record) and value not in model_log


def test_the_openai_sdk_calls_a_forced_tool_plain_and_streamed_and_answers_its_result(
    stack: tuple[Path, dict[str, object]],
) -> None:
    """find_free_slots forced by name (the local model honours only a named tool_choice):
    plain, then streamed through the SDK's stream helper, whose accumulated call must have the
    tool's name once and one id (llama-cpp-python repeats both in every fragment; the gateway
    sends them once) and arguments valid against the reviewed parameters; then the call goes
    back with a JSON tool result and the model answers in text."""
    client = sdk_client(stack)
    tool = sdk_tool("find_free_slots")
    parameters = tool["function"]["parameters"]
    asked = {"role": "user", "content": SDK_ASKED}
    kwargs: dict[str, Any] = {
        "model": "chat", "messages": [asked], "tools": [tool], "tool_choice": FORCED,
        "max_tokens": 96, "temperature": 0, "extra_body": {"sovereign": SDK_SOVEREIGN},
    }  # fmt: skip

    plain_id = str(uuid.uuid4())
    answer = client.chat.completions.create(**kwargs, extra_headers={"x-request-id": plain_id})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "find_free_slots"
    assert_valid_as_written(parameters, call.function.arguments)
    assert_tokenised_in(stack, plain_id)

    streamed_id = str(uuid.uuid4())
    with client.chat.completions.stream(**kwargs, extra_headers={"x-request-id": streamed_id}) as events:
        seen = list(events)
        final = events.get_final_completion()
    deltas = [d for e in seen if e.type == "chunk" for c in e.chunk.choices for d in c.delta.tool_calls or []]
    assert {d.index for d in deltas} == {0}
    ids = [d.id for d in deltas if d.id]
    names = [d.function.name for d in deltas if d.function is not None and d.function.name]
    assert len(ids) == 1 and names == ["find_free_slots"]  # said once, in the first fragment
    assert len(deltas) > 1  # the arguments came in fragments
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.id == ids[0] and streamed.function.name == "find_free_slots"
    assert_valid_as_written(parameters, streamed.function.arguments)
    done = [e.arguments for e in seen if e.type == "tool_calls.function.arguments.done"]
    assert done == [streamed.function.arguments]
    assert final.choices[0].finish_reason == "tool_calls"
    assert_tokenised_in(stack, streamed_id)

    # the second turn of the loop as the SDK's docs write it: the answer's message appended as it
    # came (with llama-cpp-python's legacy function_call beside the tool call), the JSON result
    turn = choice.message
    assert turn.function_call is not None  # what the gateway must take back (gateway/schemas.py)
    slots = {"patient": SDK_NAME, "slots": [{"slot_id": "s1", "start": "2026-12-03T09:00"}]}
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps(slots)}
    result_id = str(uuid.uuid4())
    text = client.chat.completions.create(
        **{**kwargs, "messages": [asked, turn, result], "tool_choice": "none", "max_tokens": 8},
        extra_headers={"x-request-id": result_id},
    )
    assert text.choices[0].message.content
    assert not text.choices[0].message.tool_calls
    assert_tokenised_in(stack, result_id)


def test_langchain_binds_the_tool_forced_by_name(stack: tuple[Path, dict[str, object]]) -> None:
    """langchain-openai's bind_tools with tool_choice naming the tool (what the local model
    honours): the AIMessage carries the call, its args valid as the model wrote them."""
    from langchain_openai import ChatOpenAI

    state: Path = stack[1]["state"]  # type: ignore[assignment]
    port = stack[1]["ports"]["gateway"]  # type: ignore[index]
    request_id = str(uuid.uuid4())
    llm = ChatOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=(state / "secrets" / "demo.key").read_text(),
        model="chat",
        max_tokens=96,
        temperature=0,
        max_retries=0,
        timeout=300,
        extra_body={"sovereign": SDK_SOVEREIGN},
        default_headers={"x-request-id": request_id},
    )
    tool = sdk_tool("find_free_slots")
    message = llm.bind_tools([tool], tool_choice="find_free_slots").invoke(SDK_ASKED)
    (call,) = message.tool_calls
    assert call["name"] == "find_free_slots" and call["id"]
    assert_valid_as_written(tool["function"]["parameters"], json.dumps(call["args"]))
    assert_tokenised_in(stack, request_id)


class SlotChoice(BaseModel):
    """appointment-scheduling's slot_choice as docs/gateway-api.md models it: parse() names the
    format after the class, and the gateway finds slot_choice by that name (case, _ and - aside)."""

    slot_id: str = Field(max_length=64)
    start: datetime


def test_the_openai_sdk_parses_a_json_answer_into_a_pydantic_model(
    stack: tuple[Path, dict[str, object]],
) -> None:
    """parse() sends the model's schema as json_schema named SlotChoice; the gateway finds the
    reviewed slot_choice by it and sends the local model json_object with the schema, whose
    grammar keeps the answer valid as the model wrote it. parse() gets an instance (its values are
    a 270M model's), unless the model put the patient's name in slot_id (restored, it can be
    longer than the 64 characters the grammar allowed its token) or wrote 31 February: pydantic
    says so."""
    client = sdk_client(stack)
    request_id = str(uuid.uuid4())
    answer = client.chat.completions.with_raw_response.parse(
        model="chat",
        messages=[
            {"role": "user", "content": f"{SDK_NAME} here ({SDK_PHONE}): I take slot s1, 3 December 09:00."}
        ],
        response_format=SlotChoice,
        max_tokens=64,
        temperature=0,
        extra_body={"sovereign": SDK_SOVEREIGN},
        extra_headers={"x-request-id": request_id},
    )
    assert_tokenised_in(stack, request_id)
    content = answer.http_response.json()["choices"][0]["message"]["content"]
    assert_valid_as_written(reviewed("schemas", "slot_choice")["schema"], content)
    try:
        parsed = answer.parse().choices[0].message.parsed
    except ValidationError as exc:
        # a restored name longer than slot_id's 64 characters, or a day the grammar's date-time
        # allows and the calendar has not (llama_grammar.py STRING_FORMAT_RULES: day 01-31 in
        # any month): a 270M model's values, nothing else
        kinds = {e["type"] for e in exc.errors()}
        assert kinds <= {"string_too_long", "datetime_from_date_parsing"}, exc
        assert "string_too_long" not in kinds or SDK_NAME in content
    else:
        assert isinstance(parsed, SlotChoice)


# -- issue #27: embeddings and the memory store on the local stack -------------------------
EMBED_CONTEXT = {"name": "Erika Mustermann", "phone": "+49 30 1234567", "customer_id": "e2e-4711"}
EMBED_SOVEREIGN = {"sovereign": {"use_case": "patient-support", "context": EMBED_CONTEXT}}


def test_the_openai_sdk_embeds_through_the_local_stack(stack: tuple[Path, dict[str, object]]) -> None:
    """``client.embeddings.create`` of the official SDK, unchanged, against the real embedding
    model (all-MiniLM-L6-v2 in llama.cpp): 384 numbers per input, in the SDK's default base64
    form (openai-python 3.57.0 asks for base64 and decodes it) and as floats, the same vectors."""
    import numpy as np

    client = sdk_client(stack)
    texts = ["Blutdruckmessgerät mit Manschette", "Erika Mustermann bittet um Rückruf unter +49 30 1234567"]
    default = client.embeddings.create(model="embed", input=texts, extra_body=EMBED_SOVEREIGN)
    floats = client.embeddings.create(
        model="embed", input=texts, encoding_format="float", extra_body=EMBED_SOVEREIGN
    )
    assert default.model == "embed" and [d.index for d in default.data] == [0, 1]
    assert [len(d.embedding) for d in default.data] == [384, 384] == [len(d.embedding) for d in floats.data]
    a, b = (np.asarray(d.embedding) for d in default.data)
    assert np.allclose(a, floats.data[0].embedding, atol=1e-6) and np.allclose(
        b, floats.data[1].embedding, atol=1e-6
    )
    assert np.linalg.norm(a) > 0 and not np.allclose(a, b)
    assert default.usage.prompt_tokens > 0


def test_a_data_subjects_export_and_erasure_with_the_cli(
    stack: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """One patient's item written into the stack's store (tokenised, sealed, under her
    pseudonym, as the store's writers do), then `sovereign memory export` and `erase` against
    the running gateway: the export restores her text, the erasure deletes it, a second export
    finds nothing."""
    import asyncio

    import numpy as np

    from gateway.kms import KeyProvider
    from gateway.memory.pseudonym import memory_key, pseudonym
    from gateway.memory.store import Owner, Store
    from gateway.phi.context import PatientContext
    from gateway.phi.filter import PHIFilter, recognizers
    from gateway.policy import load_policies
    from gateway.settings import load_settings

    profile, info = stack
    state: Path = info["state"]  # type: ignore[assignment]
    settings = load_settings(state / "run" / "gateway.yaml")
    policy = load_policies()["patient-support"]
    context = PatientContext.model_validate(EMBED_CONTEXT)
    text = f"{EMBED_CONTEXT['name']} asked about the e2e marker phrase quartz-lantern."

    async def write() -> str:
        keys = KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir)
        data_key = await memory_key(keys, "e2e")  # as the gateway stores
        filtered = PHIFilter(recognizers(False, [])).apply(policy, context, [text], data_key, "e2e")
        dsn = settings.memory.dsn()
        assert dsn is not None
        store = Store(dsn, 384)
        await store.open()
        try:
            owner = Owner("e2e", policy.name, await pseudonym(keys, "e2e", context))
            v = np.random.default_rng(7).standard_normal(384)
            await store.add_chunk(
                owner, filtered.texts[0], list(v / np.linalg.norm(v)), dict(filtered.tokens.originals),
                data_key, policy.memory.retention_days if policy.memory else None,
            )  # fmt: skip
        finally:
            await store.close()
        return filtered.texts[0]

    stored = asyncio.run(write())
    assert "Mustermann" not in stored
    ctx = tmp_path / "patient.json"
    ctx.write_text(json.dumps({"customer_id": EMBED_CONTEXT["customer_id"]}))
    common = ["--tenant", "e2e", "--context", str(ctx), "--profile", str(profile)]
    exported = sovereign("memory", "export", *common)
    assert exported.returncode == 0, exported.stderr
    assert [c["text"] for c in json.loads(exported.stdout)["chunks"]] == [text]
    erased = sovereign("memory", "erase", *common)
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith("erased 1 rows")
    again = sovereign("memory", "export", *common)
    assert again.returncode == 0 and json.loads(again.stdout)["chunks"] == []


def test_audit_trail_verifies_and_second_up_is_refused(stack: tuple[Path, dict[str, object]]) -> None:
    profile, info = stack
    state: Path = info["state"]  # type: ignore[assignment]
    verify = sovereign("audit", "verify", str(state / "audit" / "audit.jsonl"), "--profile", str(profile))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = sovereign("up", "--profile", str(profile))
    assert again.returncode == 1
    assert "already running" in again.stderr and "make down" in again.stderr


def test_down_stops_exactly_what_up_started(tmp_path: Path, stack: tuple[Path, dict[str, object]]) -> None:
    profile, info = stack
    state: Path = info["state"]  # type: ignore[assignment]
    recorded = json.loads((state / "run" / "stack.json").read_text())["components"]
    assert set(recorded) == {"openbao", "postgres", "model", "embedding", "gateway"}
    down = sovereign("down", "--profile", str(profile))
    assert down.returncode == 0
    assert down.stdout.strip() == "stopped: gateway, embedding, model, postgres, openbao"
    for comp in recorded.values():
        assert not alive(comp["pid"], comp["start_ticks"])
    assert sovereign("down", "--profile", str(profile)).stdout.strip() == "the local stack is not running"


def test_up_again_after_down_archives_the_last_runs_keys_and_works(
    stack: tuple[Path, dict[str, object]],
) -> None:
    profile, info = stack
    state: Path = info["state"]  # type: ignore[assignment]
    before = (state / "audit" / "audit.jsonl").read_text()
    again = sovereign("up", "--profile", str(profile))
    try:
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert "archived the last run's wrapped keys, audit trail and memory store" in again.stdout
        assert "answer:" in again.stdout  # the demo request went through with the new keys
        (archive,) = (state / "archive").iterdir()
        assert (archive / "audit.jsonl").read_text() == before  # moved aside, not lost
        assert any((archive / "wrapped-keys").iterdir())
        assert (archive / "postgres" / "PG_VERSION").exists()  # the store under the old keys, aside
    finally:
        sovereign("down", "--profile", str(profile))
