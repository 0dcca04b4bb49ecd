"""The completeness check (issue #19): each of the defects a review found, reintroduced in a small
program under the plan's mocks, is reported with the resource and the missing piece; a complete
program has no finding. Dependencies are the ones Pulumi records (RecordingMonitor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from infra import plan
from infra.policy import completeness
from infra.policy.completeness import Finding, OperatorInput
from tests.infra.support import plan_of, sections

MIRROR = "https://registry.eu.example"
DIGEST = "@sha256:" + "ab" * 32
IMAGE = f"registry.eu.example/sovereign-llm/gateway{DIGEST}"


def oci(chart: str) -> str:
    """A chart as the program names it: the mirror's OCI reference by digest (chart_sources.py)."""
    return f"oci://registry.eu.example/charts/{chart}{DIGEST}"


NS = "app"


class Parts:
    """A complete small program; each test breaks one piece of it."""

    def __init__(self) -> None:
        self.namespace: k8s.core.v1.Namespace | None = None
        self.crd: k8s.apiextensions.v1.CustomResourceDefinition | None = None


def complete(
    *,
    pvc_class: str | None = "fast",
    secret: bool = True,
    image: str = IMAGE,
    default_deny: bool = True,
    crd: bool = True,
    monitor_depends_on_crd: bool = True,
    extra: Callable[[Parts], None] | None = None,
) -> Callable[[], None]:
    def program() -> None:
        parts = Parts()
        parts.namespace = k8s.core.v1.Namespace(
            "ns", metadata={"name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
        )
        after_ns = pulumi.ResourceOptions(depends_on=[parts.namespace])
        if default_deny:
            k8s.networking.v1.NetworkPolicy(
                "deny",
                metadata={"name": "default-deny", "namespace": NS},
                spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                opts=after_ns,
            )
        k8s.storage.v1.StorageClass(
            "fast",
            metadata={"name": "fast", "annotations": {completeness.DEFAULT_CLASS: "true"}},
            provisioner="csi.hetzner.cloud",
        )
        k8s.core.v1.PersistentVolumeClaim(
            "claim",
            metadata={"name": "data", "namespace": NS},
            spec={
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                **({"storageClassName": pvc_class} if pvc_class is not None else {}),
            },
            opts=after_ns,
        )
        if secret:
            k8s.core.v1.Secret(
                "keys", metadata={"name": "gateway-client-keys", "namespace": NS}, opts=after_ns
            )
        k8s.core.v1.ConfigMap("config", metadata={"name": "gateway-config", "namespace": NS}, opts=after_ns)
        k8s.core.v1.ServiceAccount("sa", metadata={"name": "gateway", "namespace": NS}, opts=after_ns)
        k8s.apps.v1.Deployment(
            "gateway",
            metadata={"name": "gateway", "namespace": NS},
            spec={
                "selector": {"matchLabels": {"app": "gateway"}},
                "template": {
                    "metadata": {"labels": {"app": "gateway"}},
                    "spec": {
                        "serviceAccountName": "gateway",
                        "containers": [{"name": "gateway", "image": image}],
                        "volumes": [
                            {"name": "keys", "secret": {"secretName": "gateway-client-keys"}},
                            {"name": "config", "configMap": {"name": "gateway-config"}},
                            {"name": "ca", "configMap": {"name": "kube-root-ca.crt"}},  # built in
                        ],
                    },
                },
            },
            opts=after_ns,
        )
        if crd:
            parts.crd = k8s.apiextensions.v1.CustomResourceDefinition(
                "servicemonitors",
                metadata={"name": "servicemonitors.monitoring.coreos.com"},
                spec={
                    "group": "monitoring.coreos.com",
                    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True}],
                },
            )
        deps: list[pulumi.Resource] = [parts.namespace]
        if parts.crd is not None and monitor_depends_on_crd:
            deps.append(parts.crd)
        k8s.apiextensions.CustomResource(
            "monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata={"name": "gateway", "namespace": NS},
            spec={"selector": {"matchLabels": {"app": "gateway"}}, "endpoints": [{"port": "http"}]},
            opts=pulumi.ResourceOptions(depends_on=deps),
        )
        if extra is not None:
            extra(parts)

    return program


