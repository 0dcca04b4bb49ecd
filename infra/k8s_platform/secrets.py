"""The platform's Secrets that hold material from the operator, each created by the program from
Pulumi stack secrets (``pulumi config set --secret sovereign-llm:KEY``, encrypted in the stack
by its ``hashivault://`` secrets provider), like the etcd snapshot keys (infra/components/cluster.py):

- ``gateway-client-keys`` (sovereign-gateway), mounted by the gateway (``keys_file``): the stack
  secret ``gateway_client_keys``, the key store `sovereign gateway keys create --keys-file FILE`
  writes (key ids, tenants, SHA-256 hashes of the keys; the key itself is shown once, to the operator);
- ``object-storage-read`` (sovereign-inference), mounted by the weights fetch Job:
  ``models_s3_access_key`` and ``models_s3_secret_key`` (read-only on the model bucket);
- ``object-storage-audit`` (sovereign-gateway), mounted by the ``audit-ship`` sidecar:
  ``audit_s3_access_key`` and ``audit_s3_secret_key`` (write-only on the audit archive);
- ``object-storage-openbao-snapshot`` (openbao), mounted by the Raft snapshot CronJob:
  ``openbao_snapshot_s3_access_key`` and ``openbao_snapshot_s3_secret_key`` (may only write the
  archive bucket's ``openbao-snapshots/`` prefix);
- ``object-storage-openbao-snapshot-copy`` (openbao), mounted by the same CronJob where the stack
  has ``storage.openbao_snapshot_copy``: ``openbao_snapshot_copy_s3_access_key`` and
  ``openbao_snapshot_copy_s3_secret_key`` (a key of the copy location's object storage that may
  only write the copy bucket's ``openbao-snapshots/`` prefix);
- ``memory-backup-s3`` (sovereign-memory), read by the memory store's PostgreSQL instances
  (CloudNativePG ``barmanObjectStore.s3Credentials``, declared in memory_store.py):
  ``memory_backup_s3_access_key`` and ``memory_backup_s3_secret_key`` (read and write on the bucket
  of ``platform.memory_store.backup_bucket``).

The two snapshot Secrets are made by :func:`credentials_secret` here but declared by the CronJob's
component (openbao.py ``SnapshotSchedule``), which is created before this module's
``StackSecrets`` (infra/k8s_platform/layer.py) and depends on them; moving the resources here
would change their Pulumi URNs (a replacement of a Secret with the same name on live stacks).

Why stack secrets and not OpenBao: the S3 keys are issued by the object storage's console
(Hetzner has no API that OpenBao could rotate them through), and the client-key store is
the output of an offline command; the cluster's OpenBao would only be one more copy. Why not
a `kubectl create secret` step: a Secret the program declares is reviewed in the plan, restored
by ``pulumi up`` and never forgotten on a new region.

Only phase 2 deploys what mounts them (platform.openbao.initialised), so only phase 2 needs them.
A missing one stops ``pulumi up`` before anything is created (program.deploy_blockers); a plan
shows the blocker and declares the Secret anyway (its values are never in the plan: plan.py masks
every Secret's data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime.config import get_config

from infra.config import PROJECT, StackConfig
from infra.k8s_platform.common import GATEWAY_NS, INFERENCE_NS, Component, Deps, labels

PLAN_PLACEHOLDER = "(a stack secret: set before `pulumi up`)"


@dataclass(frozen=True)
class StackSecret:
    name: str  # the Kubernetes Secret
    namespace: str
    keys: tuple[str, ...]  # the stack secrets it is made of
    needed_by: str
    how: str  # what the operator runs to set them (no value in it)


GATEWAY_CLIENT_KEYS = StackSecret(
    "gateway-client-keys",
    GATEWAY_NS,
    ("gateway_client_keys",),
    "the gateway's client-key file keys.json",
    "`sovereign gateway keys create --keys-file gateway-keys.json --tenant TENANT` (prints the key for "
    f"the client once), then `pulumi config set --secret {PROJECT}:gateway_client_keys < gateway-keys.json`",
)
OBJECT_STORAGE_READ = StackSecret(
    "object-storage-read",
    INFERENCE_NS,
    ("models_s3_access_key", "models_s3_secret_key"),
    "the weights fetch Job",
    f"`pulumi config set --secret {PROJECT}:models_s3_access_key` and `… {PROJECT}:models_s3_secret_key` "
    "(an object-storage key that may only read the model bucket, endpoints.model_source)",
)
OBJECT_STORAGE_AUDIT = StackSecret(
    "object-storage-audit",
    GATEWAY_NS,
    ("audit_s3_access_key", "audit_s3_secret_key"),
    "the gateway's audit-ship sidecar",
    f"`pulumi config set --secret {PROJECT}:audit_s3_access_key` and `… {PROJECT}:audit_s3_secret_key` "
    "(an object-storage key that may only write to the audit archive bucket, storage.audit_archive)",
)


#: the OpenBao Raft snapshot CronJob's object-storage key; its Secret is declared next to the
#: CronJob (infra/k8s_platform/openbao.py SnapshotSchedule), but a missing key blocks `pulumi up` here
OPENBAO_SNAPSHOT = StackSecret(
    "object-storage-openbao-snapshot",
    "openbao",
    ("openbao_snapshot_s3_access_key", "openbao_snapshot_s3_secret_key"),
    "the OpenBao snapshot CronJob",
    f"`pulumi config set --secret {PROJECT}:openbao_snapshot_s3_access_key` and `… "
    f"{PROJECT}:openbao_snapshot_s3_secret_key` (an object-storage key that may only write the "
    "bucket's openbao-snapshots/ prefix, storage.audit_archive; docs/backup-restore.md)",
)


#: the copy location's key (storage.openbao_snapshot_copy): another object storage, another key
OPENBAO_SNAPSHOT_COPY = StackSecret(
    "object-storage-openbao-snapshot-copy",
    "openbao",
    ("openbao_snapshot_copy_s3_access_key", "openbao_snapshot_copy_s3_secret_key"),
    "the OpenBao snapshot CronJob's copy to storage.openbao_snapshot_copy",
    f"`pulumi config set --secret {PROJECT}:openbao_snapshot_copy_s3_access_key` and `… "
    f"{PROJECT}:openbao_snapshot_copy_s3_secret_key` (a key of the copy location's object storage, "
    "storage.openbao_snapshot_copy.endpoint, that may only write the copy bucket's openbao-snapshots/ "
    "prefix; docs/backup-restore.md)",
)


#: the memory store's barman-cloud key (platform.memory_store): its Secret is declared by the store's
#: component (infra/k8s_platform/memory_store.py) in the CloudNativePG key layout, not as a credentials file
MEMORY_BACKUP = StackSecret(
    "memory-backup-s3",
    "sovereign-memory",
    ("memory_backup_s3_access_key", "memory_backup_s3_secret_key"),
    "the memory store's base backups and WAL archive (barman-cloud)",
    f"`pulumi config set --secret {PROJECT}:memory_backup_s3_access_key` and `… "
    f"{PROJECT}:memory_backup_s3_secret_key` (an object-storage key that may only read and write the "
    "bucket of platform.memory_store.backup_bucket)",
)


def memory_secrets(cfg: StackConfig) -> list[StackSecret]:
    """The memory store's backup key (phase 2, with platform.memory_store.enabled)."""
    store = cfg.platform.memory_store
    return [MEMORY_BACKUP] if cfg.platform.openbao.initialised and store.enabled else []


