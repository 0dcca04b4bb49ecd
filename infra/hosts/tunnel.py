"""The way to a region's Kubernetes API: an SSH tunnel through the bastion (``sovereign tunnel``).

The API servers listen on the private network only (6443 on the control-plane servers) and
no node has a public address. ``pulumi up`` (its Kubernetes provider) and the operator's
``kubectl`` reach them through a local port forward over the bastion:

    127.0.0.1:<admin.api_tunnel_port> --ssh (bastion, direct-tcpip)--> <control plane>:6443

Why this way and not a private load balancer plus WireGuard:

- it adds nothing to the attack surface: the bastion's SSH (admin ranges only, keys only) is
  already the one way in, and the hardening role already allows it ``local`` forwarding for
  ProxyJump, which is the same direct-tcpip channel (OpenSSH serverloop.c,
  server_request_direct_tcpip); WireGuard would open a UDP port on the internet and bring a
  second set of keys to issue, rotate and revoke;
- a Hetzner load balancer cannot restrict its public sources (Hetzner Firewalls apply to
  servers, not to load balancers), so a public API endpoint is out, and a private one would
  still need a way in;
- it is the path Ansible already uses, proven by the host lab against a real hardened sshd.
  The cost: one bastion for admin access (the cluster itself serves without it).

The client keeps verifying the API server's certificate: RKE2's serving certificate names
127.0.0.1 (the admin kubeconfig RKE2 writes, ``/etc/rancher/rke2/rke2.yaml``, points at
``https://127.0.0.1:6443``), so only the port of the kubeconfig changes.

The tunnel is an OpenSSH control master (``ssh -M -S``) started in the background; the forward
is added and cancelled through its control socket (``ssh -O forward|cancel``), so a dead
control-plane server is replaced by the next one without a new login. It reaches the bastion
exactly as Ansible does: the bastion's ``ansible_host``, ``ansible_user``, ``ansible_port``,
``ansible_ssh_private_key_file`` and ``ansible_ssh_common_args`` from the stack's inventory.
It stays open until ``sovereign tunnel close``; the bastion's ClientAlive settings end it if
this machine goes away, ServerAlive ends it if the bastion does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import SovereignError
from infra.hosts import inventory as inv

API_PORT = 6443
STATE_DIR_ENV = "SOVEREIGN_TUNNEL_DIR"
PORT_FIELD = "admin.api_tunnel_port"
# ssh's own settings for the tunnel; given on the command line, they win over any ssh_config
# (ssh_config(5): "the first obtained value will be used")
SSH_OPTIONS = (
    "BatchMode=yes",  # pulumi up has no terminal to ask for a passphrase: use the agent
    "ExitOnForwardFailure=yes",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "ConnectTimeout=15",
    "StrictHostKeyChecking=accept-new",  # as the inventory's ProxyJump does
    "LogLevel=INFO",  # channel refusals are logged at INFO (channels.c, "open failed")
)
PROBE_TIMEOUT_S = 15.0
MAX_SOCKET_PATH = 107


class TunnelError(SovereignError, RuntimeError):
    pass


def is_tunnel_port(value: Any) -> bool:
    """Whether *value* is a usable local port for the tunnel (admin.api_tunnel_port's range)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1024 <= value <= 65535


def _var(inventory: dict[str, Any], host: dict[str, Any], group: str, name: str) -> Any:
    """A variable as Ansible resolves it for a host: host, then its group, then ``all``."""
    group_vars = inventory["all"]["children"].get(group, {}).get("vars") or {}
    for scope in (host, group_vars, inventory["all"].get("vars") or {}):
        if name in scope:
            return scope[name]
    return None


@dataclass(frozen=True)
class Tunnel:
    stack: str
    bastion: str
    user: str
    targets: tuple[str, ...]
    local_port: int
    ssh_args: tuple[str, ...] = ()

    @classmethod
    def from_inventory(cls, inventory: dict[str, Any]) -> Tunnel:
        bastions = list(inv.hosts_of(inventory, "bastion").values())
        if len(bastions) != 1:
            raise TunnelError(
                f"the inventory has {len(bastions)} hosts in group bastion, the tunnel needs exactly one; "
                "use the stack's inventory output (`pulumi stack output inventory --json`)"
            )
        host = bastions[0]
        servers = inv.hosts_of(inventory, "control_plane").values()
        targets = tuple(str(h.get("private_ip") or h.get("ansible_host")) for h in servers)
        if not targets:
            raise TunnelError("the inventory has no host in group control_plane: there is no API to reach")

        def var(name: str) -> Any:
            return _var(inventory, host, "bastion", name)

        port = var("sovereign_api_tunnel_port")
        if not is_tunnel_port(port):
            raise TunnelError(
                f"the inventory's sovereign_api_tunnel_port is missing or not a port in 1024-65535; it comes "
                f"from the stack's {PORT_FIELD}: run `pulumi up` with this version to refresh the inventory"
            )

        args: list[str] = shlex.split(str(var("ansible_ssh_common_args") or ""))
        if var("ansible_ssh_private_key_file"):
            args += ["-i", str(var("ansible_ssh_private_key_file"))]
        if var("ansible_port"):
            args += ["-p", str(var("ansible_port"))]
        return cls(
            stack=str(var("sovereign_stack") or "stack"),
            bastion=str(host.get("ansible_host")),
            user=str(var("ansible_user") or inv.ADMIN_USER),
            targets=targets,
            local_port=port,
            ssh_args=tuple(args),
        )


def state_dir() -> Path:
    path = Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".cache" / "sovereign-llm" / "tunnels")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def socket_dir() -> Path:
    """Where the control sockets live: a short path of this user's own. A Unix socket's path is
    at most 107 bytes (unix(7), sun_path) and ssh binds the master's socket first under a
    17-character temporary suffix (mux.c, muxserver_listen), so the cache folder, under a deep
    home, can be too long."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = base / f"sovereign-tunnels-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TunnelError(
            f"{path} is not a private folder of this user (owner, mode or type); remove it, or set "
            "XDG_RUNTIME_DIR to this user's runtime folder"
        )
    return path


def control_socket(t: Tunnel) -> Path:
    """The tunnel's control socket (one per stack, bastion and local port)."""
    key = hashlib.sha256(f"{t.stack}\0{t.bastion}\0{t.local_port}".encode()).hexdigest()[:16]
    sock = socket_dir() / f"{key}.sock"
    if len(str(sock)) + 17 > MAX_SOCKET_PATH:
        raise TunnelError(
            f"the tunnel's control socket path would be {len(str(sock)) + 17} bytes, over the "
            f"{MAX_SOCKET_PATH} a Unix socket takes; set XDG_RUNTIME_DIR to a shorter folder of this user"
        )
    return sock


