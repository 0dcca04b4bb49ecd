"""cloud-init user data: NAT on the bastion, default route through it on private nodes.

Hetzner's pattern for private nodes: the network has a route 0.0.0.0/0 → bastion, and each
node sends its default route to the network's router (first address of the range), which
forwards to the bastion; the bastion forwards and masquerades to the declared destinations only
(infra/egress.py ``nat_flows``: Hetzner's resolvers and the stack's ``egress.destinations``, each on
its ports) and drops every other forwarded packet, until the hardening role's nftables ruleset takes
the NAT over with the same list. Every server also gets the admin user ``ops`` (key-only, sudo), which the
Ansible roles log in as: the hardening role forbids root logins. Everything else on the hosts
(hardening, RKE2, GPU stack) is the Ansible roles' job, not cloud-init's.
"""

from __future__ import annotations

import yaml

from infra.config import StackConfig
from infra.egress import HETZNER_RESOLVERS, nat_flows
from infra.hosts.inventory import ADMIN_USER

__all__ = ["HETZNER_RESOLVERS", "bastion", "nat_rules", "private_node"]


def _admin(cfg: StackConfig) -> dict[str, object]:
    return {
        "users": [
            {
                "name": ADMIN_USER,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [k.public_key for k in cfg.admin.ssh_keys],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
    }


def _document(cfg: StackConfig, body: dict[str, object]) -> str:
    return "#cloud-config\n" + yaml.safe_dump({**_admin(cfg), **body}, sort_keys=False)


def nat_rules(cfg: StackConfig) -> list[tuple[str, str, str]]:
    """The bootstrap NAT's iptables rules as (table, chain, match and target): forward and masquerade
    from the private network to each declared destination's addresses on its ports, replies back;
    nothing else (the FORWARD policy is DROP while the unit runs)."""
    src, out = cfg.network.ip_range, "eth0"
    rules = [("filter", "FORWARD", "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")]
    nat = []
    for dest in nat_flows(cfg):
        for cidr in dest.cidrs:
            for proto, ports in (("tcp", dest.tcp_ports), ("udp", dest.udp_ports)):
                if ports:
                    dports = ",".join(str(p) for p in ports)
                    rules.append(
                        ("filter", "FORWARD",
                         f"-s {src} -d {cidr} -o {out} -p {proto} -m multiport --dports {dports} -j ACCEPT")
                    )  # fmt: skip
            nat.append(("nat", "POSTROUTING", f"-s {src} -d {cidr} -o {out} -j MASQUERADE"))
    return rules + nat


def _iptables(verb: str, rule: tuple[str, str, str]) -> str:
    table, chain, spec = rule
    return f"/usr/sbin/iptables -t {table} {verb} {chain} {spec}"


def bastion(cfg: StackConfig) -> str:
    rules = nat_rules(cfg)
    start = [_iptables("-A", r) for r in rules] + ["/usr/sbin/iptables -t filter -P FORWARD DROP"]
    stop = ["/usr/sbin/iptables -t filter -P FORWARD ACCEPT"] + [_iptables("-D", r) for r in reversed(rules)]
    nat_unit = (
        "[Unit]\nDescription=NAT for the private network, to its declared destinations only\n"
        "After=network-online.target\nWants=network-online.target\n\n[Service]\nType=oneshot\n"
        "RemainAfterExit=yes\n"
        + "".join(f"ExecStart={c}\n" for c in start)
        + "".join(f"ExecStop={c}\n" for c in stop)
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )
    return _document(
        cfg,
        {
            "packages": ["iptables"],
            "write_files": [
                {"path": "/etc/sysctl.d/90-sovereign-nat.conf", "content": "net.ipv4.ip_forward = 1\n"},
                {"path": "/etc/systemd/system/sovereign-nat.service", "content": nat_unit},
            ],
            "runcmd": [
                ["sysctl", "--system"],
                ["systemctl", "daemon-reload"],
                ["systemctl", "enable", "--now", "sovereign-nat.service"],
            ],
        },
    )


def private_node(cfg: StackConfig) -> str:
    gateway = cfg.network.network_gateway
    route_unit = (
        "[Unit]\nDescription=Default route through the private network's NAT\n"
        "After=network-online.target\nWants=network-online.target\n\n[Service]\nType=oneshot\n"
        f"RemainAfterExit=yes\nExecStart=/usr/sbin/ip route replace default via {gateway}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    return _document(
        cfg,
        {
            "write_files": [
                {"path": "/etc/systemd/system/sovereign-default-route.service", "content": route_unit},
                {
                    "path": "/etc/resolv.conf",
                    "content": "".join(f"nameserver {r}\n" for r in HETZNER_RESOLVERS),
                },
            ],
            "runcmd": [
                ["systemctl", "daemon-reload"],
                ["systemctl", "enable", "--now", "sovereign-default-route.service"],
            ],
        },
    )
