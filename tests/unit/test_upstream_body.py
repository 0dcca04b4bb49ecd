"""What the gateway sends upstream: the policy decides model, prompt and token cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.schemas import ChatRequest
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
