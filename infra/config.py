"""The region stack's configuration: one typed model per section, validated before anything runs.

A stack file (``stacks/Pulumi.<stack>.yaml``) holds one Pulumi config key per section under
the project namespace (``sovereign-llm:network``, ``sovereign-llm:control_plane`` …), each an
object. ``pulumi up`` hands them to the program as JSON; ``sovereign plan`` reads the same file.
Every field has a documented default where a safe one exists; the rest are required.

Validation errors name the config key, the bad value and what is allowed. Residency is checked
here (EU locations, EU data centres, EU endpoints) and again over the rendered plan by the
policy rules, so a value that slips past one is caught by the other.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway import validation
from gateway.errors import BadInput
from gateway.validation import Problem
from infra import catalogue, residency
from infra.chart_sources import check_charts
from infra.images import check_images

PROJECT = "sovereign-llm"
SECTIONS = (
    "region",
    "network",
    "admin",
    "bastion",
    "control_plane",
    "workers",
    "gpu_pool",
    "load_balancer",
    "endpoints",
    "rke2",
    "residency",
    "backend",
    "platform",
    "storage",
    "evidence",
    "egress",
)

# Stack secrets under the project namespace that are no section: Pulumi secrets read by the
# program itself (infra/components/cluster.py), never parsed into the typed config (which lands
# in plan.json). Set with `pulumi config set --secret sovereign-llm:<key>`.
# stack secrets (`pulumi config set --secret sovereign-llm:KEY`), never in a section
ETCD_SECRET_KEYS = ("etcd_s3_access_key", "etcd_s3_secret_key")
# the platform's Secrets (infra/k8s_platform/secrets.py): the gateway's client-key store, the weights
# Job's read-only keys, the audit-ship sidecar's write-only keys, the OpenBao snapshot CronJob's (for
# the primary bucket and for the copy location, storage.openbao_snapshot_copy)
PLATFORM_SECRET_KEYS = (
    "gateway_client_keys",
    "models_s3_access_key",
    "models_s3_secret_key",
    "audit_s3_access_key",
    "audit_s3_secret_key",
    "openbao_snapshot_s3_access_key",
    "openbao_snapshot_s3_secret_key",
    "openbao_snapshot_copy_s3_access_key",
    "openbao_snapshot_copy_s3_secret_key",
    # the memory store's barman-cloud backups (platform.memory_store, infra/k8s_platform/memory_store.py)
    "memory_backup_s3_access_key",
    "memory_backup_s3_secret_key",
)
SECRET_KEYS = ETCD_SECRET_KEYS + PLATFORM_SECRET_KEYS

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            "must be 1-32 lowercase letters, digits or '-', starting and ending with a letter or digit "
            "(it becomes part of resource and DNS names), e.g. llama31-8b-awq"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class StackConfigError(BadInput, ValueError):
    """The stack config is invalid (exit 2); ``problems`` has one ``Problem`` per bad key, its key
    as the stack file spells it (``sovereign-llm:endpoints.registry_mirror``; "" where the file as
    a whole is refused), printed one per line after the message."""

    def __init__(self, source: str, problems: Sequence[Problem | str]) -> None:
        self.source = source
        self.problems = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        super().__init__(f"{source}: invalid stack config:")


class CrossCheckProblems(ValueError):
    """What StackConfig's cross-section checks found, one ``Problem`` (key, words) each; raised
    in its validator, where pydantic keeps the exception in the error's context, so the problems
    stay data until they are printed (``_format_errors``)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_location(value: str) -> str:
    if value in residency.HCLOUD_EU_LOCATIONS:
        return value
    allowed = ", ".join(residency.HCLOUD_EU_LOCATIONS)
    if value in residency.HCLOUD_NON_EU_LOCATIONS:
        where = residency.HCLOUD_NON_EU_LOCATIONS[value]
        raise ValueError(
            f"Hetzner location {where} is outside the EU; {residency.ART_44}. Allowed: {allowed}"
        )
    raise ValueError(f"unknown Hetzner Cloud location; allowed: {allowed}")


Location = Annotated[str, AfterValidator(_check_location)]


def _check_server_type(value: str) -> str:
    if problem := catalogue.load().server_type_problem(value):
        raise ValueError(problem)
    return value


ServerType = Annotated[str, AfterValidator(_check_server_type)]


def _check_jurisdiction(value: str) -> str:
    if value.upper() not in residency.EU_EEA_COUNTRIES:
        raise ValueError(f"not an EU/EEA country code; {residency.ART_44}. Use e.g. DE, FI, FR, NL")
    return value.upper()


Jurisdiction = Annotated[str, AfterValidator(_check_jurisdiction)]


def _quorum(consensus: str) -> AfterValidator:
    """Member counts of a consensus group (etcd, Raft) must be odd."""

    def check(value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"{consensus} needs an odd number of members for quorum; use 1, 3 or 5")
        return value

    return AfterValidator(check)


class RegionConfig(_Section):
    """Who and where: the environment's rules and the labels every resource that takes labels carries."""

    name: Name = Field(
        description="Region name, e.g. `eu-central`, shown in the compliance evidence's summary; "
        "not used in resource names (those come from the stack name)."
    )
    environment: Literal["prod", "dr", "staging"] = Field(
        default="prod", description="`prod` requires an HA control plane (3 or 5 servers)."
    )
    jurisdiction: Jurisdiction = Field(
        default="DE", description="ISO 3166-1 country of the region; must be an EU/EEA state."
    )
    data_classification: Literal["phi", "confidential", "internal"] = Field(
        default="phi", description="Label `data-classification` on every resource that takes labels."
    )


