"""The official SDKs against a real gateway (issue #26): what a Magento developer's Python
tooling does with the `openai` SDK and `langchain-openai` (versions pinned in pyproject's dev
extra) works through the boundary, and patient identifiers in tool results, in the tool-call
history and in JSON answers never reach the model in clear and come back restored.

The model is the scripted upstream (tests/doubles/scripted_upstream.py): ``echo`` answers the
user's text, ``tool_call`` calls the request's first tool with the last user or tool message as
its arguments, ``json`` answers a JSON object (fitting the requested schema) holding that text.
What the gateway sent it is captured, so a test sees both sides.

The use case is appointment-scheduling: its policy offers the tools find_free_slots and
book_appointment and the response schema slot_choice (gateway/policies/). Its context fields are
name, date of birth and customer id; a phone number typed in a text is tokenised (PHONE is
among its categories), a KVNR is removed (``[KVNR_REMOVED]``: not among them).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import openai
import pytest
import yaml
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.phi_corpus import leaked
from tests.support import REPO, Proc, Upstream

TENANT = "clinic-sdk"  # the client key of this module's gateway (conftest.py)
USE_CASE = "appointment-scheduling"
# a name with quotes in it: where its token stands in a JSON string (tool-call arguments, a JSON
# answer), the name must come back JSON-escaped, or the JSON the client gets is broken
NAME, DOB, CUSTOMER_ID = 'Erika "Ricki" Müller', "1968-03-14", "4711"
PHONE = "+49 30 1234567"  # not a context field here: found in the text, tokenised (FF1)
KVNR = "A123456780"  # not a category this use case may pass: removed
CONTEXT = {"name": NAME, "date_of_birth": DOB, "customer_id": CUSTOMER_ID}
SOVEREIGN = {"use_case": USE_CASE, "context": CONTEXT}
# everything here is tokenised and restored
TEXT = f"Hier ist {NAME}, geb. 14.03.1968, Kundennr. {CUSTOMER_ID}, Tel. {PHONE}. Wann ist frei?"
# quotes, a backslash and a newline around the identifiers: inside JSON text they are escaped,
# and the originals restored into it must be escaped the same way
JSON_TEXT = f'Termin für "{NAME}"\nTel. {PHONE}, KVNR {KVNR}, Ordner C:\\Praxis'
# the same, short enough for slot_choice's strings (maxLength 64), as the model writes them tokenised
SLOT_TEXT = f'"{NAME}"\nTel. {PHONE}, C:\\Praxis'
SECRETS = [NAME, PHONE, KVNR, DOB, "14.03.1968"]


def removed(text: str) -> str:
    """*text* as the client gets it back: every identifier restored but the KVNR, removed."""
    return text.replace(KVNR, "[KVNR_REMOVED]")


@pytest.fixture
def client(gateway: Proc, api_key: str) -> OpenAI:
    # no retries: a refusal must reach the test as the SDK's exception, not be tried again
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def chat_model(gateway: Proc, api_key: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=api_key,
        model="chat",
        max_retries=0,
        timeout=30,
        extra_body={"sovereign": SOVEREIGN},
        **kwargs,
    )


def strings(value: Any) -> Iterator[str]:
    """Every string in *value* (keys too), and inside a string that is JSON text (tool-call
    arguments, a tool result) every string of that JSON as well, unescaped."""
    if isinstance(value, str):
        yield value
        try:
            inner = json.loads(value)
        except ValueError:
            return
        if isinstance(inner, dict | list):
            yield from strings(inner)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def assert_nothing_leaked(upstream: Upstream) -> list[dict[str, Any]]:
    """No identifier of the test, in any spelling, in anything the model server got."""
    captured = upstream.captured()
    assert captured, "the gateway sent nothing to the model"
    sent = " | ".join(s for body in captured for s in strings(body))
    assert [s for s in SECRETS if leaked(s, sent)] == []
    return captured


def reviewed_tool(name: str) -> dict[str, Any]:
    """The tool *name* as the use case's policy reviewed it, in the OpenAI ``tools`` form: what a
    developer copies from the policy (its parameters must be exactly the reviewed schema)."""
    policy = yaml.safe_load((REPO / "gateway" / "policies" / f"{USE_CASE}.yaml").read_text())
    tools = {t["name"]: t for t in policy.get("tools") or []}
    assert name in tools, f"{USE_CASE} offers no tool {name} (policy tools: {sorted(tools)})"
    tool = tools[name]
    function = {"name": name, "description": tool.get("description", ""), "parameters": tool["parameters"]}
    return {"type": "function", "function": function}


class SlotChoice(BaseModel):
    """A developer's model of the reviewed response schema slot_choice. The SDK's parse() (and
    LangChain's with_structured_output, which calls it) names the format after the class
    (``SlotChoice``: the gateway matches names ignoring case, ``_`` and ``-``) and sends
    pydantic's schema made strict: additionalProperties false, every field required, titles
    where the policy has descriptions (the gateway compares schemas annotations aside)."""

    slot_id: str = Field(max_length=64)
    # the reviewed schema's format: date-time; a str here, as the scripted upstream's value is the
    # message text (a datetime field would make parse() refuse it)
    start: str = Field(json_schema_extra={"format": "date-time"})


def reviewed_schema(name: str) -> dict[str, Any]:
    policy = yaml.safe_load((REPO / "gateway" / "policies" / f"{USE_CASE}.yaml").read_text())
    schemas = {s["name"]: s["schema"] for s in (policy.get("structured_output") or {}).get("schemas", [])}
    assert name in schemas, f"{USE_CASE} allows no response schema {name} (policy: {sorted(schemas)})"
    schema: dict[str, Any] = schemas[name]
    return schema


# ---------------------------------------------------------------------------------------------
# What works with today's gateway: plain and streamed chat, errors, LangChain's plain chat.


def test_plain_chat_comes_back_restored(client: OpenAI, upstream: Upstream) -> None:
    upstream.script(mode="echo", capture=True)
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": TEXT}], extra_body={"sovereign": SOVEREIGN}
    )
    assert answer.choices[0].message.content == TEXT
    assert answer.choices[0].finish_reason == "stop"
    assert_nothing_leaked(upstream)


@pytest.mark.parametrize("chunk_chars", [1, 4])
def test_streamed_chat_comes_back_restored(client: OpenAI, upstream: Upstream, chunk_chars: int) -> None:
    upstream.script(mode="echo", chunk_chars=chunk_chars, capture=True)
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": TEXT}],
        stream=True,
        extra_body={"sovereign": SOVEREIGN},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert_nothing_leaked(upstream)


def test_a_stream_the_sdk_reads_to_done_is_audited_as_answered(
    client: OpenAI, upstream: Upstream, gw_dir: Path
) -> None:
    """The openai SDK stops reading at [DONE] and closes its response (openai/_streaming.py,
    Stream.__stream__): the client has the whole answer, and its audit record says ok, not
    client_disconnected, however long the model server takes to end its body after [DONE]
    (the scripted upstream's linger_s; llama-cpp-python's server took long enough on the local
    stack for the gateway to record 499)."""
    upstream.script(mode="echo", chunk_chars=4, linger_s=30)
    request_id = str(uuid.uuid4())
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": TEXT}],
        stream=True,
        extra_body={"sovereign": SOVEREIGN},
        extra_headers={"x-request-id": request_id},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    trail = gw_dir / "audit" / "audit.jsonl"
    records: list[dict[str, Any]] = []
    for _ in range(2000):  # polling for the record, a deadlock guard only (it is written at body end)
        lines = trail.read_text().splitlines()
        records = [json.loads(line) for line in lines if request_id in line and '"outcome"' in line]
        if records:
            break
        time.sleep(0.01)
    [record] = records
    assert (record["outcome"], record["status"]) == ("ok", 200)


def test_errors_map_to_the_sdk_exception_classes(gateway: Proc, client: OpenAI, upstream: Upstream) -> None:
    messages = [{"role": "user", "content": "hallo"}]
    wrong_key = OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-sov-nope.nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong_key.chat.completions.create(
            model="chat", messages=messages, extra_body={"sovereign": SOVEREIGN}
        )
    assert denied.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model="chat", messages=messages, extra_body={"sovereign": {"use_case": "no-such-use-case"}}
        )
    assert unknown.value.code == "unknown_use_case"
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        client.chat.completions.create(
            model="chat", messages=messages, temperature=3, extra_body={"sovereign": SOVEREIGN}
        )
    assert (invalid.value.code, invalid.value.param) == ("invalid_field", "temperature")


def test_langchain_chat_invoke_and_stream(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(mode="echo", chunk_chars=3, capture=True)
    llm = chat_model(gateway, api_key)
    assert llm.invoke(TEXT).content == TEXT
    assert "".join(str(chunk.content) for chunk in llm.stream(TEXT)) == TEXT
    assert len(assert_nothing_leaked(upstream)) == 2


# ---------------------------------------------------------------------------------------------
# After the merge of issue #26's request side (the policy's tools and response schemas, the
# developer role, /v1/models `created` and /v1/models/{id}: helper A's branch).


def test_models_list_and_retrieve(client: OpenAI) -> None:
    listed = client.models.list().data
    assert [m.id for m in listed] == ["chat"]
    assert all(isinstance(m.created, int) and m.created > 0 for m in listed)
    model = client.models.retrieve("chat")
    assert (model.id, model.object, model.created) == ("chat", "model", listed[0].created)
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_an_unknown_tool_is_refused_naming_its_position(client: OpenAI, upstream: Upstream) -> None:
    upstream.script(capture=True)
    secret_tool = {"type": "function", "function": {"name": "fetch_record_of_erika_mueller"}}
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hallo"}],
            tools=[reviewed_tool("find_free_slots"), secret_tool],
            extra_body={"sovereign": SOVEREIGN},
        )
    assert (refused.value.code, refused.value.param) == ("tool_not_allowed", "tools[1].function.name")
    assert "erika" not in refused.value.message.lower()  # the client's name is never echoed
    assert "find_free_slots" in refused.value.message  # the reviewed ones are listed
    assert upstream.captured() == []


def test_the_developer_role_reaches_the_model_as_system(client: OpenAI, upstream: Upstream) -> None:
    upstream.script(mode="echo", capture=True)
    client.chat.completions.create(
        model="chat",
        messages=[{"role": "developer", "content": "Antworte kurz."}, {"role": "user", "content": "hallo"}],
        extra_body={"sovereign": SOVEREIGN},
    )
    sent = upstream.captured()[0]["messages"]
    assert {"role": "system", "content": "Antworte kurz."} in sent
    assert "developer" not in [m["role"] for m in sent]


@pytest.mark.parametrize(
    ("field", "code"), [("store", "store_not_supported"), ("logprobs", "logprobs_not_supported")]
)
def test_store_and_logprobs_are_refused_with_a_reason(
    client: OpenAI, upstream: Upstream, field: str, code: str
) -> None:
    """Nothing is stored outside the boundary; log-probabilities would be the tokens' ones."""
    upstream.script(capture=True)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hallo"}],
            extra_body={"sovereign": SOVEREIGN, field: True},
        )
    assert (refused.value.code, refused.value.param) == (code, field)
    assert upstream.captured() == []


