"""The cluster's monitoring stack: kube-prometheus-stack (pinned) in ``platform.monitoring_namespace``.

It installs the prometheus-operator CRDs (its ``crds`` subchart's ``crds/`` folder, which Helm
applies before any template), the operator, one Prometheus that selects every ServiceMonitor and
PrometheusRule in the cluster (not only its own release's), with its data on the default
StorageClass, and for the operations issue:

- **Alertmanager** (one replica, data on the default StorageClass): its configuration is
  ``alerts.alertmanager_config`` (the stack's EU webhook receivers, routed by severity) plus an
  inhibition (a page silences the ticket of the same alert) and no templates; Prometheus sends to it
  (the chart's ``alerting.alertmanagers``). AlertmanagerConfig objects are not selected: receivers
  come from the validated stack config only.
- **kube-state-metrics** (the chart's subchart): the Kubernetes object metrics the alert rules read
  (``kube_node_status_condition``, ``kube_cronjob_status_last_successful_time``,
  ``kube_job_status_failed``), and per RKE2 etcd snapshot (``ETCDSnapshotFile``, k3s.cattle.io/v1)
  its creation time, readiness and error time (``customResourceState``), which
  ``etcd_snapshot_alerts`` turn into EtcdSnapshotOverdue / EtcdSnapshotFailing.
- **Grafana** (subchart) for the service owner: dashboards only from ConfigMaps labelled
  ``GRAFANA_DASHBOARD_LABEL`` in the monitoring namespace (dashboards.py), through the dashboards
  sidecar; one Prometheus data source, uid ``GRAFANA_DATASOURCE_UID``; no plugins, no chart
  dashboards, no grafana.com dashboards; every call home off in ``grafana.ini`` (and its network
  policy allows Prometheus, the API server and DNS only); stateless (an emptyDir), read-only root;
  the admin password is the chart's own Secret, random at install and kept by ``helm upgrade``
  (its ``lookup``), read with kubectl (docs/platform.md, "Monitoring").

Every pod is Pod Security ``restricted`` (the namespace enforces it). Still not installed:
node-exporter (hostNetwork, hostPID and host paths: the namespace stays ``restricted``), the chart's
default rules and dashboards, scraping of the control-plane components RKE2 binds to 127.0.0.1
(etcd, scheduler, controller manager, kube-proxy), and the admission webhook (it needs a
certificate Job). Every user of a ServiceMonitor depends on this release: the project's
ServiceMonitors (observability.py), KEDA's release and the GPU operator's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from infra import images
from infra.config import StackConfig
from infra.k8s_platform import alerts
from infra.k8s_platform.cluster_services import DEFAULT_CLASS
from infra.k8s_platform.common import Component, Deps
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
MIN_RETENTION_DAYS = 15


def retention(cfg: StackConfig) -> str:
    """Prometheus keeps the whole SLO period and a day more: the error budget over
    ``platform.alerting.slo_days`` (dashboards.py) reads the counters that far back."""
    return f"{max(MIN_RETENTION_DAYS, cfg.platform.alerting.slo_days + 1)}d"


# Grafana (the chart's grafana subchart): its dashboards sidecar loads every ConfigMap in the
# monitoring namespace with this label (dashboards.py makes them), and its Prometheus data source
# has this uid (the dashboards' panels name it)
GRAFANA_DASHBOARD_LABEL = ("grafana_dashboard", "1")
GRAFANA_DATASOURCE_UID = "prometheus"

# --- Alertmanager (kube-prometheus-stack 88.5.3 values.yaml alertmanager.*; the StatefulSet is the
# operator's: prometheus-operator v0.93.0 pkg/alertmanager/statefulset.go, the chart pins v0.93.1,
# whose tag the mirror lacks) ---------------------------------------------------------------------
# web port: the operator's --web.listen-address=:9093 (statefulset.go), the chart's Service
# port/targetPort 9093 (values.yaml alertmanager.service) and its Prometheus alerting endpoint
# (templates/prometheus/prometheus.yaml alerting.alertmanagers, port alertmanagerSpec.portName);
# config reloader: Service port reloader-web 8080 (templates/alertmanager/service.yaml), scraped by
# the chart's ServiceMonitor (templates/alertmanager/servicemonitor.yaml, selfMonitor: true). One
# replica: the operator passes --cluster.listen-address= (empty), so no mesh port 9094 listens.
ALERTMANAGER_PORT = 9093
ALERTMANAGER_RELOADER_PORT = 8080
# pods: app.kubernetes.io/name: alertmanager (statefulset.go makeSelectorLabels, operator.go
# applicationNameLabelValue)
ALERTMANAGER_POD = {"app.kubernetes.io/name": "alertmanager"}
ALERTMANAGER_VOLUME_GI = 10  # the smallest Hetzner Cloud volume (hcloud-volumes) is 10 GB
# restricted Pod Security: the chart's pod-level default (values.yaml alertmanagerSpec.securityContext),
# kept explicit; every container of the pod (alertmanager, config-reloader, init-config-reloader) gets
# allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities drop ALL from the
# operator (statefulset.go alertmanagerContainer, pkg/operator/config_reloader.go)
ALERTMANAGER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 2000,
    "fsGroup": 2000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# AlertmanagerConfig objects (CRD of the chart) could add receivers outside the validated stack config;
# the chart renders alertmanagerConfigSelector: {} (all of them in the namespace) unless set
# (templates/alertmanager/alertmanager.yaml): select by a label nothing in this program sets
NO_ALERTMANAGER_CONFIGS = {"matchLabels": {"sovereign-llm.io/alertmanager-config": "never-selected"}}

# --- kube-state-metrics (subchart kube-state-metrics 8.4.0, appVersion 2.20.0: prometheus-community/
# helm-charts tag kube-state-metrics-8.4.0, charts/kube-state-metrics) ----------------------------
# metrics port: --port={{ service.port | default 8080 }} (templates/deployment.yaml), the chart's
# ServiceMonitor endpoint "http" (templates/servicemonitor.yaml; the telemetry port 8081 is scraped
# only with selfMonitor.enabled, off)
KSM_PORT = 8080
KSM_POD = {"app.kubernetes.io/name": "kube-state-metrics"}  # templates/_helpers.tpl selectorLabels
# RKE2's etcd snapshot records (k3s-io/api k3s.cattle.io/v1 types.go ETCDSnapshotFile, cluster-scoped,
# plural etcdsnapshotfiles: pkg/crds/yaml/generated/k3s.cattle.io_etcdsnapshotfiles.yaml, at v0.1.2;
# RKE2 v1.33.5+rke2r1's go.mod requires v0.1.3, not in the mirror). Per snapshot: spec.nodeName,
# status.creationTime (RFC 3339), status.readyToUse (*bool), status.error.time (set while the snapshot
# failed; cleared on a successful retry)
ETCD_SNAPSHOT_PREFIX = "kube_etcdsnapshotfile"
ETCD_SNAPSHOT_CREATED = f"{ETCD_SNAPSHOT_PREFIX}_creation_time_seconds"
ETCD_SNAPSHOT_READY = f"{ETCD_SNAPSHOT_PREFIX}_ready_to_use"
ETCD_SNAPSHOT_ERROR = f"{ETCD_SNAPSHOT_PREFIX}_error_time_seconds"

# --- Grafana (subchart grafana 12.11.1, appVersion 13.2.0: grafana-community/helm-charts tag
# grafana-12.11.1, charts/grafana) ----------------------------------------------------------------
# the container port service.targetPort 3000 (values.yaml; templates/_pod.tpl ports), scraped through
# the Service's port http-web by the ServiceMonitor (templates/servicemonitor.yaml); the gossip
# (9094) and profiling (6060) ports are declared but unused (no unified_alerting HA, no pprof)
GRAFANA_PORT = 3000
GRAFANA_POD = {"app.kubernetes.io/name": "grafana"}  # templates/_helpers.tpl grafana.selectorLabels
GRAFANA_UID = 472  # values.yaml securityContext.runAsUser / runAsGroup / fsGroup
# grafana.ini: Grafana's calls home, each off (conf/defaults.ini [analytics], [news], [security],
# [snapshots], [plugins]); the network policy (network_policies.py) allows Grafana no other egress
# than Prometheus, the API server and DNS in any case
GRAFANA_INI = {
    "analytics": {
        "reporting_enabled": False,  # usage stats to stats.grafana.org
        "check_for_updates": False,  # the latest-version check
        "check_for_plugin_updates": False,  # grafana.com plugin versions
        "feedback_links_enabled": False,
    },
    "news": {"news_feed_enabled": False},  # the news feed (grafana.com RSS)
    "security": {"disable_gravatar": True},  # profile images from gravatar.com
    "snapshots": {"external_enabled": False},  # "publish to snapshots.raintank.io"
    "plugins": {
        "preinstall_disabled": True,  # Grafana 12+: plugins fetched from grafana.com at start
        "plugin_admin_enabled": False,  # no plugin catalogue (installs from grafana.com)
        "public_key_retrieval_disabled": True,  # plugin signing keys from grafana.com
    },
    "auth.anonymous": {"enabled": False},
    "users": {"allow_sign_up": False},
    "log": {"mode": "console"},  # no log file under the read-only root
}

# github.com/prometheus-community/helm-charts at kube-prometheus-stack-88.5.3,
# charts/kube-prometheus-stack/values.yaml prometheusOperator.livenessProbe / readinessProbe. Helm
# waits for the Deployments it renders: the operator's, kube-state-metrics' and Grafana's; the
# Prometheus and Alertmanager StatefulSets are the operator's, not Helm's.
KUBE_PROMETHEUS_WAIT = ChartWait(
    RELEASE,
    "88.5.3",
    "github.com/prometheus-community/helm-charts@kube-prometheus-stack-88.5.3 "
    "charts/kube-prometheus-stack/values.yaml (prometheusOperator.livenessProbe, readinessProbe); "
    "kube-state-metrics-8.4.0 charts/kube-state-metrics/values.yaml (livenessProbe, readinessProbe); "
    "grafana-community/helm-charts@grafana-12.11.1 charts/grafana/values.yaml (livenessProbe, "
    "readinessProbe)",
    {
        "prometheus-operator": {
            "livenessProbe": {"initialDelaySeconds": 0, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 10, "failureThreshold": 3},
        },
        "kube-state-metrics": {
            "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3,
                              "timeoutSeconds": 5},
            "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3,
                               "timeoutSeconds": 5},
        },
        "grafana": {
            "livenessProbe": {"initialDelaySeconds": 60, "timeoutSeconds": 30, "failureThreshold": 10},
            "readinessProbe": {},
        },
    },
)  # fmt: skip


# A page silences the ticket that says the same thing less urgently. No alert name has both
# severities, so the pairs are named by what they share: a burn-rate page and ticket of one SLO
# (alerts.py: slo, with use_case or model_name), and the audit disk's two thresholds of one pod.
# Alertmanager compares `equal` labels as strings, a missing label as "" (prometheus/alertmanager
# inhibit/inhibit.go, v0.34.0): both sides must be matched narrowly, or a page without use_case
# and model_name would silence every ticket without them.
INHIBIT_RULES: list[dict[str, Any]] = [
    {
        "source_matchers": ['severity="page"', 'slo=~".+"'],
        "target_matchers": ['severity="ticket"', 'slo=~".+"'],
        "equal": ["slo", "use_case", "model_name"],
    },
    {
        "source_matchers": ['alertname="GatewayAuditDiskReserveCrossed"'],
        "target_matchers": ['alertname="GatewayAuditDiskLow"'],
        "equal": ["namespace", "pod"],
    },
]


def alertmanager_values_config(cfg: StackConfig) -> dict[str, Any]:
    """``alertmanager.config``: alerts.py's routes and receivers, a page inhibiting the ticket that
    says the same less urgently (INHIBIT_RULES), no template files. Every key of the chart's
    default (values.yaml alertmanager.config: global, inhibit_rules, route, receivers, templates) is
    set, so none of its defaults (a Watchdog route, severity critical/warning/info inhibitions,
    /etc/alertmanager/config/*.tmpl) survives Helm's merge."""
    config = alerts.alertmanager_config(cfg)
    return {
        "global": {"resolve_timeout": "5m"},
        "route": config["route"],
        "receivers": config["receivers"],
        "inhibit_rules": INHIBIT_RULES,
        "templates": [],
    }


def receiver_endpoints(cfg: StackConfig) -> list[tuple[str, str, int]]:
    """(receiver name, host, port) of each webhook receiver: the URL's port, else the scheme's."""
    out = []
    for receiver in cfg.platform.alerting.receivers:
        parts = urlsplit(receiver.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        out.append((receiver.name, (parts.hostname or "").lower(), port))
    return out


def etcd_snapshot_metrics() -> dict[str, Any]:
    """kube-state-metrics ``customResourceState.config`` for RKE2's ETCDSnapshotFile objects
    (kube-state-metrics v2.20.0 docs/metrics/extend/customresourcestate-metrics.md; field names:
    pkg/customresourcestate/config.go, config_metrics_types.go). Gauges convert a bool to 1/0 and an
    RFC 3339 string to a Unix timestamp (registry_factory.go toFloat64); a missing path gives no
    sample, except readyToUse, where nil (not yet known) counts as not ready (nilIsZero)."""
    return {
        "kind": "CustomResourceStateMetrics",
        "spec": {
            "resources": [
                {
                    "groupVersionKind": {
                        "group": "k3s.cattle.io",
                        "version": "v1",
                        "kind": "ETCDSnapshotFile",
                    },
                    "resourcePlural": "etcdsnapshotfiles",
                    "metricNamePrefix": ETCD_SNAPSHOT_PREFIX,
                    # the object's name and the node that took the snapshot; never its location (a
                    # bucket path) or its error message (free text)
                    "labelsFromPath": {
                        "etcdsnapshotfile": ["metadata", "name"],
                        "node": ["spec", "nodeName"],
                    },
                    "metrics": [
                        {
                            "name": "creation_time_seconds",
                            "help": "When etcd took the snapshot (status.creationTime), Unix seconds.",
                            "each": {"type": "Gauge", "gauge": {"path": ["status", "creationTime"]}},
                        },
                        {
                            "name": "ready_to_use",
                            "help": "1 if the snapshot can be restored (status.readyToUse), else 0.",
                            "each": {
                                "type": "Gauge",
                                "gauge": {"path": ["status", "readyToUse"], "nilIsZero": True},
                            },
                        },
                        {
                            "name": "error_time_seconds",
                            "help": "When the snapshot last failed (status.error.time), Unix seconds; "
                            "absent without an error.",
                            "each": {"type": "Gauge", "gauge": {"path": ["status", "error", "time"]}},
                            # no error is the usual case: its missing path is logged only at -v=10
                            "errorLogV": 10,
                        },
                    ],
                }
            ]
        },
    }


def etcd_snapshot_alerts(cfg: StackConfig) -> list[dict[str, Any]]:
    """Alert rules on RKE2's etcd snapshots (kube-state-metrics' ETCDSnapshotFile metrics), shaped as
    alerts.py's: ticket severity, runbook docs/runbooks/backups.md. Overdue: no snapshot that is
    ready to use was taken within ``backup_max_age_hours`` (or none is known at all); failing: a
    snapshot of that window recorded an error or is not ready to use, for 15 minutes."""
    hours = cfg.platform.alerting.backup_max_age_hours
    ready = f"{ETCD_SNAPSHOT_CREATED} and on (etcdsnapshotfile) ({ETCD_SNAPSHOT_READY} == 1)"
    return [
        alerts._alert(
            "EtcdSnapshotOverdue",
            f"(time() - max({ready}) > {hours * 3600})\nor\nabsent({ready})",
            "ticket",
            "30m",
            f"No restorable etcd snapshot is younger than {hours} hours",
            "RKE2 has recorded no ETCDSnapshotFile that is ready to use and was taken within "
            f"{hours} hours: the cluster state has no fresh backup (etcd-snapshot-schedule-cron, "
            "the S3 upload).",
            "backups",
        ),
        # a failed record stays until RKE2's retention prunes it: only failures of the last
        # backup_max_age_hours count, so the alert resolves once they age out behind good snapshots
        alerts._alert(
            "EtcdSnapshotFailing",
            f"(count by (node) (time() - {ETCD_SNAPSHOT_ERROR} < {hours * 3600}) > 0)\nor\n"
            f"(count by (node) ((time() - {ETCD_SNAPSHOT_CREATED} < {hours * 3600})\n"
            f"  and on (etcdsnapshotfile) ({ETCD_SNAPSHOT_READY} == 0)) > 0)",
            "ticket",
            "15m",
            "An etcd snapshot of node {{ $labels.node }} failed",
            f"An ETCDSnapshotFile of this node from the last {hours} hours records an error or is not "
            "ready to use: that snapshot cannot be restored (kubectl get etcdsnapshotfiles, and the "
            "node's rke2-server log).",
            "backups",
        ),
    ]


def _grafana(cfg: StackConfig) -> dict[str, Any]:
    """The grafana subchart's values (grafana 12.11.1 values.yaml, and kube-prometheus-stack
    88.5.3's own grafana.* keys: templates/grafana/)."""
    ns = cfg.platform.monitoring_namespace
    label, label_value = GRAFANA_DASHBOARD_LABEL
    restricted_container = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "enabled": True,
        # kube-prometheus-stack's own dashboards (templates/grafana/dashboards-1.14, ConfigMaps labelled
        # grafana_dashboard like ours): off, the sidecar loads dashboards.py's only
        "defaultDashboardsEnabled": False,
        "forceDeployDashboards": False,
        # no dashboards from values (grafana.com gnetId or url: the download-dashboards init container),
        # no plugins (installed from grafana.com at start), no chart test pod (its own image)
        "dashboards": {},
        "dashboardProviders": {},
        "plugins": [],
        "testFramework": {"enabled": False},
        "imageRenderer": {"enabled": False},
        # stateless: the data is an emptyDir (templates/_pod.tpl "storage"), so no PVC and no
        # init-chown-data (root, CHOWN/DAC_OVERRIDE: values.yaml initChownData, not restricted)
        "persistence": {"enabled": False},
        "initChownData": {"enabled": False},
        # the admin user and password: the chart's Secret <release>-grafana (templates/secret.yaml), the
        # password random at install and kept on upgrade by lookup (templates/_helpers.tpl grafana.password)
        "admin": {"existingSecret": "", "userKey": "admin-user", "passwordKey": "admin-password"},
        # restricted Pod Security: pod-level non-root (values.yaml securityContext, plus seccomp), each
        # container (grafana: containerSecurityContext; the sidecars: sidecar.securityContext) without
        # privilege escalation or capabilities, read-only root
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": GRAFANA_UID,
            "runAsGroup": GRAFANA_UID,
            "fsGroup": GRAFANA_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containerSecurityContext": restricted_container,
        # writable under the read-only root besides /var/lib/grafana (storage) and /var/lib/grafana-search
        # (search), both emptyDirs of the chart: /tmp (plugin sockets, temporary files) and the logs path
        "extraEmptyDirMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "logs", "mountPath": "/var/log/grafana"},
        ],
        # the sidecars read ConfigMaps (and Secrets, with resource both) of this namespace only: a Role,
        # not a ClusterRole over every namespace's Secrets (templates/role.yaml, clusterrole.yaml)
        "rbac": {"create": True, "namespaced": True, "pspEnabled": False},
        "grafana.ini": GRAFANA_INI,
        "sidecar": {
            "securityContext": {k: v for k, v in restricted_container.items() if k != "privileged"},
            "dashboards": {
                "enabled": True,
                "label": label,
                "labelValue": label_value,
                "searchNamespace": ns,  # kube-prometheus-stack's default is ALL
                "resource": "configmap",
                "provider": {"allowUiUpdates": False},
                "multicluster": {"global": {"enabled": False}, "etcd": {"enabled": False}},
            },
            "datasources": {
                "enabled": True,
                "defaultDatasourceEnabled": True,
                "isDefaultDatasource": True,
                "name": "Prometheus",
                "uid": GRAFANA_DATASOURCE_UID,
                # the in-cluster Prometheus: http://<release>-prometheus.<namespace>:9090/ (the
                # ConfigMap's default url, templates/grafana/configmaps-datasources.yaml)
                "createPrometheusReplicasDatasources": False,
                "alertmanager": {"enabled": False},  # no Alertmanager data source: no flow to it
                "searchNamespace": ns,
                "resource": "configmap",
            },
            "alerts": {"enabled": False},
            "notifiers": {"enabled": False},
            "plugins": {"enabled": False},
        },
        "serviceMonitor": {"enabled": True},
    }


def values(cfg: StackConfig) -> dict[str, Any]:
    off = {"enabled": False}
    return {
        "crds": {"enabled": True},  # the prometheus-operator CRDs (crds subchart, crds/ folder)
        "defaultRules": {"create": False},
        "grafana": _grafana(cfg),
        "alertmanager": {
            "enabled": True,
            "config": alertmanager_values_config(cfg),
            "templateFiles": {},
            "alertmanagerSpec": {
                "replicas": 1,
                "securityContext": ALERTMANAGER_SECURITY_CONTEXT,
                "alertmanagerConfigSelector": NO_ALERTMANAGER_CONFIGS,
                "storage": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": DEFAULT_CLASS,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{ALERTMANAGER_VOLUME_GI}Gi"}},
                        }
                    }
                },
            },
        },
        "nodeExporter": off,
        "kubeStateMetrics": {"enabled": True},
        "kube-state-metrics": {
            # restricted Pod Security: the chart's defaults (values.yaml securityContext: runAsNonRoot,
            # uid 65534, seccomp RuntimeDefault; containerSecurityContext: read-only root, no privilege
            # escalation, capabilities drop ALL), kept explicit
            "securityContext": {
                "enabled": True,
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "fsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containerSecurityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "kubeRBACProxy": off,
            "selfMonitor": off,
            "customResourceState": {"enabled": True, "config": etcd_snapshot_metrics()},
            # list/watch of the snapshots (the chart adds customresourcedefinitions list/watch itself,
            # rbac.customResourceState.createClusterRoleRules: templates/role.yaml)
            "rbac": {
                "extraRules": [
                    {
                        "apiGroups": ["k3s.cattle.io"],
                        "resources": ["etcdsnapshotfiles"],
                        "verbs": ["list", "watch"],
                    }
                ]
            },
        },
        "kubeEtcd": off,
        # the chart's other scrapes of the cluster (values.yaml kubeApiServer, kubelet, coreDns:
        # enabled by default, templates/exporters/*/servicemonitor.yaml): Prometheus' network policy
        # reaches none of them (network_policies.py), so their targets would only ever be down
        "kubeApiServer": off,
        "kubelet": off,
        "coreDns": off,
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
                "retention": retention(cfg),
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


class Monitoring(Component):
    KIND = "Monitoring"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        self.release = pinned_chart(
            self, f"{name}-kube-prometheus-stack", cfg, chart=RELEASE, version=KUBE_PROMETHEUS_WAIT.version,
            repo=PROMETHEUS_REPO, namespace=cfg.platform.monitoring_namespace,
            values=images.chart_values(cfg, RELEASE, KUBE_PROMETHEUS_WAIT.version, values(cfg)),
            depends_on=depends_on, wait_s=KUBE_PROMETHEUS_WAIT.budget_s(),
        )  # fmt: skip
        self.register_outputs({})