def findings(program: Callable[[], None], **kwargs: Any) -> list[Finding]:
    resources = plan.completeness_view(plan.record(program))
    return completeness.check(resources, registry_mirror=MIRROR, **kwargs)


def only(found: list[Finding]) -> Finding:
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_a_complete_program_has_no_finding() -> None:
    assert findings(complete()) == []


def test_dependencies_are_recorded_with_components_expanded() -> None:
    class Crds(pulumi.ComponentResource):
        def __init__(self) -> None:
            super().__init__("test:x:Crds", "crds")
            self.crd = k8s.apiextensions.v1.CustomResourceDefinition(
                "inner", metadata={"name": "x.example.org"}, spec={}, opts=pulumi.ResourceOptions(parent=self)
            )
            self.register_outputs({})

    def program() -> None:
        crds = Crds()
        k8s.core.v1.ConfigMap("after", metadata={"name": "a"}, opts=pulumi.ResourceOptions(depends_on=[crds]))

    recorded = {r.name: r for r in plan.record(program)}
    assert recorded["after"].dependencies == [recorded["inner"].urn]
    assert recorded["inner"].parent == recorded["crds"].urn


# --- 1. prometheus-operator CRDs used and never installed ---------------------------------------


def test_a_servicemonitor_without_its_crd_is_reported() -> None:
    finding = only(findings(complete(crd=False)))
    assert finding.kind == "crd"
    assert finding.resource == "ServiceMonitor app/gateway [monitor]"
    assert "CustomResourceDefinition of ServiceMonitor (monitoring.coreos.com)" in finding.missing
    assert "nothing in the program installs it" in finding.missing


def test_a_crd_installed_but_not_depended_on_is_not_earlier() -> None:
    finding = only(findings(complete(monitor_depends_on_crd=False)))
    assert finding.kind == "crd"
    assert "CustomResourceDefinition servicemonitors.monitoring.coreos.com" in finding.missing
    assert "not among its dependencies" in finding.missing


def test_a_crd_reached_through_a_dependency_chain_counts() -> None:
    """The ServiceMonitor depends on a ConfigMap that depends on the CRD: created after it."""

    def extra(parts: Parts) -> None:
        assert parts.crd is not None
        middle = k8s.core.v1.ConfigMap(
            "middle",
            metadata={"name": "m", "namespace": NS},
            opts=pulumi.ResourceOptions(depends_on=[parts.crd]),
        )
        k8s.apiextensions.CustomResource(
            "late-monitor", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
            metadata={"name": "late", "namespace": NS}, spec={},
            opts=pulumi.ResourceOptions(depends_on=[middle]),
        )  # fmt: skip

    assert findings(complete(extra=extra)) == []


KEDA_DIGESTS = {
    "global": {"image": {"registry": "registry.eu.example"}},
    "image": {k: {"tag": f"2.17.2{DIGEST}"} for k in ("keda", "metricsApiServer", "webhooks")},
}


def keda(values: dict[str, Any], *, after_crd: bool = False) -> Callable[[Parts], None]:
    def extra(parts: Parts) -> None:
        deps: list[pulumi.Resource] = [parts.crd] if after_crd and parts.crd is not None else []
        k8s.helm.v3.Release(
            "keda", name="keda", chart=oci("keda"), version="2.17.2", namespace=NS,
            values={**KEDA_DIGESTS, **values},
            opts=pulumi.ResourceOptions(depends_on=deps),
        )  # fmt: skip

    return extra


