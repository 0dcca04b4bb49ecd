"""The front door: RKE2's ingress-nginx behind the private load balancer, TLS from OpenBao's PKI.

The load balancer (infra/components/load_balancer.py) passes TCP from ``load_balancer.listen_port``
through to ``load_balancer.target_port`` on the workers' private addresses. RKE2 deploys its
packaged ``rke2-ingress-nginx`` chart (the default ``ingress-controller`` of v1.33) in
``kube-system``; a ``HelmChartConfig`` of the same name and namespace merges our values over it
(docs.rke2.io/add-ons/helm, "Customizing Packaged Components with HelmChartConfig"), so the
controller gets a NodePort Service on ``target_port`` and TLS settings of ours. The controller
terminates TLS with a certificate for ``load_balancer.hostname`` (and the load balancer's private
address) issued by the front door's own CA (OpenBao mount ``pki-ingress``, openbao.py) and proxies
plain HTTP inside the cluster to the gateway Service.

Sources, read at the versions RKE2 v1.33.5+rke2r1 ships (rancher/rke2 charts/chart_versions.yaml:
rke2-ingress-nginx 4.12.600, controller v1.12.6-hardened1):

- chart: rancher/rke2-charts, branch ``main``, ``assets/rke2-ingress-nginx/rke2-ingress-nginx-4.12.600.tgz``
  (``values.yaml``, ``templates/controller-service.yaml``, ``templates/controller-daemonset.yaml``,
  ``templates/controller-ingressclass.yaml``, ``templates/controller-configmap.yaml``,
  ``templates/_params.tpl``);
- controller: kubernetes/ingress-nginx tag ``controller-v1.12.6``
  (``internal/ingress/controller/config/config.go`` for the ConfigMap keys and their defaults,
  ``internal/ingress/annotations/proxy/main.go`` for the annotations and their validators,
  ``pkg/flags/flags.go`` for ``--default-ssl-certificate``).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from gateway.settings import LimitSettings
from infra.config import StackConfig
from infra.k8s_platform.common import (
    GATEWAY_APP,
    GATEWAY_NS,
    INGRESS_CONTROLLER_PODS,
    KUBE_SYSTEM,
    Component,
    Deps,
    OpenBaoComponent,
    labels,
)
from infra.k8s_platform.openbao import INGRESS_PKI_MOUNT, INGRESS_ROLE, OpenBaoConfiguration, mtls_secret

# rancher/rke2 v1.33.5+rke2r1 charts/chart_versions.yaml: "version: 4.12.600, filename:
# /charts/rke2-ingress-nginx.yaml"; the HelmChart is named after the file (charts/build-chart.sh
# CHART_NAME) in kube-system (CHART_NAMESPACE's default); a HelmChartConfig must match both
CHART = "rke2-ingress-nginx"
CHART_VERSION = "4.12.600"
# values.yaml controller.ingressClassResource.name: nginx (enabled: true), rendered by
# templates/controller-ingressclass.yaml as the IngressClass of that name
INGRESS_CLASS = "nginx"
# the controller pods' labels (common.py, from templates/_helpers.tpl "ingress-nginx.selectorLabels":
# app.kubernetes.io/name = the chart's name, + component controller); RKE2's own kube-system policy
# selects the same name (rancher/rke2 v1.33.5+rke2r1 pkg/rke2/np.go "default-network-ingress-policy")
CONTROLLER_POD_LABELS = INGRESS_CONTROLLER_PODS
TLS_SECRET = "gateway-ingress-tls"  # noqa: S105 (a Secret's name, not a password)
# the gateway Service's port (gateway.py: "http", port 80 -> the pods' 8080, GATEWAY_PORT)
SERVICE_PORT = "http"
INGRESS_NAME = "gateway"
# the longest a streamed completion may go without a byte from the gateway: longer than the gateway's
# own wait for its upstream (gateway/settings.py LimitSettings.read_timeout_s, then 504), so the
# gateway, not nginx, decides and audits a timeout
PROXY_TIMEOUT_S = int(LimitSettings().read_timeout_s) + 60
# the gateway refuses bodies above LimitSettings.max_body_bytes (413, audited): nginx lets that
# much through (nginx's own default, 1m, is the same today; set so that raising one raises both)
_BODY = LimitSettings().max_body_bytes
BODY_SIZE = f"{_BODY >> 20}m" if _BODY % (1 << 20) == 0 else f"{-(-_BODY // 1024)}k"
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
HSTS_MAX_AGE_S = 365 * 24 * 3600


def controller_values(cfg: StackConfig) -> dict[str, Any]:
    """The values merged over RKE2's rke2-ingress-nginx 4.12.600 (each key in its values.yaml)."""
    return {
        "controller": {
            # values.yaml hostPort.enabled: true (80/443 on every node): off, the load balancer
            # reaches the controller through the NodePort only
            "hostPort": {"enabled": False},
            "service": {
                # values.yaml service.enabled: false (RKE2's patch: no Service by default);
                # templates/controller-service.yaml renders it with external.enabled (default true)
                "enabled": True,
                "type": "NodePort",
                # the load balancer forwards HTTPS only; no plaintext listener on the nodes
                "enableHttp": False,
                "enableHttps": True,
                # templates/controller-service.yaml sets nodePort for type NodePort from nodePorts.https
                "nodePorts": {"https": cfg.load_balancer.target_port},
            },
            # templates/controller-configmap.yaml copies controller.config into the controller's
            # ConfigMap; keys as config.go's json tags (controller-v1.12.6)
            "config": {
                "ssl-protocols": TLS_PROTOCOLS,
                "hsts": "true",
                "hsts-max-age": str(HSTS_MAX_AGE_S),
                "server-tokens": "false",
            },
            # templates/_params.tpl renders extraArgs as --key=value: clients that connect by the
            # load balancer's address without SNI get the front door's certificate (it carries that
            # address) instead of the controller's self-signed one; until the Secret exists (phase 2)
            # the controller falls back to its own (controller.go getDefaultSSLCertificate)
            "extraArgs": {"default-ssl-certificate": f"{GATEWAY_NS}/{TLS_SECRET}"},
        }
    }


