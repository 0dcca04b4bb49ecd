"""The GPU servers' network on a real booted Debian 12 host: the ``vswitch`` role's link to the
cloud network and the ``hardening`` role's closed public interface, converged as on a GEX server.

The lab host plays a GPU server: its veth (``host0``) is the server's uplink, this machine's end
of it plays both the vSwitch gateway (10.20.2.1) and, behind it, the bastion (10.20.1.2, in the
cloud subnet). As in a stack, the first converge reaches the host over its uplink (a new server,
as installimage leaves it); every later one comes over the vSwitch from the bastion's address,
with the uplink closed. Reaching the host that way needs the route to the cloud network through
the gateway: the host answers 10.20.1.2 only through it.

This machine's kernel may have no 802.1Q support (no ``vlan`` link type); then the link is a
``macvlan`` (``vswitch_link_kind``), untagged, and the guest answers ARP only on the interface that
holds an address (``arp_ignore=1``, which a VLAN makes unnecessary). The tag itself is then proven
only in the rendered unit (tests/infra/test_vswitch.py). Everything else is the same: MTU,
address, route, persistence, idempotence, the closed uplink.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.hosts.converge import PlaybookRun, run_playbook
from infra.paths import REPO_ROOT
from tests.hosts.lab import PROXY_PORT, SSH_ARGS, USER, Lab, LabHost

PLAYBOOK = REPO_ROOT / "tests" / "hosts" / "playbooks" / "vswitch.yml"
VLAN = 4000
SUBNET = "10.20.2.0/24"
ADDRESS = "10.20.2.10"  # the GPU server's private_ip
GATEWAY = "10.20.2.1"  # Hetzner's vSwitch gateway: the subnet's first usable address
CLOUD = "10.20.0.0/16"  # the whole cloud network
BASTION = "10.20.1.2"  # the bastion's private address (nodes subnet .2), beyond the gateway
LINK = f"host0.{VLAN}"


def kernel_has_8021q() -> bool:
    """Whether this machine's kernel can make a VLAN link (tried on a throwaway veth pair)."""
    probe = ["ip", "link", "add", "vsw-probe", "type", "veth", "peer", "name", "vsw-probe1"]
    subprocess.run(probe, check=True)
    try:
        made = subprocess.run(
            ["ip", "link", "add", "link", "vsw-probe", "name", "vsw-probe.9", "type", "vlan", "id", "9"],
            capture_output=True,
        )
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", "vsw-probe"], check=False)


KIND = "vlan" if kernel_has_8021q() else "macvlan"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(Path(tmp_path_factory.mktemp("gpu-hosts")), ["gpu1"], first_index=3) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(lab: Lab) -> Iterator[str]:
    """This machine's end of the vSwitch: the gateway's and the bastion's addresses."""
    host = lab.hosts[0]
    link = host.link
    if KIND == "vlan":
        link = f"{host.link}.{VLAN}"
        vlan = ["type", "vlan", "id", str(VLAN)]
        subprocess.run(
            ["ip", "link", "add", "link", host.link, "name", link, "mtu", "1400", *vlan], check=True
        )
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    else:
        # macvlan: the guest answers ARP only for addresses of the asking interface, as with a VLAN
        assert host.ssh("sudo sysctl -qw net.ipv4.conf.all.arp_ignore=1").returncode == 0
    subprocess.run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", link], check=True)
    subprocess.run(["ip", "addr", "add", f"{BASTION}/32", "dev", link], check=True)
    try:
        yield link
    finally:
        for address in (f"{GATEWAY}/24", f"{BASTION}/32"):
            subprocess.run(["ip", "addr", "del", address, "dev", link], check=False, capture_output=True)
        if KIND == "vlan":
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


def inventory(lab: Lab, *, over_vswitch: bool, **extra: Any) -> dict[str, Any]:
    """A GPU server as the stack inventory gives it (vSwitch address, VLAN, SSH from the bastion,
    the uplink closed); *over_vswitch* False is the first converge, over the uplink."""
    host = lab.hosts[0]
    vars_: dict[str, Any] = host.ansible_vars() | {
        "private_ip": ADDRESS,
        "vswitch_vlan_id": VLAN,
        "vswitch_parent_interface": "host0",  # the lab has no default route; on a GEX it names the uplink
        "vswitch_link_kind": KIND,
        "hardening_ssh_allowed_sources": [BASTION],
        "hardening_public_interfaces": ["host0"],
    }
    if over_vswitch:
        # the lab's package proxy on the uplink's far end is this host's only declared destination
        # (on a GEX: the stack's egress.destinations and Hetzner's resolvers, infra/egress.py nat_flows)
        vars_["hardening_uplink_destinations"] = [
            {
                "name": "lab-apt-proxy",
                "cidrs": [f"{host.host_end}/32"],
                "tcp_ports": [PROXY_PORT],
                "udp_ports": [],
            }
        ]
        vars_["ansible_host"] = ADDRESS
        vars_["ansible_ssh_common_args"] = f"{SSH_ARGS} -o BindAddress={BASTION}"
    else:  # a new server: reached over its uplink, which stays open until the vSwitch works
        vars_["hardening_ssh_allowed_sources"] = [host.host_end, BASTION]
        vars_["hardening_public_interfaces"] = []
    return {
        "all": {
            "hosts": {host.name: vars_ | extra},
            "vars": {
                "hardening_private_cidrs": [CLOUD],
                "sovereign_vswitch_subnet": SUBNET,
                "sovereign_network_cidr": CLOUD,
            },
        }
    }