# ---------------------------------------------------------------------------------------------
# After the merge of both sides of issue #26: the request side (helper A) and the answer side
# (tokens restored JSON-aware in tool-call arguments and JSON content, streamed tool-call
# fragments restored across boundaries: helper B's branch).


@pytest.mark.parametrize("stream", [False, True])
def test_parse_with_a_pydantic_model(client: OpenAI, upstream: Upstream, stream: bool) -> None:
    """The JSON answer comes back restored and still valid: the SDK parses it into the model."""
    upstream.script(mode="json", chunk_chars=3, capture=True)
    messages: list[Any] = [{"role": "user", "content": SLOT_TEXT}]
    if stream:
        with client.chat.completions.stream(
            model="chat", messages=messages, response_format=SlotChoice, extra_body={"sovereign": SOVEREIGN}
        ) as events:
            parsed = events.get_final_completion().choices[0].message.parsed
    else:
        answer = client.chat.completions.parse(
            model="chat", messages=messages, response_format=SlotChoice, extra_body={"sovereign": SOVEREIGN}
        )
        parsed = answer.choices[0].message.parsed
    assert parsed is not None
    assert parsed.model_dump() == {"slot_id": removed(SLOT_TEXT), "start": removed(SLOT_TEXT)}
    [sent] = assert_nothing_leaked(upstream)
    assert sent["response_format"]["json_schema"]["schema"] == reviewed_schema("slot_choice")


