"""The gateway on Kubernetes: ServiceAccount (OpenBao Kubernetes auth), ConfigMap rendered from
the stack config, StatefulSet (one audit chain per pod), Service, PodDisruptionBudget,
HorizontalPodAutoscaler."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import images, objectstore, residency
from infra.config import InferenceModelConfig, StackConfig
from infra.k8s_platform.common import (
    GATEWAY_APP,
    GATEWAY_NS,
    GATEWAY_OPENBAO_ROLE,
    GATEWAY_PORT,
    GATEWAY_UPSTREAM_TLS_DIR,
    INFERENCE_NS,
    OPENBAO_NS,
    OPENBAO_PORT,
    VLLM_PORT,
    Deps,
    OpenBaoComponent,
    container_security,
    custom_timeouts,
    labels,
    pod_security,
    pod_start_s,
    selector,
)
from infra.k8s_platform.ingress import TLS_SECRET as INGRESS_TLS_SECRET
from infra.k8s_platform.memory_store import (
    DSN_FILE,
    GATEWAY_CA_CONFIGMAP,
    GATEWAY_CA_DIR,
    GATEWAY_DSN_DIR,
    GATEWAY_DSN_SECRET,
)
from infra.k8s_platform.openbao import OpenBaoConfiguration, mtls_secret

NAME = GATEWAY_APP
OPENBAO_ROLE = GATEWAY_OPENBAO_ROLE


AUDIT_TRAIL = "/var/lib/sovereign/audit/audit.jsonl"
SETTINGS_FILE = "/etc/sovereign/config/gateway.yaml"
AUDIT_SHIP_INTERVAL_S = 60
SHIP_HEARTBEAT = "/tmp/audit-ship.alive"
# the front door's certificate, without its key, so the gateway exports its expiry (scrape_metrics.py);
# the Secret comes with the Ingress (phase 2), so the volume is optional
INGRESS_CERT_DIR = "/etc/sovereign/ingress-cert"


def audit_archive_settings(cfg: StackConfig) -> dict[str, Any] | None:
    """Where the pod's audit-ship sidecar sends sealed segments (gateway/settings.py's
    audit.archive), with the object storage's reviewed allowlist entry if it is not built in."""
    if cfg.storage.audit_archive is None:
        return None
    host = residency.host_of(cfg.endpoints.object_storage)
    reviewed = [
        e for e in cfg.residency.extra_hosts if host == e.host.lower() or host.endswith("." + e.host.lower())
    ]
    return {
        "url": cfg.storage.audit_archive,
        "endpoint": cfg.endpoints.object_storage,
        "region": objectstore.stack_region(cfg),
        "retention_days": cfg.storage.audit_retention_days,
        "lock_mode": cfg.storage.audit_lock_mode,
        "reviewed_hosts": [e.model_dump() for e in reviewed],
    }


#: Shutdown of a gateway pod, in the order Kubernetes runs it: the preStop hook waits while the
#: endpoint controller and the ingress controller drop the pod from their lists (new requests go
#: elsewhere), then SIGTERM: the gateway stops accepting and gives what is in flight
#: limits.shutdown_deadline_s, ends the rest with an audited `shutting_down` error, uvicorn's
#: backstop (gateway/server.py BACKSTOP_S) cancels anything left and its watchdog (WATCHDOG_S)
#: ends the process; the kubelet's SIGKILL comes at the grace period. Each step fits in the
#: next (tests/platform/test_platform.py checks the sum): nothing is cut by SIGKILL unaudited.
PRESTOP_S = 5
SHUTDOWN_DEADLINE_S = 20.0
GRACE_PERIOD_S = 30


def upstream(model: InferenceModelConfig) -> dict[str, Any]:
    """The gateway's upstream entry (gateway/settings.py Upstream) for a vLLM Deployment, over mTLS.
    A chat model lists the tool choices vLLM honours; an embedding model is an ``embeddings``
    upstream with its vector length, which /v1/chat/completions never uses (and vice versa)."""
    entry: dict[str, Any] = {
        "url": f"https://vllm-{model.name}.{INFERENCE_NS}.svc:{VLLM_PORT}/v1",
        "model": model.name,
        "tls": {
            "ca_file": f"{GATEWAY_UPSTREAM_TLS_DIR}/ca.crt",
            "cert_file": f"{GATEWAY_UPSTREAM_TLS_DIR}/tls.crt",
            "key_file": f"{GATEWAY_UPSTREAM_TLS_DIR}/tls.key",
        },
    }
    if model.kind == "embeddings":
        return {**entry, "kind": "embeddings", "dimensions": model.dimensions}
    # vLLM answers tool_choice "auto" only with its tool call parser (inference.py tool_args)
    tool_choices = ["auto", "required", "named"] if model.tool_calling else ["required", "named"]
    return {**entry, "tool_choices": tool_choices}


