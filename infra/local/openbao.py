"""Bootstrap the local OpenBao dev server the way the platform layer configures production:
transit keys, least-privilege policies, non-root tokens, a file audit device.

The names and policies are the contract's (infra/openbao_contract.py), which the cluster's
OpenBao (infra/k8s_platform/openbao.py) and the command line use too; this module keeps only what
is the dev server's: its configuration file, its bootstrap, its health check.

OpenBao 2.x only accepts audit devices declared in its configuration file, so the audit
device is written into the server's config (:func:`server_config`), not enabled by API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import hvac

from infra.openbao_contract import (
    AUDIT_KEY,
    AUDITOR_POLICY,
    AUDITOR_POLICY_NAME,
    GATEWAY_POLICY,
    GATEWAY_POLICY_NAME,
    INCIDENT_POLICY,
    INCIDENT_POLICY_NAME,
    KV_MOUNT,
    MANIFEST_KEY,
    PSEUDONYM_KEY,
    PUBLISHER_POLICY,
    PUBLISHER_POLICY_NAME,
    TENANT_KEY,
    TRANSIT_MOUNT,
)


@dataclass(frozen=True)
class Tokens:
    gateway: str
    auditor: str


def server_config(audit_log: Path) -> str:
    """HCL for ``bao server -dev -config=...``: the file audit device."""
    return (
        'audit "file" "local-file" {\n'
        "  options {\n"
        f"    file_path = {json.dumps(str(audit_log))}\n"
        '    mode = "0600"\n'
        "  }\n"
        "}\n"
    )


def bootstrap(address: str, root_token: str) -> Tokens:
    """Configure a fresh dev server; returns the non-root tokens it issued."""
    client = hvac.Client(url=address, token=root_token, timeout=10)
    client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    ensure_kv(client)
    # one derived key: a distinct data-key wrapping key per tenant (context = tenant)
    client.secrets.transit.create_key(
        TENANT_KEY, key_type="aes256-gcm96", derived=True, mount_point=TRANSIT_MOUNT
    )
    client.secrets.transit.create_key(AUDIT_KEY, key_type="aes256-gcm96", mount_point=TRANSIT_MOUNT)
    client.secrets.transit.create_key(MANIFEST_KEY, key_type="ed25519", mount_point=TRANSIT_MOUNT)
    # the memory store's pseudonyms: transit/hmac with the key's own HMAC key (every transit key
    # has one); the gateway's policy allows hmac/ on it and nothing else
    client.secrets.transit.create_key(PSEUDONYM_KEY, key_type="aes256-gcm96", mount_point=TRANSIT_MOUNT)
    client.sys.create_or_update_policy(GATEWAY_POLICY_NAME, GATEWAY_POLICY)
    client.sys.create_or_update_policy(AUDITOR_POLICY_NAME, AUDITOR_POLICY)
    client.sys.create_or_update_policy(PUBLISHER_POLICY_NAME, PUBLISHER_POLICY)
    client.sys.create_or_update_policy(INCIDENT_POLICY_NAME, INCIDENT_POLICY)

    def token(policy: str) -> str:
        created = client.auth.token.create(
            policies=[policy], period="24h", renewable=True, no_parent=True, display_name=policy
        )
        return str(created["auth"]["client_token"])

    return Tokens(gateway=token(GATEWAY_POLICY_NAME), auditor=token(AUDITOR_POLICY_NAME))


def ensure_kv(client: hvac.Client) -> None:
    """A KV v2 engine at ``kv/`` (the kill switch's state), unless one is there already."""
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    existing = mounts.get(f"{KV_MOUNT}/")
    if existing is None:
        client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
    elif existing.get("type") != "kv" or (existing.get("options") or {}).get("version") != "2":
        raise RuntimeError(f"OpenBao has a mount at {KV_MOUNT}/ that is not KV v2")


def healthy(address: str) -> bool:
    client = hvac.Client(url=address, timeout=1)
    return bool(client.sys.is_initialized()) and not client.sys.is_sealed()
