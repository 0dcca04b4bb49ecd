"""The evidence as an OSCAL 1.1.3 assessment-results document, checked against NIST's schema.

Mapping (docs/compliance-evidence.md):

* each control of ``controls.yaml`` is a *finding* whose target is the control's objective
  (``target.type: objective-id``, ``target-id`` the control id), ``satisfied`` when it holds,
  ``not-satisfied`` when it fails or holds only by an approved exception;
* each claim is an *observation*: method ``TEST`` when it cites tests, ``EXAMINE`` otherwise;
  its tests and settings are its ``relevant-evidence``;
* each approved exception is a *risk* with status ``deviation-approved``, its owner as a
  property and its expiry as the deadline;
* each finding of the run (a config problem or a policy-pack violation) is an observation of
  type ``finding``, related to the controls it breaks;
* ``import-ap`` is required: there is no separate OSCAL assessment plan, the plan is the control
  mapping ``infra/evidence/controls.yaml``, referenced as a back-matter resource
  (``href: "#<uuid>"``, the form OSCAL gives for an internal reference);
* with the run's provenance (``provenance.Provenance.to_dict()``), the document names the full
  commit, says "at revision" only of an input whose ``from_revision`` is true (a modified or
  uncommitted one is said to be so) and lists every input as a back-matter resource whose
  ``rlinks`` carry its SHA-256 (``hashes``), so that the exact bytes assessed can be checked.

UUIDs are version-5 UUIDs of the stack, the revision and the item, so that two runs over the
same input give the same document but for its timestamps.

Validation uses ``jsonschema_rs``: the schema's patterns use ``\\p{L}``/``\\p{N}`` classes, which
Python's ``re`` (and so the ``jsonschema`` package's default ``pattern``) cannot compile; the
Rust regex engine supports them, anchors ``$`` at the very end as ECMA-262 does, and checks the
``date-time`` and ``uri-reference`` formats without further packages.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
import uuid
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from gateway.errors import SovereignError

SCHEMA = Path(__file__).with_name("schemas") / "oscal_assessment-results_schema.json"
OSCAL_VERSION = "1.1.3"
FILENAME = "oscal-assessment-results.json"
NS = "urn:sovereign-llm:evidence"  # namespace of the properties this program defines
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, NS + ":oscal")
CONTROL_MAPPING = "infra/evidence/controls.yaml"
_MESSAGE_MAX = 300
# a control's status → the finding target's state, reason and remark (OSCAL knows only
# satisfied / not-satisfied; an exception is a deviation, not a pass)
STATES: dict[str, tuple[str, str, str | None]] = {
    "holds": ("satisfied", "pass", None),
    "fails": ("not-satisfied", "fail", None),
    "excepted": ("not-satisfied", "other", "holds only by the approved exceptions in related-risks"),
    "unverified": ("not-satisfied", "other", "not verified for this stack: see the related observations"),
    "not applicable": ("satisfied", "other", "not applicable to this stack (implementation-status)"),
}


class OscalError(SovereignError, RuntimeError):
    pass


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, "\x1f".join(parts)))


def token(text: str) -> str:
    """*text* as an OSCAL token (an NCName: a letter or ``_`` first, then letters, digits, ``.-_``)."""
    out = "".join(c if unicodedata.category(c)[0] in "LN" or c in ".-_" else "_" for c in text)
    return out if out and (unicodedata.category(out[0])[0] == "L" or out[0] == "_") else "_" + out


def timestamp(text: str) -> str:
    """An RFC 3339 UTC timestamp from ``generated_at`` (ISO 8601, or "YYYY-MM-DD HH:MM UTC")."""
    raw = str(text).strip()
    for candidate in (raw.replace(" UTC", "+00:00").replace("Z", "+00:00"), raw):
        try:
            parsed = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        raise OscalError(
            f"generated_at {raw!r}: not a date and time; expected ISO 8601, e.g. 2026-12-01T09:30:00Z"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _prop(name: str, value: Any) -> dict[str, str]:
    return {"name": token(name), "ns": NS, "value": " ".join(str(value).split()) or "-"}


def _line(text: Any) -> str:
    """A markup-line value: one line, no surrounding blanks."""
    return " ".join(str(text).split()) or "-"


def _prune(value: Any) -> Any:
    """Without empty lists, dicts and None: OSCAL arrays have minItems 1, absent fields are omitted."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value if v not in (None, [], {})]
    return value


def _deadline(expires: Any) -> str | None:
    if isinstance(expires, datetime):
        return expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(expires, date):
        return f"{expires.isoformat()}T00:00:00Z"
    if expires:
        return timestamp(str(expires))
    return None


