"""The OpenBao contract: the mounts, keys, paths and policies every OpenBao of the project has.

Three places configure or use an OpenBao with these names, and all three import them from here:
the local dev server (infra/local/openbao.py, ``sovereign up`` and the tests), the cluster's
OpenBao (infra/k8s_platform/openbao.py declares the same mounts, keys and policies through
pulumi-vault, plus what only the cluster has) and the command line (``sovereign models`` signs
with the transit mount, infra/weights/transit.py).

Why one module of its own, and not the dev-server module or a package: production names must not
come from the dev server's bootstrap (a change there would silently change the cluster), and the
contract is only constants and policy texts, with no import at all, so the Pulumi program, the CLI
and the dev server can each import it without pulling in another's dependencies (hvac, pulumi). It
sits beside the other OpenBao modules of ``infra/`` (openbao_backup.py, openbao_import.py), which
are commands, not contract.

The gateway does not import it (its image is to carry only the gateway; today gateway/settings.py
still imports infra/residency.py): its settings carry the same names as defaults
(gateway/settings.py: ``openbao.transit_mount``, ``openbao.tenant_key``, ``openbao.audit_key``,
``incident.kv_mount``, ``incident.path``), and a test holds them equal
(tests/platform/test_openbao_chart.py).
"""

from __future__ import annotations

TRANSIT_MOUNT = "transit"
TENANT_KEY = "tenant-data"
AUDIT_KEY = "audit-hmac"
MANIFEST_KEY = "model-manifests"  # the default of storage.manifest_signing_key (ed25519)
# the patient pseudonyms of the vector store (issue #27, gateway/memory/pseudonym.py): HMAC of
# tenant, field and value; never rotated, never exported, never deleted (why: openbao.py)
PSEUDONYM_KEY = "sovereign-pseudonym"
KV_MOUNT = "kv"  # KV v2
INCIDENT_PATH = "sovereign/incident"  # the kill switch's state (gateway/incident.py)

GATEWAY_POLICY_NAME = "sovereign-gateway"
AUDITOR_POLICY_NAME = "sovereign-auditor"
PUBLISHER_POLICY_NAME = "sovereign-model-publisher"
INCIDENT_POLICY_NAME = "sovereign-incident"

GATEWAY_POLICY = f"""
# sovereign-gateway: what the gateway needs, nothing more.
path "{TRANSIT_MOUNT}/datakey/plaintext/{TENANT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/decrypt/{TENANT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/datakey/plaintext/{AUDIT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/hmac/{PSEUDONYM_KEY}" {{ capabilities = ["update"] }}
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