def gateway_ingress_annotations() -> dict[str, str]:
    """Per-Ingress settings for the gateway (annotations prefix nginx.ingress.kubernetes.io,
    internal/ingress/annotations/parser/main.go DefaultAnnotationsPrefix; validators in
    internal/ingress/annotations/proxy/main.go)."""
    prefix = "nginx.ingress.kubernetes.io"
    return {
        # streamed (SSE) answers reach Magento token by token (ValidateOptions on/off)
        f"{prefix}/proxy-buffering": "off",
        # the request body goes to the gateway as it arrives (ValidateOptions on/off)
        f"{prefix}/proxy-request-buffering": "off",
        # seconds between two reads/writes (ValidateInt)
        f"{prefix}/proxy-read-timeout": str(PROXY_TIMEOUT_S),
        f"{prefix}/proxy-send-timeout": str(PROXY_TIMEOUT_S),
        # nginx's client_max_body_size (SizeRegex ^\d+[bkmg]?$)
        f"{prefix}/proxy-body-size": BODY_SIZE,
    }


class IngressController(Component):
    """RKE2's packaged ingress-nginx, reconfigured (phase 1: it needs no key)."""

    KIND = "IngressController"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        self.values = controller_values(cfg)
        # helm.cattle.io/v1 HelmChartConfig (RKE2's embedded helm-controller): spec.valuesContent
        # is YAML merged over the packaged chart's values
        self.chart_config = k8s.apiextensions.CustomResource(
            f"{name}-chart-config",
            api_version="helm.cattle.io/v1",
            kind="HelmChartConfig",
            metadata={"name": CHART, "namespace": KUBE_SYSTEM, "labels": labels(cfg, CHART, "ingress")},
            spec={"valuesContent": yaml.safe_dump(self.values, sort_keys=True)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.register_outputs({"node_port": cfg.load_balancer.target_port})


class GatewayIngress(OpenBaoComponent):
    """The gateway's Ingress and its certificate (phase 2: OpenBao issues it)."""

    KIND = "GatewayIngress"

    def build(self, name: str, cfg: StackConfig, openbao: OpenBaoConfiguration, depends_on: Deps) -> None:
        lb = cfg.load_balancer
        self.tls, _ = mtls_secret(
            self, f"{name}-tls", cfg, openbao, role=INGRESS_ROLE, common_name=lb.hostname,
            namespace=GATEWAY_NS, secret_name=TLS_SECRET, ip_sans=[str(lb.private_ip)],
            backend=INGRESS_PKI_MOUNT, component="ingress",
        )  # fmt: skip
        self.ingress = k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata={
                "name": INGRESS_NAME,
                "namespace": GATEWAY_NS,
                "labels": labels(cfg, INGRESS_NAME, "ingress"),
                "annotations": gateway_ingress_annotations(),
            },
            spec={
                "ingressClassName": INGRESS_CLASS,
                "tls": [{"hosts": [lb.hostname], "secretName": TLS_SECRET}],
                "rules": [
                    {
                        "host": lb.hostname,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": GATEWAY_APP, "port": {"name": SERVICE_PORT}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, self.tls]),
        )
        self.ca_pem = openbao.ingress_ca_pem
        self.register_outputs({"host": lb.hostname})
