"""infra/evidence/results.py: the results that ran, read back with the commit they tested.

The JUnit files come from real pytest runs over tiny test modules in a throwaway git repository
(its own commits, so nothing depends on this checkout's history), with the same recording hook
as tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.evidence import results
from infra.hosts import operate

REPO = Path(__file__).resolve().parents[2]

# the recording hook of tests/conftest.py, for a repository of its own
CONFTEST = """
from pathlib import Path

import pytest

from infra.evidence.results import code_properties


@pytest.fixture(scope="session", autouse=True)
def _record_code_revision(record_testsuite_property):
    for name, value in code_properties(Path(__file__).parent).items():
        record_testsuite_property(name, value)
"""

MIXED = """
import pytest


def test_ok():
    pass


def test_bad():
    assert 1 == 2


def test_skip():
    pytest.skip("not here")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_some_cases_fail(n):
    assert n != 2


@pytest.mark.parametrize("n", [1, 2])
def test_all_cases_pass(n):
    assert n


class TestGroup:
    def test_method(self):
        pass
"""

PASSING = """
def test_ok():
    pass


def test_also_ok():
    pass
"""

CODE_PATHS = {"make test": ("app", "tests"), "sovereign verify": ("app",), "checkov": ("app",)}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.invalid")
    git(repo, "config", "user.name", "t")
    git(repo, "config", "commit.gpgsign", "false")
    return repo


def run_pytest(repo: Path, junit: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(repo),
         f"--junitxml={junit}", "tests", *extra],
        cwd=repo, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def base_files(tests: str) -> dict[str, str]:
    return {
        ".gitignore": "__pycache__/\n",
        "conftest.py": CONFTEST,
        "app/code.py": "VALUE = 1\n",
        "docs/notes.md": "notes\n",
        "tests/test_mod.py": tests,
    }


def make_test_result(reports: Path, stack: str, head: str, repo: Path) -> results.RunResult:
    loaded = results.load(reports, stack, head, repo=repo, code_paths=CODE_PATHS)
    assert [r.kind for r in loaded] == ["make test", "sovereign verify", "checkov"]
    return loaded[0]


def test_a_run_with_failures_is_failed_with_its_counts_commit_and_time(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(MIXED), "one")
    reports = tmp_path / "reports"
    before = datetime.now(UTC).replace(microsecond=0)
    run = run_pytest(repo, reports / "junit" / "make-test.xml")
    assert run.returncode == 1, run.stdout + run.stderr
    after = datetime.now(UTC)

    result = make_test_result(reports, "s1", head, repo)
    assert result.state == "failed"
    assert result.commit == head
    assert (result.tests, result.failures, result.errors, result.skipped) == (9, 2, 0, 1)
    assert result.finished_at is not None
    assert before <= datetime.fromisoformat(result.finished_at) <= after
    assert "9 run, 2 failed, 0 errors, 1 skipped" in result.note


def test_a_clean_run_at_head_passes(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    reports = tmp_path / "reports"
    assert run_pytest(repo, reports / "junit" / "make-test.xml").returncode == 0
    result = make_test_result(reports, "s1", head, repo)
    assert (result.state, result.tests, result.failures) == ("passed", 2, 0)


def test_missing_results_name_the_command_that_makes_them(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    loaded = results.load(tmp_path / "reports", "eu-x", head, repo=repo, code_paths=CODE_PATHS)
    assert [r.state for r in loaded] == ["missing"] * 3
    assert "`make test`" in loaded[0].note
    assert "`sovereign verify --stack eu-x`" in loaded[1].note
    assert loaded[1].path == tmp_path / "reports" / "verify-eu-x.xml"
    assert "test_checkov.py" in loaded[2].note
    assert all(r.commit is None and r.finished_at is None for r in loaded)


def test_an_unreadable_file_is_missing_not_passed(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    junit = tmp_path / "reports" / "junit" / "make-test.xml"
    junit.parent.mkdir(parents=True)
    junit.write_text("<testsuites><testsuite tests=")  # a run killed while writing
    result = make_test_result(tmp_path / "reports", "s1", head, repo)
    assert result.state == "missing"
    assert "unreadable" in result.note


def test_a_result_of_an_older_commit_is_stale_once_the_code_changed(repo: Path, tmp_path: Path) -> None:
    first = commit(repo, base_files(PASSING), "one")
    reports = tmp_path / "reports"
    assert run_pytest(repo, reports / "junit" / "make-test.xml").returncode == 0

    docs_only = commit(repo, {"docs/notes.md": "more notes\n"}, "docs")
    result = make_test_result(reports, "s1", docs_only, repo)
    assert result.state == "passed"  # nothing it depends on changed
    assert result.commit == first
    assert f"at {first[:12]}" in result.note

    code = commit(repo, {"app/code.py": "VALUE = 2\n"}, "code")
    result = make_test_result(reports, "s1", code, repo)
    assert result.state == "stale"
    assert result.commit == first
    assert "app/code.py" in result.note and first[:12] in result.note
    assert (result.tests, result.failures) == (2, 0)  # the counts still say what that run found


def test_a_run_on_uncommitted_changes_is_stale(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    (repo / "app" / "code.py").write_text("VALUE = 3\n")  # not committed
    reports = tmp_path / "reports"
    assert run_pytest(repo, reports / "junit" / "make-test.xml").returncode == 0
    result = make_test_result(reports, "s1", head, repo)
    assert result.commit == head
    assert result.state == "stale"
    assert "uncommitted" in result.note


def test_a_result_that_does_not_name_its_commit_is_stale(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    reports = tmp_path / "reports"
    assert run_pytest(repo, reports / "junit" / "make-test.xml", "--noconftest").returncode == 0
    result = make_test_result(reports, "s1", head, repo)
    assert result.commit is None
    assert result.state == "stale"
    assert "does not say which commit" in result.note


def test_a_commit_the_repository_lacks_is_stale(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    reports = tmp_path / "reports"
    junit = reports / "junit" / "make-test.xml"
    assert run_pytest(repo, junit, "--noconftest").returncode == 0
    results.stamp_junit(junit, {results.COMMIT_PROPERTY: "f" * 40, results.DIRTY_PROPERTY: "false"})
    result = make_test_result(reports, "s1", head, repo)
    assert result.state == "stale"
    assert "does not have" in result.note


def test_outcomes_map_test_ids_and_aggregate_parametrised_cases(repo: Path, tmp_path: Path) -> None:
    commit(repo, base_files(MIXED), "one")
    junit = tmp_path / "make-test.xml"
    run_pytest(repo, junit)
    expected = {
        "tests/test_mod.py::test_ok": "passed",
        "tests/test_mod.py::test_bad": "failed",
        "tests/test_mod.py::test_skip": "skipped",
        "tests/test_mod.py::test_some_cases_fail": "failed",  # one of three cases failed
        "tests/test_mod.py::test_all_cases_pass": "passed",
        "tests/test_mod.py::TestGroup::test_method": "passed",
    }
    assert results.outcomes(junit) == expected
    assert results.outcomes(junit, root=repo) == expected


def test_stamp_adds_properties_a_run_did_not_record(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    junit = tmp_path / "reports" / "verify-s1.xml"
    assert run_pytest(repo, junit, "--noconftest").returncode == 0
    results.stamp_junit(junit, results.code_properties(repo, "s1"))
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite[0].tag == "properties"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {
        results.COMMIT_PROPERTY: head,
        results.DIRTY_PROPERTY: "false",
        results.STACK_PROPERTY: "s1",
    }
    verify = results.load(tmp_path / "reports", "s1", head, repo=repo, code_paths=CODE_PATHS)[1]
    assert (verify.kind, verify.state, verify.commit, verify.tests) == ("sovereign verify", "passed", head, 2)


def test_checkov_report_counts_only_findings_without_a_reason(repo: Path, tmp_path: Path) -> None:
    head = commit(repo, base_files(PASSING), "one")
    report = {
        "summary": {"passed": 10, "failed": 2, "skipped": 1, "parsing_errors": 0},
        "results": {"failed_checks": [{"check_id": "CKV_K8S_8"}, {"check_id": "CKV_K8S_16"}]},
    }
    out = tmp_path / "reports" / "checkov" / "s1.json"
    results.write_checkov(out, "s1", report, ["CKV_K8S_8"], repo=repo)
    checkov = results.load(tmp_path / "reports", "s1", head, repo=repo, code_paths=CODE_PATHS)[2]
    assert (checkov.kind, checkov.state, checkov.commit) == ("checkov", "failed", head)
    assert (checkov.tests, checkov.failures, checkov.skipped) == (13, 1, 1)
    assert "1 failed check(s) accepted" in checkov.note
    assert checkov.finished_at is not None

    results.write_checkov(out, "s1", report, ["CKV_K8S_8", "CKV_K8S_16"], repo=repo)
    checkov = results.load(tmp_path / "reports", "s1", head, repo=repo, code_paths=CODE_PATHS)[2]
    assert (checkov.state, checkov.failures) == ("passed", 0)


def test_the_suite_conftest_records_this_checkout_s_commit(tmp_path: Path) -> None:
    """tests/conftest.py's hook itself, in a run of one test of this module."""
    commit_now, _ = results.revision(REPO)
    if commit_now is None:
        pytest.skip("this checkout is not a git repository: there is no commit to record")
    junit = tmp_path / "junit.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         f"{Path(__file__).relative_to(REPO)}::test_missing_results_name_the_command_that_makes_them"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props[results.COMMIT_PROPERTY] == commit_now
    assert props[results.DIRTY_PROPERTY] in {"true", "false"}


def test_sovereign_verify_names_commit_and_stack_in_its_report(tmp_path: Path) -> None:
    """operate.verify's real pytest run (no host check selected, so no host is contacted)."""
    commit_now, _ = results.revision(REPO)
    if commit_now is None:
        pytest.skip("this checkout is not a git repository: there is no commit to record")
    inventory = {"all": {"children": {"workers": {"hosts": {"h1": {"ansible_connection": "local"}}}}}}
    junit = tmp_path / "verify-s1.xml"
    junit.write_text("<testsuites/>")  # an older report: replaced, never left looking new
    operate.verify(inventory, junit, pytest_args=["-k", "no_such_check_exists"], stack="s1")
    assert junit.is_file()
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props[results.COMMIT_PROPERTY] == commit_now
    assert props[results.STACK_PROPERTY] == "s1"
