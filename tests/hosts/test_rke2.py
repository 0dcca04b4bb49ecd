"""The rke2 role on a real Debian 12 host: the pinned release from a mirror with its checksum,
the CIS prerequisites, the configuration with the join token read from a real OpenBao.

The artefact is a stand-in with the layout of rke2.linux-amd64.tar.gz (bin/rke2, the systemd
units, share/rke2/rke2-cis-sysctl.conf): the real release cannot be fetched here (only package
registries are reachable), and RKE2 cannot run in a container anyway, so the test hosts set
rke2_start=false. The state the role leaves (modes, the etcd user, the CIS sysctls, the unit)
and the running cluster are checked by infra/hosts/checks (run against a lab host by
test_cluster.py; the running cluster on the VM tier, skipped there with the reason).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.hosts.converge import PlaybookRun, run_playbook
from tests.hosts.conftest import CIS_SYSCTL, TOKEN_PATH, VERSION, Mirror
from tests.hosts.lab import Lab
from tests.support import Bao

PLAYBOOK = Path(__file__).parent / "playbooks" / "rke2.yml"


def rke2_inventory(lab: Lab, mirror: tuple[Mirror, str], bao: Bao, **overrides: Any) -> dict[str, Any]:
    server, sha = mirror
    inv = lab.inventory()
    inv["all"]["vars"].update(
        {
            "rke2_version": VERSION,
            "rke2_artifact_url": f"{server.url}/{VERSION}",
            "rke2_artifact_sha256": sha,
            "rke2_role": "server",
            "rke2_start": False,
            "rke2_token_openbao_addr": bao.address,
            "rke2_token_openbao_path": TOKEN_PATH,
            "rke2_tls_san": ["10.20.1.5"],
            "rke2_registry_mirror": "https://registry.example.eu",
            **overrides,
        }
    )
    return inv


@pytest.fixture(scope="module")
def converged(
    lab: Lab, mirror: tuple[Mirror, str], bao: Bao, join_token: str
) -> Iterator[tuple[PlaybookRun, PlaybookRun]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAO_TOKEN", bao.root)
        first = run_playbook(PLAYBOOK, rke2_inventory(lab, mirror, bao))
        second = run_playbook(PLAYBOOK, rke2_inventory(lab, mirror, bao))
    yield first, second


def test_installs_the_pinned_release_and_the_second_run_changes_nothing(
    lab: Lab, mirror: tuple[Mirror, str], converged: tuple[PlaybookRun, PlaybookRun]
) -> None:
    first, second = converged
    assert first.rc == 0, first.failures
    assert second.rc == 0 and sum(second.changed.values()) == 0, second.changed
    assert f"/{VERSION}/rke2.linux-amd64.tar.gz" in mirror[0].requests  # fetched from the mirror
    version = lab.hosts[0].ssh("/usr/local/bin/rke2 --version")
    assert f"rke2 version {VERSION}" in version.stdout


def test_configuration_has_the_cis_profile_and_the_token_from_openbao(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun], join_token: str
) -> None:
    host = lab.hosts[0]
    config = yaml.safe_load(host.ssh("sudo cat /etc/rancher/rke2/config.yaml").stdout)
    assert config["token"] == join_token
    assert config["profile"] == "cis" and config["secrets-encryption"] is True
    assert config["tls-san"] == ["10.20.1.5"] and "server" not in config  # the first server
    registries = yaml.safe_load(host.ssh("sudo cat /etc/rancher/rke2/registries.yaml").stdout)
    assert registries["mirrors"]["docker.io"]["endpoint"] == ["https://registry.example.eu"]
    # every pull as containerd would make it with these two files: only the EU mirror
    for image, path in [
        ("nginx:1.27", "docker.io/library/nginx"),
        (
            "docker.io/rancher/hardened-kubernetes:v1.33.5-rke2r1-build20250910",
            "docker.io/rancher/hardened-kubernetes",
        ),
        ("nvcr.io/nvidia/gpu-operator:v25.3.4", "nvcr.io/nvidia/gpu-operator"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause"),
        ("quay.io/openbao/openbao:2.4.1", "quay.io/openbao/openbao"),
        ("ghcr.io/kedacore/keda:2.17.2", "ghcr.io/kedacore/keda"),
        ("registry.example.eu/sovereign-llm/gateway:0.1.0", "sovereign-llm/gateway"),
    ]:
        assert pulls(image, registries, config) == [f"https://registry.example.eu/v2/{path}"], image
    # a registry the mirror does not keep: the "*" entry sends it to the mirror under its own name
    # (where it is not, so the pull fails), never to gcr.io
    unlisted = "gcr.io/distroless/static:nonroot"
    assert registries["mirrors"]["*"] == {"endpoint": ["https://registry.example.eu"]}
    assert pulls(unlisted, registries, config) == ["https://registry.example.eu/v2/distroless/static"]
    # without that entry the registry would be unconfigured, and disable-default-registry-endpoint
    # would not apply to it: containerd would go to gcr.io itself
    no_wildcard = {"mirrors": {k: v for k, v in registries["mirrors"].items() if k != "*"}}
    assert pulls(unlisted, no_wildcard, config) == ["https://gcr.io/v2/distroless/static"]


def pulls(image: str, registries: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The URLs containerd tries for *image* under RKE2's registries.yaml and config.yaml: each
    mirror endpoint of the image's registry with the first matching rewrite applied to the
    repository, then the registry's default endpoint (index.docker.io for docker.io) without
    rewrites, unless disable-default-registry-endpoint is set and registries.yaml configures the
    registry, by its own entry or the "*" wildcard, which serves a registry without its own entry
    (docs.rke2.io/install/private_registry: "Default Endpoint Fallback": "Disabling the default
    registry endpoint applies only to registries configured via registries.yaml"; "Wildcard
    Support"; "Rewrites"; a first component with a "." or ":" is a registry, anything else is
    docker.io, library/ for single names)."""
    name = image.split("@")[0].rsplit(":", 1)[0] if "/" in image or ":" in image else image
    first, _, rest = name.partition("/")
    registry, repository = (first, rest) if rest and ("." in first or ":" in first) else ("docker.io", name)
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    mirrors = registries.get("mirrors") or {}
    configured = registry in mirrors or "*" in mirrors
    mirror = mirrors.get(registry) or mirrors.get("*") or {}
    urls = []
    for endpoint in mirror.get("endpoint") or []:
        path = repository
        for pattern, replacement in (mirror.get("rewrite") or {}).items():
            if re.search(pattern, path):
                path = re.sub(pattern, replacement.replace("$1", r"\1"), path, count=1)
                break
        urls.append(f"{endpoint.rstrip('/')}/v2/{path}")
    if not (config.get("disable-default-registry-endpoint") and configured):
        default = "https://index.docker.io" if registry == "docker.io" else f"https://{registry}"
        urls.append(f"{default}/v2/{repository}")
    return urls


