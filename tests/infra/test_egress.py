"""Declared egress (issue #23): nothing in the cluster or behind the bastion reaches an address the
stack does not declare, every declared host is inside the EU boundary, and a needed host left
undeclared is refused before anything runs.

The NetworkPolicies are read from the real program's plan (under Pulumi's mocks); the bastion's
rules from the cloud-init it gets and from the hardening role's nftables template rendered by
Ansible itself; containerd's sources from the rke2 role's templates, rendered the same way.
Semantics the assertions rely on: a NetworkPolicy ipBlock matches destination addresses only
(kubernetes.io/docs/concepts/services-networking/network-policies, "ipBlock"); iptables' FORWARD
chain policy applies to a packet no rule accepted (iptables(8), "-P, --policy"); nft evaluates a
rule's matches in order and a chain's policy applies to what no rule accepted (nft(8), CHAINS);
containerd tries a registry's default endpoint last unless RKE2 sets
disable-default-registry-endpoint (docs.rke2.io/install/private_registry, "Default Endpoint
Fallback").
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config, egress, program
from infra import plan as planner
from infra.components import cloud_init
from infra.hosts import inventory
from infra.hosts.converge import run_playbook
from tests.infra.support import REPO, plan_of, sections

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PRIVATE = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
]


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


@pytest.fixture(scope="module")
def cfg() -> config.StackConfig:
    return config.parse("eu-central-prod", sections("eu-central-prod"), "test")


def declared(cfg: config.StackConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for d in cfg.egress.destinations for c in d.cidrs]


def within(cidr: str, nets: list[Any]) -> bool:
    net = ipaddress.ip_network(cidr)
    return any(net.version == n.version and net.subnet_of(n) for n in nets)


def public_blocks(plan: planner.Plan) -> list[tuple[str, str]]:
    """(policy name, cidr) of every egress ipBlock outside the private ranges, in the whole plan."""
    out = []
    for r in plan.of_type(NETWORK_POLICY):
        for rule in r.inputs["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                if "ipBlock" in peer and not within(peer["ipBlock"]["cidr"], PRIVATE):
                    out.append((r.inputs["metadata"]["name"], peer["ipBlock"]["cidr"]))
    return out


# --- the pods ----------------------------------------------------------------------------------


def test_no_network_policy_reaches_any_public_address(prod: planner.Plan, cfg: config.StackConfig) -> None:
    blocks = public_blocks(prod)
    assert blocks  # the audit shipping, the weights and the snapshots do go out
    for policy, cidr in blocks:
        assert cidr != "0.0.0.0/0", policy
        assert within(cidr, declared(cfg)), (policy, cidr)


def test_the_gateway_reaches_only_the_archive_object_storage(prod: planner.Plan) -> None:
    gateway = {p: c for p, c in public_blocks(prod) if p.startswith("gateway")}
    # the pods holding patient data in clear: the destination serving endpoints.object_storage only
    assert gateway == {"gateway-audit-ship": "192.0.2.16/28"}


def test_each_pod_reaches_only_the_destinations_it_needs(prod: planner.Plan) -> None:
    by_policy: dict[str, set[str]] = {}
    for policy, cidr in public_blocks(prod):
        by_policy.setdefault(policy, set()).add(cidr)
    assert by_policy == {
        "gateway-audit-ship": {"192.0.2.16/28"},  # fsn1: the audit archive
        "weights-fetch-egress": {"192.0.2.16/28"},  # fsn1: the weights
        # fsn1: the Object Lock bucket; hel1: the copy (storage.openbao_snapshot_copy)
        "openbao-snapshot-egress": {"192.0.2.16/28", "192.0.2.32/28"},
        "memory-store": {"192.0.2.16/28"},  # fsn1: the memory store's backups (platform.memory_store)
    }


def test_the_rendered_policies_and_the_egress_table_agree(
    prod: planner.Plan, cfg: config.StackConfig
) -> None:
    objects = [r.inputs for r in prod.of_type(NETWORK_POLICY)]
    read_back = egress.from_network_policies(cfg, objects)
    assert read_back and all(e.destination != egress.UNDECLARED for e in read_back)
    pods = {(e.source, e.destination, e.ports) for e in egress.allowed(cfg) if e.source_kind == "pod"}
    assert {(e.source, e.destination, e.ports) for e in read_back} == pods


def test_an_undeclared_public_ipblock_is_read_back_as_undeclared(cfg: config.StackConfig) -> None:
    world = {
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "x"}},
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
    }
    [record] = egress.from_network_policies(cfg, [world])
    assert record.destination == egress.UNDECLARED


@pytest.mark.parametrize(
    "rule", [{"ports": [{"port": 443}]}, {"to": []}, {}], ids=["no-to", "empty-to", "empty"]
)
def test_a_rule_without_peers_is_read_back_as_every_address_undeclared(
    cfg: config.StackConfig, rule: dict[str, Any]
) -> None:
    # NetworkPolicyEgressRule.to: "If this field is empty or missing, this rule matches all destinations"
    policy = {"metadata": {"name": "p", "namespace": "n"}, "spec": {"egress": [rule]}}
    read_back = egress.from_network_policies(cfg, [policy])
    assert [(e.destination, e.cidrs) for e in read_back] == [
        (egress.UNDECLARED, ("0.0.0.0/0",)),
        (egress.UNDECLARED, ("::/0",)),
    ]


def test_every_allowed_egress_names_its_destination_and_purpose(cfg: config.StackConfig) -> None:
    records = egress.allowed(cfg)
    assert {e.source_kind for e in records} == {"pod", "host"}
    for e in records:
        assert e.destination and e.cidrs and e.ports and e.purpose, e
        assert all(c != "0.0.0.0/0" for c in e.cidrs)


# --- the bastion's NAT -------------------------------------------------------------------------


def nat_targets(cfg: config.StackConfig) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(c) for d in egress.nat_flows(cfg) for c in d.cidrs]  # type: ignore[misc]


def assert_to_declared_addresses_only(accepts: list[str], cfg: config.StackConfig) -> None:
    """Every nftables accept names its destination addresses, each inside a declared destination."""
    targets = nat_targets(cfg)
    for line in accepts:
        match = re.search(r"ip daddr \{ ([^}]*) \}", line)
        assert match, line  # never to any address
        assert all(within(c.strip(), targets) for c in match[1].split(",")), line


def test_the_bootstrap_nat_forwards_and_masquerades_only_to_declared_addresses(
    cfg: config.StackConfig,
) -> None:
    document = yaml.safe_load(cloud_init.bastion(cfg).removeprefix("#cloud-config\n"))
    [unit] = [f["content"] for f in document["write_files"] if f["path"].endswith("sovereign-nat.service")]
    start = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    # nothing is forwarded that no rule accepts
    assert start[-1] == "/usr/sbin/iptables -t filter -P FORWARD DROP"
    masquerade = [c for c in start if "MASQUERADE" in c]
    accept = [c for c in start if "-A FORWARD" in c and "--ctstate" not in c]
    assert masquerade and accept
    targets = nat_targets(cfg)
    for command in masquerade + accept:
        match = re.search(r" -d (\S+) ", command)
        assert match, command  # never the whole internet
        assert within(match[1], targets), command
    # the declared destinations (and Hetzner's resolvers) are exactly what is reachable
    reached = {re.search(r" -d (\S+) ", c)[1] for c in masquerade}  # type: ignore[index]
    assert reached == {str(n) for n in targets}
    assert {"192.0.2.16/28", "198.51.100.10/32", "185.12.64.1/32"} <= reached
    # each on its ports only
    assert any("-d 203.0.113.81/32 -o eth0 -p udp -m multiport --dports 123 -j ACCEPT" in c for c in accept)
    assert not any("-d 203.0.113.81/32" in c and "-p tcp" in c for c in accept)
    stop = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStop=")]
    assert len(stop) == len(start)  # every rule is taken back, and the policy restored


def test_the_inventory_gives_the_bastion_the_declared_destinations(cfg: config.StackConfig) -> None:
    inv = inventory.build(cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[])
    bastion = next(iter(inventory.hosts_of(inv, "bastion").values()))
    names = [d["name"] for d in bastion["hardening_nat_destinations"]]
    assert names == [egress.DNS_DESTINATION, *(d.name for d in cfg.egress.destinations)]
    fsn1 = next(d for d in bastion["hardening_nat_destinations"] if d["name"] == "objectstorage-fsn1")
    assert fsn1 == {
        "name": "objectstorage-fsn1",
        "cidrs": ["192.0.2.16/28"],
        "tcp_ports": [443],
        "udp_ports": [],
    }


def render(tmp_path: Path, **extravars: Any) -> Any:
    localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    base = {
        "render_dest": str(tmp_path),
        "hardening_ssh_allowed_sources": ["10.20.1.2"],
        "rke2_join_token": "K10-test-token",  # a test value, never a real token
        "rke2_role": "agent",
        "rke2_node_ip": "10.20.1.21",
    }
    return run_playbook(
        REPO / "tests" / "infra" / "playbooks" / "egress_render.yml",
        {"all": {"hosts": {"localhost": localhost}}},
        base | extravars,
    )


def test_the_hardened_bastion_nat_reaches_only_declared_addresses(
    tmp_path: Path, cfg: config.StackConfig
) -> None:
    inv = inventory.build(cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[])
    bastion = next(iter(inventory.hosts_of(inv, "bastion").values()))
    keys = (
        "hardening_kubernetes_node",
        "hardening_nat_sources",
        "hardening_nat_destinations",
        "hardening_private_cidrs",
    )
    run = render(tmp_path, **{k: bastion[k] for k in keys})
    assert run.rc == 0, run.failures
    ruleset = (tmp_path / "nftables.conf").read_text()
    forward = ruleset.split("chain forward {", 1)[1].split("}\n  chain output", 1)[0]
    assert "policy drop;" in forward
    accepts = [line.strip() for line in forward.splitlines() if line.strip().endswith(("accept", '"'))]
    accepts = [a for a in accepts if "ct state" not in a]
    assert accepts
    assert_to_declared_addresses_only(accepts, cfg)
    assert any("ip daddr { 203.0.113.81/32 }" in a and "udp dport { 123 }" in a for a in accepts)
    nat = ruleset.split("table ip sovereign_nat {", 1)[1]
    [masquerade] = [line.strip() for line in nat.splitlines() if line.strip().endswith("masquerade")]
    daddr = re.search(r"ip daddr \{ ([^}]*) \}", masquerade)
    assert daddr and {c.strip() for c in daddr[1].split(",")} == {str(n) for n in nat_targets(cfg)}


# --- the GPU servers' public uplink -------------------------------------------------------------

GPU_HOST = {"name": "gpu1", "private_ip": "10.20.128.11", "server_number": 1, "datacenter": "FSN1-DC14",
            "vlan_id": 4000, "gpus": 1}  # fmt: skip
UPLINK = "enp7s0"  # what the inventory's ansible_default_ipv4.interface names on a GEX


def gpu_ruleset(tmp_path: Path, cfg: config.StackConfig) -> str:
    """The hardening role's ruleset of a GPU server, with the inventory's variables for it."""
    inv = inventory.build(
        cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[GPU_HOST]
    )
    gpu = inv["all"]["children"]["gpu"]["vars"]
    assert gpu["hardening_public_interfaces"] == ["{{ ansible_default_ipv4.interface | default('') }}"]
    run = render(
        tmp_path,
        hardening_public_interfaces=[UPLINK],  # the fact the template above resolves to on the host
        hardening_uplink_destinations=gpu["hardening_uplink_destinations"],
        hardening_private_cidrs=inv["all"]["vars"]["hardening_private_cidrs"],
    )
    assert run.rc == 0, run.failures
    return (tmp_path / "nftables.conf").read_text()


def chain(ruleset: str, name: str) -> list[str]:
    body = ruleset.split(f"chain {name} {{", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_inventory_gives_the_gpu_servers_the_nat_destinations(cfg: config.StackConfig) -> None:
    inv = inventory.build(
        cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[GPU_HOST]
    )
    bastion = next(iter(inventory.hosts_of(inv, "bastion").values()))
    gpu = inv["all"]["children"]["gpu"]["vars"]
    assert gpu["hardening_uplink_destinations"] == bastion["hardening_nat_destinations"]
    # and only the GPU servers have a public uplink to close
    for group in ("control_plane", "workers"):
        assert "hardening_uplink_destinations" not in inv["all"]["children"][group]["vars"]


@pytest.mark.parametrize("name", ["output", "forward"])
def test_a_gpu_server_lets_out_by_its_uplink_only_to_declared_addresses(
    tmp_path: Path, cfg: config.StackConfig, name: str
) -> None:
    rules = chain(gpu_ruleset(tmp_path, cfg), name)
    uplink = [r for r in rules if f'oifname "{UPLINK}"' in r]
    # the verdict on everything else leaving by the uplink, after every accept (nft(8): rules in order)
    assert uplink[-1] == f'oifname "{UPLINK}" counter reject with icmpx type admin-prohibited'
    accepts = [r for r in uplink if " accept" in r]
    declared_accepts = [r for r in accepts if "ct state" not in r and "icmpv6 type" not in r]
    assert declared_accepts
    assert_to_declared_addresses_only(declared_accepts, cfg)
    for line in declared_accepts:
        assert re.search(r"(tcp|udp) dport \{ [0-9, ]+ \} accept comment ", line), line  # on its ports
    # what else is accepted on the uplink: replies, and (output only) IPv6 neighbour discovery
    others = [r for r in accepts if r not in declared_accepts]
    assert others[0] == f'oifname "{UPLINK}" ct state established,related accept'
    for line in others[1:]:
        assert name == "output" and "icmpv6 type { nd-" in line and "ip6 hoplimit 255" in line, line
    # the declared destinations, each on its own ports: DNS, the object storage, the time servers
    assert any(
        "ip daddr { 185.12.64.1/32, 185.12.64.2/32 }" in a and "udp dport { 53 }" in a for a in accepts
    )
    assert any("ip daddr { 192.0.2.16/28 }" in a and "tcp dport { 443 }" in a for a in accepts)
    assert any("ip daddr { 203.0.113.81/32 }" in a and "udp dport { 123 }" in a for a in accepts)
    assert not any("203.0.113.81/32" in a and "tcp dport" in a for a in accepts)
    # nothing on the uplink is accepted before the declared list is checked: no rule accepts by the
    # interface alone, and the chain's other rules name other interfaces or none
    assert not any(r.startswith("accept") or r == f'oifname "{UPLINK}" accept' for r in rules)


@pytest.mark.parametrize("host", ["gpu", "bastion"])
def test_the_rendered_rulesets_are_valid_nft(tmp_path: Path, cfg: config.StackConfig, host: str) -> None:
    """What the role's `validate: nft -c -f` would say on the host (tasks/firewall.yml)."""
    nft = Path("/usr/sbin/nft")
    if not nft.exists():
        pytest.skip("nft is not installed here")
    if host == "gpu":
        ruleset = gpu_ruleset(tmp_path, cfg)
    else:
        inv = inventory.build(
            cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[]
        )
        bastion = next(iter(inventory.hosts_of(inv, "bastion").values()))
        names = ("hardening_kubernetes_node", "hardening_nat_sources", "hardening_nat_destinations")
        assert render(tmp_path, **{k: bastion[k] for k in names}).rc == 0
        ruleset = (tmp_path / "nftables.conf").read_text()
    checked = subprocess.run(
        [str(nft), "-c", "-f", "-"], input=ruleset, capture_output=True, text=True, check=False
    )
    if "Operation not permitted" in checked.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert checked.returncode == 0, checked.stderr


