"""The Ansible inventory of a region stack, built from the stack config and the created servers.

Groups: ``bastion`` (reached directly), ``control_plane``, ``workers`` and ``gpu`` (reached
through the bastion with ProxyJump; they have no public address). The group names are the
contract with the roles (``roles/``, ``playbooks/cluster.yml``).
"""

from __future__ import annotations

from typing import Any

from infra.config import StackConfig


def build(
    cfg: StackConfig,
    *,
    bastion_public_ip: str,
    control_plane: dict[str, str],
    workers: dict[str, str],
    gpu_hosts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Inventory in Ansible's JSON/YAML form; the maps are node name → private IP."""
    ssh_args = f"-o ProxyJump=root@{bastion_public_ip} -o StrictHostKeyChecking=accept-new"
    jump = {"ansible_ssh_common_args": ssh_args}
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "sovereign_stack": cfg.stack,
                "sovereign_jurisdiction": cfg.region.jurisdiction,
                "sovereign_network_cidr": str(cfg.network.ip_range),
                "sovereign_network_gateway": str(cfg.network.network_gateway),
                "sovereign_vswitch_subnet": str(cfg.network.vswitch_subnet),
                "sovereign_gateway_lb_ip": str(cfg.load_balancer.private_ip),
                "sovereign_registry_mirror": cfg.endpoints.registry_mirror,
                "rke2_version": cfg.rke2.version,
                "rke2_profile": cfg.rke2.profile,
                # the first control-plane server initialises the cluster; the others join it
                "rke2_server_url": f"https://{next(iter(control_plane.values()))}:9345"
                if control_plane
                else None,
            },
            "children": {
                "bastion": {
                    "hosts": {
                        f"{cfg.stack}-bastion": {
                            "ansible_host": bastion_public_ip,
                            "private_ip": str(cfg.network.bastion_ip),
                        }
                    }
                },
                "control_plane": {
                    "vars": jump,
                    "hosts": {n: {"ansible_host": ip, "private_ip": ip} for n, ip in control_plane.items()},
                },
                "workers": {
                    "vars": jump,
                    "hosts": {n: {"ansible_host": ip, "private_ip": ip} for n, ip in workers.items()},
                },
                "gpu": {
                    "vars": jump,
                    "hosts": {
                        h["name"]: {
                            "ansible_host": h["private_ip"],
                            "private_ip": h["private_ip"],
                            "robot_server_number": h["server_number"],
                            "robot_datacenter": h["datacenter"],
                            "vswitch_vlan_id": h["vlan_id"],
                            "gpu_count": h["gpus"],
                        }
                        for h in gpu_hosts
                    },
                },
            },
        }
    }


def hosts_of(inventory: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    hosts: dict[str, dict[str, Any]] = inventory["all"]["children"].get(group, {}).get("hosts") or {}
    return hosts
