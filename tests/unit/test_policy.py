from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, load_policies

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
    ],
)
def test_bad_policies_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policies(tmp_path)