class NetworkConfig(_Section):
    """The private network every node, the load balancer and the GPU vSwitch share."""

    zone: str = Field(default="eu-central", description="Hetzner network zone; only `eu-central` is EU.")
    ip_range: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.20.0.0/16"), description="The whole private network."
    )
    nodes_subnet: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.20.1.0/24"), description="Cloud servers and the load balancer."
    )
    vswitch_subnet: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.20.2.0/24"),
        description="The dedicated GPU servers, reached through the vSwitch.",
    )

    @field_validator("zone")
    @classmethod
    def _eu_zone(cls, value: str) -> str:
        if value in residency.HCLOUD_EU_NETWORK_ZONES:
            return value
        if value in residency.HCLOUD_NON_EU_NETWORK_ZONES:
            raise ValueError(f"network zone outside the EU; {residency.ART_44}. Allowed: eu-central")
        raise ValueError("unknown Hetzner network zone; allowed: eu-central")

    @field_validator("ip_range", "nodes_subnet", "vswitch_subnet")
    @classmethod
    def _private(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not value.is_private:
            raise ValueError("must be a private (RFC 1918) range such as 10.20.0.0/16")
        return value

    @model_validator(mode="after")
    def _layout(self) -> NetworkConfig:
        for key in ("nodes_subnet", "vswitch_subnet"):
            subnet = getattr(self, key)
            if not subnet.subnet_of(self.ip_range):
                raise ValueError(f"{key} {subnet} is not inside ip_range {self.ip_range}")
        if self.nodes_subnet.overlaps(self.vswitch_subnet):
            raise ValueError(
                f"nodes_subnet {self.nodes_subnet} overlaps vswitch_subnet {self.vswitch_subnet}"
            )
        return self

    @field_validator("nodes_subnet")
    @classmethod
    def _room(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if value.prefixlen > 24:
            raise ValueError(
                "too small: the address plan (bastion .2, control plane .11-.15, workers .21-.70) needs a /24"
            )
        return value

    @property
    def network_gateway(self) -> ipaddress.IPv4Address:
        """Hetzner's router in every network: the first address of ip_range."""
        return self.ip_range.network_address + 1

    # The address plan in nodes_subnet (fixed, so the inventory and the plan are reviewable).
    @property
    def bastion_ip(self) -> ipaddress.IPv4Address:
        return self.nodes_subnet.network_address + 2

    def control_plane_ip(self, index: int) -> ipaddress.IPv4Address:
        return self.nodes_subnet.network_address + 11 + index

    def worker_ip(self, index: int) -> ipaddress.IPv4Address:
        return self.nodes_subnet.network_address + 21 + index


_SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/=]{40,}( \S.*)?$")


class SshKeyConfig(_Section):
    """One admin public key."""

    name: Name = Field(description="Key name in Hetzner Cloud.")
    public_key: str = Field(description="OpenSSH public key line (ssh-ed25519 preferred).")

    @field_validator("public_key")
    @classmethod
    def _openssh(cls, value: str) -> str:
        if not _SSH_KEY_RE.match(value.strip()):
            raise ValueError(
                "not an OpenSSH public key line; paste the content of id_ed25519.pub "
                "(ssh-ed25519 AAAA… comment), never the private key"
            )
        return value.strip()


class AdminConfig(_Section):
    """Who may reach the bastion over SSH, and with which keys."""

    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        min_length=1, description="Admin source ranges allowed to SSH into the bastion. Never 0.0.0.0/0."
    )
    ssh_keys: list[SshKeyConfig] = Field(min_length=1, description="Public keys installed on every server.")
    api_tunnel_port: int = Field(
        default=16443,
        ge=1024,
        le=65535,
        description=(
            "Local port of the SSH tunnel through the bastion to the Kubernetes API (`sovereign tunnel`; "
            "`pulumi up` opens it); the stack's kubeconfig points at 127.0.0.1 on this port. One per "
            "stack open at the same time."
        ),
    )

    @field_validator("cidrs")
    @classmethod
    def _not_world(
        cls, value: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        for net in value:
            if net.prefixlen < 8:
                raise ValueError(
                    f"{net} opens SSH to (nearly) the whole internet; "
                    "list your admin ranges, e.g. 203.0.113.0/28"
                )
        return value


class BastionConfig(_Section):
    """The only server with a public IPv4: SSH jump host and NAT for the private nodes."""

    location: Location = Field(default="fsn1", description="Hetzner Cloud location (fsn1, nbg1, hel1).")
    server_type: ServerType = Field(
        default="cx23", description="Server type: orderable and x86 (infra/catalogue/hetzner-cloud.yaml)."
    )
    image: str = Field(default="debian-12", description="OS image.")


class ControlPlaneConfig(_Section):
    """RKE2 server nodes (etcd + API server), spread over hosts by a placement group."""

    location: Location = Field(default="fsn1", description="Hetzner Cloud location (fsn1, nbg1, hel1).")
    count: Annotated[int, _quorum("etcd")] = Field(
        default=3, ge=1, le=5, description="Odd number; `prod` needs 3 or 5 for etcd quorum."
    )
    server_type: ServerType = Field(
        default="cx33", description="Server type: orderable and x86 (infra/catalogue/hetzner-cloud.yaml)."
    )
    image: str = Field(default="debian-12", description="OS image.")


class WorkersConfig(_Section):
    """CPU agents (the gateway, OpenBao, system workloads)."""

    location: Location = Field(default="nbg1", description="Hetzner Cloud location (fsn1, nbg1, hel1).")
    count: int = Field(
        default=2,
        ge=0,
        le=50,
        description="Number of CPU worker servers; spread over one placement group per 10 (Hetzner's limit).",
    )
    server_type: ServerType = Field(
        default="cx43", description="Server type: orderable and x86 (infra/catalogue/hetzner-cloud.yaml)."
    )
    image: str = Field(default="debian-12", description="OS image.")


class GpuServerConfig(_Section):
    """One dedicated GPU server (Hetzner Robot). Ordered outside Pulumi; declared here."""

    name: Name = Field(description="Node name in the cluster.")
    server_number: int = Field(gt=0, description="Robot server number.")
    datacenter: str = Field(description="Robot data centre, e.g. FSN1-DC14 (EU sites only).")
    product: str = Field(default="GEX44", pattern=r"^GEX\d+$", description="Robot product (GEX line).")
    private_ip: ipaddress.IPv4Address = Field(description="Its address in network.vswitch_subnet.")
    gpus: int = Field(default=1, ge=1, le=8, description="GPUs in the server (nvidia.com/gpu capacity).")

    @field_validator("datacenter")
    @classmethod
    def _eu_dc(cls, value: str) -> str:
        if residency.ROBOT_DATACENTER_RE.match(value.upper()):
            return value.upper()
        raise ValueError(
            "not an EU Hetzner data centre; dedicated GPU servers must be in FSN1-DCn, NBG1-DCn or HEL1-DCn. "
            + residency.ART_44
        )


class GpuPoolConfig(_Section):
    """Dedicated GPU workers joined to the cloud network through a vSwitch subnet."""

    provider: Literal["hetzner-robot"] = Field(
        default="hetzner-robot", description="Pool provider; further EU GPU clouds plug in behind it."
    )
    vswitch_id: int | None = Field(
        default=None, gt=0, description="Robot vSwitch id (required with servers)."
    )
    vlan_id: int = Field(default=4000, ge=4000, le=4091, description="VLAN of the vSwitch (4000-4091).")
    servers: list[GpuServerConfig] = Field(default_factory=list, description="The GPU servers.")
    driver_branch: Literal["535", "570", "580"] = Field(
        default="580", description="NVIDIA driver branch, pinned (580 is the LTS branch)."
    )
    container_toolkit_version: str = Field(
        default="1.18.0-1", description="NVIDIA container toolkit package version, pinned."
    )
    nvidia_apt_mirror: str | None = Field(
        default=None,
        description="EU mirror of NVIDIA's apt repositories: <mirror>/cuda/<os>/x86_64 and "
        "<mirror>/libnvidia-container/stable/deb/amd64, each with its signing key as key.asc. "
        "Required for the container toolkit.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> GpuPoolConfig:
        if self.servers and self.vswitch_id is None:
            raise ValueError("vswitch_id is required when servers are declared (Robot → vSwitch → its id)")
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique, got {names}")
        return self


# an error whose message names the key and the rule, complete on its own (gateway/validation.py)
NOT_ECHOED = validation.NOT_ECHOED
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# names only the cluster resolves: the ingress certificate must never carry one (the internal
# mTLS names live under .svc, issued from the other PKI mount)
_CLUSTER_SUFFIXES = (".svc", ".cluster.local", ".local", ".localhost")


def _check_hostname(value: str) -> str:
    """A fully qualified DNS name (RFC 1123 labels, lowercase, no wildcard, not an IP address)."""
    labels = value.split(".")
    if (
        len(value) > 253
        or len(labels) < 2
        or not all(_DNS_LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()
        or value.endswith(_CLUSTER_SUFFIXES)
    ):
        raise PydanticCustomError(
            NOT_ECHOED,
            "load_balancer.hostname must be the fully qualified DNS name Magento connects to: at least two "
            "labels of lowercase letters, digits and '-' (1-63 characters each, not starting or ending with "
            "'-'), 253 characters at most, no wildcard, no IP address, no cluster-internal suffix (.svc, "
            ".cluster.local, .local, .localhost), e.g. llm-gateway.shop.example.de",
        )
    return value


Hostname = Annotated[str, AfterValidator(_check_hostname)]


class LoadBalancerConfig(_Section):
    """Private load balancer in front of the gateway's ingress (no public interface)."""

    hostname: Hostname = Field(
        description="DNS name Magento uses for the gateway (resolving to private_ip); the ingress "
        "certificate is issued for it and for private_ip."
    )
    location: Location = Field(default="nbg1", description="Hetzner Cloud location (fsn1, nbg1, hel1).")
    type: str = Field(default="lb11", description="Hetzner load balancer type.")
    private_ip: ipaddress.IPv4Address = Field(
        default=ipaddress.IPv4Address("10.20.1.250"), description="Address in network.nodes_subnet."
    )
    listen_port: int = Field(default=443, ge=1, le=65535, description="Port Magento connects to.")
    target_port: int = Field(
        default=30443, ge=30000, le=32767, description="Ingress NodePort on the workers."
    )


# a reviewed endpoint outside the built-in allowlist: the model the gateway's settings use too
ExtraHostConfig = residency.ReviewedEndpoint


class ResidencyConfig(_Section):
    """Reviewed additions to the built-in EU endpoint allowlist (shown in every plan)."""

    extra_hosts: list[ExtraHostConfig] = Field(
        default_factory=list, description="Self-hosted endpoints (registry mirror …) with EU operator."
    )

    def entries(self) -> list[residency.EuEndpoint]:
        return [h.entry() for h in self.extra_hosts]


class EndpointsConfig(_Section):
    """Every endpoint the platform talks to; each must be inside the EU boundary."""

    object_storage: str = Field(description="S3 endpoint for models, audit archive, state.")
    registry_mirror: str | None = Field(default=None, description="Container registry mirror, if any.")
    model_source: str = Field(description="Where model weights are pulled from (an S3 URL).")
    pulumi_backend: str = Field(description="Pulumi state backend, e.g. s3://bucket?endpoint=…")


# --- declared egress (issue #23): every address outside the cluster that anything may reach -------
# A NetworkPolicy and the bastion's NAT match addresses, not names: each destination the stack's pods
# or hosts reach is declared with its host (inside the EU boundary, as every endpoint) and the
# addresses it resolves to (``dig +short HOST``). infra/egress.py lists who reaches which.
# Documentation ranges (RFC 5737, RFC 3849) are admitted so the example stacks validate; a real stack
# replaces them.
_DOCUMENTATION_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# the widest prefix a destination may declare: a provider's service range, never a continent
EGRESS_MIN_PREFIX = {4: 16, 6: 32}


def _check_public_cidr(value: str) -> str:
    fix = (
        "give the public addresses the host resolves to, e.g. from `dig +short HOST` "
        "(as a /32, or the provider's published range)"
    )
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        raise PydanticCustomError(
            NOT_ECHOED, f"egress destination cidrs: an entry is not an IP network in CIDR notation; {fix}"
        ) from None
    documentation = any(net.subnet_of(d) for d in _DOCUMENTATION_NETS if d.version == net.version)  # type: ignore[arg-type]
    if net.prefixlen < EGRESS_MIN_PREFIX[net.version]:
        raise PydanticCustomError(
            NOT_ECHOED,
            "egress destination cidrs: an entry is wider than "
            f"/{EGRESS_MIN_PREFIX[net.version]} (the whole internet or a continent-sized range would let "
            f"pods and hosts reach any address, inside or outside the EU); {fix}",
        )
    if not documentation and not net.is_global:
        raise PydanticCustomError(
            NOT_ECHOED,
            "egress destination cidrs: an entry is a private, loopback, link-local, shared or reserved "
            "network; declared destinations are public endpoints (the private network and the cluster "
            f"are governed by the NetworkPolicies and firewalls, not by egress); {fix}",
        )
    return str(net)


PublicCidr = Annotated[str, AfterValidator(_check_public_cidr)]
EgressProtocol = Literal["tcp", "udp"]


def _tcp_only() -> list[EgressProtocol]:
    return ["tcp"]


# iptables-extensions(8), multiport: "Up to 15 ports can be specified" (infra/components/cloud_init.py)
MAX_EGRESS_PORTS = 15


class EgressDestinationConfig(_Section):
    """One public endpoint outside the cluster that pods or hosts may reach, with its addresses."""

    name: Name = Field(description="Destination name (used in policy names and the data-flow map).")
    host: str = Field(
        min_length=1,
        description="Host name it serves (its subdomains too, e.g. virtual-hosted buckets); on the EU "
        "allowlist or a residency.extra_hosts entry.",
    )
    cidrs: list[PublicCidr] = Field(
        min_length=1, description="Public addresses the host resolves to (`dig +short HOST`), as CIDRs."
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: [443],
        min_length=1,
        description=f"Ports reached on it (at most {MAX_EGRESS_PORTS}: the bastion's NAT matches them in "
        "one iptables multiport rule).",
    )
    protocols: list[EgressProtocol] = Field(
        default_factory=_tcp_only, min_length=1, description="Protocols on those ports."
    )

    @field_validator("ports")
    @classmethod
    def _few_ports(cls, value: list[int]) -> list[int]:
        # the bootstrap NAT matches a destination's ports with iptables' multiport, which takes "up to
        # 15 ports" (iptables-extensions(8), multiport); more would fail the bastion's unit at boot
        if len(value) > MAX_EGRESS_PORTS:
            raise PydanticCustomError(
                NOT_ECHOED,
                f"egress destination ports: more than {MAX_EGRESS_PORTS} ports on one destination (the "
                "bastion's NAT matches them in one iptables multiport rule, which takes at most "
                f"{MAX_EGRESS_PORTS}); list only the ports the host is reached on, or declare the same host "
                "and addresses again as a second destination (its own name) with the remaining ports",
            )
        return value

    purpose: str = Field(
        min_length=3, max_length=200, description="Why it is reached (shown in the evidence)."
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return value.strip().lower().rstrip(".")

    def serves(self, host: str) -> bool:
        """Whether *host* is this destination's host or one of its subdomains."""
        host = host.lower().rstrip(".")
        return host == self.host or host.endswith("." + self.host)


class EgressConfig(_Section):
    """Declared egress: the only public addresses the pods (NetworkPolicies) and the private hosts
    (the bastion's NAT) may reach. A destination the stack needs and does not declare is refused."""

    destinations: list[EgressDestinationConfig] = Field(
        default_factory=list,
        description="Each public endpoint with its addresses: object storage, registry mirror, "
        "package mirrors, alert receivers, time servers.",
    )

    @model_validator(mode="after")
    def _unique(self) -> EgressConfig:
        names = [d.name for d in self.destinations]
        if len(names) != len(set(names)):
            raise PydanticCustomError(NOT_ECHOED, "destinations: two entries share a name; give each its own")
        return self

    def serving(self, host: str) -> list[EgressDestinationConfig]:
        """The destinations that serve *host*."""
        return [d for d in self.destinations if d.serves(host)]


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# The tool call parsers of vLLM v0.11.0 (the pinned image vllm/vllm-openai:v0.11.0, InferenceModelConfig
# .image): the names each module of vllm/entrypoints/openai/tool_parsers/ registers with
# ToolParserManager.register_module in the v0.11.0 release. vLLM refuses any other
# --tool-call-parser only once the pod starts (vllm/entrypoints/openai/api_server.py,
# validate_api_server_args: "invalid tool call parser"), after the image pull and the weights
# check: the stack config refuses it before anything is deployed. A newer image: update this list
# from its tool_parsers/ (and VLLM_PINNED_IMAGE).
VLLM_PINNED_IMAGE = "vllm/vllm-openai:v0.11.0"
VLLM_TOOL_PARSERS = (
    "deepseek_v3", "deepseek_v31", "glm45", "granite", "granite-20b-fc", "hermes", "hunyuan_a13b",
    "internlm", "jamba", "kimi_k2", "llama3_json", "llama4_json", "llama4_pythonic", "longcat",
    "minimax", "mistral", "openai", "phi4_mini_json", "pythonic", "qwen3_coder", "qwen3_xml",
    "seed_oss", "step3", "xlam",
)  # fmt: skip
# vLLM v0.11.0's structured outputs backends (vllm/config/structured_outputs.py,
# StructuredOutputsBackend); set with --structured-outputs-config, a JSON object. The deprecated
# --guided-decoding-backend of v0.11.0 is not used: vllm/engine/arg_utils.py (create_engine_config)
# copies it to a `guided_decoding_backend` attribute that StructuredOutputsConfig does not read.
StructuredOutputsBackend = Literal["auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer"]
_TEMPLATE_FILE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


def _check_tool_parser(value: str) -> str:
    if value not in VLLM_TOOL_PARSERS:
        raise ValueError(
            f"not a tool call parser of {VLLM_PINNED_IMAGE} (vllm/entrypoints/openai/tool_parsers/); "
            f"use the one the vLLM tool calling docs name for the model: {', '.join(VLLM_TOOL_PARSERS)}"
        )
    return value


def _check_template_file(value: str) -> str:
    if not _TEMPLATE_FILE_RE.fullmatch(value):  # no component starts with '.': no '..', no hidden file
        raise ValueError(
            "must be a file of the model's release on its weights volume, as a relative path "
            "without '..' (e.g. tool_chat_template_llama3.1_json.jinja): import it with the weights, "
            "so that the manifest checks it before vLLM starts"
        )
    return value


TemplateFile = Annotated[str, AfterValidator(_check_template_file)]


class ToolCallingConfig(_Section):
    """What vLLM needs to turn the model's own tool-call text into OpenAI `tool_calls` for
    `tool_choice: "auto"` (the default when a request has tools): `--enable-auto-tool-choice
    --tool-call-parser PARSER` (docs/features/tool_calling.md of vLLM v0.11.0). A named tool
    choice and "required" work without it: vLLM then constrains the answer to the tool's JSON
    schema with its structured outputs backend."""

    parser: Annotated[str, AfterValidator(_check_tool_parser)] = Field(
        description="vLLM `--tool-call-parser`: the one the vLLM tool calling docs name for the model "
        "(Llama 3.1: `llama3_json`; Hermes, Qwen 2.5: `hermes`; Mistral: `mistral`); only the parsers "
        "of vLLM v0.11.0 are accepted."
    )
    chat_template: TemplateFile | None = Field(
        default=None,
        description="vLLM `--chat-template`: a file of the model's release (a path relative to its "
        "folder on the weights volume), e.g. vLLM's examples/tool_chat_template_llama3.1_json.jinja "
        "imported with the weights, so that the manifest checks it like every weights file; default: "
        "the template in the model's tokenizer_config.json.",
    )


ModelKind = Literal["chat", "embeddings"]


class InferenceModelConfig(_Section):
    """One model served by vLLM (one Deployment each): a chat model, or an embedding model
    (``kind: embeddings``: vLLM's pooling runner, the gateway's /v1/embeddings upstream)."""

    name: Name = Field(description="Served model name (also a gateway model alias).")
    kind: ModelKind = Field(
        default="chat",
        description="`chat`: a generative model (/v1/chat/completions). `embeddings`: an embedding "
        "model served by vLLM's pooling runner (`--runner pooling`), the gateway's upstream for "
        "/v1/embeddings (its entry gets `kind: embeddings` and `dimensions`); same isolation, weights "
        "check and mTLS as a chat model.",
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        le=16000,
        description="Embeddings only, and required there: the length of the model's vectors "
        "(its config.json `hidden_size` for BERT/XLM-RoBERTa encoders, e.g. 1024 for BAAI/bge-m3), "
        "given to the gateway and the vector store (pgvector's `vector` holds at most 16000).",
    )
    aliases: list[Name] = Field(
        default_factory=list,
        description="More gateway model aliases this model answers: the `model` that use-case "
        "policies name (the shipped policies name `chat`).",
    )
    source: str = Field(
        description="S3 prefix of the weights on EU object storage, e.g. s3://models/llama-8b-awq/."
    )
    manifest: str = Field(
        default="SHA256SUMS", description="File in `source` listing `sha256  path` per file."
    )
    manifest_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the approved release's manifest (`sovereign models import` prints it, "
        "`sovereign models releases` lists it): the weights Job and the init container refuse any "
        "other manifest, and a change rolls the vLLM pods; `sovereign models rollback` rewrites it.",
    )
    quantization: Literal["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8"] | None = Field(
        default=None,
        description="vLLM --quantization: required for a chat model (quantised models only); an "
        "embedding model is served in its own precision unless this is set.",
    )
    max_model_len: int = Field(default=8192, ge=512, le=131072, description="vLLM --max-model-len.")
    gpu_memory_utilization: float = Field(
        default=0.90, gt=0.1, le=0.95, description="vLLM --gpu-memory-utilization."
    )
    gpus: int = Field(default=1, ge=1, le=8, description="nvidia.com/gpu per replica (tensor parallel size).")
    min_replicas: int = Field(default=1, ge=1, description="Replicas kept when idle.")
    max_replicas: int = Field(default=2, ge=1, description="Upper bound for autoscaling.")
    gpu_server: Name | None = Field(
        default=None,
        description="The gpu_pool.servers entry (its node name) that holds the model's weights volume "
        "and runs its replicas: required with `local-path` volumes and more than one model, so that each "
        "model's volume and pods are on a server with GPUs for it (a GPU is never shared between models).",
    )
    queue_target: int = Field(
        default=5, ge=1, description="vllm:num_requests_waiting per replica above which KEDA scales out."
    )
    image: str = Field(default=VLLM_PINNED_IMAGE, description="vLLM image (via the registry mirror).")
    tool_calling: ToolCallingConfig | None = Field(
        default=None,
        description="Tool calling with `tool_choice: auto` (the OpenAI SDK's default when tools are "
        "given): vLLM gets `--enable-auto-tool-choice --tool-call-parser PARSER` (and `--chat-template`); "
        "the gateway's upstream entry lists every tool_choice (`tool_choices`). Without it vLLM serves "
        "only a named tool or `required` (with its structured outputs) and answers `auto` with 400; "
        "the gateway's entry then lists `required` and `named`.",
    )
    structured_outputs_backend: StructuredOutputsBackend = Field(
        default="auto",
        description="vLLM's structured outputs backend for `response_format` json_object/json_schema and "
        'forced tool calls (`--structured-outputs-config {"backend": ...}`; vLLM v0.11.0\'s names); '
        "`auto` leaves vLLM's choice.",
    )
    volume_gi: int = Field(
        default=40,
        ge=5,
        description="Size of the model's weights volume. With `manifest_sha256` every release is fetched "
        "into a folder of its own and the fetch keeps the two releases fetched before it (the one "
        "being replaced, which the running pods still verify, and one more), so the volume must hold "
        "three releases of the model, plus space for a partial download.",
    )

    @field_validator("source")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not value.startswith("s3://") or len(value) < 6:
            raise ValueError(
                "must be an s3:// prefix on the stack's EU object storage, e.g. s3://models/llama-8b/"
            )
        return value if value.endswith("/") else value + "/"

    @field_validator("manifest_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.fullmatch(value):
            raise ValueError(
                "must be the manifest's SHA-256 as 64 lowercase hex digits: copy it from "
                "`sovereign models releases --stack STACK --model NAME`"
            )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> InferenceModelConfig:
        self._check_kind()
        if self.tool_calling is not None and self.image != VLLM_PINNED_IMAGE:
            raise ValueError(
                f"tool_calling: the parser names are those of {VLLM_PINNED_IMAGE}, and image is another "
                "vLLM: update VLLM_TOOL_PARSERS in infra/config.py from that release's "
                "vllm/entrypoints/openai/tool_parsers/, or leave image at its default"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}")
        return self

    def _check_kind(self) -> None:
        """What each kind needs and what only a chat model has: each problem names the key and the fix."""
        if self.kind == "chat":
            if self.quantization is None:
                raise ValueError(
                    "quantization: missing — a chat model is served quantised (awq, awq_marlin, gptq, "
                    "gptq_marlin or fp8, as its weights were quantised); set it, or set kind: embeddings "
                    "for an embedding model"
                )
            if self.dimensions is not None:
                raise ValueError(
                    "dimensions: only an embedding model has them — remove it, or set kind: embeddings"
                )
            return
        if self.dimensions is None:
            raise ValueError(
                "dimensions: missing — an embedding model (kind: embeddings) needs the length of its "
                "vectors (its config.json hidden_size, e.g. 1024 for BAAI/bge-m3): the gateway and the "
                "vector store check every vector against it"
            )
        chat_only = [
            key
            for key, unset in (
                ("tool_calling", self.tool_calling is None),
                ("structured_outputs_backend", self.structured_outputs_backend == "auto"),
            )
            if not unset
        ]
        if chat_only:
            raise ValueError(
                f"{', '.join(chat_only)}: chat settings, and this is an embedding model (kind: "
                "embeddings; vLLM's pooling runner generates no text) — remove them"
            )


class GatewayDeployConfig(_Section):
    """The gateway Deployment (image built as in docs/platform.md)."""

    image: str = Field(
        default="sovereign-llm/gateway:0.1.0",
        description="Gateway image reference (its client keys: the stack secret `gateway_client_keys`).",
    )
    min_replicas: int = Field(default=2, ge=1, description="Replicas kept when idle (2+ for availability).")
    max_replicas: int = Field(default=6, ge=1, description="Upper bound for CPU autoscaling.")
    cpu: str = Field(default="500m", description="CPU request (and the HPA's 100 %).")
    memory: str = Field(default="512Mi", description="Memory request and limit.")
    state_volume_gi: int = Field(
        default=5, ge=1, description="Per-pod volume for its audit chain and wrapped data keys (retained)."
    )


class OpenBaoDeployConfig(_Section):
    """OpenBao in the cluster: HA with Raft storage, TLS, audit device (Helm chart)."""

    chart_version: str = Field(default="0.19.1", description="openbao/openbao Helm chart version (pinned).")
    replicas: Annotated[int, _quorum("Raft")] = Field(
        default=3,
        ge=1,
        le=7,
        description="Raft members: odd, 3+ in prod, one per node "
        "(control_plane.count + workers.count at most).",
    )
    storage_gi: int = Field(default=10, ge=1, description="Raft data volume per member.")
    audit_storage_gi: int = Field(default=10, ge=1, description="Audit log volume per member.")
    api_address: str = Field(
        default="https://127.0.0.1:8200",
        description="Where `pulumi up` reaches OpenBao to configure it (a tunnel through the bastion).",
    )
    initialised: bool = Field(
        default=False,
        description="Set true once the key custodians have initialised and unsealed OpenBao "
        "(docs/platform.md); until then `pulumi up` installs it but configures nothing in it and "
        "deploys nothing that needs it (gateway, models, mTLS certificates).",
    )
    restored_pki: bool = Field(
        default=False,
        description="This OpenBao was restored from another region's snapshot (the DR takeover, "
        "docs/backup-restore.md): its PKI mounts hold that region's CAs, which the program adopts "
        "(it reads each mount's default issuer) instead of generating new roots, so the CA Magento "
        "trusts stays the same. Set it with `initialised: true` before the takeover's `pulumi up`.",
    )


NODE_LOCAL_CLASS = "local-path"  # the GPU servers' disks (infra/k8s_platform/cluster_services.py)


# vLLM's latency histograms' bucket bounds (vllm/v1/metrics/loggers.py, vllm:time_to_first_token_seconds
# and vllm:inter_token_latency_seconds): a latency SLI counts the requests (tokens) at or below a bound
# from the `le` bucket of that value, so a threshold must be one of them (Prometheus cannot count "at
# or below 30 ms" from these buckets)
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                     7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
VLLM_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0)  # fmt: skip


def _bucket(buckets: tuple[float, ...], metric: str) -> AfterValidator:
    def check(value: float) -> float:
        if value not in buckets:
            below = [b for b in buckets if b < value]
            hint = f"; the nearest stricter bound is {below[-1]:g}" if below else ""
            raise ValueError(
                f"{value:g} s is no bucket bound of {metric} (vLLM v0.11), so Prometheus cannot count the "
                f"requests at or below it; use one of {', '.join(f'{b:g}' for b in buckets)}{hint}"
            )
        return value

    return AfterValidator(check)


class SloTargetsConfig(_Section):
    """SLO targets of one use case. Defaults: the load-test SLA profile `gpu-interactive`
    (loadtests/profiles/gpu-interactive.yaml: TTFT p99 <= 500 ms, TPOT p99 <= 30 ms, errors <= 0.1 %),
    the profile of the patient-facing use cases in production."""

    ttft_seconds: Annotated[float, _bucket(VLLM_TTFT_BUCKETS, "vllm:time_to_first_token_seconds")] = Field(
        default=0.5, description="Time to first token a request must meet (a vLLM bucket bound)."
    )
    itl_seconds: Annotated[float, _bucket(VLLM_ITL_BUCKETS, "vllm:inter_token_latency_seconds")] = Field(
        default=0.025,
        description="Inter-token latency each token must meet (a vLLM bucket bound; 0.025 is the bound at "
        "or below the profile's 30 ms, so the alert is early rather than late).",
    )
    latency_objective: float = Field(
        default=0.99,
        gt=0.5,
        lt=1,
        description="Share of requests (tokens) that must meet the latency (p99: 0.99).",
    )
    error_ratio: float = Field(
        default=0.001, gt=0, lt=0.5, description="Error budget: share of requests that may fail (5xx)."
    )


Severity = Literal["page", "ticket"]
SEVERITIES: tuple[Severity, ...] = ("page", "ticket")


class AlertReceiverConfig(_Section):
    """An Alertmanager webhook receiver: inside the EU boundary, like every endpoint."""

    name: Name = Field(description="Receiver name.")
    url: str = Field(
        description="Webhook URL (an EU endpoint: on the allowlist, a residency.extra_hosts entry, a "
        "private address or a cluster-local name)."
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list(SEVERITIES), min_length=1, description="Alert severities it receives."
    )

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value == "null":  # alerts.alertmanager_config's own catch-all receiver
            raise ValueError("`null` is the built-in receiver that drops unrouted alerts: choose another")
        return value

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("https", "http"):
            raise ValueError("must be an http(s):// URL (Alertmanager webhook_configs url)")
        return value


class AlertingConfig(_Section):
    """Alert rules (PrometheusRule, infra/k8s_platform/alerts.py) and where alerts go (docs/operations.md)."""

    slo_days: int = Field(default=30, ge=7, le=90, description="SLO period the error budget is spent over.")
    default_slo: SloTargetsConfig = Field(
        default_factory=SloTargetsConfig, description="Targets of every use case not listed in `use_cases`."
    )
    use_cases: dict[Name, SloTargetsConfig] = Field(
        default_factory=dict,
        description="Targets per use case (gateway policy name), e.g. the `gpu-standard` profile's for "
        "back-office use cases: ttft_seconds 1.0 (the bound at or below 2 s), itl_seconds 0.1, "
        "error_ratio 0.005.",
    )
    receivers: list[AlertReceiverConfig] = Field(
        default_factory=list, description="Alertmanager webhook receivers (EU endpoints only)."
    )
    backup_max_age_hours: int = Field(
        default=26,
        ge=1,
        description="Age of the last successful OpenBao snapshot Job above which it is overdue.",
    )
    queue_waiting_max: int = Field(
        default=20,
        ge=1,
        description="vllm:num_requests_waiting per model above which (10 min) a ticket opens.",
    )
    audit_ship_max_age_minutes: int = Field(
        default=30,
        ge=5,
        le=1440,
        description="Minutes a sealed audit segment may wait for the Object Lock archive, and the "
        "longest time without a complete shipping round, before a ticket opens. The audit-ship "
        "sidecar runs a round every minute (its liveness probe restarts it after 5 without one); a "
        "segment is sealed at audit.segment_max_bytes or audit.segment_max_age_s (1 h), so records "
        "reach the archive within that age plus this.",
    )

    @model_validator(mode="after")
    def _unique(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique, got {names}")
        return self

    def targets(self, use_case: str) -> SloTargetsConfig:
        return self.use_cases.get(use_case, self.default_slo)


# CloudNativePG (infra/k8s_platform/memory_store.py): chart cloudnative-pg 0.27.1 installs operator
# 1.28.1 (github.com/cloudnative-pg/charts, tag cloudnative-pg-v0.27.1, charts/cloudnative-pg/Chart.yaml
# appVersion); the PostgreSQL image is the postgres-containers "system" build of PostgreSQL 15.19
# (standard = pgvector, pgaudit, failover slots; system = standard + barman-cloud for the in-tree
# barmanObjectStore backups): github.com/cloudnative-pg/postgres-containers docker-bake.hcl, Dockerfile
CNPG_CHART_VERSION = "0.27.1"
CNPG_POSTGRES_IMAGE = "ghcr.io/cloudnative-pg/postgresql:15.19-202608170814-system-bookworm"
MEMORY_BACKUP_RETENTION_DAYS = 30
MEMORY_PROD_MIN_INSTANCES = 3


class MemoryStoreConfig(_Section):
    """The gateway's memory store (issue #27): PostgreSQL with pgvector run by CloudNativePG, its
    volumes LUKS-encrypted (hcloud CSI), its base backups and WAL archived by barman-cloud to a
    bucket of the stack's EU object storage (server-side encrypted). The backup write key is the
    stack secrets `memory_backup_s3_access_key` and `memory_backup_s3_secret_key`."""

    enabled: bool = Field(default=False, description="Deploy the store (and give the gateway its DSN).")
    chart_version: str = Field(
        default=CNPG_CHART_VERSION,
        description="cloudnative-pg Helm chart (pinned; 0.27.1 installs the operator 1.28.1 and its CRDs).",
    )
    image: str = Field(
        default=CNPG_POSTGRES_IMAGE,
        description="PostgreSQL image (via the registry mirror, by digest): CloudNativePG's "
        "postgres-containers `system` build, which has pgvector and barman-cloud.",
    )
    instances: int = Field(
        default=MEMORY_PROD_MIN_INSTANCES, ge=1, le=9,
        description="PostgreSQL instances (1 primary + streaming replicas, one per node); region.environment "
        f"'prod' needs at least {MEMORY_PROD_MIN_INSTANCES}, a DR or staging region may run fewer.",
    )  # fmt: skip
    storage_gi: int = Field(default=20, ge=1, le=10240, description="Data volume per instance (GiB).")
    dimensions: int | None = Field(
        default=None,
        ge=1,
        le=16000,
        description="The length of the stored vectors (the gateway's memory.dimensions). Taken from "
        "the stack's embedding model (platform.models[] with kind embeddings) when it has one; "
        "required when it has none (a DR region without models: give the primary's, or the store is "
        "made with another length than the model it will serve after a promotion).",
    )
    backup_bucket: str | None = Field(
        default=None,
        description="s3://bucket/prefix/ for the base backups and the WAL archive (required when enabled).",
    )
    backup_endpoint: str | None = Field(
        default=None,
        description="S3 endpoint of the backup bucket (default endpoints.object_storage; the same EU "
        "residency check as every endpoint, and declared in egress.destinations).",
    )
    backup_retention_days: int = Field(
        default=MEMORY_BACKUP_RETENTION_DAYS, ge=1, le=3650,
        description="How long barman keeps older base backups and their WAL (CloudNativePG "
        "retentionPolicy): after an erasure (Art. 17) the patient's items remain in the backups taken "
        "before it until they age out, at most this many days (docs/platform.md, Memory store).",
    )  # fmt: skip

    @field_validator("backup_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bucket, prefix = s3_location(value)
        return f"s3://{bucket}/{prefix}"

    def endpoint(self, default: str) -> str:
        """The backup bucket's S3 endpoint: backup_endpoint, else *default* (endpoints.object_storage)."""
        return self.backup_endpoint or default


class PlatformConfig(_Section):
    """The Kubernetes platform: isolation, OpenBao, vLLM, GPU support, gateway, observability."""

    weights_storage_class: str = Field(
        default=NODE_LOCAL_CLASS,
        description="StorageClass of each model's weights volume: `local-path`, the GPU servers' own disks "
        "(local-path-provisioner, installed by the platform; Robot servers cannot attach cloud volumes).",
    )
    gateway: GatewayDeployConfig = Field(default_factory=GatewayDeployConfig, description="The gateway.")
    openbao: OpenBaoDeployConfig = Field(default_factory=OpenBaoDeployConfig, description="OpenBao.")
    models: list[InferenceModelConfig] = Field(
        default_factory=list,
        description="Models served by vLLM; the weights Job's read-only key is the stack secrets "
        "`models_s3_access_key` and `models_s3_secret_key`.",
    )
    gpu_operator_version: str = Field(default="v25.3.4", description="NVIDIA GPU operator chart (pinned).")
    keda_version: str = Field(
        default="2.17.2", description="KEDA chart (pinned), for queue-based autoscaling."
    )
    monitoring_namespace: str = Field(
        default="monitoring", description="Namespace of the Prometheus that scrapes the platform."
    )
    memory_store: MemoryStoreConfig = Field(
        default_factory=MemoryStoreConfig,
        description="The gateway's memory store (PostgreSQL + pgvector through CloudNativePG).",
    )
    alerting: AlertingConfig = Field(
        default_factory=AlertingConfig, description="Alert rules' SLO targets and Alertmanager receivers."
    )
    images: Annotated[dict[str, str], AfterValidator(check_images)] = Field(
        default_factory=dict,
        description="Digest of each image on endpoints.registry_mirror, keyed by its upstream "
        "reference (`sovereign images list --stack S` prints them; e.g. "
        "`docker.io/vllm/vllm-openai:v0.11.0: sha256:<64 hex>` from `crane digest` after "
        "mirroring). The program names every image <mirror>/<registry>/<path>:<tag>@<digest>; one "
        "without a digest blocks the deploy.",
    )
    charts: Annotated[dict[str, str], AfterValidator(check_charts)] = Field(
        default_factory=dict,
        description="Digest of each Helm chart on endpoints.registry_mirror (oci://<mirror>/charts/"
        "<chart>), keyed <chart>:<version> (`sovereign charts list --stack S` prints them and the "
        "helm pull/push that mirrors them; the digest is what `helm push` prints). Every release "
        "is installed from the mirror by digest; a chart without one blocks the deploy.",
    )

    @model_validator(mode="after")
    def _unique(self) -> PlatformConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self


_CRON_FIELD_RE = re.compile(r"^(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?(,(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?)*$")
_S3_FOLDER_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class EtcdSnapshotsConfig(_Section):
    """etcd snapshots of the RKE2 servers, each uploaded to a bucket on the stack's EU object
    storage (endpoints.object_storage, region as storage.region). RKE2 keeps local copies too;
    the S3 copy is what survives the loss of the servers (docs/runbooks/etcd-restore.md)."""

    bucket: str = Field(
        description="Bucket on endpoints.object_storage for the snapshots (create it first: RKE2 "
        "does not; it must not be the state or the audit archive bucket)."
    )
    folder: str = Field(
        default="etcd", description="Prefix in the bucket (`etcd-s3-folder`), e.g. `etcd/eu-central`."
    )
    schedule_cron: str = Field(
        default="0 */6 * * *",
        description="When each server takes a snapshot (`etcd-snapshot-schedule-cron`, five cron "
        "fields, the servers' local time).",
    )
    retention: int = Field(
        default=28, ge=1, le=1000,
        description="Snapshots kept on S3 per server (`etcd-s3-retention`): 28 = 7 days at 4 a day.",
    )  # fmt: skip
    local_retention: int = Field(
        default=5, ge=1, le=1000,
        description="Snapshots kept on each server's disk (`etcd-snapshot-retention`, RKE2's default 5).",
    )  # fmt: skip

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return bucket_name(value, "sovereign-etcd-eu-central")

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not _S3_FOLDER_RE.match(value) or ".." in value.split("/"):
            raise ValueError(
                "must be a prefix without leading or trailing '/' (letters, digits, '.', '_', '-' "
                "and '/'), e.g. etcd/eu-central"
            )
        return value

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
            raise ValueError(
                "must be five cron fields (minute hour day month weekday: numbers, '*', ranges, "
                "steps and lists), e.g. '0 */6 * * *' for every six hours"
            )
        return " ".join(fields)


class Rke2Config(_Section):
    """Kubernetes distribution, installed by the Ansible roles."""

    version: str = Field(
        default="v1.33.5+rke2r1", pattern=r"^v1\.\d+\.\d+\+rke2r\d+$", description="Pinned RKE2 release."
    )
    profile: Literal["cis"] = Field(default="cis", description="RKE2 hardening profile (CIS only).")
    playbook: str = Field(default="playbooks/cluster.yml", description="Playbook run through ansible-runner.")
    artifact_url: str | None = Field(
        default=None,
        description="EU mirror of the release's assets ({version} is replaced), e.g. "
        "https://fsn1.your-objectstorage.com/artefacts/rke2/{version}. Required to converge.",
    )
    artifact_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of rke2.linux-amd64.tar.gz for `version` (from the release's "
        "sha256sum-amd64.txt). Required to converge: nothing is downloaded unpinned.",
    )
    airgap_images: bool = Field(
        default=False, description="Preload the core image tarball from the mirror (airgap)."
    )
    airgap_images_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of rke2-images-core.linux-amd64.tar.zst.",
    )
    etcd_snapshots: EtcdSnapshotsConfig | None = Field(
        default=None,
        description="etcd snapshots to the stack's EU object storage (required in `prod`); the access "
        "keys are the stack secrets `etcd_s3_access_key` and `etcd_s3_secret_key` "
        "(`pulumi config set --secret`), never in this section.",
    )

    @model_validator(mode="after")
    def _pinned_images(self) -> Rke2Config:
        if self.airgap_images and not self.airgap_images_sha256:
            raise ValueError(
                "airgap_images: true needs airgap_images_sha256 (from the release's sha256sum-amd64.txt)"
            )
        return self

    def release_url(self) -> str | None:
        return self.artifact_url.replace("{version}", self.version).rstrip("/") if self.artifact_url else None


class BackendConfig(_Section):
    """State backend guard: the Pulumi SaaS backend is refused unless overridden here."""

    allow_saas: bool = Field(
        default=False, description="Allow Pulumi Cloud as backend (moves state outside the EU boundary)."
    )
    justification: str | None = Field(default=None, description="Required with allow_saas: why.")

    @model_validator(mode="after")
    def _justified(self) -> BackendConfig:
        if self.allow_saas and not (self.justification or "").strip():
            raise ValueError("allow_saas: true needs a justification (it is shown in every plan)")
        return self


_CLAIM_ID_RE = r"^[A-Za-z0-9.()-]+\.[a-z0-9-]+$"


class EvidenceException(_Section):
    """A claim of the compliance evidence that the controller accepts as not holding, for now."""

    claim: str = Field(
        pattern=_CLAIM_ID_RE,
        description="`<control>.<claim>` as `sovereign evidence` names it, e.g. `GDPR-44.state-in-eu`.",
    )
    owner: str = Field(
        min_length=2, max_length=120, description="Who answers for the exception (a role or name)."
    )
    reason: str = Field(
        min_length=10, max_length=1000, description="Why it is accepted, and the plan to end it."
    )
    expires: date = Field(
        description="The day it stops counting (YYYY-MM-DD): after it the claim fails again."
    )


class ClientSiteConfig(_Section):
    """Where Magento, the client of the gateway, runs: drawn on the data-flow map, checked for residency."""

    location: str = Field(
        min_length=2, max_length=120, description="Data centre or site, e.g. `Hetzner FSN1`."
    )
    jurisdiction: str = Field(
        pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166 code of the country it is in, two letters (EU/EEA for a transfer-free map).",
    )
    operator: str = Field(min_length=2, max_length=120, description="Who operates it.")


class EvidenceConfig(_Section):
    """Inputs of `sovereign evidence` that the program cannot know: the client's site, exceptions."""

    magento: ClientSiteConfig | None = Field(
        default=None,
        description="Magento's site; undeclared, the map draws it outside the boundary and the "
        "client-site claim fails. Magento calls `load_balancer.hostname` (the client TLS endpoint).",
    )
    exceptions: list[EvidenceException] = Field(
        default_factory=list, description="Claims accepted as not holding, each with owner, reason, expiry."
    )


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_bucket_name(value: str) -> bool:
    return bool(_BUCKET_RE.match(value)) and ".." not in value


def bucket_name(value: str, example: str) -> str:
    """*value* if it is an S3 bucket name, else the error a bucket field gives (with *example*)."""
    if not is_bucket_name(value):
        raise ValueError(f"not an S3 bucket name: 3-63 lowercase letters, digits, '-' or '.', e.g. {example}")
    return value


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, prefix ending in '/' or empty) of ``s3://bucket/prefix?query``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not is_bucket_name(parts.netloc):
        raise ValueError(
            "must be s3://<bucket>/<prefix>/ with an S3 bucket name (3-63 lowercase letters, digits, "
            "'-' or '.'), e.g. s3://sovereign-audit-eu-central/gateway/"
        )
    prefix = parts.path.lstrip("/")
    return parts.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"


# OpenBao Raft snapshots stay locked this long by default (storage.openbao_snapshot_retention_days)
OPENBAO_SNAPSHOT_RETENTION_DAYS = 35
_HEL1 = "https://hel1.your-objectstorage.com"  # the DR region's object storage (an example)


class SnapshotCopyConfig(_Section):
    """A second EU object-storage location that receives a copy of every OpenBao Raft snapshot, so
    the snapshots survive the loss of the primary region with its object storage (the DR takeover
    restores from it: docs/backup-restore.md). Its write key is the stack secrets
    ``openbao_snapshot_copy_s3_access_key`` and ``openbao_snapshot_copy_s3_secret_key``."""

    endpoint: str = Field(
        description="S3 endpoint URL of another EU location than endpoints.object_storage, e.g. the DR "
        "region's https://hel1.your-objectstorage.com (the same residency check as every endpoint)."
    )
    bucket: str = Field(
        description="Object Lock bucket there for the copies (`sovereign bootstrap-backend` creates it), "
        "e.g. sovereign-openbao-snapshots-eu-central."
    )
    region: str | None = Field(default=None, description="S3 region of the endpoint (Hetzner: hel1).")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return bucket_name(value, "sovereign-openbao-snapshots-eu-central")


class StorageConfig(_Section):
    """Buckets on the stack's EU object storage (``sovereign bootstrap-backend`` creates them):
    Pulumi state (the bucket of endpoints.pulumi_backend), model weights (endpoints.model_source)
    and the audit archive under Object Lock."""

    audit_archive: str | None = Field(
        default=None,
        description="s3://bucket/prefix/ for the gateway's sealed audit segments (Object Lock bucket); "
        "its write-only key is the stack secrets `audit_s3_access_key` and `audit_s3_secret_key`.",
    )
    audit_retention_days: int = Field(
        default=3650, ge=1, le=36500,
        description="Object Lock retention of each audit segment (10 years, as § 630f BGB for records).",
    )  # fmt: skip
    audit_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE",
        description="COMPLIANCE: nobody, root included, deletes before the retention ends.",
    )
    state_noncurrent_days: int = Field(
        default=90, ge=1, description="Old versions of Pulumi state objects expire after this many days."
    )
    region: str | None = Field(
        default=None,
        description="S3 region of the endpoint (Hetzner: fsn1); default: endpoints.pulumi_backend's region=.",
    )
    openbao_snapshot_retention_days: int = Field(
        default=OPENBAO_SNAPSHOT_RETENTION_DAYS, ge=1, le=3650,
        description="Object Lock retention of each OpenBao snapshot, in the primary bucket and in the "
        "copy: erasing a tenant by destroying its key is complete only once the last snapshot holding "
        "the key has expired, so keep it short (docs/backup-restore.md).",
    )  # fmt: skip
    openbao_snapshot_copy: SnapshotCopyConfig | None = Field(
        default=None,
        description="Where a copy of every OpenBao snapshot goes: another EU location's object storage "
        "(endpoint, bucket), e.g. the DR region's; without it the snapshots live in this region only.",
    )
    manifest_signing_key: Name = Field(
        default="model-manifests",
        description="OpenBao transit key (ed25519) that signs model manifests (`sovereign models import`).",
    )

    manifest_public_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Public halves of the signing key by version (`sovereign models public-key`); "
        "when set, the weights Job refuses a manifest without a valid signature.",
    )

    @field_validator("manifest_public_keys")
    @classmethod
    def _public_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for version, key in value.items():
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:
                raw = b""
            if not version.isdigit() or len(raw) != 32:
                raise ValueError(
                    "expected key version numbers, each with a base64 ed25519 public key "
                    "(32 bytes), as `sovereign models public-key --out FILE` writes them"
                )
        return value

    @field_validator("audit_archive")
    @classmethod
    def _archive(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bucket, prefix = s3_location(value)
        return f"s3://{bucket}/{prefix}"


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: Name
    region: RegionConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    admin: AdminConfig
    bastion: BastionConfig = Field(default_factory=BastionConfig)
    control_plane: ControlPlaneConfig = Field(default_factory=ControlPlaneConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    gpu_pool: GpuPoolConfig = Field(default_factory=GpuPoolConfig)
    load_balancer: LoadBalancerConfig
    endpoints: EndpointsConfig
    rke2: Rke2Config = Field(default_factory=Rke2Config)
    residency: ResidencyConfig = Field(default_factory=ResidencyConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        problems: list[Problem] = []
        if self.region.environment == "prod" and self.control_plane.count < 3:
            problems.append(
                Problem(
                    "control_plane.count",
                    f"{self.control_plane.count} — region.environment 'prod' needs an HA "
                    "control plane: 3 or 5",
                )
            )
        if self.region.environment == "prod" and self.platform.openbao.replicas < 3:
            problems.append(
                Problem(
                    "platform.openbao.replicas",
                    f"{self.platform.openbao.replicas} — region.environment 'prod' "
                    "needs an HA OpenBao: 3 or 5 Raft members",
                )
            )
        bao, nodes = self.platform.openbao.replicas, self.openbao_nodes()
        if bao > nodes:
            problems.append(
                Problem(
                    "platform.openbao.replicas",
                    f"{bao} — OpenBao keeps one Raft member per node (required "
                    f"anti-affinity) and may run on {nodes} node(s) (control_plane.count "
                    f"{self.control_plane.count} + workers.count {self.workers.count}; the GPU servers are "
                    f"tainted for GPU workloads): {bao - nodes} member(s) would stay Pending; set "
                    f"platform.openbao.replicas to {nodes if nodes % 2 else nodes - 1} (odd, at most the "
                    "nodes), or add workers",
                )
            )
        served: dict[str, str] = {}
        for i, m in enumerate(self.platform.models):
            for alias in (m.name, *m.aliases):
                if alias in served:
                    problems.append(
                        Problem(
                            f"platform.models.{i}",
                            f"alias {alias!r} is already served by model {served[alias]!r}; "
                            "each alias must name one model",
                        )
                    )
                served.setdefault(alias, m.name)
        if self.platform.models and not self.gpu_pool.servers:
            problems.append(
                Problem(
                    "platform.models",
                    "declared, but gpu_pool.servers is empty — vLLM needs GPU workers; "
                    "declare the dedicated GPU servers or remove the models",
                )
            )
        else:
            problems.extend(self._gpu_placement_problems())
        lb_ip = self.load_balancer.private_ip
        if lb_ip not in self.network.nodes_subnet:
            problems.append(
                Problem(
                    "load_balancer.private_ip",
                    f"{lb_ip} — not in network.nodes_subnet {self.network.nodes_subnet}",
                )
            )
        elif lb_ip in self.server_ips():
            problems.append(
                Problem(
                    "load_balancer.private_ip",
                    f"{lb_ip} — taken by a server in the address plan; use e.g. .250",
                )
            )
        for i, server in enumerate(self.gpu_pool.servers):
            if server.private_ip not in self.network.vswitch_subnet:
                problems.append(
                    Problem(
                        f"gpu_pool.servers.{i}.private_ip",
                        f"{server.private_ip} — not in network.vswitch_subnet {self.network.vswitch_subnet}",
                    )
                )
            elif server.private_ip in (
                self.network.vswitch_subnet.network_address,
                self.network.vswitch_subnet.network_address + 1,
                self.network.vswitch_subnet.broadcast_address,
            ):
                # the first usable address is the cloud network's router on a vSwitch subnet
                # (docs.hetzner.com/cloud/networks/connect-dedi-vswitch, "Example routes")
                problems.append(
                    Problem(
                        f"gpu_pool.servers.{i}.private_ip",
                        f"{server.private_ip} — the network, broadcast or "
                        f"vSwitch gateway address of {self.network.vswitch_subnet}; use .11 upwards",
                    )
                )
        extra = self.residency.entries()
        for key in ("object_storage", "registry_mirror", "model_source", "pulumi_backend"):
            value = getattr(self.endpoints, key)
            if value is None:
                continue
            saas = key == "pulumi_backend" and residency.host_of(value) in residency.PULUMI_SAAS_HOSTS
            if saas and self.backend.allow_saas:
                continue
            problem = residency.endpoint_problem(value, extra)
            if problem:
                problems.append(Problem(f"endpoints.{key}", f"{problem}"))
        for key, value in (
            ("rke2.artifact_url", self.rke2.artifact_url),
            ("gpu_pool.nvidia_apt_mirror", self.gpu_pool.nvidia_apt_mirror),
        ):
            problem = residency.endpoint_problem(value, extra) if value else None
            if problem:
                problems.append(Problem(key, problem))
        for i, receiver in enumerate(self.platform.alerting.receivers):
            if problem := residency.endpoint_problem(receiver.url, extra):
                problems.append(Problem(f"platform.alerting.receivers.{i}.url", f"{problem}"))
        problems.extend(self._etcd_snapshot_problems())
        problems.extend(self._snapshot_copy_problems())
        problems.extend(self._memory_store_problems())
        problems.extend(self._egress_problems())
        if self.region.environment == "prod" and self.storage.audit_lock_mode != "COMPLIANCE":
            problems.append(
                Problem(
                    "storage.audit_lock_mode",
                    f"{self.storage.audit_lock_mode!r} — region.environment 'prod' "
                    "needs COMPLIANCE (GOVERNANCE lets privileged users delete audit records early)",
                )
            )
        if problems:
            raise CrossCheckProblems(problems)
        return self

    def _gpu_placement_problems(self) -> list[Problem]:
        """Whether the models' replicas find their GPUs. nvidia.com/gpu counts whole GPUs (the device
        plugin without time-slicing; the GEX line's RTX cards have no MIG), so two models never share
        one: an embedding model beside a chat model needs a GPU of its own. A local-path volume is
        bound to the node it was made on (its PV's nodeAffinity, local-path-provisioner v0.0.37
        provisioner.go): every replica of a model mounts the model's one weights volume, so all of
        them run on that one GPU server; with two models or more each names its server
        (``gpu_server``), or both fetch Jobs, which need no GPU, may bind their volumes to one server
        whose one GPU then serves only one of the models, the other's pods Pending for ever."""
        models, servers = self.platform.models, {s.name: s for s in self.gpu_pool.servers}
        if not models:
            return []
        problems: list[Problem] = []
        for i, m in enumerate(models):
            if m.gpu_server is not None and m.gpu_server not in servers:
                problems.append(
                    Problem(
                        f"platform.models.{i}.gpu_server",
                        f"not a server of gpu_pool.servers — name one of {', '.join(servers)}",
                    )
                )
        if problems:
            return problems
        local = self.platform.weights_storage_class == NODE_LOCAL_CLASS
        if local:
            if len(models) > 1:
                problems += [
                    Problem(
                        f"platform.models.{i}.gpu_server",
                        f"missing — with {NODE_LOCAL_CLASS} weights volumes and more than one model, each "
                        "model names the GPU server that holds its volume and runs its replicas: otherwise "
                        "the fetch Jobs may bind two volumes to one server, whose GPUs then serve one "
                        "model, and the other model's pods wait for a GPU for ever",
                    )
                    for i, m in enumerate(models)
                    if m.gpu_server is None
                ]
            most = max(server.gpus for server in servers.values())
            for i, m in enumerate(models):
                room = servers[m.gpu_server].gpus if m.gpu_server is not None else most
                where = f"GPU server {m.gpu_server} has" if m.gpu_server else "the largest GPU server has"
                if m.max_replicas * m.gpus > room:
                    problems.append(
                        Problem(
                            f"platform.models.{i}.max_replicas",
                            f"{m.max_replicas} — with {m.gpus} GPU(s) each "
                            f"they need {m.max_replicas * m.gpus} GPUs on one server: the weights volume "
                            f"({NODE_LOCAL_CLASS}) is one GPU server's disk and every replica mounts it, "
                            f"and {where} {room}; set max_replicas to "
                            f"{max(room // m.gpus, 1)} (docs/platform.md, model weights)",
                        )
                    )
        if problems:
            return problems
        for server in servers.values():
            pinned = [m for m in models if m.gpu_server == server.name]
            if sum(m.max_replicas * m.gpus for m in pinned) > server.gpus:
                each = ", ".join(f"{m.name} {m.max_replicas * m.gpus}" for m in pinned)
                problems.append(
                    Problem(
                        "platform.models",
                        f"GPU server {server.name} has {server.gpus} GPU(s) and the models on it need "
                        f"{each} at max_replicas: a GPU is never shared between models (nvidia.com/gpu "
                        "counts whole GPUs); put a model on another server, or lower max_replicas",
                    )
                )
        pool = sum(server.gpus for server in servers.values())
        wanted = sum(m.max_replicas * m.gpus for m in models)
        if not problems and wanted > pool:
            each = ", ".join(f"{m.name} {m.max_replicas * m.gpus}" for m in models)
            problems.append(
                Problem(
                    "platform.models",
                    f"at max_replicas the models need {wanted} GPUs ({each}) and gpu_pool.servers have "
                    f"{pool}: a GPU is never shared between models (nvidia.com/gpu counts whole GPUs); "
                    "add a GPU server or lower max_replicas",
                )
            )
        return problems

    def _etcd_snapshot_problems(self) -> list[Problem]:
        snapshots = self.rke2.etcd_snapshots
        if snapshots is None:
            if self.region.environment == "prod":
                return [
                    Problem(
                        "rke2.etcd_snapshots",
                        "missing — region.environment 'prod' needs etcd snapshots on the EU "
                        "object storage (RKE2 alone keeps them on the servers' disks, lost with the "
                        "servers); set at least rke2.etcd_snapshots.bucket",
                    )
                ]
            return []
        problems = []
        if urlsplit(self.endpoints.object_storage).scheme != "https":
            problems.append(
                Problem(
                    "rke2.etcd_snapshots",
                    "endpoints.object_storage must be an https:// URL — RKE2 uploads the "
                    "snapshots (they hold every Secret of the cluster) over TLS only in this platform",
                )
            )
        taken = {"storage.audit_archive": self.storage.audit_archive}
        if self.endpoints.pulumi_backend.startswith("s3://"):
            taken["endpoints.pulumi_backend"] = self.endpoints.pulumi_backend
        for key, url in taken.items():
            if url and urlsplit(url).netloc == snapshots.bucket:
                problems.append(
                    Problem(
                        "rke2.etcd_snapshots.bucket",
                        f"{snapshots.bucket!r} — already the bucket of {key}; give "
                        "the snapshots a bucket of their own (its retention and access differ)",
                    )
                )
        return problems

    def _memory_store_problems(self) -> list[Problem]:
        store = self.platform.memory_store
        key = "platform.memory_store"
        if not store.enabled:
            return []
        problems = []
        dims = sorted({m.dimensions for m in self.platform.models if m.kind == "embeddings" and m.dimensions})
        if not dims and store.dimensions is None:
            problems.append(
                Problem(
                    f"{key}.dimensions",
                    "missing — the stack has no embedding model to take the stored vectors' length from; "
                    "give the length of the embedding model the store will serve (e.g. 1024 for bge-m3)",
                )
            )
        if len(dims) == 1 and store.dimensions is not None and store.dimensions != dims[0]:
            problems.append(
                Problem(
                    f"{key}.dimensions",
                    f"{store.dimensions} — the stack's embedding model answers vectors of {dims[0]}; "
                    "remove the key or make it equal",
                )
            )
        if len(dims) > 1:
            problems.append(
                Problem(
                    "platform.models",
                    f"embedding models of {len(dims)} different lengths — the store's vector column has "
                    "one length (the gateway's memory.dimensions): serve one embedding model per stack, "
                    "or give them the same dimensions",
                )
            )
        if store.backup_bucket is None:
            problems.append(
                Problem(
                    f"{key}.backup_bucket",
                    "missing — the store's base backups and WAL archive go to a bucket of the EU object "
                    "storage; set it, e.g. s3://sovereign-memory-backups-eu-central/memory/",
                )
            )
        if self.region.environment == "prod" and store.instances < MEMORY_PROD_MIN_INSTANCES:
            problems.append(
                Problem(
                    f"{key}.instances",
                    f"{store.instances} — region.environment 'prod' needs at least "
                    f"{MEMORY_PROD_MIN_INSTANCES} (a primary and two replicas on separate nodes survive "
                    "the loss of one); only a DR or staging region may run fewer",
                )
            )
        if store.instances > self.workers.count + self.control_plane.count:
            problems.append(
                Problem(
                    f"{key}.instances",
                    f"{store.instances} — more than the cluster's cloud nodes; each instance needs a node "
                    "of its own (required pod anti-affinity), so at most workers.count + control_plane.count",
                )
            )
        endpoint, extra = store.endpoint(self.endpoints.object_storage), self.residency.entries()
        what = "backup_endpoint" + ("" if store.backup_endpoint else " (default endpoints.object_storage)")
        if urlsplit(endpoint).scheme != "https":
            problems.append(
                Problem(
                    f"{key}.backup_endpoint",
                    f"{what} is not an https:// S3 endpoint URL — the backups leave the cluster over TLS "
                    "only; give one, e.g. https://fsn1.your-objectstorage.com",
                )
            )
        # the default is endpoints.object_storage, whose residency is checked as that key
        elif store.backup_endpoint and (found := residency.endpoint_problem(endpoint, extra)):
            problems.append(Problem(f"{key}.backup_endpoint", found))
        return problems

    def _snapshot_copy_problems(self) -> list[Problem]:
        copy = self.storage.openbao_snapshot_copy
        if copy is None:
            return []
        key = "storage.openbao_snapshot_copy"
        if self.storage.audit_archive is None:
            return [
                Problem(
                    f"{key}",
                    "set, but storage.audit_archive is not — OpenBao snapshots are taken only into the "
                    "primary Object Lock bucket (that of storage.audit_archive) and copied from there",
                )
            ]
        if urlsplit(copy.endpoint).scheme not in ("https", "http"):
            return [Problem(f"{key}.endpoint", f"not an http(s):// S3 endpoint URL; give one, e.g. {_HEL1}")]
        if problem := residency.endpoint_problem(copy.endpoint, self.residency.entries()):
            return [Problem(f"{key}.endpoint", problem)]
        primary = self.endpoints.object_storage

        def where(url: str) -> str:
            return urlsplit(url if "://" in url else f"https://{url}").netloc.lower()

        if where(copy.endpoint) == where(primary):
            return [
                Problem(
                    f"{key}.endpoint",
                    "the same object storage as endpoints.object_storage; the copy must be in "
                    "another location, or it is lost with the primary region (e.g. the DR region's "
                    "https://hel1.your-objectstorage.com)",
                )
            ]
        return []

    def egress_needs(self) -> list[tuple[str, str]]:
        """(config key, endpoint) of every public endpoint the pods or the private hosts reach: each
        needs a declared destination (infra/egress.py draws who reaches which)."""
        needs: list[tuple[str, str]] = []
        platform, storage = self.platform, self.storage
        if storage.audit_archive or platform.models or self.rke2.etcd_snapshots:
            # the audit-ship sidecar, the weights Job, the OpenBao snapshots, RKE2's etcd snapshots
            needs.append(("endpoints.object_storage", self.endpoints.object_storage))
        if platform.models:
            needs.append(("endpoints.model_source", self.endpoints.model_source))
        if storage.openbao_snapshot_copy is not None and storage.audit_archive is not None:
            needs.append(("storage.openbao_snapshot_copy.endpoint", storage.openbao_snapshot_copy.endpoint))
        for i, receiver in enumerate(platform.alerting.receivers):
            needs.append((f"platform.alerting.receivers.{i}.url", receiver.url))
        # the private hosts, through the bastion's NAT
        for key, value in (
            ("endpoints.registry_mirror", self.endpoints.registry_mirror),
            ("rke2.artifact_url", self.rke2.artifact_url),
            ("gpu_pool.nvidia_apt_mirror", self.gpu_pool.nvidia_apt_mirror),
        ):
            if value:
                needs.append((key, value))
        return needs

    def _egress_problems(self) -> list[Problem]:
        """Every declared destination is inside the EU boundary; every needed public host is declared.
        Hosts are named only when they are on the allowlist (reviewed values, never a pasted secret)."""
        problems: list[Problem] = []
        extra = self.residency.entries()
        for i, dest in enumerate(self.egress.destinations):
            if problem := residency.endpoint_problem(dest.host, extra):
                problems.append(Problem(f"egress.destinations.{i}.host", f"{problem}"))
            elif residency.is_private_address(dest.host) or dest.host.endswith(
                residency.CLUSTER_LOCAL_SUFFIXES
            ):
                problems.append(
                    Problem(
                        f"egress.destinations.{i}.host",
                        "a private address or cluster-local name; declare public "
                        "endpoints only (the private network is not egress)",
                    )
                )
        missing: dict[str, list[str]] = {}
        for key, endpoint in self.egress_needs():
            host = residency.host_of(endpoint)
            if not host or residency.endpoint_problem(endpoint, extra) or _is_internal(host):
                continue  # refused (or inside the private network) already
            if self.egress.serving(host):
                continue
            entry = residency.match_endpoint(host, extra)
            if entry is not None and host == entry.host:
                shown = host
            else:
                shown = f"a host under {entry.host}" if entry is not None else "its host"
            missing.setdefault(shown, []).append(key)
        for shown, keys in missing.items():
            problems.append(
                Problem(
                    "egress.destinations",
                    f"none serves {shown} ({', '.join(keys)}) — NetworkPolicies and the "
                    "bastion's NAT match addresses, not names, and nothing reaches an undeclared address; "
                    "declare it under egress.destinations with its host, its addresses (e.g. from "
                    "`dig +short HOST`), ports and purpose (docs/region-stacks.md, declared egress)",
                )
            )
        return problems

    def openbao_nodes(self) -> int:
        """Nodes an OpenBao member may be scheduled on: the control-plane servers and the CPU workers
        (no taint: infra/hosts/inventory.py taints only the GPU servers, nvidia.com/gpu:NoSchedule,
        and OpenBao's Helm values add no toleration and no nodeSelector)."""
        return self.control_plane.count + self.workers.count

    def server_ips(self) -> set[ipaddress.IPv4Address]:
        net = self.network
        return {
            net.bastion_ip,
            *(net.control_plane_ip(i) for i in range(self.control_plane.count)),
            *(net.worker_ip(i) for i in range(self.workers.count)),
        }

    def labels(self, role: str) -> dict[str, str]:
        """Labels for every resource that takes labels (Hetzner label syntax)."""
        return {
            "managed-by": "sovereign-llm",
            "stack": self.stack,
            "residency": "eu",
            "jurisdiction": self.region.jurisdiction.lower(),
            "data-classification": self.region.data_classification,
            "role": role,
        }


def _is_internal(host: str) -> bool:
    """A private address or a cluster-local name: inside the private network, never egress."""
    try:
        ipaddress.ip_address(host)
        return True  # config.py admits private literals only (residency.endpoint_problem)
    except ValueError:
        return host.endswith(residency.CLUSTER_LOCAL_SUFFIXES)


def _format_errors(exc: ValidationError) -> list[Problem]:
    """One problem per bad key, never its value (gateway/validation.py)."""
    found = []
    for problem in validation.problems(exc):
        key = f"{PROJECT}:{problem.path}" if problem.path else PROJECT
        if problem.type == "missing":
            message = "missing — this key is required (see stacks/Pulumi.eu-central-prod.yaml)"
            found.append(Problem(key, message, problem.type))
        elif problem.type == "extra_forbidden":
            found.append(
                Problem(key, "unknown key — check the spelling against docs/region-stacks.md", problem.type)
            )
        elif problem.path:
            found.append(Problem(key, problem.message, problem.type))
        else:  # the cross-section checks (StackConfig._cross_checks): their problems as data
            found.extend(
                _cross_check_problems(exc) or [Problem("", f"{PROJECT}: {problem.message}", problem.type)]
            )
    return found


def _cross_check_problems(exc: ValidationError) -> list[Problem]:
    """The problems StackConfig._cross_checks raised, each with its key under the project's
    prefix: pydantic keeps the raised exception in the error's context."""
    found: list[Problem] = []
    for err in exc.errors(include_input=False, include_url=False):
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, CrossCheckProblems):
            found.extend(Problem(f"{PROJECT}:{p.path}", p.message) for p in raised.problems)
    return found


def parse(stack: str, sections: dict[str, Any], source: str) -> StackConfig:
    """Build the typed config from the section objects; raise StackConfigError naming every bad key."""
    sections = {k: v for k, v in sections.items() if k not in SECRET_KEYS}
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise StackConfigError(
            source,
            [Problem(f"{PROJECT}:{k}", f"unknown section — allowed: {', '.join(SECTIONS)}") for k in unknown],
        )
    try:
        return StackConfig(stack=stack, **sections)
    except ValidationError as exc:
        raise StackConfigError(source, _format_errors(exc)) from None


def stack_file(stacks_dir: Path, stack: str) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def read_stack_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sections of this project, the whole file) from a Pulumi stack file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise StackConfigError(
            str(path), ["no such stack file; stacks live in stacks/Pulumi.<stack>.yaml"]
        ) from None
    except yaml.YAMLError as exc:
        raise StackConfigError(str(path), [validation.not_yaml(exc)]) from None
    config = document.get("config") or {}
    sections = {}
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace == PROJECT:
            sections[name] = value
    return sections, document


def load(stacks_dir: Path, stack: str) -> StackConfig:
    path = stack_file(stacks_dir, stack)
    sections, _ = read_stack_file(path)
    return parse(stack, sections, str(path))


def from_pulumi() -> StackConfig:
    """The config of the running Pulumi stack (``pulumi up`` / ``preview`` or the mocks)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = pulumi.Config(PROJECT)
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    names = {k.partition(":")[2] for k in keys if k.startswith(PROJECT + ":")}
    sections: dict[str, Any] = {name: None for name in names - set(SECTIONS) - set(SECRET_KEYS)}
    for name in SECTIONS:
        value = config.get_object(name)
        if value is not None:
            sections[name] = value
    return parse(pulumi.get_stack(), sections, f"stack {pulumi.get_stack()!r}")
