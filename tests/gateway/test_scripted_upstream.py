"""The scripted upstream (tests/doubles/scripted_upstream.py) is a test double: its answers must follow
the script the request arrived under, as a model server's answer follows the request it got.
A switch of the script while an answer is being written (the fault tests switch from "echo" to
"hang" under load) must not change that answer half-way. Its tool-call and JSON modes answer
in the shape vLLM v0.11.0 gives (a call of the first tool, its arguments streamed in fragments;
a JSON object, fitting a requested schema), and it refuses what vLLM cannot read, as vLLM does."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.support import Upstream


def test_a_stream_keeps_the_script_it_arrived_under(upstream: Upstream) -> None:
    upstream.script(mode="echo", ttft_ms=1500, capture=True)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Erika Mustermann"}]}
    answers: list[str] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{upstream.url}/v1/chat/completions", json=body, timeout=30).text
        )
    )
    thread.start()
    # the request has arrived (its body is captured) and waits its time to first token
    while not upstream.captured():
        assert thread.is_alive(), answers
        time.sleep(0.01)
    upstream.script(mode="hang", hang_s=30)
    thread.join(timeout=30)
    assert answers, "the stream did not end"
    events = [line[len("data: ") :] for line in answers[0].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])
    assert text == "Erika Mustermann"


# The tool-call and JSON modes (issue #26): the upstream side of the SDK and leak tests
# (tests/gateway/test_sdk.py). The answers must have the shape vLLM v0.11.0 gives them.

TOOL = {
    "type": "function",
    "function": {
        "name": "find_free_slots",
        "description": "Find free appointment slots.",
        "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
    },
}
# quotes, a backslash, a newline and non-ASCII letters: the arguments must carry them JSON-escaped
TEXT = 'Termin für "Erika Müller"\nC:\\Praxis, Tel. +49 30 1234567'


def chat(upstream: Upstream, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", **body}, timeout=30)


def sse(resp: httpx.Response) -> list[dict[str, Any]]:
    """The events of an SSE answer; the stream must end with [DONE]."""
    events = [line[len("data: ") :] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_tool_call_mode_answers_one_call_of_the_first_tool(upstream: Upstream) -> None:
    upstream.script(mode="tool_call")
    other = {"type": "function", "function": {"name": "book_appointment"}}
    body = {"messages": [{"role": "user", "content": TEXT}], "tools": [TOOL, other]}
    first, second = chat(upstream, body).json(), chat(upstream, body).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_1", "function", "find_free_slots")
    assert json.loads(call["function"]["arguments"]) == {"query": TEXT}
    assert second["choices"][0]["message"]["tool_calls"][0]["id"] == "call_2"
    # no tools offered: the call is to "lookup"
    plain = chat(upstream, {"messages": [{"role": "user", "content": "x"}]}).json()
    assert plain["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"


def test_tool_call_mode_echoes_a_json_tool_result_as_the_arguments(upstream: Upstream) -> None:
    upstream.script(mode="tool_call")
    result = {"patient": "Erika Müller", "slots": ["2026-12-08T09:00", "2026-12-08T10:30"], "free": 2}
    call = {"id": "call_9", "type": "function", "function": {"name": "find_free_slots", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Wann ist frei?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": json.dumps(result)},
    ]
    answer = chat(upstream, {"messages": messages, "tools": [TOOL]}).json()
    arguments = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == result


@pytest.mark.parametrize("chunk_chars", [1, 3, 7])
def test_a_streamed_tool_call_comes_in_fragments_as_vllm_streams_it(
    upstream: Upstream, chunk_chars: int
) -> None:
    upstream.script(mode="tool_call", chunk_chars=chunk_chars)
    body = {"messages": [{"role": "user", "content": TEXT}], "tools": [TOOL]}
    plain = chat(upstream, body).json()["choices"][0]["message"]["tool_calls"][0]
    events = sse(chat(upstream, {**body, "stream": True}))
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""}
    head = deltas[1]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": "call_2",
        "type": "function",
        "function": {"name": "find_free_slots", "arguments": ""},
    }
    fragments = [d["tool_calls"][0] for d in deltas[2:-1]]
    assert all(set(f) == {"index", "function"} and f["index"] == 0 for f in fragments)
    pieces = [f["function"]["arguments"] for f in fragments]
    assert all(0 < len(p) <= chunk_chars for p in pieces)
    assert "".join(pieces) == plain["function"]["arguments"]
    assert json.loads("".join(pieces)) == {"query": TEXT}
    assert deltas[-1] == {} and events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_stops_at_max_tokens(upstream: Upstream, stream: bool) -> None:
    """A model server stops at max_tokens, inside the arguments: finish_reason "length"."""
    upstream.script(mode="tool_call", chunk_chars=2)
    body = {"messages": [{"role": "user", "content": TEXT}], "max_tokens": 5, "stream": stream}
    resp = chat(upstream, body)
    if stream:
        events = sse(resp)
        pieces = [
            d["tool_calls"][0]["function"]["arguments"]
            for e in events
            if "tool_calls" in (d := e["choices"][0]["delta"]) and "id" not in d["tool_calls"][0]
        ]
        finish = events[-1]["choices"][0]["finish_reason"]
        arguments = "".join(pieces)
    else:
        choice = resp.json()["choices"][0]
        finish, arguments = (
            choice["finish_reason"],
            choice["message"]["tool_calls"][0]["function"]["arguments"],
        )
        assert resp.json()["usage"]["completion_tokens"] == 5
    assert finish == "length"
    assert arguments == json.dumps({"query": TEXT}, ensure_ascii=False)[:10]


@pytest.mark.parametrize("stream", [False, True])
def test_json_mode_answers_a_json_object_echoing_the_last_message(upstream: Upstream, stream: bool) -> None:
    upstream.script(mode="json", chunk_chars=4)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXT}]
    body = {"messages": messages, "response_format": {"type": "json_object"}, "stream": stream}
    resp = chat(upstream, body)
    if stream:
        events = sse(resp)
        parts = [e["choices"][0]["delta"].get("content") or "" for e in events]
        assert all(len(p) <= 4 for p in parts)
        content, finish = "".join(parts), events[-1]["choices"][0]["finish_reason"]
    else:
        choice = resp.json()["choices"][0]
        content, finish = choice["message"]["content"], choice["finish_reason"]
    assert finish == "stop"
    assert json.loads(content) == {"answer": TEXT}


def test_json_mode_fits_the_requested_schema(upstream: Upstream) -> None:
    """With a json_schema response_format the answer is valid against it (guided decoding)."""
    upstream.script(mode="json")
    schema = {
        "type": "object",
        "properties": {
            "slot": {"type": "string"},
            "confirmed": {"type": "boolean"},
            "count": {"type": "integer", "minimum": 1},
            "kind": {"enum": ["first", "follow-up"]},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["slot", "confirmed", "count", "kind", "notes"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": schema, "strict": True}}
    answer = chat(upstream, {"messages": [{"role": "user", "content": TEXT}], "response_format": fmt}).json()
    value = json.loads(answer["choices"][0]["message"]["content"])
    Draft202012Validator(schema).validate(value)
    assert value["slot"] == TEXT and value["notes"] == [TEXT]


CALL = {"id": "call_1", "type": "function", "function": {"name": "find_free_slots", "arguments": "{}"}}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"tools": [{"function": {"name": "find_free_slots"}}]}, id="tool-without-type"),
        pytest.param({"tools": [{"type": "code", "function": {"name": "x"}}]}, id="tool-of-another-type"),
        pytest.param({"tools": [{"type": "function", "function": {}}]}, id="tool-without-name"),
        pytest.param(
            {"messages": [{"role": "tool", "content": "{}"}]},
            id="tool-message-without-tool_call_id",
        ),
        pytest.param(
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "id": None}]}]},
            id="tool-call-without-id",
        ),
        pytest.param(
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}]},
            id="tool-call-without-arguments",
        ),
        pytest.param({"response_format": {"type": "xml"}}, id="response-format-of-another-type"),
        pytest.param(
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            id="json-schema-without-name",
        ),
    ],
)
def test_requests_a_model_server_cannot_read_are_refused(upstream: Upstream, body: dict[str, Any]) -> None:
    upstream.script(mode="tool_call")
    messages = [{"role": "user", "content": "hallo"}, *body.pop("messages", [])]
    resp = chat(upstream, {"messages": messages, **body})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400


def test_a_well_formed_tool_turn_is_answered(upstream: Upstream) -> None:
    """The counterpart of the refusals above: the same turns, well formed, get an answer."""
    upstream.script(mode="tool_call")
    messages = [
        {"role": "user", "content": "hallo"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{}"},
    ]
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    assert chat(upstream, {"messages": messages, "tools": [TOOL], "response_format": fmt}).status_code == 200


def test_echo_answers_the_last_user_or_tool_message(upstream: Upstream) -> None:
    upstream.script(mode="echo")
    messages = [
        {"role": "user", "content": "Wann ist frei?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Di 9:00"},
    ]
    assert chat(upstream, {"messages": messages}).json()["choices"][0]["message"]["content"] == "Di 9:00"
    answer = chat(upstream, {"messages": [*messages, {"role": "user", "content": "Gut."}]}).json()
    assert answer["choices"][0]["message"]["content"] == "Gut."


def test_json_mode_keeps_to_the_schemas_string_lengths() -> None:
    """A model under guided decoding stops a string at the schema's maxLength: so does the double."""
    from tests.doubles.scripted_upstream import fill

    properties = {"id": {"type": "string", "maxLength": 4}, "text": {"type": "string"}}
    schema = {"type": "object", "properties": properties}
    assert fill(schema, "abcdefgh") == {"id": "abcd", "text": "abcdefgh"}