def _paths(t: Tunnel) -> tuple[Path, Path, Path]:
    """Control socket, state file and ssh log of *t*."""
    sock = control_socket(t)
    base = state_dir() / f"{t.stack[:40]}-{sock.stem}"
    return sock, base.with_suffix(".json"), base.with_suffix(".log")


def _ssh(t: Tunnel, sock: Path, *args: str) -> list[str]:
    options = [f"-o{o}" for o in SSH_OPTIONS]
    return ["ssh", *t.ssh_args, *options, "-S", str(sock), *args, "-l", t.user, t.bastion]


def _control(t: Tunnel, sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _ssh(t, sock, *args),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _forward(t: Tunnel, target: str) -> str:
    return f"127.0.0.1:{t.local_port}:{target}:{API_PORT}"


def answers_tls(port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something completes a TLS handshake on 127.0.0.1:*port*: the liveness probe of the
    forward. It trusts nothing it sees; kubectl and Pulumi verify the cluster's CA themselves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe, not a client: no data is sent or trusted
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.version() is not None
    except (OSError, ssl.SSLError):
        return False


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:*port* (connections of an earlier tunnel waiting out
    TIME_WAIT do not count: SO_REUSEADDR, as ssh's own listener sets it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _log_tail(log: Path, start: int) -> list[str]:
    try:
        with log.open("rb") as f:
            f.seek(start)
            return [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def status(t: Tunnel) -> dict[str, Any]:
    """Whether the tunnel's master runs, which server it forwards to, and whether it answers."""
    sock, state, _ = _paths(t)
    alive = sock.exists() and _control(t, sock, "-O", "check").returncode == 0
    target = json.loads(state.read_text()).get("target") if alive and state.is_file() else None
    return {
        "open": alive,
        "target": target,
        "local": f"127.0.0.1:{t.local_port}",
        "answers": bool(alive and target and answers_tls(t.local_port)),
    }


def close(t: Tunnel) -> bool:
    """Stop the tunnel's master (and with it the forward); True if one was running."""
    sock, state, _ = _paths(t)
    was_open = sock.exists() and _control(t, sock, "-O", "exit").returncode == 0
    # the master acknowledges "exit" before it has gone: wait until it answers no more
    for _ in range(100):
        if not sock.exists() or _control(t, sock, "-O", "check").returncode != 0:
            break
        time.sleep(0.1)
    sock.unlink(missing_ok=True)
    state.unlink(missing_ok=True)
    return was_open


def open_tunnel(t: Tunnel) -> str:
    """Make 127.0.0.1:<local_port> reach a control-plane server's API through the bastion;
    return that server's address. Idempotent: a working tunnel is kept as it is."""
    sock, state, log = _paths(t)
    if sock.exists() and _control(t, sock, "-O", "check").returncode == 0:
        current = json.loads(state.read_text()).get("target") if state.is_file() else None
        if current and answers_tls(t.local_port):
            return str(current)
        if current:  # its server stopped answering: forward to the next one that does
            _control(t, sock, "-O", "cancel", "-L", _forward(t, current))
    else:
        sock.unlink(missing_ok=True)
        if not port_free(t.local_port):
            raise TunnelError(
                f"127.0.0.1:{t.local_port} is taken by another program (another stack's tunnel or a "
                f"kubectl port-forward?); stop it, or give this stack another {PORT_FIELD}"
            )
        start = log.stat().st_size if log.exists() else 0
        master = subprocess.run(
            _ssh(t, sock, "-M", "-N", "-f", "-E", str(log)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
        if master.returncode != 0:
            reason = (_log_tail(log, start) or ["no message"])[-1]
            raise TunnelError(
                f"ssh to the bastion {t.user}@{t.bastion} failed ({reason}); the admin key must be "
                "loaded in ssh-agent and this machine's address in the stack's admin.cidrs"
            )
    tried: list[str] = []
    for target in t.targets:
        start = log.stat().st_size if log.exists() else 0
        added = _control(t, sock, "-O", "forward", "-L", _forward(t, target))
        if added.returncode != 0:
            close(t)
            raise TunnelError(
                f"the tunnel could not listen on 127.0.0.1:{t.local_port} ({added.stderr.strip()[-200:]}); "
                f"free the port or give this stack another {PORT_FIELD}"
            )
        if answers_tls(t.local_port):
            state.write_text(json.dumps({"target": target, "bastion": t.bastion, "port": t.local_port}))
            return target
        _control(t, sock, "-O", "cancel", "-L", _forward(t, target))
        refusals = [line for line in _log_tail(log, start) if "open failed" in line]
        if any("administratively prohibited" in line for line in refusals):
            close(t)
            raise TunnelError(
                f"the bastion {t.bastion} refuses TCP forwarding (sshd AllowTcpForwarding); its hardening "
                "must keep hardening_ssh_allow_tcp_forwarding: local (infra/hosts/inventory.py sets it)"
            )
        # ssh logs "channel N: open failed: <reason>: <the server's message>" (channels.c)
        tried.append(
            f"{target} ({refusals[-1].split('open failed: ', 1)[-1] if refusals else 'no TLS answer'})"
        )
    close(t)
    raise TunnelError(
        f"no control-plane server answered on port {API_PORT} through the bastion: {', '.join(tried)}; "
        "check `systemctl status rke2-server` on them (sovereign verify --stack …)"
    )
