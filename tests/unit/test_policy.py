from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, load_policies, same_schema, without_annotations

SHIPPED = {
    "appointment-scheduling",
    "patient-support",
    "telehealth-summary",
    "order-support",
    "catalog-search",
}


def test_shipped_policies_load_with_versions() -> None:
    policies = load_policies()
    assert set(policies) == SHIPPED
    for p in policies.values():
        assert p.policy_version.startswith(f"{p.version}+") and len(p.digest) == 64


def test_only_catalog_search_retrieves() -> None:
    retrieving = {n: p.retrieval for n, p in load_policies().items() if p.retrieval is not None}
    assert list(retrieving) == ["catalog-search"]
    assert retrieving["catalog-search"].store == "catalogue" and retrieving["catalog-search"].top_k == 5


def test_policy_version_changes_with_the_text(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("name: x\nversion: 1\nmodel: m\nmax_tokens: 5\n")
    v1 = load_policies(tmp_path)["x"].policy_version
    f.write_text("name: x\nversion: 1\nmodel: m\nmax_tokens: 6\n")
    assert load_policies(tmp_path)["x"].policy_version != v1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nversion: 1\nmodel: m\nmax_tokens: 0\n", "max_tokens"),
        ("name: y\nversion: 1\nmodel: m\nmax_tokens: 5\n", "must match the file name"),
        ("name: x\nversion: 1\nmodel: m\nmax_tokens: 5\nsecret_field: 1\n", "secret_field"),
        ("name: [x\n", "not valid YAML"),
        (
            "name: x\nversion: 1\nmodel: m\nmax_tokens: 5\nretrieval: {store: catalogue, top_k: 5}\n",
            "retrieval needs embedding_model",
        ),
        (
            "name: x\nversion: 1\nmodel: m\nmax_tokens: 5\nembedding_model: e\n"
            "retrieval: {store: catalogue, top_k: 21}\n",
            "top_k",
        ),
        (
            "name: x\nversion: 1\nmodel: m\nmax_tokens: 5\nembedding_model: e\n"
            "retrieval: {store: orders, top_k: 3}\n",
            "catalogue",
        ),
    ],
)
def test_bad_policies_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policies(tmp_path)


TOOL = "name: x\nversion: 1\nmodel: m\nmax_tokens: 5\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TOOL + "tools: [{name: a, description: d, parameters: {type: 5}}]", "not a valid JSON Schema"),
        (TOOL + "tools: [{name: a, description: d, parameters: {type: string}}]", "type 'object'"),
        (TOOL + "tools: [{name: 'a b', description: d, parameters: {type: object}}]", "tools.0.name"),
        (TOOL + "tools: [{name: a, parameters: {type: object}}]", "tools.0.description"),
        (
            TOOL + "tools: [{name: a, description: d, parameters: {type: object}},"
            " {name: a, description: e, parameters: {type: object}}]",
            "tool names must be unique",
        ),
        (
            TOOL + "structured_output: {schemas: [{name: s, schema: {type: object, required: 3}}]}",
            "structured_output.schemas.0.schema",
        ),
        (TOOL + "structured_output: {json_objects: true}", "json_objects"),
    ],
)
def test_bad_tools_and_schemas_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policies(tmp_path)


def test_shipped_tools_and_schemas() -> None:
    policies = load_policies()
    assert [t.name for t in policies["appointment-scheduling"].tools] == [
        "find_free_slots",
        "book_appointment",
    ]
    assert [s.name for s in policies["appointment-scheduling"].structured_output.schemas] == ["slot_choice"]
    assert [t.name for t in policies["order-support"].tools] == ["lookup_order"]
    for name in ("patient-support", "telehealth-summary", "catalog-search"):
        assert policies[name].tools == [] and policies[name].structured_output.schemas == []
        assert not policies[name].structured_output.json_object


def test_schemas_compare_as_json_without_annotations() -> None:
    reviewed = {
        "type": "object",
        "properties": {"title": {"type": "string", "description": "a property named title"}},
        "required": ["title"],
    }
    # the openai SDK's form: titles added, key order changed
    sdk = {
        "title": "Model",
        "required": ["title"],
        "properties": {"title": {"title": "Title", "type": "string"}},
        "type": "object",
    }
    assert same_schema(sdk, reviewed)
    assert not same_schema({**sdk, "required": []}, reviewed)
    assert not same_schema({**sdk, "properties": {}}, reviewed)  # the property "title" is no annotation
    assert not same_schema({**reviewed, "minProperties": True}, {**reviewed, "minProperties": 1})
    assert without_annotations({"anyOf": [{"type": "null", "default": None}]}) == {
        "anyOf": [{"type": "null"}]
    }


def test_a_response_schema_is_found_by_its_name_in_any_spelling() -> None:
    structured = load_policies()["appointment-scheduling"].structured_output
    for name in ("slot_choice", "SlotChoice", "slot-choice", "SLOT_CHOICE"):
        found = structured.schema_named(name)
        assert found is not None and found.name == "slot_choice"
    assert structured.schema_named("slot_choices") is None
