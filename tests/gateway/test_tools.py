"""Tools and structured output at the door (issue #26): the use case's policy decides which
tools and JSON formats reach the model, as reviewed; tool results and tool-call history go
through the PHI filter value by value; store and logprobs are refused with their reason."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.policy import load_policies
from tests.phi_corpus import leaked
from tests.support import Proc, Upstream

TENANT = "clinic-tools"  # the client key of this module's gateway (conftest.py)
POLICIES = load_policies()
INVENTED = "erika_mueller_A123456780"  # a tool name a client made up, shaped like patient data


def chat(gateway: Proc, key: str, use_case: str, **fields: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Hallo"}], **fields}
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
        headers={"authorization": f"Bearer {key}", "x-sovereign-use-case": use_case},
    )  # fmt: skip


def tool(name: str, parameters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, **extra}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def reviewed(use_case: str, name: str) -> dict[str, Any]:
    found = POLICIES[use_case].tool_named(name)
    assert found is not None
    return {"name": found.name, "description": found.description, "parameters": found.parameters}


def refused(resp: httpx.Response, code: str, param: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code and error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]
    return error


def strings(value: Any) -> list[str]:
    """Every string of a JSON value (keys too)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else [str(value)] if value is not None else []


def sent_text(body: dict[str, Any]) -> str:
    """All the model received, as values (JSON texts in it parsed too) and as written."""
    found = strings(body)
    for text in list(found):
        with contextlib.suppress(ValueError):
            found += strings(json.loads(text))
    return " ".join(found) + " " + json.dumps(body, ensure_ascii=False)


def test_a_tool_outside_the_policy_is_refused_by_position_without_its_name(
    gateway: Proc, api_key: str
) -> None:
    tools = [tool("find_free_slots"), tool(INVENTED, {"type": "object"}, description="Erika Müller")]
    error = refused(
        chat(gateway, api_key, "appointment-scheduling", tools=tools),
        "tool_not_allowed",
        "tools[1].function.name",
    )
    assert "find_free_slots" in error["message"] and "book_appointment" in error["message"]
    assert INVENTED not in json.dumps(error) and "Erika" not in json.dumps(error)
    # a use case without tools offers none
    error = refused(
        chat(gateway, api_key, "patient-support", tools=[tool("find_free_slots")]),
        "tool_not_allowed",
        "tools[0].function.name",
    )
    assert "offers: none" in error["message"]


def test_a_tool_schema_other_than_the_reviewed_one_is_refused(gateway: Proc, api_key: str) -> None:
    wider = {**reviewed("order-support", "lookup_order")["parameters"], "additionalProperties": True}
    resp = chat(gateway, api_key, "order-support", tools=[tool("lookup_order", wider)])
    refused(resp, "tool_schema_mismatch", "tools[0].function.parameters")
    extra = json.loads(json.dumps(reviewed("order-support", "lookup_order")["parameters"]))
    extra["properties"]["kvnr"] = {"type": "string"}
    refused(
        chat(gateway, api_key, "order-support", tools=[tool("lookup_order", extra)]),
        "tool_schema_mismatch",
        "tools[0].function.parameters",
    )


def test_tool_choice_must_name_a_tool_of_the_request(gateway: Proc, api_key: str) -> None:
    tools = [tool("find_free_slots")]
    for name in ("book_appointment", INVENTED):  # the policy's other tool, not offered here; an invented one
        choice = {"type": "function", "function": {"name": name}}
        error = refused(
            chat(gateway, api_key, "appointment-scheduling", tools=tools, tool_choice=choice),
            "tool_not_allowed",
            "tool_choice.function.name",
        )
        assert INVENTED not in error["message"]
    refused(
        chat(gateway, api_key, "appointment-scheduling", tool_choice="required"),
        "invalid_field",
        "tool_choice",
    )


