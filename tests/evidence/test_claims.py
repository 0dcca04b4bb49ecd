"""Every verdict of `sovereign evidence` is computed: each case the auditor's review found green while
the report's own content said otherwise now fails its claim, makes its control fail and the command
exit 1; exceptions count only with an owner, a reason and an unexpired date; every control has a claim
that can fail."""

from __future__ import annotations

import base64
import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.evidence import claims, model, render
from tests.infra.support import STACKS
from tests.infra.test_entrypoint import pinned
from tests.support import sovereign

TODAY = date(2026, 12, 1)


def deployable() -> dict[str, Any]:
    """The prod example with everything its operator fills in before the first deploy (digests,
    secrets, the RKE2 checksum) and what the evidence needs: the manifest signing key's public half,
    the approved release, an alert receiver and Magento's site."""
    data = pinned()
    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    data["storage"]["manifest_public_keys"] = {"1": base64.b64encode(public).decode()}
    for m in data["platform"]["models"]:
        m["manifest_sha256"] = "ab" * 32
    data["platform"].setdefault("alerting", {})["receivers"] = [
        {"name": "oncall", "url": "http://oncall-bridge.monitoring.svc:8080/hook"}
    ]
    data["evidence"] = {
        "magento": {"location": "Hetzner FSN1", "jurisdiction": "DE", "operator": "Shop GmbH"}
    }
    return data


def recorded_run(folder: Path, outcome: str = "passed") -> Path:
    """A results folder whose make-test JUnit (as pytest writes it, with the commit property the
    conftest hook records) has every cited test with *outcome*, run at HEAD on a clean tree."""
    from infra.evidence import results

    cited = sorted({t for c in model.load_controls() for t in c.tests})
    cases = []
    for test in cited:
        path, _, name = test.partition("::")
        classname = path.removesuffix(".py").replace("/", ".")
        body = "<failure message='x'/>" if outcome == "failed" else ""
        cases.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{body}</testcase>')
    failures = len(cited) if outcome == "failed" else 0
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        f'failures="{failures}" skipped="0" tests="{len(cited)}" time="1.0" '
        'timestamp="2026-12-01T00:00:00.000000">'
        f'<properties><property name="{results.COMMIT_PROPERTY}" value="{results.head()}"/>'
        f'<property name="{results.DIRTY_PROPERTY}" value="false"/></properties>{"".join(cases)}'
        "</testsuite></testsuites>"
    )
    junit = folder / results.MAKE_TEST_JUNIT
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.write_text(xml, encoding="utf-8")
    return folder


