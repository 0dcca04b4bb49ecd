"""Results that ran: the last ``make test``, ``sovereign verify`` and checkov scan of a stack.

The design-level evidence (``model.py``) says which code and tests back each control; this module
says whether those tests *ran*, when, on which commit and with what outcome. Every run records
the code it ran on:

- ``make test`` writes JUnit to ``reports/junit/make-test.xml``; ``tests/conftest.py`` records
  the commit and dirty flag as testsuite properties (pytest's ``record_testsuite_property``);
- ``sovereign verify --stack S`` writes JUnit to ``reports/verify-S.xml``; ``infra.hosts.operate``
  stamps the same properties, plus the stack, into it (its pytest run has its own rootdir, where
  ``tests/conftest.py`` does not apply);
- checkov: ``tests/platform/test_checkov.py`` (part of ``make test``) writes each example stack's
  report to ``reports/checkov/S.json``, wrapped with the commit, dirty flag, stack and time.

``load`` reads them back for one stack. A result is *stale* when it cannot be tied to HEAD: its
file names no commit, it ran on uncommitted changes, or the code it depends on changed between
its commit and HEAD (``git diff --quiet <commit> HEAD -- <paths>``; the paths per kind are in
``CODE_PATHS``). ``outcomes`` maps the test ids of a JUnit file to passed/failed/skipped, so a
claim can say whether the test it cites passed in the last run.

The XML read here is JUnit that pytest wrote on this machine, not input from elsewhere; it is
parsed with ``xml.etree`` (defusedxml is not a dependency of the project).
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from infra.paths import REPO_ROOT as REPO

COMMIT_PROPERTY = "sovereign.commit"
DIRTY_PROPERTY = "sovereign.dirty"
STACK_PROPERTY = "sovereign.stack"

Kind = Literal["make test", "sovereign verify", "checkov"]
State = Literal["passed", "failed", "missing", "stale"]

MAKE_TEST_JUNIT = Path("junit") / "make-test.xml"  # under the results folder (reports/)

# What each kind of result depends on; a change to these paths after the result's commit makes it
# stale. The tests read docs (accepted findings, runbooks, tables), so for `make test` that is the
# whole tree but the benchmarks, which no test runs.
CODE_PATHS: dict[str, tuple[str, ...]] = {
    "make test": (".", ":(exclude)benchmarks"),
    # the checks, the roles whose settings they read, the playbooks that applied them
    "sovereign verify": ("infra/hosts", "roles", "playbooks"),
    # the program that renders the manifests, the stacks, the accepted findings, the scan itself
    "checkov": (
        "infra",
        "stacks",
        "docs/platform.md",
        "tests/platform/test_checkov.py",
        "scripts/bootstrap.sh",
    ),
}


@dataclass(frozen=True)
class RunResult:
    kind: Kind
    path: Path
    finished_at: str | None  # ISO 8601, UTC
    commit: str | None  # full commit the run tested; None when the file does not say
    tests: int
    failures: int
    errors: int
    skipped: int
    state: State
    note: str


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def head(repo: Path = REPO) -> str | None:
    """The full commit of HEAD, or None outside a git checkout."""
    try:
        out = _git(repo, "rev-parse", "--verify", "HEAD")
    except OSError:  # no git
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def revision(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(full HEAD commit, whether the tree differs from it), or (None, None) outside git.

    Dirty counts untracked files git does not ignore too (a new test module changes what runs);
    ignored outputs such as ``reports/`` do not."""
    commit = head(repo)
    if commit is None:
        return None, None
    status = _git(repo, "status", "--porcelain", "--untracked-files=normal")
    return commit, bool(status.stdout.strip()) if status.returncode == 0 else None


def code_properties(repo: Path = REPO, stack: str | None = None) -> dict[str, str]:
    """The JUnit testsuite properties that say which code a run tested (empty outside git)."""
    commit, dirty = revision(repo)
    props: dict[str, str] = {}
    if commit is not None:
        props[COMMIT_PROPERTY] = commit
        if dirty is not None:
            props[DIRTY_PROPERTY] = "true" if dirty else "false"
    if stack:
        props[STACK_PROPERTY] = stack
    return props


def _suites(root: ET.Element) -> list[ET.Element]:
    return [root] if root.tag == "testsuite" else list(root.iter("testsuite"))


