"""The Ansible inventory of a region stack, built from the stack config and the created servers.

Groups: ``bastion`` (reached directly), ``control_plane``, ``workers`` and ``gpu`` (reached
through the bastion with ProxyJump; they have no public address). The group names and the
variables set here are the contract with the roles (``roles/``, ``playbooks/cluster.yml``):

- every host is reached as the key-only sudo user ``ops`` (cloud-init creates it on the cloud
  servers; on the Robot GPU servers installimage's post-install script does, see
  docs/host-roles.md), because the hardening role forbids root logins;
- ``hardening_*``: SSH only from the admin ranges (bastion) or from the bastion (nodes), TCP
  forwarding ("local") only on the bastion, which ProxyJump goes through; the
  cluster ports open to the private network only; the bastion forwards and masquerades the
  private network (it is the NAT) but is no Kubernetes node;
- ``rke2_*``: the pinned release on the EU mirror with its checksum; the first control-plane
  server initialises the cluster, every other node joins it;
- ``nvidia_gpu_*``: the driver branch, the toolkit version and the EU mirror of NVIDIA's
  repositories for the GPU servers, which are tainted for GPU workloads only;
- GPU servers: ``vswitch_vlan_id`` and ``private_ip`` for the ``vswitch`` role (the VLAN link to
  the cloud network), their public uplink closed to new inbound traffic
  (``hardening_public_interfaces``) and open outbound only to the declared destinations
  (``hardening_uplink_destinations``, the bastion NAT's list: ``egress.nat_flows``), and Canal
  told to use the private network's interface on every node (``rke2_canal_*``).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from infra import egress, objectstore
from infra.config import StackConfig

ADMIN_USER = "ops"
# cloud servers are initialised by the hcloud cloud-controller-manager (infra/k8s_platform/
# cluster_services.py): kubelet with --cloud-provider=external from their first join; the Robot
# GPU servers are not (the CCM runs without Robot support) and keep RKE2's defaults
CLOUD_NODE = {"rke2_cloud_provider_name": "external"}
SUPERVISOR_PORT = 9345


def _nvidia_vars(cfg: StackConfig) -> dict[str, Any]:
    pool = cfg.gpu_pool
    found: dict[str, Any] = {
        "nvidia_gpu_driver_branch": pool.driver_branch,
        "nvidia_gpu_container_toolkit_version": pool.container_toolkit_version,
    }
    if pool.nvidia_apt_mirror:
        mirror = pool.nvidia_apt_mirror.rstrip("/")
        os_dir = "{{ 'ubuntu2404' if ansible_distribution == 'Ubuntu' else 'debian12' }}"
        cuda = f"{mirror}/cuda/{os_dir}/x86_64"
        toolkit = f"{mirror}/libnvidia-container/stable/deb/amd64"
        found |= {
            "nvidia_gpu_cuda_repository_url": cuda,
            "nvidia_gpu_cuda_repository_key": f"{cuda}/key.asc",
            "nvidia_gpu_container_toolkit_repository_url": toolkit,
            "nvidia_gpu_container_toolkit_repository_key": f"{toolkit}/key.asc",
        }
    return found


def _etcd_snapshot_vars(cfg: StackConfig) -> dict[str, Any]:
    """The servers' etcd snapshot settings; the S3 access keys are not here (they are Pulumi secrets
    that `sovereign converge` passes as extra variables, never in the inventory)."""
    snapshots = cfg.rke2.etcd_snapshots
    if snapshots is None:
        return {"rke2_etcd_s3": False}
    return {
        "rke2_etcd_snapshot_schedule_cron": snapshots.schedule_cron,
        "rke2_etcd_snapshot_retention": snapshots.local_retention,
        "rke2_etcd_s3": True,
        # RKE2 takes a host[:port] (TLS unless etcd-s3-insecure, which the role never sets)
        "rke2_etcd_s3_endpoint": urlsplit(cfg.endpoints.object_storage).netloc,
        "rke2_etcd_s3_region": objectstore.stack_region(cfg) or "",
        "rke2_etcd_s3_bucket": snapshots.bucket,
        "rke2_etcd_s3_folder": snapshots.folder,
        "rke2_etcd_s3_retention": snapshots.retention,
    }


# Hetzner's vSwitch carries at most 1400-byte packets
# (https://docs.hetzner.com/robot/dedicated-server/network/vswitch), a cloud network's interfaces
# 1450 (https://docs.hetzner.com/cloud/networks/technical-concepts/architecture); flannel's VXLAN
# header takes 50 of them, so pods get 1400, or 1350 wherever a pod packet may cross the vSwitch.
# The chart's own default (rke2-canal values.yaml, calico.vethuMTU: 1450) fits neither.
CLOUD_NETWORK_MTU = 1450
VSWITCH_MTU = 1400
VXLAN_OVERHEAD = 50


def address_regex(network: ipaddress.IPv4Network) -> str:
    """An anchored regular expression that matches exactly the addresses of *network* as dotted
    quads (flannel's --iface-regex is matched against each interface's addresses first)."""
    octets = network.network_address.packed
    last = network.broadcast_address.packed
    parts = []
    for first, final in zip(octets, last, strict=True):
        if first == final:
            parts.append(str(first))
        elif (first, final) == (0, 255):
            parts.append("[0-9]{1,3}")
        else:
            parts.append("(?:" + "|".join(str(n) for n in range(first, final + 1)) + ")")
    return "^" + r"\.".join(parts) + "$"


def _gpu_network_vars(cfg: StackConfig) -> dict[str, Any]:
    """Canal over the private network on every node: flannel's interface is the one holding a
    private address (on a GPU server the vSwitch link, not the public uplink its default route
    uses; rancher/rke2#1889), and pods' MTU fits the smallest link a pod packet crosses."""
    link = VSWITCH_MTU if cfg.gpu_pool.servers else CLOUD_NETWORK_MTU
    return {
        "rke2_canal_iface_regex": address_regex(cfg.network.ip_range),
        "rke2_canal_veth_mtu": link - VXLAN_OVERHEAD,
    }


def build(
    cfg: StackConfig,
    *,
    bastion_public_ip: str,
    control_plane: dict[str, str],
    workers: dict[str, str],
    gpu_hosts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Inventory in Ansible's JSON/YAML form; the maps are node name → private IP."""
    ssh_args = f"-o ProxyJump={ADMIN_USER}@{bastion_public_ip} -o StrictHostKeyChecking=accept-new"
    bastion_ip = str(cfg.network.bastion_ip)
    node = {"ansible_ssh_common_args": ssh_args, "hardening_ssh_allowed_sources": [bastion_ip]}
    first_server = next(iter(control_plane.values()), None)
    server_url = f"https://{first_server}:{SUPERVISOR_PORT}" if first_server else ""
    release = cfg.rke2.release_url()
    return {
        "all": {
            "vars": {
                "ansible_user": ADMIN_USER,
                "sovereign_stack": cfg.stack,
                "sovereign_jurisdiction": cfg.region.jurisdiction,
                "sovereign_network_cidr": str(cfg.network.ip_range),
                "sovereign_network_gateway": str(cfg.network.network_gateway),
                "sovereign_vswitch_subnet": str(cfg.network.vswitch_subnet),
                "sovereign_gateway_lb_ip": str(cfg.load_balancer.private_ip),
                # `sovereign tunnel` (infra/hosts/tunnel.py) and the kubeconfig `sovereign converge` prints
                "sovereign_api_tunnel_port": cfg.admin.api_tunnel_port,
                "sovereign_registry_mirror": cfg.endpoints.registry_mirror,
                "hardening_private_cidrs": [str(cfg.network.ip_range)],
                "rke2_version": cfg.rke2.version,
                "rke2_profile": cfg.rke2.profile,
                "rke2_artifact_url": release or "",
                "rke2_artifact_sha256": cfg.rke2.artifact_sha256 or "",
                "rke2_airgap_images": cfg.rke2.airgap_images,
                "rke2_airgap_images_sha256": cfg.rke2.airgap_images_sha256 or "",
                "rke2_registry_mirror": cfg.endpoints.registry_mirror or "",
                **_gpu_network_vars(cfg),
                **_etcd_snapshot_vars(cfg),
            },
            "children": {
                "bastion": {
                    "hosts": {
                        f"{cfg.stack}-bastion": {
                            "ansible_host": bastion_public_ip,
                            "private_ip": bastion_ip,
                            "hardening_ssh_allowed_sources": [str(c) for c in cfg.admin.cidrs],
                            "hardening_kubernetes_node": False,
                            # ProxyJump to every node and the operator's tunnels go through it
                            "hardening_ssh_allow_tcp_forwarding": "local",
                            "hardening_nat_sources": [str(cfg.network.ip_range)],
                            # forwarded and masqueraded to the declared destinations only (issue #23)
                            "hardening_nat_destinations": [d.as_vars() for d in egress.nat_flows(cfg)],
                            "hardening_private_cidrs": [],
                        }
                    }
                },
                "control_plane": {
                    # the hcloud CCM (platform layer) initialises the cloud servers, not RKE2's own
                    "vars": {**node, **CLOUD_NODE, "rke2_disable_cloud_controller": True},
                    "hosts": {
                        n: {
                            "ansible_host": ip,
                            "private_ip": ip,
                            # the first server initialises the cluster; the others join it
                            "rke2_server_url": "" if ip == first_server else server_url,
                        }
                        for n, ip in control_plane.items()
                    },
                },
                "workers": {
                    "vars": {**node, **CLOUD_NODE, "rke2_server_url": server_url},
                    "hosts": {n: {"ansible_host": ip, "private_ip": ip} for n, ip in workers.items()},
                },
                "gpu": {
                    "vars": {
                        **node,
                        "rke2_server_url": server_url,
                        "rke2_node_taints": ["nvidia.com/gpu=present:NoSchedule"],  # GPU workloads only
                        # the public uplink takes nothing new: SSH and the cluster come over the
                        # vSwitch (the `vswitch` role; ansible_host is the vSwitch address)
                        "hardening_public_interfaces": ["{{ ansible_default_ipv4.interface | default('') }}"],
                        # and lets out only what the bastion's NAT lets out: the declared
                        # destinations and Hetzner's resolvers, for the host and its pods alike
                        "hardening_uplink_destinations": [d.as_vars() for d in egress.nat_flows(cfg)],
                        **_nvidia_vars(cfg),
                    },
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
