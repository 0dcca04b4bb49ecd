"""The region stack: every component, wired. ``infra/__main__.py`` runs it under ``pulumi up``;
``sovereign plan`` runs the same function under Pulumi's mocks."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from infra import backend, chart_sources, config, images
from infra.components import api_access
from infra.components.cluster import Rke2Cluster
from infra.components.firewall import Firewalls
from infra.components.gpu_pool import GpuPool
from infra.components.load_balancer import GatewayLoadBalancer
from infra.components.network import PrivateNetwork
from infra.components.placement import PlacementGroups
from infra.components.servers import Bastion, NodePool
from infra.components.ssh_keys import SshKeys
from infra.config import ControlPlaneConfig, StackConfig, WorkersConfig
from infra.hosts import inventory
from infra.k8s_platform import secrets as platform_secrets
from infra.k8s_platform.layer import PlatformLayer


def deploy_blockers(cfg: StackConfig) -> list[str]:
    """What would stop a real ``pulumi up`` after servers exist, found before any is created.
    A plan shows them as warnings (a review of an unfinished stack is still useful)."""
    found = []
    if not cfg.rke2.artifact_url:
        found.append(
            "rke2.artifact_url is not set: the rke2 role downloads the release only from an EU mirror; "
            "mirror the release's assets there (docs/host-roles.md, rke2) and set its URL"
        )
    if not cfg.rke2.artifact_sha256:
        found.append(
            "rke2.artifact_sha256 is not set: the rke2 role downloads nothing unpinned; set the SHA-256 "
            "of rke2.linux-amd64.tar.gz from the release's sha256sum-amd64.txt"
        )
    if cfg.rke2.etcd_snapshots is not None:
        stack_config = pulumi.Config(config.PROJECT)
        for key in config.ETCD_SECRET_KEYS:
            if stack_config.get_secret(key) is None:
                found.append(
                    f"rke2.etcd_snapshots needs the S3 key {key}, a stack secret: "
                    f"`pulumi config set --secret {config.PROJECT}:{key}` (the object storage's key with "
                    "write access to the snapshot bucket only)"
                )
    # the platform's Secrets from stack secrets (gateway client keys, object-storage keys)
    found.extend(platform_secrets.missing(cfg))
    # every image by digest from the EU registry mirror: no mirror, and each image without a digest
    found.extend(images.blockers(cfg))
    # every Helm chart by digest from the same mirror (OCI), never from a vendor's repository
    found.extend(chart_sources.blockers(cfg))
    # the Secret kube-system/hcloud of the cloud controller and the CSI driver (cluster_services.py)
    if pulumi.Config("hcloud").get_secret("token") is None:
        found.append(
            "hcloud:token is not set: the Hetzner Cloud API token (read and write, this project only) "
            "that creates the servers and, as the Secret kube-system/hcloud, runs the cloud controller "
            "manager and the CSI driver: `pulumi config set --secret hcloud:token`"
        )
    return found


def declare(backend_url: str, *, role_digest: str | None = None, deploying: bool = True) -> dict[str, Any]:
    """What ``pulumi up`` runs: the stack's config from the engine, the backend guard, the
    resources, the exports. ``sovereign plan`` calls the same function under mocks
    (``deploying=False``: what would block a deploy is reported, not raised)."""
    cfg = config.from_pulumi()
    backend.check(cfg, backend_url)
    if deploying and (blockers := deploy_blockers(cfg)):
        # before any resource: without them the first server would be created, then converge fail
        raise config.StackConfigError(f"{cfg.stack} (not deployable yet)", blockers)
    outputs = build(cfg, role_digest=role_digest)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


def build(cfg: StackConfig, *, role_digest: str | None = None) -> dict[str, Any]:
    """Declare every resource of the stack; return the stack outputs (some are secret)."""
    prefix = cfg.stack
    network = PrivateNetwork(f"{prefix}-network", cfg)
    keys = SshKeys(f"{prefix}-ssh", cfg)
    firewalls = Firewalls(f"{prefix}-firewall", cfg)
    placement = PlacementGroups(f"{prefix}-placement", cfg)
    bastion = Bastion(f"{prefix}-bastion", cfg, network, keys.names)
    net = cfg.network

    def pool(
        role: str,
        section: ControlPlaneConfig | WorkersConfig,
        addresses: list[IPv4Address],
        groups: list[hcloud.PlacementGroup],
        name: str,
    ) -> NodePool:
        return NodePool(
            f"{prefix}-{name}",
            cfg,
            role=role,
            pool=section,
            addresses=addresses,
            network=network,
            placement_groups=groups,
            ssh_keys=keys.names,
            depends_on=[bastion.route, firewalls.nodes],
        )

    cp_cfg, workers_cfg = cfg.control_plane, cfg.workers
    control_plane = pool(
        "control-plane",
        cp_cfg,
        [net.control_plane_ip(i) for i in range(cp_cfg.count)],
        placement.control_plane,
        "control-plane",
    )
    workers = pool(
        "worker",
        workers_cfg,
        [net.worker_ip(i) for i in range(workers_cfg.count)],
        placement.workers,
        "workers",
    )
    gpu = GpuPool(f"{prefix}-gpu", cfg, network)
    lb = GatewayLoadBalancer(f"{prefix}-gateway-lb", cfg, network)

    hosts = pulumi.Output.from_input(bastion.public_ip).apply(
        lambda public_ip: inventory.build(
            cfg,
            bastion_public_ip=public_ip,
            control_plane=dict(zip(control_plane.names, control_plane.private_ips, strict=True)),
            workers=dict(zip(workers.names, workers.private_ips, strict=True)),
            gpu_hosts=gpu.hosts,
        )
    )
    cluster = Rke2Cluster(
        f"{prefix}-rke2",
        cfg,
        inventory=hosts,
        host_ids=[bastion.server.id, *control_plane.ids, *workers.ids],
        depends_on=[
            bastion.route,
            *control_plane.servers,
            *workers.servers,
            *([gpu.subnet] if gpu.subnet else []),
        ],
        role_digest=role_digest,
    )
    # the API is private: the platform's provider goes through the bastion tunnel (api_access.py)
    kubeconfig = api_access.tunnelled(cluster.kubeconfig, hosts)
    platform = PlatformLayer(
        f"{prefix}-platform", cfg, kubeconfig=kubeconfig, depends_on=[cluster], network_id=network.network.id
    )
    return {
        "gateway_service": (
            platform.gateway.service.metadata.apply(lambda m: f"{m['name']}.{m['namespace']}.svc")
            if platform.gateway is not None
            else "(phase 2: after OpenBao is initialised)"
        ),
        # the front door: the URL Magento calls and the CA it must trust (OpenBao mount pki-ingress)
        "gateway_url": f"https://{cfg.load_balancer.hostname}"
        + ("" if cfg.load_balancer.listen_port == 443 else f":{cfg.load_balancer.listen_port}"),
        "gateway_ingress_ca_pem": (
            platform.ingress.ca_pem
            if platform.ingress is not None
            else "(phase 2: after OpenBao is initialised)"
        ),
        "network_id": network.network.id,
        "bastion_public_ip": bastion.public_ip,
        "gateway_private_ip": lb.private_ip,
        "control_plane_private_ips": control_plane.private_ips,
        "worker_private_ips": workers.private_ips,
        "gpu_hosts": [h["name"] for h in gpu.hosts],
        # what `sovereign harden|verify --stack` read (addresses and settings, no secret)
        "inventory": hosts,
        "kubeconfig": cluster.kubeconfig,
    }
