"""`sovereign evidence`: the report renders for every example stack from the program under
mocks, every claim with a computed verdict; the data-flow map is drawn from the plan; every control
points at code, tests and settings that exist, and every cited test is collected; a non-compliant
stack yields a report that flags each violation; the HTML renders in headless Chromium and prints
on A4 with page numbers."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import cli
from infra import plan as planner
from infra.evidence import claims, model, render
from tests.evidence.test_claims import deployable, recorded_run
from tests.evidence.test_claims import write as write_stack
from tests.infra.support import REPO, STACKS
from tests.support import Bao, sovereign

EXAMPLES = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS.glob("Pulumi.*.yaml"))
SECTIONS = ["## 1. Findings", "## 2. Data-flow map", "## 3. Residency", "## 4. Use cases",
            "## 5. Policy pack", "## 6. Control mapping", "## 7. Data protection impact assessment",
            "## 8. Record of processing activities", "## 9. Results of checks that ran", "## 10. Provenance",
            "## 11. Runbooks"]  # fmt: skip
STATUSES = {"holds", "fails", "excepted", "unverified", "not applicable"}


@pytest.mark.parametrize("stack", EXAMPLES)
def test_the_report_renders_for_every_example_stack(stack: str, tmp_path: Path) -> None:
    evidence = model.collect(STACKS, stack)
    written = render.write(evidence, tmp_path)
    markdown = written.markdown.read_text()
    assert [s for s in SECTIONS if s not in markdown] == []
    # every claim has a computed verdict with its reason; the example stacks are templates, so the
    # claims that fail are exactly what their operator still has to fill in (digests, checksums)
    verdicts = [c for control in evidence.controls for c in control.claims]
    assert verdicts and all(c.status in STATUSES and c.reason for c in verdicts)
    assert f"| verdict | **{evidence.verdict}**" in markdown
    for claim in (c for c in verdicts if c.status == "fails"):
        assert f"`{claim.id}`" in markdown and claim.reason.split(":")[0] in markdown
    # every hop of the data flow, in the table and in the drawing
    drawing = written.svg.read_text()
    assert drawing.startswith("<svg") and drawing.count('class="edge"') == len(evidence.hops)
    # residency: every resource with a location and every endpoint, each inside the boundary
    assert evidence.residency and all(r.inside for r in evidence.residency)
    names = {r.name for r in evidence.residency}
    assert {"endpoints.object_storage", "endpoints.pulumi_backend", "storage.audit_archive"} <= names
    assert any(r.kind == "cloud resource" and r.name.endswith("bastion-server") for r in evidence.residency)
    # the use cases as the gateway loads them; catalogue search sees no patient field
    catalog = next(u for u in evidence.use_cases if u.name == "catalog-search")
    assert catalog.tokenised == () and all(f.startswith("product.") for f in catalog.fields)
    assert "| `catalog-search` |" in markdown
    assert all(f"**{c.framework} {c.ref}**" in markdown for c in evidence.controls)
    html = written.html.read_text()
    assert "<svg" in html and ("NOT COMPLIANT" in html) != evidence.compliant


def test_the_prod_stack_serves_every_use_case_and_draws_its_locations(tmp_path: Path) -> None:
    evidence = model.collect(STACKS, "eu-central-prod")
    assert all(u.served for u in evidence.use_cases)  # the policies' model alias `chat` is served
    gpu = next(h for h in evidence.hops if h.target.startswith("vllm-") and h.source == "gateway")
    assert gpu.carries == "tokenised" and "FSN1-DC14" in gpu.where and "mTLS" in gpu.transport
    archive = next(h for h in evidence.hops if h.target == "audit archive")
    assert "COMPLIANCE, 3650 days" in archive.transport and "Hetzner Online GmbH" in archive.where
    client = next(h for h in evidence.hops if h.source == "Magento")
    assert client.outside == () and "llm-gateway.eu-central.sovereign.example.de" in client.transport


def test_the_map_draws_only_what_the_plan_deploys(tmp_path: Path) -> None:
    """The DR plan deploys no gateway and no model server: the map draws neither, nor Magento; the
    prod plan draws them, each hop naming the resource it comes from; and every NetworkPolicy egress
    rule to a public address in the rendered manifests is a hop with its destination."""
    dr = model.collect(STACKS, "eu-north-dr")
    drawn = {h.source for h in dr.hops} | {h.target for h in dr.hops}
    assert not drawn & {"Magento", "gateway", "PHI filter", "audit archive"}
    assert not any(n.startswith("vllm-") for n in drawn)
    assert "Pulumi state" in drawn
    prod = model.collect(STACKS, "eu-central-prod")
    assert {"Magento", "gateway", "OpenBao", "audit archive"} <= {h.source for h in prod.hops} | {
        h.target for h in prod.hops
    }
    assert all(h.implemented_by for h in prod.hops)
    for evidence in (dr, prod):
        assert evidence.plan_egress, evidence.stack  # both render egress rules to public addresses
        for pods, policy, _cidrs, _ports in evidence.plan_egress:
            namespace = pods.split(" ", 1)[0]
            assert any(f"{namespace}/{policy}" in h.implemented_by or policy in h.implemented_by
                       for h in evidence.hops), (evidence.stack, policy)  # fmt: skip
    # and every destination the bastion masquerades to (read back from its cloud-init) is a declared one
    nat = [h for h in prod.hops if h.source == "private hosts (bastion NAT)"]
    assert nat and all(h.outside == () for h in nat)
    assert {
        c
        for cidrs in model.bastion_nat(planner.plan_stack(STACKS, "eu-central-prod"), {}).values()
        for c in cidrs
    } == {c.strip() for h in nat for c in h.transport.split(" to ", 1)[1].split(" only")[0].split(",")}
    # the GPU servers' own uplink (read back from the inventory the plan hands converge): declared only;
    # the DR plan declares no GPU server, so it draws none
    uplink = [h for h in prod.hops if h.source.startswith("GPU servers")]
    assert (
        uplink
        and all(h.outside == () for h in uplink)
        and "registry-mirror" in " ".join(h.target for h in uplink)
    )
    assert not any(h.source.startswith("GPU servers") for h in dr.hops)
    # a hop the plan lacks is not drawn: without storage.audit_archive there is no archive hop
    # (tests/evidence/test_claims.py::test_a_prod_stack_without_audit_archive_fails_the_archive_claims)


def test_every_control_points_at_code_tests_and_settings_that_exist() -> None:
    controls = model.load_controls()
    frameworks = {c.framework for c in controls}
    assert {
        "GDPR",
        "NIS2",
        "NIST AI RMF 1.0",
        "ISO/IEC 27001:2022",
        "PCI DSS v4.0",
        "EU AI Act",
    } <= frameworks
    refs = {(c.framework, c.ref) for c in controls}
    expected = [
        ("GDPR", r)
        for r in ("Art. 5(1)(c)", "Art. 25", "Art. 30", "Art. 32", "Art. 33 / 34", "Art. 35", "Art. 44")
    ]
    expected += [("NIS2", f"Art. 21(2)({p})") for p in "abcdefghi"] + [("NIS2", "Art. 23")]
    expected += [
        ("ISO/IEC 27001:2022", r)
        for r in (
            "A.5.23",
            "A.5.24",
            "A.5.25",
            "A.5.26",
            "A.5.27",
            "A.5.28",
            "A.8.9",
            "A.8.13",
            "A.8.15",
            "A.8.16",
            "A.8.24",
            "A.8.32",
        )
    ]
    expected += [
        ("NIST AI RMF 1.0", r)
        for r in (
            "GOVERN 1.4",
            "GOVERN 1.6",
            "GOVERN 6.1",
            "MAP 1.1",
            "MEASURE 2.1",
            "MEASURE 2.4",
            "MEASURE 2.7",
            "MEASURE 2.10",
            "MANAGE 2.4",
            "MANAGE 4.1",
            "MANAGE 4.3",
        )
    ]
    expected += [
        ("EU AI Act", r) for r in ("Art. 26(2) / Art. 14", "Art. 26(4)", "Art. 26(5)", "Art. 26(6) / Art. 12")
    ]
    pci = ("Scope (12.5.2)", "Req. 3 (3.2.1, 3.3.1, 3.5.1)", "Req. 4.2.1")
    expected += [("PCI DSS v4.0", r) for r in pci]
    assert [e for e in expected if e not in refs] == []
    # NIS2 Art. 21(2)(j) (MFA, secured communications) and AI Act Art. 50 are not implemented: not claimed
    assert not refs & {("NIS2", "Art. 21(2)(j)"), ("EU AI Act", "Art. 50(1)")}
    assert [problem for c in controls for problem in model.unresolved(c)] == []


def test_a_pointer_that_does_not_resolve_is_caught() -> None:
    control = model.load_controls()[0]
    spec = control.specs[0]
    control.specs = [
        replace(spec, tests=(*spec.tests, "tests/gateway/test_phi.py::test_that_was_never_written"),
                settings=(*spec.settings, "stack:storage.no_such_key", "gateway:audit.fsync")),
        replace(spec, id="second", check="no-such-check", tests=()),
    ]  # fmt: skip
    control.code = [*control.code, "gateway/nowhere.py"]
    assert model.unresolved(control) == [
        f"{control.id}.second: check no-such-check does not exist (infra/evidence/claims.py)",
        f"{control.id}.second: a claim needs at least one test that proves it",
        f"{control.id}: gateway/nowhere.py does not exist",
        f"{control.id}: tests/gateway/test_phi.py has no test test_that_was_never_written",
        f"{control.id}: setting stack:storage.no_such_key does not exist",
    ]


def test_every_cited_test_is_collected_by_pytest() -> None:
    """A test that exists in a file but is never collected (outside testpaths, a helper named like a
    test, skipped at import) proves nothing: every cited test must be collected by a real
    ``pytest --collect-only`` of the files it is in."""
    cited = sorted({t for c in model.load_controls() for t in c.tests})
    files = sorted({t.split("::", 1)[0] for t in cited})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    collected = {line.split("[", 1)[0] for line in result.stdout.splitlines() if "::" in line}
    assert [t for t in cited if t not in collected] == [], result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("stack", EXAMPLES)
def test_a_cited_setting_the_stack_does_not_set_never_backs_a_holding_claim(stack: str) -> None:
    """A pointer to a setting nobody chose proves nothing about the stack: in each example stack every
    ``stack:`` setting a claim cites is set, or that claim does not hold."""
    evidence = model.collect(STACKS, stack)
    sections = model.stack_config.read_stack_file(model.stack_config.stack_file(STACKS, stack))[0]
    ctx = claims.Context(stack, sections, None, None)
    for control in evidence.controls:
        for claim in control.claims:
            specs = [s for s in control.specs if f"{control.id}.{s.id}" == claim.id]
            unset = model.unset_settings(replace(control, specs=specs), ctx)
            if unset:
                assert claim.status != "holds", (claim.id, unset)


def non_compliant(stacks: Path, name: str = "eu-bad", cross: bool = False) -> Path:
    """The prod example with deliberate violations: of single fields (a US location, SSH open
    to the world, a US object storage and the SaaS backend), or, with *cross*, only of the
    checks across sections (valid fields: the US object storage, the SaaS backend, GOVERNANCE
    mode in prod)."""
    document = yaml.safe_load((STACKS / "Pulumi.eu-central-prod.yaml").read_text())
    config = document["config"]
    config["sovereign-llm:endpoints"]["object_storage"] = "https://s3.us-east-1.amazonaws.com"
    config["sovereign-llm:endpoints"]["pulumi_backend"] = "https://api.pulumi.com"
    if cross:
        config["sovereign-llm:storage"]["audit_lock_mode"] = "GOVERNANCE"
    else:
        config["sovereign-llm:bastion"]["location"] = "ash"  # Ashburn, US
        config["sovereign-llm:admin"]["cidrs"] = ["0.0.0.0/0"]
    stacks.mkdir(exist_ok=True)
    (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return stacks


@pytest.mark.parametrize(
    ("cross", "expected"),
    [
        (False, {"bastion.location": "GDPR-44", "admin.cidrs": "GDPR-32",
                 "endpoints.object_storage": "GDPR-44", "endpoints.pulumi_backend": "GDPR-44",
                 "storage.audit_archive": "GDPR-44",  # the archive bucket is on that object storage
                 "platform.memory_store.backup_bucket": "GDPR-44"}),  # and the memory store's backups
        (True, {"endpoints.object_storage": "GDPR-44", "endpoints.pulumi_backend": "GDPR-44",
                "storage.audit_archive": "GDPR-44", "storage.audit_lock_mode": "GDPR-32",
                "platform.memory_store.backup_bucket": "GDPR-44"}),
    ],
)  # fmt: skip
def test_a_non_compliant_stack_is_flagged_violation_by_violation(
    tmp_path: Path, cross: bool, expected: dict[str, str]
) -> None:
    evidence = model.collect(non_compliant(tmp_path / "stacks", cross=cross), "eu-bad")
    assert not evidence.compliant and evidence.config_refused
    flagged = {f.key: f for f in evidence.findings}
    assert set(flagged) == set(expected), sorted(flagged)
    for key, control in expected.items():
        assert control in flagged[key].controls, (key, flagged[key].controls)
    broken = {c.id for c in evidence.controls if not c.holds}
    assert {"GDPR-44", "GDPR-32", "ISO27001-A.5.23"} <= broken
    outside = {r.name for r in evidence.residency if not r.inside}
    assert {"endpoints.object_storage", "endpoints.pulumi_backend"} <= outside
    written = render.write(evidence, tmp_path / "out")
    markdown = written.markdown.read_text()
    assert f"**NOT COMPLIANT**: {len(evidence.findings)} finding(s)" in markdown
    assert all(f"`{key}`" in markdown for key in expected)
    assert "**BROKEN** by finding(s)" in markdown
    assert "NOT COMPLIANT" in written.html.read_text()


def test_a_policy_pack_violation_from_the_program_is_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program change that gives nodes a public IPv4 passes config validation but not the pack."""
    import pulumi_hcloud as hcloud  # the module the program's servers component declares with

    real = hcloud.ServerPublicNetArgs
    monkeypatch.setattr(
        hcloud, "ServerPublicNetArgs", lambda **_: real(ipv4_enabled=True, ipv6_enabled=False)
    )
    evidence = model.collect(STACKS, "eu-north-dr")
    assert not evidence.compliant and not evidence.config_refused
    rules = {(f.source, f.key) for f in evidence.findings}
    assert rules == {("policy", "private-nodes")}
    assert all("GDPR-32" in f.controls for f in evidence.findings)
    assert "GDPR-32" in {c.id for c in evidence.controls if not c.holds}