def test_the_upstream_gets_the_reviewed_tools_never_the_clients_words(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    """The client's description (here with patient data) and annotations never reach the model:
    the policy's name, description and schema do; strict, tool_choice and parallel_tool_calls
    are passed on."""
    upstream.script(capture=True)
    # the openai SDK's strict form of the reviewed schema: titles added (annotations)
    sdk = json.loads(json.dumps(reviewed("appointment-scheduling", "find_free_slots")["parameters"]))
    sdk["title"] = "FindFreeSlots"
    for name, prop in sdk["properties"].items():
        prop["title"] = name.replace("_", " ").title()
        prop["description"] = "Ruf Erika Müller an: +49 30 1234567"
    tools = [
        tool("find_free_slots", sdk, description="Erika Müller, +49 30 1234567", strict=True),
        tool("book_appointment"),
    ]
    choice = {"type": "function", "function": {"name": "book_appointment"}}
    resp = chat(
        gateway, api_key, "appointment-scheduling", tools=tools, tool_choice=choice, parallel_tool_calls=False
    )
    assert resp.status_code == 200, resp.text
    sent = upstream.captured()[0]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {**reviewed("appointment-scheduling", "find_free_slots"), "strict": True},
        },
        {"type": "function", "function": reviewed("appointment-scheduling", "book_appointment")},
    ]
    assert sent["tool_choice"] == choice and sent["parallel_tool_calls"] is False
    assert "Erika" not in json.dumps(sent) and "1234567" not in json.dumps(sent)


CONTEXT = {
    "name": "Erika Müller",
    "customer_id": "47110815",
    "kvnr": "A123456780",
    "phone": "+49 30 1234567",
    "address": {"street": "Studio 0\nLindsey Spur", "postcode": "10115", "city": "Berlin"},
}
SECRETS = [
    "Erika Müller",
    "A123456780",
    "+49 30 1234567",
    "Studio 0\nLindsey Spur",
    "Lindsey Spur",
    "47110815",
]
RECORD = {
    "order": "100023",
    "customer": {"name": "Erika Müller", "kvnr": "A123456780", "phone": "+49 30 1234567"},
    "delivery": {"street": "Studio 0\nLindsey Spur", "postcode": "10115", "city": "Berlin"},
    "items": 2,
    "customer_id": 47110815,  # the context's customer id, as a JSON number
}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(json.dumps(RECORD, ensure_ascii=False), id="json"),
        pytest.param(json.dumps(RECORD), id="json-ascii-escaped"),
        pytest.param(
            "Order 100023 for Erika Müller (KVNR A123456780, Tel. +49 30 1234567), to Studio 0\nLindsey Spur",
            id="plain",
        ),
        pytest.param([{"type": "text", "text": json.dumps(RECORD)}], id="json-text-parts"),
    ],
)
def test_tool_results_reach_the_model_only_filtered(
    gateway: Proc, api_key: str, upstream: Upstream, content: Any
) -> None:
    upstream.script(capture=True)
    messages = [
        {"role": "user", "content": "Wo ist meine Bestellung?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_Erika",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "100023"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_Erika", "content": content},
    ]
    resp = chat(
        gateway, api_key, "order-support", messages=messages, tools=[tool("lookup_order")],
        sovereign={"context": CONTEXT},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    sent = upstream.captured()[0]
    text = sent_text(sent)
    assert [s for s in SECRETS if leaked(s, text)] == []
    assert "Erika" not in text and "Lindsey" not in text
    call, result = sent["messages"][-2], sent["messages"][-1]
    # ids are the gateway's own, consistent between the call and its result
    assert call["tool_calls"][0]["id"] == result["tool_call_id"] == "call00001"
    if isinstance(content, list) or content.startswith("{"):
        record = json.loads(result["content"])  # still JSON, its shape kept
        assert set(record) == set(RECORD) and record["items"] == 2 and record["delivery"]["city"] != ""
        assert set(record["customer"]) == {"name", "kvnr", "phone"}
        # tokenised (FF1: eight digits again): a number still, or a string if it begins with 0
        token = record["customer_id"]
        assert token != RECORD["customer_id"] and str(token) != str(RECORD["customer_id"])
        assert isinstance(token, int) or (isinstance(token, str) and token.isdigit() and token[0] == "0")


def test_tool_call_arguments_in_the_history_are_filtered_and_stay_json(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    arguments = {"slot_id": "s-17", "patient_name": "Erika Müller", "date_of_birth": "1968-03-14"}
    messages = [
        {"role": "developer", "content": "Antworte auf Deutsch."},
        {"role": "user", "content": "Bitte den Termin buchen."},
        {
            "role": "assistant",
            "content": "Ich buche für Erika Müller.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "book_appointment", "arguments": json.dumps(arguments)},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "find_free_slots", "arguments": "Erika Müller morgen"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"booked": true}'},
        {"role": "tool", "tool_call_id": "c2", "content": "[]"},
    ]
    context = {"name": "Erika Müller", "date_of_birth": "1968-03-14"}
    resp = chat(gateway, api_key, "appointment-scheduling", messages=messages, sovereign={"context": context})
    assert resp.status_code == 200, resp.text
    sent = upstream.captured()[0]
    assert "Erika" not in json.dumps(sent, ensure_ascii=False) and "1968" not in json.dumps(sent)
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool"]  # developer as system
    assert sent["messages"][1]["content"] == "Antworte auf Deutsch."
    calls = sent["messages"][3]["tool_calls"]
    forwarded = json.loads(calls[0]["function"]["arguments"])
    assert set(forwarded) == set(arguments) and forwarded["slot_id"] == "s-17"
    assert forwarded["patient_name"] != arguments["patient_name"]
    assert calls[1]["function"]["arguments"].endswith(" morgen")  # not JSON: filtered as text
    assert [c["id"] for c in calls] == ["call00001", "call00002"]
    assert [m["tool_call_id"] for m in sent["messages"][4:]] == ["call00001", "call00002"]
    assert "tools" not in sent  # none offered in this request


def test_a_tool_call_in_the_history_must_be_a_tool_of_the_policy(gateway: Proc, api_key: str) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": INVENTED, "arguments": "{}"}}
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]
    error = refused(
        chat(gateway, api_key, "order-support", messages=messages),
        "tool_not_allowed",
        "messages[1].tool_calls[0].function.name",
    )
    assert INVENTED not in error["message"] and "lookup_order" in error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "content": "x"}], "messages.0"),  # no tool_call_id
        ([{"role": "user", "content": "x", "tool_call_id": "c1"}], "messages.0"),
        ([{"role": "assistant", "content": None}], "messages.0"),  # neither content nor tool calls
        ([{"role": "user", "content": "x", "tool_calls": []}], "messages.0"),  # tool_calls: assistant only
        ([{"role": "user", "content": "x", "refusal": None, "reasoning_content": "r"}], "messages.0"),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "lookup_order", "arguments": "{}"},
                },
            ],
            "messages.1",
        ),  # the legacy form alone (no tool_calls it repeats)
        ([{"role": "tool", "tool_call_id": "Erika Müller", "content": "x"}], "messages.0.tool_call_id"),
    ],
)
def test_malformed_tool_turns_are_refused(
    gateway: Proc, api_key: str, messages: list[Any], param: str
) -> None:
    error = refused(chat(gateway, api_key, "order-support", messages=messages), "invalid_field", param)
    assert "Erika" not in error["message"]