def test_keda_with_its_servicemonitor_and_no_crd_is_reported() -> None:
    values = {"prometheus": {"operator": {"enabled": True, "serviceMonitor": {"enabled": True}}}}
    finding = only(findings(complete(extra=keda(values))))
    assert finding.kind == "crd"
    assert finding.resource == "Helm release keda (chart keda 2.17.2) [keda]"
    assert "ServiceMonitor (monitoring.coreos.com)" in finding.missing
    assert "keda/templates/manager/servicemonitor.yaml" in finding.fix
    # the same release after the CRD: complete; without the value: renders no ServiceMonitor
    assert findings(complete(extra=keda(values, after_crd=True))) == []
    assert findings(complete(extra=keda({}))) == []


def test_keda_renders_no_servicemonitor_without_the_operator_switch() -> None:
    values = {"prometheus": {"operator": {"enabled": False, "serviceMonitor": {"enabled": True}}}}
    assert findings(complete(extra=keda(values))) == []


def test_a_scaledobject_needs_the_keda_release_before_it() -> None:
    def extra(parts: Parts) -> None:
        keda({})(parts)
        k8s.apiextensions.CustomResource(
            "scaler", api_version="keda.sh/v1alpha1", kind="ScaledObject",
            metadata={"name": "vllm", "namespace": NS}, spec={},
        )  # fmt: skip

    finding = only(findings(complete(extra=extra)))
    assert finding.resource == "ScaledObject app/vllm [scaler]"
    assert "Helm release keda (chart keda 2.17.2) [keda] provides it but is not among its dependencies" in (
        finding.missing
    )


def test_the_gpu_operators_dcgm_servicemonitor_needs_the_crd() -> None:
    def extra(parts: Parts) -> None:
        k8s.helm.v3.Release(
            "gpu", name="gpu-operator", chart=oci("gpu-operator"), version="v25.3.4", namespace=NS,
            values={"dcgmExporter": {"serviceMonitor": {"enabled": True}}},
        )  # fmt: skip

    found = [f for f in findings(complete(extra=extra)) if f.kind == "crd"]
    assert [f.resource for f in found] == ["Helm release gpu-operator (chart gpu-operator v25.3.4) [gpu]"]
    assert "controllers/object_controls.go" in found[0].fix


def test_an_undeclared_chart_is_reported() -> None:
    def extra(parts: Parts) -> None:
        k8s.helm.v3.Release(
            "other", name="x", chart=oci("kube-prometheus-stack"), version="0.0.1", namespace=NS
        )

    finding = only(findings(complete(extra=extra)))
    assert finding.kind == "chart"
    assert "kube-prometheus-stack 0.0.1" in finding.missing


# --- 2. no storage provisioner ------------------------------------------------------------------


def test_a_pvc_naming_a_class_nobody_provides_is_reported() -> None:
    finding = only(findings(complete(pvc_class="longhorn")))
    assert finding.kind == "storage-class"
    assert finding.resource == "PersistentVolumeClaim app/data [claim]"
    assert "StorageClass 'longhorn'" in finding.missing
    assert "fast" in finding.fix  # what the program does provide


def test_openbaos_claims_need_a_default_class() -> None:
    """The chart's volumeClaimTemplates name no class unless its values do; RKE2 has no default."""

    def program() -> None:
        k8s.helm.v3.Release(
            "bao", name="openbao", chart=oci("openbao"), version="0.19.1", namespace="openbao",
            values={"server": {"ha": {"enabled": True, "raft": {"enabled": True}}}},
        )  # fmt: skip

    found = [f for f in findings(program) if f.kind == "storage-class"]
    assert [f.resource for f in found] == [
        "Helm release openbao (chart openbao 0.19.1) [bao] volumeClaimTemplate data "
        "(https://github.com/openbao/openbao-helm/blob/openbao-0.19.1/charts/openbao/templates/_helpers.tpl "
        "(openbao.volumeclaims))"
    ]
    assert "a default StorageClass" in found[0].missing


# --- 5. Secrets that nothing creates -----------------------------------------------------------


def test_a_pod_referencing_a_secret_nobody_creates_is_reported() -> None:
    finding = only(findings(complete(secret=False)))
    assert finding.kind == "reference"
    assert finding.resource == "Deployment app/gateway [gateway]"
    assert finding.missing.startswith("Secret app/gateway-client-keys (referenced by its pods)")


