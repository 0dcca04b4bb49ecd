"""cloud-init user data: NAT on the bastion, default route through it on private nodes.

Hetzner's pattern for private nodes: the network has a route 0.0.0.0/0 → bastion, and each
node sends its default route to the network's router (first address of the range), which
forwards to the bastion; the bastion masquerades (until the hardening role's nftables ruleset
takes the NAT over). Every server also gets the admin user ``ops`` (key-only, sudo), which the
Ansible roles log in as: the hardening role forbids root logins. Everything else on the hosts
(hardening, RKE2, GPU stack) is the Ansible roles' job, not cloud-init's.
"""

from __future__ import annotations

import yaml

from infra.config import StackConfig
from infra.hosts.inventory import ADMIN_USER

# Hetzner's recursive resolvers (in Hetzner's EU network), reached through the NAT.
HETZNER_RESOLVERS = ("185.12.64.1", "185.12.64.2")


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


def bastion(cfg: StackConfig) -> str:
    nat = f"POSTROUTING -s {cfg.network.ip_range} -o eth0 -j MASQUERADE"
    nat_unit = (
        "[Unit]\nDescription=NAT for the private network\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        f"ExecStart=/usr/sbin/iptables -t nat -A {nat}\n"
        f"ExecStop=/usr/sbin/iptables -t nat -D {nat}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
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
