"""Tool calling and structured outputs on the upstream side (issue #26, item 6): the flags each
vLLM Deployment gets from its model's stack config, rendered under Pulumi's mocks, the gateway's
view of what each upstream honours, and the stack config refusing what vLLM v0.11.0 does not
have. vLLM's behaviour is cited from the v0.11.0 release (the pinned vllm/vllm-openai:v0.11.0):
vllm/entrypoints/openai/cli_args.py (the flags), serving_chat.py (``"auto" tool choice requires
--enable-auto-tool-choice and --tool-call-parser``), protocol.py (tools without tool_choice are
``auto``; a named tool and ``required`` are served with structured outputs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from gateway.settings import GatewaySettings, Upstream
from infra import config
from infra import plan as planner
from tests.doubles import vllm_cli
from tests.infra.support import plan_of, sections

MODEL = "llama31-8b-awq"
SHA = "ab" * 32


def one(plan: planner.Plan, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in plan.kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def vllm_args(plan: planner.Plan) -> list[str]:
    (container,) = one(plan, "Deployment", f"vllm-{MODEL}")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    vllm_cli.parse(args)  # each flag one vllm serve v0.11.0 parses, a choice among its choices
    return args


def gateway_upstream(plan: planner.Plan) -> Upstream:
    cm = one(plan, "ConfigMap", "gateway-config")
    return GatewaySettings(**yaml.safe_load(cm["data"]["gateway.yaml"])).upstreams[MODEL]


def value_of(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, args
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


def test_the_example_model_gets_its_tool_call_parser_and_the_gateway_accepts_auto(prod: planner.Plan) -> None:
    args = vllm_args(prod)
    assert "--enable-auto-tool-choice" in args
    assert value_of(args, "--tool-call-parser") == "llama3_json"
    # no template named: vLLM takes the tokenizer's; no backend named: vLLM's own choice ("auto")
    assert "--chat-template" not in args and "--structured-outputs-config" not in args
    upstream = gateway_upstream(prod)
    assert upstream.tool_choices == ["auto", "required", "named"]
    assert upstream.honours_tool_choice(None) and upstream.honours_tool_choice("auto")
    # the settings the gateway loads for vLLM: json_schema forwarded as it is
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert upstream.response_format(rf) == rf
    # every alias of the model is the same upstream, with the same view
    cm = one(prod, "ConfigMap", "gateway-config")
    upstreams = yaml.safe_load(cm["data"]["gateway.yaml"])["upstreams"]
    assert upstreams["chat"]["tool_choices"] == upstreams[MODEL]["tool_choices"]


def test_without_tool_calling_vllm_gets_no_parser_and_the_gateway_does_not_offer_auto() -> None:
    data = sections("eu-central-prod")
    del data["platform"]["models"][0]["tool_calling"]
    plan = plan_of(data, stack="eu-central-prod")
    args = vllm_args(plan)
    assert "--enable-auto-tool-choice" not in args and "--tool-call-parser" not in args
    upstream = gateway_upstream(plan)
    # vLLM would answer a request with tools and no tool_choice (auto) with 400
    assert upstream.tool_choices == ["required", "named"]
    assert not upstream.honours_tool_choice(None) and not upstream.honours_tool_choice("auto")
    assert upstream.honours_tool_choice({"type": "function", "function": {"name": "find_free_slots"}})
    assert upstream.honours_tool_choice("required") and upstream.honours_tool_choice("none")


def test_a_chat_template_is_a_file_of_the_pinned_release_and_a_backend_is_a_json_config() -> None:
    data = sections("eu-central-prod")
    model = data["platform"]["models"][0]
    model["manifest_sha256"] = SHA
    model["tool_calling"] = {"parser": "hermes", "chat_template": "templates/tool_chat.jinja"}
    model["structured_outputs_backend"] = "xgrammar"
    args = vllm_args(plan_of(data, stack="eu-central-prod"))
    assert value_of(args, "--tool-call-parser") == "hermes"
    # in the release's own folder, which the init container verifies against the manifest first
    assert value_of(args, "--chat-template") == f"/models/{MODEL}/{SHA}/templates/tool_chat.jinja"
    assert value_of(args, "--model") == f"/models/{MODEL}/{SHA}"
    # vllm/engine/arg_utils.py parses --structured-outputs-config as a JSON StructuredOutputsConfig
    assert json.loads(value_of(args, "--structured-outputs-config")) == {"backend": "xgrammar"}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as info:
        config.parse("eu-central-prod", data, "test")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("parser", ["gemma", "llama3", "Hermes", "llama3_json "])
def test_a_parser_vllm_v0110_does_not_have_is_refused_naming_the_key_and_the_fix(parser: str) -> None:
    data = sections("eu-central-prod")
    data["platform"]["models"][0]["tool_calling"] = {"parser": parser}
    [problem] = problems(data)
    key = "sovereign-llm:platform.models.0.tool_calling.parser: "
    assert problem.startswith(key + "not a tool call parser of vllm/vllm-openai:v0.11.0")
    assert "llama3_json" in problem and "hermes" in problem  # the names it may be
    assert repr(parser) not in problem  # never the value


@pytest.mark.parametrize("template", ["../../etc/passwd", "/etc/passwd", "a/../b.jinja", ".hidden", ""])
def test_a_chat_template_outside_the_release_is_refused(template: str) -> None:
    data = sections("eu-central-prod")
    data["platform"]["models"][0]["tool_calling"] = {"parser": "llama3_json", "chat_template": template}
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.0.tool_calling.chat_template: must be a file")
    assert "the manifest checks it" in problem


def test_an_unknown_backend_and_another_vllm_image_with_tool_calling_are_refused() -> None:
    data = sections("eu-central-prod")
    data["platform"]["models"][0]["structured_outputs_backend"] = "guided"
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.0.structured_outputs_backend:")
    assert "'xgrammar'" in problem
    data = sections("eu-central-prod")
    data["platform"]["models"][0]["image"] = "vllm/vllm-openai:v0.12.0"
    [problem] = problems(data)
    assert "the parser names are those of vllm/vllm-openai:v0.11.0" in problem
    assert "update VLLM_TOOL_PARSERS in infra/config.py" in problem
    del data["platform"]["models"][0]["tool_calling"]  # no parser named: another image is the operator's call
    config.parse("eu-central-prod", data, "test")


def test_the_local_llama_cpp_upstream_takes_a_named_tool_and_json_schema_as_json_object() -> None:
    """llama-cpp-python 0.3.36 (the local stack): a named tool choice only, and response_format
    json_schema sent as json_object with the schema (its server refuses json_schema)."""
    upstream = Upstream(
        url="http://127.0.0.1:8081/v1", model="gemma", tool_choices=["named"], json_schema_as_json_object=True
    )
    assert upstream.honours_tool_choice({"type": "function", "function": {"name": "find_free_slots"}})
    for choice in (None, "auto", "required"):
        assert not upstream.honours_tool_choice(choice)
    schema = {"type": "object", "properties": {"slot": {"type": "string"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "slot_choice", "schema": schema, "strict": True}}
    assert upstream.response_format(rf) == {"type": "json_object", "schema": schema}
    assert upstream.response_format({"type": "json_object"}) == {"type": "json_object"}