def test_an_operator_input_with_its_command_is_accepted() -> None:
    listed = OperatorInput(
        "Secret", "gateway-client-keys", NS, "sovereign gateway keys create --tenant t", "docs/platform.md"
    )
    assert findings(complete(secret=False), operator_inputs=[listed]) == []
    elsewhere = OperatorInput("Secret", "gateway-client-keys", "other", listed.created_by, listed.docs)
    assert only(findings(complete(secret=False), operator_inputs=[elsewhere])).kind == "reference"


def test_references_in_env_projected_and_pull_secrets_are_followed() -> None:
    spec = {
        "serviceAccountName": "runner",
        "imagePullSecrets": [{"name": "pull"}],
        "containers": [
            {
                "name": "c",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                "envFrom": [
                    {"configMapRef": {"name": "env-config"}},
                    {"secretRef": {"name": "opt", "optional": True}},
                ],
            }
        ],
        "volumes": [{"name": "p", "projected": {"sources": [{"configMap": {"name": "projected"}}]}}],
    }
    assert sorted(completeness.pod_references(spec)) == [
        ("ConfigMap", "env-config"),
        ("ConfigMap", "projected"),
        ("Secret", "env-secret"),
        ("Secret", "pull"),
        ("ServiceAccount", "runner"),
    ]


# --- 7. images by tag, from outside the boundary ------------------------------------------------


@pytest.mark.parametrize(
    ("image", "missing"),
    [
        ("registry.eu.example/sovereign-llm/gateway:0.1.0", "a digest"),
        ("vllm/vllm-openai:v0.11.0", "a digest"),
        (f"quay.io/openbao/openbao{DIGEST}", "the EU mirror: 'quay.io/openbao/openbao@sha256:"),
        (f"vllm/vllm-openai{DIGEST}", "is pulled from docker.io"),
    ],
)
def test_an_image_by_tag_or_from_elsewhere_is_reported(image: str, missing: str) -> None:
    finding = only(findings(complete(image=image)))
    assert finding.kind == "image"
    assert finding.resource == "Deployment app/gateway [gateway] container gateway"
    assert missing in finding.missing


def test_tag_and_digest_from_the_mirror_is_accepted() -> None:
    assert findings(complete(image=f"registry.eu.example/sovereign-llm/gateway:0.1.0{DIGEST}")) == []


def test_a_chart_default_image_is_checked() -> None:
    def extra(parts: Parts) -> None:
        k8s.helm.v3.Release("keda", name="keda", chart=oci("keda"), version="2.17.2", namespace=NS, values={})

    found = findings(complete(extra=extra))
    assert {f.kind for f in found} == {"image"}
    assert "'ghcr.io/kedacore/keda:2.17.2'" in " ".join(f.missing for f in found)


def test_without_a_mirror_the_stack_is_told_to_configure_one() -> None:
    resources = plan.completeness_view(plan.record(complete()))
    finding = only(completeness.check(resources, registry_mirror=None))
    assert "endpoints.registry_mirror is not set" in finding.missing


# --- namespaces and their policies --------------------------------------------------------------


def test_a_namespace_without_default_deny_is_reported() -> None:
    finding = only(findings(complete(default_deny=False)))
    assert finding.kind == "namespace-policy"
    assert finding.resource == "Namespace app [ns]"
    assert "default-deny NetworkPolicy" in finding.missing


def test_an_allow_policy_is_not_a_default_deny() -> None:
    def extra(parts: Parts) -> None:
        k8s.networking.v1.NetworkPolicy(
            "allow", metadata={"name": "allow-all", "namespace": NS},
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
        )  # fmt: skip

    assert only(findings(complete(default_deny=False, extra=extra))).kind == "namespace-policy"


