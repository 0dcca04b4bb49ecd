"""What each upstream honours (issue #26, item 6), as the gateway's settings say it
(gateway/settings.py Upstream.tool_choices, json_schema_as_json_object): here the local stack's
llama-cpp-python 0.3.36 with chat format gemma, which calls a tool only when tool_choice names it
and takes json_schema only as json_object with a schema (llama_chat_format.py
chat_formatter_to_chat_completion_handler and _grammar_for_response_format; llama_types.py
ChatCompletionRequestResponseFormat). A request asking for what the model would not do is refused
before anything is forwarded; a format it takes otherwise is sent the way it takes it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.policy import load_policies
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway

TENANT = "clinic-capabilities"  # the client key of this module's gateway (conftest.py)
POLICY = load_policies()["appointment-scheduling"]


@pytest.fixture(scope="module")
def gateway(gw_dir: Path, bao: Bao, upstream_server: Upstream) -> Iterator[Proc]:
    config = gateway_config(gw_dir, bao.address, bao.gateway_token, upstream_server.url)
    settings = yaml.safe_load(config.read_text())
    settings["upstreams"]["chat"].update(tool_choices=["named"], json_schema_as_json_object=True)
    config.write_text(yaml.safe_dump(settings))
    with running_gateway(config, gw_dir) as proc:
        yield proc


def chat(gateway: Proc, key: str, **fields: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 8, **fields}
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
        headers={"authorization": f"Bearer {key}", "x-sovereign-use-case": POLICY.name},
    )  # fmt: skip


TOOLS = [{"type": "function", "function": {"name": "find_free_slots"}}]


@pytest.mark.parametrize("fields", [{}, {"tool_choice": "auto"}, {"tool_choice": "required"}])
def test_a_tool_choice_the_model_does_not_honour_is_refused_before_forwarding(
    gateway: Proc, api_key: str, upstream: Upstream, fields: dict[str, Any]
) -> None:
    upstream.script(capture=True)
    resp = chat(gateway, api_key, tools=TOOLS, **fields)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("tool_choice_not_supported", "tool_choice")
    assert "honours tool_choice named only" in error["message"] and '"function": {"name"' in error["message"]
    assert upstream.captured() == []


def test_a_named_tool_and_none_are_forwarded(gateway: Proc, api_key: str, upstream: Upstream) -> None:
    upstream.script(capture=True)
    named = {"type": "function", "function": {"name": "find_free_slots"}}
    for choice in (named, "none"):
        resp = chat(gateway, api_key, tools=TOOLS, tool_choice=choice)
        assert resp.status_code == 200, resp.text
    assert [c["tool_choice"] for c in upstream.captured()] == [named, "none"]


def test_json_schema_goes_as_json_object_with_the_reviewed_schema(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(capture=True)
    reviewed = POLICY.structured_output.schema_named("slot_choice")
    assert reviewed is not None
    fmt = {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": reviewed.schema_}}
    resp = chat(gateway, api_key, response_format=fmt)
    assert resp.status_code == 200, resp.text
    (sent,) = upstream.captured()
    assert sent["response_format"] == {"type": "json_object", "schema": reviewed.schema_}


def test_a_use_case_with_tools_on_a_model_without_auto_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.app import Gateway
    from gateway.settings import GatewaySettings

    def start(tool_choices: list[str]) -> list[str]:
        caplog.clear()
        settings = GatewaySettings(
            upstreams={"chat": {"url": "http://127.0.0.1:9/v1", "model": "m", "tool_choices": tool_choices}},
            audit={"path": tmp_path / "audit.jsonl"},
            keys_file=tmp_path / "keys.json",
            openbao={"wrapped_keys_dir": tmp_path / "keys"},
        )
        with caplog.at_level(logging.WARNING, logger="sovereign.gateway"):
            Gateway(settings)
        return [r.getMessage() for r in caplog.records if "offers tools" in r.getMessage()]

    warned = start(["required", "named"])  # vLLM without its tool call parser
    assert any("use case appointment-scheduling offers tools" in m and "tool_calling" in m for m in warned)
    assert not any("patient-support" in m for m in warned)  # no tools there
    assert start(["auto", "required", "named"]) == []