# --- the image pulls ---------------------------------------------------------------------------


def test_containerd_never_falls_back_to_an_upstream_registry(tmp_path: Path, cfg: config.StackConfig) -> None:
    inv = inventory.build(cfg, bastion_public_ip="198.51.100.1", control_plane={}, workers={}, gpu_hosts=[])
    names = ("rke2_registry_mirror", "rke2_profile", "rke2_version")
    run = render(
        tmp_path, **{k: inv["all"]["vars"][k] for k in names}, rke2_server_url="https://10.20.1.11:9345"
    )
    assert run.rc == 0, run.failures
    rendered = yaml.safe_load((tmp_path / "config.yaml").read_text())
    # no fallback to a registry's own endpoint ...
    assert rendered["disable-default-registry-endpoint"] is True
    registries = yaml.safe_load((tmp_path / "registries.yaml").read_text())
    mirrors = registries["mirrors"]
    # ... but only for the registries registries.yaml configures ("If the registry is not explicitly
    # configured via mirror entry in registries.yaml, the default fallback behavior will still be
    # used": docs.rke2.io/install/private_registry, "Default Endpoint Fallback"): the "*" entry
    # configures every registry not listed ("Wildcard Support", same page), on the mirror too
    assert mirrors["*"] == {"endpoint": ["https://registry.sovereign.example.de"]}
    assert {"docker.io", "registry.k8s.io", "ghcr.io", "quay.io", "nvcr.io"} <= set(mirrors)
    for registry, mirror in mirrors.items():
        assert mirror["endpoint"] == ["https://registry.sovereign.example.de"], registry
    # the wildcard is the quoted string "*", as RKE2 requires, not a YAML alias
    assert '\n  "*":\n' in (tmp_path / "registries.yaml").read_text()


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        ("v1.33.5+rke2r1", False),
        ("v1.30.0+rke2r1", False),
        ("v1.29.1+rke2r1", True),
        ("v1.28.6+rke2r1", True),
    ],
)
def test_the_role_refuses_a_release_without_the_wildcard_mirror_entry(version: str, refused: bool) -> None:
    """The "*" entry needs v1.29.3+rke2r1 or later (docs.rke2.io/install/private_registry, "Wildcard
    Support"); an older RKE2 would ignore it and let unlisted registries fall back upstream."""
    localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    extravars = {
        "rke2_role": "agent",
        "rke2_version": version,
        "rke2_artifact_url": "https://fsn1.your-objectstorage.com/artefacts/rke2",
        "rke2_artifact_sha256": "a" * 64,  # a test's own value
        "rke2_server_url": "https://10.20.1.11:9345",
        "rke2_registry_mirror": "https://registry.sovereign.example.de",
        "rke2_airgap_images": False,
    }
    run = run_playbook(
        REPO / "tests" / "infra" / "playbooks" / "rke2_inputs.yml",
        {"all": {"hosts": {"localhost": localhost}}},
        extravars,
    )
    if not refused:
        assert run.rc == 0, run.failures
        return
    assert run.rc != 0
    [failure] = run.failures
    assert failure.startswith("localhost: Check the registry mirror:"), failure
    assert "rke2_version must be v1.30 or later" in failure