def test_an_object_in_an_undeclared_namespace_is_reported() -> None:
    def extra(parts: Parts) -> None:
        k8s.core.v1.ConfigMap("stray", metadata={"name": "x", "namespace": "monitoring"})
        k8s.core.v1.ConfigMap("system", metadata={"name": "y", "namespace": "kube-system"})  # RKE2's

    finding = only(findings(complete(extra=extra)))
    assert finding.resource == "ConfigMap monitoring/x [stray]"
    assert "namespace monitoring: not declared" in finding.missing


# --- the real program ------------------------------------------------------------------------


def test_the_plan_carries_its_findings() -> None:
    example = plan_of(sections())
    report = example.to_json()["completeness"]
    assert report["fails_plan"] is plan.COMPLETENESS_FAILS_PLAN
    fields = ("kind", "resource", "missing", "fix", "image", "chart")
    assert report["findings"] == [{k: getattr(f, k) for k in fields} for f in example.findings]
    # an image or chart without a digest is a deploy blocker (the example sets no digests): its
    # findings are reported once, there, each naming the image or chart a blocker names
    assert report["deploy_blockers"] == [
        {k: getattr(f, k) for k in fields} for f in example.findings_as_blockers
    ]
    assert example.findings_as_blockers
    images_named = [b for b in example.blockers if b.startswith("platform.images has no digest")]
    charts_named = [b for b in example.blockers if b.startswith("platform.charts has no digest")]
    for finding in example.findings_as_blockers:
        if finding.kind == "image":
            # the blocker names where the image goes on the mirror: the reference the pod has now
            assert finding.image and any(f"on the mirror as {finding.image}," in b for b in images_named)
        else:
            assert finding.kind == "chart-source" and finding.chart, finding
            leaf = finding.chart.rsplit("/", 1)[-1]
            assert any(b.startswith(f"platform.charts has no digest for {leaf}:") for b in charts_named)
    assert not [f for f in example.findings if f.kind in ("image", "chart-source")]
    # every resource of the real program has its dependencies recorded: the gateway waits for OpenBao
    by_name = {r.name: r for r in example.resources}
    gateway = by_name["test-stack-platform-gateway-statefulset"]
    assert any("openbao" in urn for urn in gateway.dependencies)


def test_the_upgrade_images_a_controller_runs_are_checked_too() -> None:
    """The system-upgrade-controller's Plans and kubectl image name no pod template, yet its Jobs
    pull them: each must be the mirror by digest as well."""
    mirror = "https://registry.example.de"
    digest = "@sha256:" + "1" * 64

    def plan_resource(image: str) -> completeness.Resource:
        spec = {"upgrade": {"image": image}, "prepare": {"image": image, "args": ["prepare", "s"]}}
        meta = {"name": "rke2-agent", "namespace": "system-upgrade"}
        return completeness.Resource(
            "urn:plan", "kubernetes:upgrade.cattle.io/v1:Plan", "p", True, {"metadata": meta, "spec": spec}
        )

    def env(image: str) -> completeness.Resource:
        meta = {"name": "default-controller-env", "namespace": "system-upgrade"}
        data = {"SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE": image}
        return completeness.Resource(
            "urn:env", "kubernetes:core/v1:ConfigMap", "e", True, {"metadata": meta, "data": data}
        )

    def image_findings(*resources: completeness.Resource) -> list[Finding]:
        found = completeness.check(resources, registry_mirror=mirror)
        return [f for f in found if f.kind == "image"]

    public = image_findings(
        plan_resource("rancher/rke2-upgrade:v1.33.5-rke2r1"), env("rancher/kubectl:v1.30.3")
    )
    assert sorted(f.resource.rsplit(" ", 1)[-1] for f in public) == ["kubectl", "prepare", "upgrade"]
    assert {f.image for f in public} == {"rancher/rke2-upgrade:v1.33.5-rke2r1", "rancher/kubectl:v1.30.3"}
    on_mirror = "registry.example.de/docker.io/rancher/rke2-upgrade:v1.33.5-rke2r1" + digest
    kubectl = "registry.example.de/docker.io/rancher/kubectl:v1.30.3" + digest
    assert image_findings(plan_resource(on_mirror), env(kubectl)) == []