def stamp_junit(path: Path, properties: Mapping[str, str]) -> None:
    """Add *properties* to every testsuite of the JUnit file *path* (replacing same-named ones),
    for runs whose pytest does not load ``tests/conftest.py`` (``sovereign verify``)."""
    tree = ET.parse(path)  # noqa: S314 - JUnit that pytest just wrote here, not untrusted input
    for suite in _suites(tree.getroot()):
        props = suite.find("properties")
        if props is None:
            props = ET.Element("properties")
            suite.insert(0, props)  # the JUnit schema puts properties first
        for name, value in properties.items():
            for old in [p for p in props.findall("property") if p.get("name") == name]:
                props.remove(old)
            ET.SubElement(props, "property", name=name, value=value)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def write_checkov(
    out: Path, stack: str, report: dict[str, Any], accepted: Sequence[str] = (), *, repo: Path = REPO
) -> Path:
    """Save checkov's JSON *report* of *stack* to *out* with the commit it scanned, the dirty flag,
    the time and the check ids *accepted* (with a reason) at that commit."""
    commit, dirty = revision(repo)
    wrapper = {
        "commit": commit,
        "dirty": dirty,
        "stack": stack,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "accepted": sorted(accepted),
        "report": report,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(wrapper, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out


# --- reading back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    finished_at: str | None
    commit: str | None
    dirty: bool | None
    stack: str | None
    tests: int
    failures: int
    errors: int
    skipped: int
    extra: str = ""


def _utc(value: str | None, seconds: float = 0.0) -> str | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    when = when.astimezone() if when.tzinfo is None else when  # naive: pytest < 8 wrote local time
    return (when + timedelta(seconds=seconds)).astimezone(UTC).isoformat(timespec="seconds")


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _read_junit(path: Path) -> _Run:
    root = ET.parse(path).getroot()  # noqa: S314 - JUnit written by pytest on this machine
    suites = _suites(root)
    props: dict[str, str] = {}
    for suite in suites:
        for p in suite.iter("property"):
            props.setdefault(p.get("name", ""), p.get("value", ""))
    # finished: the latest suite's start (pytest's ``timestamp``) plus its duration (``time``)
    ends = [_utc(s.get("timestamp"), float(s.get("time") or 0)) for s in suites]
    dirty = props.get(DIRTY_PROPERTY)
    return _Run(
        finished_at=max((e for e in ends if e), default=None),
        commit=props.get(COMMIT_PROPERTY) or None,
        dirty=None if dirty is None else dirty == "true",
        stack=props.get(STACK_PROPERTY),
        tests=sum(_int(s.get("tests")) for s in suites),
        failures=sum(_int(s.get("failures")) for s in suites),
        errors=sum(_int(s.get("errors")) for s in suites),
        skipped=sum(_int(s.get("skipped")) for s in suites),
    )


def _read_checkov(path: Path) -> _Run:
    data = json.loads(path.read_text(encoding="utf-8"))
    report = data.get("report") or {}
    summary = report.get("summary", {})
    accepted = set(data.get("accepted") or ())
    failed = [c.get("check_id") for c in report.get("results", {}).get("failed_checks", [])]
    unexplained = [c for c in failed if c not in accepted]
    passed, skipped = _int(str(summary.get("passed", 0))), _int(str(summary.get("skipped", 0)))
    extra = f"; {len(failed) - len(unexplained)} failed check(s) accepted with a reason in docs/platform.md"
    return _Run(
        finished_at=_utc(data.get("finished_at")),
        commit=data.get("commit") or None,
        dirty=data.get("dirty"),
        stack=data.get("stack"),
        tests=passed + len(failed) + skipped,
        failures=len(unexplained),
        errors=_int(str(summary.get("parsing_errors", 0))),
        skipped=skipped,
        extra=extra if failed else "",
    )


def _staleness(run: _Run, head_commit: str, repo: Path, paths: Sequence[str]) -> str | None:
    """Why *run* cannot stand for HEAD, or None when it can."""
    if run.commit is None:
        return "the file does not say which commit it tested (written before runs recorded it)"
    if run.dirty:
        return f"it ran on uncommitted changes to {run.commit[:12]}"
    if run.commit == head_commit:
        return None
    try:
        diff = _git(repo, "diff", "--quiet", run.commit, head_commit, "--", *paths)
    except OSError:
        return f"it tested {run.commit[:12]} and git is not available to compare it with HEAD"
    if diff.returncode == 0:
        return None
    if diff.returncode == 1:
        changed = _git(repo, "diff", "--name-only", run.commit, head_commit, "--", *paths).stdout.split()
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"it tested {run.commit[:12]}; the code it depends on changed since ({shown})"
    return f"it tested {run.commit[:12]}, which this repository does not have (rebased or from another clone)"


def _result(
    kind: Kind,
    path: Path,
    producer: str,
    reader: Callable[[Path], _Run],
    head_commit: str,
    repo: Path,
    paths: Sequence[str],
    *,
    hint: str = "",
) -> RunResult:
    if not path.is_file():
        return RunResult(kind, path, None, None, 0, 0, 0, 0, "missing", f"no result: run `{producer}`{hint}")
    try:
        run = reader(path)
    except (ET.ParseError, ValueError, OSError, AttributeError) as exc:  # truncated or foreign file
        return RunResult(
            kind, path, None, None, 0, 0, 0, 0, "missing", f"unreadable ({exc}): run `{producer}`"
        )
    outcome = f"{run.tests} run, {run.failures} failed, {run.errors} errors, {run.skipped} skipped{run.extra}"
    why = _staleness(run, head_commit, repo, paths)
    if why is not None:
        state: State = "stale"
        note = f"stale: {why}; rerun `{producer}` ({outcome})"
    else:
        state = "failed" if run.failures or run.errors else "passed"
        same = run.commit == head_commit
        note = outcome + (
            "" if same else f"; at {(run.commit or '')[:12]}, the code it depends on unchanged since"
        )
    counts = (run.tests, run.failures, run.errors, run.skipped)
    return RunResult(kind, path, run.finished_at, run.commit, *counts, state, note)


def load(
    results_dir: Path,
    stack: str,
    head: str,
    *,
    repo: Path = REPO,
    code_paths: Mapping[str, Sequence[str]] = CODE_PATHS,
) -> list[RunResult]:
    """The last ``make test``, ``sovereign verify --stack`` and checkov results of *stack* under
    *results_dir* (``reports/``), each judged against the commit *head* of *repo*."""
    return [
        _result("make test", results_dir / MAKE_TEST_JUNIT, "make test", _read_junit, head, repo,
                code_paths["make test"]),
        _result("sovereign verify", results_dir / f"verify-{stack}.xml", f"sovereign verify --stack {stack}",
                _read_junit, head, repo, code_paths["sovereign verify"]),
        _result("checkov", results_dir / "checkov" / f"{stack}.json", "make test", _read_checkov, head, repo,
                code_paths["checkov"], hint=" (tests/platform/test_checkov.py scans each stack of "
                "tests.infra.support.EXAMPLES and saves its report here)"),
    ]  # fmt: skip


# --- which tests ran ------------------------------------------------------------------------

_RANK = {"skipped": 0, "passed": 1, "failed": 2}


def _test_id(classname: str, name: str, root: Path | None) -> str:
    """``tests.x.test_y.TestC`` + ``test_m[p]`` -> ``tests/x/test_y.py::TestC::test_m``."""
    parts = classname.split(".") if classname else []
    split = None
    if root is not None:  # the longest dotted prefix that is a file under root
        split = next((i for i in range(len(parts), 0, -1) if (root.joinpath(*parts[:i]).with_suffix(".py"))
                      .is_file()), None)  # fmt: skip
    if split is None:  # classes are CamelCase, modules and packages are not
        split = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
    module = "/".join(parts[:split]) + ".py"
    return "::".join([module, *parts[split:], name.split("[", 1)[0]])


def outcomes(junit_path: Path, root: Path | None = None) -> dict[str, str]:
    """Each test of a JUnit file (``path::name``, parametrisation stripped) -> passed, failed or
    skipped; a parametrised test failed when any case failed (or errored), passed when any case
    passed and none failed. *root*, the pytest rootdir, resolves a dotted classname to a path
    where the module naming alone would not."""
    root_el = ET.parse(junit_path).getroot()  # noqa: S314 - JUnit written by pytest on this machine
    found: dict[str, str] = {}
    for case in root_el.iter("testcase"):
        test_id = _test_id(case.get("classname", ""), case.get("name", ""), root)
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        if test_id not in found or _RANK[outcome] > _RANK[found[test_id]]:
            found[test_id] = outcome
    return found
