"""The DPIA (GDPR Art. 35(7)) and the record of processing (Art. 30) sections of the evidence.

What the program knows is filled in: the purpose of each use case (its policy's description),
the data it may see (its context fields), what is tokenised and what removed, the recipients
(the platform's own model servers; the hosting and storage operators from the residency
table), the transfers outside the EU (computed from that table), retention (the audit archive's
Object Lock period), and the measures (the controls and their verdicts). What only the
controller can write (its name, legal basis, necessity in its own words, likelihood and
severity of each risk, the DPO's opinion) is left as a field marked :data:`CONTROLLER`, never
invented.

Residual risks come from ``risks.yaml`` (limits the documentation states; each cites it) and
from this stack's report: every claim that does not hold is a residual risk until it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from infra.evidence.model import Evidence

RISKS = Path(__file__).with_name("risks.yaml")
CONTROLLER = "[to be completed by the controller]"


@dataclass(frozen=True)
class Activity:
    """One processing activity (a use case) as GDPR Art. 30(2) asks a processor to record it, with
    the controller's Art. 30(1) fields that the program can state."""

    use_case: str
    purpose: str
    data_subjects: str
    categories: str
    special_categories: str
    tokenised: str
    removed: str
    recipients: str
    transfers: str
    retention: str


@dataclass(frozen=True)
class Risk:
    id: str
    title: str
    risk: str
    affected: str
    measure: str
    source: str
    origin: str  # "documented limit" | "this stack's report"


def load_risks(path: Path = RISKS) -> list[dict[str, object]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(data["risks"])


_HEALTH_FIELDS = ("kvnr", "diagnosis", "medication", "insurance")


def transfers(evidence: Evidence) -> str:
    outside = [r for r in evidence.residency if not r.inside]
    if not outside:
        return (
            f"none: all {len(evidence.residency)} located resources and endpoints of the plan are in the "
            "EU/EEA (section 3)"
        )
    return "YES, outside the EU/EEA: " + ", ".join(f"{r.name} ({r.location})" for r in outside)


def recipients(evidence: Evidence) -> str:
    operators = sorted({r.operator for r in evidence.residency if r.inside and r.operator not in ("-", "")})
    return (
        "the platform's own model servers (inside the boundary, no egress); processors hosting it: "
        + (", ".join(operators) or "none declared")
        + "; no third party receives patient data"
    )


def activities(evidence: Evidence) -> list[Activity]:
    retention = _retention(evidence)
    out = []
    for u in evidence.use_cases:
        health = [f for f in u.fields if any(h in f.lower() for h in _HEALTH_FIELDS)]
        if u.name == "telehealth-summary":
            health.append("consultation transcript")
        patient = any(not f.startswith("product.") for f in u.fields)
        out.append(Activity(
            use_case=u.name,
            purpose=u.description,
            data_subjects="patients and customers of the shop" if patient else "none (public product data)",
            categories=", ".join(u.fields) or "none",
            special_categories=("health data (Art. 9): " + ", ".join(health)) if health else "none by design",
            tokenised=", ".join(u.tokenised) or "none",
            removed=", ".join(u.removed) or "none",
            recipients=recipients(evidence) if u.served else "not served by this stack",
            transfers=transfers(evidence),
            retention=retention,
        ))  # fmt: skip
    return out


def _retention(evidence: Evidence) -> str:
    archive = next((h for h in evidence.hops if h.target == "audit archive"), None)
    requests = "request and answer texts: not stored by the gateway or the model servers (no request logs)"
    if archive is None:
        return requests + "; audit records: no archive in this plan"
    return (
        requests + "; audit records (categories and counts, no values): " + archive.transport.split(": ")[0]
    )


def residual_risks(evidence: Evidence) -> list[Risk]:
    use_cases = {u.name for u in evidence.use_cases}
    out = []
    for r in load_risks():
        if r.get("use_case") and r["use_case"] not in use_cases:
            continue
        source = r["source"] if isinstance(r["source"], dict) else {"file": r["source"]}
        out.append(Risk(str(r["id"]), str(r["title"]), str(r["risk"]), str(r["affected"]), str(r["measure"]),
                        str(source["file"]), "documented limit"))  # fmt: skip
    for control in evidence.controls:
        for claim in control.claims:
            if claim.status in ("fails", "excepted", "unverified"):
                out.append(Risk(claim.id, f"{control.framework} {control.ref}: {claim.text}",
                                f"{claim.status}: {claim.reason}", "see the control", "section 6",
                                "infra/evidence/controls.yaml", "this stack's report"))  # fmt: skip
    return out
