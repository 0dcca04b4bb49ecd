"""checkov over the rendered manifests of every example stack: no finding that docs/platform.md
does not accept with a reason."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from infra import plan as planner
from infra.evidence import results
from tests.infra.support import EXAMPLES, REPO, plan_of, sections

CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"
DOCS = REPO / "docs" / "platform.md"
# each scan's report, with the commit it scanned: the checkov result `sovereign evidence` shows
REPORTS = REPO / "reports" / "checkov"


def accepted_findings() -> dict[str, str]:
    text = DOCS.read_text()
    section = text.split("### Accepted IaC findings", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| (CKV\w+) \| (.+) \|$", section, flags=re.MULTILINE))


def scan(tmp_path: Path, stack: str) -> dict[str, list[str]]:
    assert CHECKOV.exists(), (
        "checkov is missing: run ./scripts/bootstrap.sh (make test does) to create .venv-tools"
    )
    planner.write(plan_of(sections(stack), stack=stack), tmp_path)
    result = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "--quiet",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    results.write_checkov(REPORTS / f"{stack}.json", stack, report, sorted(accepted_findings()))
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 10
    failed: dict[str, list[str]] = {}
    for check in report["results"]["failed_checks"]:
        failed.setdefault(check["check_id"], []).append(check["resource"])
    return failed


def test_every_accepted_finding_has_a_reason() -> None:
    accepted = accepted_findings()
    assert accepted, "docs/platform.md lists no accepted findings table"
    assert all(len(reason) > 40 for reason in accepted.values())


@pytest.mark.parametrize("stack", EXAMPLES)
def test_no_unexplained_checkov_finding(stack: str, tmp_path: Path) -> None:
    failed = scan(tmp_path, stack)
    unexplained = {check: where for check, where in failed.items() if check not in accepted_findings()}
    assert unexplained == {}


def test_checkov_does_find_a_planted_weakness(tmp_path: Path) -> None:
    """The scan is live: a privileged container is reported."""
    out = tmp_path / "planted"
    out.mkdir()
    (out / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\nspec:\n  containers:\n"
        "    - name: c\n      image: busybox@sha256:"
        + "0" * 64
        + "\n      securityContext: {privileged: true}\n"
    )
    result = subprocess.run(
        [str(CHECKOV), "-d", str(out), "--framework", "kubernetes", "--skip-download", "--quiet",
         "-o", "json"],
        capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert "CKV_K8S_16" in {c["check_id"] for c in report["results"]["failed_checks"]}  # privileged
