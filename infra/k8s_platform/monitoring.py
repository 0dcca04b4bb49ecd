"""The cluster's monitoring stack: kube-prometheus-stack (pinned) in ``platform.monitoring_namespace``.

It installs the prometheus-operator CRDs (its ``crds`` subchart's ``crds/`` folder, which Helm
applies before any template), the operator and one Prometheus that selects every ServiceMonitor
in the cluster (not only its own release's), with its data on the default StorageClass. Every
user of a ServiceMonitor depends on this release: the project's ServiceMonitors
(observability.py), KEDA's release and the GPU operator's (docs/platform.md, "Monitoring").

Kept minimal until the operations issue adds rules, routes and dashboards: no Grafana (its
dashboards, users and plugins come with that issue), no Alertmanager (nothing to route yet), no
default rules; no node-exporter (hostNetwork, hostPID and host paths: the namespace stays
Pod Security ``restricted``), no kube-state-metrics; no scraping of the control-plane components
RKE2 binds to 127.0.0.1 (etcd, scheduler, controller manager, kube-proxy); no admission webhook
(it validates PrometheusRules, which come with the operations issue, and needs a certificate Job).
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra import images
from infra.config import StackConfig
from infra.k8s_platform.cluster_services import DEFAULT_CLASS
from infra.k8s_platform.gpu import ChartWait, pinned_chart

PROMETHEUS_REPO = "https://prometheus-community.github.io/helm-charts"
RELEASE = "kube-prometheus-stack"
PROMETHEUS_VOLUME_GI = 50
# ports (kube-prometheus-stack 88.5.3): Prometheus' web port (prometheusSpec.portName http-web),
# its config reloader's (reloader-web, templates/prometheus/servicemonitor.yaml), the operator's
# without TLS (templates/prometheus-operator/deployment.yaml --web.listen-address=:8080)
PROMETHEUS_PORT = 9090
RELOADER_PORT = 8080
OPERATOR_PORT = 8080
# pod labels: the operator's Deployment (selector app: <chart name>-operator); the Prometheus
# StatefulSet's pods, labelled by the operator app.kubernetes.io/name: prometheus (the chart's own
# podAntiAffinity selects them so, templates/prometheus/prometheus.yaml)
OPERATOR_POD = {"app": f"{RELEASE}-operator"}
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}
RETENTION = "15d"

# github.com/prometheus-community/helm-charts at kube-prometheus-stack-88.5.3,
# charts/kube-prometheus-stack/values.yaml prometheusOperator.livenessProbe / readinessProbe. Helm
# waits for the operator's Deployment only: the Prometheus StatefulSet is the operator's, not Helm's.
KUBE_PROMETHEUS_WAIT = ChartWait(
    RELEASE,
    "88.5.3",
    "github.com/prometheus-community/helm-charts@kube-prometheus-stack-88.5.3 "
    "charts/kube-prometheus-stack/values.yaml (prometheusOperator.livenessProbe, readinessProbe)",
    {
        "prometheus-operator": {
            "livenessProbe": {"initialDelaySeconds": 0, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 10, "failureThreshold": 3},
        }
    },
)


def values(cfg: StackConfig) -> dict[str, Any]:
    off = {"enabled": False}
    return {
        "crds": {"enabled": True},  # the prometheus-operator CRDs (crds subchart, crds/ folder)
        "defaultRules": {"create": False},
        "grafana": off,
        "alertmanager": off,
        "nodeExporter": off,
        "kubeStateMetrics": off,
        "kubeEtcd": off,
        "kubeScheduler": off,
        "kubeControllerManager": off,
        "kubeProxy": off,
        "prometheusOperator": {
            "admissionWebhooks": {"enabled": False},
            # TLS on the operator's web port mounts the Secret <fullname>-admission, which only the
            # admission webhooks' certificate Job creates (templates/prometheus-operator/
            # deployment.yaml "tls-secret"): without the webhooks the pod would never start. It
            # serves plain HTTP on 8080 instead, scraped in-namespace (OPERATOR_PORT).
            "tls": {"enabled": False},
        },
        "prometheus": {
            "prometheusSpec": {
                # every ServiceMonitor/PodMonitor/rule in every namespace, not only this release's
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "retention": RETENTION,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": DEFAULT_CLASS,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{PROMETHEUS_VOLUME_GI}Gi"}},
                        }
                    }
                },
            }
        },
    }


class Monitoring(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:Monitoring", name, None, opts)
        self.release = pinned_chart(
            self, f"{name}-kube-prometheus-stack", cfg, chart=RELEASE, version=KUBE_PROMETHEUS_WAIT.version,
            repo=PROMETHEUS_REPO, namespace=cfg.platform.monitoring_namespace,
            values=images.chart_values(cfg, RELEASE, KUBE_PROMETHEUS_WAIT.version, values(cfg)),
            depends_on=depends_on, wait_s=KUBE_PROMETHEUS_WAIT.budget_s(),
        )  # fmt: skip
        self.register_outputs({})
