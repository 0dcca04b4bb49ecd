"""``sovereign plan --stack NAME``: exit codes, the table, plan.json and kubernetes.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import cli
from infra.components import servers
from tests.infra.support import EXAMPLES, STACKS
from tests.support import sovereign


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return sovereign("plan", *args, timeout=120)


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
    # the examples leave to the operator what only the operator has: the RKE2 checksum, the S3
    # keys, the platform's stack secrets, each image's digest on the mirror (and the mirror itself
    # where none is set), the Hetzner Cloud token; the review says pulumi up would stop, once per item
    blockers = plan["deploy_blockers"]
    assert blockers[0].startswith("rke2.artifact_sha256 is not set")
    config = plan["config"]
    categories = {
        "checksum": "rke2.artifact_sha256 is not set",
        "etcd keys": "rke2.etcd_snapshots needs the S3 key ",
        "platform secrets": "sovereign-llm:",
        "mirror": "endpoints.registry_mirror is not set",
        "image digests": "platform.images has no digest for ",
        "chart digests": "platform.charts has no digest for ",
        "hcloud token": "hcloud:token is not set",
    }
    found: dict[str, list[str]] = {name: [] for name in categories}
    for blocker in blockers:
        (name,) = [n for n, prefix in categories.items() if blocker.startswith(prefix)]  # nothing else
        found[name].append(blocker)
    assert len(found["checksum"]) == 1 and len(found["hcloud token"]) == 1
    etcd = ["etcd_s3_access_key", "etcd_s3_secret_key"] if config["rke2"]["etcd_snapshots"] else []
    assert [b.split(",")[0].rsplit(" ", 1)[-1] for b in found["etcd keys"]] == etcd
    # phase 2 mounts the platform's Secrets: each stack secret they are made of, by name
    secrets = [
        "gateway_client_keys", "models_s3_access_key", "models_s3_secret_key",
        "audit_s3_access_key", "audit_s3_secret_key",
        "openbao_snapshot_s3_access_key", "openbao_snapshot_s3_secret_key",
        # the snapshot copy's key, where the stack copies its snapshots to another location
        *(["openbao_snapshot_copy_s3_access_key", "openbao_snapshot_copy_s3_secret_key"]
          if config.get("storage", {}).get("openbao_snapshot_copy") else []),
        # the memory store's backup key (platform.memory_store)
        *(["memory_backup_s3_access_key", "memory_backup_s3_secret_key"]
          if config["platform"].get("memory_store", {}).get("enabled") else []),
    ] if config["platform"]["openbao"]["initialised"] else []  # fmt: skip
    assert [
        b.split(" is not set")[0].removeprefix("sovereign-llm:") for b in found["platform secrets"]
    ] == secrets
    # without a mirror: one for the images, one for the charts
    assert len(found["mirror"]) == (0 if config["endpoints"].get("registry_mirror") else 2)
    # one blocker per image the stack runs (sovereign images list), each once: the Helm releases'
    # (among them the cluster services and the monitoring stack), the upgrade images and phase 2's
    listed = sovereign("images", "list", "--stack", stack, timeout=120, check=True).stdout.splitlines()[1:]
    needed = [line.split(" -> ")[0] for line in listed]
    named = [b.removeprefix(categories["image digests"]).split(" ")[0] for b in found["image digests"]]
    assert sorted(named) == sorted(needed) and len(set(named)) == len(named)
    for image in (
        "docker.io/hetznercloud/hcloud-cloud-controller-manager:v1.35.0",
        "docker.io/hetznercloud/hcloud-csi-driver:v2.22.1",
        "docker.io/rancher/local-path-provisioner:v0.0.37",
        "quay.io/prometheus/prometheus:v3.14.0-distroless",
        "quay.io/prometheus-operator/prometheus-operator:v0.93.1",
        "docker.io/rancher/rke2-upgrade:v1.33.5-rke2r1",
    ):
        assert image in named
    assert ("docker.io/vllm/vllm-openai:v0.11.0" in named) is config["platform"]["openbao"]["initialised"]
    # one blocker per chart (sovereign charts list): each named once, with its helm pull/push
    charts = sovereign("charts", "list", "--stack", stack, timeout=120, check=True).stdout.splitlines()[1:]
    keys = [line.split(" from ")[0] for line in charts if not line.startswith(" ")]
    named_charts = [b.removeprefix(categories["chart digests"]).split(" ")[0] for b in found["chart digests"]]
    # 7, + cloudnative-pg where the stack runs the memory store
    store = config["platform"].get("memory_store", {}).get("enabled", False)
    assert sorted(named_charts) == sorted(keys) and len(keys) == 7 + store
    # and no image or chart-source finding besides them: each is one of these blockers
    completeness = plan["completeness"]
    assert not [f for f in completeness["findings"] if f["kind"] in ("image", "chart-source")]
    assert completeness["deploy_blockers"] and all(
        f["kind"] in ("image", "chart-source") for f in completeness["deploy_blockers"]
    )
    for blocker in blockers:
        assert f"WARNING: `pulumi up` would stop before creating anything: {blocker}" in result.stderr
    documents = list(yaml.safe_load_all((tmp_path / "kubernetes.yaml").read_text()))
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "NetworkPolicy"} <= kinds and "Release" not in kinds
    assert len(documents) == sum(1 for r in plan["resources"] if r["type"].startswith("kubernetes:")) - len(
        plan["helm_releases"]
    )
    assert {h["name"] for h in plan["helm_releases"]} == {
        "openbao", "gpu-operator", "keda", "hcloud-cloud-controller-manager", "hcloud-csi",
        "local-path-provisioner", "kube-prometheus-stack", *(["cloudnative-pg"] if store else []),
    }  # fmt: skip
    # no completeness finding on the example stacks (the images are the blockers above)
    assert completeness["findings"] == []


def test_non_eu_stack_is_refused_with_art_44(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (STACKS / "Pulumi.eu-central-prod.yaml").read_text()
    (stacks / "Pulumi.us-east.yaml").write_text(text.replace("location: nbg1", "location: ash"))
    result = run_plan("--stack", "us-east", "--stacks-dir", str(stacks), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "sovereign-llm:workers.location: Hetzner location" in result.stderr
    assert "'ash'" not in result.stderr
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


def test_an_incomplete_stack_fails_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The weights on a StorageClass nothing installs: valid config, a plan that stops."""
    document = yaml.safe_load((STACKS / "Pulumi.eu-central-prod.yaml").read_text())
    document["config"]["sovereign-llm:platform"]["weights_storage_class"] = "longhorn"
    (tmp_path / "Pulumi.eu-central-prod.yaml").write_text(yaml.safe_dump(document))
    code = cli.main(
        ["plan", "--stack", "eu-central-prod", "--stacks-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "missing StorageClass 'longhorn': nothing in the program provides it" in err
    report = json.loads((tmp_path / "o" / "plan.json").read_text())["completeness"]
    # one finding per weights volume: the chat model's and the embedding model's
    assert report["fails_plan"] is True
    assert [f["kind"] for f in report["findings"]] == ["storage-class", "storage-class"]


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