def gateway_settings(cfg: StackConfig) -> dict[str, Any]:
    """The gateway's settings file (gateway/settings.py) for this stack."""
    audit: dict[str, Any] = {"path": AUDIT_TRAIL, "fsync": True}
    archive = audit_archive_settings(cfg)
    if archive is not None:
        audit["archive"] = archive
    settings: dict[str, Any] = {
        "upstreams": {alias: upstream(m) for m in cfg.platform.models for alias in (m.name, *m.aliases)},
        "openbao": {
            "address": f"https://openbao.{OPENBAO_NS}.svc:{OPENBAO_PORT}",
            "ca_file": "/etc/openbao-ca/ca.crt",
            "kubernetes_role": OPENBAO_ROLE,
            "wrapped_keys_dir": "/var/lib/sovereign/wrapped",
        },
        "audit": audit,
        "keys_file": "/etc/sovereign/keys/keys.json",
        "limits": {"shutdown_deadline_s": SHUTDOWN_DEADLINE_S},
        "ingress_cert_file": f"{INGRESS_CERT_DIR}/tls.crt",
    }
    if cfg.platform.memory_store.enabled:
        # the store's DSN as a file (never in the ConfigMap): memory_store.py writes the Secret
        settings["memory"] = {"dsn_file": DSN_FILE}
        # the store's vector column has the embedding model's length (one embeddings model per
        # stack: infra/config.py); the gateway's default is the local stack's 384
        dims = {m.dimensions for m in cfg.platform.models if m.kind == "embeddings"}
        dims |= {cfg.platform.memory_store.dimensions} - {None}  # a DR region without models
        if len(dims) == 1:  # more than one: refused by the config (infra/config.py)
            settings["memory"]["dimensions"] = dims.pop()
    return settings


