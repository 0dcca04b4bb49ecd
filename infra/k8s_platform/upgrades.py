"""RKE2 upgrades: Rancher's system-upgrade-controller (SUC) and one Plan for the servers, one for
the agents, both at the stack's ``rke2.version``.

Why the SUC and not the Ansible role: RKE2's own documentation names it the way to automate
upgrades ("Automated Upgrades", docs.rke2.io/upgrades/automated_upgrade), and it does what a
rolling upgrade needs from inside the cluster, where the state is: one node at a time
(``concurrency: 1``), cordon, drain (agents: evictions respect the PodDisruptionBudgets of vLLM
and the gateway), replace the binary, restart RKE2, uncordon once the node is back, and the
agents only after every server (the agent Plan's ``prepare`` step waits for the server Plan:
rancher/rke2-upgrade scripts/upgrade.sh ``prepare``). The Ansible role installs a release only
where no RKE2 runs (roles/rke2/tasks/version.yml), so the two never fight over a node.

Pinned: SUC v0.16.3 (built against Kubernetes 1.33 client libraries, go.mod, like the pinned
RKE2 minor). Its manifests are upstream's ``manifests/*.yaml`` at that tag, declared here object
by object, with two changes: no hostPath mounts of the node's CA folders (they are for resolving
a ``channel`` over TLS; these Plans pin ``version`` and resolve nothing) so the controller's pod
is Pod Security "restricted" (the upgrade Jobs it creates are privileged, hence the namespace's
"privileged" level), and resource requests and limits. The Plan CRD is upstream's generated file
(``crds/upgrade.cattle.io_plans.yaml``, byte for byte, sha256 below): Pulumi creates it before
the Plans; the controller applies the same CRD at start (pkg/upgrade/controller.go), a no-op.

Images (rancher/system-upgrade-controller, rancher/kubectl, rancher/rke2-upgrade) are named by
digest on the stack's EU registry mirror (infra/images.py, ``platform.images``). The rke2-upgrade
tag is the Plan's version with ``+`` replaced by ``-`` (pkg/upgrade/plan/plan.go MungeVersion);
the Plans name that image with its tag and digest, which the controller keeps as it is (it adds
the version only to a name-only image: pkg/upgrade/container/container.go WithLatestTag), so
each RKE2 release's upgrade image is mirrored, and its digest set, before its version is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import images
from infra.config import StackConfig
from infra.k8s_platform.common import UPGRADE_NS, Component, Deps, container_security, labels

SUC_VERSION = "v0.16.3"
SUC_COMMIT = (
    "a8d5a372d82cb65f54c08aea80a1855a4983e6a6"  # the tag's commit in rancher/system-upgrade-controller
)
SUC_IMAGE = f"rancher/system-upgrade-controller:{SUC_VERSION}"
# upstream's default (pkg/upgrade/job/job.go defaultKubectlImage and manifests ConfigMap): cordon, drain
KUBECTL_IMAGE = "rancher/kubectl:v1.30.3"
RKE2_UPGRADE_IMAGE = "rancher/rke2-upgrade"  # tagged with the Plan's version (rke2_upgrade_image)
CRD_FILE = Path(__file__).parent / "crds" / "upgrade.cattle.io_plans.yaml"
# sha256 of pkg/crds/yaml/generated/upgrade.cattle.io_plans.yaml at SUC_VERSION (SUC_COMMIT)
CRD_SHA256 = "d26cb57b27012e7ea2992e10707741e36c3eb2031bf8b41aaf7d1e611c878376"
SERVICE_ACCOUNT = "system-upgrade"
CONTROLLER = "system-upgrade-controller"
SERVER_PLAN = "rke2-server"
AGENT_PLAN = "rke2-agent"
NOBODY = 65534  # the controller's user in upstream's Deployment

# upstream's manifests/system-upgrade-controller.yaml ConfigMap default-controller-env (the kubectl
# image: controller_env, from the mirror by digest)
CONTROLLER_ENV = {
    "SYSTEM_UPGRADE_CONTROLLER_DEBUG": "false",
    "SYSTEM_UPGRADE_CONTROLLER_THREADS": "2",
    "SYSTEM_UPGRADE_CONTROLLER_LEADER_ELECT": "true",
    "SYSTEM_UPGRADE_JOB_ACTIVE_DEADLINE_SECONDS": "900",
    "SYSTEM_UPGRADE_JOB_BACKOFF_LIMIT": "99",
    "SYSTEM_UPGRADE_JOB_IMAGE_PULL_POLICY": "Always",
    "SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE": KUBECTL_IMAGE,
    "SYSTEM_UPGRADE_JOB_PRIVILEGED": "true",
    "SYSTEM_UPGRADE_JOB_TTL_SECONDS_AFTER_FINISH": "900",
    "SYSTEM_UPGRADE_PLAN_POLLING_INTERVAL": "15m",
}


def rke2_upgrade_image(version: str) -> str:
    """The upgrade image of an RKE2 release: its tag is the version with ``+`` as ``-``
    (v0.16.3 pkg/upgrade/plan/plan.go MungeVersion)."""
    return f"{RKE2_UPGRADE_IMAGE}:{version.replace('+', '-')}"


def controller_env(cfg: StackConfig) -> dict[str, str]:
    return {**CONTROLLER_ENV, "SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE": images.reference(cfg, KUBECTL_IMAGE)}


# A node labelled rke2-upgrade=disabled (or false) is left out of both Plans (RKE2's documented
# selector, inverted: every node takes part unless an operator holds it back).
_NOT_HELD_BACK = {"key": "rke2-upgrade", "operator": "NotIn", "values": ["disabled", "false"]}
# RKE2 labels its servers node-role.kubernetes.io/control-plane=true
_SERVERS = {"key": "node-role.kubernetes.io/control-plane", "operator": "In", "values": ["true"]}
_NOT_SERVERS = {"key": "node-role.kubernetes.io/control-plane", "operator": "NotIn", "values": ["true"]}


def plan_crd() -> dict[str, Any]:
    """The pinned Plan CustomResourceDefinition, as upstream generated it."""
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    return crd


def server_plan_spec(version: str, image: str) -> dict[str, Any]:
    """The servers: one at a time, cordoned (not drained: etcd and the control plane restart in
    place, as in RKE2's example server Plan)."""
    return {
        "concurrency": 1,
        "cordon": True,
        "nodeSelector": {"matchExpressions": [_SERVERS, _NOT_HELD_BACK]},
        # a server tainted CriticalAddonsOnly (a dedicated control plane) still gets its Job
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "serviceAccountName": SERVICE_ACCOUNT,
        "upgrade": {"image": image},
        "version": version,
    }


def agent_plan_spec(version: str, image: str) -> dict[str, Any]:
    """The agents: after every server (prepare), one at a time, drained first."""
    return {
        "concurrency": 1,
        "cordon": True,
        # kubectl drain honours the PodDisruptionBudgets; vLLM's /dev/shm is an emptyDir
        "drain": {"force": True, "ignoreDaemonSets": True, "deleteEmptydirData": True, "timeout": "10m"},
        "nodeSelector": {"matchExpressions": [_NOT_SERVERS, _NOT_HELD_BACK]},
        # the Job tolerates only node.kubernetes.io/unschedulable by itself (pkg/upgrade/job/job.go);
        # the GPU servers carry nvidia.com/gpu=present:NoSchedule (infra/hosts/inventory.py)
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "prepare": {"image": image, "args": ["prepare", SERVER_PLAN]},
        "serviceAccountName": SERVICE_ACCOUNT,
        "upgrade": {"image": image},
        "version": version,
    }


def _rule(groups: list[str], resources: list[str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **extra}


def _rbac(cfg: StackConfig, parent: pulumi.Resource, name: str) -> list[pulumi.Resource]:
    """upstream's manifests/clusterrole.yaml and clusterrolebinding.yaml at SUC_VERSION."""
    opts = pulumi.ResourceOptions(parent=parent)
    meta = labels(cfg, CONTROLLER, "upgrades")
    read = ["get", "list", "watch"]
    write = [*read, "create", "patch", "update"]
    rules = {
        ("ClusterRole", CONTROLLER): [
            _rule(["batch"], ["jobs"], read),
            _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], write),
            _rule([""], ["namespaces", "nodes"], read),
            _rule([""], ["nodes"], ["update"]),
            _rule([""], ["events"], ["get", "create", "patch", "update"]),
            _rule(["coordination.k8s.io"], ["leases"], ["create"]),
            _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], resourceNames=[CONTROLLER]),
            _rule(["upgrade.cattle.io"], ["plans", "plans/status"], [*write, "delete"]),
        ],
        ("Role", CONTROLLER): [
            _rule(["batch"], ["jobs"], [*write, "delete", "deletecollection"]),
            _rule([""], ["secrets"], read),
        ],
        # cordon and drain: evict, list and delete pods, patch nodes, find the pods' owners
        ("ClusterRole", f"{CONTROLLER}-drainer"): [
            _rule([""], ["pods/eviction"], ["create"]),
            _rule([""], ["pods"], ["get", "list", "delete"]),
            _rule([""], ["nodes"], ["get", "patch"]),
            _rule(["apps"], ["statefulsets", "daemonsets", "replicasets"], ["get", "list"]),
        ],
    }
    made: list[pulumi.Resource] = []
    for (kind, role), role_rules in rules.items():
        scope = {"namespace": UPGRADE_NS} if kind == "Role" else {}
        cls = k8s.rbac.v1.Role if kind == "Role" else k8s.rbac.v1.ClusterRole
        made.append(
            cls(f"{name}-{role}-{kind.lower()}", metadata={"name": role, "labels": meta, **scope},
                rules=role_rules, opts=opts)
        )  # fmt: skip
    subjects = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": UPGRADE_NS}]
    for binding, kind, role in (
        ("system-upgrade-drainer", "ClusterRole", f"{CONTROLLER}-drainer"),
        (SERVICE_ACCOUNT, "ClusterRole", CONTROLLER),
        (SERVICE_ACCOUNT, "Role", CONTROLLER),
    ):
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}
        if kind == "Role":
            made.append(
                k8s.rbac.v1.RoleBinding(f"{name}-{binding}-rolebinding", role_ref=ref, subjects=subjects,
                    metadata={"name": binding, "namespace": UPGRADE_NS, "labels": meta}, opts=opts)
            )  # fmt: skip
        else:
            made.append(
                k8s.rbac.v1.ClusterRoleBinding(f"{name}-{binding}-clusterrolebinding", role_ref=ref,
                    subjects=subjects, metadata={"name": binding, "labels": meta}, opts=opts)
            )  # fmt: skip
    return made