def over_vswitch(host: LabHost, command: str) -> subprocess.CompletedProcess[str]:
    """Run *command* on the host through SSH from the bastion's address over the vSwitch."""
    return subprocess.run(
        ["ssh", "-i", str(host.key), "-o", "BatchMode=yes", *SSH_ARGS.split(), "-o", "ConnectTimeout=5",
         "-o", f"BindAddress={BASTION}", f"{USER}@{ADDRESS}", command],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def guest_json(host: LabHost, command: str) -> Any:
    result = over_vswitch(host, command)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def converged(lab: Lab, gateway: str) -> tuple[PlaybookRun, PlaybookRun, PlaybookRun]:
    first = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=False))
    second = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=True))
    third = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=True))
    return first, second, third


@pytest.mark.timeout(1800)  # the fixture: three converges of hardening and the vswitch role
def test_converges_over_the_uplink_then_over_the_vswitch_and_the_last_run_changes_nothing(
    converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun],
) -> None:
    first, second, third = converged
    assert first.rc == 0, first.failures
    assert second.rc == 0, second.failures  # Ansible came over the vSwitch from the bastion's address
    assert sum(second.changed.values()) > 0  # the uplink closed
    assert third.rc == 0, third.failures
    assert third.ok.get("gpu1", 0) >= 5 and sum(third.changed.values()) == 0