def test_the_join_token_never_reaches_the_output(
    lab: Lab, mirror: tuple[Mirror, str], bao: Bao, join_token: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("BAO_TOKEN", bao.root)
    run = run_playbook(PLAYBOOK, rke2_inventory(lab, mirror, bao), verbosity=2)
    assert run.rc == 0, run.failures
    assert join_token not in capsys.readouterr().err


def test_a_tampered_artefact_is_refused_and_not_installed(
    lab: Lab, mirror: tuple[Mirror, str], bao: Bao, join_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAO_TOKEN", bao.root)
    inv = rke2_inventory(
        lab, mirror, bao, rke2_version="v1.33.6+rke2r1", rke2_artifact_url=f"{mirror[0].url}/v1.33.6+rke2r1"
    )
    run = run_playbook(PLAYBOOK, inv)
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Download the release from the EU mirror (checksum pinned):")
    assert "checksum" in failure.lower()
    assert lab.hosts[0].ssh("test -e /usr/local/share/rke2/.installed-v1.33.6+rke2r1").returncode == 1


def drifting() -> list[str]:
    """RKE2's CIS kernel parameters whose value differs here: a container shares this machine's
    vm.* and kernel.* (read-only), so these are the ones no lab host can have live."""
    live = {k: int(Path("/proc/sys", k.replace(".", "/")).read_text()) for k in CIS_SYSCTL}
    return [f"{k}={live[k]} (RKE2 expects {v})" for k, v in CIS_SYSCTL.items() if live[k] != v]


def test_the_stand_in_refuses_to_start_as_rke2_does(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun]
) -> None:
    if not drifting():
        pytest.skip("this machine's kernel already has RKE2's CIS values: nothing for the stand-in to refuse")
    start = lab.hosts[0].ssh("sudo /usr/local/bin/rke2 server")
    assert start.returncode == 1
    key, _, rest = drifting()[0].partition("=")
    have, want = rest.split(" (RKE2 expects ")
    assert f"invalid kernel parameter value {key}={have} - expected {want.rstrip(')')}" in start.stderr


def test_rke2_is_not_started_while_its_cis_kernel_parameters_are_not_live(
    lab: Lab, mirror: tuple[Mirror, str], bao: Bao, join_token: str, monkeypatch: pytest.MonkeyPatch,
    converged: tuple[PlaybookRun, PlaybookRun],
) -> None:  # fmt: skip
    if not drifting():
        pytest.skip("this machine's kernel already has RKE2's CIS values: nothing to refuse")
    monkeypatch.setenv("BAO_TOKEN", bao.root)
    run = run_playbook(PLAYBOOK, rke2_inventory(lab, mirror, bao, rke2_start=True))
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Refuse to start RKE2 while its CIS kernel parameters are not live:")
    assert drifting()[0] in failure
    # never started at all (not merely "not active": the stand-in would fail a start anyway)
    started = lab.hosts[0].ssh("systemctl show -p ExecMainStartTimestampMonotonic --value rke2-server")
    assert started.stdout.strip() == "0", started.stdout + started.stderr


@pytest.mark.parametrize(
    ("overrides", "task", "needle"),
    [
        (
            {"rke2_artifact_sha256": ""},
            "Refuse an unpinned download",
            "Nothing is downloaded without a pinned checksum",
        ),
        (
            {"rke2_artifact_url": "ftp://mirror"},
            "Check the role, the version and the artefact source",
            "EU mirror",
        ),
        (
            {"rke2_role": "agent"},
            "Every node but the first server joins an existing one",
            "rke2_server_url is empty",
        ),
        ({"rke2_token": "x" * 40}, "Refuse a missing, ambiguous or weak join token", "from both sources"),
        (
            {"rke2_token_openbao_path": "sovereign/none"},
            "Refuse an unreadable OpenBao token secret",
            "answered 404",
        ),
        (
            {"rke2_token_openbao_path": "", "rke2_token": "short"},
            "Refuse a missing, ambiguous or weak join token",
            "got 5 characters",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_changes(
    lab: Lab, mirror: tuple[Mirror, str], bao: Bao, join_token: str, monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any], task: str, needle: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("BAO_TOKEN", bao.root)
    run = run_playbook(PLAYBOOK, rke2_inventory(lab, mirror, bao, **overrides))
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith(f"node1: {task}:") and needle in failure, failure
    assert sum(run.changed.values()) == 0
