"""Stack config validation: one test per rule, each with the bad input it rejects."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config
from tests.infra.support import EXAMPLES, sections


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as info:
        config.parse("test-stack", data, "test")
    return [str(p) for p in info.value.problems]


def one_problem(data: dict[str, Any]) -> str:
    found = problems_of(data)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("stack", EXAMPLES)
def test_example_stacks_are_valid(stack: str) -> None:
    cfg = config.parse(stack, sections(stack), stack)
    assert cfg.region.jurisdiction in {"DE", "FI"}


def test_prod_example_matches_the_intended_layout() -> None:
    cfg = config.parse("eu-central-prod", sections(), "x")
    assert (cfg.control_plane.location, cfg.control_plane.count) == ("fsn1", 3)
    assert cfg.workers.location == "nbg1"
    assert {s.datacenter for s in cfg.gpu_pool.servers} == {"FSN1-DC14"}
    assert cfg.network.vswitch_subnet.overlaps(cfg.network.ip_range)


@pytest.mark.parametrize(("section", "where"), [("control_plane", "Ashburn"), ("workers", "Hillsboro")])
def test_non_eu_cloud_location_is_refused_citing_art_44(section: str, where: str) -> None:
    data = sections()
    data[section]["location"] = "ash" if section == "control_plane" else "hil"
    problem = one_problem(data)
    assert problem.startswith(f"sovereign-llm:{section}.location: ")
    assert where in problem and "GDPR Art. 44" in problem and "fsn1, nbg1, hel1" in problem


def test_unknown_location_lists_the_allowed_ones() -> None:
    data = sections()
    data["bastion"]["location"] = "fra1"
    problem = one_problem(data)
    assert problem.startswith("sovereign-llm:bastion.location: unknown Hetzner Cloud location; allowed: fsn1")
    assert "fra1" not in problem  # the value is never repeated (gateway/validation.py)


def test_non_eu_network_zone_is_refused() -> None:
    data = sections()
    data["network"]["zone"] = "us-east"
    assert "GDPR Art. 44" in one_problem(data)


def test_gpu_server_outside_an_eu_data_centre_is_refused() -> None:
    data = sections()
    data["gpu_pool"]["servers"][0]["datacenter"] = "ASH-DC1"
    problem = one_problem(data)
    assert "gpu_pool.servers.0.datacenter: not an EU" in problem and "GDPR Art. 44" in problem
    assert "ASH" not in problem


def test_jurisdiction_must_be_eu_or_eea() -> None:
    data = sections()
    data["region"]["jurisdiction"] = "US"
    problem = one_problem(data)
    assert "region.jurisdiction: not an EU/EEA country code" in problem and "'US'" not in problem


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("object_storage", "https://s3.us-east-1.amazonaws.com", "not on the EU allowlist"),
        ("model_source", "s3://models/?endpoint=storage.googleapis.com", "not on the EU allowlist"),
        ("registry_mirror", "https://registry-1.docker.io", "not on the EU allowlist"),
        ("pulumi_backend", "https://api.pulumi.com", "Pulumi Cloud"),
        ("pulumi_backend", "s3://state", "has no host name"),
    ],
)
def test_endpoint_outside_the_boundary_is_refused(key: str, value: str, expected: str) -> None:
    data = sections()
    data["endpoints"][key] = value
    problem = one_problem(data)
    assert problem.startswith(f"sovereign-llm:endpoints.{key}: ")
    assert value not in problem and value.split("//")[-1].split("/")[0] not in problem  # nor its host
    assert expected in problem
    if "has no host" not in expected:
        assert "GDPR Art. 44" in problem


def test_extra_host_must_name_an_eu_jurisdiction() -> None:
    data = sections()
    data["residency"]["extra_hosts"][0]["jurisdiction"] = "CH"
    assert "residency.extra_hosts.0.jurisdiction: not an EU/EEA country code" in one_problem(data)


def test_unlisted_self_hosted_registry_is_refused_until_declared() -> None:
    data = sections()
    extra = data["residency"]["extra_hosts"]
    data["residency"]["extra_hosts"] = [h for h in extra if h["host"] != "registry.sovereign.example.de"]
    # refused as an endpoint, and as the host of its declared egress destination
    problems = problems_of(data)
    assert any("endpoints.registry_mirror: its host is not on the EU allowlist" in p for p in problems)
    assert any("egress.destinations.2.host: its host is not on the EU allowlist" in p for p in problems)


def test_private_and_cluster_local_endpoints_are_inside_the_boundary() -> None:
    data = sections()
    data["endpoints"]["registry_mirror"] = "https://10.20.1.40:5000"
    data["endpoints"]["model_source"] = "http://minio.storage.svc.cluster.local:9000/models"
    config.parse("t", data, "t")


def test_saas_backend_needs_override_with_justification() -> None:
    data = sections()
    data["endpoints"]["pulumi_backend"] = "https://api.pulumi.com"
    data["backend"] = {"allow_saas": True}
    assert "backend: " in one_problem(data) and "justification" in one_problem(data)
    data["backend"]["justification"] = "evaluation account, no patient data"
    assert config.parse("t", data, "t").backend.allow_saas


def test_prod_needs_an_ha_control_plane() -> None:
    data = sections()
    data["control_plane"]["count"] = 1
    assert "control_plane.count: 1" in one_problem(data) and "3 or 5" in one_problem(data)


def test_cross_section_problems_are_data_key_by_key() -> None:
    """Two cross-section problems of one config: each with its own key, its words whole (colons
    of their own included), as StackConfig._cross_checks made them (CrossCheckProblems)."""
    data = sections()
    data["control_plane"]["count"] = 1
    data["storage"]["audit_lock_mode"] = "GOVERNANCE"
    with pytest.raises(config.StackConfigError) as info:
        config.parse("test-stack", data, "test")
    found = {p.path: p.message for p in info.value.problems}
    assert set(found) == {"sovereign-llm:control_plane.count", "sovereign-llm:storage.audit_lock_mode"}
    assert found["sovereign-llm:control_plane.count"].startswith("1 — region.environment 'prod' needs an HA")
    assert found["sovereign-llm:control_plane.count"].endswith("control plane: 3 or 5")


def test_even_control_plane_breaks_etcd_quorum() -> None:
    data = sections()
    data["control_plane"]["count"] = 4
    assert "odd number" in one_problem(data)


def test_ssh_open_to_the_world_is_refused() -> None:
    data = sections()
    data["admin"]["cidrs"] = ["0.0.0.0/0"]
    problem = one_problem(data)
    assert "admin.cidrs" in problem and "whole internet" in problem


def test_private_key_pasted_as_public_key_is_refused_without_echo_of_other_keys() -> None:
    data = sections()
    data["admin"]["ssh_keys"][0]["public_key"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
    assert "not an OpenSSH public key line" in one_problem(data)


def test_public_ip_range_is_refused() -> None:
    data = sections()
    data["network"]["ip_range"] = "8.8.0.0/16"
    assert "network.ip_range: must be a private (RFC 1918) range" in problems_of(data)[0]


def test_subnets_must_fit_the_network() -> None:
    data = sections()
    data["network"]["vswitch_subnet"] = "10.99.2.0/24"
    assert "vswitch_subnet 10.99.2.0/24 is not inside ip_range" in one_problem(data)


def test_gpu_server_address_must_be_in_the_vswitch_subnet() -> None:
    data = sections()
    data["gpu_pool"]["servers"][1]["private_ip"] = "10.20.1.12"
    problem = one_problem(data)
    assert "gpu_pool.servers.1.private_ip: 10.20.1.12" in problem and "vswitch_subnet" in problem


@pytest.mark.parametrize("address", ["10.20.2.0", "10.20.2.1", "10.20.2.255"])
def test_gpu_server_address_must_not_be_the_vswitch_gateway_or_the_subnet_edges(address: str) -> None:
    data = sections()
    data["gpu_pool"]["servers"][0]["private_ip"] = address
    problem = one_problem(data)
    assert f"gpu_pool.servers.0.private_ip: {address}" in problem and "vSwitch gateway" in problem


def test_gpu_servers_need_a_vswitch() -> None:
    data = sections()
    del data["gpu_pool"]["vswitch_id"]
    assert "vswitch_id is required" in one_problem(data)


def test_load_balancer_address_must_not_collide_with_a_server() -> None:
    data = sections()
    data["load_balancer"]["private_ip"] = "10.20.1.11"
    assert "load_balancer.private_ip: 10.20.1.11" in one_problem(data)


def test_missing_required_section_and_unknown_keys_are_named() -> None:
    data = sections()
    del data["admin"]
    data["workers"]["cout"] = 3
    found = problems_of(data)
    assert "sovereign-llm:admin: missing" in found[0] or "sovereign-llm:admin: missing" in found[1]
    assert any(p.startswith("sovereign-llm:workers.cout: unknown key") for p in found)


def test_unknown_section_is_named() -> None:
    data = sections()
    data["gpupool"] = {}
    assert one_problem(data).startswith("sovereign-llm:gpupool: unknown section")


def test_every_field_is_documented() -> None:
    for name in config.SECTIONS:
        model = config.StackConfig.model_fields[name].annotation
        assert isinstance(model, type)
        for field_name, field in model.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"


def test_even_raft_membership_breaks_openbao_quorum() -> None:
    data = sections()
    data["platform"]["openbao"]["replicas"] = 4
    problem = one_problem(data)
    assert "platform.openbao.replicas: Raft needs an odd number" in problem


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("rke2", "artifact_url", "https://github.com/rancher/rke2/releases/download/{version}"),
        ("gpu_pool", "nvidia_apt_mirror", "https://developer.download.nvidia.com/compute"),
    ],
)
def test_host_artefact_sources_must_be_inside_the_boundary(section: str, key: str, value: str) -> None:
    data = sections()
    data[section][key] = value
    problem = one_problem(data)
    assert problem.startswith(f"sovereign-llm:{section}.{key}: ") and "GDPR Art. 44" in problem


def test_rke2_checksums_must_be_sha256_and_airgap_images_pinned() -> None:
    data = sections()
    data["rke2"]["artifact_sha256"] = "not-a-checksum"
    problem = one_problem(data)
    assert problem.startswith("sovereign-llm:rke2.artifact_sha256: ") and "not-a-checksum" not in problem
    data = sections()
    data["rke2"]["airgap_images"] = True
    assert "airgap_images: true needs airgap_images_sha256" in one_problem(data)


def test_rke2_release_url_takes_the_version() -> None:
    cfg = config.parse("eu-central-prod", sections(), "x")
    assert cfg.rke2.release_url() == (
        "https://fsn1.your-objectstorage.com/sovereign-artefacts/rke2/v1.33.5+rke2r1"
    )


def test_model_replicas_must_fit_the_gpu_server_that_holds_their_weights() -> None:
    """The weights volume is one GPU server's disk (local-path): every replica mounts it, so all
    replicas run there; more GPUs than that server has leave replicas Pending forever."""
    data = sections()
    model = data["platform"]["models"][0]
    model["max_replicas"] = 2  # two GEX44s with one GPU each: the second replica has no GPU beside the volume
    problem = one_problem(data)
    assert problem.startswith("sovereign-llm:platform.models.0.max_replicas: 2")
    assert "GPU server gpu-fsn1-1 has 1; set max_replicas to 1" in problem  # its gpu_server
    # a server with two GPUs holds both replicas
    data["gpu_pool"]["servers"][0]["gpus"] = 2
    config.parse("eu-central-prod", data, "test")
    # a class whose volumes are not bound to one node (e.g. a ReadWriteMany one) is not limited
    data = sections()
    data["platform"]["models"][0]["max_replicas"] = 2
    del data["platform"]["models"][1]  # the embedding model's GPU: the pool has two (the sum is checked too)
    data["platform"]["memory_store"]["dimensions"] = 1024  # without the model, the store's length is given
    del data["platform"]["models"][0]["gpu_server"]  # pinned, its replicas would all run on that server
    data["platform"]["weights_storage_class"] = "nfs-weights"
    config.parse("eu-central-prod", data, "test")


def test_a_destination_takes_at_most_15_ports() -> None:
    # the bastion's bootstrap NAT matches a destination's ports in one iptables multiport rule, which
    # takes "up to 15 ports" (iptables-extensions(8), multiport)
    data = sections("eu-central-prod")
    data["egress"]["destinations"][0]["ports"] = list(range(8001, 8016))  # 15: the most multiport takes
    config.parse("eu-central-prod", data, "test")
    data["egress"]["destinations"][0]["ports"] = list(range(8001, 8017))  # 16
    [problem] = problems_of(data)
    assert problem.startswith("sovereign-llm:egress.destinations.0.ports:")
    assert "at most 15" in problem and "as a second destination (its own name)" in problem
    assert "8016" not in problem and "16" not in problem  # the limit and the fix, never the value