def test_a_tool_call_comes_back_restored(client: OpenAI, upstream: Upstream) -> None:
    upstream.script(mode="tool_call", capture=True)
    answer = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": JSON_TEXT}],
        tools=[reviewed_tool("find_free_slots")],
        extra_body={"sovereign": SOVEREIGN},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "find_free_slots"
    assert json.loads(call.function.arguments) == {"query": removed(JSON_TEXT)}
    [sent] = assert_nothing_leaked(upstream)
    # the upstream got the reviewed definition, never the client's copy of it
    assert sent["tools"][0]["function"] == reviewed_tool("find_free_slots")["function"]


@pytest.mark.parametrize("chunk_chars", [1, 3, 8])
def test_a_streamed_tool_call_with_the_sdk_stream_helper(
    client: OpenAI, upstream: Upstream, chunk_chars: int
) -> None:
    """The arguments arrive in fragments of chunk_chars characters, tokens cut across them;
    the SDK's accumulated call holds the restored arguments, valid JSON."""
    upstream.script(mode="tool_call", chunk_chars=chunk_chars, capture=True)
    with client.chat.completions.stream(
        model="chat",
        messages=[{"role": "user", "content": JSON_TEXT}],
        tools=[reviewed_tool("find_free_slots")],
        extra_body={"sovereign": SOVEREIGN},
    ) as events:
        done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
        final = events.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "find_free_slots"
    assert json.loads(call.function.arguments) == {"query": removed(JSON_TEXT)}
    assert [e.arguments for e in done] == [call.function.arguments]
    assert final.choices[0].finish_reason == "tool_calls"
    assert_nothing_leaked(upstream)


