"""The policy pack served the way the Pulumi engine calls it (gRPC Analyze), and its rules."""

from __future__ import annotations

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