def test_embeddings_answer_and_refuse_as_llama_cpp_python(upstream: Upstream) -> None:
    """/v1/embeddings as llama-cpp-python 0.3.36's server (llama_cpp/server/types.py
    CreateEmbeddingRequest, llama.py create_embedding): fields it does not know (encoding_format,
    dimensions) are ignored, so the answer is floats of the model's length; token ids fail its
    validation, answered 500 by its RouteErrorHandler (llama_cpp/server/errors.py); the model
    named is the request's. Checked against the real server with the local stack's model."""
    url = f"{upstream.url}/v1/embeddings"
    answer = httpx.post(
        url,
        json={"model": "m", "input": ["a b", "c"], "encoding_format": "base64", "dimensions": 8},
        timeout=10,
    ).json()
    assert answer["object"] == "list" and answer["model"] == "m"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in answer["data"]] == [
        ("embedding", 0, 384),
        ("embedding", 1, 384),
    ]
    assert all(isinstance(x, float) for d in answer["data"] for x in d["embedding"])
    assert answer["usage"] == {"prompt_tokens": 7, "total_tokens": 7}  # words + [CLS] + [SEP] each
    assert (
        httpx.post(url, json={"input": "a b"}, timeout=10).json()["data"][0]["embedding"]
        == answer["data"][0]["embedding"]
    )
    for ids in ([1, 2], [[1, 2]]):
        refused = httpx.post(url, json={"input": ids}, timeout=10)
        assert refused.status_code == 500
        assert refused.json()["error"]["type"] == "internal_server_error"
        assert "validation errors" in refused.json()["error"]["message"]