def snapshot_secrets(cfg: StackConfig) -> list[StackSecret]:
    """The snapshot CronJob's object-storage keys: the primary's, and the copy location's if any."""
    if not snapshots(cfg):
        return []
    return [OPENBAO_SNAPSHOT, *([OPENBAO_SNAPSHOT_COPY] if cfg.storage.openbao_snapshot_copy else [])]


def required(cfg: StackConfig) -> list[StackSecret]:
    """The Secrets this stack's platform mounts (phase 2 only: phase 1 deploys nothing that does)."""
    if not cfg.platform.openbao.initialised:
        return []
    needed = [GATEWAY_CLIENT_KEYS]
    if cfg.platform.models:
        needed.append(OBJECT_STORAGE_READ)
    if cfg.storage.audit_archive is not None:
        needed.append(OBJECT_STORAGE_AUDIT)
    return needed


def missing(cfg: StackConfig) -> list[str]:
    """One line per stack secret a required Secret lacks (names and commands, never a value)."""
    # whether it is set, without making an Output of the value (get_secret's would never be awaited)
    return [
        f"{PROJECT}:{key} is not set: a stack secret that the Secret {s.namespace}/{s.name} is made of "
        f"(for {s.needed_by}); {s.how}"
        for s in [*required(cfg), *snapshot_secrets(cfg), *memory_secrets(cfg)]
        for key in s.keys
        if get_config(f"{PROJECT}:{key}") is None
    ]


