"""The GPU servers' network, without a host: the vswitch role's input checks
(roles/vswitch/filter_plugins/vswitch.py), what the role writes (rendered through Ansible
itself), the Canal settings of the rke2 role, and what the stack inventory hands them. The role's
behaviour on a booted host is tests/hosts/test_vswitch.py."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from infra import config
from infra.components import gpu_pool
from infra.hosts import inventory
from infra.hosts.converge import run_playbook
from tests.infra.support import REPO, sections

GOOD: dict[str, Any] = {
    "vlan_id": 4000,
    "address": "10.20.2.11",
    "subnet": "10.20.2.0/24",
    "cloud_network": "10.20.0.0/16",
    "gateway": "10.20.2.1",
    "mtu": 1400,
    "interface": "enp35s0.4000",
    "parent": "enp35s0",
    "interfaces": ["lo", "enp35s0"],
}


def _load() -> ModuleType:
    path = REPO / "roles" / "vswitch" / "filter_plugins" / "vswitch.py"
    spec = importlib.util.spec_from_file_location("vswitch_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vs = _load()


def problems(**changes: Any) -> list[str]:
    return vs.vswitch_problems(**(GOOD | changes))  # type: ignore[no-any-return]


def test_a_usable_vswitch_has_no_problems() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    ("changes", "variable", "fix"),
    [
        ({"vlan_id": 3999}, "vswitch_vlan_id", "4000-4091"),
        ({"vlan_id": 4092}, "vswitch_vlan_id", "4000-4091"),
        ({"vlan_id": "four"}, "vswitch_vlan_id", "gpu_pool.vlan_id"),
        ({"address": "10.20.3.11"}, "vswitch_address", "network.vswitch_subnet"),
        ({"address": "10.20.2.1"}, "vswitch_address", "gateway"),  # Hetzner's vSwitch gateway
        ({"address": "10.20.2.255"}, "vswitch_address", "host address"),
        ({"address": "not-an-ip"}, "vswitch_address", "private_ip"),
        ({"subnet": "10.20.2.1/24"}, "vswitch_subnet", "CIDR"),
        ({"subnet": "10.30.2.0/24"}, "vswitch_subnet", "network.ip_range"),
        ({"cloud_network": "10.20.0.0/33"}, "vswitch_cloud_network", "network.ip_range"),
        ({"gateway": "10.20.3.1"}, "vswitch_gateway", "first usable address"),
        ({"mtu": 1500}, "vswitch_mtu", "1400"),
        ({"interface": "enp193s0f0np0.4000"}, "vswitch_interface", "15 characters"),
        ({"parent": ""}, "vswitch_parent_interface", "main IP"),
        ({"parent": "eth9"}, "vswitch_parent_interface", "ip -br link"),
    ],
)
def test_each_unusable_input_is_named_with_its_fix_and_never_echoed(
    changes: dict[str, Any], variable: str, fix: str
) -> None:
    found = problems(**changes)
    (problem,) = [p for p in found if p.startswith(f"{variable}: ")]
    assert fix in problem
    (value,) = changes.values()
    if value:
        assert not [p for p in found if str(value) in p]  # the value is never repeated


def test_the_link_is_named_after_its_uplink_unless_linux_would_refuse_the_name() -> None:
    assert vs.vswitch_interface_name("enp35s0", 4000) == "enp35s0.4000"
    assert vs.vswitch_interface_name("enp193s0f0np0", 4001) == "vlan4001"  # 18 characters otherwise


def test_the_gateway_is_the_first_usable_address_of_the_vswitch_subnet() -> None:
    # docs.hetzner.com/networking/networks/technical-concepts/architecture: 10.0.1.1 in 10.0.1.0/24
    assert vs.vswitch_gateway("10.0.1.0/24") == "10.0.1.1"
    assert vs.vswitch_gateway("10.20.2.0/24") == "10.20.2.1"
    assert vs.vswitch_gateway("nonsense") == ""


def stack(name: str = "eu-central-prod") -> dict[str, Any]:
    cfg = config.parse(name, sections(name), "t")
    return inventory.build(
        cfg,
        bastion_public_ip="198.51.100.7",
        control_plane={"cp-1": "10.20.1.11"},
        workers={"w-1": "10.20.1.21"},
        gpu_hosts=gpu_pool.declared_hosts(cfg),
    )


def test_the_inventory_gives_each_gpu_server_what_the_vswitch_role_needs() -> None:
    inv = stack()
    all_vars = inv["all"]["vars"]
    gpu = inv["all"]["children"]["gpu"]
    assert gpu["hosts"], "the prod example stack declares GPU servers"
    for host in gpu["hosts"].values():
        # the role's own checks accept what the inventory hands it
        assert (
            vs.vswitch_problems(
                host["vswitch_vlan_id"],
                host["private_ip"],
                all_vars["sovereign_vswitch_subnet"],
                all_vars["sovereign_network_cidr"],
                vs.vswitch_gateway(all_vars["sovereign_vswitch_subnet"]),
                1400,
                "enp35s0.4000",
                "enp35s0",
            )
            == []
        )
        assert host["ansible_host"] == host["private_ip"]  # Ansible comes over the vSwitch
    # the uplink closes; its name comes from the host's default route
    uplink = "{{ ansible_default_ipv4.interface | default('') }}"
    assert gpu["vars"]["hardening_public_interfaces"] == [uplink]
    for group in ("control_plane", "workers", "bastion"):
        assert "hardening_public_interfaces" not in inv["all"]["children"][group].get("vars", {})


def test_canal_is_told_to_use_the_private_network_on_every_node() -> None:
    inv = stack()
    pattern = re.compile(inv["all"]["vars"]["rke2_canal_iface_regex"])
    network = ipaddress.IPv4Network(inv["all"]["vars"]["sovereign_network_cidr"])
    for group in ("control_plane", "workers", "gpu"):
        for host in inv["all"]["children"][group]["hosts"].values():
            assert pattern.match(host["private_ip"])
    assert pattern.match(str(network.network_address)) and pattern.match(str(network.broadcast_address))
    for outside in ("198.51.100.7", "10.42.0.5", "10.21.0.1", "110.20.1.1", "10.20.1.1.5"):
        assert not pattern.match(outside), outside
    assert inv["all"]["vars"]["rke2_canal_veth_mtu"] == 1350  # 1400 on the vSwitch, less VXLAN's 50


def test_a_stack_without_gpu_servers_fits_pods_to_the_cloud_network() -> None:
    inv = stack("eu-north-dr")
    assert not inv["all"]["children"]["gpu"]["hosts"]
    # a cloud network's interfaces carry 1450, less VXLAN's 50 (the chart's 1450 would not fit)
    assert inv["all"]["vars"]["rke2_canal_veth_mtu"] == 1400


@pytest.mark.parametrize("cidr", ["10.20.0.0/16", "172.16.0.0/12", "10.20.0.0/20", "192.168.8.0/22"])
def test_the_address_regex_matches_exactly_the_network(cidr: str) -> None:
    network = ipaddress.IPv4Network(cidr)
    pattern = re.compile(inventory.address_regex(network))
    first, last = int(network.network_address), int(network.broadcast_address)
    for value in (first, first + 1, (first + last) // 2, last):
        assert pattern.match(str(ipaddress.IPv4Address(value)))
    for value in (first - 1, last + 1):
        assert not pattern.match(str(ipaddress.IPv4Address(value)))


def render(tmp_path: Path, **extravars: Any) -> Any:
    localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return run_playbook(
        REPO / "tests" / "infra" / "playbooks" / "vswitch_render.yml",
        {"all": {"hosts": {"localhost": localhost}}},
        {
            "render_dest": str(tmp_path),
            "vswitch_vlan_id": 4000,
            "vswitch_address": "10.20.2.11",
            "vswitch_subnet": "10.20.2.0/24",
            "vswitch_cloud_network": "10.20.0.0/16",
            "vswitch_parent_interface": "lo",  # an interface this machine has
            "rke2_canal_iface_regex": inventory.address_regex(ipaddress.IPv4Network("10.20.0.0/16")),
            "rke2_canal_veth_mtu": 1350,
        }
        | extravars,
    )


def test_the_unit_tags_the_vswitch_vlan_with_mtu_1400_and_routes_the_network_through_its_gateway(
    tmp_path: Path,
) -> None:
    run = render(tmp_path)
    assert run.rc == 0, run.failures
    unit = (tmp_path / "sovereign-vswitch.service").read_text()
    commands = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert commands == [
        "ip link add link lo name lo.4000 mtu 1400 type vlan id 4000",
        "ip address add 10.20.2.11/24 dev lo.4000",
        "ip link set dev lo.4000 up",
        "ip route add 10.20.0.0/16 via 10.20.2.1 dev lo.4000",
    ]
    assert "ExecStop=ip link delete lo.4000" in unit
    assert "Before=network-online.target rke2-agent.service rke2-server.service" in unit
    assert "WantedBy=multi-user.target" in unit
    networkd = (tmp_path / "05-sovereign-vswitch.network").read_text()
    assert "Name=lo.4000" in networkd and "Unmanaged=yes" in networkd


def test_the_canal_settings_reach_the_chart_values(tmp_path: Path) -> None:
    run = render(tmp_path)
    assert run.rc == 0, run.failures
    doc = yaml.safe_load((tmp_path / "rke2-canal-config.yaml").read_text())
    assert (doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"]) == (
        "HelmChartConfig",
        "rke2-canal",
        "kube-system",
    )
    values = yaml.safe_load(doc["spec"]["valuesContent"])
    assert values == {
        "flannel": {"regexIface": r"^10\.20\.[0-9]{1,3}\.[0-9]{1,3}$"},
        "calico": {"vethuMTU": 1350},
    }


def test_bad_inputs_stop_the_role_naming_each_variable_and_no_value(tmp_path: Path) -> None:
    run = render(tmp_path, vswitch_vlan_id=3999, vswitch_address="10.20.2.1")
    assert run.rc != 0
    (failure,) = run.failures
    assert "Refuse inputs the vSwitch cannot carry" in failure
    assert "vswitch_vlan_id: not a vSwitch VLAN id" in failure and "4000-4091" in failure
    assert "vswitch_address: the vSwitch gateway's address" in failure
    assert "3999" not in failure and "10.20.2.1" not in failure
    assert not (tmp_path / "sovereign-vswitch.service").exists()  # stopped before anything was written
