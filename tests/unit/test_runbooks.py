"""The incident runbooks carry the procedures the compliance evidence cites: the reporting clocks with
a form each (NIS2 Art. 23, GDPR Art. 33/34), a link to that procedure from every runbook of an
incident that can be reportable, and the structure every alert runbook follows (first steps)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
PROCEDURE = RUNBOOKS / "incident-reporting.md"
# incidents that can be a personal-data breach or a significant incident: each must send its reader
# to the reporting procedure (docs/runbooks/README.md lists them)
REPORTABLE = [
    "phi-leak.md",
    "residency-breach.md",
    "key-compromise.md",
    "openbao-audit.md",
    "audit-storage.md",
    "gateway-unavailable.md",
    "model-down.md",
]


def headings(path: Path) -> list[str]:
    return re.findall(r"^#{2,3} (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)


def test_the_reporting_procedure_has_each_clock_with_its_form() -> None:
    titles = headings(PROCEDURE)
    for clock in ("within 24 hours", "within 72 hours", "within one month"):
        assert any("NIS2 Art. 23" in t and clock in t for t in titles), clock
    assert any("GDPR Art. 33" in t and "supervisory authority" in t for t in titles)
    assert any("GDPR Art. 34" in t for t in titles)
    assert any("Processor-to-controller" in t and "33(2)" in t for t in titles)
    assert {"Roles", "Decision steps"} <= set(titles)
    text = PROCEDURE.read_text(encoding="utf-8")
    assert "Art. 23(3)" in text and "Art. 33(1)" in text  # the criteria, not only the clocks


@pytest.mark.parametrize("name", REPORTABLE)
def test_every_reportable_incident_runbook_links_the_procedure(name: str) -> None:
    text = (RUNBOOKS / name).read_text(encoding="utf-8")
    assert "(incident-reporting.md" in text, f"{name} does not link incident-reporting.md"


@pytest.mark.parametrize("name", sorted(p.name for p in RUNBOOKS.glob("*.md")))
def test_every_incident_runbook_starts_with_its_first_steps(name: str) -> None:
    """An alert's runbook opens with what to do first (first five / fifteen minutes, or first steps);
    the procedures (README, reporting, register, change and restore procedures) are numbered steps."""
    titles = headings(RUNBOOKS / name)
    procedures = {
        "README.md",
        "incident-reporting.md",
        "breach-register.md",
        "model-change.md",
        "rke2-upgrade.md",
        "etcd-restore.md",
    }
    if name in procedures:
        assert titles, name
        return
    assert titles and titles[0].startswith("First"), (name, titles[:1])
