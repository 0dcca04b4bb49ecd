"""Run the host playbook against a stack's inventory through ansible-runner; print the kubeconfig.

Called by the RKE2 bootstrap command resource (``infra/components/cluster.py``) during
``pulumi up`` as ``sovereign converge``; the inventory arrives in the environment variable
``SOVEREIGN_INVENTORY`` (JSON) because it holds addresses only known after the servers exist.

Contract with the playbook: it must fetch the admin kubeconfig of the first control-plane
server to the path in the extra variable ``sovereign_kubeconfig_dest``. This command prints
that kubeconfig on stdout, which the command resource keeps as a secret output. Its server stays
127.0.0.1 (a name RKE2's serving certificate carries); its port becomes the stack's
``admin.api_tunnel_port``, the local end of the SSH tunnel through the bastion
(``sovereign tunnel``, infra/hosts/tunnel.py) by which Pulumi and kubectl reach the API.
Everything Ansible prints goes to stderr, so stdout carries the kubeconfig only.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from gateway.errors import SovereignError
from infra.hosts import inventory as inv
from infra.hosts.tunnel import is_tunnel_port
from infra.paths import REPO_ROOT

INVENTORY_ENV = "SOVEREIGN_INVENTORY"


class ConvergeError(SovereignError, RuntimeError):
    pass


def load_inventory(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    raw = environ.get(INVENTORY_ENV)
    if not raw:
        raise ConvergeError(
            f"{INVENTORY_ENV} is not set; `sovereign converge` is run by `pulumi up` (the rke2-bootstrap "
            "command resource), which passes the stack's inventory as JSON"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConvergeError(f"{INVENTORY_ENV} is not valid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(data, dict) or "children" not in data.get("all", {}):
        raise ConvergeError(f"{INVENTORY_ENV} must be an Ansible inventory object with all.children")
    if not inv.hosts_of(data, "control_plane"):
        raise ConvergeError(
            f"{INVENTORY_ENV} has no host in group control_plane; there is no cluster to fetch"
        )
    if not is_tunnel_port(data["all"].get("vars", {}).get("sovereign_api_tunnel_port")):
        raise ConvergeError(
            f"{INVENTORY_ENV} has no all.vars.sovereign_api_tunnel_port in 1024-65535 (the stack's "
            "admin.api_tunnel_port, where the kubeconfig will point); build it with infra.hosts.inventory"
        )
    return data


def _through_tunnel(kubeconfig: str, port: int) -> str:
    """RKE2's admin kubeconfig with its server moved to the tunnel's local port."""
    doc = yaml.safe_load(kubeconfig)
    if not isinstance(doc, dict) or not doc.get("clusters"):
        raise ConvergeError(
            "the fetched kubeconfig has no clusters section; check the rke2 role's fetch task"
        )
    for cluster in doc["clusters"]:
        url = urlsplit(str((cluster.get("cluster") or {}).get("server", "")))
        if url.hostname != "127.0.0.1":
            raise ConvergeError(
                "the fetched kubeconfig's server is not RKE2's https://127.0.0.1:6443; fetch "
                "/etc/rancher/rke2/rke2.yaml unchanged (the tunnel needs the 127.0.0.1 name)"
            )
        cluster["cluster"]["server"] = urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))
    return str(yaml.safe_dump(doc, sort_keys=False))


@dataclass(frozen=True)
class PlaybookRun:
    status: str
    rc: int
    ok: dict[str, int]  # host -> tasks that ran fine
    changed: dict[str, int]  # host -> tasks that changed something (ansible lists only hosts with > 0)
    failures: list[str]  # "host: task: message" for every failed task


def run_playbook(
    playbook: Path, inventory: dict[str, Any], extravars: dict[str, Any] | None = None, *, verbosity: int = 0
) -> PlaybookRun:
    """Run *playbook* through ansible-runner, Ansible's output on stderr as it happens."""
    import ansible_runner

    if not playbook.is_file():
        raise ConvergeError(
            f"playbook {playbook} does not exist; check the stack's rke2.playbook (default "
            "playbooks/cluster.yml, relative to the repository root)"
        )
    failures: list[str] = []

    def forward(event: dict[str, Any]) -> bool:
        text = event.get("stdout")
        if text:
            print(text, file=sys.stderr, flush=True)
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
            data = event.get("event_data", {})
            if not data.get("ignore_errors"):
                message = str((data.get("res") or {}).get("msg", "failed"))[:300]
                failures.append(f"{data.get('host')}: {data.get('task')}: {message}")
        return True

    with tempfile.TemporaryDirectory(prefix="sovereign-ansible-") as tmp:
        # ansible-runner starts ansible-playbook from PATH: the one installed beside this Python
        env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        result = ansible_runner.run(
            private_data_dir=tmp,
            playbook=str(playbook.resolve()),
            inventory=inventory,
            extravars=extravars or {},
            envvars={
                "PATH": env_path,
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
            },
            quiet=True,
            event_handler=forward,
            verbosity=verbosity,
        )
        stats = result.stats or {}
    return PlaybookRun(
        str(result.status),
        int(result.rc),
        dict(stats.get("ok") or {}),
        dict(stats.get("changed") or {}),
        failures,
    )


