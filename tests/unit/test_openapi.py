"""The published OpenAPI document is usable by client generators: the request contract is in
it, and every reference resolves inside the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.settings import GatewaySettings


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_reference_of_the_openapi_document_resolves(tmp_path: Path) -> None:
    settings = GatewaySettings(
        audit={"path": tmp_path / "audit.jsonl"}, keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"}, enforce_egress=False,
    )  # fmt: skip
    document = create_app(settings).openapi()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    request = resolve(document, body["schema"]["$ref"])
    assert {"messages", "sovereign"} <= set(request["properties"])
    # the fields of tools and structured output (issue #26), and the message roles they bring
    published = {"tools", "tool_choice", "parallel_tool_calls", "response_format", "store", "logprobs"}
    assert published <= set(request["properties"])
    message = resolve(document, "#/components/schemas/Message")
    assert set(message["properties"]["role"]["enum"]) == {"system", "developer", "user", "assistant", "tool"}
    assert {"tool_calls", "tool_call_id"} <= set(message["properties"])
    # POST /v1/embeddings (issue #27): its contract too, the same patient context
    body = document["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]
    embeddings = resolve(document, body["schema"]["$ref"])
    assert set(embeddings["properties"]) == {
        "input",
        "model",
        "encoding_format",
        "dimensions",
        "user",
        "sovereign",
    }
    assert embeddings["additionalProperties"] is False
    found = refs(document)
    assert len(found) >= 8  # the request contract's parts: messages, the patient context, …
    for ref in found:
        assert resolve(document, ref), ref
    assert not [r for r in found if "$defs" in r]
