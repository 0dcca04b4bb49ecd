"""The front door (issue #19 item 4): RKE2's ingress-nginx on the load balancer's NodePort, TLS
from the front door's own OpenBao PKI mount, the gateway behind it.

The chart's value keys and defaults below are quoted from rke2-ingress-nginx 4.12.600, the version
RKE2 v1.33.5+rke2r1 ships (rancher/rke2 charts/chart_versions.yaml; the chart archive is
rancher/rke2-charts, branch main, assets/rke2-ingress-nginx/rke2-ingress-nginx-4.12.600.tgz), and
the controller's ConfigMap keys and annotations from kubernetes/ingress-nginx controller-v1.12.6."""

from __future__ import annotations

import fnmatch
from dataclasses import replace
from typing import Any

import pytest
import yaml

from infra import config
from infra import plan as planner
from infra.k8s_platform import ingress
from infra.policy import completeness
from tests.infra.support import plan_of, sections

# rke2-ingress-nginx 4.12.600 values.yaml: the subtree of the keys the HelmChartConfig sets, with
# the chart's defaults (None where the default is an empty map the templates range over)
CHART_VALUES_4_12_600: dict[str, Any] = {
    "controller": {
        "hostPort": {"enabled": True, "ports": {"http": 80, "https": 443}},
        "service": {
            "enabled": False,  # RKE2's patch (values.yaml.patch): no Service unless asked for
            "type": "LoadBalancer",
            "enableHttp": True,
            "enableHttps": True,
            "nodePorts": {"http": "", "https": "", "tcp": {}, "udp": {}},
        },
        "config": None,  # {} -> templates/controller-configmap.yaml, one ConfigMap key per entry
        "extraArgs": None,  # {} -> templates/_params.tpl, one --key=value per entry
        "ingressClassResource": {"name": "nginx", "enabled": True},
    }
}
# kubernetes/ingress-nginx controller-v1.12.6 internal/ingress/controller/config/config.go: json
# tags of the keys the HelmChartConfig sets in controller.config
CONFIGMAP_KEYS = {
    "ssl-protocols",
    "hsts",
    "hsts-max-age",
    "hsts-include-subdomains",
    "hsts-preload",
    "server-tokens",
}
# pkg/flags/flags.go at the same tag
CONTROLLER_FLAGS = {"default-ssl-certificate", "watch-namespace"}
# internal/ingress/annotations/proxy/main.go at the same tag (prefix: parser.DefaultAnnotationsPrefix)
PROXY_ANNOTATIONS = {
    "proxy-buffering",
    "proxy-request-buffering",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-body-size",
    "proxy-connect-timeout",
}
CERT = "vault:pkiSecret/secretBackendCert:SecretBackendCert"
ROLE = "vault:pkiSecret/secretBackendRole:SecretBackendRole"


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


def _objects(plan: planner.Plan, kind: str) -> list[dict[str, Any]]:
    return [o for o in plan.kubernetes_objects() if o["kind"] == kind]


def _one(plan: planner.Plan, kind: str, name: str, namespace: str) -> dict[str, Any]:
    (found,) = [
        o
        for o in _objects(plan, kind)
        if o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace
    ]
    return found


def _values(plan: planner.Plan) -> dict[str, Any]:
    chart_config = _one(plan, "HelmChartConfig", "rke2-ingress-nginx", "kube-system")
    assert chart_config["apiVersion"] == "helm.cattle.io/v1"
    values = yaml.safe_load(chart_config["spec"]["valuesContent"])
    assert isinstance(values, dict)
    return values


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, str(k)))]
    return [(path, node)]


def _in_chart(path: tuple[str, ...]) -> bool:
    node: Any = CHART_VALUES_4_12_600
    for i, key in enumerate(path):
        if node is None:  # a free-form map of the chart (config, extraArgs): checked below
            return i == len(path) - 1
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_the_controller_listens_on_the_load_balancers_target_port(prod: planner.Plan) -> None:
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    service = _values(prod)["controller"]["service"]
    assert service["enabled"] is True and service["type"] == "NodePort"
    assert service["nodePorts"]["https"] == cfg.load_balancer.target_port == 30443
    assert service["enableHttp"] is False  # the load balancer forwards HTTPS only
    assert _values(prod)["controller"]["hostPort"] == {"enabled": False}


def test_another_target_port_moves_the_node_port() -> None:
    data = sections("eu-central-prod")
    data["load_balancer"] = {**data["load_balancer"], "target_port": 31443}
    values = _values(plan_of(data, stack="eu-central-prod"))
    assert values["controller"]["service"]["nodePorts"]["https"] == 31443


