"""`sovereign evidence`: the report renders for every example stack from the program under
mocks; every control points at code, tests and settings that exist; a non-compliant stack
yields a report that flags each violation; the HTML renders in headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import cli
from infra.evidence import model, render
from tests.infra.support import REPO, STACKS

EXAMPLES = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS.glob("Pulumi.*.yaml"))
SECTIONS = ["## 1. Findings", "## 2. Data-flow map", "## 3. Residency", "## 4. Use cases",
            "## 5. Policy pack", "## 6. Control mapping", "## 7. Runbooks"]  # fmt: skip


@pytest.mark.parametrize("stack", EXAMPLES)
def test_the_report_renders_for_every_example_stack(stack: str, tmp_path: Path) -> None:
    evidence = model.collect(STACKS, stack)
    written = render.write(evidence, tmp_path)
    markdown = written.markdown.read_text()
    assert evidence.compliant and "**COMPLIANT**" in markdown
    assert [s for s in SECTIONS if s not in markdown] == []
    # every hop of the data flow, with what it carries, in the table and in the drawing
    assert {h.carries for h in evidence.hops} == {"in clear", "tokenised", "metadata", "none"}
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
    assert "<svg" in html and "COMPLIANT" in html and "NOT COMPLIANT" not in html


def test_the_prod_stack_serves_every_use_case_and_draws_its_locations(tmp_path: Path) -> None:
    evidence = model.collect(STACKS, "eu-central-prod")
    assert all(u.served for u in evidence.use_cases)  # the policies' model alias `chat` is served
    gpu = next(h for h in evidence.hops if h.target == "vLLM" and h.source == "gateway")
    assert gpu.carries == "tokenised" and "FSN1-DC14" in gpu.where
    archive = next(h for h in evidence.hops if h.target == "audit archive")
    assert "COMPLIANCE, 3650 days" in archive.transport and "Hetzner Online GmbH" in archive.where


def test_every_control_points_at_code_tests_and_settings_that_exist() -> None:
    controls = model.load_controls()
    frameworks = {c.framework for c in controls}
    assert {"GDPR", "NIS2", "NIST AI RMF", "ISO/IEC 27001:2022", "PCI DSS v4.0"} <= frameworks
    refs = {(c.framework, c.ref) for c in controls}
    for expected in [("GDPR", "Art. 5(1)(c)"), ("GDPR", "Art. 25"), ("GDPR", "Art. 32"), ("GDPR", "Art. 35"),
                     ("GDPR", "Art. 44"), ("NIS2", "Art. 21"), ("NIS2", "Art. 23"), ("NIST AI RMF", "GOVERN"),
                     ("NIST AI RMF", "MAP"), ("NIST AI RMF", "MEASURE"), ("NIST AI RMF", "MANAGE"),
                     ("ISO/IEC 27001:2022", "A.5.23"), ("ISO/IEC 27001:2022", "A.8.24"),
                     ("ISO/IEC 27001:2022", "A.8.32")]:  # fmt: skip
        assert expected in refs
    assert [problem for c in controls for problem in model.unresolved(c)] == []


def test_a_pointer_that_does_not_resolve_is_caught() -> None:
    control = model.load_controls()[0]
    control.tests = [*control.tests, "tests/gateway/test_phi.py::test_that_was_never_written"]
    control.code = [*control.code, "gateway/nowhere.py"]
    control.config = [*control.config, "stack:storage.no_such_key", "gateway:audit.fsync"]
    assert model.unresolved(control) == [
        f"{control.id}: gateway/nowhere.py does not exist",
        f"{control.id}: tests/gateway/test_phi.py has no test test_that_was_never_written",
        f"{control.id}: setting stack:storage.no_such_key does not exist",
    ]


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
                 "storage.audit_archive": "GDPR-44"}),  # the archive bucket is on that object storage
        (True, {"endpoints.object_storage": "GDPR-44", "endpoints.pulumi_backend": "GDPR-44",
                "storage.audit_archive": "GDPR-44", "storage.audit_lock_mode": "GDPR-32"}),
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


def test_cli_writes_the_report_and_its_exit_code_says_the_verdict(tmp_path: Path) -> None:
    out = tmp_path / "ok"
    assert cli.main(["evidence", "--stack", "eu-north-dr", "--out", str(out), "--pdf"]) == 0
    assert (out / "evidence.pdf").read_bytes().startswith(b"%PDF")
    assert {p.name for p in out.iterdir()} == {"evidence.md", "evidence.html", "dataflow.svg", "evidence.pdf"}
    bad = subprocess.run(
        [sys.executable, "-m", "infra.cli", "evidence", "--stack", "eu-bad", "--stacks-dir",
         str(non_compliant(tmp_path / "stacks")), "--out", str(tmp_path / "bad")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "NOT COMPLIANT: " in bad.stderr
    assert "bastion.location" in bad.stderr and "(breaks GDPR-44" in bad.stderr
    assert (tmp_path / "bad" / "evidence.html").is_file()  # the report is written all the same
    missing = cli.main(["evidence", "--stack", "eu-none", "--stacks-dir", str(tmp_path)])
    assert missing == 2


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is installed by `make`")
def test_the_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    written = render.write(model.collect(STACKS, "eu-central-prod"), tmp_path)
    url = written.html.resolve().as_uri()
    dom = subprocess.run(render.headless("--dump-dom", url), capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    # what the browser built from the page: the verdict, every section, the drawn map
    for text in ["COMPLIANT", "1. Findings", "2. Data-flow map", "3. Residency", "6. Control mapping"]:
        assert text in dom.stdout
    assert dom.stdout.count('class="edge"') == 9  # the nine hops, drawn
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