def test_response_formats_as_the_policy_allows(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    error = refused(
        chat(gateway, api_key, "patient-support", response_format={"type": "json_object"}),
        "response_format_not_allowed", "response_format.type",
    )  # fmt: skip
    assert "allows: text" in error["message"]
    assert chat(gateway, api_key, "patient-support", response_format={"type": "text"}).status_code == 200
    resp = chat(gateway, api_key, "appointment-scheduling", response_format={"type": "json_object"})
    assert resp.status_code == 200, resp.text
    slot = POLICIES["appointment-scheduling"].structured_output.schema_named("slot_choice")
    assert slot is not None
    sdk = {**json.loads(json.dumps(slot.schema_)), "title": "SlotChoice"}  # as parse() sends it
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "SlotChoice", "schema": sdk, "strict": True, "description": "Erika"},
    }
    assert chat(gateway, api_key, "appointment-scheduling", response_format=fmt).status_code == 200
    sent = upstream.captured()
    assert "response_format" not in sent[0]  # text: the default
    assert sent[1]["response_format"] == {"type": "json_object"}
    assert sent[2]["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "slot_choice",
            "description": slot.description,
            "schema": slot.schema_,
            "strict": True,
        },
    }


def test_json_schemas_other_than_the_reviewed_ones_are_refused(gateway: Proc, api_key: str) -> None:
    other = {"type": "json_schema", "json_schema": {"name": INVENTED, "schema": {"type": "object"}}}
    error = refused(chat(gateway, api_key, "appointment-scheduling", response_format=other),
                    "response_format_not_allowed", "response_format.json_schema.name")  # fmt: skip
    assert "json_schema slot_choice" in error["message"] and INVENTED not in error["message"]
    wrong = {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": {"type": "object"}}}
    refused(chat(gateway, api_key, "appointment-scheduling", response_format=wrong),
            "response_format_schema_mismatch", "response_format.json_schema.schema")  # fmt: skip


def test_store_and_logprobs(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    error = refused(chat(gateway, api_key, "patient-support", store=True), "store_not_supported", "store")
    assert "stores nothing" in error["message"]
    assert chat(gateway, api_key, "patient-support", store=False).status_code == 200
    assert "store" not in upstream.captured()[0]
    refused(chat(gateway, api_key, "patient-support", logprobs=True), "logprobs_not_supported", "logprobs")
    refused(
        chat(gateway, api_key, "patient-support", top_logprobs=3), "logprobs_not_supported", "top_logprobs"
    )
    assert chat(gateway, api_key, "patient-support", logprobs=False).status_code == 200
    assert "logprobs" not in upstream.captured()[1]


def test_models_have_created_and_one_can_be_read(gateway: Proc, api_key: str) -> None:
    auth = {"authorization": f"Bearer {api_key}"}
    listed = httpx.get(f"{gateway.url}/v1/models", headers=auth).json()["data"]
    assert [type(m["created"]) for m in listed] == [int] and listed[0]["created"] > 1_700_000_000
    one = httpx.get(f"{gateway.url}/v1/models/chat", headers=auth)
    assert one.status_code == 200 and one.json() == listed[0]
    missing = httpx.get(f"{gateway.url}/v1/models/Erika-Mueller", headers=auth)
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "chat" in error["message"] and "Erika" not in missing.text
    assert httpx.get(f"{gateway.url}/v1/models/chat").status_code == 401


def test_the_audit_trail_holds_no_invented_tool_name_and_no_value(
    gateway: Proc, api_key: str, upstream: Upstream, gw_dir: Path
) -> None:
    upstream.script()
    messages = [{"role": "tool", "tool_call_id": "call_A123456780", "content": json.dumps(RECORD)}]
    ok = chat(gateway, api_key, "order-support", messages=messages, sovereign={"context": CONTEXT})
    assert ok.status_code == 200
    chat(gateway, api_key, "order-support", tools=[tool(INVENTED)])
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": INVENTED, "arguments": '{"x": "Erika Müller"}'},
    }
    chat(gateway, api_key, "order-support", messages=[{"role": "assistant", "tool_calls": [call]}])
    chat(
        gateway,
        api_key,
        "appointment-scheduling",
        response_format={"type": "json_schema", "json_schema": {"name": INVENTED}},
    )
    records = [json.loads(line) for line in (gw_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [r["error"] for r in records[-3:]] == [
        "tool_not_allowed",
        "tool_not_allowed",
        "response_format_not_allowed",
    ]
    trail = json.dumps(records, ensure_ascii=False)
    for value in (INVENTED, "Erika", "A123456780", "1234567", "Lindsey", "100023", "47110815"):
        assert value not in trail


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "Erika-Mueller"}}, "response_format"),
        ({"response_format": {"kind": "Erika-Mueller"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "Erika Mueller"}}},
            "response_format.json_schema.name",
        ),
        ({"tool_choice": "Erika-Mueller"}, "tool_choice"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "Erika Mueller"}}},
            "tool_choice.function.name",
        ),
        ({"tools": [{"type": "function", "function": {"name": "Erika Mueller"}}]}, "tools.0.function.name"),
        ({"store": "Erika-Mueller"}, "store"),
    ],
)
def test_malformed_tool_and_format_fields_are_named_without_their_values(
    gateway: Proc, api_key: str, fields: dict[str, Any], param: str
) -> None:
    """pydantic's own words for a wrong union tag quote it: the gateway's never do, and the
    path leaves out pydantic's name for the union's member."""
    resp = chat(gateway, api_key, "appointment-scheduling", **fields)
    refused(resp, "invalid_field", param)
    assert "Erika" not in resp.text