def test_every_value_key_exists_in_the_chart_shipped_with_rke2(prod: planner.Plan) -> None:
    leaves = _leaves(_values(prod))
    assert leaves and all(_in_chart(path) for path, _ in leaves), [p for p, _ in leaves if not _in_chart(p)]
    controller = _values(prod)["controller"]
    assert set(controller["config"]) <= CONFIGMAP_KEYS
    assert set(controller["extraArgs"]) <= CONTROLLER_FLAGS
    # the double refuses a key the chart does not have
    assert not _in_chart(("controller", "service", "nodePort"))
    assert not _in_chart(("controller", "hostPorts", "enabled"))


def test_tls_12_and_13_only_with_hsts(prod: planner.Plan) -> None:
    settings = _values(prod)["controller"]["config"]
    assert settings["ssl-protocols"] == "TLSv1.2 TLSv1.3"
    assert settings["hsts"] == "true" and int(settings["hsts-max-age"]) >= 180 * 24 * 3600
    assert all(isinstance(v, str) for v in settings.values())  # a ConfigMap holds strings


def test_the_ingress_routes_to_the_gateway_service_that_exists(prod: planner.Plan) -> None:
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    obj = _one(prod, "Ingress", "gateway", "sovereign-gateway")
    spec = obj["spec"]
    # the IngressClass rke2-ingress-nginx 4.12.600 creates (values.yaml ingressClassResource.name)
    assert spec["ingressClassName"] == CHART_VALUES_4_12_600["controller"]["ingressClassResource"]["name"]
    (rule,) = spec["rules"]
    assert rule["host"] == cfg.load_balancer.hostname
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = _one(prod, "Service", backend["name"], "sovereign-gateway")
    (port,) = [p for p in service["spec"]["ports"] if p.get("name") == backend["port"]["name"]]
    # the Service's port leads to the gateway container's port 8080
    statefulset = _one(prod, "StatefulSet", "gateway", "sovereign-gateway")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert {"name": port["targetPort"], "containerPort": 8080} in [
        {"name": p.get("name"), "containerPort": p["containerPort"]} for p in container["ports"]
    ]


def test_streaming_answers_pass_unbuffered_with_room_for_a_long_completion(prod: planner.Plan) -> None:
    from gateway.settings import LimitSettings

    notes = _one(prod, "Ingress", "gateway", "sovereign-gateway")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert all(k.startswith(prefix) and k.removeprefix(prefix) in PROXY_ANNOTATIONS for k in notes)
    assert notes[prefix + "proxy-buffering"] == "off"
    limits = LimitSettings()
    assert int(notes[prefix + "proxy-read-timeout"]) > limits.read_timeout_s
    size = notes[prefix + "proxy-body-size"]
    factor = {"k": 1024, "m": 1 << 20}[size[-1]]
    assert int(size[:-1]) * factor >= limits.max_body_bytes


def test_the_tls_secret_comes_from_the_ingress_pki_with_the_host_and_the_lb_address(
    prod: planner.Plan,
) -> None:
    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    spec = _one(prod, "Ingress", "gateway", "sovereign-gateway")["spec"]
    (tls,) = spec["tls"]
    assert tls["hosts"] == [cfg.load_balancer.hostname]
    secret = _one(prod, "Secret", tls["secretName"], "sovereign-gateway")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}
    (cert,) = [r.inputs for r in prod.of_type(CERT) if r.inputs["commonName"] == cfg.load_balancer.hostname]
    assert cert["backend"] == "pki-ingress" and cert["name"] == "gateway-ingress"
    assert cert["ipSans"] == [str(cfg.load_balancer.private_ip)] == ["10.20.1.250"]
    assert cert["autoRenew"] is True and cert["minSecondsRemaining"] > 0
    # the controller serves the same certificate to clients without SNI
    assert (
        _values(prod)["controller"]["extraArgs"]["default-ssl-certificate"]
        == f"sovereign-gateway/{tls['secretName']}"
    )


def test_the_front_doors_ca_is_its_own_and_a_stack_output(prod: planner.Plan) -> None:
    roots = {
        r.inputs["backend"]: r.inputs
        for r in prod.of_type("vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert")
    }
    assert set(roots) == {"pki", "pki-ingress"}
    assert roots["pki-ingress"]["commonName"] == "eu-central-prod gateway ingress CA"
    assert prod.outputs["gateway_ingress_ca_pem"] == "(issued at deploy time)"
    assert prod.outputs["gateway_url"] == "https://llm-gateway.eu-central.sovereign.example.de"
    # only the front door's certificate comes from its mount
    from_ingress = [
        r.inputs["commonName"] for r in prod.of_type(CERT) if r.inputs["backend"] == "pki-ingress"
    ]
    assert from_ingress == ["llm-gateway.eu-central.sovereign.example.de"]