def _inputs(provenance: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The provenance's inputs by path (empty without provenance)."""
    inputs = (provenance or {}).get("inputs") or []
    return {str(i["path"]): i for i in inputs if isinstance(i, dict) and "path" in i}


def _commit(provenance: dict[str, Any] | None) -> str | None:
    commit = (provenance or {}).get("commit")
    return str(commit) if commit else None


def _where(path: str, provenance: dict[str, Any] | None) -> str:
    """Which bytes of *path* were used, claiming a revision only when provenance allows it."""
    commit, item = _commit(provenance), _inputs(provenance).get(path)
    if item is None:
        if commit and (provenance or {}).get("dirty") is False:
            return f"at revision {commit}"  # a clean tree: every file is the commit's
        if commit:
            return f"in the working tree of commit {commit}, which has uncommitted changes"
        return "(no revision recorded)"
    if item.get("outside_repository"):
        return f"(outside the repository; SHA-256 {item.get('sha256')})"
    if commit and item.get("from_revision"):
        return f"at revision {commit} (SHA-256 {item.get('sha256')})"
    if item.get("tracked"):
        return f"modified since revision {commit} (SHA-256 {item.get('sha256')})"
    return f"not committed (SHA-256 {item.get('sha256')})"


def _href(path: str) -> str:
    """A path as a uri-reference (blanks and other reserved characters percent-encoded)."""
    return urllib.parse.quote(path, safe="/")


def _input_resources(provenance: dict[str, Any] | None, uid: Any) -> list[dict[str, Any]]:
    """Each input of the run as a back-matter resource whose rlink carries its SHA-256."""
    resources = []
    for path, item in sorted(_inputs(provenance).items()):
        if path == CONTROL_MAPPING:
            continue  # the assessment plan's resource carries it
        resources.append(
            {
                "uuid": uid("input", path),
                "title": _line(f"Input {path}"),
                "description": f"{path} {_where(path, provenance)}",
                "props": [_prop("from-revision", bool(item.get("from_revision")))],
                "rlinks": [_rlink(path, item)],
            }
        )
    return resources


def _rlink(path: str, item: dict[str, Any] | None, media_type: str | None = None) -> dict[str, Any]:
    digest = (item or {}).get("sha256")
    return {
        "href": _href(path),
        "media-type": media_type,
        "hashes": [{"algorithm": "SHA-256", "value": str(digest)}] if digest else None,
    }


def _evidence_of(claim: Any, provenance: dict[str, Any] | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for test in getattr(claim, "tests", ()) or ():
        file = str(test).partition("::")[0]
        items.append(
            {
                "href": _href(file),
                "description": _line(f"test {test} {_where(file, provenance)}"),
                "props": [_prop("test", test)],
            }
        )
    for setting in getattr(claim, "settings", ()) or ():
        items.append({"description": f"setting {setting}", "props": [_prop("setting", setting)]})
    return items


def _risk(
    risk_uuid: str, stack: str, control: Any, claim: Any, exception: Any, obs_uuid: str
) -> dict[str, Any]:
    """The exception of *claim* as a risk: approved while it applies, open once it expired."""
    applied = str(claim.status) == "excepted"
    return {
        "uuid": risk_uuid,
        "title": _line(f"{'Approved' if applied else 'Expired'} exception: {claim.id}"),
        "description": str(exception.reason) or "-",
        "statement": (
            f"The claim {claim.id} ({_line(claim.text)}) does not hold for stack {stack}; "
            f"the exception is owned by {exception.owner} and expires on {exception.expires}."
        ),
        "props": [
            _prop("owner", exception.owner),
            _prop("expires", exception.expires),
            _prop("claim", claim.id),
            _prop("control", control.id),
        ],
        "status": "deviation-approved" if applied else "open",
        "deadline": _deadline(exception.expires),
        "related-observations": [{"observation-uuid": obs_uuid}],
    }


def assessment_results(evidence: Any, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OSCAL assessment-results document of *evidence* (see the module's mapping)."""
    stack, revision = str(evidence.stack), str(evidence.revision or "unknown")
    when = timestamp(evidence.generated_at)

    def uid(kind: str, *ids: str) -> str:
        return _uuid(stack, revision, kind, *ids)

    plan_uuid = uid("assessment-plan")
    plan_input = _inputs(provenance).get(CONTROL_MAPPING)
    observations: list[dict[str, Any]] = []
    risks: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    run_findings = list(getattr(evidence, "findings", ()) or ())
    finding_obs: dict[int, str] = {}
    for number, f in enumerate(run_findings):
        obs_uuid = uid("run-finding", str(number), str(f.source), str(f.key), str(f.subject))
        finding_obs[number] = obs_uuid
        observations.append(
            {
                "uuid": obs_uuid,
                "title": _line(f"{f.source}: {f.subject}"),
                "description": str(f.message) or "-",
                "props": [
                    _prop("source", f.source),
                    _prop("key", f.key),
                    _prop("subject", f.subject),
                    *(_prop("breaks-control", c) for c in f.controls),
                ],
                "methods": ["TEST"],
                "types": ["finding"],
                "collected": when,
            }
        )
    counts = {"holds": 0, "fails": 0, "excepted": 0}
    for control in evidence.controls:
        status = str(control.status)
        counts[status] = counts.get(status, 0) + 1
        related_obs, related_risks = [], []
        for claim in getattr(control, "claims", ()) or ():
            obs_uuid = uid("claim", str(claim.id))
            related_obs.append(obs_uuid)
            tests = list(getattr(claim, "tests", ()) or ())
            observations.append(
                {
                    "uuid": obs_uuid,
                    "title": _line(claim.id),
                    "description": str(claim.text) or "-",
                    "props": [
                        _prop("claim", claim.id),
                        _prop("control", control.id),
                        _prop("claim-status", claim.status),
                    ],
                    "methods": ["TEST"] if tests else ["EXAMINE"],
                    "types": ["control-objective"],
                    "relevant-evidence": _evidence_of(claim, provenance),
                    "collected": when,
                    "remarks": str(claim.reason) if getattr(claim, "reason", None) else None,
                }
            )
            exception = getattr(claim, "exception", None)
            if exception is not None:
                risk_uuid = uid("exception", str(claim.id))
                related_risks.append(risk_uuid)
                risks.append(_risk(risk_uuid, stack, control, claim, exception, obs_uuid))
        related_obs += [finding_obs[n] for n, f in enumerate(run_findings) if control.id in tuple(f.controls)]
        state, reason, remark = STATES.get(status, STATES["fails"])
        findings.append(
            {
                "uuid": uid("control", str(control.id)),
                "title": _line(f"{control.framework} {control.ref}: {control.title}"),
                "description": str(control.claim) or "-",
                "props": [
                    _prop("control", control.id),
                    _prop("framework", control.framework),
                    _prop("status", status),
                ],
                "target": {
                    "type": "objective-id",
                    "target-id": token(str(control.id)),
                    "implementation-status": {"state": "not-applicable"}
                    if status == "not applicable"
                    else None,
                    "status": {
                        "state": state,
                        "reason": reason,
                        "remarks": remark,
                    },
                },
                "related-observations": [{"observation-uuid": u} for u in related_obs],
                "related-risks": [{"risk-uuid": u} for u in related_risks],
            }
        )
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    commit = _commit(provenance)
    meta_props = [_prop("stack", stack), _prop("revision", commit or revision)]
    if provenance:
        meta_props += [
            _prop("commit", provenance.get("commit") or "none"),
            _prop("dirty", provenance.get("dirty")),
        ]
    document = {
        "uuid": _uuid(stack, "assessment-results"),
        "metadata": {
            "title": _line(f"Compliance evidence of stack {stack}"),
            "last-modified": when,
            "version": _line(
                f"{commit} with uncommitted changes"
                if commit and (provenance or {}).get("dirty")
                else commit or revision
            ),
            "oscal-version": OSCAL_VERSION,
            "props": meta_props,
        },
        "import-ap": {
            "href": f"#{plan_uuid}",
            "remarks": (
                "No separate OSCAL assessment plan is published: the plan is the control mapping "
                f"{CONTROL_MAPPING} {_where(CONTROL_MAPPING, provenance)} (every pointer of it resolves; "
                "tests/evidence), described by the back-matter resource this href names."
            ),
        },
        "results": [
            {
                "uuid": uid("result"),
                "title": _line(f"sovereign evidence --stack {stack}"),
                "description": f"The controls of {CONTROL_MAPPING} checked against stack {stack}: {summary}.",
                "start": when,
                "end": when,
                "props": [_prop("stack", stack)],
                "reviewed-controls": {
                    "control-selections": [
                        {"include-controls": [{"control-id": token(str(c.id))} for c in evidence.controls]}
                    ],
                },
                "observations": observations,
                "risks": risks,
                "findings": findings,
            }
        ],
        "back-matter": {
            "resources": [
                {
                    "uuid": plan_uuid,
                    "title": "Assessment plan: the control mapping",
                    "description": "Each control's claims with the code, tests and settings that prove them.",
                    "props": [_prop("revision", commit or revision)]
                    + (
                        [_prop("from-revision", bool(plan_input.get("from_revision")))]
                        if plan_input is not None
                        else []
                    ),
                    "rlinks": [_rlink(CONTROL_MAPPING, plan_input, "application/yaml")],
                },
                *_input_resources(provenance, uid),
            ],
        },
    }
    return {"assessment-results": _prune(document)}


@cache
def _validator() -> Any:
    import jsonschema_rs

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema_rs.Draft7Validator(schema, validate_formats=True)


def validate(document: Any) -> list[str]:
    """Where *document* breaks NIST's OSCAL assessment-results schema (empty: valid)."""
    problems = []
    for error in _validator().iter_errors(document):
        where = "/" + "/".join(str(p) for p in error.instance_path)
        message = str(error.message)
        if len(message) > _MESSAGE_MAX:
            message = message[:_MESSAGE_MAX] + "…"
        problems.append(f"{where}: {message}")
    return problems


def write(evidence: Any, folder: Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``oscal-assessment-results.json`` into *folder*; refuses a document the schema rejects."""
    document = assessment_results(evidence, provenance)
    problems = validate(document)
    if problems:
        raise OscalError(
            f"{FILENAME}: the OSCAL document breaks NIST's schema ({SCHEMA.name}), not written: "
            + "; ".join(problems[:5])
        )
    path = folder / FILENAME
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
