"""What RKE2 does not bring and the platform needs first: the Hetzner Cloud controller manager,
storage for the cloud nodes (hcloud CSI, the default StorageClass) and for the GPU servers
(local-path-provisioner), and the monitoring stack whose CRDs every ServiceMonitor needs
(kube-prometheus-stack). All pinned Helm releases; what each installs is declared, with its
template sources, in infra/policy/charts.py (docs/platform.md, "Cluster services").

- **hcloud-cloud-controller-manager**: initialises the cloud nodes (``cloud-provider-name:
  external`` in RKE2: docs/platform.md), with the stack's network (``HCLOUD_NETWORK``, private
  addresses) and without route reconciliation (canal carries pod traffic in VXLAN, and routes do
  not reach the vSwitch). Robot support is off: it needs the account's Robot web-service
  credentials in the cluster; the GPU servers therefore run without an external cloud provider and
  the node-lifecycle controller, which would delete a NotReady node it cannot find in Hetzner
  Cloud, is disabled.
- **hcloud-csi**: Hetzner Cloud volumes for the cloud nodes; its StorageClass ``hcloud-volumes``
  is the default (WaitForFirstConsumer in the chart's template). Robot servers cannot attach them.
- **local-path-provisioner**: StorageClass ``local-path`` (WaitForFirstConsumer) limited to the GPU
  servers by ``allowedTopologies``: the model weights volume lands on the GPU server's disk.
- Both read the API token from the Secret ``kube-system/hcloud`` (keys ``token``, ``network``),
  made here from the stack secret ``hcloud:token`` and the network's id.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import images
from infra.config import NODE_LOCAL_CLASS, StackConfig
from infra.k8s_platform.common import GPU_NODE_LABEL, KUBE_SYSTEM, labels
from infra.k8s_platform.gpu import ChartWait, pinned_chart

HCLOUD_REPO = "https://charts.hetzner.cloud"
LOCAL_PATH_REPO = "oci://ghcr.io/rancher/local-path-provisioner/charts"
HCLOUD_SECRET = "hcloud"  # noqa: S105 (a Secret's name) the name both hcloud charts default to (values.yaml)
DEFAULT_CLASS = "hcloud-volumes"  # hcloud-csi values.yaml storageClasses[0].name
LOCAL_CLASS = NODE_LOCAL_CLASS  # infra/config.py: the models' weights volumes default to it
LOCAL_PATH_DIR = "/var/lib/sovereign/local-path"  # on each GPU server's own disk
# RKE2's default cluster-cidr (docs.rke2.io/reference/server_config); the roles do not change it
RKE2_CLUSTER_CIDR = "10.42.0.0/16"

# github.com/hetznercloud/hcloud-cloud-controller-manager at v1.35.0, chart/templates/deployment.yaml:
# no probe on the container; the release is ready once the pod runs
CCM_WAIT = ChartWait(
    "hcloud-cloud-controller-manager",
    "1.35.0",
    "github.com/hetznercloud/hcloud-cloud-controller-manager@v1.35.0 chart/templates/deployment.yaml "
    "(no probes)",
    {"hcloud-cloud-controller-manager": {}},
)
# github.com/hetznercloud/csi-driver at v2.22.1, chart/values.yaml controller/node.livenessProbe
CSI_WAIT = ChartWait(
    "hcloud-csi",
    "2.22.1",
    "github.com/hetznercloud/csi-driver@v2.22.1 chart/values.yaml (controller.livenessProbe, "
    "node.livenessProbe; no readiness or startup probe)",
    {
        "hcloud-csi-controller": {
            "livenessProbe": {"initialDelaySeconds": 10, "periodSeconds": 2, "failureThreshold": 5}
        },
        "hcloud-csi-node": {
            "livenessProbe": {"initialDelaySeconds": 10, "periodSeconds": 2, "failureThreshold": 5}
        },
    },
)
# github.com/rancher/local-path-provisioner at v0.0.37, deploy/chart/local-path-provisioner/values.yaml
LOCAL_PATH_WAIT = ChartWait(
    "local-path-provisioner",
    "0.0.37",
    "github.com/rancher/local-path-provisioner@v0.0.37 deploy/chart/local-path-provisioner/values.yaml "
    "(health.startupProbe, livenessProbe, readinessProbe)",
    {
        "local-path-provisioner": {
            "startupProbe": {"initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 12},
            "livenessProbe": {"initialDelaySeconds": 10, "periodSeconds": 10},
            "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 5},
        }
    },
)


def ccm_values() -> dict[str, Any]:
    """hcloud-cloud-controller-manager 1.35.0: the network from the Secret, no routes (vSwitch and
    canal's VXLAN), no node-lifecycle controller (Robot support off: see the module docstring)."""
    return {
        "networking": {"enabled": False},  # true would enable the route controller, not for vSwitches
        "env": {
            # docs/guides/robot/private-networks.md at v1.35.0: the network without routes
            "HCLOUD_NETWORK": {"valueFrom": {"secretKeyRef": {"name": HCLOUD_SECRET, "key": "network"}}},
            "HCLOUD_NETWORK_ROUTES_ENABLED": {"value": "false"},
        },
        "args": {"controllers": "*,-cloud-node-lifecycle"},
        "robot": {"enabled": False},
        "monitoring": {"enabled": True, "podMonitor": {"enabled": False}},
    }


def csi_values() -> dict[str, Any]:
    """hcloud-csi 2.22.1: the default class hcloud-volumes (the template's WaitForFirstConsumer), the
    token from the Secret hcloud; the node plugin stays off the (tainted) GPU servers."""
    return {
        "controller": {"hcloudToken": {"existingSecret": {"name": HCLOUD_SECRET, "key": "token"}}},
        "storageClasses": [{"name": DEFAULT_CLASS, "defaultStorageClass": True, "reclaimPolicy": "Retain"}],
        "metrics": {"enabled": False},
    }


def local_path_values(cfg: StackConfig) -> dict[str, Any]:
    """local-path-provisioner 0.0.37: class local-path, not the default, only on GPU servers."""
    return {
        "storageClass": {
            "create": True,
            "defaultClass": False,
            "name": LOCAL_CLASS,
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer",
            # the scheduler matches these against node labels (VolumeBinding): GPU servers only
            "allowedTopologies": [{"matchLabelExpressions": [{"key": GPU_NODE_LABEL, "values": ["true"]}]}],
        },
        "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [LOCAL_PATH_DIR]}],
        # the chart's default is busybox:latest: pinned
        "helperImage": {"repository": "docker.io/library/busybox", "tag": "1.37.0"},
    }


class ClusterServices(pulumi.ComponentResource):
    """The cloud controller and the storage provisioners (kube-system)."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        network_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:ClusterServices", name, None, opts)
        # a missing token blocks the deploy before anything is created (program.deploy_blockers)
        token = pulumi.Config("hcloud").get_secret("token") or ""
        self.secret = k8s.core.v1.Secret(
            f"{name}-hcloud",
            metadata={
                "name": HCLOUD_SECRET,
                "namespace": KUBE_SYSTEM,
                "labels": labels(cfg, HCLOUD_SECRET, "cloud"),
            },
            type="Opaque",
            string_data={"token": token, "network": pulumi.Output.from_input(network_id).apply(str)},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stringData", "data"]),
        )
        ccm = CCM_WAIT.chart
        self.ccm = pinned_chart(
            self, f"{name}-hcloud-ccm", cfg, chart=ccm, version=CCM_WAIT.version, repo=HCLOUD_REPO,
            namespace=KUBE_SYSTEM, values=images.chart_values(cfg, ccm, CCM_WAIT.version, ccm_values()),
            depends_on=[self.secret],
            wait_s=CCM_WAIT.budget_s(),
        )  # fmt: skip
        self.csi = pinned_chart(
            self, f"{name}-hcloud-csi", cfg, chart=CSI_WAIT.chart, version=CSI_WAIT.version, repo=HCLOUD_REPO,
            namespace=KUBE_SYSTEM,
            values=images.chart_values(cfg, CSI_WAIT.chart, CSI_WAIT.version, csi_values()),
            depends_on=[self.secret, self.ccm],
            wait_s=CSI_WAIT.budget_s(),
        )  # fmt: skip
        self.local_path = pinned_chart(
            self, f"{name}-local-path", cfg, chart=LOCAL_PATH_WAIT.chart, version=LOCAL_PATH_WAIT.version,
            repo=LOCAL_PATH_REPO, namespace=KUBE_SYSTEM,
            values=images.chart_values(
                cfg, LOCAL_PATH_WAIT.chart, LOCAL_PATH_WAIT.version, local_path_values(cfg)
            ),
            depends_on=[self.ccm],
            wait_s=LOCAL_PATH_WAIT.budget_s(),
        )  # fmt: skip
        self.storage = [self.csi, self.local_path]
        self.register_outputs({})