class GatewayDeployment(OpenBaoComponent):
    KIND = "Gateway"

    def build(self, name: str, cfg: StackConfig, openbao: OpenBaoConfiguration, depends_on: Deps) -> None:
        gw = cfg.platform.gateway
        meta_labels = labels(cfg, NAME, "gateway")
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        # the client certificate for mTLS to vLLM, from OpenBao's PKI
        self.upstream_tls, cert_serial = mtls_secret(
            self, f"{name}-upstream-tls", cfg, openbao, role="gateway-client",
            common_name=f"{NAME}.{GATEWAY_NS}.svc", namespace=GATEWAY_NS, secret_name="gateway-upstream-tls",
        )  # fmt: skip
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": NAME, "namespace": GATEWAY_NS, "labels": meta_labels},
            automount_service_account_token=False,  # the projected token below is the only one
            opts=child,
        )
        self.config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": "gateway-config", "namespace": GATEWAY_NS, "labels": meta_labels},
            data={"gateway.yaml": yaml.safe_dump(gateway_settings(cfg), sort_keys=True)},
            opts=child,
        )
        volumes = [
            {"name": "config", "configMap": {"name": "gateway-config"}},
            {"name": "upstream-tls", "secret": {"secretName": "gateway-upstream-tls"}},
            {"name": "client-keys", "secret": {"secretName": "gateway-client-keys"}},
            {"name": "openbao-ca", "configMap": {"name": "openbao-ca"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            {
                "name": "ingress-cert",
                "secret": {
                    "secretName": INGRESS_TLS_SECRET,
                    "optional": True,
                    "items": [{"key": "tls.crt", "path": "tls.crt"}],  # never the key
                },
            },
            {
                "name": "sa-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "token",
                                "expirationSeconds": 3600,
                                "audience": "openbao",
                            }
                        }
                    ]
                },
            },
        ]
        mounts = [
            {"name": "config", "mountPath": "/etc/sovereign/config", "readOnly": True},
            {"name": "upstream-tls", "mountPath": GATEWAY_UPSTREAM_TLS_DIR, "readOnly": True},
            {"name": "client-keys", "mountPath": "/etc/sovereign/keys", "readOnly": True},
            {"name": "openbao-ca", "mountPath": "/etc/openbao-ca", "readOnly": True},
            {"name": "ingress-cert", "mountPath": INGRESS_CERT_DIR, "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/sovereign"},
            {"name": "tmp", "mountPath": "/tmp"},
            {
                "name": "sa-token",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ]
        if cfg.platform.memory_store.enabled:
            volumes += [
                {"name": "memory-dsn", "secret": {"secretName": GATEWAY_DSN_SECRET}},
                {"name": "memory-ca", "configMap": {"name": GATEWAY_CA_CONFIGMAP}},
            ]
            mounts += [
                {"name": "memory-dsn", "mountPath": GATEWAY_DSN_DIR, "readOnly": True},
                {"name": "memory-ca", "mountPath": GATEWAY_CA_DIR, "readOnly": True},
            ]
        probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
        container = {
            "name": NAME,
            "image": images.reference(cfg, gw.image),
            "imagePullPolicy": "Always",  # re-resolved at the in-boundary mirror on every start
            "args": [
                "gateway",
                "serve",
                "--config",
                SETTINGS_FILE,
                "--host",
                "0.0.0.0",
            ],
            "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
            "resources": {
                "requests": {"cpu": gw.cpu, "memory": gw.memory},
                "limits": {"cpu": "2", "memory": gw.memory},
            },
            "startupProbe": {**probe, "failureThreshold": 30},
            "livenessProbe": probe,
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
            # the kubelet's own sleep action (beta and on by default since Kubernetes 1.30,
            # KEP-3960): no `sleep` binary needed in the image
            "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
            "securityContext": container_security(),
            "volumeMounts": mounts,
        }
        containers = [container]
        heartbeat_probe = {
            "exec": {"command": ["python", "-c", "import os, sys, time; sys.exit(time.time() - "
                                 f"os.path.getmtime({SHIP_HEARTBEAT!r}) > {5 * AUDIT_SHIP_INTERVAL_S})"]},
            "initialDelaySeconds": 30, "periodSeconds": AUDIT_SHIP_INTERVAL_S,
        }  # fmt: skip
        if audit_archive_settings(cfg) is not None:
            # the audit-ship sidecar: sealed segments to the Object Lock archive, under the pod's
            # name (one chain per pod); its keys may only write to the archive bucket
            containers.append({
                "name": "audit-ship",
                "image": images.reference(cfg, gw.image),
                "imagePullPolicy": "Always",
                "args": ["audit", "ship", AUDIT_TRAIL, "--gateway-config", SETTINGS_FILE,
                         "--every", str(AUDIT_SHIP_INTERVAL_S), "--prune", "--heartbeat", SHIP_HEARTBEAT],
                "env": [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/etc/object-storage/credentials"}],
                "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                              "limits": {"cpu": "200m", "memory": "256Mi"}},
                # alive while its rounds go on: the heartbeat is touched after every round
                "livenessProbe": heartbeat_probe, "readinessProbe": heartbeat_probe,
                "securityContext": container_security(),
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/sovereign/config", "readOnly": True},
                    {"name": "state", "mountPath": "/var/lib/sovereign"},
                    {"name": "archive-keys", "mountPath": "/etc/object-storage", "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            })  # fmt: skip
            volumes.append({"name": "archive-keys", "secret": {"secretName": "object-storage-audit"}})
        # Pulumi waits for the StatefulSet: created pods start together (podManagementPolicy Parallel);
        # a rolling update replaces them one at a time, up to max_replicas of them (the HPA's)
        self.start_s = pod_start_s(containers)
        timeouts = custom_timeouts(self.start_s, gw.max_replicas * self.start_s)
        # A StatefulSet, not a Deployment: each pod writes its own audit chain (one writer per
        # chain) and keeps it, with its wrapped data keys, on a volume of its own that outlives
        # restarts and scale-in (retained), until the audit archive has shipped it.
        self.statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata={"name": NAME, "namespace": GATEWAY_NS, "labels": meta_labels},
            spec={
                "replicas": gw.min_replicas,
                "serviceName": NAME,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": selector(NAME)},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "state", "labels": meta_labels},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{gw.state_volume_gi}Gi"}},
                        },
                    }
                ],
                "template": {
                    # a renewed client certificate changes the template, so the pods roll onto it
                    "metadata": {
                        "labels": meta_labels,
                        "annotations": {"sovereign-llm.io/upstream-cert-serial": cert_serial},
                    },
                    "spec": {
                        "serviceAccountName": NAME,
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": GRACE_PERIOD_S,
                        "securityContext": pod_security(),
                        "containers": containers,
                        "volumes": volumes,
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": selector(NAME)},
                            }
                        ],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on, custom_timeouts=timeouts),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": NAME, "namespace": GATEWAY_NS, "labels": meta_labels},
            spec={"selector": selector(NAME), "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            opts=child,
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": NAME, "namespace": GATEWAY_NS, "labels": meta_labels},
            spec={"minAvailable": 1, "selector": {"matchLabels": selector(NAME)}},
            opts=child,
        )
        self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata={"name": NAME, "namespace": GATEWAY_NS, "labels": meta_labels},
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": NAME},
                "minReplicas": gw.min_replicas,
                "maxReplicas": gw.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
            },
            opts=child,
        )
        self.register_outputs({"service": f"{NAME}.{GATEWAY_NS}.svc"})