def snapshots(cfg: StackConfig) -> bool:
    """Whether the stack runs the OpenBao snapshot CronJob (phase 2, with an Object Lock bucket)."""
    return cfg.platform.openbao.initialised and cfg.storage.audit_archive is not None


def _credentials_file(access: str, secret: str) -> str:
    """An AWS shared-credentials file (AWS_SHARED_CREDENTIALS_FILE in the pods), default profile."""
    return f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n"


def key_store(value: Any) -> str:
    """The gateway's key store (gateway/clientkeys.py) as the file it reads; refuses anything else
    naming the stack secret, never showing the value."""
    data = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(
            f"{PROJECT}:gateway_client_keys: not a gateway key store (a JSON object with a `keys` list); "
            "set it from the file `sovereign gateway keys create --keys-file FILE` writes (value not shown)"
        )
    return json.dumps(data, sort_keys=True)


def stack_secret(key: str) -> pulumi.Output[Any]:
    """The stack secret *key* (``sovereign-llm:KEY``) as a secret Output (a placeholder in a plan)."""
    return _value(pulumi.Config(PROJECT), key)


def _value(config: pulumi.Config, key: str) -> pulumi.Output[Any]:
    found = config.get_secret_object(key) if key == "gateway_client_keys" else config.get_secret(key)
    # only a plan gets here without it: `pulumi up` stopped before anything (deploy_blockers)
    return pulumi.Output.secret(PLAN_PLACEHOLDER) if found is None else pulumi.Output.secret(found)


def credentials_secret(
    resource_name: str, cfg: StackConfig, s: StackSecret, opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """The Secret of an object-storage key pair (*s*: access and secret key) as the ``credentials``
    file (AWS shared-credentials format) the pods' S3 clients read."""
    config = pulumi.Config(PROJECT)
    access, secret = (_value(config, k) for k in s.keys)
    pair = pulumi.Output.all(access, secret)
    return k8s.core.v1.Secret(
        resource_name,
        metadata={"name": s.name, "namespace": s.namespace, "labels": labels(cfg, s.name, "credentials")},
        type="Opaque",
        string_data={"credentials": pair.apply(lambda a: _credentials_file(*a))},
        opts=opts,
    )


class StackSecrets(Component):
    KIND = "StackSecrets"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        config = pulumi.Config(PROJECT)
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)

        self.by_name: dict[str, k8s.core.v1.Secret] = {}
        for s in required(cfg):
            if s is not GATEWAY_CLIENT_KEYS:
                self.by_name[s.name] = credentials_secret(f"{name}-{s.name}", cfg, s, child)
                continue
            data = {
                "keys.json": _value(config, "gateway_client_keys").apply(
                    lambda v: v if v == PLAN_PLACEHOLDER else key_store(v)
                )
            }
            meta = {"name": s.name, "namespace": s.namespace, "labels": labels(cfg, s.name, "credentials")}
            self.by_name[s.name] = k8s.core.v1.Secret(
                f"{name}-{s.name}",
                metadata=meta,
                type="Opaque",
                string_data=data,
                opts=child,
            )
        self.register_outputs({})