def _role_permits(role: dict[str, Any], name: str) -> bool:
    """Whether an OpenBao PKI role issues for a DNS name: the checks of OpenBao's
    builtin/logical/pki/issuing ValidateNames (allow_any_name, allow_localhost, allowed_domains with
    allow_bare_domains, allow_subdomains, allow_glob_domains, allow_wildcard_certificates)."""
    if role.get("allowAnyName"):
        return True
    if name == "localhost" or name.endswith(".localdomain"):
        return bool(role.get("allowLocalhost", True))
    if name.startswith("*.") and not role.get("allowWildcardCertificates", True):
        return False
    for domain in role.get("allowedDomains") or []:
        if name == domain and role.get("allowBareDomains"):
            return True
        if role.get("allowSubdomains") and name.endswith("." + domain):
            return True
        if role.get("allowGlobDomains") and fnmatch.fnmatchcase(name, domain):
            return True
    return False


def test_the_ingress_role_cannot_issue_the_internal_mtls_names(prod: planner.Plan) -> None:
    roles = {r.inputs["name"]: r.inputs for r in prod.of_type(ROLE)}
    role = roles["gateway-ingress"]
    assert role["backend"] == "pki-ingress" and role["serverFlag"] is True and role["clientFlag"] is False
    assert _role_permits(role, "llm-gateway.eu-central.sovereign.example.de")
    internal = [
        "gateway.sovereign-gateway.svc",
        "vllm-llama31-8b-awq.sovereign-inference.svc",
        "vllm.sovereign-inference.svc",
        "prometheus.monitoring.svc",
        "openbao.openbao.svc",
        "localhost",
        "x.llm-gateway.eu-central.sovereign.example.de",
        "*.eu-central.sovereign.example.de",
    ]
    assert not [name for name in internal if _role_permits(role, name)]
    # the mTLS roles live on the other mount: the CA Magento trusts never signed them
    assert {r["backend"] for n, r in roles.items() if n != "gateway-ingress"} == {"pki"}
    # and the double is not blind: the mTLS role of vLLM does permit its names
    assert _role_permits(roles["inference-server"], "vllm-llama31-8b-awq.sovereign-inference.svc")


def test_the_gateway_admits_only_the_ingress_controller_from_kube_system(prod: planner.Plan) -> None:
    (policy,) = [o for o in _objects(prod, "NetworkPolicy") if o["metadata"]["name"] == "gateway-flows"]
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    (controller,) = [
        p
        for p in peers
        if p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "kube-system"
    ]
    # rke2-ingress-nginx 4.12.600 templates/_helpers.tpl selectorLabels + component: the controller pods
    assert controller["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "rke2-ingress-nginx",
        "app.kubernetes.io/component": "controller",
    }


def test_phase_one_reconfigures_the_controller_but_issues_nothing() -> None:
    dr = plan_of(sections("eu-north-dr"), stack="eu-north-dr")
    assert _values(dr)["controller"]["service"]["nodePorts"]["https"] == 30443
    assert _objects(dr, "Ingress") == []
    assert dr.outputs["gateway_ingress_ca_pem"] == "(phase 2: after OpenBao is initialised)"


def test_the_completeness_check_knows_the_secret_and_the_ingress_class(prod: planner.Plan) -> None:
    resources = planner.completeness_view(prod.resources)
    mirror = "https://registry.sovereign.example.de"

    def found(rs: list[completeness.Resource]) -> list[completeness.Finding]:
        return [
            f
            for f in completeness.check(rs, registry_mirror=mirror)
            if f.kind == "reference" and "Ingress" in f.resource
        ]

    assert found(resources) == []
    without_secret = [
        r
        for r in resources
        if not (r.group_kind == ("", "Secret") and r.meta.get("name") == ingress.TLS_SECRET)
    ]
    (missing,) = found(without_secret)
    assert "Secret sovereign-gateway/gateway-ingress-tls" in missing.missing
    other_class = [
        replace(r, inputs={**r.inputs, "spec": {**r.inputs["spec"], "ingressClassName": "traefik"}})
        if r.group_kind == ("networking.k8s.io", "Ingress")
        else r
        for r in resources
    ]
    (wrong,) = found(other_class)
    assert "IngressClass 'traefik'" in wrong.missing


@pytest.mark.parametrize(
    "hostname",
    [
        "frontdoor",
        "Frontdoor.Shop.de",
        "*.example.de",
        "10.20.1.250",
        "gateway.sovereign-gateway.svc",
        "-a.example.de",
    ],
)
def test_the_hostname_must_be_a_dns_name_and_is_never_echoed(hostname: str) -> None:
    data = sections("eu-central-prod")
    data["load_balancer"] = {**data["load_balancer"], "hostname": hostname}
    with pytest.raises(config.StackConfigError) as err:
        config.parse("eu-central-prod", data, "test")
    (problem,) = map(str, err.value.problems)
    assert problem.startswith("sovereign-llm:load_balancer.hostname: ")
    assert hostname not in problem


def test_the_hostname_is_required() -> None:
    data = sections("eu-central-prod")
    data["load_balancer"] = {k: v for k, v in data["load_balancer"].items() if k != "hostname"}
    with pytest.raises(config.StackConfigError) as err:
        config.parse("eu-central-prod", data, "test")
    assert any("load_balancer.hostname: missing" in p for p in map(str, err.value.problems))