def test_a_streamed_tool_call_accumulated_from_deltas(client: OpenAI, upstream: Upstream) -> None:
    """stream=True, the deltas put together by index as the OpenAI docs show it."""
    upstream.script(mode="tool_call", chunk_chars=2, capture=True)
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": JSON_TEXT}],
        tools=[reviewed_tool("find_free_slots")],
        stream=True,
        extra_body={"sovereign": SOVEREIGN},
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "find_free_slots"
    assert json.loads(calls[0]["arguments"]) == {"query": removed(JSON_TEXT)}
    assert_nothing_leaked(upstream)


# The second turn of a tool-calling loop: the model called find_free_slots with the patient's
# data (Magento got it restored, so the history holds it in clear) and the shop's calendar
# answered with a record naming the patient.
TOOL_RESULT = {
    "patient": NAME,
    "phone": PHONE,
    "kvnr": KVNR,
    "note": 'Rückruf an "Erika"\nbitte',
    "slots": ["2026-12-08T09:00", "2026-12-08T10:30"],
}


def tool_turn(result: str = json.dumps(TOOL_RESULT, ensure_ascii=False)) -> list[dict[str, Any]]:
    arguments = json.dumps({"patient": NAME, "phone": PHONE, "day": "2026-12-08"}, ensure_ascii=False)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "find_free_slots", "arguments": arguments},
    }
    return [
        {"role": "user", "content": TEXT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


def test_a_tool_result_turn(client: OpenAI, upstream: Upstream) -> None:
    """The model answers the calendar's result in text (the echo mode repeats the result as it
    got it); the client gets the patient's values back, the KVNR stays removed."""
    upstream.script(mode="echo", capture=True)
    result = f"Freie Termine für {NAME} (Tel. {PHONE}, KVNR {KVNR}): Di 08.12. 9:00, Di 08.12. 10:30"
    answer = client.chat.completions.create(
        model="chat",
        messages=tool_turn(result),
        tools=[reviewed_tool("find_free_slots")],
        extra_body={"sovereign": SOVEREIGN},
    )
    assert answer.choices[0].message.content == removed(result)
    [sent] = assert_nothing_leaked(upstream)
    assert [m["role"] for m in sent["messages"]][-3:] == ["user", "assistant", "tool"]
    # the result is still paired with its call (the gateway may renumber the ids it forwards)
    assert sent["messages"][-1]["tool_call_id"] == sent["messages"][-2]["tool_calls"][0]["id"]


def test_the_sdk_tool_loop_sends_each_answer_back_as_it_came(client: OpenAI, upstream: Upstream) -> None:
    """The OpenAI guide's loop appends the answer's message object itself
    (``messages.append(completion.choices[0].message)``), and the SDK sends every field the
    answer had: vLLM's null refusal, annotations, audio, function_call and reasoning_content, and
    ``tool_calls: []`` on a text turn (the scripted upstream answers with them all, as vLLM
    v0.11.0 does). Three turns of that loop go through; none of those fields reaches the model."""
    tools = [reviewed_tool("find_free_slots")]
    extra = {"sovereign": SOVEREIGN}
    messages: list[Any] = [{"role": "user", "content": TEXT}]
    upstream.script(mode="tool_call", capture=True)
    first = client.chat.completions.create(model="chat", messages=messages, tools=tools, extra_body=extra)
    called = first.choices[0].message
    assert {"refusal", "audio", "function_call"} <= set(called.model_dump(exclude_unset=True))  # sent back
    [call] = called.tool_calls or []
    messages += [called, {"role": "tool", "tool_call_id": call.id, "content": '{"slots": ["s1", "s2"]}'}]
    upstream.script(mode="echo", capture=True)
    second = client.chat.completions.create(model="chat", messages=messages, tools=tools, extra_body=extra)
    assert json.loads(second.choices[0].message.content or "") == {"slots": ["s1", "s2"]}  # the echo
    assert second.choices[0].message.model_dump(exclude_unset=True)["tool_calls"] == []
    messages += [second.choices[0].message, {"role": "user", "content": "Danke"}]
    third = client.chat.completions.create(model="chat", messages=messages, tools=tools, extra_body=extra)
    assert third.choices[0].finish_reason == "stop"
    sent = assert_nothing_leaked(upstream)[-1]  # the third turn: the whole history
    answered = {"refusal", "annotations", "audio", "function_call", "reasoning_content"}
    assert not any(answered & set(m) for m in sent["messages"])
    assert "tool_calls" not in sent["messages"][-2]  # the text turn's empty list is none


@pytest.mark.parametrize("stream", [False, True])
def test_identifiers_in_a_tool_result_and_the_call_history_stay_inside(
    client: OpenAI, upstream: Upstream, stream: bool
) -> None:
    """Leak test: the tool result (JSON, a value with quotes and a newline in it) and the earlier
    call's arguments reach the model filtered, still valid JSON; the model's next call, which
    echoes the tool result, comes back with the patient's values restored in valid JSON."""
    upstream.script(mode="tool_call", chunk_chars=5, capture=True)
    kwargs: dict[str, Any] = {
        "model": "chat",
        "messages": tool_turn(),
        "tools": [reviewed_tool("book_appointment"), reviewed_tool("find_free_slots")],
        "extra_body": {"sovereign": SOVEREIGN},
    }
    if stream:
        with client.chat.completions.stream(**kwargs) as events:
            message = events.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.create(**kwargs).choices[0].message
    [call] = message.tool_calls or []
    assert call.function.name == "book_appointment"
    assert json.loads(call.function.arguments) == {**TOOL_RESULT, "kvnr": "[KVNR_REMOVED]"}
    [sent] = assert_nothing_leaked(upstream)
    history, result = sent["messages"][-2], sent["messages"][-1]
    sent_arguments = json.loads(history["tool_calls"][0]["function"]["arguments"])
    assert set(sent_arguments) == {"patient", "phone", "day"}  # each value filtered on its own
    sent_result = json.loads(result["content"])
    assert set(sent_result) == set(TOOL_RESULT) and len(sent_result["slots"]) == 2
    assert sent_result["kvnr"] == "[KVNR_REMOVED]"


@pytest.mark.parametrize("stream", [False, True])
def test_identifiers_in_json_content_stay_inside(client: OpenAI, upstream: Upstream, stream: bool) -> None:
    """Leak test: a JSON answer (response_format json_schema) whose strings hold the patient's
    tokens between quotes and newlines comes back valid, with the values restored escaped."""
    upstream.script(mode="json", chunk_chars=2, capture=True)
    schema = reviewed_schema("slot_choice")
    fmt = {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": schema, "strict": True}}
    kwargs: dict[str, Any] = {
        "model": "chat",
        "messages": [{"role": "user", "content": SLOT_TEXT}],
        "response_format": fmt,
        "extra_body": {"sovereign": SOVEREIGN},
    }
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        content = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    assert json.loads(content) == {"slot_id": removed(SLOT_TEXT), "start": removed(SLOT_TEXT)}
    assert_nothing_leaked(upstream)


@pytest.mark.parametrize("stream", [False, True])
def test_an_address_with_a_newline_in_a_tool_result_comes_back_as_valid_json(
    client: OpenAI, upstream: Upstream, stream: bool
) -> None:
    """order-support: the shop's order record names the delivery street, written on two lines.
    Inside the tool result's JSON the newline is escaped (``\\n``); the gateway finds the street
    as the text it stands for, the model's next call echoes the record with the street's token,
    and the client gets the street back JSON-escaped: valid JSON, equal to the record."""
    street = "Studio 0\nLindsey Spur"
    context = {
        "name": NAME,
        "address": {"street": street, "postcode": "10115", "city": "Berlin", "country": "DE"},
    }
    record = {"order_id": "100000123", "status": "shipped", "deliver_to": street, "customer": NAME}
    call = {"id": "c1", "type": "function", "function": {"name": "lookup_order", "arguments": "{}"}}
    kwargs: dict[str, Any] = {
        "model": "chat",
        "messages": [
            {"role": "user", "content": "Wo ist meine Bestellung?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps(record)},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup_order"}}],
        "extra_body": {"sovereign": {"use_case": "order-support", "context": context}},
    }
    upstream.script(mode="tool_call", chunk_chars=3, capture=True)
    if stream:
        with client.chat.completions.stream(**kwargs) as events:
            message = events.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.create(**kwargs).choices[0].message
    [answered] = message.tool_calls or []
    assert json.loads(answered.function.arguments) == record
    sent = " | ".join(strings(upstream.captured()))
    assert not leaked("Lindsey Spur", sent) and not leaked(NAME, sent)


def test_langchain_bind_tools(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(mode="tool_call", chunk_chars=3, capture=True)
    llm = chat_model(gateway, api_key).bind_tools(
        [reviewed_tool("find_free_slots")], tool_choice="find_free_slots"
    )
    for message in (llm.invoke(JSON_TEXT), _streamed(llm, JSON_TEXT)):
        [call] = message.tool_calls
        assert call["name"] == "find_free_slots"
        assert call["args"] == {"query": removed(JSON_TEXT)}
    captured = assert_nothing_leaked(upstream)
    assert [body["tool_choice"]["function"]["name"] for body in captured] == ["find_free_slots"] * 2


class find_free_slots(BaseModel):  # LangChain names the tool after the class
    """Find free appointment slots of the practice calendar."""

    date_from: date
    date_to: date
    practitioner: Annotated[str, Field(max_length=64)] | None


def test_langchain_bind_tools_with_a_model_needs_the_strict_form(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    """A pydantic model matching the reviewed tool: LangChain's default schema (optional fields
    not required, no additionalProperties) is not the reviewed strict one and is refused, saying
    how to get it; with strict=True it is the reviewed schema and goes through."""
    upstream.script(mode="tool_call", capture=True)
    loose = chat_model(gateway, api_key).bind_tools([find_free_slots], tool_choice="find_free_slots")
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        loose.invoke(TEXT)
    assert refused.value.code == "tool_schema_mismatch" and "strict=True" in refused.value.message
    strict = chat_model(gateway, api_key).bind_tools(
        [find_free_slots], tool_choice="find_free_slots", strict=True
    )
    [call] = strict.invoke(TEXT).tool_calls
    assert call["name"] == "find_free_slots"
    assert_nothing_leaked(upstream)


def _streamed(llm: Any, text: str) -> Any:
    """LangChain's streamed chunks added up into one message (its tool calls parsed)."""
    chunks = iter(llm.stream(text))
    message = next(chunks)
    for chunk in chunks:
        message = message + chunk
    return message


def test_langchain_with_structured_output(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(mode="json", chunk_chars=3, capture=True)
    structured = chat_model(gateway, api_key).with_structured_output(SlotChoice)
    result = structured.invoke(SLOT_TEXT)
    assert isinstance(result, SlotChoice)
    assert result.model_dump() == {"slot_id": removed(SLOT_TEXT), "start": removed(SLOT_TEXT)}
    [sent] = assert_nothing_leaked(upstream)
    assert sent["response_format"]["json_schema"]["name"] == "slot_choice"


def test_the_php_examples_use_what_the_policy_offers() -> None:
    """docs/gateway-api.md's PHP examples name tools and a response format the shipped policy
    offers, and read only arguments its reviewed tools have: copied, they are not refused."""
    doc = (REPO / "docs" / "gateway-api.md").read_text()
    php = "\n".join(block.split("```", 1)[0] for block in doc.split("```php")[1:])
    policy = yaml.safe_load((REPO / "gateway" / "policies" / f"{USE_CASE}.yaml").read_text())
    tools = {t["name"]: t for t in policy.get("tools") or []}
    schemas = {s["name"] for s in (policy.get("structured_output") or {}).get("schemas", [])}
    named = re.findall(r"'type' => 'function', 'function' => \['name' => '([\w-]+)'", php)
    assert named and set(named) <= set(tools), (named, sorted(tools))
    formats = re.findall(r"'json_schema' => \['name' => '([\w-]+)'", php)
    assert formats and set(formats) <= schemas, (formats, sorted(schemas))
    properties = {p for t in tools.values() for p in t["parameters"].get("properties", {})}
    read = set(re.findall(r"\$args\['(\w+)'\]", php))
    assert read and read <= properties, (sorted(read), sorted(properties))
