"""``infra/__main__.py`` — the file ``pulumi up`` runs — under Pulumi's mocks, per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.infra.support import REPO, sections, with_digests


def run_entrypoint(data: dict[str, Any], backend_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PULUMI_BACKEND_URL": backend_url}
    return subprocess.run(
        [sys.executable, "-m", "tests.infra.entrypoint_under_mocks", "eu-central-prod"],
        input=json.dumps(data),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pinned() -> dict[str, Any]:
    """The example stack with what its operator fills in before the first deploy: the RKE2
    checksum, the etcd S3 keys and the platform's stack secrets, and each image's digest on the
    mirror (platform.images; the harness sets hcloud:token)."""
    data = sections()
    data["rke2"]["artifact_sha256"] = "5" * 64
    data |= {"etcd_s3_access_key": "AK" + "7" * 18, "etcd_s3_secret_key": "S" * 40}  # the S3 keys (secrets)
    return with_digests("eu-central-prod", data | platform_secrets())


def platform_secrets() -> dict[str, Any]:
    """The stack secrets phase 2's Secrets are made of (gateway client keys, object-storage keys)."""
    return {
        "gateway_client_keys": {"keys": []},
        "models_s3_access_key": "AK" + "8" * 18,
        "models_s3_secret_key": "M" * 40,
        "audit_s3_access_key": "AK" + "9" * 18,
        "audit_s3_secret_key": "A" * 40,
        "openbao_snapshot_s3_access_key": "AK" + "7" * 18,
        "openbao_snapshot_s3_secret_key": "S" * 40,
        "openbao_snapshot_copy_s3_access_key": "AK" + "6" * 18,
        "openbao_snapshot_copy_s3_secret_key": "C" * 40,
        "memory_backup_s3_access_key": "AK" + "5" * 18,
        "memory_backup_s3_secret_key": "B" * 40,
    }


def test_entrypoint_declares_and_exports_with_a_sovereign_backend() -> None:
    result = run_entrypoint(pinned(), "s3://state?endpoint=fsn1.your-objectstorage.com")
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert exported["control_plane_private_ips"] == ["10.20.1.11", "10.20.1.12", "10.20.1.13"]
    assert exported["gateway_private_ip"] == "10.20.1.250"
    assert "kubeconfig" in exported


def test_entrypoint_refuses_the_saas_backend() -> None:
    result = run_entrypoint(pinned(), "https://api.pulumi.com")
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(
        "sovereign-llm: stack 'eu-central-prod': the Pulumi backend is https://api.pulumi.com"
    )
    assert "GDPR Art. 44" in first and result.stdout == ""


def test_entrypoint_refuses_invalid_config_before_creating_anything() -> None:
    data = sections()
    data["gpupool"] = {}
    result = run_entrypoint(data, "file:///tmp/state")
    assert result.returncode == 1
    assert "sovereign-llm:gpupool: unknown section" in result.stderr and result.stdout == ""


def test_an_unpinned_rke2_release_stops_pulumi_up_before_the_first_server() -> None:
    """Without the checksum the rke2 role refuses to download: found after every server exists,
    unless the program stops first."""
    data = sections()
    assert "artifact_sha256" not in data["rke2"]  # the example leaves it to the operator
    result = run_entrypoint(data, "file:///tmp/state")
    assert result.returncode == 1 and result.stdout == ""
    head, line = result.stderr.splitlines()[:2]  # (the mock harness may add asyncio noise after)
    assert head == "sovereign-llm: eu-central-prod (not deployable yet): invalid stack config:"
    assert line.strip().startswith("rke2.artifact_sha256 is not set") and "sha256sum-amd64.txt" in line
    del data["rke2"]["artifact_url"]
    both = run_entrypoint(data, "file:///tmp/state").stderr
    assert "rke2.artifact_url is not set" in both and "rke2.artifact_sha256 is not set" in both


def test_no_module_of_the_program_directory_shadows_the_standard_library() -> None:
    """The language host puts infra/ first on sys.path: an infra/platform package would be
    imported for every `import platform` after the program starts."""
    names = {p.stem for p in (REPO / "infra").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert names & set(sys.stdlib_module_names) == set()


def test_an_image_without_its_digest_stops_pulumi_up_before_anything_is_created() -> None:
    data = pinned()
    del data["platform"]["images"]["docker.io/rancher/kubectl:v1.30.3"]
    result = run_entrypoint(data, "file:///tmp/state")
    assert result.returncode == 1 and result.stdout == ""
    head, line = result.stderr.splitlines()[:2]
    assert head == "sovereign-llm: eu-central-prod (not deployable yet): invalid stack config:"
    assert line.strip().startswith("platform.images has no digest for docker.io/rancher/kubectl:v1.30.3")
    assert "crane digest registry.sovereign.example.de/docker.io/rancher/kubectl:v1.30.3" in line
