"""The stack's own entry points on a real Debian 12 host: ``sovereign harden`` and the real
``playbooks/cluster.yml`` (hardening, then RKE2 as the first server; the GPU play has no host),
then ``sovereign verify`` — the post-deploy testinfra suite CI runs after ``pulumi up`` — with
its JUnit report. The host is in the ``control_plane`` group, as in a stack inventory; it is a
fresh host of its own (node2), so the other modules' hosts start from the image too."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.hosts.converge import PlaybookRun, run_playbook
from infra.paths import REPO_ROOT
from tests import support
from tests.hosts.conftest import VERSION, Mirror
from tests.hosts.lab import Lab

TOKEN = "k" * 48


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(Path(tmp_path_factory.mktemp("cluster-hosts")), ["node2"], first_index=2) as running:
        yield running


def stack_like_inventory(lab: Lab, mirror: tuple[Mirror, str]) -> dict[str, Any]:
    (host,) = lab.hosts
    server, sha = mirror
    return {
        "all": {
            "vars": {
                "hardening_private_cidrs": ["10.199.0.0/16"],
                "rke2_version": VERSION,
                "rke2_artifact_url": f"{server.url}/{VERSION}",
                "rke2_artifact_sha256": sha,
                "rke2_start": False,  # RKE2 cannot run in a container
            },
            "children": {
                "bastion": {"hosts": {}},
                "control_plane": {
                    "hosts": {
                        host.name: {**host.ansible_vars(), "private_ip": host.address, "rke2_server_url": ""}
                    }
                },
                "workers": {"hosts": {}},
                "gpu": {"hosts": {}},
            },
        }
    }


def sovereign(*args: str) -> subprocess.CompletedProcess[str]:
    return support.sovereign(*args, cwd=REPO_ROOT, timeout=900)


@pytest.fixture(scope="module")
def inventory_file(lab: Lab, mirror: tuple[Mirror, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "inventory.json"
    path.write_text(json.dumps(stack_like_inventory(lab, mirror)))
    return path


@pytest.fixture(scope="module")
def cluster(lab: Lab, mirror: tuple[Mirror, str]) -> tuple[PlaybookRun, PlaybookRun]:
    playbook = REPO_ROOT / "playbooks" / "cluster.yml"
    inv = stack_like_inventory(lab, mirror)
    return run_playbook(playbook, inv, {"rke2_token": TOKEN}), run_playbook(
        playbook, inv, {"rke2_token": TOKEN}
    )


def test_harden_converges_the_stack_hosts(inventory_file: Path) -> None:
    result = sovereign("harden", "--inventory", str(inventory_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PLAY RECAP" in result.stderr  # Ansible's progress, live on the terminal
    assert "sovereign harden: 1 host(s) converged" in result.stderr


def test_harden_names_host_task_and_message_on_failure(
    lab: Lab, mirror: tuple[Mirror, str], tmp_path: Path
) -> None:
    inv = stack_like_inventory(lab, mirror)
    inv["all"]["children"]["control_plane"]["hosts"]["node2"]["hardening_ssh_allowed_sources"] = []
    broken = tmp_path / "inventory.json"
    broken.write_text(json.dumps(inv))
    result = sovereign("harden", "--inventory", str(broken))
    assert result.returncode == 1
    assert "  node2: Refuse an empty SSH source list (it would lock everyone out): " in result.stderr
    assert "hardening_ssh_allowed_sources is empty" in result.stderr


def test_the_cluster_playbook_converges_and_the_second_run_changes_nothing(
    cluster: tuple[PlaybookRun, PlaybookRun],
) -> None:
    first, second = cluster
    assert first.rc == 0, first.failures
    assert second.rc == 0, second.failures
    assert sum(second.changed.values()) == 0, second.changed


def verify(
    inventory_file: Path, junit: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    result = sovereign("verify", "--inventory", str(inventory_file), "--junit", str(junit))
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome["failed"].append(name)
        elif (skipped := case.find("skipped")) is not None:
            outcome["skipped"].append(f"{name}: {skipped.get('message', '')}")
        else:
            outcome["passed"].append(name)
    return result, outcome


def test_verify_passes_on_the_converged_host_with_every_skip_explained(
    cluster: tuple[PlaybookRun, PlaybookRun], inventory_file: Path, tmp_path: Path
) -> None:
    result, outcome = verify(inventory_file, tmp_path / "verify.xml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert outcome["failed"] == [] and len(outcome["passed"]) >= 10
    assert any(n.startswith("test_rke2_is_installed_and_configured") for n in outcome["passed"])
    for skip in outcome["skipped"]:  # never a silent pass: each skip says which tier checks it
        assert "VM tier" in skip or "not a GPU host" in skip, skip
    skipped = {s.split("[")[0] for s in outcome["skipped"]}
    assert skipped == {  # each VM/GPU-tier check, once, in the suite that runs after pulumi up
        "test_audit_rules_are_live",
        "test_time_is_synchronised",
        "test_cis_kernel_parameters_are_live",
        "test_rke2_is_running_and_a_server_serves_the_api",
        "test_gpus_are_served_by_the_pinned_driver",
        "test_the_container_toolkit_describes_every_gpu",
    }
    assert "sovereign verify: " in result.stderr and "0 failed" in result.stderr


def test_verify_catches_drift_and_harden_repairs_it(
    lab: Lab, cluster: tuple[PlaybookRun, PlaybookRun], inventory_file: Path, tmp_path: Path
) -> None:
    (host,) = lab.hosts
    assert host.ssh("sudo chmod 0644 /etc/ssh/sshd_config").returncode == 0  # drift
    result, outcome = verify(inventory_file, tmp_path / "drift.xml")
    assert result.returncode == 1
    assert [n.split("[")[0] for n in outcome["failed"]] == ["test_system_file_permissions"]
    assert sovereign("harden", "--inventory", str(inventory_file)).returncode == 0
    result, outcome = verify(inventory_file, tmp_path / "repaired.xml")
    assert result.returncode == 0 and outcome["failed"] == []