def controller_pod(cfg: StackConfig) -> dict[str, Any]:
    """upstream's Deployment pod: on a server, never two on one node, restricted."""
    pod_labels = {
        **labels(cfg, CONTROLLER, "upgrades"),
        "upgrade.cattle.io/controller": CONTROLLER,  # the controller's name, and kept out of every drain
    }
    field = [("SYSTEM_UPGRADE_CONTROLLER_NAME", "metadata.labels['upgrade.cattle.io/controller']"),
             ("SYSTEM_UPGRADE_CONTROLLER_NAMESPACE", "metadata.namespace"),
             ("SYSTEM_UPGRADE_CONTROLLER_NODE_NAME", "spec.nodeName")]  # fmt: skip
    return {
        "metadata": {"labels": pod_labels},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": NOBODY,
                "runAsGroup": NOBODY,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
                                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                                ]
                            }
                        ]
                    }
                },
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "app.kubernetes.io/name",
                                        "operator": "In",
                                        "values": [CONTROLLER],
                                    }
                                ]
                            },
                        }
                    ]
                },
            },
            "tolerations": [
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node-role.kubernetes.io/controlplane", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "node-role.kubernetes.io/control-plane",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                },
                {"key": "node-role.kubernetes.io/etcd", "operator": "Exists", "effect": "NoExecute"},
            ],
            "containers": [
                {
                    "name": CONTROLLER,
                    "image": images.reference(cfg, SUC_IMAGE),
                    "imagePullPolicy": "Always",  # re-resolved at the in-boundary mirror (CKV_K8S_15)
                    "securityContext": {**container_security(), "runAsUser": NOBODY, "runAsGroup": NOBODY},
                    "envFrom": [{"configMapRef": {"name": "default-controller-env"}}],
                    "env": [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in field],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # an emptyDir
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


class SystemUpgrade(Component):
    """The controller and the two Plans; the namespace comes from Namespaces (privileged)."""

    KIND = "SystemUpgrade"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        meta = labels(cfg, CONTROLLER, "upgrades")
        crd = plan_crd()
        self.crd = k8s.apiextensions.v1.CustomResourceDefinition(
            f"{name}-plan-crd", metadata=crd["metadata"], spec=crd["spec"], opts=child
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": UPGRADE_NS, "labels": meta},
            opts=child,
        )
        env = k8s.core.v1.ConfigMap(
            f"{name}-env",
            metadata={"name": "default-controller-env", "namespace": UPGRADE_NS, "labels": meta},
            data=controller_env(cfg),
            opts=child,
        )
        rbac = _rbac(cfg, self, name)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-controller",
            metadata={"name": CONTROLLER, "namespace": UPGRADE_NS, "labels": meta},
            spec={
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"upgrade.cattle.io/controller": CONTROLLER}},
                "template": controller_pod(cfg),
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, self.crd, account, env, *rbac]),
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, self.crd, self.deployment])
        upgrade_image = images.reference(cfg, rke2_upgrade_image(cfg.rke2.version))
        self.plans = [
            k8s.apiextensions.CustomResource(
                f"{name}-{plan}",
                api_version="upgrade.cattle.io/v1",
                kind="Plan",
                # not the controller's labels: the controller copies a Plan's labels (but those with
                # "cattle.io/") onto its Job pods (v0.16.3 pkg/upgrade/job/job.go), and its own pod's
                # anti-affinity on app.kubernetes.io/name would keep the Job off that server forever
                metadata={
                    "name": plan,
                    "namespace": UPGRADE_NS,
                    "labels": {**labels(cfg, "rke2-upgrade", "upgrades"), "rke2-upgrade": role},
                },
                spec=spec,
                opts=after,
            )
            for plan, role, spec in (
                (SERVER_PLAN, "server", server_plan_spec(cfg.rke2.version, upgrade_image)),
                (AGENT_PLAN, "agent", agent_plan_spec(cfg.rke2.version, upgrade_image)),
            )
        ]
        self.register_outputs({"version": cfg.rke2.version})
