"""``sovereign plan --stack NAME``: exit codes, the table, plan.json and kubernetes.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import cli
from infra.components import servers
from tests.infra.support import EXAMPLES, REPO, STACKS


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "plan", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("stack", EXAMPLES)
def test_example_stack_plans_and_writes_its_artefacts(stack: str, tmp_path: Path) -> None:
    result = run_plan("--stack", stack, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["TYPE", "NAME", "LOCATION", "RESIDENCY", "KEY", "PROPERTIES"]
    assert "no violation" in result.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["stack"] == stack and plan["policy"]["violations"] == []
    # every custom resource is a row of the table
    for resource in plan["resources"]:
        if resource["custom"]:
            assert resource["name"] in result.stdout
    assert plan["outputs"]["kubeconfig"] == "[secret]"
    # the examples leave the RKE2 checksum and the S3 keys to the operator: the review says
    # pulumi up would stop
    blockers = plan["deploy_blockers"]
    assert blockers[0].startswith("rke2.artifact_sha256 is not set")
    secrets = ["etcd_s3_access_key", "etcd_s3_secret_key"] if plan["config"]["rke2"]["etcd_snapshots"] else []
    expected = [f"rke2.etcd_snapshots needs the S3 key {key}" for key in secrets]
    if plan["config"]["platform"]["openbao"]["initialised"]:  # phase 2 mounts the platform's Secrets
        expected += [
            f"sovereign-llm:{key} is not set: a stack secret that the Secret {secret} is made of"
            for secret, keys in (
                ("sovereign-gateway/gateway-client-keys", ["gateway_client_keys"]),
                ("sovereign-inference/object-storage-read", ["models_s3_access_key", "models_s3_secret_key"]),
                ("sovereign-gateway/object-storage-audit", ["audit_s3_access_key", "audit_s3_secret_key"]),
            )
            for key in keys
        ]
    assert [b.split(",")[0].split(" (for ")[0] for b in blockers[1:]] == expected
    for blocker in blockers:
        assert f"WARNING: `pulumi up` would stop before creating anything: {blocker}" in result.stderr
    documents = list(yaml.safe_load_all((tmp_path / "kubernetes.yaml").read_text()))
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "NetworkPolicy"} <= kinds and "Release" not in kinds
    assert len(documents) == sum(1 for r in plan["resources"] if r["type"].startswith("kubernetes:")) - len(
        plan["helm_releases"]
    )
    assert {h["name"] for h in plan["helm_releases"]} == {"openbao", "gpu-operator", "keda"}


def test_non_eu_stack_is_refused_with_art_44(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (STACKS / "Pulumi.eu-central-prod.yaml").read_text()
    (stacks / "Pulumi.us-east.yaml").write_text(text.replace("location: nbg1", "location: ash"))
    result = run_plan("--stack", "us-east", "--stacks-dir", str(stacks), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "sovereign-llm:workers.location: 'ash'" in result.stderr
    assert "GDPR Art. 44" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_stack_file_is_named(tmp_path: Path) -> None:
    result = run_plan("--stack", "nowhere", "--stacks-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Pulumi.nowhere.yaml" in result.stderr and "no such stack file" in result.stderr


def test_policy_violation_from_the_program_fails_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A program change that gives nodes a public IPv4 passes config validation but not the plan."""
    real = servers.hcloud.ServerPublicNetArgs

    def public(**kwargs: object) -> object:
        return real(ipv4_enabled=True, ipv6_enabled=False)

    monkeypatch.setattr(servers.hcloud, "ServerPublicNetArgs", public)
    shutil.copy(STACKS / "Pulumi.eu-north-dr.yaml", tmp_path / "Pulumi.eu-north-dr.yaml")
    code = cli.main(
        ["plan", "--stack", "eu-north-dr", "--stacks-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "[private-nodes] eu-north-dr-workers-1: role 'worker' has a public IPv4" in err
    assert json.loads((tmp_path / "o" / "plan.json").read_text())["policy"]["violations"]


def test_kubernetes_objects_are_rendered_as_manifests(tmp_path: Path) -> None:
    """The renderer the platform layer's objects go through (pulumi-kubernetes type tokens)."""
    from infra import plan as planner

    def k8s(type_: str, name: str, inputs: dict[str, object]) -> planner.PlannedResource:
        return planner.PlannedResource(f"urn:{name}", type_, name, "1", True, "sovereign:platform:X", inputs)

    namespace = k8s(
        "kubernetes:core/v1:Namespace",
        "inference",
        {"metadata": {"name": "inference", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    policy = k8s(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "deny",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    )
    result = planner.Plan("s", {}, None, [namespace, policy], [], {}, [])
    planner.write(result, tmp_path)
    docs = list(yaml.safe_load_all((tmp_path / "kubernetes.yaml").read_text()))
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", **namespace.inputs}
    assert docs[1]["apiVersion"] == "networking.k8s.io/v1" and docs[1]["kind"] == "NetworkPolicy"
    assert docs[1]["spec"]["policyTypes"] == ["Ingress", "Egress"]