def write(stacks: Path, data: dict[str, Any], name: str = "eu-test") -> Path:
    document = yaml.safe_load((STACKS / "Pulumi.eu-central-prod.yaml").read_text())
    document["config"] = {f"sovereign-llm:{k}": v for k, v in data.items()}
    stacks.mkdir(parents=True, exist_ok=True)
    (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return stacks


def collect(tmp_path: Path, data: dict[str, Any], **kwargs: Any) -> model.Evidence:
    return model.collect(write(tmp_path / "stacks", data), "eu-test", today=TODAY, **kwargs)


def claim(evidence: model.Evidence, claim_id: str) -> model.Claim:
    return next(c for control in evidence.controls for c in control.claims if c.id == claim_id)


def control(evidence: model.Evidence, control_id: str) -> model.Control:
    return next(c for c in evidence.controls if c.id == control_id)


def test_the_completed_prod_stack_holds_every_checked_claim(tmp_path: Path) -> None:
    evidence = collect(tmp_path, deployable())
    assert evidence.compliant, [
        (c.id, c.reason) for k in evidence.controls for c in k.claims if c.status == "fails"
    ]
    checked = [c for k in evidence.controls for c in k.claims if c.check != "tests"]
    assert checked and all(c.status in ("holds", "not applicable") for c in checked)
    # claims proven only by tests stay unverified without a recorded run: never "holds"
    by_tests = [c for k in evidence.controls for c in k.claims if c.check == "tests"]
    assert by_tests and {c.status for c in by_tests} == {"unverified"}


def test_pulumi_cloud_with_allow_saas_fails_art_44_and_shows_the_justification(tmp_path: Path) -> None:
    data = deployable()
    data["endpoints"]["pulumi_backend"] = "https://api.pulumi.com"
    data["backend"] = {"allow_saas": True, "justification": "trial of the Pulumi Cloud audit log feature"}
    evidence = collect(tmp_path, data)
    assert not evidence.config_refused  # the override passes the config: only the evidence can catch it
    assert claim(evidence, "GDPR-44.state-in-eu").status == "fails"
    assert "Pulumi Cloud" in claim(evidence, "GDPR-44.state-in-eu").reason
    assert control(evidence, "GDPR-44").status == "fails" and not evidence.compliant
    out = render.write(evidence, tmp_path / "out").markdown.read_text()
    assert "trial of the Pulumi Cloud audit log feature" in out and "**NOT COMPLIANT**" in out


def test_a_prod_stack_without_audit_archive_fails_the_archive_claims(tmp_path: Path) -> None:
    data = deployable()
    del (
        data["storage"]["audit_archive"],
        data["storage"]["openbao_snapshot_copy"],
    )  # the copy needs the archive
    evidence = collect(tmp_path, data)
    assert not evidence.config_refused  # the config accepts it: only the evidence says what it means
    for claim_id in ("GDPR-32.audit-archived", "NIS2-23.audit-evidence-archived"):
        assert claim(evidence, claim_id).status == "fails"
    assert not evidence.compliant
    assert not any(h.target == "audit archive" for h in evidence.hops)  # and the map draws no archive


@pytest.mark.parametrize(
    ("host", "operator"),
    [("ghcr.io", "GitHub"), ("mcr.microsoft.com", "Microsoft"), ("public.ecr.aws", "Amazon")],
)
def test_a_us_registry_declared_german_fails_the_claim(tmp_path: Path, host: str, operator: str) -> None:
    data = deployable()
    data["residency"] = {"extra_hosts": [{"host": host, "jurisdiction": "DE", "operator": "Not Really GmbH"}]}
    evidence = collect(tmp_path, data)
    verdict = claim(evidence, "GDPR-44.no-foreign-service-declared-eu")
    assert verdict.status == "fails" and operator in verdict.reason
    assert evidence.config_refused and any(
        f.key.startswith("residency.extra_hosts") for f in evidence.findings
    )
    assert not evidence.compliant


def test_images_off_the_mirror_fail_the_claim(tmp_path: Path) -> None:
    data = deployable()
    data["platform"][
        "images"
    ] = {}  # no digest for anything: what `:latest` from a public registry amounts to
    evidence = collect(tmp_path, data)
    verdict = claim(evidence, "NIS2-21-2-d.images-from-eu-mirror")
    assert verdict.status == "fails" and "no digest" in verdict.reason
    assert control(evidence, "NIS2-21-2-d").status == "fails"
    mirrorless = deployable()
    del mirrorless["endpoints"]["registry_mirror"]
    verdict = claim(collect(tmp_path / "b", mirrorless), "NIS2-21-2-d.images-from-eu-mirror")
    assert verdict.status == "fails"


def test_charts_off_the_mirror_fail_the_claim(tmp_path: Path) -> None:
    """Without a registry mirror the charts come from their vendors' repositories (ghcr.io among them)."""
    data = deployable()
    del data["endpoints"]["registry_mirror"]
    verdict = claim(collect(tmp_path, data), "NIS2-21-2-d.charts-from-eu-mirror")
    assert verdict.status == "fails" and "ghcr.io" in verdict.reason
    assert claim(collect(tmp_path / "b", deployable()), "NIS2-21-2-d.charts-from-eu-mirror").status == "holds"


def test_weights_without_the_public_key_fail_the_signature_claims(tmp_path: Path) -> None:
    data = deployable()
    del data["storage"]["manifest_public_keys"]
    evidence = collect(tmp_path, data)
    for claim_id in ("NIS2-21-2-d.weights-signed", "ISO27001-A.8.24.manifests-signed"):
        verdict = claim(evidence, claim_id)
        assert verdict.status == "fails" and "--public-key" in verdict.reason, claim_id
    weights = next(h for h in evidence.hops if h.source == "model bucket")
    assert "NOT checked" in weights.what  # the map says it too, instead of "signed manifest"


def test_magento_undeclared_or_outside_the_eu_fails(tmp_path: Path) -> None:
    data = deployable()
    del data["evidence"]
    evidence = collect(tmp_path, data)
    assert claim(evidence, "GDPR-44.client-in-eu").status == "fails"
    assert next(h for h in evidence.hops if h.source == "Magento").outside == ("Magento",)
    data["evidence"] = {"magento": {"location": "us-east-1", "jurisdiction": "US", "operator": "Shop Inc."}}
    assert claim(collect(tmp_path / "b", data), "GDPR-44.client-in-eu").status == "fails"


@pytest.mark.parametrize(
    ("expires", "status", "effect"),
    [(date(2027, 3, 31), "excepted", "applied"), (date(2026, 11, 30), "fails", "expired")],
)
def test_an_exception_needs_an_unexpired_date_and_is_shown_as_such(
    tmp_path: Path, expires: date, status: str, effect: str
) -> None:
    data = deployable()
    del data["storage"]["manifest_public_keys"]
    data["evidence"]["exceptions"] = [{
        "claim": claim_id, "owner": "Head of Platform",
        "reason": "signing key ceremony scheduled for Q1; SHA-256 manifest pinned meanwhile",
        "expires": expires.isoformat(),
    } for claim_id in ("NIS2-21-2-d.weights-signed", "ISO27001-A.8.24.manifests-signed",
                       "NIST-AI-RMF-GOVERN-6.1.weights-signed")]  # fmt: skip
    evidence = collect(tmp_path, data)
    verdict = claim(evidence, "NIS2-21-2-d.weights-signed")
    assert verdict.status == status and verdict.exception is not None
    assert [u.effect for u in evidence.exceptions] == [effect] * 3
    assert control(evidence, "NIS2-21-2-d").status == ("excepted" if status == "excepted" else "fails")
    assert verdict.status != "holds"  # an exception is never shown as "holds"
    cited = {t for c in model.load_controls() for t in c.tests}
    proven = collect(tmp_path / "proven", data, outcomes=dict.fromkeys(cited, "passed"))
    expected = model.WITH_EXCEPTIONS if status == "excepted" else model.NOT_COMPLIANT
    assert proven.verdict == expected  # never plain COMPLIANT


def test_an_exception_naming_no_claim_is_a_finding(tmp_path: Path) -> None:
    data = deployable()
    data["evidence"]["exceptions"] = [
        {
            "claim": "NIS2-21-2-d.weights-sgined",
            "owner": "ops",
            "reason": "typo in the claim id",
            "expires": "2027-01-01",
        }
    ]
    evidence = collect(tmp_path, data)
    assert [f.key for f in evidence.findings] == ["evidence.exceptions.0.claim"] and not evidence.compliant


def test_an_exception_without_owner_reason_or_expiry_is_refused(tmp_path: Path) -> None:
    data = deployable()
    data["evidence"]["exceptions"] = [{"claim": "NIS2-21-2-d.weights-signed", "reason": "x"}]
    evidence = collect(tmp_path, data)
    keys = {f.key for f in evidence.findings}
    assert {
        "evidence.exceptions.0.owner",
        "evidence.exceptions.0.expires",
        "evidence.exceptions.0.reason",
    } <= keys


def test_every_control_has_a_claim_that_can_fail(tmp_path: Path) -> None:
    """With the completed stack every control holds or is unverified; the same stack with every cited
    test failed in the recorded run fails every control: no control can only ever say "holds"."""
    data = deployable()
    cited = {t for c in model.load_controls() for t in c.tests}
    good = collect(tmp_path, data, outcomes=dict.fromkeys(cited, "passed"))
    assert {c.status for c in good.controls} <= {"holds", "not applicable"}, [
        (c.id, c.status) for c in good.controls
    ]
    assert all(c.status == "holds" for c in good.controls if c.id != "GDPR-35" or c.claims)
    bad = collect(tmp_path / "b", data, outcomes=dict.fromkeys(cited, "failed"))
    assert [c.id for c in bad.controls if c.status != "fails"] == []


def test_a_test_that_failed_in_the_recorded_run_fails_a_checked_claim_too(tmp_path: Path) -> None:
    data = deployable()
    cited = {t for c in model.load_controls() for t in c.tests}
    outcomes = dict.fromkeys(cited, "passed")
    target = claim(collect(tmp_path, data), "GDPR-32.mtls-to-models")
    outcomes[target.tests[0]] = "failed"
    verdict = claim(collect(tmp_path / "b", data, outcomes=outcomes), "GDPR-32.mtls-to-models")
    assert verdict.status == "fails" and target.tests[0] in verdict.reason


def test_without_a_recorded_run_the_verdict_is_incomplete_not_compliant(tmp_path: Path) -> None:
    """Claims that rest on tests are unverified without a run of this code: the verdict says so and the
    command exits 3, naming what to run."""
    stacks = write(tmp_path / "stacks", deployable())
    evidence = model.collect(stacks, "eu-test", today=TODAY)
    assert evidence.compliant and evidence.count("unverified") and evidence.verdict == model.INCOMPLETE
    command = ["evidence", "--stack", "eu-test", "--stacks-dir", str(stacks), "--out", str(tmp_path / "out")]
    none = str(tmp_path / "none")
    bare = sovereign(*command, "--results", none)
    assert bare.returncode == 3 and "INCOMPLETE" in bare.stderr and "make test" in bare.stderr
    red = str(recorded_run(tmp_path / "failed", "failed"))
    failed = sovereign(*command, "--results", red)
    assert failed.returncode == 1 and "NOT COMPLIANT" in failed.stderr


def test_every_check_a_control_names_exists_and_every_registered_check_is_used() -> None:
    used = {s.check for c in model.load_controls() for s in c.specs}
    assert all(claims.known(name) for name in used)
    assert set(claims.CHECKS) - used == set()  # no check written and never run


def test_cli_exits_1_for_the_saas_override_and_names_the_claim(tmp_path: Path) -> None:
    data = copy.deepcopy(deployable())
    data["endpoints"]["pulumi_backend"] = "https://api.pulumi.com"
    data["backend"] = {"allow_saas": True, "justification": "secret-looking justification text"}
    stacks = write(tmp_path / "stacks", data)
    result = sovereign(
        "evidence", "--stack", "eu-test", "--stacks-dir", str(stacks), "--out", str(tmp_path / "out"),
        "--results", str(tmp_path / "none"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "GDPR-44.state-in-eu" in result.stderr
    assert "secret-looking justification text" not in result.stderr  # stated in the report, not echoed