def converge(
    playbook: Path, inventory: dict[str, Any], *, secrets: dict[str, str] | None = None, verbosity: int = 0
) -> str:
    """Run *playbook*; return the kubeconfig it fetched. Raises ConvergeError on any failure."""
    with tempfile.TemporaryDirectory(prefix="sovereign-converge-") as tmp:
        dest = Path(tmp) / "kubeconfig"
        extravars: dict[str, Any] = {"sovereign_kubeconfig_dest": str(dest)}
        extravars.update(secrets or {})  # role variables: rke2_token, rke2_etcd_s3_*_key (no_log there)
        run = run_playbook(playbook, inventory, extravars, verbosity=verbosity)
        if run.rc != 0:
            detail = f"; first failure: {run.failures[0]}" if run.failures else ""
            raise ConvergeError(f"playbook {playbook.name} failed (status {run.status}, rc {run.rc}){detail}")
        if not dest.is_file():
            raise ConvergeError(
                f"playbook {playbook.name} succeeded but fetched no kubeconfig to sovereign_kubeconfig_dest"
            )
        port = int(inventory["all"]["vars"]["sovereign_api_tunnel_port"])
        return _through_tunnel(dest.read_text(encoding="utf-8"), port)


# what `pulumi up` may send on stdin, and the role variable each becomes
STDIN_SECRETS = {
    "token": "rke2_token",
    "etcd_s3_access_key": "rke2_etcd_s3_access_key",
    "etcd_s3_secret_key": "rke2_etcd_s3_secret_key",
}


def read_secrets(stream: Any) -> dict[str, str]:
    """The stack's secrets for the roles, one line on *stream* (the command resource's stdin: a
    secret there is not visible in the process environment, unlike an environment variable): a
    JSON object with the join token and, with rke2.etcd_snapshots, the S3 keys; a bare token line
    is still read as the token. Errors name keys and lengths, never a value."""
    line = stream.readline().strip()
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            raise ConvergeError(
                "--token-stdin: the line on stdin starts like JSON but is not valid JSON (its content is not "
                'shown); `pulumi up` sends {"token": …, "etcd_s3_access_key": …, "etcd_s3_secret_key": …}'
            ) from None
        unknown = sorted(set(data) - set(STDIN_SECRETS)) if isinstance(data, dict) else ["(not an object)"]
        if unknown or not all(isinstance(v, str) for v in data.values()):
            raise ConvergeError(
                f"--token-stdin: expected a JSON object of strings with the keys {', '.join(STDIN_SECRETS)}; "
                f"unexpected: {', '.join(unknown) or 'a value that is not a string'}"
            )
    else:
        data = {"token": line}
    token = data.get("token", "")
    if len(token) < 32:
        raise ConvergeError(
            f"--token-stdin: expected the cluster's join token (at least 32 characters) on stdin, got "
            f"{len(token)} characters; `pulumi up` passes it from the stack's random join token"
        )
    if bool(data.get("etcd_s3_access_key")) != bool(data.get("etcd_s3_secret_key")):
        missing = "etcd_s3_secret_key" if data.get("etcd_s3_access_key") else "etcd_s3_access_key"
        raise ConvergeError(
            f"--token-stdin: {missing} is missing or empty while the other S3 key is set; set both with "
            f"`pulumi config set --secret sovereign-llm:{missing}`"
        )
    return {STDIN_SECRETS[k]: v for k, v in data.items() if v}


def main(playbook: str, verbosity: int = 0, *, token_stdin: bool = False) -> int:
    """``sovereign converge``: the kubeconfig on stdout; a ``ConvergeError`` reaches
    infra/cli.py's one handler (``sovereign converge: <message>``, exit 1)."""
    path = Path(playbook)
    if not path.is_absolute():
        path = REPO_ROOT / path
    secrets = read_secrets(sys.stdin) if token_stdin else {}
    sys.stdout.write(converge(path, load_inventory(os.environ), secrets=secrets, verbosity=verbosity))
    return 0
