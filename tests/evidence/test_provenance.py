"""Provenance: the commit, the dirty paths, each input with its SHA-256 and whether it is the
committed version (an input from outside the repository never claims a revision), and the
tool versions, a missing tool recorded as missing."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.evidence import provenance


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "Pulumi.a.yaml").write_text("config: {}\n")
    (root / "stacks" / "Pulumi.b.yaml").write_text("config: {b: 1}\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_committed_input_is_from_the_revision(repo: Path) -> None:
    found = provenance.collect([repo / "stacks" / "Pulumi.a.yaml"], repo=repo, with_tools=False)
    assert found.commit == _git(repo, "rev-parse", "HEAD") and re.fullmatch(r"[0-9a-f]{40}", found.commit)
    assert not found.dirty and found.dirty_paths == ()
    (item,) = found.inputs
    assert item.path == "stacks/Pulumi.a.yaml" and item.from_revision
    assert item.sha256 == hashlib.sha256(b"config: {}\n").hexdigest()
    assert found.describe(item) == f"stacks/Pulumi.a.yaml from revision {found.commit}"


def test_modified_untracked_and_outside_inputs_claim_no_revision(repo: Path, tmp_path: Path) -> None:
    (repo / "stacks" / "Pulumi.b.yaml").write_text("config: {b: 2}\n")
    (repo / "stacks" / "Pulumi.new.yaml").write_text("config: {}\n")
    outside = tmp_path / "elsewhere" / "Pulumi.x.yaml"
    outside.parent.mkdir()
    outside.write_text("config: {}\n")
    found = provenance.collect(
        [repo / "stacks" / "Pulumi.b.yaml", repo / "stacks" / "Pulumi.new.yaml", outside],
        repo=repo,
        with_tools=False,
    )
    assert found.dirty and found.dirty_paths == ("stacks/Pulumi.b.yaml", "stacks/Pulumi.new.yaml")
    modified, untracked, foreign = found.inputs
    assert (modified.tracked, modified.unmodified, modified.from_revision) == (True, False, False)
    assert (untracked.tracked, untracked.from_revision) == (False, False)
    assert foreign.outside_repository and foreign.path == str(outside.resolve()) and not foreign.from_revision
    assert foreign.sha256 == hashlib.sha256(b"config: {}\n").hexdigest()
    lines = [found.describe(i) for i in found.inputs]
    assert not any("from revision" in line for line in lines), lines
    assert "outside the repository" in lines[2] and "modified since revision" in lines[0]
    as_dict = found.to_dict()
    assert (
        as_dict["inputs"][2]["outside_repository"] is True and as_dict["inputs"][2]["from_revision"] is False
    )


def test_a_file_changed_and_changed_back_is_unmodified(repo: Path) -> None:
    path = repo / "stacks" / "Pulumi.a.yaml"
    path.write_text("config: {x: 1}\n")
    path.write_text("config: {}\n")
    assert provenance.collect([path], repo=repo, with_tools=False).inputs[0].from_revision


def test_outside_a_git_checkout_nothing_claims_a_revision(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("x: 1\n")
    found = provenance.collect([tmp_path / "s.yaml"], repo=tmp_path, with_tools=False)
    assert found.commit is None and not found.inputs[0].from_revision and found.to_dict()["commit"] is None


def test_tools_are_named_and_a_missing_one_is_recorded_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = {t.name: t for t in provenance.tools()}
    assert present["python"].version and present["pydantic"].version and present["pulumi"].version
    assert present["sovereign-llm"].version  # the gateway's distribution
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot, no chromium
    monkeypatch.setattr(provenance, "PACKAGES", ("pydantic", "no-such-distribution-xyz"))
    missing = {t.name: t for t in provenance.tools(repo=tmp_path)}  # no .venv-tools/bin/checkov
    assert missing["no-such-distribution-xyz"].missing and missing["graphviz"].missing
    assert missing["chromium"].missing and missing["checkov"].missing
    assert not missing["pydantic"].missing
    recorded = provenance.Provenance(None, False, (), (), tuple(missing.values())).to_dict()["tools"]
    assert recorded["graphviz"] == "missing" and recorded["pydantic"] == present["pydantic"].version


def test_graphviz_is_found_when_installed() -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed here")
    version = {t.name: t for t in provenance.tools()}["graphviz"].version
    assert version is not None and "graphviz" in version.lower()