def test_cli_writes_signs_and_verifies_and_its_exit_code_says_the_verdict(bao: Bao, tmp_path: Path) -> None:
    """The completed stack: exit 0, every file written, signed by OpenBao transit; `evidence verify`
    passes, then names the one changed byte. The DR example (charts upstream, no mirror): exit 1."""
    stacks = write_stack(tmp_path / "stacks", deployable())
    out = tmp_path / "ok"
    env = {**os.environ, "VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.root}
    run = sovereign(
        "evidence", "--stack", "eu-test", "--stacks-dir", str(stacks), "--out", str(out), "--pdf", "--sign",
        "--results", str(recorded_run(tmp_path / "results")), timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "COMPLIANT: no finding and no failing claim" in run.stdout and "unverified" in run.stdout
    assert " 0 unverified" in run.stdout  # every tests claim decided by the recorded run
    assert (out / "evidence.pdf").read_bytes().startswith(b"%PDF")
    written = {p.name for p in out.iterdir()}
    report = {"evidence.md", "evidence.html", "dataflow.svg", "evidence.pdf", "oscal-assessment-results.json"}
    assert written == report | {"MANIFEST.json", "MANIFEST.sig", "evidence-signing-key.pem"}
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["provenance"]["commit"] and len(manifest["provenance"]["commit"]) == 40
    outside = [i for i in manifest["provenance"]["inputs"] if i["path"].endswith("Pulumi.eu-test.yaml")]
    assert outside and outside[0]["outside_repository"]  # a stack file from elsewhere never claims a revision
    verify = ["evidence", "verify", str(out)]
    ok = sovereign(*verify, timeout=120)
    assert ok.returncode == 0, ok.stderr
    wrong = "SHA256:" + "0" * 64  # not the signing key's: the auditor's published value would differ
    other = sovereign(*verify, "--expect-fingerprint", wrong, timeout=120)
    assert other.returncode == 1, other.stderr
    page = out / "evidence.md"
    data = bytearray(page.read_bytes())
    data[len(data) // 2] ^= 0x01
    page.write_bytes(bytes(data))
    changed = sovereign(*verify, timeout=120)
    assert changed.returncode == 1 and "evidence.md" in changed.stderr
    dr = cli.main(
        ["evidence", "--stack", "eu-north-dr", "--out", str(tmp_path / "dr"), "--results", str(tmp_path)]
    )
    assert dr == 1 and (tmp_path / "dr" / "evidence.html").is_file()  # the report is written all the same
    bad = sovereign(
        "evidence", "--stack", "eu-bad", "--stacks-dir", str(non_compliant(tmp_path / "bad-stacks")),
        "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert bad.returncode == 1 and "NOT COMPLIANT: " in bad.stderr
    assert "bastion.location" in bad.stderr and "(breaks GDPR-44" in bad.stderr
    missing = cli.main(["evidence", "--stack", "eu-none", "--stacks-dir", str(tmp_path)])
    assert missing == 2


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils is installed by `make`")
def test_the_pdf_is_a4_with_page_numbers_and_tables_that_fit(tmp_path: Path) -> None:
    written = render.write(model.collect(STACKS, "eu-central-prod"), tmp_path, pdf=True)
    assert written.pdf is not None
    info = subprocess.run(["pdfinfo", str(written.pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)[1])  # type: ignore[index]
    assert "(A4)" in info and pages > 2
    text = subprocess.run(["pdftotext", "-layout", str(written.pdf), "-"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert [n for n in range(1, pages + 1) if f"page {n} of {pages}" not in text] == []
    # nothing wider than the page: pdftotext's bounding boxes of every word lie inside the A4 width
    boxes = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", str(pages), str(written.pdf), "-"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    right = [float(x) for x in re.findall(r'xMax="([0-9.]+)"', boxes)]
    assert right and max(right) <= 595.3


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is installed by `make`")
def test_the_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    evidence = model.collect(STACKS, "eu-central-prod")
    written = render.write(evidence, tmp_path)
    url = written.html.resolve().as_uri()
    dom = subprocess.run(render.headless("--dump-dom", url), capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    # what the browser built from the page: the verdict, every section, the drawn map
    for text in ["NOT COMPLIANT", "1. Findings", "2. Data-flow map", "3. Residency", "6. Control mapping"]:
        assert text in dom.stdout
    assert dom.stdout.count('class="edge"') == len(evidence.hops)  # every hop, drawn
    shot = tmp_path / "evidence.png"
    command = render.headless("--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", url)
    taken = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0 and png_size(shot) == (1280, 2400)
    assert shot.stat().st_size > 100_000  # a rendered page with text and drawing, not a blank one


def test_the_snapshot_copy_and_the_alert_receivers_are_in_the_residency_table() -> None:
    """Every endpoint the platform sends data to is a residency row: the OpenBao snapshots' second
    location (the data keys) and Alertmanager's receivers (alerts) too."""
    rows = {r.name: r for r in model.collect(STACKS, "eu-central-prod").residency}
    copy = rows["storage.openbao_snapshot_copy.endpoint"]
    assert copy.inside and "hel1" in copy.detail
    sections = {
        "platform": {"alerting": {"receivers": [{"name": "oncall", "url": "https://a.example/hook"}]}}
    }
    assert ("platform.alerting.receivers.0.url", "https://a.example/hook") in model._endpoints(sections)


class _Plan:
    """Just what public_egress reads of a plan: the rendered Kubernetes objects."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        return self.objects


def _policy(name: str, egress: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "egress": egress}}  # fmt: skip


def test_an_egress_rule_without_destination_is_drawn_as_any_address() -> None:
    """NetworkPolicyEgressRule: "If this field [to] is empty or missing, this rule matches all
    destinations" (Kubernetes API reference): such a rule is on the map as 0.0.0.0/0 and ::/0."""
    plan = _Plan([_policy("open", [{"ports": [{"protocol": "TCP", "port": 443}]}]), _policy("dns-only", [
        {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}])])  # fmt: skip
    found = model.public_egress(plan)  # type: ignore[arg-type]
    assert found == [("ns (app=x)", "open", "0.0.0.0/0, ::/0", "TCP/443")]
