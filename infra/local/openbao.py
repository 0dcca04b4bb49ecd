"""Bootstrap the local OpenBao dev server the way the platform layer configures production:
transit keys, least-privilege policies, non-root tokens, a file audit device.

OpenBao 2.x only accepts audit devices declared in its configuration file, so the audit
device is written into the server's config (:func:`server_config`), not enabled by API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import hvac

TRANSIT_MOUNT = "transit"
TENANT_KEY = "tenant-data"
AUDIT_KEY = "audit-hmac"
MANIFEST_KEY = "model-manifests"  # the default of storage.manifest_signing_key (ed25519)
KV_MOUNT = "kv"  # KV v2, as in the cluster (infra/k8s_platform/openbao.py)
INCIDENT_PATH = "sovereign/incident"  # the kill switch's state (gateway/incident.py)
INCIDENT_POLICY_NAME = "sovereign-incident"

GATEWAY_POLICY = f"""
# sovereign-gateway: what the gateway needs, nothing more.
path "{TRANSIT_MOUNT}/datakey/plaintext/{TENANT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/decrypt/{TENANT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/datakey/plaintext/{AUDIT_KEY}" {{ capabilities = ["update"] }}
path "{KV_MOUNT}/data/{INCIDENT_PATH}" {{ capabilities = ["read"] }}
"""

INCIDENT_POLICY = f"""
# sovereign-incident: the on-call operator's kill switch (`sovereign incident suspend|resume|status`).
path "{KV_MOUNT}/data/{INCIDENT_PATH}" {{ capabilities = ["create", "read", "update", "patch"] }}
path "{KV_MOUNT}/metadata/{INCIDENT_PATH}" {{ capabilities = ["read"] }}
"""

AUDITOR_POLICY = f"""
# sovereign-auditor: unwrap audit HMAC keys to verify the trail; nothing else.
path "{TRANSIT_MOUNT}/decrypt/{AUDIT_KEY}" {{ capabilities = ["update"] }}
"""


def publisher_policy(key: str = MANIFEST_KEY) -> str:
    """sovereign-model-publisher for the signing key *key* (the cluster's uses the stack's key name)."""
    return f"""
# sovereign-model-publisher: sign model manifests (`sovereign models import`) and read the public key.
path "{TRANSIT_MOUNT}/sign/{key}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/keys/{key}" {{ capabilities = ["read"] }}
"""


PUBLISHER_POLICY = publisher_policy()


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
    client.sys.create_or_update_policy("sovereign-gateway", GATEWAY_POLICY)
    client.sys.create_or_update_policy("sovereign-auditor", AUDITOR_POLICY)
    client.sys.create_or_update_policy("sovereign-model-publisher", PUBLISHER_POLICY)
    client.sys.create_or_update_policy(INCIDENT_POLICY_NAME, INCIDENT_POLICY)

    def token(policy: str) -> str:
        created = client.auth.token.create(
            policies=[policy], period="24h", renewable=True, no_parent=True, display_name=policy
        )
        return str(created["auth"]["client_token"])

    return Tokens(gateway=token("sovereign-gateway"), auditor=token("sovereign-auditor"))


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
