"""Images by digest from the stack's EU registry mirror (infra/images.py, issue #19)."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config, images, program
from infra import plan as planner
from infra.policy import charts, completeness
from infra.policy.charts import chart_name
from tests.infra.support import fake_digest, plan_of, sections, with_digests, without_mirror

MIRROR = "registry.sovereign.example.de"


@pytest.fixture(scope="module")
def digested() -> planner.Plan:
    return plan_of(with_digests(), stack="eu-central-prod")


def untagged(reference: str) -> tuple[str, str]:
    ref = images.parse(reference)
    return (f"{ref.registry}/{ref.path}", str(ref.digest))


def pod_images(plan: planner.Plan) -> list[str]:
    found = []
    for r in plan.custom():
        spec = completeness._pod_spec(completeness.Resource(r.urn, r.type, r.name, True, r.inputs))
        if spec is not None:
            found += [str(c["image"]) for c in completeness._containers(spec)]
    return found


def test_with_digests_every_pod_and_chart_image_is_the_mirror_by_digest(digested: planner.Plan) -> None:
    cfg = config.parse("eu-central-prod", with_digests(), "test")
    expected = {images.reference(cfg, i.upstream) for i in images.required(cfg)}
    rendered = pod_images(digested)
    assert rendered and set(rendered) <= expected
    for image in rendered:
        assert completeness.image_problem(image, MIRROR) is None, image
    # the charts' images as infra/policy/charts.py computes them from the release's values
    declared = 0
    for release in digested.of_type(planner.HELM_RELEASE):
        rule = charts.CHARTS.get((chart_name(release.inputs["chart"]), release.inputs["version"]))
        if chart_name(release.inputs["chart"]) not in images.CHART_IMAGE_VALUES or rule is None:
            continue
        for image in rule(release.inputs["values"], release.inputs["name"]).images:
            declared += 1
            assert image.ref.startswith(f"{MIRROR}/"), image
            assert completeness.image_problem(image.ref, MIRROR) is None, image
            # the NVIDIA operands' digest form drops the tag (ImagePath); the digest decides
            assert untagged(image.ref) in {untagged(e) for e in expected}, image
    # openbao 1, keda 3, gpu-operator 6 (operator, validator, device plugin, gfd, dcgm exporter, nfd),
    # hcloud CCM 1, hcloud-csi 8 (5 controller, 3 node containers), local-path-provisioner 2
    # (provisioner, helper pod), kube-prometheus-stack 7 (operator, config reloader, Prometheus,
    # Alertmanager, kube-state-metrics, Grafana, Grafana's k8s-sidecar), cloudnative-pg 1 (the operator)
    assert declared == 29
    assert not [f for f in digested.findings if f.kind == "image" and "chart openbao" in f.resource]
    assert not [b for b in digested.blockers if "platform.images" in b or "registry_mirror" in b]


def _release_values(plan: planner.Plan, chart: str) -> dict[str, Any]:
    (release,) = [r for r in plan.of_type(planner.HELM_RELEASE) if chart_name(r.inputs["chart"]) == chart]
    return dict(release.inputs["values"])


def test_the_cluster_services_and_monitoring_charts_build_the_mirror_reference_by_digest(
    digested: planner.Plan,
) -> None:
    """Each chart's values, put together as its template does at the pinned tag, give the
    mirror reference by digest (the formulas are the templates', not infra/images.py's)."""
    cfg = config.parse("eu-central-prod", with_digests(), "test")

    def want(upstream: str) -> str:
        return images.reference(cfg, upstream)

    # hcloud-cloud-controller-manager 1.35.0 templates/deployment.yaml: repository:tag
    image = _release_values(digested, "hcloud-cloud-controller-manager")["image"]
    assert f"{image['repository']}:{image['tag']}" == want(
        "docker.io/hetznercloud/hcloud-cloud-controller-manager:v1.35.0"
    )
    # hcloud-csi 2.22.1 templates/_common_images.tpl: name:tag, per container
    csi = _release_values(digested, "hcloud-csi")
    for side, key, upstream in (
        ("controller", "csiAttacher", "registry.k8s.io/sig-storage/csi-attacher:v4.11.0"),
        ("controller", "hcloudCSIDriver", "docker.io/hetznercloud/hcloud-csi-driver:v2.22.1"),
        ("node", "csiNodeDriverRegistrar", "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.16.0"),
        ("node", "livenessProbe", "registry.k8s.io/sig-storage/livenessprobe:v2.18.0"),
    ):
        image = csi[side]["image"][key]
        assert f"{image['name']}:{image['tag']}" == want(upstream)
    # the chart's other values under image (pullPolicy) are Helm's defaults, not replaced
    assert set(csi["controller"]["image"]["csiAttacher"]) == {"name", "tag"}
    # local-path-provisioner 0.0.37 templates/deployment.yaml: repository:tag, no registryUrl
    local = _release_values(digested, "local-path-provisioner")
    assert "privateRegistry" not in local
    for key, upstream in (
        ("image", "docker.io/rancher/local-path-provisioner:v0.0.37"),
        ("helperImage", "docker.io/library/busybox:1.37.0"),
    ):
        assert f"{local[key]['repository']}:{local[key]['tag']}" == want(upstream)
    # kube-prometheus-stack 88.5.3: registry/repository:tag@sha256:sha, sha without its prefix
    kps = _release_values(digested, "kube-prometheus-stack")
    for image, upstream in (
        (kps["prometheusOperator"]["image"], "quay.io/prometheus-operator/prometheus-operator:v0.93.1"),
        (
            kps["prometheusOperator"]["prometheusConfigReloader"]["image"],
            "quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1",
        ),
        (kps["prometheus"]["prometheusSpec"]["image"], "quay.io/prometheus/prometheus:v3.14.0-distroless"),
    ):
        assert not image["sha"].startswith("sha256:")
        built = f"{image['registry']}/{image['repository']}:{image['tag']}@sha256:{image['sha']}"
        assert built == want(upstream)
    # Prometheus' version (the CR's version field defaults to the tag) stays the release's
    assert kps["prometheus"]["prometheusSpec"]["image"]["tag"] == "v3.14.0-distroless"
    # its Alertmanager (templates/alertmanager/alertmanager.yaml) and its grafana sub-chart 12.11.1
    # (templates/_pod.tpl, Grafana and the k8s-sidecar containers): the same sha form
    for image, upstream in (
        (kps["alertmanager"]["alertmanagerSpec"]["image"], "quay.io/prometheus/alertmanager:v0.34.0"),
        (kps["grafana"]["image"], "docker.io/grafana/grafana:13.2.0"),
        (kps["grafana"]["sidecar"]["image"], "quay.io/kiwigrid/k8s-sidecar:2.10.1"),
    ):
        built = f"{image['registry']}/{image['repository']}:{image['tag']}@sha256:{image['sha']}"
        assert built == want(upstream)
    assert kps["alertmanager"]["alertmanagerSpec"]["image"]["tag"] == "v0.34.0"  # the CR's version
    # the kube-state-metrics sub-chart 8.4.0 (templates/_helpers.tpl kube-state-metrics.image):
    # registry/repository:tag, the digest on the tag, image.sha left empty
    image = kps["kube-state-metrics"]["image"]
    assert "sha" not in image
    assert f"{image['registry']}/{image['repository']}:{image['tag']}" == want(
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"
    )


def test_the_upgrade_plans_and_kubectl_use_the_mirror_by_digest(digested: planner.Plan) -> None:
    plans = [r.inputs for r in digested.custom() if r.inputs.get("kind") == "Plan"]
    want = f"{MIRROR}/docker.io/rancher/rke2-upgrade:v1.33.5-rke2r1@" + fake_digest(
        "docker.io/rancher/rke2-upgrade:v1.33.5-rke2r1"
    )
    assert plans and all(p["spec"]["upgrade"]["image"] == want for p in plans)
    env = next(
        r.inputs
        for r in digested.custom()
        if r.inputs.get("metadata", {}).get("name") == "default-controller-env"
    )
    kubectl = env["data"]["SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE"]
    assert kubectl == f"{MIRROR}/docker.io/rancher/kubectl:v1.30.3@" + fake_digest(
        "docker.io/rancher/kubectl:v1.30.3"
    )


def test_the_gateway_image_named_after_the_mirror_is_pulled_from_it_as_is() -> None:
    cfg = config.parse("eu-central-prod", with_digests(), "test")
    gateway = cfg.platform.gateway.image
    assert images.reference(cfg, gateway) == f"{gateway}@{fake_digest(gateway)}"


def test_a_missing_digest_blocks_the_deploy_naming_the_image_and_the_command() -> None:
    data = with_digests()
    del data["platform"]["images"]["ghcr.io/kedacore/keda:2.17.2"]
    cfg = config.parse("eu-central-prod", data, "test")
    found = [b for b in images.blockers(cfg)]
    assert len(found) == 1
    assert "ghcr.io/kedacore/keda:2.17.2" in found[0]
    assert f"crane digest {MIRROR}/ghcr.io/kedacore/keda:2.17.2" in found[0]
    plan = plan_of(data, stack="eu-central-prod")
    assert any("ghcr.io/kedacore/keda:2.17.2" in b for b in plan.blockers)
    # the same problem is not reported twice: the image finding is folded into the blocker
    assert not [f for f in plan.findings if f.kind == "image" and "kedacore/keda:" in (f.image or "")]
    assert [f for f in plan.findings_as_blockers if "kedacore/keda:" in (f.image or "")]


def test_the_example_stacks_report_image_problems_once_as_blockers() -> None:
    for stack in ("eu-central-prod", "eu-north-dr"):
        plan = plan_of(sections(stack), stack=stack)
        cfg = config.parse(stack, sections(stack), "test")
        ours = {i.upstream for i in images.required(cfg)}
        repeated = [
            f for f in plan.findings if f.kind == "image" and f.image and images.normalize(f.image) in ours
        ]
        assert not repeated, repeated
        assert plan.findings_as_blockers
        assert len([b for b in plan.blockers if b.startswith("platform.images has no digest")]) == len(ours)


def test_without_a_mirror_the_deploy_is_blocked() -> None:
    cfg = config.parse("eu-north-dr", without_mirror(), "test")
    assert any(b.startswith("endpoints.registry_mirror is not set") for b in images.blockers(cfg))


def test_deploy_blockers_include_the_images() -> None:
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    assert set(images.blockers(cfg)) <= set(program.deploy_blockers(cfg))


@pytest.mark.parametrize(
    ("digest", "key"),
    [
        ("sha256:abc", "docker.io/vllm/vllm-openai:v0.11.0"),
        ("sha256:" + "A" * 64, "docker.io/vllm/vllm-openai:v0.11.0"),
        ("md5:" + "0" * 32, "docker.io/vllm/vllm-openai:v0.11.0"),
        ("sha256:" + "0" * 64, "vllm/vllm-openai"),  # no tag
    ],
)
def test_a_wrong_digest_or_key_is_refused_naming_the_field(digest: str, key: str) -> None:
    data = sections("eu-central-prod")
    data["platform"]["images"] = {key: digest}
    with pytest.raises(config.StackConfigError) as caught:
        config.parse("eu-central-prod", data, "test")
    assert any("sovereign-llm:platform.images" in p and key in p for p in map(str, caught.value.problems))


def test_keys_are_normalised_to_the_upstream_registry() -> None:
    data = sections("eu-central-prod")
    data["platform"]["images"] = {"vllm/vllm-openai:v0.11.0": "sha256:" + "0" * 64}
    cfg = config.parse("eu-central-prod", data, "test")
    assert cfg.platform.images == {"docker.io/vllm/vllm-openai:v0.11.0": "sha256:" + "0" * 64}
    assert images.reference(cfg, "vllm/vllm-openai:v0.11.0") == (
        f"{MIRROR}/docker.io/vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64
    )


def test_the_upstream_images_are_the_charts_declared_defaults() -> None:
    """images.required names each chart's images as infra/policy/charts.py declares them."""
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    needed = {i.upstream for i in images.required(cfg)}
    for image in charts.keda(None, "keda").images + charts.openbao(None, "openbao").images:
        assert images.normalize(image.ref) in needed
