"""The policy pack served the way the Pulumi engine calls it (gRPC Analyze), and its rules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from infra.policy import rules
from tests.infra.support import REPO


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    proc = subprocess.Popen([sys.executable, "infra/policy/__main__.py"], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())  # the engine's handshake: the pack prints its port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, type_: str, props: dict[str, Any]) -> dict[str, list[str]]:
    struct = struct_pb2.Struct()
    struct.update(props)
    request = analyzer_pb2.AnalyzeRequest(
        type=type_, properties=struct, urn=f"urn:pulumi:s::p::{type_}::r", name="r"
    )
    found: dict[str, list[str]] = {}
    for d in stub.Analyze(request, timeout=30).diagnostics:
        assert d.enforcementLevel == analyzer_pb2.MANDATORY
        # the engine shows "<policy description>\n<violation>"
        found.setdefault(d.policyName, []).append(d.message.rsplit("\n", 1)[-1])
    return found


LABELS = {
    "residency": "eu",
    "data-classification": "phi",
    "jurisdiction": "de",
    "stack": "s",
    "role": "worker",
}
GOOD_NODE = {
    "location": "nbg1",
    "labels": LABELS,
    "publicNets": [{"ipv4Enabled": False, "ipv6Enabled": False}],
    "networks": [{"networkId": 1, "ip": "10.20.1.21"}],
}


def test_a_compliant_node_passes(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    assert analyze(analyzer, rules.SERVER, GOOD_NODE) == {}


def test_non_eu_public_unlabelled_server_is_reported(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    bad = {**GOOD_NODE, "location": "ash", "labels": {"role": "worker"}}
    bad["publicNets"] = [{"ipv4Enabled": True, "ipv6Enabled": False}]
    found = analyze(analyzer, rules.SERVER, bad)
    assert set(found) == {"eu-location", "residency-labels", "private-nodes"}
    assert "GDPR Art. 44" in found["eu-location"][0]


def test_world_open_ssh_and_public_lb_are_reported(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    firewall = {
        "labels": LABELS,
        "rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["0.0.0.0/0"]}],
        "applyTos": [{"labelSelector": "role=worker"}],
    }
    found = analyze(analyzer, rules.FIREWALL, firewall)
    assert found["firewall-deny-by-default"] == [
        "inbound tcp/22 open to 0.0.0.0/0",
        "SSH allowed on servers other than the bastion",
    ]
    assert "private-load-balancer" in analyze(analyzer, rules.LB_NETWORK, {"enablePublicInterface": True})


def test_server_without_location_or_public_nets_is_reported() -> None:
    found = rules.check(rules.SERVER, "x", {"labels": LABELS, "networks": [{}]})
    assert {v.rule for v in found} == {"eu-location", "private-nodes"}


def test_bastion_may_have_ipv4_but_not_ipv6() -> None:
    bastion = {**GOOD_NODE, "labels": {**LABELS, "role": "bastion"}}
    bastion["publicNets"] = [{"ipv4Enabled": True, "ipv6Enabled": False}]
    assert rules.check(rules.SERVER, "b", bastion) == []
    bastion["publicNets"] = [{"ipv4Enabled": True, "ipv6Enabled": True}]
    assert [v.rule for v in rules.check(rules.SERVER, "b", bastion)] == ["private-nodes"]


def analyze_stack(stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[dict[str, Any]]) -> list[Any]:
    request = analyzer_pb2.AnalyzeStackRequest()
    for r in resources:
        struct = struct_pb2.Struct()
        struct.update(r["props"])
        request.resources.append(
            analyzer_pb2.AnalyzerResource(
                type=r["type"],
                properties=struct,
                urn=r["urn"],
                name=r["name"],
                dependencies=r.get("deps", []),
            )
        )
    return list(stub.AnalyzeStack(request, timeout=30).diagnostics)


def test_the_pack_reports_completeness_over_the_whole_stack(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """A ServiceMonitor whose CRD nothing installs, and one created after its CRD."""
    monitor = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
    crd = {
        "type": "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
        "urn": "urn:pulumi:s::p::crd::sm",
        "name": "sm",
        "props": {"spec": {"group": "monitoring.coreos.com", "names": {"kind": "ServiceMonitor"}}},
    }
    meta = {"metadata": {"name": "m", "namespace": "kube-system"}}
    lonely = {"type": monitor, "urn": "urn:pulumi:s::p::sm::a", "name": "a", "props": meta}
    diagnostics = analyze_stack(analyzer, [lonely])
    assert [(d.policyName, d.urn) for d in diagnostics] == [("completeness", lonely["urn"])]
    assert "ServiceMonitor kube-system/m [a]: missing the CustomResourceDefinition" in diagnostics[0].message
    # mandatory: a real preview stops on it, as the plan does
    assert diagnostics[0].enforcementLevel == analyzer_pb2.MANDATORY
    after = {**lonely, "deps": [crd["urn"]]}
    assert analyze_stack(analyzer, [crd, after]) == []


# --- declared egress, images and charts (issue #23) ---------------------------------------------
# Shapes as the Pulumi engine hands them to a resource validation policy: a NetworkPolicy's and a
# Job's inputs as pulumi-kubernetes registers them (kind, metadata, spec; the wire names of
# kubernetes.io's networking.k8s.io/v1 NetworkPolicy and batch/v1 Job), a helm.sh/v3 Release's
# `chart` and `repositoryOpts` (pulumi-kubernetes sdk/python kubernetes/helm/v3/Release).
FSN1 = {
    "name": "objectstorage-fsn1",
    "host": "fsn1.your-objectstorage.com",
    "cidrs": ["192.0.2.16/28"],
    "jurisdiction": "DE",
    "operator": "Hetzner Online GmbH",
}
MIRROR = "registry.sovereign.example.de"
DIGEST = "sha256:" + "a" * 64  # a test's own value, never a real image's


def network_policy(cidr: str, carried: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "audit-ship", "namespace": "sovereign-gateway"}
    if carried is not None:
        meta["annotations"] = {rules.EGRESS_ANNOTATION: json.dumps(carried)}
    return {
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": 443}]},
                # in-cluster peers are no egress to a public address
                {"to": [{"ipBlock": {"cidr": "10.43.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 443}]},
            ],
        },
    }


@pytest.fixture
def stack_declared() -> Iterator[rules.Declared]:
    declared = rules.Declared(
        registry_mirror=MIRROR, destinations=(("objectstorage-fsn1", ("192.0.2.16/28",)),)
    )
    rules.configure(declared)
    try:
        yield declared
    finally:
        rules.configure(None)


def test_egress_to_any_public_address_is_reported(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    # the gateway's rule before issue #23: every public IPv4 on 443
    found = analyze(analyzer, rules.NETWORK_POLICY, network_policy("0.0.0.0/0", [FSN1]))
    assert found == {
        "egress-declared-only": [
            "egress to 0.0.0.0/0 is not within a declared destination: declare its host and addresses under "
            "egress.destinations (never 0.0.0.0/0); NetworkPolicy matches addresses, not names"
        ]
    }


def test_egress_within_a_declared_eu_destination_passes(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    assert analyze(analyzer, rules.NETWORK_POLICY, network_policy("192.0.2.16/28", [FSN1])) == {}
    # a public address no carried destination covers
    found = analyze(analyzer, rules.NETWORK_POLICY, network_policy("198.51.100.7/32", [FSN1]))
    assert list(found) == ["egress-declared-only"]


ANYWHERE = [
    "egress to 0.0.0.0/0 is not within a declared destination: declare its host and addresses under "
    "egress.destinations (never 0.0.0.0/0); NetworkPolicy matches addresses, not names",
    "egress to ::/0 is not within a declared destination: declare its host and addresses under "
    "egress.destinations (never 0.0.0.0/0); NetworkPolicy matches addresses, not names",
]


@pytest.mark.parametrize(
    "rule",
    [
        {"ports": [{"protocol": "TCP", "port": 443}]},  # no "to": every destination on 443
        {"to": [], "ports": [{"protocol": "TCP", "port": 443}]},  # an empty "to" is the same
        {},  # no "to", no "ports": everything
    ],
    ids=["no-to", "empty-to", "empty-rule"],
)
def test_an_egress_rule_without_peers_reaches_everything_and_is_reported(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, rule: dict[str, Any]
) -> None:
    # NetworkPolicyEgressRule.to: "If this field is empty or missing, this rule matches all
    # destinations" (Kubernetes API reference, networking.k8s.io/v1)
    policy = network_policy("192.0.2.16/28", [FSN1])
    policy["spec"]["egress"].append(rule)
    assert [v.message for v in rules.check(rules.NETWORK_POLICY, "p", policy)] == ANYWHERE
    assert analyze(analyzer, rules.NETWORK_POLICY, policy) == {"egress-declared-only": ANYWHERE}


def test_a_destination_outside_the_eu_is_reported() -> None:
    us = {
        **FSN1,
        "name": "s3-us",
        "host": "s3.us-east-1.amazonaws.com",
        "jurisdiction": "US",
        "operator": "x",
    }
    found = rules.check(rules.NETWORK_POLICY, "p", network_policy("192.0.2.16/28", [us]))
    assert [v.rule for v in found] == ["egress-declared-only", "egress-declared-only"]
    assert "GDPR Art. 44" in found[0].message


def test_with_the_stack_declared_a_policy_cannot_widen_it_by_its_own_annotation(
    stack_declared: rules.Declared,
) -> None:
    wider = {**FSN1, "cidrs": ["192.0.2.0/24"]}
    assert rules.check(rules.NETWORK_POLICY, "p", network_policy("192.0.2.16/28", [wider])) == []
    found = rules.check(rules.NETWORK_POLICY, "p", network_policy("192.0.2.128/28", [wider]))
    assert [v.rule for v in found] == ["egress-declared-only"]


def job(image: str) -> dict[str, Any]:
    container = {"name": "fetch", "image": image}
    return {"kind": "Job", "spec": {"template": {"spec": {"containers": [container], "initContainers": []}}}}


def test_an_image_off_the_mirror_or_without_digest_is_reported(stack_declared: rules.Declared) -> None:
    job_type = "kubernetes:batch/v1:Job"
    good = f"{MIRROR}/docker.io/vllm/vllm-openai:v0.11.0@{DIGEST}"
    assert rules.check(job_type, "j", job(good)) == []
    upstream = rules.check(job_type, "j", job(f"docker.io/vllm/vllm-openai:v0.11.0@{DIGEST}"))
    assert [v.rule for v in upstream] == ["images-from-eu-mirror"]
    assert "pulled from docker.io, not from the stack's EU registry mirror" in upstream[0].message
    tagged = rules.check(job_type, "j", job(f"{MIRROR}/docker.io/vllm/vllm-openai:v0.11.0"))
    assert [v.rule for v in tagged] == ["images-from-eu-mirror"] and "has no digest" in tagged[0].message


def test_an_image_a_deploy_blocker_names_is_not_reported_twice() -> None:
    image = f"{MIRROR}/docker.io/vllm/vllm-openai:v0.11.0"
    rules.configure(rules.Declared(registry_mirror=MIRROR, blocked_images=frozenset({image})))
    try:
        assert rules.check("kubernetes:batch/v1:Job", "j", job(image)) == []
    finally:
        rules.configure(None)


def test_a_chart_from_a_vendor_repository_or_without_digest_is_reported(
    stack_declared: rules.Declared,
) -> None:
    good = {"chart": f"oci://{MIRROR}/charts/keda@{DIGEST}", "version": "2.17.2"}
    assert rules.check(rules.HELM_RELEASE, "r", good) == []
    vendor = {
        "chart": "keda",
        "version": "2.17.2",
        "repositoryOpts": {"repo": "https://kedacore.github.io/charts"},
    }
    assert [v.rule for v in rules.check(rules.HELM_RELEASE, "r", vendor)] == ["charts-from-eu-mirror"]
    unpinned = {"chart": f"oci://{MIRROR}/charts/keda", "version": "2.17.2"}
    found = rules.check(rules.HELM_RELEASE, "r", unpinned)
    assert [v.rule for v in found] == ["charts-from-eu-mirror"] and "digest" in found[0].message


def test_the_example_plans_hold_to_their_declaration() -> None:
    """The whole rendered plan, with the stack's declaration: no public egress outside it, every
    image and chart from the mirror by digest (the operator's digests, here a test's own)."""
    from infra import config
    from tests.infra.support import plan_of, with_digests

    data = with_digests("eu-central-prod")
    plan = plan_of(data, stack="eu-central-prod")
    rules.configure(rules.declared_from(config.parse("eu-central-prod", data, "test")))
    try:
        found = [v for r in plan.custom() for v in rules.check(r.type, r.name, r.inputs)]
    finally:
        rules.configure(None)
    assert found == []


def test_the_pack_holds_images_and_charts_to_the_mirror_its_config_names() -> None:
    """Under a real `pulumi preview --policy-pack infra/policy --policy-pack-config FILE` the engine sends
    the config through Configure before Analyze: with the mirror named, an upstream image is reported;
    without it (no config), the rule has nothing to hold the image against and passes."""
    job_type = "kubernetes:batch/v1:Job"
    upstream = job(f"docker.io/vllm/vllm-openai:v0.11.0@{DIGEST}")
    on_mirror = job(f"{MIRROR}/docker.io/vllm/vllm-openai:v0.11.0@{DIGEST}")
    proc = subprocess.Popen([sys.executable, "infra/policy/__main__.py"], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            assert "images-from-eu-mirror" not in analyze(stub, job_type, upstream)  # not configured yet
            properties = struct_pb2.Struct()
            properties.update({"registry_mirror": f"https://{MIRROR}"})
            config = {
                name: analyzer_pb2.PolicyConfig(
                    enforcementLevel=analyzer_pb2.MANDATORY, properties=properties
                )
                for name in ("images-from-eu-mirror", "charts-from-eu-mirror")
            }
            stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=config), timeout=30)
            reported = analyze(stub, job_type, upstream)
            assert any(
                "not from the stack's EU registry mirror" in m for m in reported["images-from-eu-mirror"]
            )
            assert "images-from-eu-mirror" not in analyze(stub, job_type, on_mirror)
    finally:
        proc.kill()
        proc.wait(timeout=10)
