"""No validation error repeats a value (issue #20, finding 11): a private key pasted as a public
key, or a secret in any other field, must not reach stderr, a log, a report or the evidence.

Every string in the example stacks is replaced, one at a time, by canaries shaped like what gets
pasted by mistake (a private key, a URL with credentials); whatever the config says about it, the
canary is nowhere in the words. The same for the other places that turn a ValidationError into
words (gateway/validation.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import validation
from infra import config
from tests.infra.support import EXAMPLES, REPO, sections
from tests.support import sovereign

SECRET = "c4n4ry-s3cr3t-Zq9"
CANARIES = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    f"b3BlbnNzaC1rZXktdjEAAAAA{SECRET}\n-----END OPENSSH PRIVATE KEY-----",
    f"https://admin:{SECRET}@{SECRET}.example.com/v1",
    f"{SECRET}",
)


def string_leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from string_leaves(value, (*path, i))
    elif isinstance(node, str):
        yield path


def with_value(data: dict[str, Any], path: tuple[Any, ...], value: str) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def cases() -> Iterator[tuple[str, tuple[Any, ...]]]:
    for stack in EXAMPLES:
        for path in string_leaves(sections(stack)):
            yield stack, path


@pytest.mark.parametrize(
    ("stack", "path"), list(cases()), ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else v
)
def test_no_stack_config_error_repeats_the_value(stack: str, path: tuple[Any, ...]) -> None:
    for canary in CANARIES:
        try:
            config.parse(stack, with_value(sections(stack), path, canary), "test")
        except config.StackConfigError as exc:
            words = str(exc)
            assert SECRET not in words, words
            # the key is named all the same
            assert any(str(path[0]) in str(p) for p in exc.problems), exc.problems


def test_a_private_key_pasted_as_public_key_is_refused_without_being_shown(tmp_path: Path) -> None:
    data = sections("eu-north-dr")
    data["admin"]["ssh_keys"][0]["public_key"] = CANARIES[0]
    with pytest.raises(config.StackConfigError) as caught:
        config.parse("eu-north-dr", data, "test")
    assert [(p.path, p.message) for p in caught.value.problems] == [
        (
            "sovereign-llm:admin.ssh_keys.0.public_key",
            "not an OpenSSH public key line; paste the content of id_ed25519.pub "
            "(ssh-ed25519 AAAA… comment), never the private key",
        )
    ]
    # and through the commands that print or write it: sovereign plan, sovereign evidence
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (REPO / "stacks" / "Pulumi.eu-north-dr.yaml").read_text()
    document = yaml.safe_load(text)
    document["config"]["sovereign-llm:admin"]["ssh_keys"][0]["public_key"] = CANARIES[0]
    (stacks / "Pulumi.eu-north-dr.yaml").write_text(yaml.safe_dump(document))
    for command in (["plan"], ["evidence", "--out", str(tmp_path / "evidence")]):
        args = [*command, "--stack", "eu-north-dr", "--stacks-dir", str(stacks)]
        result = sovereign(*args)
        assert result.returncode != 0
        assert "admin.ssh_keys.0.public_key" in result.stdout + result.stderr
        assert SECRET not in result.stdout + result.stderr
    written = [p for p in (tmp_path / "evidence").iterdir() if p.is_file()]
    assert written and all(SECRET.encode() not in p.read_bytes() for p in written)


def test_the_shared_formatter_names_the_field_and_drops_the_input() -> None:
    from pydantic import BaseModel, ConfigDict

    class Model(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int
        name: str

    with pytest.raises(Exception) as caught:
        Model.model_validate({"count": SECRET, "extra": SECRET})
    found = validation.problems(caught.value)  # type: ignore[arg-type]
    assert [(p.path, p.type) for p in found] == [
        ("count", "int_parsing"),
        ("name", "missing"),
        ("extra", "extra_forbidden"),
    ]
    assert all(SECRET not in str(p) for p in found)
