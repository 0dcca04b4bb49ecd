"""The OSCAL assessment-results export: it validates against NIST's published schema (checked
by two independent validators), the schema really rejects broken documents, the mapping of
controls, claims and exceptions, and the document is deterministic but for its timestamps."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra.evidence import oscal

SCHEMA_SHA256 = "d9e34757f0c12aff61f52b821f0b8f83ba0ba75b3a149a202b08ba82f82bc4c3"


def _claim(cid: str, status: str, tests: tuple[str, ...] = (), exception: Any = None) -> SimpleNamespace:
    return SimpleNamespace(
        id=cid, text=f"the claim {cid}", status=status, reason=f"because of {cid}", tests=tests,
        settings=("stack:storage.audit_lock_mode",), exception=exception,
    )  # fmt: skip


def _control(cid: str, status: str, claims: list[SimpleNamespace]) -> SimpleNamespace:
    return SimpleNamespace(id=cid, framework="GDPR", ref="Art. 44", title=f"title of {cid}",
                           claim=f"summary of {cid}", status=status, claims=claims)  # fmt: skip


def example(generated_at: str = "2026-12-01 09:30 UTC") -> SimpleNamespace:
    approved = SimpleNamespace(
        owner="DPO", reason="backend migration until January", expires=date(2027, 1, 31)
    )
    expired = SimpleNamespace(owner="CISO", reason="was a pilot", expires=date(2026, 1, 1))
    return SimpleNamespace(
        stack="eu-central-prod",
        generated_at=generated_at,
        revision="0123456789abcdef0123456789abcdef01234567",
        controls=[
            _control("GDPR-44", "excepted", [
                _claim("GDPR-44.state-in-eu", "excepted", ("tests/infra/test_b.py::test_eu",), approved),
                _claim("GDPR-44.endpoints-in-eu", "holds", ("tests/infra/test_residency.py::test_eu",)),
            ]),
            _control("ISO27001-A.8.32", "holds", [_claim("ISO27001-A.8.32.plan", "holds")]),
            _control("NIS2-21", "fails", [_claim("NIS2-21.ssh", "fails", (), expired)]),
            _control("PCI-DSS-SCOPE", "not applicable", [_claim("PCI-DSS-SCOPE.cards", "not applicable")]),
            _control("NIST-AI-RMF-MAP", "unverified", [_claim("NIST-AI-RMF-MAP.x", "unverified")]),
        ],
        findings=[SimpleNamespace(source="policy", key="ssh-not-open", subject="fw-bastion",
                                  message="SSH open to 0.0.0.0/0", controls=("NIS2-21",))],
    )  # fmt: skip


def _python_validator() -> Any:
    """A second, independent validator: the jsonschema package's Draft-07 with `pattern` on the
    regex module (Python's re cannot compile the schema's \\p{L} classes)."""
    import jsonschema  # type: ignore[import-untyped,unused-ignore]
    import regex  # type: ignore[import-untyped,unused-ignore]
    from jsonschema import Draft7Validator, validators

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    schema = json.loads(oscal.SCHEMA.read_text(encoding="utf-8"))
    cls = validators.extend(Draft7Validator, {"pattern": pattern})
    return cls(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def test_the_vendored_schema_is_nists_oscal_1_1_3_unchanged() -> None:
    assert hashlib.sha256(oscal.SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(oscal.SCHEMA.read_text(encoding="utf-8"))
    assert schema["$id"] == "http://csrc.nist.gov/ns/oscal/1.1.3/oscal-ar-schema.json"
    assert SCHEMA_SHA256 in (oscal.SCHEMA.parent / "README.md").read_text(encoding="utf-8")


def test_the_example_validates_with_both_validators() -> None:
    document = oscal.assessment_results(example())
    assert oscal.validate(document) == []
    assert [e.message for e in _python_validator().iter_errors(document)] == []


def _result(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = document["assessment-results"]["results"][0]
    return result


def test_controls_claims_and_exceptions_map_to_findings_observations_and_risks() -> None:
    result = _result(oscal.assessment_results(example()))
    findings = {f["target"]["target-id"]: f for f in result["findings"]}
    assert {k: f["target"]["status"]["state"] for k, f in findings.items()} == {
        "GDPR-44": "not-satisfied", "ISO27001-A.8.32": "satisfied", "NIS2-21": "not-satisfied",
        "PCI-DSS-SCOPE": "satisfied", "NIST-AI-RMF-MAP": "not-satisfied",
    }  # fmt: skip
    assert all(f["target"]["type"] == "objective-id" for f in findings.values())
    assert findings["NIS2-21"]["target"]["status"]["reason"] == "fail"
    assert findings["PCI-DSS-SCOPE"]["target"]["implementation-status"] == {"state": "not-applicable"}
    observations = {o["uuid"]: o for o in result["observations"]}
    by_title = {o["title"]: o for o in observations.values()}
    # a claim citing tests was tested; one without was examined; its tests are its evidence
    assert by_title["GDPR-44.state-in-eu"]["methods"] == ["TEST"]
    assert by_title["ISO27001-A.8.32.plan"]["methods"] == ["EXAMINE"]
    evidence = by_title["GDPR-44.state-in-eu"]["relevant-evidence"]
    assert evidence[0]["href"] == "tests/infra/test_b.py"
    assert evidence[0]["props"][0]["value"] == "tests/infra/test_b.py::test_eu"
    # each finding relates its claims' observations and the run's findings that break it
    related = {r["observation-uuid"] for r in findings["NIS2-21"]["related-observations"]}
    assert {observations[u]["title"] for u in related} == {"NIS2-21.ssh", "policy: fw-bastion"}
    # the applied exception is an approved deviation, the expired one an open risk
    risks = {r["title"]: r for r in result["risks"]}
    approved = risks["Approved exception: GDPR-44.state-in-eu"]
    assert approved["status"] == "deviation-approved" and approved["deadline"] == "2027-01-31T00:00:00Z"
    assert {"name": "owner", "ns": oscal.NS, "value": "DPO"} in approved["props"]
    assert risks["Expired exception: NIS2-21.ssh"]["status"] == "open"
    assert findings["GDPR-44"]["related-risks"] == [{"risk-uuid": approved["uuid"]}]
    # import-ap points at the plan described in back-matter
    document = oscal.assessment_results(example())["assessment-results"]
    plan = document["back-matter"]["resources"][0]
    assert document["import-ap"]["href"] == f"#{plan['uuid']}"
    assert plan["rlinks"][0]["href"] == oscal.CONTROL_MAPPING


def _without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        stamps = {"last-modified", "start", "end", "collected"}
        return {k: _without_timestamps(v) for k, v in value.items() if k not in stamps}
    if isinstance(value, list):
        return [_without_timestamps(v) for v in value]
    return value


def test_two_runs_of_the_same_input_differ_only_in_timestamps() -> None:
    first = oscal.assessment_results(example("2026-12-01 09:30 UTC"))
    assert oscal.assessment_results(example("2026-12-01 09:30 UTC")) == first
    later = oscal.assessment_results(example("2026-12-02T11:00:00+01:00"))
    assert later != first
    assert _without_timestamps(later) == _without_timestamps(first)
    assert later["assessment-results"]["metadata"]["last-modified"] == "2026-12-02T10:00:00Z"
    other_stack = example()
    other_stack.stack = "eu-north-dr"
    assert (
        oscal.assessment_results(other_stack)["assessment-results"]["uuid"]
        != first["assessment-results"]["uuid"]
    )


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node: Any = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node: Any = document
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


AR = "assessment-results"
R0 = [AR, "results", 0]
CONTROL_ID = [*R0, "reviewed-controls", "control-selections", 0, "include-controls", 0, "control-id"]
STATE = [*R0, "findings", 0, "target", "status", "state"]
BROKEN = {
    "no metadata title": (_delete([AR, "metadata", "title"]), "/assessment-results/metadata"),
    "no result start": (_delete([*R0, "start"]), "/assessment-results/results/0"),
    "no import-ap": (_delete([AR, "import-ap"]), "/assessment-results"),
    "bad uuid": (_set([AR, "uuid"], "not-a-uuid"), "/assessment-results/uuid"),
    "uuid of version 1": (_set([AR, "uuid"], str(uuid.uuid1())), "/assessment-results/uuid"),
    "time without zone": (_set([AR, "metadata", "last-modified"], "2026-12-01T09:30:00"),
                          "/assessment-results/metadata/last-modified"),
    "control id not a token": (_set(CONTROL_ID, "44 GDPR"), "/" + "/".join(map(str, CONTROL_ID))),
    "unknown target state": (_set(STATE, "partly"), "/" + "/".join(map(str, STATE))),
    "field the model lacks": (_set([*R0, "verdict"], "ok"), "/assessment-results/results/0"),
    "empty observations": (_set([*R0, "observations"], []), "/assessment-results/results/0/observations"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_document_is_rejected_naming_where(name: str) -> None:
    change, where = BROKEN[name]
    document = copy.deepcopy(oscal.assessment_results(example()))
    change(document)
    problems = oscal.validate(document)
    assert problems, f"{name}: the validator accepted a broken document"
    assert any(p.startswith(where + ":") for p in problems), problems
    assert list(_python_validator().iter_errors(document)), f"{name}: jsonschema accepted it"


def test_tokens_are_made_valid() -> None:
    assert oscal.token("ISO27001-A.8.32") == "ISO27001-A.8.32"
    assert oscal.token("44 GDPR/x") == "_44_GDPR_x"
    assert oscal.token("Ärzte.ü") == "Ärzte.ü"


def test_write_refuses_an_unusable_timestamp_and_writes_a_valid_file(tmp_path: Path) -> None:
    with pytest.raises(oscal.OscalError, match="generated_at 'yesterday'"):
        oscal.write(example("yesterday"), tmp_path)
    path = oscal.write(example(), tmp_path, provenance={"commit": "0" * 40, "dirty": True})
    document = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == oscal.FILENAME and oscal.validate(document) == []
    props = {p["name"]: p["value"] for p in document[AR]["metadata"]["props"]}
    assert props["commit"] == "0" * 40 and props["dirty"] == "True"


def test_the_prod_stack_exports_a_valid_document() -> None:
    from infra.evidence import model
    from tests.infra.support import STACKS

    evidence = model.collect(STACKS, "eu-central-prod")
    if not all(hasattr(c, "status") and hasattr(c, "claims") for c in evidence.controls):
        pytest.skip("model.py has no control status/claims yet (the lead enables this test)")
    document = oscal.assessment_results(evidence)
    assert oscal.validate(document) == []
    result = _result(document)
    assert len(result["findings"]) == len(evidence.controls)
    assert len([o for o in result["observations"] if "control-objective" in o.get("types", [])]) == sum(
        len(c.claims) for c in evidence.controls
    )


COMMIT = "89abcdef" * 5  # a full 40-hex commit; evidence.revision (the short one) differs


def _input(
    path: str, digest: str, *, from_revision: bool, tracked: bool = True, outside: bool = False
) -> dict[str, Any]:
    return {"path": path, "sha256": digest, "outside_repository": outside, "tracked": tracked,
            "unmodified": from_revision, "from_revision": from_revision}  # fmt: skip


def _provenance(mapping_from_revision: bool) -> dict[str, Any]:
    return {
        "format": "sovereign-evidence-provenance/1",
        "commit": COMMIT,
        "dirty": not mapping_from_revision,
        "dirty_paths": [] if mapping_from_revision else [oscal.CONTROL_MAPPING],
        "inputs": [
            _input(oscal.CONTROL_MAPPING, "a" * 64, from_revision=mapping_from_revision),
            _input("stacks/eu-central-prod.yaml", "b" * 64, from_revision=True),
            _input("reports/new results.xml", "c" * 64, from_revision=False, tracked=False),
            _input("/etc/sovereign/ca.pem", "d" * 64, from_revision=False, tracked=False, outside=True),
        ],
        "tools": {},
    }


def _short(evidence: SimpleNamespace) -> SimpleNamespace:
    evidence.revision = COMMIT[:12]  # as model._revision() gives it
    return evidence


def test_a_modified_control_mapping_is_not_said_to_be_at_the_revision() -> None:
    document = oscal.assessment_results(_short(example()), _provenance(mapping_from_revision=False))
    assert oscal.validate(document) == []
    assert [e.message for e in _python_validator().iter_errors(document)] == []
    ar = document[AR]
    remark = ar["import-ap"]["remarks"]
    assert "at revision" not in remark
    assert f"modified since revision {COMMIT} (SHA-256 {'a' * 64})" in remark
    assert ar["metadata"]["version"] == f"{COMMIT} with uncommitted changes"
    plan = ar["back-matter"]["resources"][0]
    assert plan["rlinks"] == [{"href": oscal.CONTROL_MAPPING, "media-type": "application/yaml",
                               "hashes": [{"algorithm": "SHA-256", "value": "a" * 64}]}]  # fmt: skip
    assert {"name": "from-revision", "ns": oscal.NS, "value": "False"} in plan["props"]


def test_every_input_is_a_resource_with_its_sha256_and_the_full_commit_is_named() -> None:
    document = oscal.assessment_results(_short(example()), _provenance(mapping_from_revision=True))
    assert oscal.validate(document) == []
    assert [e.message for e in _python_validator().iter_errors(document)] == []
    ar = document[AR]
    assert f"{oscal.CONTROL_MAPPING} at revision {COMMIT} (SHA-256 {'a' * 64})" in ar["import-ap"]["remarks"]
    assert COMMIT[:12] + " " not in json.dumps(document)  # the short commit is never the revision named
    props = {p["name"]: p["value"] for p in ar["metadata"]["props"]}
    assert props["revision"] == COMMIT and ar["metadata"]["version"] == COMMIT
    resources = {r["rlinks"][0]["href"]: r for r in ar["back-matter"]["resources"]}
    hashes = {href: r["rlinks"][0]["hashes"] for href, r in resources.items()}
    assert hashes == {
        oscal.CONTROL_MAPPING: [{"algorithm": "SHA-256", "value": "a" * 64}],
        "stacks/eu-central-prod.yaml": [{"algorithm": "SHA-256", "value": "b" * 64}],
        "reports/new%20results.xml": [{"algorithm": "SHA-256", "value": "c" * 64}],
        "/etc/sovereign/ca.pem": [{"algorithm": "SHA-256", "value": "d" * 64}],
    }
    assert resources["stacks/eu-central-prod.yaml"]["description"].endswith(
        f"at revision {COMMIT} (SHA-256 {'b' * 64})"
    )
    assert "at revision" not in resources["reports/new%20results.xml"]["description"]
    assert "not committed" in resources["reports/new%20results.xml"]["description"]
    assert "outside the repository" in resources["/etc/sovereign/ca.pem"]["description"]


def test_tests_are_said_to_be_at_the_revision_only_in_a_clean_tree() -> None:
    def description(provenance: dict[str, Any] | None) -> str:
        result = _result(oscal.assessment_results(_short(example()), provenance))
        by_title = {o["title"]: o for o in result["observations"]}
        return str(by_title["GDPR-44.state-in-eu"]["relevant-evidence"][0]["description"])

    assert description(_provenance(mapping_from_revision=True)) == (
        f"test tests/infra/test_b.py::test_eu at revision {COMMIT}"
    )
    assert "at revision" not in description(_provenance(mapping_from_revision=False))
    assert "at revision" not in description(None)
