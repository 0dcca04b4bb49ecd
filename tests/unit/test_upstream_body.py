"""What the gateway sends upstream: the policy decides model, prompt and token cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.app import Gateway
from gateway.schemas import ChatRequest, describe_validation_error
from gateway.settings import GatewaySettings


def gateway(tmp_path: Path, system_role: bool) -> Gateway:
    settings = GatewaySettings(
        upstreams={"chat": {"url": "http://127.0.0.1:9/v1", "model": "gemma", "system_role": system_role}},
        audit={"path": tmp_path / "audit.jsonl"},
        keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"},
    )
    return Gateway(settings)


REQUEST = ChatRequest.model_validate(
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Book me in"},
        ],
        "max_tokens": 10,
        "stop": ["\n"],
        "user": "customer-1",
        "sovereign": {"use_case": "appointment-scheduling", "context": {"name": "x"}},
    }
)


@pytest.mark.parametrize("system_role", [True, False])
def test_system_prompt_placement(tmp_path: Path, system_role: bool) -> None:
    gw = gateway(tmp_path, system_role)
    policy = gw.policies["appointment-scheduling"]
    texts = [m.text() for m in REQUEST.messages]
    # the client's stop sequences are never forwarded as sent: only the filtered ones passed in
    unfiltered = gw.upstream_body(REQUEST, policy, gw.settings.upstreams["chat"], texts)
    assert "stop" not in unfiltered
    body = gw.upstream_body(REQUEST, policy, gw.settings.upstreams["chat"], texts, stop=["\n"])
    assert body["model"] == "gemma" and body["max_tokens"] == 10 and body["stop"] == ["\n"]
    assert "user" not in body and "sovereign" not in body
    roles = [m["role"] for m in body["messages"]]
    if system_role:
        assert roles == ["system", "user", "assistant", "user"]
        assert body["messages"][1]["content"] == "Hi there"
    else:
        assert roles == ["user", "assistant", "user"]
        assert body["messages"][0]["content"] == policy.system_prompt + "\n\nHi there"
        assert body["messages"][2]["content"] == "Book me in"


TOOL_TURNS = ChatRequest.model_validate(
    {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Book me in"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "x-1",
                        "type": "function",
                        "function": {"name": "find_free_slots", "arguments": "{}"},
                    },
                    {
                        "id": "x-2",
                        "type": "function",
                        "function": {"name": "find_free_slots", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "x-2", "content": "[]"},
            {"role": "tool", "tool_call_id": "x-1", "content": "[]"},
        ],
        "tools": [{"type": "function", "function": {"name": "book_appointment", "description": "mine"}}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "SlotChoice"}},
    }
)


def test_tool_turns_tools_and_formats_upstream(tmp_path: Path) -> None:
    gw = gateway(tmp_path, True)
    policy = gw.policies["appointment-scheduling"]
    texts = ["Be brief.", "Book me in", None, "[]", "[]"]
    body = gw.upstream_body(
        TOOL_TURNS, policy, gw.settings.upstreams["chat"], texts, arguments={2: ["{}", '{"a":1}']}
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool"]  # developer as system
    assert body["messages"][1]["content"] == "Be brief."
    assistant = body["messages"][3]
    assert assistant["content"] == ""  # llama-cpp-python refuses null, and absent fails its _map_roles
    assert [c["id"] for c in assistant["tool_calls"]] == ["call00001", "call00002"]
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [
        "{}",
        '{"a":1}',
    ]  # the filtered ones
    assert [m["tool_call_id"] for m in body["messages"][4:]] == ["call00002", "call00001"]
    book = policy.tool_named("book_appointment")
    assert book is not None
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": book.name, "description": book.description, "parameters": book.parameters},
        }
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    slot = policy.structured_output.schema_named("slot_choice")
    assert slot is not None
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "slot_choice", "description": slot.description, "schema": slot.schema_},
    }


# llama-cpp-python 0.3.36 answers a tool call with the legacy function_call beside tool_calls, the
# same name and arguments (llama_chat_format.py _convert_completion_to_chat_function), and the
# openai SDK sends an answer's message back as it got it (its transform dumps the pydantic message
# with exclude_unset: the keys the answer had): `messages.append(answer.choices[0].message)`.
LEGACY = {"name": "find_free_slots", "arguments": '{"practitioner": "Dr. Erika Mustermann"}'}


def sent_back(function_call: dict[str, str], role: str = "assistant") -> dict[str, object]:
    turn: dict[str, object] = {"role": role, "content": None, "function_call": function_call}
    if role == "assistant":
        turn["tool_calls"] = [{"id": "call__0_x", "type": "function", "function": LEGACY}]
    else:
        turn["content"] = "hi"
    return {
        "messages": [
            {"role": "user", "content": "Book me in"},
            turn,
            {"role": "tool", "tool_call_id": "call__0_x", "content": "[]"},
        ],
        "sovereign": {"use_case": "appointment-scheduling"},
    }


def test_the_legacy_function_call_beside_tool_calls_is_accepted_and_never_forwarded(tmp_path: Path) -> None:
    gw = gateway(tmp_path, True)
    request = ChatRequest.model_validate(sent_back(LEGACY))
    texts = ["Book me in", None, "[]"]
    policy, upstream = gw.policies["appointment-scheduling"], gw.settings.upstreams["chat"]
    filtered = {1: ['{"practitioner": "[NAME_0a1b2c]"}']}
    body = gw.upstream_body(request, policy, upstream, texts, arguments=filtered)
    assistant = body["messages"][2]
    assert set(assistant) == {"role", "content", "tool_calls"}  # the copy is dropped, not forwarded
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"practitioner": "[NAME_0a1b2c]"}'
    assert "Mustermann" not in json.dumps(body)


@pytest.mark.parametrize(
    ("function_call", "role"),
    [({**LEGACY, "arguments": '{"practitioner": "Dr. Schmidt"}'}, "assistant"), (LEGACY, "user")],
)
def test_a_function_call_that_is_no_copy_of_a_tool_call_is_refused_without_its_value(
    function_call: dict[str, str], role: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ChatRequest.model_validate(sent_back(function_call, role))
    field, message = describe_validation_error(refused.value)
    assert field == "messages.1"
    if role == "assistant":
        assert "copy of one of the message's tool_calls" in message
        assert "send the call in tool_calls" in message
    else:  # the fields an answer carries: in assistant turns only
        assert "function_call are allowed in assistant messages only" in message
    assert "Schmidt" not in message and "Mustermann" not in message


def test_turns_a_template_would_drop_go_in_roles_it_keeps(tmp_path: Path) -> None:
    """llama-cpp-python 0.3.36's format_gemma keeps user and assistant turns only (``_map_roles``
    with those two): a system or developer message, a tool result and an assistant turn's
    tool_calls would vanish from the prompt. With system_role and tool_role false they go as
    user turns and as the assistant's text, filtered texts only, in their places."""
    settings = GatewaySettings(
        upstreams={
            "chat": {
                "url": "http://127.0.0.1:9/v1",
                "model": "gemma",
                "system_role": False,
                "tool_role": False,
            }
        },
        audit={"path": tmp_path / "audit.jsonl"},
        keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"},
    )
    gw = Gateway(settings)
    policy = gw.policies["appointment-scheduling"]
    texts = ["Be brief.", "Book me in", None, '{"slots":["s1"]}', "[]"]
    body = gw.upstream_body(
        TOOL_TURNS, policy, gw.settings.upstreams["chat"], texts, arguments={2: ["{}", '{"a":1}']}
    )
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "user", "assistant", "user", "user"]
    assert messages[0]["content"] == f"{policy.system_prompt}\n\nBe brief."  # the policy's prompt first
    assert messages[2] == {
        "role": "assistant",
        "content": 'Tool call call00001: find_free_slots {}\nTool call call00002: find_free_slots {"a":1}',
    }
    assert messages[3]["content"] == 'Result of tool call call00002: {"slots":["s1"]}'
    assert messages[4]["content"] == "Result of tool call call00001: []"
    assert all(set(m) == {"role", "content"} for m in messages)
