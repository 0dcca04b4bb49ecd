"""Helm charts from inside the boundary (infra/chart_sources.py, issue #19 item 7): every release is
installed from the stack's EU registry mirror as an OCI artefact by digest, never from a vendor's
repository at deploy time; a chart without a digest blocks the deploy."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import chart_sources, config, program
from infra import plan as planner
from infra.policy import completeness
from infra.policy.charts import CHARTS, chart_name
from tests.infra.support import fake_digest, plan_of, sections, with_digests, without_mirror
from tests.support import sovereign

MIRROR = "registry.sovereign.example.de"


@pytest.fixture(scope="module")
def digested() -> planner.Plan:
    return plan_of(with_digests(), stack="eu-central-prod")


def test_every_release_comes_from_the_mirror_by_digest(digested: planner.Plan) -> None:
    cfg = config.parse("eu-central-prod", with_digests(), "test")
    releases = digested.of_type(planner.HELM_RELEASE)
    assert {chart_name(r.inputs["chart"]) for r in releases} == {c.name for c in chart_sources.installed(cfg)}
    for release in releases:
        name = chart_name(release.inputs["chart"])
        key = f"{name}:{release.inputs['version']}"
        assert release.inputs["chart"] == f"oci://{MIRROR}/charts/{name}@{fake_digest(key)}"
        # no Helm repository: Helm fetches nothing from a vendor's repository
        assert not release.inputs.get("repositoryOpts")
        # the same chart name and version the completeness check's declarations are keyed by
        assert (name, release.inputs["version"]) in CHARTS
    assert not [f for f in digested.findings + digested.findings_as_blockers if f.kind == "chart-source"]
    assert not [b for b in digested.blockers if "platform.charts" in b]


def test_the_example_stacks_block_the_deploy_until_each_chart_has_its_digest() -> None:
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    needed = chart_sources.installed(cfg)
    named = [b for b in plan.blockers if b.startswith("platform.charts has no digest")]
    assert len(named) == len(needed) == 8  # + cloudnative-pg (platform.memory_store)
    keda = next(b for b in named if "keda:2.17.2" in b)
    assert f"helm push keda-2.17.2.tgz oci://{MIRROR}/charts" in keda
    assert "helm pull keda --repo https://kedacore.github.io/charts --version 2.17.2" in keda
    # reported once: the chart-source findings are the blockers, not extra findings
    assert not [f for f in plan.findings if f.kind == "chart-source"]
    assert len([f for f in plan.findings_as_blockers if f.kind == "chart-source"]) == 8
    # without a digest the release still names the mirror, never the vendor's repository
    for release in plan.of_type(planner.HELM_RELEASE):
        assert release.inputs["chart"].startswith(f"oci://{MIRROR}/charts/")
        assert not release.inputs.get("repositoryOpts")


def test_one_missing_digest_is_one_blocker() -> None:
    data = with_digests()
    del data["platform"]["charts"]["openbao:0.19.1"]
    plan = plan_of(data, stack="eu-central-prod")
    assert [b for b in plan.blockers if "platform.charts" in b] == [
        b for b in plan.blockers if b.startswith("platform.charts has no digest for openbao:0.19.1")
    ]
    assert len([b for b in plan.blockers if "platform.charts" in b]) == 1
    assert [f.chart for f in plan.findings_as_blockers if f.kind == "chart-source"] == [
        f"oci://{MIRROR}/charts/openbao"
    ]


def test_without_a_mirror_the_charts_block_the_deploy() -> None:
    cfg = config.parse("eu-north-dr", without_mirror(), "test")
    assert cfg.endpoints.registry_mirror is None
    assert any(
        b.startswith("endpoints.registry_mirror is not set: every Helm chart")
        for b in program.deploy_blockers(cfg)
    )
    # the vendor's repository is what the release would use: named, so the blocker stands for it
    keda = chart_sources.find(cfg, "keda")
    assert keda.reference(cfg) == ("keda", "https://kedacore.github.io/charts")


def _release(chart: str, repo: str | None = None) -> completeness.Resource:
    inputs: dict[str, object] = {"name": "keda", "chart": chart, "version": "2.17.2", "namespace": "keda"}
    if repo:
        inputs["repositoryOpts"] = {"repo": repo}
    return completeness.Resource("urn:keda", planner.HELM_RELEASE, "keda", True, inputs)


@pytest.mark.parametrize(
    ("chart", "repo", "missing"),
    [
        # today's defect, reintroduced: the vendor's repository at deploy time
        ("keda", "https://kedacore.github.io/charts", "a chart from inside the boundary"),
        # an OCI chart by version only: the tag can be moved
        (f"oci://{MIRROR}/charts/keda", None, "a digest"),
        # by digest, from another registry
        ("oci://ghcr.io/kedacore/charts/keda@sha256:" + "a" * 64, None, "the EU mirror"),
    ],
)
def test_a_chart_from_outside_the_mirror_or_without_a_digest_is_a_finding(
    chart: str, repo: str | None, missing: str
) -> None:
    found = [
        f
        for f in completeness.check([_release(chart, repo)], registry_mirror=MIRROR)
        if f.kind == "chart-source"
    ]
    assert len(found) == 1
    assert found[0].missing.startswith(missing)
    assert "chart keda 2.17.2" in found[0].resource


def test_the_mirror_by_digest_is_no_finding() -> None:
    chart = f"oci://{MIRROR}/charts/keda@sha256:" + "a" * 64
    found = completeness.check([_release(chart)], registry_mirror=f"https://{MIRROR}")
    assert not [f for f in found if f.kind == "chart-source"]


@pytest.mark.parametrize(
    ("key", "digest"),
    [
        ("keda", "sha256:" + "0" * 64),  # no version
        ("keda:2.17.2", "sha256:abc"),
        ("keda:2.17.2", "sha256:" + "A" * 64),
        ("Keda:2.17.2", "sha256:" + "0" * 64),
    ],
)
def test_a_wrong_chart_key_or_digest_is_refused_naming_the_field(key: str, digest: str) -> None:
    data = sections("eu-central-prod")
    data["platform"]["charts"] = {key: digest}
    with pytest.raises(config.StackConfigError) as caught:
        config.parse("eu-central-prod", data, "test")
    problems = [p for p in map(str, caught.value.problems) if "sovereign-llm:platform.charts" in p]
    assert problems
    # the value is never echoed
    assert not any(digest in p for p in map(str, caught.value.problems))


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("keda", "keda"),
        ("nvidia/gpu-operator", "gpu-operator"),
        (f"oci://{MIRROR}/charts/kube-prometheus-stack", "kube-prometheus-stack"),
        (f"oci://{MIRROR}/charts/openbao:0.19.1", "openbao"),
        (f"oci://{MIRROR}:5000/charts/hcloud-csi@sha256:" + "b" * 64, "hcloud-csi"),
    ],
)
def test_the_chart_name_is_read_from_every_reference_form(reference: str, name: str) -> None:
    assert chart_name(reference) == name


def test_charts_list_prints_each_chart_its_mirror_reference_and_the_commands() -> None:
    out = sovereign("charts", "list", "--stack", "eu-central-prod", check=True)
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    for chart in chart_sources.installed(cfg):
        assert (
            f"{chart.key} from {chart.upstream} -> oci://{MIRROR}/charts/{chart.name} (no digest)"
            in out.stdout
        )
        assert chart.pull_and_push(cfg) in out.stdout
    assert "8 chart(s) without a digest" in out.stderr


def test_charts_check_names_the_pull_for_each_chart_it_cannot_find(tmp_path: Path) -> None:
    """`sovereign charts check` renders the charts pulled into --chart-dir (chart_render.py); with
    none there, each release is a finding with the helm pull from the mirror, and the run fails."""
    check = ["charts", "check", "--stack", "eu-central-prod", "--chart-dir"]
    out = sovereign(*check, str(tmp_path))
    assert out.returncode == 1
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    for chart in chart_sources.installed(cfg):
        assert f"helm pull oci://{MIRROR}/charts/{chart.name} --version {chart.version}" in out.stderr
    assert "8 finding(s)" in out.stderr
    missing = sovereign(*check, str(tmp_path / "none"))
    assert missing.returncode == 2 and "--chart-dir" in missing.stderr


def test_the_installed_pulumi_kubernetes_resolves_charts_by_digest() -> None:
    """Releases by OCI digest need Helm >= v3.17 inside pulumi-kubernetes: 4.23 and later (4.20-4.22
    embed Helm v3.15.4, whose getOciURI appends ":<version>" to the digest)."""
    from importlib.metadata import version

    major, minor = (int(x) for x in version("pulumi-kubernetes").split(".")[:2])
    assert (major, minor) >= (4, 30)