def test_the_link_has_mtu_1400_and_the_servers_vswitch_address(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    (link,) = guest_json(lab.hosts[0], f"ip -json -details address show dev {LINK}")
    assert link["mtu"] == 1400  # Hetzner's vSwitch carries at most 1400 bytes
    assert link["link"] == "host0" and link["linkinfo"]["info_kind"] == KIND
    if KIND == "vlan":
        assert link["linkinfo"]["info_data"]["id"] == VLAN
    inet = [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"]
    assert inet == [(ADDRESS, 24)]


def test_the_cloud_network_is_routed_through_the_vswitch_gateway(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    host = lab.hosts[0]
    (route,) = guest_json(host, f"ip -json route get {BASTION}")
    assert (route["gateway"], route["dev"]) == (GATEWAY, LINK)
    (on_link,) = guest_json(host, f"ip -json route get {GATEWAY}")
    assert on_link["dev"] == LINK and "gateway" not in on_link  # the gateway itself is on the link
    # the host reaches nothing else through it: no default route was added
    assert guest_json(host, "ip -json route show default") == []


def test_the_uplink_takes_nothing_new_even_from_an_allowed_source(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    host = lab.hosts[0]

    def dropped() -> int:
        chain = over_vswitch(host, "sudo nft list chain inet sovereign input")
        assert chain.returncode == 0, chain.stderr
        found = re.search(r'iifname "host0" counter packets (\d+) bytes \d+ drop', chain.stdout)
        assert found, chain.stdout
        return int(found.group(1))

    before = dropped()
    # the bastion's address may SSH in (hardening_ssh_allowed_sources) but not through the uplink
    with pytest.raises(OSError):
        socket.create_connection((host.address, 22), timeout=3, source_address=(BASTION, 0)).close()
    assert dropped() > before  # dropped by the uplink rule, not by rp_filter or the SSH source rule
    # the same source over the vSwitch is let in
    with socket.create_connection((ADDRESS, 22), timeout=5, source_address=(BASTION, 0)) as conn:
        assert conn.recv(4) == b"SSH-"
    # replies to the host's own connections over the uplink still come in (apt goes that way)
    proxy = f"('{host.host_end}', {PROXY_PORT})"
    opened = over_vswitch(
        host, f"python3 -c \"import socket; socket.create_connection({proxy}, 5); print('ok')\""
    )
    assert opened.stdout.strip() == "ok", opened.stderr


def test_the_uplink_lets_out_only_the_declared_destinations(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    """The host's own traffic leaving by the uplink: to the declared destination on its port (the
    proxy, reached in the test above), nothing else, not even another port of the same address."""
    host = lab.hosts[0]

    def refused() -> int:
        chain = over_vswitch(host, "sudo nft list chain inet sovereign output")
        assert chain.returncode == 0, chain.stderr
        found = re.search(r'oifname "host0" counter packets (\d+) bytes \d+ reject', chain.stdout)
        assert found, chain.stdout
        return int(found.group(1))

    def connect(port: int) -> str:
        probe = (
            "import socket; s = socket.socket(); s.settimeout(5); "
            f"print(s.connect_ex(('{host.host_end}', {port})))"
        )
        result = over_vswitch(host, f'python3 -c "{probe}"')
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    before = refused()
    assert connect(PROXY_PORT) == "0"  # declared: tcp/PROXY_PORT on the proxy's address
    assert refused() == before
    assert connect(PROXY_PORT + 1) != "0"  # the same address, an undeclared port
    assert refused() > before  # refused by the uplink rule, not by a closed port's RST


def test_a_nodeport_on_the_uplink_never_reaches_a_pod(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    """kube-proxy's NodePorts are DNATed in prerouting and forwarded to the pod: the input chain
    never sees them, so the uplink must be closed on the forward path too."""
    host = lab.hosts[0]
    pod = "10.42.9.9"  # a pod on another node, reached over the vSwitch (RKE2's cluster-cidr)
    nodeport = (
        "sudo sysctl -qw net.ipv4.ip_forward=1"  # as on every Kubernetes node
        " && sudo nft add table ip lab-kube-proxy"
        " && sudo nft add chain ip lab-kube-proxy prerouting '{ type nat hook prerouting priority dstnat; }'"
        f" && sudo nft add rule ip lab-kube-proxy prerouting tcp dport 30443 dnat to {pod}:8443"
        f" && sudo ip route replace {pod}/32 via {GATEWAY}"
    )
    added = over_vswitch(host, nodeport)
    assert added.returncode == 0, added.stderr

    def dropped() -> int:
        chain = over_vswitch(host, "sudo nft list chain inet sovereign forward")
        assert chain.returncode == 0, chain.stderr
        found = re.search(r'iifname "host0" ct state new counter packets (\d+) bytes \d+ drop', chain.stdout)
        assert found, chain.stdout
        return int(found.group(1))

    try:
        before = dropped()
        with pytest.raises(OSError):
            socket.create_connection((host.address, 30443), timeout=3).close()
        assert dropped() > before  # the DNATed connection was dropped on its way to the pod
    finally:
        over_vswitch(host, f"sudo nft delete table ip lab-kube-proxy; sudo ip route del {pod}/32; true")


def test_a_changed_unit_recreates_the_link_only_where_it_differs(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    """Deleting the link deletes the VXLAN device flannel built on it and cuts the SSH session
    riding it: a unit change that leaves the link as it is must not touch it."""
    host = lab.hosts[0]
    unit = "/etc/systemd/system/sovereign-vswitch.service"

    def ifindex() -> int:
        (link,) = guest_json(host, f"ip -json link show dev {LINK}")
        return int(link["ifindex"])

    before = ifindex()
    assert over_vswitch(host, f"echo '# edited' | sudo tee -a {unit} >/dev/null").returncode == 0
    cosmetic = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=True))
    assert cosmetic.rc == 0, cosmetic.failures
    assert cosmetic.changed  # the unit was rewritten ...
    assert ifindex() == before  # ... and the link left as it was
    # a unit change while the live link differs (here its MTU) recreates it
    drift = f"echo '# edited' | sudo tee -a {unit} >/dev/null && sudo ip link set dev {LINK} mtu 1300"
    assert over_vswitch(host, drift).returncode == 0
    fixed = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=True))
    assert fixed.rc == 0, fixed.failures
    assert ifindex() != before
    (link,) = guest_json(host, f"ip -json link show dev {LINK}")
    assert link["mtu"] == 1400


def test_the_link_is_rebuilt_at_every_start(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    host = lab.hosts[0]
    enabled = over_vswitch(host, "systemctl is-enabled sovereign-vswitch.service")
    assert enabled.stdout.strip() == "enabled"
    # what a reboot does: the unit stops (the link goes) and starts again
    # (a transient unit of its own: this SSH session rides the link that goes away and comes back)
    unit = "sovereign-vswitch.service"
    cycled = over_vswitch(
        host, f"sudo systemd-run --quiet --wait sh -c 'systemctl stop {unit} && systemctl start {unit}'"
    )
    assert cycled.returncode == 0, cycled.stderr
    (link,) = guest_json(host, f"ip -json address show dev {LINK}")
    assert link["mtu"] == 1400
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == [ADDRESS]
    (route,) = guest_json(host, f"ip -json route get {BASTION}")
    assert (route["gateway"], route["dev"]) == (GATEWAY, LINK)


def test_a_vlan_id_outside_hetzners_range_is_refused_before_anything_changes(
    lab: Lab, converged: tuple[PlaybookRun, PlaybookRun, PlaybookRun]
) -> None:
    run = run_playbook(PLAYBOOK, inventory(lab, over_vswitch=True, vswitch_vlan_id=4092))
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("gpu1: Refuse inputs the vSwitch cannot carry: vswitch_vlan_id:"), failure
    assert "4000-4091" in failure and "4092" not in failure
    assert sum(run.changed.values()) == 0
    (link,) = guest_json(lab.hosts[0], f"ip -json -details link show dev {LINK}")
    assert link["mtu"] == 1400  # the working link is left as it was