# --- the config --------------------------------------------------------------------------------


def refused(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as caught:
        config.parse("eu-central-prod", data, "test")
    return [str(p) for p in caught.value.problems]


def test_a_needed_host_left_undeclared_is_refused_with_the_fix() -> None:
    data = sections("eu-central-prod")
    data["egress"]["destinations"] = [
        d for d in data["egress"]["destinations"] if d["name"] != "objectstorage-fsn1"
    ]
    [problem] = refused(data)
    assert problem.startswith("sovereign-llm:egress.destinations: none serves fsn1.your-objectstorage.com (")
    for key in ("endpoints.object_storage", "endpoints.model_source", "rke2.artifact_url"):
        assert key in problem
    assert "dig +short HOST" in problem and "declare it under egress.destinations" in problem


def test_an_alert_receiver_needs_a_declared_destination() -> None:
    data = sections("eu-central-prod")
    data["platform"]["alerting"] = {
        "receivers": [{"name": "ops", "url": "https://alerts.sovereign.example.de/h"}]
    }
    data["residency"]["extra_hosts"].append(
        {"host": "alerts.sovereign.example.de", "jurisdiction": "DE", "operator": "Example Health Shop GmbH"}
    )
    [problem] = refused(data)
    assert "alerts.sovereign.example.de (platform.alerting.receivers.0.url)" in problem


def test_a_non_eu_destination_host_is_refused() -> None:
    data = sections("eu-central-prod")
    data["egress"]["destinations"].append(
        {
            "name": "s3-us",
            "host": "s3.us-east-1.amazonaws.com",
            "cidrs": ["198.51.100.64/28"],
            "purpose": "x y z",
        }
    )
    problems = refused(data)
    assert any(
        p.startswith("sovereign-llm:egress.destinations.7.host:") and "GDPR Art. 44" in p for p in problems
    )


@pytest.mark.parametrize(
    ("cidr", "why"),
    [
        ("0.0.0.0/0", "wider than /16"),
        ("88.0.0.0/8", "wider than /16"),
        ("10.20.0.0/16", "private"),
        ("169.254.169.254/32", "private"),
        ("100.64.0.0/16", "private"),
        ("not-a-network", "not an IP network"),
    ],
)
def test_a_destination_is_a_public_network(cidr: str, why: str) -> None:
    data = sections("eu-central-prod")
    data["egress"]["destinations"][0]["cidrs"] = [cidr]
    problems = refused(data)
    [problem] = [p for p in problems if p.startswith("sovereign-llm:egress.destinations.0.cidrs.0:")]
    assert why in problem and "dig +short HOST" in problem
    assert cidr not in problem  # the rule and the fix, never the value


def test_two_destinations_may_not_share_a_name() -> None:
    data = sections("eu-central-prod")
    data["egress"]["destinations"].append(dict(data["egress"]["destinations"][0]))
    assert any("share a name" in p for p in refused(data))


def test_without_a_mirror_no_registry_is_configured_and_the_program_refuses_to_deploy(
    tmp_path: Path,
) -> None:
    """Without registries.yaml, disable-default-registry-endpoint configures no registry and so
    changes nothing (docs.rke2.io/install/private_registry, "Default Endpoint Fallback"): what keeps
    the nodes off upstream registries then is the deploy blocker (infra/images.py) and the hosts'
    firewalls, which reach only the declared destinations (above)."""
    run = render(tmp_path, rke2_registry_mirror="", rke2_server_url="https://10.20.1.11:9345")
    assert run.rc == 0, run.failures
    rendered = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert rendered["disable-default-registry-endpoint"] is True
    assert not (tmp_path / "registries.yaml").exists()
    data = sections("eu-central-prod")
    data["endpoints"].pop("registry_mirror")
    blocked = program.deploy_blockers(config.parse("eu-central-prod", data, "test"))
    assert any(b.startswith("endpoints.registry_mirror is not set") for b in blocked), blocked
